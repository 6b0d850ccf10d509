/* Advancing syslets: running atoms in place, submitting segments and pool
 * jobs (flush), taking completions (on_completion, reap_all).
 * Part of engine.c (one translation unit: see there). */

static void advance(struct sl_ctx *c, struct syslet *s)
{
    unsigned steps = 0;
    while (s->state == ST_READY) {
        /* cancel is set without the mutex (sl_cancel_all, sl_ctx_free), so
         * that a loop of inline atoms running here can be stopped. */
        int cancelled = __atomic_load_n(&c->cancel, __ATOMIC_RELAXED) != s->epoch;
        if (!s->cur || (cancelled && !s->in_caller) || (c->budget && s->natoms >= c->budget)) {
            if (s->cur) {   /* budget or cancellation: stop before this atom */
                struct member m;
                int64_t r = c->budget && s->natoms >= c->budget ? -ELOOP : -ECANCELED;
                if (read_atom(s->cur, &m, s->abi) >= 0) {
                    if (m.ret_ptr)
                        g_copy_out(m.ret_ptr, &r, 8);
                    s->final = m.atom;
                    s->final_flags = m.flags;
                }
                s->cur = 0;
            }
            finish(c, s);
            return;
        }
        if (!s->in_caller && ++steps > SL_YIELD_ATOMS) {
            /* A long (looping) async syslet: requeue it so the driver lets
             * go of the mutex now and then (other callers, other syslets). */
            queue_ready(c, s);
            return;
        }
        struct member m;
        int rr;
        if (s->have_pre) {  /* the first atom, read by start_syslet just now */
            m = s->pre;
            rr = s->pre.done;
            s->have_pre = 0;
        } else {
            rr = read_atom(s->cur, &m, s->abi);
        }
        if (rr < 0) {       /* unreadable atom: the last executed one is final */
            c->cnt.faults++;
            s->cur = 0;
            continue;
        }
        int64_t r;
        if (rr == 1) {      /* unreadable argument pointer */
            c->cnt.faults++;
            trace_member(c, s, &m, "efault");
            if (complete_atom(c, s, &m, -EFAULT))
                s->cur = 0;
            continue;
        }
        if (m.flags & ~(uint64_t)F_ALL) {
            trace_member(c, s, &m, "einval(flags)");
            if (complete_atom(c, s, &m, -EINVAL))
                s->cur = 0;
            continue;
        }
        /* With max_nr_threads = N only the driver submits to io_uring: io-wq
         * keeps a worker pool per submitting thread, so N holds only then. */
        int use_uring = c->uring_exec && !(c->bounded && s->in_caller);
        int sync_only = c->sync_only && s->abi == SL_ABI_V1;
        int must_sync = sync_only ||
                        (s->in_caller && ((m.flags & F_SYNC) || (c->bounded && s->sync_all)));
        int special = is_refused(m.nr, m.abi, c->env_abi) || out_of_range(m.nr) || is_umem(m.nr, m.abi);
        int has_op = !special && uring_op(&m);
        /* Where io_uring cannot give the native answer (D35): natively, in
         * place when it cannot block, else as a call without translation.
         * (A read is asked after its RWF_NOWAIT try: one that settles
         * there never needs its descriptor's kind.) */
        int try_read = has_op && m.op == IORING_OP_READ;
        int xr = has_op && use_uring && !try_read ? xlate_route(c, s, &m) : XR_URING;
        if (xr != XR_URING)
            has_op = 0;
        if (special || never_blocks(m.nr, m.args) || xr == XR_INLINE || sync_only ||
            (must_sync && !(use_uring && has_op))) {
            trace_member(c, s, &m, "inline");
            if (s->in_caller && !special && !never_blocks(m.nr, m.args)) {
                /* A call that may sleep, in the caller: not under the lock. */
                pthread_mutex_unlock(&c->mu);
                r = run_native(c, &m);
                pthread_mutex_lock(&c->mu);
            } else {
                r = run_native(c, &m);
            }
            c->cnt.atoms_inline++;
            NRC(c, m.nr, SL_NRC_INLINE);
            if (complete_atom(c, s, &m, r))
                s->cur = 0;
            continue;
        }
        struct member peekm;    /* m's successor, when read to decide */
        int peeked = 0;
        if (try_read && !s->force_async && m.partial < 0) {
            /* The 2007 kernel ran the call in the caller until it would
             * block; RWF_NOWAIT says exactly that.  With io_uring, only for
             * a read that would be alone in its segment: a chain of reads
             * is cheaper as one submission. */
            int alone = !use_uring || !m.next || (m.flags & F_STOP_MASK) ||
                        read_atom(m.next, &peekm, s->abi) != 0 || !uring_exact(c, s, &peekm);
            peeked = !alone;
            if (alone && try_nowait_read(c, &m, &r)) {
                trace_member(c, s, &m, "nowait");
                c->cnt.atoms_inline++;
                c->cnt.atoms_nowait++;
                NRC(c, m.nr, SL_NRC_NOWAIT);
                if (complete_atom(c, s, &m, r))
                    s->cur = 0;
                continue;
            }
        }
        if (try_read && use_uring && (xr = xlate_route(c, s, &m)) != XR_URING) {
            has_op = peeked = 0;
            if (xr == XR_INLINE) {      /* an O_NONBLOCK stream: the call itself */
                trace_member(c, s, &m, "inline");
                if (s->in_caller)
                    pthread_mutex_unlock(&c->mu);
                r = run_native(c, &m);
                if (s->in_caller)
                    pthread_mutex_lock(&c->mu);
                c->cnt.atoms_inline++;
                if (complete_atom(c, s, &m, r))
                    s->cur = 0;
                continue;
            }
        }
        if (use_uring && has_op) {
            if (io_uring_sq_space_left(&c->ring) == 0) {
                submit_sq(c);
                peeked = 0;     /* what ran may have written the successor */
            }
            if (ring_broken(c)) {   /* nothing goes into that ring: the syslet ends */
                complete_atom(c, s, &m, -EIO);
                s->cur = 0;
                continue;
            }
            plan_segment(c, s, &m, peeked ? &peekm : NULL);
            return;
        }
        if (!use_uring && !s->force_async && try_cached_native(&m, &r)) {
            /* Pool-only: what io_uring would have completed inline. */
            if (fifo_wait(c, s, &m, r))
                return;         /* a FIFO reader: the pool waits for the writer */
            trace_member(c, s, &m, "inline(cached)");
            c->cnt.atoms_inline++;
            NRC(c, m.nr, SL_NRC_INLINE);
            if (complete_atom(c, s, &m, r))
                s->cur = 0;
            continue;
        }
        if (has_op && c->uring_exec && !use_uring && !must_sync) {
            /* Bounded: it would block here, the driver submits it. */
            trace_member(c, s, &m, "handoff");
            s->pre = m;
            s->pre.done = 0;
            s->have_pre = 1;
            s->handoff = 1;
            return;
        }
        /* Native call that may block: the pool, unless it must stay here. */
        if (must_sync || !c->pool) {
            trace_member(c, s, &m, "inline(blocking)");
            pthread_mutex_unlock(&c->mu);
            r = run_native(c, &m);
            pthread_mutex_lock(&c->mu);
            c->cnt.atoms_inline++;
            NRC(c, m.nr, SL_NRC_INLINE);
            if (complete_atom(c, s, &m, r))
                s->cur = 0;
            continue;
        }
        trace_member(c, s, &m, "pool");
        s->pm = m;
        s->job.nr = (int64_t)m.nr;
        memcpy(s->job.args, m.args, sizeof m.args);
        if (m.partial > 0) {    /* the rest of a short NOWAIT read */
            s->job.args[1] += m.partial;
            s->job.args[2] -= m.partial;
            if (m.nr == 17)
                s->job.args[3] += m.partial;
        }
        s->job.user_data = make_ud(s, UD_POOL);
        s->job.result = 0;
        if (add_job(c, &s->job)) {
            r = run_native(c, &m);
            if (complete_atom(c, s, &m, r))
                s->cur = 0;
            continue;
        }
        s->state = ST_POOL;
        return;
    }
    if (s->state == ST_DONE)
        return;
}

