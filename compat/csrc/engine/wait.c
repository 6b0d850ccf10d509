/* Waiting for ring entries: counting the unconsumed slots, sl_wait and
 * sl_wait_intr.
 * Part of engine.c (one translation unit: see there). */

static uint64_t ring_count_locked(struct sl_ctx *c)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < c->nslots; i++) {
        uint64_t v;
        if (g_load_acquire(c->ring_addr + 8 * i, &v) == 0 && v)
            n++;
    }
    return n;
}

int64_t sl_ring_count(struct sl_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    int64_t n = c->registered ? (int64_t)ring_count_locked(c) : -EINVAL;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* What a wait waits for: v1 min unconsumed entries in the registered ring;
 * v5/v6 min consecutive entries from user_ring_idx in a head's ring; v7 a
 * syslet_ring's kernel_head other than idx. */
struct wcond {
    unsigned abi;
    uint64_t min, idx, head;
};

/* 1: the wait is over, 0: not yet, -errno: it fails (memory gone). */
static int wcond_check(struct sl_ctx *c, const struct wcond *w)
{
    switch (w->abi) {
    case SL_ABI_V5: case SL_ABI_V6: {
        uint64_t h[4];
        if (g_copy_in(h, w->head, sizeof h))
            return -EFAULT;
        if (!h[2] || !h[3] || h[3] % 8 || w->idx >= h[3] / 8 || w->min > h[3] / 8)
            return -EINVAL;
        uint64_t n = h[3] / 8;
        for (uint64_t k = 0; k < w->min; k++) {
            uint64_t v;
            if (g_load_acquire(h[2] + 8 * ((w->idx + k) % n), &v))
                return -EFAULT;
            if (!v)
                return 0;
        }
        return 1;
    }
    case SL_ABI_V7: {
        uint64_t v;
        if (g_load_acquire(w->head, &v))
            return -EFAULT;
        return (uint32_t)v != (uint32_t)w->idx;
    }
    }
    return ring_count_locked(c) >= w->min;
}

/* After a kernel wait ended by a signal whose handler ran: restart the
 * wait (the 2007 -ERESTARTSYS) when the handler was installed with
 * SA_RESTART.  Which signal it was is not known here: the wait restarts
 * when every signal that could have been delivered (not blocked in the
 * caller's mask, a handler installed; the guard's SIGSEGV/SIGBUS aside)
 * has SA_RESTART -- exact whenever the handlers agree (docs/decisions.md).
 * The pool's own interrupt signal is not one of them: it only ever goes to
 * pool workers. */
static int wait_restarts(const sigset_t *callermask)
{
    int pool_sig = us_pool_intr_signal();  /* sent to pool workers only */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV || sig == SIGBUS || sig == pool_sig ||
            sigismember(callermask, sig) == 1 || sigaction(sig, NULL, &sa) != 0)
            continue;
        if (!(sa.sa_flags & SA_SIGINFO) &&
            (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
            continue;
        if (!(sa.sa_flags & SA_RESTART))
            return 0;
    }
    return 1;
}

/* Waits until w holds (the body of every wait).  A caller that may reap
 * waits in the kernel for completions and applies them itself; otherwise
 * (max_nr_threads = N, or nothing in flight that could complete) it sleeps
 * on cv, which every publish broadcasts.  Either way it looks again at
 * least every 2 ms: consumers clear slots without telling us, and a
 * blocked producer must see the space.  intr: a signal during a kernel
 * wait ends it with -EINTR, unless its handler asked for SA_RESTART. */
static int wait_ring(struct sl_ctx *c, const struct wcond *w, int64_t timeout_ns, int intr)
{
    /* intr: from the first kernel wait on, signals are blocked but during
     * the kernel waits, which take the caller's mask back atomically (as
     * ppoll does): a handled signal then always ends a wait with EINTR, and
     * never slips in between two waits unnoticed.  The guard's signals stay
     * open.  (A wait the first look satisfies costs no mask change.) */
    sigset_t old, *wmask = NULL;       /* set before the first kernel wait */
    pthread_mutex_lock(&c->mu);
    int64_t deadline = timeout_ns >= 0 ? now_ns() + timeout_ns : INT64_MAX;
    int r;
    for (;;) {
        if (caller_reaps(c))
            caller_progress(c);
        else
            try_publish(c);
        if (ring_broken(c)) {
            r = -EIO;
            break;
        }
        if ((r = wcond_check(c, w)) != 0) {
            r = r > 0 ? 0 : r;
            break;
        }
        int64_t now = now_ns();
        if (now >= deadline) {
            r = -ETIME;
            break;
        }
        int64_t slice = deadline - now < 2000000 ? deadline - now : 2000000;
        /* Interruptible: in the kernel even with nothing in flight (a
         * signal, or the kick of a publish, ends it). */
        if (caller_reaps(c) && (intr || c->inflight || c->ready_head)) {
            if (intr && !wmask) {
                sigset_t all;
                all_but_guard_signals(&all);
                pthread_sigmask(SIG_BLOCK, &all, &old);
                wmask = &old;
            }
            if (caller_kernel_wait(c, slice, wmask) == -EINTR && intr) {
                caller_progress(c);
                if ((r = wcond_check(c, w)) != 0) {
                    r = r > 0 ? 0 : r;
                    break;
                }
                if (!wait_restarts(wmask)) {
                    r = -EINTR;
                    break;
                }
            }
        } else {
            struct timespec t = ts_at(now + slice);
            pthread_cond_timedwait(&c->cv, &c->mu, &t);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (wmask)
        pthread_sigmask(SIG_SETMASK, &old, NULL);   /* a pending handler runs now */
    return r;
}

static int wait_v1(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns, int intr)
{
    pthread_mutex_lock(&c->mu);
    int reg = c->registered;
    pthread_mutex_unlock(&c->mu);
    if (!reg)
        return -EINVAL;
    if (min_events == 0)
        return 0;
    struct wcond w = {SL_ABI_V1, min_events, 0, 0};
    return wait_ring(c, &w, timeout_ns, intr);
}

int sl_wait(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns)
{
    return wait_v1(c, min_events, timeout_ns, 0);
}

/* May the caller wait in the kernel (sl_wait_intr, sl_wait_head's intr)? */
static int can_wait_intr(struct sl_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    int ok = caller_reaps(c);
    pthread_mutex_unlock(&c->mu);
    return ok;
}

int sl_wait_intr(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns)
{
    if (!can_wait_intr(c))
        return -EOPNOTSUPP;
    return wait_v1(c, min_events, timeout_ns, 1);
}
