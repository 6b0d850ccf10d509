/* uring_shim C shim; see shim.h for the contract. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>
#include "shim.h"

const char *us_version(void) { return US_VERSION; }

void us_fill_sqe(struct io_uring_sqe *sqe, const struct us_desc *d)
{
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = d->opcode;
    sqe->flags = d->flags;
    sqe->ioprio = d->ioprio;
    sqe->fd = d->fd;
    sqe->off = d->off;
    sqe->addr = d->addr;
    sqe->len = d->len;
    sqe->rw_flags = (__kernel_rwf_t)d->op_flags;
    sqe->user_data = d->user_data;
    sqe->buf_index = d->buf_index;
    sqe->personality = d->personality;
    sqe->file_index = d->file_index;
    sqe->addr3 = d->addr3;
}

int us_prep_many(struct io_uring *ring, const struct us_desc *d, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (!sqe)
            break;
        us_fill_sqe(sqe, &d[i]);
    }
    return (int)i;
}

int us_prep1(struct io_uring *ring, uint8_t opcode, uint8_t flags, uint16_t ioprio, int32_t fd,
             uint64_t off, uint64_t addr, uint32_t len, uint32_t op_flags, uint64_t user_data,
             uint16_t buf_index, uint16_t personality, uint32_t file_index, uint64_t addr3)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe)
        return 0;
    struct us_desc d = {opcode, flags, ioprio, fd, off, addr, len, op_flags, user_data,
                        buf_index, personality, file_index, addr3};
    us_fill_sqe(sqe, &d);
    return 1;
}

int us_submit_many(struct io_uring *ring, const struct us_desc *d, unsigned n)
{
    if (io_uring_sq_space_left(ring) < n)
        return -EBUSY;
    us_prep_many(ring, d, n);
    return io_uring_submit(ring);
}

int us_submit_wait_reap(struct io_uring *ring, const struct us_desc *d, unsigned n,
                        unsigned wait_nr, struct us_cqe *out, unsigned max, int *status)
{
    if (n) {
        if (io_uring_sq_space_left(ring) < n) {
            *status = -EBUSY;
            return 0;
        }
        us_prep_many(ring, d, n);
    }
    /* One io_uring_enter: submit everything prepared and wait for wait_nr. */
    *status = io_uring_submit_and_wait(ring, wait_nr);
    return (int)us_reap(ring, out, max);
}

unsigned us_reap(struct io_uring *ring, struct us_cqe *out, unsigned max)
{
    struct io_uring_cqe *c[64];
    unsigned total = 0;
    while (total < max) {
        unsigned want = max - total > 64 ? 64 : max - total;
        unsigned n = io_uring_peek_batch_cqe(ring, c, want);
        for (unsigned i = 0; i < n; i++) {
            out[total + i].user_data = c[i]->user_data;
            out[total + i].res = c[i]->res;
            out[total + i].flags = c[i]->flags;
        }
        io_uring_cq_advance(ring, n);
        total += n;
        if (n < want)
            break;
    }
    return total;
}

unsigned us_unprep(struct io_uring *ring)
{
    /* liburing keeps prepared SQEs in [sqe_head, sqe_tail) until the next
     * submit publishes them to the kernel; rewinding sqe_tail drops them. */
    unsigned n = ring->sq.sqe_tail - ring->sq.sqe_head;
    ring->sq.sqe_tail = ring->sq.sqe_head;
    return n;
}

unsigned us_cq_ready(struct io_uring *ring) { return io_uring_cq_ready(ring); }

int us_wait_sigmask(struct io_uring *ring, unsigned min, int64_t timeout_ns,
                    const sigset_t *sigmask)
{
    if (min == 0 || io_uring_cq_ready(ring) >= min)
        return 0;
    unsigned flags = IORING_ENTER_GETEVENTS;
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    void *argp = (void *)sigmask;
    size_t argsz = _NSIG / 8;
    if (timeout_ns >= 0) {
        memset(&arg, 0, sizeof arg);
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        arg.ts = (uint64_t)(uintptr_t)&ts;
        arg.sigmask = (uint64_t)(uintptr_t)sigmask;
        arg.sigmask_sz = _NSIG / 8;
        argp = &arg;
        argsz = sizeof arg;
        flags |= IORING_ENTER_EXT_ARG;
    }
    long r = syscall(__NR_io_uring_enter, ring->ring_fd, 0, min, flags, argp, argsz);
    if (r < 0)
        return -errno;
    return 0;
}

