/* Who waits in the kernel: callers that wait reap for themselves (D24);
 * the driver thread reaps when nobody waits.
 * Part of engine.c (one translation unit: see there). */

/* ---- callers that wait reap for themselves ------------------------------- */

/* A caller that must wait for completions (async_wait, a SYSLET_SYNC atom
 * in flight) waits in the kernel itself and applies what it reaps: the CQE
 * wakes the thread that wants it, with no hand-off through the driver
 * (docs/decisions.md D24).  Not with max_nr_threads = N: there only the
 * driver may submit (io-wq keeps its workers per submitting thread), and
 * what a caller reaps may start new segments. */
static inline int caller_reaps(const struct sl_ctx *c)
{
    return !c->bounded;
}

/* How long after a caller's kernel wait the driver keeps out of the kernel
 * (two threads woken by every CQE would fight over the mutex); a program
 * that stops waiting and only polls the ring is served again after this. */
#define WAITER_LINGER_NS 10000000

/* Wakes the callers waiting in the kernel: something was published (by a
 * thread that reaped their completion first, or from the queue of entries
 * that waited for a free slot, or by a syslet that finished in a caller). */
static void kick_waiters(struct sl_ctx *c)
{
    if (!c->kwaiters)
        return;
    if (c->backend) {
        if (queue_wake_nop(c))      /* submitted now (the SQEs only: no pool hand-off) */
            submit_sq(c);
    } else {
        us_pool_kick(c->pool);
    }
}

/* What the driver does in one round, done by a waiting caller (mutex held):
 * background syslets run, prepared work is sent, completions are applied and
 * finished syslets published. */
static void caller_progress(struct sl_ctx *c)
{
    run_ready(c);
    flush(c);
    reap_all(c);
    flush(c);
    try_publish(c);
}

/* One wait in the kernel for at least one completion, up to tmo ns, by a
 * caller (mutex held on entry and on return, not during): io_uring_enter
 * on the context's ring, or ppoll() on the pool's eventfd, with the signal
 * mask *sigmask during the wait (NULL: the thread's).  Returns 0, -ETIME
 * or -EINTR (a signal). */
static int caller_kernel_wait(struct sl_ctx *c, int64_t tmo, const sigset_t *sigmask)
{
    c->kwaiters++;
    c->cnt.caller_waits++;
    pthread_mutex_unlock(&c->mu);
    int r = c->backend ? us_wait_sigmask(&c->ring, 1, tmo, sigmask)
                       : us_pool_wait_fd(c->pool, tmo, sigmask);
    pthread_mutex_lock(&c->mu);
    c->kwaiters--;
    c->last_wait_ns = now_ns();
    return r;
}

/* ---- driver thread ------------------------------------------------------ */

/* How long the driver stays with nothing to do before it ends. */
#define DRIVER_IDLE_NS 100000000

/* Pool calls of cancelled syslets are interrupted until they return. */
static void interrupt_cancelled(struct sl_ctx *c)
{
    if (!c->cancel_pending)
        return;
    unsigned ep = __atomic_load_n(&c->cancel, __ATOMIC_RELAXED);
    int left = 0;
    for (uint32_t i = 0; i < c->tab_used; i++) {
        struct syslet *s = c->tab[i];
        if (!s || s->epoch == ep || s->in_caller)
            continue;
        if (s->state == ST_POOL) {
            us_pool_interrupt_job(c->pool, &s->job);
            left = 1;
        } else if (s->state == ST_URING || s->state == ST_READY) {
            left = 1;
        }
    }
    c->cancel_pending = left;
}

/* A pool whose jobs wait while every worker is busy and none has finished
 * for POOL_STALL_NS grows past its size, up to POOL_HARD_MAX workers. */
#define POOL_STALL_NS 20000000
#define POOL_HARD_MAX 1024

