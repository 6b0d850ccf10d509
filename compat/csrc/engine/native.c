/* Running one atom natively: umem_add and refused calls, the RWF_NOWAIT
 * try of a read and the per-fd "would it block?" cache (D23).
 * Part of engine.c (one translation unit: see there). */

/* ---- executing one atom natively -------------------------------------- */

static inline void fdk_note(struct sl_ctx *c, const struct member *m, int64_t r);

/* Stores r through m's ret_ptr and picks the successor.  Returns 0 to go on,
 * 1 when the syslet ended. */
static int complete_atom(struct sl_ctx *c, struct syslet *s, const struct member *m, int64_t r)
{
    fdk_note(c, m, r);
    s->natoms++;
    s->final = m->atom;
    s->final_flags = m->flags;
    if (m->ret_ptr && g_store8(m->ret_ptr, (uint64_t)r)) {
        c->cnt.faults++;
        s->cur = 0;
        return 1;
    }
    if (stop_holds(m->flags, r)) {
        if (m->flags & F_SKIP) {
            s->cur = m->atom + atom_size(s->abi);
            return 0;
        }
        s->cur = 0;
        return 1;
    }
    s->cur = m->next;
    return s->cur == 0;
}

/* Runs a native call in place. */
static int64_t run_native(struct sl_ctx *c, struct member *m)
{
    (void)c;
    if (is_umem(m->nr, m->abi)) {
        uint64_t v;
        if (g_add((uint64_t)m->args[0], (uint64_t)m->args[1], &v))
            return -EFAULT;
        return (int64_t)v;
    }
    if (is_refused(m->nr, m->abi, c->env_abi))
        return -EINVAL;
    if (out_of_range(m->nr))
        return -ENOSYS;
    return raw_syscall(m->nr, m->args);
}

/* preadv2(RWF_NOWAIT) without libc's wrapper (a cancellation point there:
 * two extra atomic operations per call; this is the hottest call).  Returns
 * the kernel's result as is, -errno on failure, and leaves errno alone, so
 * the fast path never has to save and restore it. */
static inline ssize_t nowait_preadv(int fd, const struct iovec *iov, off_t off)
{
#if defined(__x86_64__)
    /* pos_l, pos_h (0: the offset is 64 bits), flags */
    return sl_sys6(SYS_preadv2, fd, (long)iov, 1, (long)off, 0, RWF_NOWAIT);
#else
    int saved = errno;
    ssize_t r = preadv2(fd, iov, 1, off, RWF_NOWAIT);
    if (r < 0)
        r = -errno;
    errno = saved;
    return r;
#endif
}

/* Is fd open with O_DIRECT?  Such a read goes to the device whatever
 * RWF_NOWAIT says: ext4, xfs and block devices issue it and wait for the
 * device (~60 us here) instead of failing with EAGAIN (docs/decisions.md
 * D23).  One fcntl(F_GETFL), errno untouched; a bad fd answers no (the read
 * itself then reports it). */
static __attribute__((noinline)) int fd_direct(int fd)
{
#if defined(__x86_64__)
    long fl = sl_sys6(SYS_fcntl, fd, F_GETFL, 0, 0, 0, 0);
#else
    int saved = errno;
    long fl = fcntl(fd, F_GETFL);
    errno = saved;
#endif
    return fl >= 0 && (fl & O_DIRECT);
}

/* The O_DIRECT state of the descriptors the fast path reads, so that a
 * read costs no fcntl (D23).  "Not O_DIRECT" (FDK_BUFFERED) is trusted;
 * "O_DIRECT" (FDK_DIRECT) only errs towards sending a read off the
 * caller's thread, and is asked again every SL_FDK_RECHECK uses (a number
 * reused for a buffered file reads through io_uring or the pool, exactly,
 * until then).  An entry is forgotten when an
 * atom closes, duplicates onto, opens at or changes the flags of that
 * descriptor, and when a read through it took long (a descriptor number
 * reused for an O_DIRECT file behind the engine's back: that read waited
 * for the device once, the next is asked again). */
enum { FDK_UNKNOWN = 0, FDK_BUFFERED = 1, FDK_DIRECT = 2, FDK_COLD = 3 };
#define SL_FDK_RECHECK 256      /* an O_DIRECT entry is asked again this often */

static inline void fdk_set(struct sl_ctx *c, int64_t fd, int k)
{
    if ((uint64_t)fd < SL_FDK_SLOTS)
        __atomic_store_n(&c->fdk[fd], (uint8_t)k, __ATOMIC_RELAXED);
}

