/* The general exec path: starting syslets, the caller driving them until
 * they end or go async (settle), batches.
 * Part of engine.c (one translation unit: see there). */

static struct syslet *start_syslet(struct sl_ctx *c, uint64_t atom, int64_t *err, uint8_t *sync_all,
                                   const struct member *pre, const struct sl_tgt *t)
{
    unsigned abi = t ? t->abi : SL_ABI_V1;
    int sync_only = c->sync_only && abi == SL_ABI_V1;
    if (c->broken) {
        *err = -EIO;
        return NULL;
    }
    struct member first;
    int rr = 0;
    if (pre) {          /* the exec fast path read it and began it (a short read) */
        first = *pre;
    } else {
        if (!c->registered && abi == SL_ABI_V1) {
            *err = -EINVAL;
            return NULL;
        }
        /* The whole first atom must be readable, also when it goes async at
         * once: otherwise EFAULT and nothing runs. */
        if ((rr = read_atom(atom, &first, abi)) < 0) {
            c->cnt.faults++;
            *err = -EFAULT;
            return NULL;
        }
    }
    uint64_t flags = first.flags;
    *sync_all = (flags & F_SYNC) || sync_only;
    if ((flags & F_ASYNC) && (flags & F_SYNC)) {
        *err = -EINVAL;
        return NULL;
    }
    if (flags & ~(uint64_t)F_ALL) {
        *err = -EINVAL;
        return NULL;
    }
    struct syslet *s = syslet_new(c);
    if (!s) {
        *err = -ENOMEM;
        return NULL;
    }
    s->cur = atom;
    s->abi = (uint8_t)abi;
    s->head = t ? t->head : 0;
    s->in_caller = 1;
    s->sync_all = *sync_all;
    s->pre = first;
    s->pre.done = (uint8_t)rr;
    s->have_pre = 1;
    if ((flags & F_ASYNC) && !sync_only) {
        s->have_pre = 0;    /* the driver reads it when it runs it */
        s->in_caller = 0;
        s->async = 1;
        s->force_async = 1;
        c->inflight++;
        c->inflight_v1 += abi == SL_ABI_V1;
        c->cnt.syslets_async++;
        int r = ensure_driver(c);
        if (r) {
            syslet_free(c, s);
            c->inflight--;
            c->inflight_v1 -= abi == SL_ABI_V1;
            *err = r;
            return NULL;
        }
        queue_ready(c, s);
        *err = 0;
        return NULL;
    }
    if (flags & F_SYNC) {
        /* The whole syslet is synchronous: run it here. */
        s->state = ST_READY;
    }
    *err = 1;
    return s;
}

