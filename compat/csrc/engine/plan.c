/* Planning a run of atoms into one linked io_uring segment (the write-set
 * and seen-atom sets that keep a segment exact), pool jobs, driver wake-ups.
 * Part of engine.c (one translation unit: see there). */

/* What the members of a segment may write (ret cells, read buffers): a
 * sorted list of disjoint intervals (overlapping ones merged), so both
 * adding and testing a range are a binary search. */
struct outset {
    unsigned n;
    int allfree;            /* no member so far has stop bits */
    uint64_t lo[2 * SL_MAXSEG], hi[2 * SL_MAXSEG];
};

/* Index of the first interval whose hi > x (n if none). */
static unsigned outs_first_above(const struct outset *o, uint64_t x)
{
    unsigned a = 0, b = o->n;
    /* The common answers first: above everything, or below everything. */
    if (!b || o->hi[b - 1] <= x)
        return b;
    if (o->hi[0] > x)
        return 0;
    while (a < b) {
        unsigned mid = (a + b) / 2;
        if (o->hi[mid] > x)
            b = mid;
        else
            a = mid + 1;
    }
    return a;
}

static void outs_add(struct outset *o, uint64_t lo, uint64_t len)
{
    if (!len)
        return;
    uint64_t hi = lo + len < lo ? UINT64_MAX : lo + len;
    /* First interval that overlaps or touches [lo, hi): touching ones merge
     * too (ret cells of an array, consecutive buffers), so the set stays
     * small and every search short. */
    unsigned i = outs_first_above(o, lo ? lo - 1 : 0);
    unsigned j = i;
    while (j < o->n && o->lo[j] <= hi) {            /* absorb overlaps */
        if (o->lo[j] < lo) lo = o->lo[j];
        if (o->hi[j] > hi) hi = o->hi[j];
        j++;
    }
    if (j == i) {       /* insert at i */
        memmove(&o->lo[i + 1], &o->lo[i], (o->n - i) * sizeof o->lo[0]);
        memmove(&o->hi[i + 1], &o->hi[i], (o->n - i) * sizeof o->hi[0]);
        o->n++;
    } else if (j > i + 1) {     /* replace i..j-1 by one */
        memmove(&o->lo[i + 1], &o->lo[j], (o->n - j) * sizeof o->lo[0]);
        memmove(&o->hi[i + 1], &o->hi[j], (o->n - j) * sizeof o->hi[0]);
        o->n -= j - i - 1;
    }
    o->lo[i] = lo;
    o->hi[i] = hi;
}

/* May a member of the set have written any byte of [lo, lo+len)? */
static inline __attribute__((always_inline)) int outs_hit(const struct outset *o, uint64_t lo,
                                                          uint64_t len)
{
    /* Outside the set's span (the usual answer): no search. */
    if (!o->n || lo >= o->hi[o->n - 1] || (lo < o->lo[0] && len <= o->lo[0] - lo))
        return 0;
    unsigned i = outs_first_above(o, lo);
    return i < o->n && o->lo[i] < lo + len;
}

/* A tiny open-addressed set of atom addresses (never 0), 2*SL_MAXSEG slots. */
static inline unsigned seen_slot(uint64_t a)
{
    return (unsigned)((a * 0x9E3779B97F4A7C15ULL) >> 57);   /* 0..127 */
}

static int seen_has(const uint64_t *set, uint64_t a)
{
    for (unsigned i = seen_slot(a);; i = (i + 1) & (2 * SL_MAXSEG - 1)) {
        if (set[i] == a)
            return 1;
        if (!set[i])
            return 0;
    }
}

static void seen_add(uint64_t *set, uint64_t a)
{
    unsigned i = seen_slot(a);
    while (set[i] && set[i] != a)
        i = (i + 1) & (2 * SL_MAXSEG - 1);
    set[i] = a;
}

static void outs_member(struct outset *o, const struct member *m)
{
    if (m->ret_ptr)
        outs_add(o, m->ret_ptr, 8);
    if (m->op == IORING_OP_READ)
        outs_add(o, (uint64_t)m->args[1], (uint64_t)m->args[2]);
}