/* Sends what advance() prepared: SQEs in one io_uring_enter, pool jobs in
 * one hand-off. */
static void on_completion(struct sl_ctx *c, uint64_t ud, int32_t res);

static void flush(struct sl_ctx *c)
{
    if (c->sqes_pending)
        /* What the kernel did not take stays in the SQ: the next flush
         * (the driver's next round at the latest) submits it again. */
        submit_sq(c);
    if (c->njobs) {
        c->cnt.pool_batches++;
        unsigned n = c->njobs;
        c->njobs = 0;
        int r = us_pool_submit(c->pool, c->jobs, n);
        if (r < 0) {
            /* Not a single worker could be started (RLIMIT_NPROC, memory):
             * the calls fail with that error instead of waiting forever.
             * (on_completion may queue new jobs into c->jobs: copy first.) */
            struct us_job **failed = malloc(n * sizeof *failed);
            if (failed) {
                memcpy(failed, c->jobs, n * sizeof *failed);
                for (unsigned i = 0; i < n; i++) {
                    failed[i]->result = r;
                    on_completion(c, failed[i]->user_data, r);
                }
                free(failed);
            }
        }
    }
}

/* A syslet still in its caller can move on: wake that caller, wherever it
 * waits (on cv, or in the kernel if another thread reaped its completion). */
static void caller_can_go_on(struct sl_ctx *c)
{
    pthread_cond_broadcast(&c->cv);
    kick_waiters(c);
}

