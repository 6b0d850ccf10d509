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
/* The exec fast path's read/pread64 atom: o[0..3] header, o[4..7] arg_ptr
 * words, o[8..11] their values (three for read(2)).  0 or -EFAULT. */
int g_read_atom4(uint64_t addr, uint64_t *o);
/* One native word to user memory (fault-fixup store when aligned). */
int g_store8(uint64_t dst, uint64_t v);

#endif
