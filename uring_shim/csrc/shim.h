/* uring_shim C shim: generic SQE filling for any kernel opcode, batch
 * prepare/submit/reap, a wait that never touches liburing's user-space
 * state, and the native fallback pool.  Knows nothing of syslets.
 *
 * Thread discipline: functions taking a struct io_uring * follow liburing's
 * rules (one submitter and one reaper at a time); us_wait() only reads the
 * shared ring indices and may run concurrently with either (for a ring of
 * us_ring_init it may also replace ring->ring_fd, atomically, when it takes
 * a lost descriptor back).  The pool and the descriptor keeper are fully
 * thread-safe.
 */
#ifndef URING_SHIM_H
#define URING_SHIM_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <liburing.h>

#define US_VERSION "0.1.0"

/* One SQE, described in plain words.  Field names follow struct io_uring_sqe;
 * op_flags is the 32-bit union word (rw_flags, open_flags, msg_flags, ...). */
struct us_desc {
    uint8_t opcode;
    uint8_t flags;            /* IOSQE_* */
    uint16_t ioprio;
    int32_t fd;
    uint64_t off;             /* also addr2 */
    uint64_t addr;            /* also splice_off_in */
    uint32_t len;
    uint32_t op_flags;
    uint64_t user_data;
    uint16_t buf_index;
    uint16_t personality;
    uint32_t file_index;      /* also splice_fd_in */
    uint64_t addr3;
};

struct us_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

const char *us_version(void);

void us_fill_sqe(struct io_uring_sqe *sqe, const struct us_desc *d);
/* Prepares up to n descriptors; returns how many fit in the SQ. */
int us_prep_many(struct io_uring *ring, const struct us_desc *d, unsigned n);
/* Prepares one SQE from plain arguments (struct us_desc field order); 1, or 0
 * when the SQ is full. */
int us_prep1(struct io_uring *ring, uint8_t opcode, uint8_t flags, uint16_t ioprio, int32_t fd,
             uint64_t off, uint64_t addr, uint32_t len, uint32_t op_flags, uint64_t user_data,
             uint16_t buf_index, uint16_t personality, uint32_t file_index, uint64_t addr3);
/* Prepares all n (or -EBUSY if they do not fit, nothing prepared) and submits;
 * returns io_uring_submit()'s result. */
int us_submit_many(struct io_uring *ring, const struct us_desc *d, unsigned n);
/* The fused batch path: prepares all n descriptors (none if they do not all
 * fit: *status = -EBUSY, returns 0), submits them together with anything
 * prepared before and waits for wait_nr CQEs in ONE io_uring_enter, then
 * reaps up to max ready CQEs into out.  Returns the number reaped; *status
 * receives io_uring_submit_and_wait()'s result (number submitted, or -errno;
 * a wait interrupted by a signal after submitting still reports the count,
 * so callers compare the number reaped with what they expect). */
int us_submit_wait_reap(struct io_uring *ring, const struct us_desc *d, unsigned n,
                        unsigned wait_nr, struct us_cqe *out, unsigned max, int *status);
/* Copies up to max ready CQEs out and advances the CQ; never blocks. */
unsigned us_reap(struct io_uring *ring, struct us_cqe *out, unsigned max);
unsigned us_cq_ready(struct io_uring *ring);
/* Drops SQEs prepared since the last submit (not yet visible to the kernel);
 * returns how many.  SQEs already published but not consumed stay queued. */
unsigned us_unprep(struct io_uring *ring);
/* Waits until at least min CQEs are ready, or timeout_ns passes (<0: no
 * timeout).  0, -ETIME, -EINTR or another -errno.  Never loops on EINTR. */
int us_wait(struct io_uring *ring, unsigned min, int64_t timeout_ns);
/* us_wait with the thread's signal mask replaced by *sigmask (NULL: kept)
 * for the wait only, as ppoll does: a caller that blocks its signals around
 * it sees a handled signal only as -EINTR from the wait, never between. */
