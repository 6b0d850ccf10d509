/* Context lifetime: creation (io_uring ring, pool), register, unregister,
 * counters, trace, budget, cancel, free.
 * Part of engine.c (one translation unit: see there). */

/* ---- public API -------------------------------------------------------- */

/* One NOP through a fresh ring: 0, or -errno when the ring is unusable. */
static int nop_round_trip(struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {1, 0};
    if (!sqe)
        return -EBUSY;
    io_uring_prep_nop(sqe);
    sqe->user_data = (uint64_t)-1;
    int r;
    do {
        r = io_uring_submit(ring);
    } while (r == -EINTR);
    if (r < 0)
        return r;
    do {
        r = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
    } while (r == -EINTR);
    if (r < 0)
        return r;
    io_uring_cqe_seen(ring, cqe);
    return 0;
}

static unsigned pool_unbounded(void);
static void ctx_unbounded(struct sl_ctx *c);

struct sl_ctx *sl_ctx_new(int backend, unsigned sq_entries, int *err)
{
    *err = sl_guard_install();
    if (*err)
        return NULL;
    struct sl_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    /* the fd-kind cache: zero pages until used (SL_FDK_MAP) */
    uint8_t *fdk = mmap(NULL, SL_FDK_MAP, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (fdk == MAP_FAILED) {
        free(c);
        *err = -ENOMEM;
        return NULL;
    }
    c->fdk = fdk;
    c->fdk_round = (uint32_t *)(fdk + SL_FDK_SLOTS);
    c->fdk_id = (uint64_t *)(fdk + 5 * (size_t)SL_FDK_SLOTS);
    c->efd = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->dcv, &ca);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_once(&atfork_once, atfork_install);
    c->gen = fork_gen;
    c->backend = backend ? 1 : 0;
    c->pool_max = 4;
    if (c->backend) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = (sq_entries ? sq_entries : 256) * 8;
        int r = us_ring_init(sq_entries ? sq_entries : 256, &c->ring, &p);
        if (r < 0) {
            /* Fall back to the pool: everything still works. */
            c->backend = 0;
        } else if (nop_round_trip(&c->ring) < 0) {
            /* Setup allowed but io_uring_enter refused (some seccomp
             * profiles): every submission would fail; use the pool. */
            us_ring_exit(&c->ring);
            c->backend = 0;
        } else {
            c->ring_ok = 1;
        }
    }
    c->pool = us_pool_new(c->pool_max, c->backend ? c->ring.ring_fd : -1);
    if (!c->pool && c->ring_ok) {
        /* The pool could not take its reference to the ring (EMFILE at
         * RLIMIT_NOFILE): run on the pool alone, which needs no fd. */
        us_ring_exit(&c->ring);
        c->ring_ok = 0;
        c->backend = 0;
        c->pool = us_pool_new(c->pool_max, -1);
    }
    if (!c->pool) {
        int e = errno ? errno : ENOMEM;
        munmap(c->fdk, SL_FDK_MAP);
        free(c);
        *err = -e;
        return NULL;
    }
    ctx_unbounded(c);
    *err = 0;
    return c;
}

/* The configuration of a context without a registered v1 head: fresh, or
 * after async_unregister.  The later personalities (v5-v7) never register,
 * and a v1 head's max_nr_threads is its own (history: an argument of
 * async_register): the context runs as under an unbounded head -- io_uring
 * runs atoms, io-wq has its own limits again, the pool-only backend gets its
 * unbounded pool, the per-call heads' fast path is open (D36).  Called
 * before the context is shared, or with c->mu held. */
static void ctx_unbounded(struct sl_ctx *c)
{
    c->max_threads = (uint64_t)-1;
    c->sync_only = 0;
    c->bounded = 0;
    c->uring_exec = c->backend;
    if (c->iowq_changed) {
        unsigned vals[2] = {c->iowq_saved[0], c->iowq_saved[1]};
        io_uring_register_iowq_max_workers(&c->ring, vals);
        c->iowq_changed = 0;
    }
    c->pool_max = c->backend ? 4 : pool_unbounded();
    us_pool_set_max(c->pool, c->pool_max);
    fast_update(c);
}

int sl_ctx_backend(struct sl_ctx *c) { return c->backend; }

/* ---- the event loops' eventfd (sl_event_fd) ------------------------------ */

