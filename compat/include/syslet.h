/* syslet.h — the 2007 Linux syslet API, ABI v1 (x86_64 native layout), as
 * served by syslet-compat's libsyslet on io_uring.
 *
 * Written from the project's specification (docs/spec.md, sections 1, 5
 * and 6), not copied from the 2007 patches.  Build and link with
 *
 *     cc $(python -m compat config --cflags) prog.c $(python -m compat config --libs)
 *
 * or build without -lsyslet and run with
 *
 *     LD_PRELOAD=$(python -m compat config --preload) ./prog
 *
 * Two ways to call the API, with the same results:
 *
 *   1. the functions declared below (exported by libsyslet);
 *   2. the 2007 way, syscall(__NR_async_exec, atom) and friends: libsyslet
 *      exports a syscall() that serves numbers 1000-1004 (syslet-numbers.h)
 *      and passes every other number, with all six arguments, to libc's.
 *
 * Return conventions (libc's, the same as syscall()): failure is -1 with
 * errno set; see each prototype.  Without libsyslet, syscall() with these
 * numbers fails with ENOSYS.
 */
#ifndef SYSLET_COMPAT_SYSLET_H
#define SYSLET_COMPAT_SYSLET_H

#ifndef __user
#define __user
#endif

#include "syslet-numbers.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- flags (the same values in every 2007 atom ABI) ---------------------- */

/* On the first atom: do not try synchronously; async_exec returns NULL at once. */
#define SYSLET_ASYNC                0x00000001
/* Never go async: the caller waits for the atom (on the first atom: for the
 * whole syslet).  ASYNC and SYNC together on the first atom: EINVAL. */
#define SYSLET_SYNC                 0x00000002
/* If this atom is the final atom, publish nothing in the completion ring. */
#define SYSLET_NO_COMPLETE          0x00000004
/* Stop conditions, tested on this atom's own result (after it is stored). */
#define SYSLET_STOP_ON_NONZERO      0x00000008
#define SYSLET_STOP_ON_ZERO         0x00000010
#define SYSLET_STOP_ON_NEGATIVE     0x00000020
#define SYSLET_STOP_ON_NON_POSITIVE 0x00000040
#define SYSLET_STOP_MASK            0x00000078
/* When a stop condition holds, continue at the linearly next atom (this
 * atom's address + sizeof(struct syslet_uatom)) instead of stopping. */
#define SYSLET_SKIP_TO_NEXT_ON_STOP 0x00000080

/* ---- structures ------------------------------------------------------------ */

/* One system call.  88 bytes on x86_64; every field is a native word. */
struct syslet_uatom {
    unsigned long flags;                    /*  0: SYSLET_* */
    unsigned long nr;                       /*  8: x86_64 system call number */
    long __user *ret_ptr;                   /* 16: result (raw: -errno on failure); NULL = drop */
    struct syslet_uatom __user *next;       /* 24: next atom; NULL = end */
    unsigned long __user *arg_ptr[6];       /* 32: argument words, read when the atom runs;
                                                   the first NULL ends the list (rest = 0) */
#ifdef __cplusplus
    void __user *private_;                  /* 80: cookie, never read or written
                                                   ("private" is a C++ keyword) */
#else
    void __user *private;                   /* 80: cookie, never read or written */
#endif
};

/* The completion-ring head handed to async_register.  24 bytes on x86_64.
 * Its fields are copied at registration; the ring memory itself must stay
 * valid (and its slots NULL until filled) until async_unregister. */
struct async_head_user {
    struct syslet_uatom __user *__user *completion_ring;   /*  0: slots (atom pointers) */
    unsigned long ring_size_bytes;                          /*  8: slots * sizeof(pointer) */
    unsigned long max_nr_threads;                           /* 16: -1UL = let us choose;
                                                                   0 = every syslet synchronous */
};

#if defined(__x86_64__) || defined(__LP64__)
#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(struct syslet_uatom) == 88, "struct syslet_uatom must be 88 bytes");
static_assert(sizeof(struct async_head_user) == 24, "struct async_head_user must be 24 bytes");
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct syslet_uatom) == 88, "struct syslet_uatom must be 88 bytes");
_Static_assert(sizeof(struct async_head_user) == 24, "struct async_head_user must be 24 bytes");
#endif
#endif

/* ---- calls ------------------------------------------------------------------ */

/* Registers the completion ring of the process-wide context.
 * 0, or -1 with errno: EINVAL (len != sizeof *ahu, ring_size_bytes not a
 * positive multiple of 8), EBUSY (a ring is already registered), EFAULT
 * (unreadable ahu or ring).  ahu itself is not read again after this call. */
long async_register(struct async_head_user __user *ahu, unsigned long len);

/* Runs the syslet starting at atom.  Returns
 *   - the final atom, if the whole syslet completed synchronously (nothing
 *     is published in the ring);
 *   - NULL if it went async: its final atom appears in the ring later;
 *   - (struct syslet_uatom *)-1 with errno on error: EINVAL (no ring
 *     registered, ASYNC+SYNC together, unknown flag bits), EFAULT (unreadable
 *     first atom).
 * This is exactly what (struct syslet_uatom *)syscall(__NR_async_exec, atom)
 * gives.  SYSLET_EXEC_FAILED(p) tests for the error value. */
struct syslet_uatom *async_exec(struct syslet_uatom __user *atom);
#define SYSLET_EXEC_FAILED(p) ((struct syslet_uatom *)(p) == (struct syslet_uatom *)-1L)

/* Blocks until at least min_events unconsumed (non-NULL) entries are in the
 * ring; 0 returns at once.  0, or -1 with errno: EINVAL (no ring registered),
 * EINTR (a signal handler ran in this thread while it waited). */
long async_wait(unsigned long min_events);

/* Waits until every syslet in flight has completed and been published, then
 * unregisters the ring.  The head is identified by the completion_ring and
 * ring_size_bytes it carries.  0, or -1 with errno: EINVAL (no such ring
 * registered, or len != sizeof *ahu), EFAULT (unreadable ahu). */
long async_unregister(struct async_head_user __user *ahu, unsigned long len);

/* Atomically adds inc to *uptr and returns the new value.  On a bad pointer
 * returns (unsigned long)-1 with errno = EFAULT; since -1 is also a possible
 * new value, set errno = 0 first when that matters.  Also usable as an atom
 * (nr = __NR_umem_add, arg_ptr[0] -> the address, arg_ptr[1] -> inc), where the
 * failure is the raw -EFAULT. */
unsigned long umem_add(unsigned long __user *uptr, unsigned long inc);

/* ---- syslet-compat extensions (not in the 2007 API) ------------------------ */

/* The process-wide context's backend: 1 = io_uring (+ fallback pool),
 * 0 = fallback pool only; -1 with errno if the context cannot be created.
 * Creates the context on first use, like the calls above. */
int syslet_compat_backend(void);

#ifdef __cplusplus
}
#endif

#endif /* SYSLET_COMPAT_SYSLET_H */