int us_wait_sigmask(struct io_uring *ring, unsigned min, int64_t timeout_ns,
                    const sigset_t *sigmask);
/* ---- rings that the program's close_range / dup2 cannot take away -------
 *
 * A ring made by us_ring_init() keeps its descriptor at a high number,
 * close-on-exec, and (where the kernel allows: pidfd_getfd and PIDFD_THREAD,
 * Linux 6.9) a copy in the shim's descriptor keeper, a thread with a file
 * table of its own (docs/decisions.md D26).  When the program closes that
 * number (close_range(3, ~0U), closefrom, os.closerange) or dup2s another
 * file over it, us_submit(), us_wait() and us_wait_sigmask() notice (EBADF,
 * EOPNOTSUPP, or a ring that did not move) and take the ring back from the
 * keeper under a new number; nothing in flight is lost.  Where that is
 * impossible the ring is marked faulty (us_ring_fault). */
int us_ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p);
/* io_uring_queue_exit for a ring of us_ring_init (never closes a number the
 * program reused); also fine for any other ring. */
void us_ring_exit(struct io_uring *ring);
/* io_uring_submit that recovers the ring's descriptor (above); -EIO when
 * it cannot. */
int us_submit(struct io_uring *ring);
/* NULL while the ring is usable, else why not (sticky): its shared SQ/CQ
 * indices are out of bounds (the program wrote over the ring's memory), or
 * its descriptor was lost and could not be taken back.  Cheap (a few loads);
 * call with the reaping side held, as us_reap. */
const char *us_ring_fault(struct io_uring *ring);
/* How often the ring's descriptor was taken back from the keeper. */
uint64_t us_ring_recoveries(struct io_uring *ring);
/* The addresses of a ring's four shared indices (SQ head, SQ tail, CQ head,
 * CQ tail), for tests that play the program writing over them. */
void us_ring_index_addrs(struct io_uring *ring, uint64_t *out);

/* Fills supported[0..n) with 1/0 per opcode; returns last_op+1 or -errno. */
int us_probe(struct io_uring *ring, uint8_t *supported, unsigned n);
/* NOP round trips done in C (benchmark reference). */
int us_nop_loop(struct io_uring *ring, unsigned count);

/* ---- native fallback pool --------------------------------------------- */

/* A job is owned by the caller and must stay valid until its completion has
 * been reaped.  result receives the raw kernel convention (-errno). */
struct us_job {
    int64_t nr;
    int64_t args[6];
    uint64_t user_data;
    int64_t result;
    struct us_job *link_;     /* pool-private */
    pthread_t runner_;        /* pool-private: worker running it, or 0 */
};

struct us_pool;

/* target_ring_fd >= 0: completions are posted into that ring as CQEs
 * (IORING_OP_MSG_RING, res = result clamped to int32, user_data = job's).
 * The pool keeps its own duplicate of target_ring_fd until us_pool_free
 * (high-numbered and recoverable, as us_ring_init's), so the ring stays
 * alive while workers post.  A completion is never dropped: one that cannot
 * be posted (the target CQ stays full, the target is gone, the worker has
 * no ring of its own) is queued inside the pool instead, where us_pool_reap
 * finds it -- so whoever reaps the target ring reaps the pool's list too.
 * A worker retries a post only after sleeping (100 us doubling to 10 ms).
 * target_ring_fd < 0: completions are queued inside the pool (us_pool_reap).
 * Returns NULL with errno set on failure. */
struct us_pool *us_pool_new(unsigned max_workers, int target_ring_fd);
int us_pool_submit(struct us_pool *p, struct us_job **jobs, unsigned n);
unsigned us_pool_reap(struct us_pool *p, struct us_cqe *out, unsigned max);
/* Batch form without per-job work in the caller: fills jobs[0..n) from the
 * packed words -- per job one head word (nr * 64 + k, k <= 6 the number of
 * arguments) followed by its k argument words -- and uds (NULL:
 * user_data = ud_base + i), then us_pool_submit()s them (one wake-up).
 * jobs must stay valid until reaped.  n, -EINVAL for malformed words (nothing
 * queued), or us_pool_submit's -errno. */