/* Where a lone read of fd goes first: FDK_BUFFERED, an RWF_NOWAIT try in
 * the caller; FDK_DIRECT, off the caller's thread (it would block);
 * FDK_COLD, straight to io_uring (the last try on fd missed the page cache:
 * io_uring's own non-blocking attempt in the submitter starts the same
 * readahead, so the try would be a second system call for nothing; a read
 * that then completes during the submit turns the fd back to BUFFERED).
 * COLD only where the caller submits to io_uring itself. */
static inline int fd_kind(struct sl_ctx *c, int64_t fd)
{
    int k = (uint64_t)fd < SL_FDK_SLOTS ? __atomic_load_n(&c->fdk[fd], __ATOMIC_RELAXED)
                                        : FDK_UNKNOWN;
    if (k == FDK_BUFFERED)
        return k;
    if (k == FDK_COLD)
        return c->uring_exec && !c->bounded ? k : FDK_BUFFERED;
    if (k == FDK_DIRECT &&
        __atomic_add_fetch(&c->fdk_direct_uses, 1, __ATOMIC_RELAXED) % SL_FDK_RECHECK)
        return k;
    k = fd_direct((int)fd) ? FDK_DIRECT : FDK_BUFFERED;
    fdk_set(c, fd, k);
    return k;
}

/* The RWF_NOWAIT try of a read of fd answered r: an EAGAIN of a file the
 * engine knows as buffered marks it COLD. */
static inline void fdk_tried(struct sl_ctx *c, int64_t fd, int64_t r)
{
    if (r == -EAGAIN && (uint64_t)fd < SL_FDK_SLOTS &&
        __atomic_load_n(&c->fdk[fd], __ATOMIC_RELAXED) == FDK_BUFFERED)
        fdk_set(c, fd, FDK_COLD);
}

static inline void fdk_forget(struct sl_ctx *c, int64_t fd)
{
    fdk_set(c, fd, FDK_UNKNOWN);
}

/* A monotonic tick count for the slow-read check: the TSC on x86_64, else
 * nanoseconds.  SL_SLOW_TICKS is far above a cached 4 KiB read (~1 us) and
 * below any device read. */
static inline uint64_t sl_ticks(void)
{
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#else
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
#endif
}
#if defined(__x86_64__)
#define SL_SLOW_TICKS 40000     /* cycles: 10-20 us at 2-4 GHz */
#else
#define SL_SLOW_TICKS 10000     /* ns */
#endif

/* What an atom did to the descriptor table (result r): forget the entries
 * it may have given another file or other flags. */
static inline void fdk_note(struct sl_ctx *c, const struct member *m, int64_t r)
{
    switch (m->nr) {
    case 3:                             /* close */
        fdk_forget(c, m->args[0]);
        break;
    case 33: case 292:                  /* dup2, dup3 */
        fdk_forget(c, m->args[1]);
        /* fall through: the result is that descriptor */
    case 2: case 85: case 257: case 437: case 32:  /* open, creat, openat, openat2, dup */
        if (r >= 0)
            fdk_forget(c, r);
        break;
    case 72:                            /* fcntl: F_SETFL, F_DUPFD* */
        fdk_forget(c, m->args[0]);
        if (r >= 0 && m->args[1] != F_SETFL)
            fdk_forget(c, r);
        break;
    case 436:                           /* close_range */
        for (uint64_t fd = (uint64_t)m->args[0]; fd < SL_FDK_SLOTS && fd <= (uint64_t)m->args[1]; fd++)
            fdk_forget(c, (int64_t)fd);
        break;
    }
}

/* A NOWAIT read of fd returned r bytes, fewer than asked: is that the
 * result?  Only a regular file or a block device would have gone on reading
 * (the rest is not cached yet): io_uring or the pool finish it exactly (or
 * find EOF).  A pipe, socket or tty returns what it had, as read() does; so
 * does a pread64 (off >= 0) that reached the end of the file. */
static int short_read_final(int fd, off_t off, int64_t r)
{
    struct stat st;
    int saved = errno;
    int fin = fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) ||
              (S_ISREG(st.st_mode) && off >= 0 && off + r >= st.st_size);
    errno = saved;
    return fin;
}

/* What the RWF_NOWAIT attempt's result r means for a read (nr 0) or
 * pread64 (17) with arguments a. */
