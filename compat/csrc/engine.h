/* compat engine: the syslet hot path in C, every personality (atom reading through guarded
 * accessors, planning into linked io_uring segments, submit/peek, result
 * stores, stop tests, the completion driver and ring publishing).
 * Built on uring_shim's C API (shim.h) and liburing. */
#ifndef SYSLET_ENGINE_H
#define SYSLET_ENGINE_H

#include <stdint.h>
#include <sys/uio.h>

#define SL_VERSION "0.1.0"

/* Counters readable from Python (all monotonically increasing). */
struct sl_counters {
    uint64_t syslets_sync;
    uint64_t syslets_async;
    uint64_t atoms_uring;       /* executed as io_uring SQEs */
    uint64_t atoms_inline;      /* executed in the calling/driver thread */
    uint64_t atoms_pool;        /* executed on the fallback pool */
    uint64_t atoms_nowait;      /* subset of inline: RWF_NOWAIT fast path hits */
    uint64_t segments;          /* linked segments submitted */
    uint64_t enters;            /* io_uring_enter calls made to submit */
    uint64_t overstops;         /* links severed without a syslet stop: resumed */
    uint64_t ring_full_waits;   /* completions that found their slot occupied */
    uint64_t published;         /* ring entries written */
    uint64_t pool_batches;      /* hand-offs to the pool (one wake-up each) */
    uint64_t faults;            /* EFAULTs met in user memory */
    uint64_t direct_reads;      /* reads not tried with RWF_NOWAIT: the fd is O_DIRECT */
    uint64_t caller_waits;      /* kernel waits for completions by a waiting caller */
    uint64_t driver_waits;      /* kernel waits for completions by the driver thread */
    uint64_t cold_reads;        /* reads sent to io_uring untried: their fd's last try missed the cache */
    uint64_t post_retries;      /* pool completions posted again into the ring after a sleep */
    uint64_t post_fallbacks;    /* pool completions queued in the pool: they could not be posted */
    uint64_t fd_recoveries;     /* own descriptors the program closed or replaced, taken back */
    uint64_t fd_classified;     /* descriptors whose kind was asked from the kernel in full */
};

struct sl_ctx;

/* Per-system-call counters (sl_get_nr_counters): where the atoms of each
 * nr ran, in the same places as the atoms_* counters.  Slot nr for 0..511,
 * 512 + (nr - 1000) for the project's numbers 1000..1039, SL_NRC_SLOTS - 1
 * for any other number.  Kinds: inline (caller or driver thread, not counting
 * RWF_NOWAIT hits), RWF_NOWAIT hits, io_uring alone in its segment,
 * io_uring in a linked segment of several SQEs, the fallback pool. */
#define SL_NRC_SLOTS 553
enum { SL_NRC_INLINE, SL_NRC_NOWAIT, SL_NRC_URING, SL_NRC_URING_LINKED, SL_NRC_POOL,
       SL_NRC_KINDS };

/* backend: 1 = io_uring + pool, 0 = pool only.  *err gets -errno on failure. */
struct sl_ctx *sl_ctx_new(int backend, unsigned sq_entries, int *err);
/* Stops the driver (cancelling loops when cancel != 0, waiting otherwise),
 * joins every thread, frees.  Returns the number of syslets abandoned. */
int sl_ctx_free(struct sl_ctx *c, int cancel);
int sl_ctx_backend(struct sl_ctx *c);
/* An eventfd (EFD_NONBLOCK | EFD_CLOEXEC) the engine adds 1 to when it has
 * written ring entries, for event loops to watch: once per consumer round
 * (the first publish after sl_event_fd_clear; the ones after it until the
 * next clear leave it readable as it is).  Made on the first
 * call with the count 1 (so entries published before are reaped too), the
 * same fd after -- or a new one if the program closed or replaced it (the
 * engine never touches a number that is not its eventfd any more).
 * Closed by sl_ctx_free.  -errno: eventfd() failed, -EBADF (NULL),
 * -ECHILD (the parent's context after fork). */
