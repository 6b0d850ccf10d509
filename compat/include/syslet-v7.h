/* syslet-v7.h — the 2007 Linux syslet API, personality v7 (Zach Brown,
 * December 2007: indirect system calls and a syslet_ring), as served by
 * syslet-compat's libsyslet on io_uring (x86_64).
 *
 * Written from the project's specification (docs/spec.md, "Personality
 * v7"); docs/migration.md says what to set and what differs from a 2007
 * kernel.  Build and link as with syslet.h, or run with LD_PRELOAD.  The
 * calls are the functions below and, the 2007 way, syscall() with the
 * numbers below (always served) or with the 2007 x86_64 numbers 286
 * (indirect) and 287 (syslet_ring_wait), served only under
 * SYSLET_COMPAT_ABI=v7 (they are other calls today).
 *
 * Return conventions (libc's): failure is -1 with errno set; a call that
 * succeeds leaves errno as it was.
 */
#ifndef SYSLET_COMPAT_SYSLET_V7_H
#define SYSLET_COMPAT_SYSLET_V7_H

#ifndef __user
#define __user
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifndef __NR_indirect
#define __NR_indirect 1030
#endif
#ifndef __NR_syslet_ring_wait
#define __NR_syslet_ring_wait 1031
#endif

/* errno of an indirect syslet that went async: its completion comes later. */
#define ESYSLETPENDING 132

/* The call: its number and six arguments, by value. */
struct indirect_registers {
    unsigned long long rax;     /*  0: system call number */
    unsigned long long rdi;     /*  8 */
    unsigned long long rsi;     /* 16 */
    unsigned long long rdx;     /* 24 */
    unsigned long long r10;     /* 32 */
    unsigned long long r8;      /* 40 */
    unsigned long long r9;      /* 48 */
};

/* Where the 2007 kernel returned a finished syslet's thread: checked for
 * non-zero, never run here. */
struct syslet_frame {
    unsigned long long ip;      /*  0 */
    unsigned long long sp;      /*  8 */
};

struct syslet_args {
    unsigned long long ring_ptr;    /*  0: -> struct syslet_ring; 0: a plain call */
    unsigned long long caller_data; /*  8: copied into the completion */
    struct syslet_frame frame;      /* 16 */
};

union indirect_params {
    unsigned int file_flags;        /* a plain call: O_CLOEXEC, O_NONBLOCK */
    struct syslet_args syslet;
};

struct syslet_completion {
    unsigned long long status;      /*  0: the result, 32 bits sign-extended */
    unsigned long long caller_data; /*  8 */
};

/* The ring: a 16-byte header, then elements (a power of two) completions.
 * The engine writes comp[kernel_head & (elements - 1)], then advances
 * kernel_head (release); it waits while kernel_head - user_tail ==
 * elements (a 2007 kernel overwrote unread entries). */
struct syslet_ring {
    unsigned int kernel_head;       /*  0: the engine's */
    unsigned int user_tail;         /*  4: the program's */
    unsigned int elements;          /*  8 */
    unsigned int wait_group;        /* 12: unused */
    __extension__ struct syslet_completion comp[];  /* (a C99 flexible array: C++ too) */
};

#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(struct indirect_registers) == 56, "indirect_registers must be 56 bytes");
static_assert(sizeof(union indirect_params) == 32, "indirect_params must be 32 bytes");
static_assert(sizeof(struct syslet_ring) == 16, "syslet_ring must be 16 bytes");
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct indirect_registers) == 56, "indirect_registers must be 56 bytes");
_Static_assert(sizeof(union indirect_params) == 32, "indirect_params must be 32 bytes");
_Static_assert(sizeof(struct syslet_ring) == 16, "syslet_ring must be 16 bytes");
#endif

/* Runs the call in *regs.
 *   With paramslen >= 8 and params->syslet.ring_ptr != 0 (a syslet): the
 *   result when the call completed without blocking (no ring entry), or -1
 *   with errno ESYSLETPENDING when it went async: {status, caller_data}
 *   appears in the ring when it ends.
 *   Otherwise (a plain call): only accept, accept4, socket, socketpair,
 *   eventfd, eventfd2, signalfd, signalfd4 and timerfd_create, with
 *   file_flags applied atomically.
 * Results are 32-bit ints sign-extended (the 2007 convention).  -1 with
 * errno: EINVAL (flags != 0, paramslen > 32, a zero frame, elements not a
 * power of two, a refused call: the project's 1000-1039, and 286/287 under
 * SYSLET_COMPAT_ABI=v7), EFAULT (unreadable regs, params or ring), or the
 * call's own errno. */
long syslet_indirect(struct indirect_registers __user *regs, union indirect_params __user *params,
                     unsigned long paramslen, unsigned long flags);

/* 0 at once when ring->kernel_head != idx, otherwise once it changes; -1
 * with errno: EFAULT (unreadable ring), EINTR (a signal handler without
 * SA_RESTART ran; one with SA_RESTART restarts the wait). */
long syslet_ring_wait(struct syslet_ring __user *ring, unsigned long idx);

#ifdef __cplusplus
}
#endif

#endif /* SYSLET_COMPAT_SYSLET_V7_H */