enum { NW_DONE, NW_BLOCK, NW_SHORT };
static int nowait_outcome(uint64_t nr, const int64_t *a, int64_t r)
{
    if (r < 0)          /* would block or cannot say: the real request decides */
        return r == -EAGAIN || r == -EOPNOTSUPP || r == -EINVAL ? NW_BLOCK : NW_DONE;
    if (r == 0 || (uint64_t)r == (uint64_t)a[2] ||
        short_read_final((int)a[0], nr == 0 ? -1 : (off_t)a[3], r))
        return NW_DONE;     /* complete, end of file, or all a pipe had */
    return NW_SHORT;        /* the rest must go on */
}

/* RWF_NOWAIT attempt of a read (nr 0) or pread64 (17) with arguments a.
 * Returns 1 when it settled the atom (*res), else 0; a short read that must
 * go on sets *partial to the bytes it transferred. */
static int nowait_read(uint64_t nr, const int64_t *a, int64_t *res, int64_t *partial,
                       int64_t *raw)
{
    struct iovec iov = {(void *)(uintptr_t)a[1], (size_t)a[2]};
    if (a[2] == 0)
        return 0;
    ssize_t r = nowait_preadv((int)a[0], &iov, nr == 0 ? -1 : (off_t)a[3]);
    *raw = r;
    switch (nowait_outcome(nr, a, r)) {
    case NW_DONE:
        *res = r;
        return 1;
    case NW_SHORT:
        *partial = r;
        break;
    }
    return 0;
}

static int try_nowait_read(struct sl_ctx *c, struct member *m, int64_t *res)
{
    if (m->args[2] == 0)
        return 0;
    int k = m->direct ? m->direct : fd_kind(c, m->args[0]);
    if (k != FDK_BUFFERED) {
        m->direct = (uint8_t)k;
        if (k == FDK_DIRECT)
            c->cnt.direct_reads++;  /* it would block: io_uring or the pool */
        else
            c->cnt.cold_reads++;    /* io_uring tries it without blocking */
        return 0;
    }
    uint64_t t0 = sl_ticks();
    int64_t raw = 0;
    int done = nowait_read(m->nr, m->args, res, &m->partial, &raw);
    if (sl_ticks() - t0 > SL_SLOW_TICKS)
        fdk_forget(c, m->args[0]);  /* ask again next time */
    else if (!done)
        fdk_tried(c, m->args[0], raw);
    return done;
}

/* Pool-only backend: run in place what io_uring itself completes inline,
 * without risking a sleep.  close (io_uring runs CLOSE inline too) and an
 * open of an existing file whose path walk is fully cached: openat2 with
 * RESOLVE_CACHED fails with EAGAIN instead of doing I/O.  Returns 1 when it
 * settled the atom (result in *res). */
static int try_cached_native(const struct member *m, int64_t *res)
{
    if (m->nr == 3) {
        *res = raw_syscall(3, m->args);
        return 1;
    }
    if (m->nr != 2 && m->nr != 257)
        return 0;
    int64_t dfd = m->nr == 2 ? AT_FDCWD : m->args[0];
    uint64_t path = (uint64_t)(m->nr == 2 ? m->args[0] : m->args[1]);
    uint64_t flags = (uint64_t)(m->nr == 2 ? m->args[1] : m->args[2]);
    if (dfd < INT32_MIN || dfd > INT32_MAX)
        return 0;
    /* What openat keeps of the flags (it ignores unknown bits, openat2 would
     * refuse them); creating or truncating may sleep: not here. */
    const uint64_t valid = O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND |
                           O_NONBLOCK | O_DSYNC | FASYNC | O_DIRECT | O_LARGEFILE |
                           O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC | O_PATH |
                           __O_TMPFILE | O_SYNC;
    flags &= valid & 0xffffffffULL;
    if (flags & (O_CREAT | O_TRUNC | __O_TMPFILE))
        return 0;
    if (!(flags & O_PATH))
        flags |= O_LARGEFILE;   /* as openat does on 64-bit */
    struct {
        uint64_t flags, mode, resolve;
    } how = {flags, 0, 0x20 /* RESOLVE_CACHED */};
    long r = syscall(437 /* openat2 */, (int)dfd, (const char *)(uintptr_t)path, &how, sizeof how);
    if (r < 0 && (errno == EAGAIN || errno == ENOSYS || errno == E2BIG))
        return 0;       /* not cached (or no openat2): the pool opens it */
    *res = r < 0 ? -(int64_t)errno : (int64_t)r;
    return 1;
}