int sl_event_fd(struct sl_ctx *c);
/* Reads sl_event_fd's eventfd empty, as a consumer does before it reaps the
 * ring (an entry published after that makes it readable again: the only
 * way to re-arm it; a consumer that reads the eventfd itself gets no more
 * writes until it calls this).  0, or
 * -EBADF when there is none (not made, or lost), -ECHILD. */
int sl_event_fd_clear(struct sl_ctx *c);

int sl_register(struct sl_ctx *c, uint64_t ring, uint64_t ring_bytes, uint64_t max_threads);
/* Waits until every in-flight syslet completed and was published. */
int sl_unregister(struct sl_ctx *c, uint64_t ring, uint64_t ring_bytes, int64_t timeout_ns);
/* > 0: final atom (synchronous); 0: went async; < 0: -errno. */
int64_t sl_exec(struct sl_ctx *c, uint64_t atom);
/* sl_exec for a caller that holds a lock of its own while it calls (the
 * Python entry compat._exec holds the GIL): the fast path (a lone read that
 * RWF_NOWAIT settles) runs under it; before anything that may block or wait
 * for the context's mutex the engine calls u->leave(u->arg), and
 * u->enter(u->arg) after it. */
struct sl_unlock {
    void (*leave)(void *arg);
    void (*enter)(void *arg);
    void *arg;
};
int64_t sl_exec_unlocking(struct sl_ctx *c, uint64_t atom, const struct sl_unlock *u);
typedef int64_t (*sl_exec_unlocking_fn)(struct sl_ctx *, uint64_t, const struct sl_unlock *);
/* sl_exec in two halves around its one system call, for a caller that
 * issues that call itself (the x86_64 exec entries, retless.h).
 * sl_exec_fast_begin: 1 when the exec is a lone read for the fast path: the
 * caller then issues preadv2(f->fd, &f->iov, 1, f->off, RWF_NOWAIT) and
 * hands its raw result (-errno on failure) to sl_exec_fast_end_unlocking,
 * which returns what sl_exec_unlocking would have (u as there; NULL: no
 * lock to let go).  0: nothing was done; call sl_exec.  A read of an
 * O_DIRECT fd, which would block in RWF_NOWAIT (docs/decisions.md D23),
 * comes back with f->direct set (and f->fd = -1): the caller issues no
 * read and hands over any result; the second half sends it off the
 * caller's thread. */
struct sl_fast {
    struct iovec iov;
    int64_t fd, off;
    uint64_t atom;
    struct sl_ctx *ctx;
    uint64_t o[12];
    uint64_t t0;        /* sl_ticks() before the read (D23's slow-read check) */
    uint64_t direct;    /* 1: O_DIRECT, not to be read here */
};
int sl_exec_fast_begin(struct sl_ctx *c, uint64_t atom, struct sl_fast *f);
int64_t sl_exec_fast_end_unlocking(const struct sl_fast *f, int64_t r, const struct sl_unlock *u);
typedef int (*sl_exec_fast_begin_fn)(struct sl_ctx *, uint64_t, struct sl_fast *);
typedef int64_t (*sl_exec_fast_end_unlocking_fn)(const struct sl_fast *, int64_t,
                                                 const struct sl_unlock *);
/* Runs n syslets with shared submissions; results[i] as sl_exec's. */
int sl_exec_batch(struct sl_ctx *c, const uint64_t *atoms, unsigned n, int64_t *results);
/* 0 once min unconsumed entries are in the ring, -ETIME after timeout_ns
 * (< 0: no timeout), -EINVAL without a registered ring. */
int sl_wait(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns);
/* sl_wait where the waiting thread blocks in the kernel itself (in
 * io_uring_enter, or poll() on the pool's eventfd) and reaps what it waits
 * for: a signal ends the wait with -EINTR.  -EOPNOTSUPP at once where it
 * cannot (max_nr_threads = N: wait another way). */
