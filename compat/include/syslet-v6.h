/* syslet-v6.h — the 2007 Linux syslet API, personality v6 (Zach Brown, September 2007), as
 * served by syslet-compat's libsyslet on io_uring (x86_64).
 *
 * Written from the project's specification (docs/spec.md, "Personality
 * v6"); docs/migration.md says what to set and what differs from a 2007
 * kernel.  Build and link as with syslet.h:
 *
 *     cc $(python -m compat config --cflags) prog.c $(python -m compat config --libs)
 *
 * or run with LD_PRELOAD=$(python -m compat config --preload).  The calls
 * are the functions below and, the 2007 way, syscall() with the numbers
 * below (always served) or with the 2007 x86_64 numbers 286-289
 * (served only under SYSLET_COMPAT_ABI=v6: they are other calls today).
 *
 * Include one syslet header per program: each defines its own layouts of
 * struct syslet_uatom and struct async_head_user.
 *
 * Return conventions (libc's): failure is -1 with errno set; a call that
 * succeeds leaves errno as it was.
 */
#ifndef SYSLET_COMPAT_SYSLET_V6_H
#define SYSLET_COMPAT_SYSLET_V6_H

#ifndef __user
#define __user
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- numbers (the project's; defined only where not defined yet) ---------- */
#ifndef __NR_async_exec
#define __NR_async_exec 1020
#endif
#ifndef __NR_async_wait
#define __NR_async_wait 1021
#endif
#ifndef __NR_umem_add
#define __NR_umem_add 1022
#endif
#ifndef __NR_async_thread
#define __NR_async_thread 1023
#endif
/* ---- flags (the same values in every 2007 atom ABI) ---------------------- */
#ifndef SYSLET_ASYNC
#define SYSLET_ASYNC                0x00000001
#define SYSLET_SYNC                 0x00000002
#define SYSLET_NO_COMPLETE          0x00000004
#define SYSLET_STOP_ON_NONZERO      0x00000008
#define SYSLET_STOP_ON_ZERO         0x00000010
#define SYSLET_STOP_ON_NEGATIVE     0x00000020
#define SYSLET_STOP_ON_NON_POSITIVE 0x00000040
#define SYSLET_STOP_MASK            0x00000078
#define SYSLET_SKIP_TO_NEXT_ON_STOP 0x00000080
#endif

/* ---- structures ------------------------------------------------------------ */

/* One system call: fixed width, 80 bytes.  SKIP_TO_NEXT_ON_STOP advances 80. */
struct syslet_uatom {
    unsigned int flags;                     /*  0: SYSLET_* */
    unsigned int nr;                        /*  4: system call number */
    unsigned long long ret_ptr;             /*  8: -> s64 result; 0 = drop */
    unsigned long long next;                /* 16: next atom; 0 = end */
    unsigned long long arg_ptr[6];          /* 24: -> u64 arguments; the first 0 ends them */
    unsigned long long private_;            /* 72: the caller's, never read */
};

/* The head: passed to every call, eight u64. */
struct async_head_user {
    unsigned long long kernel_ring_idx;     /*  0: producer index (the engine's) */
    unsigned long long user_ring_idx;       /*  8: consumer index (the program's) */
    unsigned long long completion_ring_ptr; /* 16: -> u64 slots (atom addresses) */
    unsigned long long ring_size_bytes;     /* 24: slots * 8 */
    unsigned long long head_stack;          /* 32: never used here */
    unsigned long long head_ip;             /* 40: never run here */
    unsigned long long new_thread_stack;    /* 48: must be non-zero; never consumed */
    unsigned long long new_thread_ip;       /* 56: never run here */
};

#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(struct syslet_uatom) == 80, "struct syslet_uatom must be 80 bytes");
static_assert(sizeof(struct async_head_user) == 64, "struct async_head_user must be 64 bytes");
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct syslet_uatom) == 80, "struct syslet_uatom must be 80 bytes");
_Static_assert(sizeof(struct async_head_user) == 64, "struct async_head_user must be 64 bytes");
#endif

/* ---- calls ------------------------------------------------------------------ */

/* Runs the syslet starting at atom; completions go to ahu's ring (ahu is not
 * copied: a syslet that went async reads the head when it ends).  Returns the
 * final atom (completed synchronously, nothing published), NULL (went async),
 * or -1 with errno, checked in this order: EFAULT (unreadable ahu), EINVAL
 * (completion ring NULL, ring_size_bytes not a positive multiple of 8,
 * new_thread_stack 0), EFAULT (unreadable first atom), EINVAL (ASYNC and
 * SYNC together, unknown flag bits).  Inside atoms, nr 1004, 1012, 1022 and 288 runs
 * umem_add and 286, 287, 289 and the rest of 1000-1039 are refused (-EINVAL). */
long async_exec_v6(struct syslet_uatom __user *atom, struct async_head_user __user *ahu);

/* 0 once at least min_events consecutive non-NULL slots start at
 * user_ring_idx (min_events 0: at once); -1 with errno: EFAULT (unreadable
 * ahu), EINVAL (no usable ring, user_ring_idx or min_events beyond its
 * slots), EINTR (a signal handler without SA_RESTART ran; one with
 * SA_RESTART restarts the wait). */
long async_wait_v6(unsigned long min_events, unsigned long user_ring_idx,
                   struct async_head_user __user *ahu);

/* No thread is ever started on a user stack here: this parks the calling
 * thread until a handled signal, then returns -1 with errno EINTR (EFAULT
 * for an unreadable ahu).  new_thread_stack is never consumed. */
long async_thread_v6(void __user *event, struct async_head_user __user *ahu);

/* Atomically adds inc to *uptr and returns the new value (as syslet.h). */
unsigned long umem_add(unsigned long __user *uptr, unsigned long inc);

#ifdef __cplusplus
}
#endif

#endif /* SYSLET_COMPAT_SYSLET_V6_H */
