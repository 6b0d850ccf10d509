/* Internal guarded accessors (see guard.c).  All return 0 or -EFAULT. */
#ifndef SYSLET_GUARD_H
#define SYSLET_GUARD_H
#include <stdint.h>

/* Addresses that can never be user memory fail fast without a fault. */
static inline int g_plausible(uint64_t addr, uint64_t n)
{
    return addr >= 4096 && addr < 0x800000000000ULL && n <= 0x800000000000ULL - addr;
}

int g_copy_in(void *dst, uint64_t src, uint64_t n);
int g_copy_out(uint64_t dst, const void *src, uint64_t n);
int g_add(uint64_t addr, uint64_t inc, uint64_t *newval);
int g_load_acquire(uint64_t addr, uint64_t *out);
int g_cas_release(uint64_t addr, uint64_t expect, uint64_t val, int *swapped);
int g_strnlen(uint64_t addr, uint64_t max, uint64_t *len);
int g_probe_write(uint64_t addr);
int g_read_atom(uint64_t addr, uint64_t *w, int64_t *args);
int g_read_atom80(uint64_t addr, uint64_t *w, int64_t *args);
int g_read_indirect(uint64_t regs, uint64_t params, uint64_t plen, uint64_t *r, uint64_t *p,
                    uint32_t *elements);

/* g_read_atom4: the exec fast path's read of a read/pread64 atom.  o[0..3]
 * its header words, o[4..7] its first four arg_ptr words, o[8..11] the
 * values of the first three (read: o[7] and o[11] are 0) or four (pread64,
 * or anything else).
 * Returns 0; -EFAULT when any of it is unreadable or one of those arg_ptr
 * words is NULL; 1 when a later arg_ptr (arg_ptr[3] of a read, arg_ptr[4..5])
 * is not NULL.  Not 0: the general path reads the atom again and decides.
 * g_store8: one native word to user memory.  Both are inline on x86_64,
 * where they are guard.c's fault-fixup routines (decisions D16). */
#if defined(__x86_64__)
#include <errno.h>
int sl_fx_atom4(uint64_t atom, uint64_t *o);
int sl_fx_store8(uint64_t dst, uint64_t v);

static inline int g_read_atom4(uint64_t addr, uint64_t *o)
{
    return g_plausible(addr, 80) ? sl_fx_atom4(addr, o) : -EFAULT;
}

static inline int g_store8(uint64_t dst, uint64_t v)
{
    if ((dst & 7) == 0)     /* aligned: cannot straddle a page, fixup store */
        return g_plausible(dst, 8) ? sl_fx_store8(dst, v) : -EFAULT;
    return g_copy_out(dst, &v, 8);
}
#else
int g_read_atom4(uint64_t addr, uint64_t *o);
int g_store8(uint64_t dst, uint64_t v);
#endif

#endif