int us_wait(struct io_uring *ring, unsigned min, int64_t timeout_ns)
{
    return us_wait_sigmask(ring, min, timeout_ns, NULL);
}

int us_probe(struct io_uring *ring, uint8_t *supported, unsigned n)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(ring);
    if (!p)
        return -ENOMEM;
    memset(supported, 0, n);
    unsigned len = p->ops_len;
    for (unsigned i = 0; i < len && i < n; i++)
        supported[i] = (p->ops[i].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
    int last = p->last_op;
    io_uring_free_probe(p);
    return last + 1;
}

int us_nop_loop(struct io_uring *ring, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        struct io_uring_cqe *cqe;
        if (!sqe)
            return -EBUSY;
        io_uring_prep_nop(sqe);
        sqe->user_data = i;
        int r = io_uring_submit_and_wait(ring, 1);
        if (r < 0)
            return r;
        r = io_uring_peek_cqe(ring, &cqe);
        if (r < 0)
            return r;
        io_uring_cqe_seen(ring, cqe);
    }
    return 0;
}

/* ---- native fallback pool --------------------------------------------- */

#define US_POST_BATCH 32
#define US_IDLE_NS 100000000      /* a worker idle this long leaves */

static void on_intr(int sig) { (void)sig; }

/* A no-op handler without SA_RESTART, so pthread_kill(US_INTR_SIG) makes a
 * blocked system call return EINTR.  Installed only where nobody else has a
 * handler for that signal. */
static void intr_install(void)
{
    struct sigaction cur;
    if (sigaction(US_INTR_SIG, NULL, &cur) == 0 && cur.sa_handler == SIG_DFL) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_intr;
        sigemptyset(&sa.sa_mask);
        sigaction(US_INTR_SIG, &sa, NULL);
    }
}
static pthread_once_t intr_once = PTHREAD_ONCE_INIT;

struct us_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;
    struct us_job *head, *tail;
    unsigned npending;
    struct us_job *done_head, *done_tail;
    unsigned ndone;
    unsigned max, nworkers, nidle, nthreads;
    unsigned ngone;             /* threads[] entries that left when idle, not joined yet */
    int done_efd;               /* us_pool_wait_fd's eventfd (-1 until first used) */
    int no_efd;                 /* none could be made: us_pool_wait_fd waits on done_cv */
    unsigned nfdwait;           /* threads in us_pool_wait_fd */
    uint8_t *gone;              /* per threads[] entry */
    int stop;
    int kicked;
    int target_fd;
    pthread_t *threads;
    unsigned threads_cap;
};

static int32_t clamp32(int64_t v)
{
    if (v > INT32_MAX) return INT32_MAX;
    if (v < INT32_MIN) return INT32_MIN;
    return (int32_t)v;
}

/* Errors of a MSG_RING post that are worth retrying: the target CQ is full
 * or the kernel is short of memory.  Anything else (the target is gone or
 * not a ring) drops the completion; the result stays in the job struct. */
static int post_retryable(int res)
{
    return res == -EOVERFLOW || res == -EAGAIN || res == -ENOMEM || res == -EBUSY;
}

#define US_POST_MAX_RETRIES 20000   /* x 100 us: give up after ~2 s */

/* Posts one completion per job into the target ring with IORING_OP_MSG_RING
 * from the worker's own small ring.  Every job is posted exactly once (only
 * the failed ones are re-posted); a post that keeps failing is dropped after
 * about 2 s so a worker can never spin forever on a ring nobody reaps. */