/* Is c->efd still the eventfd sl_event_fd made?  The program may have
 * closed it (close_range) and reused the number, or dup2'ed a file over
 * it: then it is forgotten -- never written, read or closed again.  All
 * eventfds share one inode, so the close-on-exec flag (a dup2 clears it)
 * is checked too, as uring_shim does for its own. */
static int efd_ours(struct sl_ctx *c)
{
    struct stat st;
    int fl, saved = errno;
    if (c->efd < 0)
        return 0;
    if (fstat(c->efd, &st) == 0 && st.st_dev == c->efd_dev && st.st_ino == c->efd_ino &&
        (fl = fcntl(c->efd, F_GETFD)) >= 0 && (fl & FD_CLOEXEC)) {
        errno = saved;
        return 1;
    }
    c->efd = -1;
    errno = saved;
    return 0;
}

/* try_publish wrote ring entries (mutex held): make the eventfd readable --
 * once per consumer round.  After a write, later publishes leave it (and
 * pay no fstat, fcntl and write each) until sl_event_fd_clear, which the
 * consumer calls before it takes the ring's entries: an entry published
 * after that clear writes again, one published before it is taken by that
 * round.  Thousands of completions between two reaps cost one write. */
static void event_fd_signal(struct sl_ctx *c)
{
    if (c->efd >= 0 && !c->efd_signalled && efd_ours(c)) {
        int saved = errno;
        eventfd_write(c->efd, 1);   /* EAGAIN: saturated, readable anyway */
        errno = saved;
        c->efd_signalled = 1;
    }
}

int sl_event_fd(struct sl_ctx *c)
{
    if (!c)
        return -EBADF;
    if (FOREIGN(c))
        return -ECHILD;
    pthread_mutex_lock(&c->mu);
    if (!efd_ours(c)) {
        /* Readable from the start (count 1): entries published before it
         * existed are found by the first reap.  Above the shim's floor for
         * its own descriptors, out of reach of dup2s onto small numbers. */
        int fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd >= 0) {
            int high = fcntl(fd, F_DUPFD_CLOEXEC, 512);
            if (high >= 0) {
                close(fd);
                fd = high;
            }
        }
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            pthread_mutex_unlock(&c->mu);
            return -e;
        }
        c->efd = fd;
        c->efd_dev = st.st_dev;
        c->efd_ino = st.st_ino;
        c->efd_signalled = 1;   /* made readable */
    }
    int fd = c->efd;
    pthread_mutex_unlock(&c->mu);
    return fd;
}