int sl_wait_intr(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns);
/* Unconsumed (non-NULL) ring slots. */
int64_t sl_ring_count(struct sl_ctx *c);
unsigned sl_inflight(struct sl_ctx *c);
void sl_get_counters(struct sl_ctx *c, struct sl_counters *out);
void sl_get_nr_counters(struct sl_ctx *c, uint64_t out[SL_NRC_SLOTS][SL_NRC_KINDS]);
void sl_set_trace(struct sl_ctx *c, int on);
/* 0 = no budget. */
void sl_set_budget(struct sl_ctx *c, uint64_t max_atoms);
/* Marks every running syslet cancelled: each stops before its next atom
 * (-ECANCELED stored through that atom's ret_ptr). */
void sl_cancel_all(struct sl_ctx *c);
unsigned sl_threads(struct sl_ctx *c);
/* NULL while the context is usable; else why it is not (its io_uring's
 * shared indices were written over, or its descriptor was lost for good):
 * every call then fails with -EIO. */
const char *sl_ctx_fault(struct sl_ctx *c);
/* For tests: the addresses of the io_uring's shared SQ head, SQ tail, CQ
 * head and CQ tail (us_ring_index_addrs); -EOPNOTSUPP on the pool-only
 * backend. */
int sl_ring_index_addrs(struct sl_ctx *c, uint64_t *out);

/* Guarded user-memory accessors: -EFAULT instead of SIGSEGV/SIGBUS. */
int sl_peek(uint64_t addr, void *out, uint64_t n);
int sl_poke(uint64_t addr, const void *in, uint64_t n);
int64_t sl_umem_add(uint64_t addr, uint64_t inc, int *err);
int sl_guard_install(void);
/* sl_guard_install() at most every 100 ms (cheap on hot paths). */
int sl_guard_check(void);

const char *sl_version(void);

/* ---- the later personalities (docs/spec.md 7-13) ------------ */
enum { SL_ABI_V1 = 1, SL_ABI_V5 = 5, SL_ABI_V6 = 6, SL_ABI_V7 = 7 };

/* SYSLET_COMPAT_ABI's personality (0 unset): under v7, indirect refuses
 * 286 and 287 (the drop-in's historical numbers of its own calls). */
void sl_set_env_abi(struct sl_ctx *c, int abi);
/* v5/v6 async_exec(atom, ahu): the final atom (> 0), 0 (went async: its
 * completion goes to the head's ring), or -errno (checked in the order:
 * -EFAULT head, -EINVAL ring or new_thread_stack, -EFAULT atom, v1's). */
int64_t sl_exec_head(struct sl_ctx *c, int abi, uint64_t atom, uint64_t ahu,
                     const struct sl_unlock *u);
/* v5/v6 async_wait: 0 once min_events consecutive entries start at
 * user_ring_idx; -EFAULT, -EINVAL, -ETIME (timeout_ns >= 0), -EINTR
 * (intr: a signal whose handler lacks SA_RESTART). */
int sl_wait_head(struct sl_ctx *c, int abi, uint64_t min_events, uint64_t user_ring_idx,
                 uint64_t ahu, int64_t timeout_ns, int intr);
/* v5/v6 async_thread: -EFAULT (unreadable head), else parks the caller
 * until a handled signal: -EINTR. */
int sl_async_thread(struct sl_ctx *c, uint64_t event, uint64_t ahu);
/* v7 indirect: the call's 32-bit result sign-extended (>= 0, or -errno),
 * -ESYSLETPENDING (132) when it went async with a ring. */
int64_t sl_indirect(struct sl_ctx *c, uint64_t regs, uint64_t params, uint64_t paramslen,
                    uint64_t flags, const struct sl_unlock *u);
/* v7 syslet_ring_wait: 0 once the ring's kernel_head differs from idx;
 * -EFAULT, -ETIME, -EINTR as sl_wait_head. */
int sl_ring_wait(struct sl_ctx *c, uint64_t ring, uint64_t idx, int64_t timeout_ns, int intr);

#endif