static void post_to_ring(struct io_uring *own, int target, struct us_job **jobs, unsigned n)
{
    struct us_job *todo[US_POST_BATCH], *again[US_POST_BATCH];
    unsigned ntodo = n, retries = 0;
    memcpy(todo, jobs, n * sizeof *todo);
    while (ntodo > 0) {
        unsigned k = 0, seen = 0, nagain = 0;
        for (; k < ntodo; k++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(own);
            if (!sqe)
                break;
            struct us_job *j = todo[k];
            io_uring_prep_msg_ring(sqe, target, (unsigned)clamp32(j->result), j->user_data, 0);
            sqe->user_data = k;
        }
        /* Every consumed SQE posts exactly one CQE on the own ring; SQEs the
         * kernel did not take yet stay queued and go in with the next enter. */
        while (seen < k) {
            int r = io_uring_submit_and_wait(own, 1);
            if (r < 0 && r != -EINTR && r != -ETIME) {
                if (++retries > US_POST_MAX_RETRIES)
                    return;                 /* own ring broken: give up */
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
            }
            struct io_uring_cqe *cqe;
            while (seen < k && io_uring_peek_cqe(own, &cqe) == 0) {
                unsigned idx = (unsigned)cqe->user_data;
                if (cqe->res < 0 && post_retryable(cqe->res) && idx < k)
                    again[nagain++] = todo[idx];
                io_uring_cqe_seen(own, cqe);
                seen++;
            }
        }
        /* Jobs that did not fit into the own SQ this round. */
        for (unsigned i = k; i < ntodo; i++)
            again[nagain++] = todo[i];
        if (nagain && nagain > ntodo - k) {
            if (++retries > US_POST_MAX_RETRIES)
                return;
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
        memcpy(todo, again, nagain * sizeof *todo);
        ntodo = nagain;
    }
}

/* Makes an eventfd readable (errno untouched; a full counter is readable). */
static void efd_signal(int fd)
{
    int saved = errno;
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, it is readable anyway */
    }
    errno = saved;
}

