/* syslet-numbers.h — syslet-compat's system call numbers for the 2007 syslet
 * API (ABI v1), and nothing else.
 *
 * The 2007 numbers (i386 320-324, x86_64 280-283/286-289) are real, unrelated
 * system calls in today's kernels and must never be used for syslets.  These
 * numbers are unknown to every kernel: a program built with them but run
 * without libsyslet (linked, or LD_PRELOADed) gets -1/ENOSYS from syscall(),
 * a clear failure, never a wrong call.
 *
 * Each number is defined only if it is not defined yet, so legacy code can be
 * built unchanged in front of its own copy of the old header:
 *
 *     cc $(python -m compat config --cflags) -include syslet-numbers.h -D__user= \
 *        legacy.c $(python -m compat config --libs)
 *
 * (the old header's own `#ifndef __NR_async_exec` blocks then keep ours; an old
 * header that defines them unconditionally must be edited: the compiler warns
 * "redefined" in that case).
 *
 * Atoms use the same numbers: an atom with nr == __NR_umem_add runs umem_add;
 * nr 1000-1003 are refused with -EINVAL (no recursion).
 */
#ifndef SYSLET_COMPAT_NUMBERS_H
#define SYSLET_COMPAT_NUMBERS_H

#ifndef __NR_async_register
#define __NR_async_register 1000
#endif
#ifndef __NR_async_exec
#define __NR_async_exec 1001
#endif
#ifndef __NR_async_wait
#define __NR_async_wait 1002
#endif
#ifndef __NR_async_unregister
#define __NR_async_unregister 1003
#endif
#ifndef __NR_umem_add
#define __NR_umem_add 1004
#endif

#endif /* SYSLET_COMPAT_NUMBERS_H */