int us_pool_submit_packed(struct us_pool *p, struct us_job *jobs, unsigned n,
                          const int64_t *words, size_t nwords, const uint64_t *uds,
                          uint64_t ud_base);
/* Like us_pool_reap, but hands back the exact 64-bit results. */
unsigned us_pool_reap64(struct us_pool *p, uint64_t *uds, int64_t *res, unsigned max);
/* Waits for at least min queued completions; 0, -ETIME. */
int us_pool_wait(struct us_pool *p, unsigned min, int64_t timeout_ns);
/* What happened to the pool's completions (monotonic counts). */
struct us_pool_stats {
    uint64_t posted;            /* posted into the target ring */
    uint64_t post_retries;      /* posts tried again, after a sleep (target CQ full, ...) */
    uint64_t post_fallbacks;    /* queued in the pool instead (could not be posted) */
    uint64_t fd_recoveries;     /* its target dup taken back, its eventfd made anew */
};
void us_pool_stats(struct us_pool *p, struct us_pool_stats *out);
unsigned us_pool_workers(struct us_pool *p);
unsigned us_pool_pending(struct us_pool *p);
int us_pool_set_max(struct us_pool *p, unsigned max_workers);
/* Grows a stalled pool past its max: when jobs wait, no worker is idle and
 * no job has finished since the last call at least stall_ns ago, starts a
 * worker for every waiting job, up to hard_max workers in all (a call may
 * block for as long as the program likes: independent calls must not wait
 * for each other while threads can be had).  The extra workers leave when
 * idle.  Returns how many were started.  Call it now and then (the compat
 * engine's driver does, for contexts without a thread limit). */
unsigned us_pool_unstall(struct us_pool *p, int64_t stall_ns, unsigned hard_max);
/* Sends US_INTR_SIG (SIGRTMAX-3, a no-op handler without SA_RESTART) to every
 * worker: a call blocked in the kernel returns -EINTR as its result. */
void us_pool_interrupt(struct us_pool *p);
/* US_INTR_SIG while its handler is the pool's own (it is then only ever
 * sent to pool workers), else 0. */
int us_pool_intr_signal(void);
/* Interrupts the system call of one job if a worker is running it now. */
void us_pool_interrupt_job(struct us_pool *p, struct us_job *j);
/* Makes a us_pool_wait() or us_pool_wait_fd() in progress (or the next
 * one) return at once. */
void us_pool_kick(struct us_pool *p);
/* Waits up to timeout_ns (< 0: no limit) for a completion to reap (or a
 * kick) in ppoll() on an eventfd of the pool's (with *sigmask for the wait
 * when not NULL), so that a signal handler ends the wait: 0, -ETIME, or
 * -EINTR.  A pool without a target ring makes
 * that eventfd in us_pool_new; one with a target ring at the first call.
 * It lives as long as the pool, at a high close-on-exec number; if the
 * program closes that number or dup2s over it, the pool makes a new one
 * (it reads and writes only a descriptor that fstat and its close-on-exec
 * flag say is still its own eventfd).  Where no eventfd could be made
 * (RLIMIT_NOFILE) it waits as us_pool_wait(p, 1, timeout_ns) does. */
int us_pool_wait_fd(struct us_pool *p, int64_t timeout_ns, const sigset_t *sigmask);
/* Stops accepting jobs (us_pool_submit: -ESHUTDOWN), lets the workers run
 * every queued job, interrupts calls blocked in the kernel
 * (us_pool_interrupt, repeated every 5 ms for up to 5 s) and joins the
 * workers.  What is queued in the pool stays there for us_pool_reap*.
 * Idempotent. */
void us_pool_stop(struct us_pool *p);
/* us_pool_stop, then closes the pool's descriptors and frees it. */
void us_pool_free(struct us_pool *p);

#endif
