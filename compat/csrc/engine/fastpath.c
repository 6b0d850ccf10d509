/* The exec fast path: a lone read settled by one RWF_NOWAIT try, in two
 * halves around its system call for the x86_64 entries (retless.h).
 * Part of engine.c (one translation unit: see there). */

static __attribute__((noinline)) int64_t exec_general(struct sl_ctx *c, uint64_t atom,
                                                      const struct sl_unlock *u,
                                                      struct member *pre,
                                                      const struct sl_tgt *t)
{
    int64_t r;
    /* The fast path leaves errno alone; the general one may not (locks,
     * condition waits, the pool), and a successful C call must. */
    int saved = errno;
    if (u)
        u->leave(u->arg);
    int e = exec_many(c, &atom, 1, &r, pre, t);
    if (u)
        u->enter(u->arg);
    errno = saved;
    return e < 0 ? e : r;
}

/* The fast path settled the atom with result r: store it, count it, and
 * the syslet ends here (no next, no skip).  o: the atom's header words. */
static inline __attribute__((always_inline)) int64_t fast_done(struct sl_ctx *c, uint64_t atom,
                                                               const uint64_t *o, int64_t r)
{
    uint64_t ret_ptr = o[2];
    if (ret_ptr && __builtin_expect(g_store8(ret_ptr, (uint64_t)r) != 0, 0))
        __atomic_add_fetch(&c->fast_faults, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->fast_hits[o[1] != 0], 1, __ATOMIC_RELAXED);
    return (int64_t)atom;
}

/* The fast path's RWF_NOWAIT read returned r, not the whole length: settle
 * it as nowait_read() would, or hand the begun member to the general path
 * (a short read of a file that must go on).  o is fast_begin's f->o: the
 * header, the four argument cells and their values (those beyond the
 * call's arity are 0: fast_begin declined anything else). */
static __attribute__((noinline)) int64_t exec_fast_rest(struct sl_ctx *c, uint64_t atom,
                                                        const struct sl_unlock *u,
                                                        const uint64_t *o, int64_t r,
                                                        int direct, const struct sl_tgt *t)
{
    if (!direct)
        fdk_tried(c, (int64_t)o[8], r);
    switch (direct ? NW_SHORT : nowait_outcome(o[1], (const int64_t *)(o + 8), r)) {
    case NW_BLOCK:
        return exec_general(c, atom, u, NULL, t);   /* nothing done */
    case NW_SHORT: {
        /* Hand over the member read_atom() would have made: begun by a
         * short read, or not tried (an O_DIRECT or cold fd). */
        struct member pre;
        member_set(&pre, atom, o, 4);
        memset(pre.args, 0, sizeof pre.args);
        memcpy(pre.args, o + 8, 4 * sizeof *o);
        uring_op(&pre);
        pre.partial = direct ? -1 : r;
        pre.direct = (uint8_t)direct;
        pre.abi = (uint8_t)(t ? t->abi : SL_ABI_V1);
        return exec_general(c, atom, u, &pre, t);
    }
    }
    return fast_done(c, atom, o, r);
}

/* g_read_atom4 for personality v6's 80-byte atom (out of line: a guarded
 * read): the same o[] -- header decoded, first four cells, their values --
 * and the same answers (1: an argument cell beyond a read/pread64's). */
static __attribute__((noinline)) int fast_read80(uint64_t atom, uint64_t *o)
{
    uint64_t w[11];
    int64_t args[6];
    int r = g_read_atom80(atom, w, args);
    if (r)
        return r < 0 ? r : 1;
    if (w[8] || w[9] || ((w[1] >> 32) == 0 && w[7]))
        return 1;
    if (!w[4] || !w[5] || !w[6] || ((w[1] >> 32) != 0 && !w[7]))
        return -EFAULT;     /* (declined: the general path decides) */
    o[0] = w[1] & 0xffffffffu;
    o[1] = w[1] >> 32;
    o[2] = w[2];
    o[3] = w[3];
    memcpy(o + 4, w + 4, 4 * sizeof *o);
    memcpy(o + 8, args, 4 * sizeof *o);
    return 0;
}