static void *driver_main(void *arg)
{
    struct sl_ctx *c = arg;
    int cancel_sent = 0;
    int64_t deadline = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->broken)
            break;      /* nothing more can complete; sl_ctx_free joins it */
        run_ready(c);
        flush(c);
        try_publish(c);
        if (!c->bounded && c->inflight)
            /* Without a thread limit a blocked syslet gets a thread of its
             * own, as in 2007: pool jobs that wait while every worker
             * blocks get workers past the pool's size (D36). */
            us_pool_unstall(c->pool, POOL_STALL_NS, POOL_HARD_MAX);
        if (c->stop) {
            /* Closing: entries nobody will consume are dropped; with
             * cancellation, in-flight requests are cancelled and loops stop
             * before their next atom.  Bounded: after 3 s what still runs
             * (an uninterruptible call) is abandoned. */
            if (c->inflight == 0)
                break;
            if (!deadline)
                deadline = now_ns() + 3000000000LL;
            if (c->stop_cancel && !cancel_sent && c->backend) {
                struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
                if (sqe) {
                    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
                    sqe->user_data = (uint64_t)-2;
                    submit_sq(c);
                    cancel_sent = 1;
                }
            }
            if (c->stop_cancel)
                us_pool_interrupt(c->pool);
            if (now_ns() > deadline)
                break;
        }
        if (c->inflight == 0 && c->pubq_n == 0 && !c->ready_head) {
            /* Idle.  After DRIVER_IDLE_NS with nothing to do the driver
             * ends (the next syslet that goes async starts another:
             * ensure_driver), so an idle context keeps no thread -- and a
             * process whose syslets all complete synchronously is single-
             * threaded again, which the kernel rewards on every system call
             * (a lone thread's fd lookups take no file reference). */
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_nsec += DRIVER_IDLE_NS;
            while (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
            c->driver_idle = 1;
            int tr = pthread_cond_timedwait(&c->dcv, &c->mu, &t);
            c->driver_idle = 0;
            if (tr == ETIMEDOUT && !c->stop &&
                c->inflight == 0 && c->pubq_n == 0 && !c->ready_head) {
                c->driver_started = 0;
                c->driver_exited = 1;
                break;
            }
            continue;
        }
        if (c->ready_head) {    /* a long syslet yielded: let others in, go on */
            pthread_mutex_unlock(&c->mu);
            sched_yield();
            pthread_mutex_lock(&c->mu);
            reap_all(c);
            continue;
        }
        if (!c->stop && !c->cancel_pending && (c->kwaiters || c->last_wait_ns)) {
            /* Callers wait and reap for themselves: keep out of the kernel
             * until none has for WAITER_LINGER_NS (dcv still wakes us). */
            int64_t until = c->last_wait_ns + WAITER_LINGER_NS, now = now_ns();
            if (c->kwaiters && until < now + WAITER_LINGER_NS)
                until = now + WAITER_LINGER_NS;
            if (until > now) {
                struct timespec t = ts_at(until);
                pthread_cond_timedwait(&c->dcv, &c->mu, &t);
                reap_all(c);
                continue;
            }
            c->last_wait_ns = 0;
        }
        int64_t tmo = c->stop || c->cancel_pending ? 5000000 : c->pubq_n ? 200000 : 50000000;   /* poll a full ring */
        c->driver_in_kernel = 1;
        c->cnt.driver_waits++;
        pthread_mutex_unlock(&c->mu);
        if (c->backend)
            us_wait(&c->ring, 1, tmo);
        else
            us_pool_wait(c->pool, 1, tmo);
        pthread_mutex_lock(&c->mu);
        c->driver_in_kernel = 0;
        reap_all(c);
        interrupt_cancelled(c);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int ensure_driver(struct sl_ctx *c)
{
    if (c->driver_started)
        return 0;
    if (c->driver_exited) {
        /* It set driver_exited under the mutex and needs it no more. */
        pthread_join(c->driver, NULL);
        c->driver_exited = 0;
    }
    sigset_t all, old;
    all_but_guard_signals(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&c->driver, NULL, driver_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r)
        return -r;
    c->driver_started = 1;
    return 0;
}