/* One CQE (or pool completion) for syslet s. */
static void on_completion(struct sl_ctx *c, uint64_t ud, int32_t res)
{
    uint32_t slot = (uint32_t)((ud >> 8) & 0xffffffff);
    uint32_t gen = (uint32_t)(ud >> 40);
    unsigned idx = (unsigned)(ud & 0xff);
    if (slot >= c->tab_used)
        return;
    struct syslet *s = c->tab[slot];
    if (!s || s->gen != gen)
        return;
    if (idx == UD_POOL) {
        if (s->state != ST_POOL)
            return;
        c->cnt.atoms_pool++;
        NRC(c, s->pm.nr, SL_NRC_POOL);
        s->state = ST_READY;
        int64_t r = s->job.result;
        if (s->fifo_fd && s->fifo_gen == s->gen)
            r = fifo_waited(s, r);
        if (s->pm.partial > 0)
            r = r < 0 ? s->pm.partial : s->pm.partial + r;
        if (complete_atom(c, s, &s->pm, r))
            s->cur = 0;
        if (!s->in_caller)
            advance(c, s);
        else
            caller_can_go_on(c);
        return;
    }
    if (s->state != ST_URING || idx >= s->nseg)
        return;
    struct member *m = &s->seg[idx];
    m->done = 1;
    m->result = res;
    s->nreaped++;
    if (s->nreaped < s->nseg)
        return;
    /* Whole segment back: apply results in order. */
    s->state = ST_READY;
    if (s->seg[0].result == -ECANCELED && s->seg[0].partial < 0 && !c->stop &&
        s->epoch == __atomic_load_n(&c->cancel, __ATOMIC_RELAXED) && s->resubmits < 8) {
        /* Cancelled by the kernel, not by us: the thread that submitted the
         * segment exited (io_uring cancels a task's pending requests then).
         * Nothing of it ran: plan and submit it again from this thread. */
        s->resubmits++;
        if (!s->in_caller)
            advance(c, s);
        else
            caller_can_go_on(c);
        return;
    }
    for (unsigned i = 0; i < s->nseg; i++) {
        m = &s->seg[i];
        int64_t r = m->result;
        if (i > 0 && r == -ECANCELED) {
            /* Severed: the previous member's syslet successor continues. */
            c->cnt.overstops++;
            break;
        }
        if (m->partial >= 0)
            r = r < 0 ? m->partial : m->partial + r;
        if (m->op == IORING_OP_CLOSE && r == -EBADF)
            r = close_refused(m->args[0]);      /* an io_uring fd? (D35) */
        if (m->op == IORING_OP_OPENAT && fifo_wait(c, s, m, r))
            return;     /* the last member (plan_segment): the pool waits for the writer */
        if (m->direct == FDK_COLD && s->in_caller && r >= 0)
            fdk_set_cache_state(c, m->args[0], FDK_BUFFERED);   /* it was cached after all */
        c->cnt.atoms_uring++;
        NRC(c, m->nr, s->nseg > 1 ? SL_NRC_URING_LINKED : SL_NRC_URING);
        int ended = complete_atom(c, s, m, r);
        if (ended) {
            s->cur = 0;
            break;
        }
        if (i + 1 < s->nseg && s->seg[i + 1].atom != s->cur)
            break;  /* cannot happen by construction; be safe */
    }
    if (!s->in_caller)
        advance(c, s);
    else
        caller_can_go_on(c);
}

static unsigned reap_all(struct sl_ctx *c)
{
    struct us_cqe cq[64];
    unsigned total = 0, n;
    if (ring_broken(c))
        return 0;
    do {
        if (c->backend)
            n = us_reap(&c->ring, cq, 64);
        else
            n = us_pool_reap(c->pool, cq, 64);
        for (unsigned i = 0; i < n; i++)
            on_completion(c, cq[i].user_data, cq[i].res);
        total += n;
    } while (n == 64);
    /* A pool worker that could not set up its own ring for MSG_RING
     * (RLIMIT_NOFILE, RLIMIT_MEMLOCK) completes through the pool's list. */
    while (c->backend && (n = us_pool_reap(c->pool, cq, 64)) > 0) {
        for (unsigned i = 0; i < n; i++)
            on_completion(c, cq[i].user_data, cq[i].res);
        total += n;
        if (n < 64)
            break;
    }
    return total;
}

/* Advances queued syslets (driver side). */
static void run_ready(struct sl_ctx *c)
{
    /* Only the syslets queued on entry: one that requeues itself (a long
     * loop yielding) runs again on the driver's next round. */
    struct syslet *q = c->ready_head;
    c->ready_head = c->ready_tail = NULL;
    while (q) {
        struct syslet *s = q;
        q = s->qnext;
        s->queued = 0;
        advance(c, s);
    }
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The CLOCK_MONOTONIC time ns (from now_ns) as an absolute timeout for
 * the context's condition variables. */
static struct timespec ts_at(int64_t ns)
{
    struct timespec t = {ns / 1000000000, ns % 1000000000};
    return t;
}

/* Every signal but those the guard's trap needs: a thread that touches
 * user memory with SIGSEGV or SIGBUS blocked would be killed instead of
 * reaching the trap (and SIGILL, SIGFPE are not to be blocked either). */
static void all_but_guard_signals(sigset_t *s)
{
    sigfillset(s);
    sigdelset(s, SIGSEGV);
    sigdelset(s, SIGBUS);
    sigdelset(s, SIGILL);
    sigdelset(s, SIGFPE);
}