static void trace_member(struct sl_ctx *c, struct syslet *s, const struct member *m, const char *how)
{
    if (!c->trace)
        return;
    fprintf(stderr, "[syslet %u] atom %#llx nr=%llu flags=%#llx -> %s",
            s->slot, (unsigned long long)m->atom, (unsigned long long)m->nr,
            (unsigned long long)m->flags, how);
    if (!strcmp(how, "uring"))
        fprintf(stderr, " op=%u %s", m->op,
                m->sqe_flags & IOSQE_IO_HARDLINK ? "HARDLINK" :
                m->sqe_flags & IOSQE_IO_LINK ? "LINK" : "unlinked");
    fputc('\n', stderr);
}

/* ---- planning and advancing ------------------------------------------- */

/* Prepares a NOP whose CQE only wakes whoever waits in the ring (its
 * user_data matches no syslet).  1, or 0 when the SQ is full. */
static int queue_wake_nop(struct sl_ctx *c)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
    if (!sqe)
        return 0;
    io_uring_prep_nop(sqe);
    sqe->user_data = (uint64_t)-1;
    c->sqes_pending++;
    return 1;
}

/* Submits what the SQ holds, now (mutex held).  What the kernel does not
 * take stays pending for the next flush: it stops at the first SQE whose
 * preparation fails (a path or buffer the program changed or unmapped
 * after the engine checked it: the open of an empty path fails with
 * ENOENT at submission), and an enter can fail (the ring's descriptor
 * closed under it, D33).  Clearing sqes_pending instead left the SQEs
 * after such an SQE in the SQ for good, their syslets never completed
 * (a hang in make fuzz-long; tests/reliability/test_rel_hostile.py). */
static void submit_sq(struct sl_ctx *c)
{
    c->cnt.enters++;
    while (us_submit(&c->ring) == -EINTR)
        ;
    c->sqes_pending = io_uring_sq_ready(&c->ring) > 0;
}

/* The driver may be blocked in the kernel: make it look at the context. */
static void wake_driver(struct sl_ctx *c)
{
    pthread_cond_signal(&c->dcv);
    if (!c->driver_in_kernel)
        return;
    if (c->backend) {
        queue_wake_nop(c);
    } else {
        us_pool_kick(c->pool);
    }
}

static void queue_ready(struct sl_ctx *c, struct syslet *s)
{
    if (s->queued)
        return;
    s->queued = 1;
    s->qnext = NULL;
    if (c->ready_tail) c->ready_tail->qnext = s;
    else c->ready_head = s;
    c->ready_tail = s;
    wake_driver(c);
}

static int add_job(struct sl_ctx *c, struct us_job *j)
{
    if (c->njobs == c->jobs_cap) {
        unsigned cap = c->jobs_cap ? c->jobs_cap * 2 : 64;
        struct us_job **t = realloc(c->jobs, cap * sizeof *t);
        if (!t)
            return -ENOMEM;
        c->jobs = t;
        c->jobs_cap = cap;
    }
    c->jobs[c->njobs++] = j;
    return 0;
}

/* An open (2) or openat (257) with these flags opens a FIFO for reading
 * without waiting for a writer when io_uring (or the pool-only backend's
 * cached try) tries it non-blocking; open(2) waits.  Such an open ends its
 * segment, so that nothing linked after it runs before fifo_wait() has
 * waited for the writer. */
static int open_reads_fifo_early(const struct member *m)
{
    uint64_t fl = (uint64_t)(m->nr == 2 ? m->args[1] : m->args[2]);
    return (m->nr == 2 || m->nr == 257) && (fl & O_ACCMODE) == O_RDONLY &&
           !(fl & (O_NONBLOCK | O_PATH | O_CREAT | O_TRUNC | __O_TMPFILE | O_DIRECTORY));
}

/* The open m of syslet s returned fd.  If fd is a FIFO opened for reading
 * that way, the atom is not done: a pool job opens it again through
 * /proc/self/fd (blocking: open(2) returns once a writer is there, at once
 * if one already is), and its completion (fifo_waited) closes that second
 * descriptor and completes the atom with fd -- what open(2) would have
 * returned, when it would have.  Returns 1 when it took the atom over. */