/* One exec.  The hot case runs without the mutex: a syslet of one read or
 * pread64 atom (no next, no SYNC/ASYNC/SKIP) that RWF_NOWAIT completes in
 * the caller -- what advance() would do for that atom, step for step.
 * Anything else (EAGAIN, a fault, trace, budget, max_nr_threads 0, an atom
 * of another kind) takes the general path, with nothing done.
 *
 * It comes in two halves around the one system call (struct sl_fast,
 * engine.h), so that a caller can issue that call itself: libsyslet's
 * x86_64 entry does, to return to the program without a `ret` (dropin.c).
 * fast_begin: 1 with f ready for the preadv2, or 0 -- take the general path
 * (nothing was done).  fast_end: the exec's result, given the call's. */
static inline __attribute__((always_inline)) int fast_begin(struct sl_ctx *c, uint64_t atom,
                                                            struct sl_fast *f, int v1, int v6)
{
    /* v1 needs a registered ring; the later personalities name their head
     * in every call (v1 is a constant: the test folds away). */
    if (__builtin_expect(!__atomic_load_n(v1 ? &c->fast_ok : &c->fast_free, __ATOMIC_RELAXED) ||
                         FOREIGN(c), 0))
        return 0;
    sl_guard_check();
    uint64_t *o = f->o;
    if (__builtin_expect((v6 ? fast_read80(atom, o) : g_read_atom4(atom, o)) != 0, 0))
        return 0;
    const uint64_t *h = o;
    const int64_t *a = (const int64_t *)(o + 8);
    if (__builtin_expect(h[3] || (h[0] & ~(uint64_t)(F_STOP_MASK | F_NO_COMPLETE)) ||
                         (h[1] != 0 && h[1] != 17) || !rw_exact(h[1], a) || a[2] == 0, 0))
        return 0;
    f->ctx = c;
    f->atom = atom;
    f->fd = a[0];
    f->iov.iov_base = (void *)(uintptr_t)a[1];
    f->iov.iov_len = (size_t)a[2];
    f->off = h[1] == 0 ? -1 : a[3];
    f->direct = 0;
    int k = fd_kind(c, a[0]);
    if (__builtin_expect(k != FDK_BUFFERED, 0)) {
        f->direct = (uint64_t)k;    /* O_DIRECT or cold: no read here (D23) */
        f->fd = -1;
    }
    f->t0 = sl_ticks();
    return 1;
}

static inline __attribute__((always_inline)) int64_t fast_end(const struct sl_fast *f, int64_t r,
                                                              const struct sl_unlock *u,
                                                              const struct sl_tgt *t)
{
    if (__builtin_expect(sl_ticks() - f->t0 > SL_SLOW_TICKS, 0) && r >= 0)
        fdk_forget(f->ctx, f->fd);      /* slow with data: ask about O_DIRECT again next time */
    if (__builtin_expect(r != (int64_t)f->iov.iov_len || f->direct, 0))
        return exec_fast_rest(f->ctx, f->atom, u, f->o, r, (int)f->direct, t);
    return fast_done(f->ctx, f->atom, f->o, r);
}

static inline __attribute__((always_inline)) int64_t exec_one(struct sl_ctx *c, uint64_t atom,
                                                              const struct sl_unlock *u)
{
    struct sl_fast f;
    if (__builtin_expect(!c, 0))
        return -EBADF;
    if (__builtin_expect(!fast_begin(c, atom, &f, 1, 0), 0))
        return exec_general(c, atom, u, NULL, NULL);
    return fast_end(&f, f.direct ? -EBADF : nowait_preadv((int)f.fd, &f.iov, (off_t)f.off), u, NULL);
}

int sl_exec_fast_begin(struct sl_ctx *c, uint64_t atom, struct sl_fast *f)
{
    return c ? fast_begin(c, atom, f, 1, 0) : 0;
}

int64_t sl_exec_fast_end_unlocking(const struct sl_fast *f, int64_t r, const struct sl_unlock *u)
{
    return fast_end(f, r, u, NULL);
}

int64_t sl_exec(struct sl_ctx *c, uint64_t atom)
{
    return exec_one(c, atom, NULL);
}

int64_t sl_exec_unlocking(struct sl_ctx *c, uint64_t atom, const struct sl_unlock *u)
{
    return exec_one(c, atom, u);
}
