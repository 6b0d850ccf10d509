/* The syscall instruction itself, for the few hot or interposing paths
 * that must not go through libc's wrappers (a cancellation point there, or
 * our own syscall() interposer in libsyslet). */
#ifndef SYSLET_RAWSYS_H
#define SYSLET_RAWSYS_H

#if defined(__x86_64__)
/* The kernel's result as is: -errno on failure; errno untouched. */
static inline long sl_sys6(long nr, long a0, long a1, long a2, long a3, long a4, long a5)
{
    long ret;
    register long r10 __asm__("r10") = a3;
    register long r8 __asm__("r8") = a4;
    register long r9 __asm__("r9") = a5;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* The libc convention: -1 and errno on failure. */
static inline long sl_sys6_errno(long nr, long a0, long a1, long a2, long a3, long a4, long a5)
{
    long r = sl_sys6(nr, a0, a1, a2, a3, a4, a5);
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}
#endif

#endif