/* Waits (caller side) for s to leave a waiting state; the driver reaps. */
static void wait_for(struct sl_ctx *c, struct syslet *s)
{
    while ((s->state == ST_URING || s->state == ST_POOL) && !c->broken) {
        pthread_cond_signal(&c->dcv);
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_nsec += 20000000;
        if (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
        pthread_cond_timedwait(&c->cv, &c->mu, &t);
    }
}

/* Drives the caller's syslets until none can progress without blocking. */
static void drive_caller(struct sl_ctx *c, struct syslet **ss, unsigned n, const uint8_t *sync_all)
{
    for (;;) {
        flush(c);
        if (c->backend || !c->driver_started || caller_reaps(c))
            reap_all(c);
        if (c->broken)
            return;
        int progressed = 0, waiting_sync = 0;
        for (unsigned i = 0; i < n; i++) {
            struct syslet *s = ss[i];
            if (!s)
                continue;
            if (s->state == ST_READY && !s->handoff) {
                advance(c, s);
                progressed = 1;
            }
            if (s->state == ST_URING || s->state == ST_POOL) {
                int sync_here = sync_all[i];
                if (!sync_here && s->state == ST_URING && s->nseg)
                    sync_here = (s->seg[s->nreaped < s->nseg ? s->nreaped : 0].flags & F_SYNC) != 0;
                if (!sync_here && s->state == ST_POOL)
                    sync_here = (s->pm.flags & F_SYNC) != 0;
                if (sync_here)
                    waiting_sync = 1;
            }
        }
        if (progressed)
            continue;
        if (!waiting_sync)
            return;
        /* Someone needs to block: wait for a completion here and apply
         * it (next round), or let the driver reap for us. */
        if (caller_reaps(c)) {
            flush(c);       /* what the last reap prepared */
            caller_kernel_wait(c, 20000000, NULL);
        } else if (ensure_driver(c) == 0) {
            for (unsigned i = 0; i < n; i++) {
                struct syslet *s = ss[i];
                if (s && (s->state == ST_URING || s->state == ST_POOL)) {
                    flush(c);
                    c->inflight++;      /* so the driver keeps waiting */
                    wait_for(c, s);
                    c->inflight--;
                    break;
                }
            }
        } else {
            /* No driver thread (RLIMIT_NPROC): wait for completions here. */
            pthread_mutex_unlock(&c->mu);
            if (c->backend)
                us_wait(&c->ring, 1, 10000000);
            else
                us_pool_wait(c->pool, 1, 10000000);
            pthread_mutex_lock(&c->mu);
        }
    }
}

static int64_t settle(struct sl_ctx *c, struct syslet *s)
{
    if (s->state == ST_DONE) {
        int64_t r = (int64_t)s->final;
        syslet_free(c, s);
        c->cnt.syslets_sync++;
        /* Nothing executed at all (first atom vanished): EFAULT. */
        return r ? r : -EFAULT;
    }
    if (ensure_driver(c) != 0) {
        /* No driver thread can be started (RLIMIT_NPROC): nobody would
         * finish it in the background, so it is finished here, as if it
         * were synchronous (drive_caller waits without the driver). */
        uint8_t one = 1;
        s->sync_all = 1;
        s->handoff = 0;
        drive_caller(c, &s, 1, &one);
        return settle(c, s);
    }
    /* Went async: the driver takes it from here. */
    s->in_caller = 0;
    s->async = 1;
    s->handoff = 0;
    c->inflight++;
    c->inflight_v1 += s->abi == SL_ABI_V1;
    c->cnt.syslets_async++;
    if (s->state == ST_READY)
        queue_ready(c, s);
    else if (c->driver_idle)    /* it has something to wait for now */
        pthread_cond_signal(&c->dcv);
    return 0;
}

static int exec_many(struct sl_ctx *c, const uint64_t *atoms, unsigned n, int64_t *results,
                     const struct member *pre, const struct sl_tgt *t)
{
    struct syslet *ss_stack[64];
    uint8_t sync_stack[64] = {0};
    struct syslet **ss = n <= 64 ? ss_stack : calloc(n, sizeof *ss);
    uint8_t *sync_all = n <= 64 ? sync_stack : calloc(n, 1);
    if (!ss || !sync_all) {
        if (n > 64) { free(ss); free(sync_all); }
        return -ENOMEM;
    }
    if (FOREIGN(c)) {
        /* Before the mutex: a parent's thread may have held it at fork(). */
        if (n > 64) { free(ss); free(sync_all); }
        return -ECHILD;
    }
    if (!pre)
        sl_guard_check();   /* the handler may have been replaced since */
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < n; i++) {
        int64_t err;
        sync_all[i] = 0;
        ss[i] = start_syslet(c, atoms[i], &err, &sync_all[i], i == 0 ? pre : NULL, t);
        results[i] = err == 1 ? 0 : err;
    }
    drive_caller(c, ss, n, sync_all);
    for (unsigned i = 0; i < n; i++)
        if (ss[i])
            results[i] = c->broken ? -EIO : settle(c, ss[i]);
    flush(c);
    pthread_mutex_unlock(&c->mu);
    if (n > 64) { free(ss); free(sync_all); }
    return 0;
}

int sl_exec_batch(struct sl_ctx *c, const uint64_t *atoms, unsigned n, int64_t *results)
{
    if (!c)
        return -EBADF;
    return exec_many(c, atoms, n, results, NULL, NULL);
}

/* The general path of one exec (cold: out of line, so the hot path below
 * keeps a small frame).  pre, when not NULL, is the atom's first member,
 * already begun by a short NOWAIT read. */
