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

/* Waits for min_events unconsumed ring entries (the body of sl_wait and
 * sl_wait_intr).  A caller that may reap waits in the kernel for
 * completions and applies them itself; otherwise (max_nr_threads = N, or
 * nothing in flight that could complete) it sleeps on cv, which every
 * publish broadcasts.  Either way it looks again at least every 2 ms:
 * consumers clear slots without telling us, and a blocked producer must see
 * the space.  intr: a signal during a kernel wait ends it with -EINTR. */
static int wait_ring(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns, int intr)
{
    /* intr: from the first kernel wait on, signals are blocked but during
     * the kernel waits, which take the caller's mask back atomically (as
     * ppoll does): a handled signal then always ends a wait with EINTR, and
     * never slips in between two waits unnoticed.  The guard's signals stay
     * open.  (A wait the first look satisfies costs no mask change.) */
    sigset_t old, *wmask = NULL;       /* set before the first kernel wait */
    pthread_mutex_lock(&c->mu);
    if (!c->registered || min_events == 0) {
        int e = c->registered ? 0 : -EINVAL;
        pthread_mutex_unlock(&c->mu);
        return e;
    }
    int64_t deadline = timeout_ns >= 0 ? now_ns() + timeout_ns : INT64_MAX;
    int r;
    for (;;) {
        if (caller_reaps(c))
            caller_progress(c);
        else
            try_publish(c);
        if (ring_count_locked(c) >= min_events) {
            r = 0;
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
                r = ring_count_locked(c) >= min_events ? 0 : -EINTR;
                break;
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

int sl_wait(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns)
{
    return wait_ring(c, min_events, timeout_ns, 0);
}

int sl_wait_intr(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns)
{
    pthread_mutex_lock(&c->mu);
    int ok = caller_reaps(c);
    pthread_mutex_unlock(&c->mu);
    if (!ok)
        return -EOPNOTSUPP;
    return wait_ring(c, min_events, timeout_ns, 1);
}
