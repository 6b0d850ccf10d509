/* syslet-v5.h — the 2007 Linux syslet API, personality v5 (v3, v4, v5: February 2007), as
 * served by syslet-compat's libsyslet on io_uring (x86_64).
 *
 * Written from the project's specification (docs/spec.md, "Personality
 * v5"); docs/migration.md says what to set and what differs from a 2007
 * kernel.  Build and link as with syslet.h:
 *
 *     cc $(python -m compat config --cflags) prog.c $(python -m compat config --libs)
 *
 * or run with LD_PRELOAD=$(python -m compat config --preload).  The calls
 * are the functions below and, the 2007 way, syscall() with the numbers
 * below (always served) or with the 2007 x86_64 numbers 280-283
 * (served only under SYSLET_COMPAT_ABI=v5: they are other calls today).
 *
 * Include one syslet header per program: each defines its own layouts of
 * struct syslet_uatom and struct async_head_user.
 *
 * Return conventions (libc's): failure is -1 with errno set; a call that
 * succeeds leaves errno as it was.
 */
#ifndef SYSLET_COMPAT_SYSLET_V5_H
#define SYSLET_COMPAT_SYSLET_V5_H

#ifndef __user
#define __user
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- numbers (the project's; defined only where not defined yet) ---------- */
#ifndef __NR_async_exec
#define __NR_async_exec 1010
#endif
#ifndef __NR_async_wait
#define __NR_async_wait 1011
#endif
#ifndef __NR_umem_add
#define __NR_umem_add 1012
#endif
#ifndef __NR_async_thread
#define __NR_async_thread 1013
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

/* One system call: v1's layout, 88 bytes, every field a native word. */
struct syslet_uatom {
    unsigned long flags;                    /*  0: SYSLET_* */
    unsigned long nr;                       /*  8: system call number */
    long __user *ret_ptr;                   /* 16: result (raw: -errno); NULL = drop */
    struct syslet_uatom __user *next;       /* 24: next atom; NULL = end */
    unsigned long __user *arg_ptr[6];       /* 32: argument pointers; the first NULL ends them */
    void __user *private_;                  /* 80: the caller's, never read */
};

/* The head: passed to every call, 64 bytes, all native words. */
struct async_head_user {
    unsigned long kernel_ring_idx;                          /*  0: producer index (the engine's) */
    unsigned long user_ring_idx;                            /*  8: consumer index (the program's) */
    struct syslet_uatom __user *__user *completion_ring;    /* 16: slots (atom pointers) */
    unsigned long ring_size_bytes;                          /* 24: slots * 8 */
    void __user *head_stack;                                /* 32: never used here */
    void __user *head_eip;                                  /* 40: never run here */
    void __user *new_thread_stack;                          /* 48: must be non-zero; never consumed */
    void __user *new_thread_eip;                            /* 56: never run here */
};

#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(struct syslet_uatom) == 88, "struct syslet_uatom must be 88 bytes");
static_assert(sizeof(struct async_head_user) == 64, "struct async_head_user must be 64 bytes");
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct syslet_uatom) == 88, "struct syslet_uatom must be 88 bytes");
_Static_assert(sizeof(struct async_head_user) == 64, "struct async_head_user must be 64 bytes");
#endif

/* ---- calls ------------------------------------------------------------------ */

/* Runs the syslet starting at atom; completions go to ahu's ring (ahu is not
 * copied: a syslet that went async reads the head when it ends).  Returns the
 * final atom (completed synchronously, nothing published), NULL (went async),
 * or -1 with errno, checked in this order: EFAULT (unreadable ahu), EINVAL
 * (completion ring NULL, ring_size_bytes not a positive multiple of 8,
 * new_thread_stack 0), EFAULT (unreadable first atom), EINVAL (ASYNC and
 * SYNC together, unknown flag bits).  Inside atoms, nr 1004, 1012, 1022 and 282 runs
 * umem_add and 280, 281, 283 and the rest of 1000-1039 are refused (-EINVAL). */
long async_exec_v5(struct syslet_uatom __user *atom, struct async_head_user __user *ahu);

/* 0 once at least min_events consecutive non-NULL slots start at
 * user_ring_idx (min_events 0: at once); -1 with errno: EFAULT (unreadable
 * ahu), EINVAL (no usable ring, user_ring_idx or min_events beyond its
 * slots), EINTR (a signal handler without SA_RESTART ran; one with
 * SA_RESTART restarts the wait). */
long async_wait_v5(unsigned long min_events, unsigned long user_ring_idx,
                   struct async_head_user __user *ahu);

/* No thread is ever started on a user stack here: this parks the calling
 * thread until a handled signal, then returns -1 with errno EINTR (EFAULT
 * for an unreadable ahu).  new_thread_stack is never consumed. */
long async_thread_v5(void __user *event, struct async_head_user __user *ahu);

/* Atomically adds inc to *uptr and returns the new value (as syslet.h). */
unsigned long umem_add(unsigned long __user *uptr, unsigned long inc);

#ifdef __cplusplus
}
#endif

#endif /* SYSLET_COMPAT_SYSLET_V5_H */
