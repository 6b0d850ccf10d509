/* Running one atom natively: umem_add and refused calls, the RWF_NOWAIT
 * try of a read, the per-fd kind cache (D23, D35) and where a translated
 * call must run natively to give the native answer (D35).
 * Part of engine.c (one translation unit: see there). */

/* ---- executing one atom natively -------------------------------------- */

#include <sys/sysmacros.h>
#include <sys/vfs.h>

static inline void fdk_note(struct sl_ctx *c, const struct syslet *s, const struct member *m,
                            int64_t r);

/* Stores r through m's ret_ptr and picks the successor.  Returns 0 to go on,
 * 1 when the syslet ended. */
static int complete_atom(struct sl_ctx *c, struct syslet *s, const struct member *m, int64_t r)
{
    fdk_note(c, s, m, r);
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

/* What the engine knows about a descriptor (fdk[], D23 and D35): where a
 * lone read goes first, and whether io_uring gives the native answer for
 * the calls it translates (docs/translation.md, section 9).
 *
 * FDK_BUFFERED  a regular file (on a file system io_uring handles like the
 *               native calls) or a block device, not O_DIRECT: tried with
 *               RWF_NOWAIT first; every translation is exact.
 * FDK_DIRECT    the same, O_DIRECT: not tried (it would wait for the
 *               device); read/write at the file position run natively on
 *               the pool (io_uring does not advance the position of an
 *               O_DIRECT file), pread64/pwrite64 go to io_uring.
 * FDK_COLD      FDK_BUFFERED whose last try missed the page cache.
 * FDK_STREAM    a pipe, socket, tty, directory, eventfd, timerfd,
 *               signalfd, inotify, fanotify or memory device (/dev/null,
 *               /dev/zero, ...): tried first; io_uring is exact only for a
 *               read (nr 0) of count > 0 on a blocking descriptor.
 * FDK_NATIVE    anything else (epoll, io_uring, pidfd, userfaultfd, files
 *               of procfs, sysfs and other pseudo file systems, other
 *               character devices): tried first; no io_uring for its
 *               transfers.
 * FDK_TRIED     not O_DIRECT, kind not asked yet: what a lone read needs
 *               (one fcntl, D23).  The full kind (fdk_classify) is asked
 *               only when a call on it would go to io_uring: a read whose
 *               try settled never pays for it.
 * FDK_OPENED    returned by an atom's open/openat/creat without O_NONBLOCK,
 *               O_DIRECT or O_PATH: a file, directory, FIFO, tty, device or
 *               pseudo-file opened blocking -- never an epoll, io_uring or
 *               other anonymous fd.  A read (nr 0) of count > 0 and a close
 *               need nothing more (io_uring gives the native answer for
 *               every such kind); any other call asks the kind.
 *
 * "Not O_DIRECT" is trusted; "O_DIRECT" (FDK_DIRECT) only errs towards
 * sending a read off the caller's thread, and is asked again every
 * SL_FDK_RECHECK uses.  An entry is forgotten when an atom closes,
 * duplicates onto, opens at or changes the flags of that descriptor, and
 * when a read through it took long (a number reused for an O_DIRECT file
 * behind the engine's back: that read waited for the device once, the
 * next is asked again); a try of a FDK_BUFFERED descriptor that does not
 * settle asks the kind again (a number reused for a pipe or an epoll fd
 * behind the engine's back). */
enum { FDK_UNKNOWN = 0, FDK_BUFFERED = 1, FDK_DIRECT = 2, FDK_COLD = 3, FDK_STREAM = 4,
       FDK_NATIVE = 5, FDK_TRIED = 6, FDK_OPENED = 7 };
#define SL_FDK_RECHECK 256      /* an O_DIRECT entry is asked again this often */

/* A system call that leaves errno alone: the kernel's result, -errno on
 * failure (the fast path never saves and restores errno). */
static inline long sys_quiet(long nr, long a0, long a1, long a2, long a3)
{
#if defined(__x86_64__)
    return sl_sys6(nr, a0, a1, a2, a3, 0, 0);
#else
    int saved = errno;
    long r = syscall(nr, a0, a1, a2, a3);
    if (r == -1)
        r = -errno;
    errno = saved;
    return r;
#endif
}

/* File systems whose regular files io_uring reads and writes exactly as
 * the native calls do (positions, pread/pwrite, short counts): the disk and
 * memory file systems.  Measured: ext4, tmpfs; the others share the same
 * generic page-cache paths.  Left out on purpose: procfs, sysfs, cgroupfs,
 * debugfs and the other pseudo file systems (pwrite64 is -ESPIPE on most of
 * their files, io_uring writes anyway), nsfs, pidfs, FUSE (a FUSE file may
 * be a stream), and whatever is not listed. */
static int plain_fs(long type)
{
    switch ((uint32_t)type) {
    case 0xEF53:        /* ext2/3/4 */
    case 0x58465342:    /* xfs */
    case 0x9123683E:    /* btrfs */
    case 0x01021994:    /* tmpfs (memfd, /dev/shm) */
    case 0x858458f6:    /* ramfs */
    case 0x794c7630:    /* overlayfs */
    case 0xF2F52010:    /* f2fs */
    case 0xca451a4e:    /* bcachefs */
    case 0x2fc12fc1:    /* zfs */
    case 0x6969:        /* nfs */
    case 0x4d44:        /* vfat, msdos */
    case 0x2011BAB0:    /* exfat */
    case 0x7366746e:    /* ntfs3 */
    case 0x73717368:    /* squashfs */
    case 0xE0F5E1E2:    /* erofs */
    case 0x9660:        /* iso9660 */
    case 0x15013346:    /* udf */
    case 0xFF534D42: case 0xFE534D42: /* cifs, smb2 */
    case 0x00c36400:    /* ceph */
        return 1;
    }
    return 0;
}

/* The kind of an anonymous inode, by its name in /proc/self/fd. */
static int anon_kind(int fd)
{
    static const char *const streams[] = {"anon_inode:[eventfd]", "anon_inode:[timerfd]",
                                          "anon_inode:[signalfd]", "anon_inode:inotify",
                                          "anon_inode:[fanotify]"};
    char path[32] = "/proc/self/fd/", name[64];
    char digits[12];
    int n = 0, i = 14;
    do
        digits[n++] = (char)('0' + fd % 10);
    while ((fd /= 10) > 0);
    while (n)
        path[i++] = digits[--n];
    path[i] = 0;
    long len = sys_quiet(SYS_readlink, (long)path, (long)name, sizeof name - 1, 0);
    if (len <= 0)
        return FDK_NATIVE;      /* no /proc: the pool is right for every kind */
    name[len] = 0;
    for (unsigned k = 0; k < sizeof streams / sizeof streams[0]; k++)
        if (!strcmp(name, streams[k]))
            return FDK_STREAM;
    return FDK_NATIVE;
}

/* /dev/zero and /dev/full (char 1:5, 1:7): their read stops after a page
 * when the task should reschedule and the read is non-blocking
 * (IOCB_NOWAIT), which io_uring's first attempt and an RWF_NOWAIT try
 * are; read(2) goes on.  io_uring completes with the short count (it only
 * retries short reads of regular files): so a read of them runs natively,
 * and a short try is not the answer (short_read_final).  Found by the
 * hostile fuzz (issue 13 item 6): read(/dev/zero, 18338) gave 4096 on a
 * busy machine. */
static inline int zero_dev(dev_t rdev)
{
    return major(rdev) == 1 && (minor(rdev) == 5 || minor(rdev) == 7);
}

/* fdk_id of a file kind (BUFFERED, COLD, DIRECT): this bit and its open
 * flags (F_GETFL); fd_ident never sets it (device numbers stay below). */
#define FDK_ID_FLAGS (1ull << 63)

/* Which file a descriptor of another kind is (st: its fstat), as one
 * word: device, inode and type.  0: cannot tell -- an anonymous inode,
 * which epoll, eventfd, timerfd, signalfd, inotify, ... all share.  (A
 * file is told by its open flags instead, one fcntl: fdk_get.) */
static inline uint64_t fd_ident(const struct stat *st)
{
    if (!(st->st_mode & S_IFMT))
        return 0;
    uint64_t id = (((uint64_t)st->st_dev * 0x9E3779B97F4A7C15ull) ^ (uint64_t)st->st_ino ^
                   ((uint64_t)(st->st_mode & S_IFMT) << 48)) & ~FDK_ID_FLAGS;
    return id ? id : 1;
}

/* The kind (FDK_*) of the descriptor fd whose fstat is *stp: an fstatfs
 * and an fcntl more for a regular file, a readlink for an anonymous
 * inode; errno untouched.  *id (if id): what tells the file later -- for a
 * file kind its open flags (FDK_ID_FLAGS | F_GETFL, from the fcntl made
 * here anyway), else its fd_ident. */
static int fd_classify_stat(int fd, const struct stat *stp, uint64_t *id)
{
    const struct stat st = *stp;
    if (id)
        *id = fd_ident(&st);
    switch (st.st_mode & S_IFMT) {
    case S_IFREG: {
        struct statfs sf;
        if (sys_quiet(SYS_fstatfs, fd, (long)&sf, 0, 0) != 0 || !plain_fs((long)sf.f_type))
            return FDK_NATIVE;
    }
        /* fall through */
    case S_IFBLK: {
        long fl = sys_quiet(SYS_fcntl, fd, F_GETFL, 0, 0);
        if (id)
            *id = fl >= 0 ? FDK_ID_FLAGS | (uint64_t)fl : 0;
        return fl >= 0 && (fl & O_DIRECT) ? FDK_DIRECT : FDK_BUFFERED;
    }
    case S_IFIFO: case S_IFSOCK: case S_IFDIR:
        return FDK_STREAM;
    case S_IFCHR:
        if (zero_dev(st.st_rdev))
            return FDK_NATIVE;  /* io_uring may end a read of it early (zero_dev) */
        switch (major(st.st_rdev)) {
        case 1:                 /* memory devices: null, random, kmsg, ... */
        case 4: case 5:         /* ttys, the console, /dev/tty, /dev/ptmx */
        case 136: case 137: case 138: case 139: case 140: case 141: case 142: case 143: /* pts */
            return FDK_STREAM;
        }
        return FDK_NATIVE;
    case 0:                     /* an anonymous inode */
        return anon_kind(fd);
    }
    return FDK_NATIVE;          /* a symlink (O_PATH | O_NOFOLLOW) */
}

/* The kind of fd asked from the kernel in full for context c, counted in
 * fd_classified: fd_classify_stat after an fstat (st: one made already, or
 * NULL).  FDK_UNKNOWN when fd is not open (io_uring and the native call
 * then agree: EBADF); *id (if id) as fd_classify_stat says, 0 then. */
static __attribute__((noinline)) int fdk_classify(struct sl_ctx *c, int fd,
                                                  const struct stat *st, uint64_t *id)
{
    struct stat own;
    __atomic_add_fetch(&c->cnt.fd_classified, 1, __ATOMIC_RELAXED);
    if (id)
        *id = 0;
    if (!st) {
        if (sys_quiet(SYS_fstat, fd, (long)&own, 0, 0) != 0)
            return FDK_UNKNOWN;
        st = &own;
    }
    return fd_classify_stat(fd, st, id);
}

/* Is fd open with O_DIRECT?  (The kind of a descriptor beyond the cache.) */
static __attribute__((noinline)) int fd_direct(int fd)
{
    long fl = sys_quiet(SYS_fcntl, fd, F_GETFL, 0, 0);
    return fl >= 0 && (fl & O_DIRECT);
}

/* Entries are indexed by the descriptor the kernel sees: the low 32 bits
 * of the argument (an unsigned int in the system calls, a __s32 in an SQE). */
static inline void fdk_set(struct sl_ctx *c, int64_t fd, int k)
{
    uint32_t f = (uint32_t)fd;
    if (f >= SL_FDK_SLOTS)
        return;
    if (k != FDK_UNKNOWN) {
        uint32_t hi = __atomic_load_n(&c->fdk_hi, __ATOMIC_RELAXED);
        while (hi <= f && !__atomic_compare_exchange_n(&c->fdk_hi, &hi, f + 1, 1,
                                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
    }
    __atomic_store_n(&c->fdk_id[f], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->fdk[f], (uint8_t)k, __ATOMIC_RELAXED);
}

/* fd's entry (fd < SL_FDK_SLOTS) after a classification: kind k, and id,
 * what tells the same file at the next syslet's check (fdk_get). */
static inline void fdk_set_classified(struct sl_ctx *c, uint32_t f, int k, uint64_t id)
{
    fdk_set(c, f, k);
    __atomic_store_n(&c->fdk_id[f], id, __ATOMIC_RELAXED);
}

/* A file's entry turns BUFFERED <-> COLD: what its last read said about the
 * page cache, not about what the file is, so the file's identity (fdk_id)
 * and the syslet that checked it stay (clearing them cost a whole
 * classification at the next syslet: a fifth of cold random reads paid
 * it). */
static inline void fdk_set_cache_state(struct sl_ctx *c, int64_t fd, int k)
{
    uint32_t f = (uint32_t)fd;
    if (f < SL_FDK_SLOTS)
        __atomic_store_n(&c->fdk[f], (uint8_t)k, __ATOMIC_RELAXED);
}

/* The entry of fd (< SL_FDK_SLOTS) was checked, or set by an atom, for
 * the syslet of round rd. */
static inline void fdk_checked(struct sl_ctx *c, uint32_t f, uint32_t rd)
{
    __atomic_store_n(&c->fdk_round[f], rd, __ATOMIC_RELAXED);
}

/* Are fl (F_GETFL of f, < SL_FDK_SLOTS) the open flags f's entry was
 * classified with as a file?  Then it is that file still (D39's test: a
 * regular file or block device opened by path always has O_LARGEFILE,
 * which no pipe, socket or anonymous inode -- epoll, eventfd, inotify,
 * io_uring, pidfd, ... -- has; a FIFO, tty or device opened by path with
 * the same flags reads as a file would, blocking, unless both have
 * O_NONBLOCK: D39's limits). */
static inline int fdk_same_flags(const struct sl_ctx *c, uint32_t f, long fl)
{
    uint64_t id = __atomic_load_n(&c->fdk_id[f], __ATOMIC_RELAXED);
    return fl >= 0 && (id & FDK_ID_FLAGS) && (FDK_ID_FLAGS | (uint64_t)fl) == id;
}

/* The kind of fd (FDK_*, never FDK_TRIED) for a call of the syslet of
 * round rd that would go to io_uring: cached if the entry was checked for
 * this syslet already, else checked (FDK_UNKNOWN only for a descriptor that
 * is not open).  A cached kind is checked once per syslet because a
 * program may close a number and reuse it for another kind of file behind
 * the engine's back (os.close, dup2, close_range, ...): trusted, the old
 * kind could send a read of what is now an epoll fd or an O_NONBLOCK pipe
 * to io_uring, which parks it for ever (D39).  The check is one fcntl for
 * a file (fdk_same_flags), one fstat for another kind whose entry knows
 * its file (fd_ident), else the whole classification. */
static inline int fdk_get(struct sl_ctx *c, uint32_t rd, int64_t fd)
{
    uint32_t f = (uint32_t)fd;
    if (f >= SL_FDK_SLOTS)
        return f > INT32_MAX ? FDK_UNKNOWN : fdk_classify(c, (int)f, NULL, NULL);
    int k = __atomic_load_n(&c->fdk[f], __ATOMIC_RELAXED);
    if (k != FDK_UNKNOWN && k < FDK_TRIED && __atomic_load_n(&c->fdk_round[f], __ATOMIC_RELAXED) == rd)
        return k;
    uint64_t id = __atomic_load_n(&c->fdk_id[f], __ATOMIC_RELAXED), now = 0;
    struct stat st;
    int old = k;
    if (k != FDK_UNKNOWN && k < FDK_TRIED && (id & FDK_ID_FLAGS)) {
        /* A file: its open flags are still there (one fcntl, half an fstat) */
        long fl = sys_quiet(SYS_fcntl, f, F_GETFL, 0, 0);
        if (fdk_same_flags(c, f, fl)) {
            fdk_checked(c, f, rd);
            return k;
        }
        k = fl < 0 ? FDK_UNKNOWN : fdk_classify(c, (int)f, NULL, &now);
    } else if (k != FDK_UNKNOWN && k < FDK_TRIED && id) {
        if (sys_quiet(SYS_fstat, f, (long)&st, 0, 0) != 0) {
            fdk_set(c, f, FDK_UNKNOWN);
            return FDK_UNKNOWN;
        }
        if (fd_ident(&st) == id) {
            fdk_checked(c, f, rd);
            return k;
        }
        k = fdk_classify(c, (int)f, &st, &now);
    } else {
        k = fdk_classify(c, (int)f, NULL, &now);
    }
    if (k == FDK_UNKNOWN) {
        fdk_set(c, f, FDK_UNKNOWN);
        return k;
    }
    if (old == FDK_COLD && k == FDK_BUFFERED)
        k = FDK_COLD;       /* a file still: keep what its last try said (D23) */
    fdk_set_classified(c, f, k, now);
    fdk_checked(c, f, rd);
    return k;
}

/* Where a lone read of fd goes first: FDK_BUFFERED, an RWF_NOWAIT try in
 * the caller (also for FDK_STREAM and FDK_NATIVE: what the try settles is
 * the native answer); FDK_DIRECT, off the caller's thread (it would
 * block); FDK_COLD, straight to io_uring (the last try on fd missed the
 * page cache: io_uring's own non-blocking attempt in the submitter starts
 * the same readahead, so the try would be a second system call for
 * nothing; a read that then completes during the submit turns the fd back
 * to BUFFERED).  COLD only where the caller submits to io_uring itself.
 * Beyond the cache only O_DIRECT is asked (one fcntl), as the try decides
 * the rest. */
static inline int fd_kind(struct sl_ctx *c, int64_t fd)
{
    uint32_t f = (uint32_t)fd;
    if (f >= SL_FDK_SLOTS)
        return fd_direct((int)f) ? FDK_DIRECT : FDK_BUFFERED;
    int k = __atomic_load_n(&c->fdk[f], __ATOMIC_RELAXED);
    if (k == FDK_BUFFERED)
        return k;
    if (k == FDK_COLD)
        return c->uring_exec && !c->bounded ? k : FDK_BUFFERED;
    if (k >= FDK_STREAM)        /* STREAM, NATIVE, TRIED, OPENED */
        return FDK_BUFFERED;
    if (k == FDK_DIRECT &&
        __atomic_add_fetch(&c->fdk_direct_uses, 1, __ATOMIC_RELAXED) % SL_FDK_RECHECK)
        return k;
    /* Unknown (or an O_DIRECT entry due for a recheck): one fcntl, as
     * before D35; only an O_DIRECT descriptor is classified right away
     * (a pipe in packet mode is O_DIRECT too). */
    if (!fd_direct((int)f)) {
        fdk_set(c, f, FDK_TRIED);
        return FDK_BUFFERED;    /* (not open: the try reports EBADF) */
    }
    uint64_t id;
    k = fdk_classify(c, (int)f, NULL, &id);
    fdk_set_classified(c, f, k, id);
    return k == FDK_DIRECT ? k : FDK_BUFFERED;
}

/* The RWF_NOWAIT try of a read of fd answered r and did not settle it,
 * for a descriptor the engine knows as a buffered file.  EAGAIN: the page
 * was not cached, it is COLD now -- unless fd is O_NONBLOCK (one fcntl):
 * then, as after EOPNOTSUPP or EINVAL, which a buffered file does not
 * answer, the number may have been reused behind the engine's back (a
 * non-blocking pipe or socket, an epoll or inotify fd, ...), and its kind
 * is asked again.  (A blocking pipe or socket answers EAGAIN too; taken
 * for a cold file, its reads go to io_uring, which is exact for them.) */
static inline void fdk_tried(struct sl_ctx *c, int64_t fd, int64_t r)
{
    uint32_t f = (uint32_t)fd;
    if ((r != -EAGAIN && r != -EOPNOTSUPP && r != -EINVAL) || f >= SL_FDK_SLOTS)
        return;
    int k = __atomic_load_n(&c->fdk[f], __ATOMIC_RELAXED);
    uint64_t id = 0;
    if (k >= FDK_TRIED) {
        k = fdk_classify(c, (int)f, NULL, &id);     /* it goes off the caller's thread: the kind decides how */
    } else if (k == FDK_BUFFERED) {
        long fl = r == -EAGAIN ? sys_quiet(SYS_fcntl, f, F_GETFL, 0, 0) : 0;
        if (r == -EAGAIN && fdk_same_flags(c, f, fl)) {
            fdk_set_cache_state(c, f, FDK_COLD);    /* the same file: a miss */
            return;
        }
        if (r != -EAGAIN || fl < 0 || (fl & O_NONBLOCK))
            k = fdk_classify(c, (int)f, NULL, &id);
    } else {
        return;
    }
    fdk_set_classified(c, f, k == FDK_BUFFERED ? FDK_COLD : k, id);
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

/* The kind of the descriptor an open (2), creat (85) or openat (257) atom
 * returned: FDK_OPENED when it opened blocking (no O_NONBLOCK, O_DIRECT,
 * O_PATH) a path that is not a magic link to a descriptor -- through
 * /proc/<pid>/fd/N (and /dev/fd/N, /dev/stdin, ...) a pidfd can be opened
 * again, and io_uring parks a read of it.  (A symlink of one's own to such
 * a link, or openat relative to a /proc directory, is not caught: openat
 * relative to any directory descriptor is left unknown.)  Else unknown. */
static int opened_kind(const struct member *m)
{
    uint64_t fl = m->nr == 2 ? (uint64_t)m->args[1] : m->nr == 257 ? (uint64_t)m->args[2] : 0;
    uint64_t path = (uint64_t)(m->nr == 257 ? m->args[1] : m->args[0]);
    char head[8];
    if ((fl & (O_NONBLOCK | O_DIRECT | O_PATH)) || (m->nr == 257 && (int)m->args[0] != AT_FDCWD) ||
        g_copy_in(head, path, sizeof head) != 0 || !memcmp(head, "/proc/", 6) ||
        !memcmp(head, "/dev/fd/", 8) || !memcmp(head, "/dev/std", 8))
        return FDK_UNKNOWN;
    return FDK_OPENED;
}

/* What an atom did to the descriptor table (result r): forget the entries
 * it may have given another file or other flags. */
static inline void fdk_note(struct sl_ctx *c, const struct syslet *s, const struct member *m,
                            int64_t r)
{
    switch (m->nr) {
    case 3:                             /* close */
        fdk_forget(c, m->args[0]);
        break;
    case 2: case 85: case 257:          /* open, creat, openat: the new descriptor */
        if (r >= 0) {
            fdk_set(c, r, opened_kind(m));
            if ((uint64_t)r < SL_FDK_SLOTS)
                fdk_checked(c, (uint32_t)r, s->fdk_round);  /* this syslet knows it */
        }
        break;
    case 33: case 292:                  /* dup2, dup3 */
        fdk_forget(c, m->args[1]);
        /* fall through: the result is that descriptor */
    case 437: case 32:                  /* openat2, dup */
        if (r >= 0)
            fdk_forget(c, r);
        break;
    case 72:                            /* fcntl: F_SETFL, F_DUPFD* */
        fdk_forget(c, m->args[0]);
        if (r >= 0 && m->args[1] != F_SETFL)
            fdk_forget(c, r);
        break;
    case 436:                           /* close_range */
    {
        /* (only up to the highest number ever set: close_range(3, ~0U)
         * walks the numbers in use, not the table) */
        uint32_t hi = __atomic_load_n(&c->fdk_hi, __ATOMIC_RELAXED);
        for (uint32_t fd = (uint32_t)m->args[0]; fd < hi && fd <= (uint32_t)m->args[1]; fd++)
            fdk_forget(c, (int64_t)fd);
    }
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
    int fin = fstat(fd, &st) != 0 ||
              !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) ||
                (S_ISCHR(st.st_mode) && zero_dev(st.st_rdev))) ||
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
    if (sl_ticks() - t0 > SL_SLOW_TICKS && raw >= 0)
        fdk_forget(c, m->args[0]);  /* slow with data: ask about O_DIRECT again next time */
    else if (!done)
        fdk_tried(c, m->args[0], raw);
    return done;
}

/* ---- does io_uring give the native answer? (D35) ----------------------- */

/* Would io_uring's OPENAT of the path (flags fl) answer differently?  It
 * first tries the open in the submitter with O_NONBLOCK added (and a
 * cached path walk), and keeps what that try gives unless it is EAGAIN.
 * For a FIFO opened O_WRONLY without a reader that is ENXIO, where open(2)
 * waits for one: only such opens (O_WRONLY without O_NONBLOCK, O_CREAT,
 * O_TRUNC, O_TMPFILE, O_PATH -- the last ones go to an io-wq worker, which
 * opens blocking) look at the path first, with an O_PATH open (which opens
 * nothing: no partner is woken, no driver's open runs), fstat and close,
 * errno untouched.  1: a FIFO, a block device, a character device other
 * than a memory device, or a walk that is not cached (or no openat2):
 * the open must not be tried non-blocking.  (An O_RDONLY or O_RDWR open is
 * not looked at: the look is a second path walk, as dear as the open; what
 * io_uring's try then does to a FIFO or a device is docs/translation.md,
 * section 9.2.) */
static int open_waits(int64_t dfd, uint64_t path, uint64_t fl)
{
    if ((fl & O_ACCMODE) != O_WRONLY || (fl & (O_NONBLOCK | O_PATH | O_CREAT | O_TRUNC | __O_TMPFILE)))
        return 0;
    struct {
        uint64_t flags, mode, resolve;
    } how = {O_PATH | O_CLOEXEC | (fl & (O_NOFOLLOW | O_DIRECTORY)), 0, 0x20 /* RESOLVE_CACHED */};
    long fd = sys_quiet(437 /* openat2 */, (long)dfd, (long)path, (long)&how, sizeof how);
    if (fd == -EAGAIN || fd == -ENOSYS || fd == -E2BIG || fd == -EINVAL)
        return 1;   /* not cached, or no openat2 here: cannot tell */
    if (fd < 0)
        return 0;   /* the open fails the same way (ENOENT, ELOOP, ENOTDIR, ...) */
    struct stat st;
    long r = sys_quiet(SYS_fstat, fd, (long)&st, 0, 0);
    sys_quiet(SYS_close, fd, 0, 0, 0);
    if (r != 0)
        return 1;
    switch (st.st_mode & S_IFMT) {
    case S_IFIFO: case S_IFBLK:
        return 1;
    case S_IFCHR:
        return major(st.st_rdev) != 1;
    }
    return 0;
}

/* Where a call with an io_uring translation (uring_op) must run for the
 * native answer: XR_URING, io_uring gives it; XR_INLINE, natively in
 * place (it cannot block: an O_NONBLOCK descriptor that honours it);
 * XR_POOL, natively off the caller's thread (it may block).  May set
 * IOSQE_ASYNC on an open (the worker opens without O_NONBLOCK).  The
 * table behind it: docs/translation.md, section 9. */
enum { XR_URING = 0, XR_INLINE, XR_POOL };

static int xlate_route(struct sl_ctx *c, const struct syslet *s, struct member *m)
{
    const int64_t *a = m->args;
    switch (m->op) {
    case IORING_OP_FSYNC:
        return XR_URING;
    case IORING_OP_OPENAT:
        if (m->nr == 2 ? open_waits(AT_FDCWD, (uint64_t)a[0], (uint64_t)a[1] & 0xffffffffULL)
                       : open_waits(a[0], (uint64_t)a[1], (uint64_t)a[2] & 0xffffffffULL))
            m->sqe_flags |= IOSQE_ASYNC;
        return XR_URING;
    case IORING_OP_CLOSE: {
        /* io_uring refuses to close an io_uring fd (EBADF).  A known
         * NATIVE descriptor (an io_uring fd among them) closes natively;
         * one not yet known goes to io_uring, and an EBADF from there is
         * checked (close_refused). */
        uint32_t f = (uint32_t)a[0];
        int k = f < SL_FDK_SLOTS ? __atomic_load_n(&c->fdk[f], __ATOMIC_RELAXED) : FDK_UNKNOWN;
        return k == FDK_NATIVE ? XR_POOL : XR_URING;
    }
    }
    /* READ / WRITE (also the rest of a short try: a regular file) */
    if (m->nr == 0 && a[2] != 0 && (uint32_t)a[0] < SL_FDK_SLOTS &&
        __atomic_load_n(&c->fdk[(uint32_t)a[0]], __ATOMIC_RELAXED) == FDK_OPENED &&
        __atomic_load_n(&c->fdk_round[(uint32_t)a[0]], __ATOMIC_RELAXED) == s->fdk_round)
        return XR_URING;        /* a blocking read of a file this syslet opened by path */
    int k = fdk_get(c, s->fdk_round, a[0]);
    switch (k) {
    case FDK_UNKNOWN:
        /* Not open when asked: EBADF natively.  Not to io_uring: the
         * number may be taken a moment later -- by the program, or by the
         * engine's own short-lived pidfd_open/pidfd_getfd descriptors while
         * it takes back a ring descriptor the program closed (D33) -- and
         * io_uring parks a read of a pidfd or an io_uring fd for ever. */
        return XR_POOL;
    case FDK_BUFFERED: case FDK_COLD:
        return XR_URING;        /* a file */
    case FDK_DIRECT:            /* io_uring leaves an O_DIRECT file's position alone */
        return m->nr == 0 || m->nr == 1 ? XR_POOL : XR_URING;
    case FDK_STREAM: {
        /* io_uring waits for readiness even on an O_NONBLOCK descriptor,
         * skips the call for a count of 0, ignores a stream's missing
         * pread/pwrite (native: ESPIPE), and completes a write with what
         * its non-blocking attempt wrote (native: waits for room for the
         * rest; a tty write may even fail with EINTR). */
        long fl = sys_quiet(SYS_fcntl, (uint32_t)a[0], F_GETFL, 0, 0);
        if (fl < 0)
            return XR_URING;
        if (fl & O_NONBLOCK)
            return XR_INLINE;
        return m->nr == 0 && a[2] != 0 ? XR_URING : XR_POOL;
    }
    }
    return XR_POOL;             /* FDK_NATIVE */
}

/* io_uring's CLOSE of fd answered EBADF: the native answer, unless fd is
 * an io_uring fd, which io_uring refuses to close and close(2) closes.
 * Checked (fstat, readlink) before closing it here: a number that was not
 * open when io_uring looked may be another thread's new file by now. */
static int64_t close_refused(int64_t fd)
{
    struct stat st;
    uint32_t f = (uint32_t)fd;
    if (f > INT32_MAX || sys_quiet(SYS_fstat, f, (long)&st, 0, 0) != 0 || (st.st_mode & S_IFMT))
        return -EBADF;
    char path[32], name[32];
    snprintf(path, sizeof path, "/proc/self/fd/%u", f);
    long len = sys_quiet(SYS_readlink, (long)path, (long)name, sizeof name - 1, 0);
    if (len <= 0)
        return -EBADF;
    name[len] = 0;
    if (strcmp(name, "anon_inode:[io_uring]"))
        return -EBADF;
    long r = sys_quiet(SYS_close, f, 0, 0, 0);
    return r;
}

/* uring_op() and io_uring gives the native answer. */
static inline int uring_exact(struct sl_ctx *c, const struct syslet *s, struct member *m)
{
    return uring_op(m) && xlate_route(c, s, m) == XR_URING;
}

/* Pool-only backend: run in place what io_uring itself completes inline,
 * without risking a sleep.  close (io_uring runs CLOSE inline too) and an
 * open whose path walk is fully cached -- tried as io_uring's OPENAT tries
 * it: openat2 with RESOLVE_CACHED (EAGAIN instead of doing I/O) and
 * O_NONBLOCK added (a FIFO without a partner or a device does not wait),
 * the flag then cleared again.  EAGAIN (not cached, a lease to break) and,
 * when O_NONBLOCK was not asked for, ENXIO (a FIFO without a reader, where
 * open(2) waits for one) are not the answer: the pool opens it.  Returns 1
 * when it settled the atom (result in *res). */
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
    int added = !(flags & (O_NONBLOCK | O_PATH));
    if (!(flags & O_PATH))
        flags |= O_LARGEFILE;   /* as openat does on 64-bit */
    struct {
        uint64_t flags, mode, resolve;
    } how = {flags | (added ? O_NONBLOCK : 0), 0, 0x20 /* RESOLVE_CACHED */};
    long r = sys_quiet(437 /* openat2 */, (int)dfd, (long)path, (long)&how, sizeof how);
    if (r == -EAGAIN || r == -ENOSYS || r == -E2BIG || (added && r == -ENXIO))
        return 0;       /* not cached (or no openat2, or it would wait): the pool opens it */
    if (r >= 0 && added) {
        long fl = sys_quiet(SYS_fcntl, r, F_GETFL, 0, 0);
        if (fl >= 0)
            sys_quiet(SYS_fcntl, r, F_SETFL, fl & ~O_NONBLOCK, 0);
    }
    *res = r;
    return 1;
}