static int fifo_wait(struct sl_ctx *c, struct syslet *s, const struct member *m, int64_t fd)
{
    /* F_GETPIPE_SZ: the cheapest question a FIFO answers and nothing else
     * does (EBADF), ~135 ns against an fstat's ~320. */
    if (fd < 0 || !c->pool || !open_reads_fifo_early(m) ||
        sys_quiet(SYS_fcntl, fd, F_GETPIPE_SZ, 0, 0) < 0)
        return 0;
    snprintf(s->fifo_path, sizeof s->fifo_path, "/proc/self/fd/%d", (int)fd);
    s->pm = *m;
    s->job.nr = 257;
    memset(s->job.args, 0, sizeof s->job.args);
    s->job.args[0] = AT_FDCWD;
    s->job.args[1] = (int64_t)(uintptr_t)s->fifo_path;
    s->job.args[2] = O_RDONLY | O_CLOEXEC;
    s->job.user_data = make_ud(s, UD_POOL);
    s->job.result = 0;
    if (add_job(c, &s->job))
        return 0;           /* keeps the early descriptor */
    s->fifo_fd = (int)fd + 1;
    s->fifo_gen = s->gen;
    s->state = ST_POOL;
    return 1;
}

/* The pool job of fifo_wait() answered r: the atom's result. */
static int64_t fifo_waited(struct syslet *s, int64_t r)
{
    int fd = s->fifo_fd - 1;
    s->fifo_fd = 0;
    if (r >= 0)
        sys_quiet(SYS_close, r, 0, 0, 0);
    return fd;              /* (without /proc: the descriptor as io_uring opened it) */
}

/* Segments shorter than this look for a back edge by scanning their
 * members; longer ones switch to the hash set (clearing it costs more than
 * a short scan). */
#define SEEN_SCAN 8

/* Plans a linked segment starting with first (already read, K_URING) and
 * prepares its SQEs.  second, when not NULL, is first's successor as
 * advance() read it just before (nothing ran in between): it is taken
 * instead of reading that atom again, once the same checks allow it.
 * Returns the number of members. */