static void *worker_main(void *arg)
{
    struct us_pool *p = arg;
    struct io_uring own;
    int have_ring = 0;
    struct us_job *batch[US_POST_BATCH];

    if (p->target_fd >= 0)
        have_ring = io_uring_queue_init(US_POST_BATCH, &own, 0) == 0;
    sigset_t intr;
    sigemptyset(&intr);
    sigaddset(&intr, US_INTR_SIG);
    pthread_sigmask(SIG_UNBLOCK, &intr, NULL);

    pthread_mutex_lock(&p->mu);
    for (;;) {
        int idle_out = 0;
        while (!p->head && !p->stop && !idle_out) {
            /* A worker with nothing to do for US_IDLE_NS leaves (the next
             * burst starts workers again): an idle pool keeps no thread. */
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_nsec += US_IDLE_NS;
            while (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
            p->nidle++;
            idle_out = pthread_cond_timedwait(&p->work_cv, &p->mu, &t) == ETIMEDOUT;
            p->nidle--;
        }
        if (!p->head)
            break;
        /* Take a fair share of what is queued, so one wake-up serves many. */
        unsigned share = (p->npending + p->nworkers - 1) / (p->nworkers ? p->nworkers : 1);
        if (share < 1) share = 1;
        if (share > US_POST_BATCH) share = US_POST_BATCH;
        unsigned k = 0;
        while (k < share && p->head) {
            struct us_job *j = p->head;
            p->head = j->link_;
            if (!p->head) p->tail = NULL;
            j->link_ = NULL;
            batch[k++] = j;
        }
        p->npending -= k;
        if (p->head && p->nidle)
            pthread_cond_signal(&p->work_cv);
        pthread_mutex_unlock(&p->mu);

        for (unsigned i = 0; i < k; i++) {
            struct us_job *j = batch[i];
            __atomic_store_n(&j->runner_, pthread_self(), __ATOMIC_SEQ_CST);
            long r = syscall(j->nr, j->args[0], j->args[1], j->args[2],
                             j->args[3], j->args[4], j->args[5]);
            __atomic_store_n(&j->runner_, (pthread_t)0, __ATOMIC_SEQ_CST);
            /* libc's -1 is the kernel's -4095..-1; other negative
             * results are values (fcntl F_GETOWN of a process group) */
            j->result = r == -1 ? -(int64_t)errno : (int64_t)r;
        }

        if (p->target_fd >= 0 && have_ring) {
            post_to_ring(&own, p->target_fd, batch, k);
            pthread_mutex_lock(&p->mu);
        } else {
            pthread_mutex_lock(&p->mu);
            for (unsigned i = 0; i < k; i++) {
                if (p->done_tail) p->done_tail->link_ = batch[i];
                else p->done_head = batch[i];
                p->done_tail = batch[i];
            }
            p->ndone += k;
            pthread_cond_broadcast(&p->done_cv);
            if (p->nfdwait) {
                /* Written without the mutex (a system call under it would
                 * keep the other workers and the reaper waiting); the fd
                 * lives until us_pool_free, after every worker ended. */
                int efd = p->done_efd;
                pthread_mutex_unlock(&p->mu);
                efd_signal(efd);
                pthread_mutex_lock(&p->mu);
            }
        }
    }
    p->nworkers--;
    if (!p->stop) {     /* left when idle: the next spawn (or us_pool_free) joins it */
        for (unsigned i = 0; i < p->nthreads; i++)
            if (pthread_equal(p->threads[i], pthread_self())) {
                p->gone[i] = 1;
                p->ngone++;
                break;
            }
    }
    pthread_mutex_unlock(&p->mu);
    if (have_ring)
        io_uring_queue_exit(&own);
    return NULL;
}

/* Joins the workers that left when idle and drops them from threads[]
 * (p->mu held; they no longer need it). */
static void join_gone_locked(struct us_pool *p)
{
    if (!p->ngone)
        return;
    unsigned k = 0;
    for (unsigned i = 0; i < p->nthreads; i++) {
        if (p->gone[i]) {
            pthread_join(p->threads[i], NULL);
            continue;
        }
        p->threads[k] = p->threads[i];
        p->gone[k++] = 0;
    }
    p->nthreads = k;
    p->ngone = 0;
}

struct us_pool *us_pool_new(unsigned max_workers, int target_ring_fd)
{
    struct us_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_once(&intr_once, intr_install);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->work_cv, &ca);
    pthread_cond_init(&p->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    p->max = max_workers ? max_workers : 1;
    p->target_fd = -1;
    p->done_efd = -1;
    if (target_ring_fd < 0) {
        /* Completions stay in the pool: us_pool_wait_fd's eventfd, made now
         * so that the pool's descriptors never change while it lives.
         * Without a free fd (RLIMIT_NOFILE) the pool still works: its
         * waits are then the condition's (not ended by signals). */
        int saved = errno;
        p->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        p->no_efd = p->done_efd < 0;
        errno = saved;
    }
    if (target_ring_fd >= 0) {
        /* Own a reference to the target ring file: its fd number can then
         * never be reused for another file while workers post into it. */
        p->target_fd = fcntl(target_ring_fd, F_DUPFD_CLOEXEC, 0);
        if (p->target_fd < 0) {
            int e = errno;
            pthread_mutex_destroy(&p->mu);
            pthread_cond_destroy(&p->work_cv);
            pthread_cond_destroy(&p->done_cv);
            free(p);
            errno = e;
            return NULL;
        }
    }
    return p;
}

static int spawn_locked(struct us_pool *p)
{
    join_gone_locked(p);
    if (p->nthreads == p->threads_cap) {
        unsigned cap = p->threads_cap ? p->threads_cap * 2 : 8;
        pthread_t *t = realloc(p->threads, cap * sizeof *t);
        if (!t)
            return -ENOMEM;
        p->threads = t;
        uint8_t *g = realloc(p->gone, cap);
        if (!g)
            return -ENOMEM;
        p->gone = g;
        p->threads_cap = cap;
    }
    p->gone[p->nthreads] = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* workers take no signals */
    int r = pthread_create(&p->threads[p->nthreads], NULL, worker_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r)
        return -r;
    p->nthreads++;
    p->nworkers++;
    return 0;
}

int us_pool_submit(struct us_pool *p, struct us_job **jobs, unsigned n)
{
    if (n == 0)
        return 0;
    pthread_mutex_lock(&p->mu);
    if (p->stop) {
        pthread_mutex_unlock(&p->mu);
        return -ESHUTDOWN;
    }
    for (unsigned i = 0; i < n; i++) {
        jobs[i]->link_ = NULL;
        if (p->tail) p->tail->link_ = jobs[i];
        else p->head = jobs[i];
        p->tail = jobs[i];
    }
    p->npending += n;
    int err = 0;
    /* Grow only when the idle workers cannot cover the queue. */
    while (p->nidle < p->npending && p->nworkers < p->max) {
        unsigned busy_capacity = p->nworkers - p->nidle;
        (void)busy_capacity;
        err = spawn_locked(p);
        if (err)
            break;
        if (p->npending <= p->nworkers)
            break;
    }
    if (p->nworkers == 0 && err) {
        /* Could not start a single worker: take the jobs back. */
        p->head = p->tail = NULL;
        p->npending = 0;
        pthread_mutex_unlock(&p->mu);
        return err;
    }
    pthread_mutex_unlock(&p->mu);
    /* Wake after unlocking: a worker woken while we still hold the mutex
     * would only block on it again (two extra context switches). */
    if (n > 1)
        pthread_cond_broadcast(&p->work_cv);
    else
        pthread_cond_signal(&p->work_cv);
    return (int)n;
}

/* Takes the oldest completed job off the done list (p->mu held), or NULL. */
static struct us_job *pop_done_locked(struct us_pool *p)
{
    struct us_job *j = p->done_head;
    if (j) {
        p->done_head = j->link_;
        if (!p->done_head) p->done_tail = NULL;
        j->link_ = NULL;
    }
    return j;
}

unsigned us_pool_reap(struct us_pool *p, struct us_cqe *out, unsigned max)
{
    unsigned k = 0;
    if (!__atomic_load_n(&p->ndone, __ATOMIC_ACQUIRE))
        return 0;       /* cheap check without the lock (a hint; callers poll) */
    pthread_mutex_lock(&p->mu);
    for (struct us_job *j; k < max && (j = pop_done_locked(p));) {
        out[k].user_data = j->user_data;
        out[k].res = clamp32(j->result);
        out[k].flags = 0;
        k++;
    }
    p->ndone -= k;
    pthread_mutex_unlock(&p->mu);
    return k;
}

int us_pool_submit_packed(struct us_pool *p, struct us_job *jobs, unsigned n,
                          const int64_t *words, size_t nwords, const uint64_t *uds,
                          uint64_t ud_base)
{
    struct us_job *small[64];
    size_t pos = 0;
    for (unsigned i = 0; i < n; i++) {            /* validate before touching jobs */
        if (pos >= nwords)
            return -EINVAL;
        unsigned k = (unsigned)(words[pos] & 63);
        if (k > 6 || pos + 1 + k > nwords)
            return -EINVAL;
        pos += 1 + k;
    }
    if (pos != nwords)
        return -EINVAL;
    struct us_job **ptrs = n <= 64 ? small : malloc(n * sizeof *ptrs);
    if (!ptrs)
        return -ENOMEM;
    pos = 0;
    for (unsigned i = 0; i < n; i++) {
        int64_t head = words[pos++];
        unsigned k = (unsigned)(head & 63);
        jobs[i].nr = head >> 6;                /* arithmetic: negative nr survive */
        for (unsigned a = 0; a < 6; a++)
            jobs[i].args[a] = a < k ? words[pos + a] : 0;
        pos += k;
        jobs[i].user_data = uds ? uds[i] : ud_base + i;
        jobs[i].result = 0;
        ptrs[i] = &jobs[i];
    }
    int r = us_pool_submit(p, ptrs, n);
    if (ptrs != small)
        free(ptrs);
    return r;
}

unsigned us_pool_reap64(struct us_pool *p, uint64_t *uds, int64_t *res, unsigned max)
{
    unsigned k = 0;
    pthread_mutex_lock(&p->mu);
    for (struct us_job *j; k < max && (j = pop_done_locked(p));) {
        uds[k] = j->user_data;
        res[k] = j->result;
        k++;
    }
    p->ndone -= k;
    pthread_mutex_unlock(&p->mu);
    return k;
}

int us_pool_wait(struct us_pool *p, unsigned min, int64_t timeout_ns)
{
    int r = 0;
    struct timespec dl;
    if (timeout_ns >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += timeout_ns / 1000000000;
        dl.tv_nsec += timeout_ns % 1000000000;
        if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    }
    pthread_mutex_lock(&p->mu);
    while (p->ndone < min && !p->kicked) {
        if (timeout_ns >= 0) {
            if (pthread_cond_timedwait(&p->done_cv, &p->mu, &dl) == ETIMEDOUT) {
                r = p->ndone >= min ? 0 : -ETIME;
                break;
            }
        } else {
            pthread_cond_wait(&p->done_cv, &p->mu);
        }
    }
    p->kicked = 0;
    pthread_mutex_unlock(&p->mu);
    return r;
}

unsigned us_pool_workers(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned n = p->nworkers;
    pthread_mutex_unlock(&p->mu);
    return n;
}

unsigned us_pool_pending(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned n = p->npending;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int us_pool_set_max(struct us_pool *p, unsigned max_workers)
{
    pthread_mutex_lock(&p->mu);
    p->max = max_workers ? max_workers : 1;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void us_pool_interrupt(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        if (!p->gone[i])
            pthread_kill(p->threads[i], US_INTR_SIG);
    pthread_mutex_unlock(&p->mu);
}

void us_pool_interrupt_job(struct us_pool *p, struct us_job *j)
{
    /* Under p->mu: a worker is joined only under it (join_gone_locked,
     * after it left) or in us_pool_free, so t stays a valid thread. */
    pthread_mutex_lock(&p->mu);
    pthread_t t = __atomic_load_n(&j->runner_, __ATOMIC_SEQ_CST);
    if (t)
        pthread_kill(t, US_INTR_SIG);
    pthread_mutex_unlock(&p->mu);
}

void us_pool_kick(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->kicked = 1;
    pthread_cond_broadcast(&p->done_cv);
    if (p->nfdwait)
        efd_signal(p->done_efd);
    pthread_mutex_unlock(&p->mu);
}

int us_pool_wait_fd(struct us_pool *p, int64_t timeout_ns, const sigset_t *sigmask)
{
    pthread_mutex_lock(&p->mu);
    if (p->ndone || p->kicked) {
        p->kicked = 0;
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    if (p->done_efd < 0 && !p->no_efd) {
        int saved = errno;
        p->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        p->no_efd = p->done_efd < 0;
        errno = saved;
    }
    if (p->no_efd) {
        pthread_mutex_unlock(&p->mu);
        return us_pool_wait(p, 1, timeout_ns);
    }
    int fd = p->done_efd;
    p->nfdwait++;       /* from now on every completion writes fd */
    pthread_mutex_unlock(&p->mu);
    struct pollfd pf = {fd, POLLIN, 0};
    struct timespec ts = {timeout_ns / 1000000000, timeout_ns % 1000000000};
    int saved = errno;
    int n = ppoll(&pf, 1, timeout_ns < 0 ? NULL : &ts, sigmask);
    int r = n > 0 ? 0 : n == 0 ? -ETIME : -errno;
    if (n > 0) {
        uint64_t v;
        if (read(fd, &v, sizeof v) < 0) {
            /* EAGAIN: another waiter drained it */
        }
    }
    errno = saved;
    pthread_mutex_lock(&p->mu);
    p->nfdwait--;
    p->kicked = 0;
    pthread_mutex_unlock(&p->mu);
    return r;
}

void us_pool_free(struct us_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work_cv);
    unsigned n = p->nthreads;
    pthread_mutex_unlock(&p->mu);
    /* Workers blocked in a system call (a read on an empty pipe, ...) are
     * interrupted with US_INTR_SIG until they notice the stop, for 5 s. */
    for (int tries = 0; tries < 1000; tries++) {
        pthread_mutex_lock(&p->mu);
        unsigned alive = p->nworkers;
        pthread_mutex_unlock(&p->mu);
        if (!alive)
            break;
        if (tries > 0) {
            pthread_mutex_lock(&p->mu);
            for (unsigned i = 0; i < n; i++)
                if (!p->gone[i])
                    pthread_kill(p->threads[i], US_INTR_SIG);
            pthread_mutex_unlock(&p->mu);
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    for (unsigned i = 0; i < n; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->gone);
    if (p->done_efd >= 0)
        close(p->done_efd);
    if (p->target_fd >= 0)
        close(p->target_fd);      /* the dup taken in us_pool_new */
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}