int sl_event_fd_clear(struct sl_ctx *c)
{
    if (!c)
        return -EBADF;
    if (FOREIGN(c))
        return -ECHILD;
    pthread_mutex_lock(&c->mu);
    int r = -EBADF;
    if (efd_ours(c)) {
        eventfd_t v;
        eventfd_read(c->efd, &v);   /* EAGAIN: it was empty */
        c->efd_signalled = 0;       /* the next publish writes it */
        r = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

/* Pool workers of the pool-only backend without max_nr_threads: 8 per
 * CPU, 8 to 256 (measured, D25). */
static unsigned pool_unbounded(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    n = n < 1 ? 8 : 8 * n;
    return n > 256 ? 256 : (unsigned)n;
}

int sl_register(struct sl_ctx *c, uint64_t ring, uint64_t ring_bytes, uint64_t max_threads)
{
    if (ring_bytes == 0 || ring_bytes % 8)
        return -EINVAL;
    if (ring & 7)
        return -EINVAL;
    if (!g_plausible(ring, ring_bytes))
        return -EFAULT;
    sl_guard_install();
    /* The producer writes every slot: each page of the ring must be
     * readable and writable now (the slots' values are left alone). */
    for (uint64_t a = ring; a < ring + ring_bytes; a = (a | 4095) + 1)
        if (g_probe_write(a))
            return -EFAULT;
    pthread_mutex_lock(&c->mu);
    if (c->registered || ring_broken(c)) {
        pthread_mutex_unlock(&c->mu);
        return c->broken ? -EIO : -EBUSY;
    }
    __atomic_store_n(&c->registered, 1, __ATOMIC_RELAXED);
    c->ring_addr = ring;
    c->ring_bytes = ring_bytes;
    c->nslots = ring_bytes / 8;
    c->prod = 0;
    c->max_threads = max_threads;
    c->sync_only = max_threads == 0;
    c->bounded = max_threads != (uint64_t)-1 && max_threads > 0;
    c->uring_exec = c->backend;
    fast_update(c);
    if (c->iowq_changed) {      /* an earlier head's limits: undo them */
        unsigned vals[2] = {c->iowq_saved[0], c->iowq_saved[1]};
        io_uring_register_iowq_max_workers(&c->ring, vals);
        c->iowq_changed = 0;
    }
    /* The io_uring backend runs on the pool only what io_uring cannot; the
     * pool-only backend runs every call that may block there: workers for
     * a deep queue of blocking reads, but fewer than the calls in flight,
     * so that a worker finds the next call queued when its call returns
     * instead of sleeping until it is woken for it (docs/decisions.md D25). */
    unsigned pool_max = c->backend ? 4 : pool_unbounded();
    if (c->bounded) {
        unsigned n = max_threads > 1024 ? 1024 : (unsigned)max_threads;
        if (c->backend && n >= 3) {
            /* N = pool + io-wq bounded + io-wq unbounded, and only the
             * driver submits, so only its io-wq exists. */
            unsigned pool = n / 3;
            unsigned vals[2] = {(n - pool) / 2, n - pool - (n - pool) / 2};
            if (io_uring_register_iowq_max_workers(&c->ring, vals) == 0) {
                c->iowq_saved[0] = vals[0];     /* the previous limits */
                c->iowq_saved[1] = vals[1];
                c->iowq_changed = 1;
            }
            pool_max = pool;
        } else {
            /* io-wq cannot go below one worker per class: for N = 1 or 2
             * every blocking call runs on the pool of N instead. */
            c->uring_exec = 0;
            pool_max = n;
        }
    }
    us_pool_set_max(c->pool, pool_max);
    c->pool_max = pool_max;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* Syslets of the registered head in flight, or their entries still
 * queued: what async_unregister waits for (the later personalities' heads
 * and rings are not its). */
static int v1_pending(const struct sl_ctx *c)
{
    return c->inflight_v1 || pub_waiting(c, pub_key(SL_ABI_V1, 0));
}

int sl_unregister(struct sl_ctx *c, uint64_t ring, uint64_t ring_bytes, int64_t timeout_ns)
{
    pthread_mutex_lock(&c->mu);
    if (!c->registered || c->ring_addr != ring || c->ring_bytes != ring_bytes) {
        pthread_mutex_unlock(&c->mu);
        return -EINVAL;
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ns >= 0) {
        dl.tv_sec += timeout_ns / 1000000000;
        dl.tv_nsec += timeout_ns % 1000000000;
        if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    }
    /* Drain: every in-flight syslet of this head completes and is published. */
    while (v1_pending(c) || ring_broken(c)) {
        if (c->broken) {
            pthread_mutex_unlock(&c->mu);
            return -EIO;
        }
        pthread_cond_signal(&c->dcv);
        if (timeout_ns >= 0) {
            if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT && v1_pending(c)) {
                pthread_mutex_unlock(&c->mu);
                return -ETIME;
            }
        } else {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_nsec += 100000000;
            if (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
            pthread_cond_timedwait(&c->cv, &c->mu, &t);
        }
    }
    __atomic_store_n(&c->registered, 0, __ATOMIC_RELAXED);
    ctx_unbounded(c);       /* its max_nr_threads ends with it */
    c->ring_addr = c->ring_bytes = c->nslots = 0;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

unsigned sl_inflight(struct sl_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    unsigned n = c->inflight;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void sl_get_counters(struct sl_ctx *c, struct sl_counters *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->cnt;
    pthread_mutex_unlock(&c->mu);
    uint64_t hits = __atomic_load_n(&c->fast_hits[0], __ATOMIC_RELAXED) +
                    __atomic_load_n(&c->fast_hits[1], __ATOMIC_RELAXED);
    out->syslets_sync += hits;
    out->atoms_inline += hits;
    out->atoms_nowait += hits;
    out->faults += __atomic_load_n(&c->fast_faults, __ATOMIC_RELAXED);
    struct us_pool_stats ps;
    us_pool_stats(c->pool, &ps);
    out->post_retries = ps.post_retries;
    out->post_fallbacks = ps.post_fallbacks;
    out->fd_recoveries = ps.fd_recoveries + (c->backend ? us_ring_recoveries(&c->ring) : 0);
}

void sl_get_nr_counters(struct sl_ctx *c, uint64_t out[SL_NRC_SLOTS][SL_NRC_KINDS])
{
    pthread_mutex_lock(&c->mu);
    memcpy(out, c->nrc, sizeof c->nrc);
    pthread_mutex_unlock(&c->mu);
    out[0][SL_NRC_NOWAIT] += __atomic_load_n(&c->fast_hits[0], __ATOMIC_RELAXED);
    out[17][SL_NRC_NOWAIT] += __atomic_load_n(&c->fast_hits[1], __ATOMIC_RELAXED);
}

void sl_set_trace(struct sl_ctx *c, int on)
{
    pthread_mutex_lock(&c->mu);
    c->trace = on;
    fast_update(c);
    pthread_mutex_unlock(&c->mu);
}

void sl_set_budget(struct sl_ctx *c, uint64_t max_atoms)
{
    pthread_mutex_lock(&c->mu);
    c->budget = max_atoms;
    fast_update(c);
    pthread_mutex_unlock(&c->mu);
}

void sl_cancel_all(struct sl_ctx *c)
{
    /* A new epoch: every syslet started before stops before its next atom
     * (seen without the mutex by a loop running inline). */
    __atomic_add_fetch(&c->cancel, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&c->mu);
    if (c->inflight) {
        c->cancel_pending = 1;
        if (c->backend) {   /* in-flight requests: all belong to old syslets */
            struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
            if (sqe) {
                io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
                sqe->user_data = (uint64_t)-2;
                c->sqes_pending++;
            }
        }
        interrupt_cancelled(c);
        flush(c);
    }
    wake_driver(c);
    flush(c);
    pthread_mutex_unlock(&c->mu);
}

unsigned sl_threads(struct sl_ctx *c)
{
    return us_pool_workers(c->pool) + (c->driver_started ? 1 : 0);
}

const char *sl_ctx_fault(struct sl_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    ring_broken(c);
    const char *f = c->broken;
    pthread_mutex_unlock(&c->mu);
    return f;
}

int sl_ring_index_addrs(struct sl_ctx *c, uint64_t *out)
{
    if (!c->backend)
        return -EOPNOTSUPP;
    us_ring_index_addrs(&c->ring, out);
    return 0;
}

int sl_ctx_free(struct sl_ctx *c, int cancel)
{
    if (!c)
        return 0;
    if (FOREIGN(c)) {
        /* A child after fork: the parent's threads do not exist here and
         * the ring belongs to the parent.  Leak the memory, touch nothing. */
        return 0;
    }
    if (cancel)     /* before the mutex: a running loop must see it */
        __atomic_add_fetch(&c->cancel, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&c->mu);
    if (cancel)
        c->stop_cancel = 1;
    c->stop = 1;
    pthread_cond_signal(&c->dcv);
    int started = c->driver_started;
    if (!started && c->driver_exited) {
        pthread_join(c->driver, NULL);
        c->driver_exited = 0;
    }
    pthread_mutex_unlock(&c->mu);
    if (started) {
        /* Wake a driver blocked in the kernel with a NOP. */
        if (c->backend) {
            pthread_mutex_lock(&c->mu);
            struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
            if (sqe) {
                io_uring_prep_nop(sqe);
                sqe->user_data = (uint64_t)-1;
                submit_sq(c);
            }
            pthread_mutex_unlock(&c->mu);
        }
        pthread_join(c->driver, NULL);
    }
    int abandoned = (int)c->inflight;
    us_pool_free(c->pool);
    if (c->ring_ok)
        us_ring_exit(&c->ring);
    for (uint32_t i = 0; i < c->tab_used; i++)
        free(c->tab[i]);
    free(c->tab);
    free(c->free_ids);
    for (unsigned i = 0; i < c->npubr; i++)
        free(c->pubr[i].e);
    free(c->pubr);
    free(c->jobs);
    if (efd_ours(c))
        close(c->efd);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->dcv);
    munmap(c->fdk, SL_FDK_MAP);
    free(c);
    return abandoned;
}