static unsigned plan_segment(struct sl_ctx *c, struct syslet *s, struct member *first,
                             const struct member *second)
{
    struct member *seg = s->seg;
    unsigned n = 0;
    unsigned space = io_uring_sq_space_left(&c->ring);
    unsigned max = space < SL_MAXSEG ? space : SL_MAXSEG;
    struct outset outs;
    outs.n = 0;
    outs.allfree = !(first->flags & F_STOP_MASK);
    int allpread = first->nr == 17, grouped = 0;
    uint64_t wpage = UINT64_MAX;    /* a page a ret cell was just probed on (none yet:
                                       not 0, the page of NULL + small offsets) */
    uint64_t seen[2 * SL_MAXSEG];   /* atom addresses, once n reaches SEEN_SCAN */
    seg[n++] = *first;
    outs_member(&outs, first);
    /* Extend along next while every rule allows it. */
    while (n < max) {
        struct member *prev = &seg[n - 1];
        int lf = link_flag(prev);
        if (!lf || !prev->next || prev->partial >= 0 || open_reads_fifo_early(prev))
            break;
        /* An unwritable ret_ptr ends the syslet right there.  (Once per
         * page: ret cells are usually an array.) */
        if (prev->ret_ptr && (prev->ret_ptr >> 12) != wpage) {
            if (g_probe_write(prev->ret_ptr))
                break;
            if ((prev->ret_ptr & 4095) <= 4088)     /* the cell is inside the page */
                wpage = prev->ret_ptr >> 12;
        }
        uint64_t nx = prev->next;
        int back = 0;
        if (n < SEEN_SCAN) {
            for (unsigned i = 0; i < n && !back; i++)
                back = seg[i].atom == nx;
        } else {
            if (n == SEEN_SCAN) {
                memset(seen, 0, sizeof seen);
                for (unsigned i = 0; i < n; i++)
                    seen_add(seen, seg[i].atom);
            }
            back = seen_has(seen, nx);
        }
        if (back)
            break;      /* a back edge: the loop continues in a new segment */
        /* Would an earlier member write the next atom or its argument cells?
         * (Checked before the values read now are trusted.) */
        if (outs_hit(&outs, nx, atom_size(s->abi)))
            break;
        struct member *mp = &seg[n];   /* read in place: no copy */
        int peeked = n == 1 && second && second->atom == nx;
        if (peeked)
            *mp = *second;  /* (uring_exact() already said yes) */
        else if (read_atom(nx, mp, s->abi) != 0)
            break;          /* unreadable: the driver ends it exactly */
        int conflict = 0;
        for (int k = 0; k < 6 && mp->cells[k] && !conflict; k++)
            conflict = outs_hit(&outs, mp->cells[k], 8);
        if (conflict)
            break;
        if ((mp->flags & ~(uint64_t)F_ALL) || (mp->flags & F_SYNC && s->in_caller))
            break;
        if (c->budget && s->natoms + n >= c->budget)
            break;
        if (is_refused(mp->nr, mp->abi, c->env_abi) || is_umem(mp->nr, mp->abi) || !uring_op(mp) ||
            (!peeked && xlate_route(c, s, mp) != XR_URING))
            break;          /* (D35: io_uring would not give the native answer) */
        /* Results are stored only when the whole segment is back: a data
         * buffer covering an earlier member's ret cell would be written
         * from (write) or overwritten (read) in the wrong order. */
        /* (Ret cells are part of outs: no hit there, no conflict here.) */
        int buf_hit = mp->transfer && mp->args[2] &&
                      outs_hit(&outs, (uint64_t)mp->args[1], (uint64_t)mp->args[2]);
        if (buf_hit) {
            for (unsigned i = 0; i < n && !conflict; i++)
                conflict = seg[i].ret_ptr &&
                           seg[i].ret_ptr < (uint64_t)mp->args[1] + (uint64_t)mp->args[2] &&
                           (uint64_t)mp->args[1] < seg[i].ret_ptr + 8;
            if (conflict)
                break;
        }
        /* Paths are copied at submission: an earlier member must not write them. */
        if (mp->op == IORING_OP_OPENAT) {
            uint64_t p = mp->nr == 2 ? (uint64_t)mp->args[0] : (uint64_t)mp->args[1];
            uint64_t plen = 0;
            g_strnlen(p, 4096, &plen);
            if (outs_hit(&outs, p, plen + 1))
                break;
        }
        /* Independent pread64s need no link at all: while no member has a
         * stop bit and the buffers are disjoint from everything written
         * before, their order cannot be observed (results are stored in
         * order once the segment is back), so they run side by side.
         * Only while every member is such a pread64: an unlinked one would
         * not wait for an earlier write or close, and a member after the
         * group would wait for the last read only, so the segment ends there. */
        int parallel = SL_PARALLEL_READS && outs.allfree && allpread && mp->nr == 17 &&
                       !(mp->flags & F_STOP_MASK) && !buf_hit &&
                       !(mp->ret_ptr && outs_hit(&outs, mp->ret_ptr, 8));
        if (!parallel && grouped)
            break;
        grouped |= parallel;
        allpread &= mp->nr == 17;
        if (!parallel)
            prev->sqe_flags |= (uint8_t)lf;
        if (mp->flags & F_STOP_MASK)
            outs.allfree = 0;
        n++;
        if (n > SEEN_SCAN)
            seen_add(seen, mp->atom);
        outs_member(&outs, &seg[n - 1]);
    }
    s->nseg = n;
    s->nreaped = 0;
    for (unsigned i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
        struct us_desc d;
        if (i == 0 && s->force_async) {
            seg[0].sqe_flags |= IOSQE_ASYNC;
            s->force_async = 0;
        }
        member_desc(&seg[i], &d, make_ud(s, i));
        us_fill_sqe(sqe, &d);
        trace_member(c, s, &seg[i], "uring");
    }
    c->sqes_pending += n;
    c->cnt.segments++;
    s->state = ST_URING;
    return n;
}

/* Moves a READY syslet forward as far as it can go without blocking: runs
 * atoms in place, or leaves it waiting on a segment or a pool job. */
