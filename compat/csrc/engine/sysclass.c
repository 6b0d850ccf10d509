/* System call classification: refused and never-blocking calls, the exact
 * io_uring translations (uring_op, member_desc), stop tests and link flags.
 * Touches no context.
 * Part of engine.c (one translation unit: see there). */

/* ---- syscall classification ------------------------------------------ */

/* The kernel takes only the low 32 bits of a system call number (and bit
 * 30 selects the x32 ABI): a number at or above 2^30 would alias another
 * call (e.g. 2^32 + 231 = exit_group), bypassing the refused list.  The
 * 2007 kernel compared the full word: such numbers are unknown, -ENOSYS. */
#define NR_LIMIT 0x40000000ULL
static int out_of_range(uint64_t nr)
{
    return nr >= NR_LIMIT;
}

/* umem_add inside an atom of personality abi: the project's numbers of
 * v1, v5 and v6 in every atom personality, and the atom's own 2007 number
 * (v5 282, v6 288).  Inside v7's indirect there is none. */
static inline int is_umem(uint64_t nr, unsigned abi)
{
    if (abi == SL_ABI_V7)
        return 0;
    return nr == NR_UMEM_ADD || nr == 1012 || nr == 1022 ||
           (abi == SL_ABI_V5 && nr == 282) || (abi == SL_ABI_V6 && nr == 288);
}

/* Refused with -EINVAL in an atom of personality abi (docs/spec.md 8):
 * calls that would end or replace the thread or process, the rest of the
 * project's range 1000-1039 (no recursion), and the atom's own kernel's
 * other syslet numbers (v5 280, 281, 283; v6 286, 287, 289).  env_abi is
 * SYSLET_COMPAT_ABI's personality: under v7, indirect's 286 and 287. */
static int is_refused(uint64_t nr, unsigned abi, int env_abi)
{
    switch (nr) {
    case SYS_rt_sigreturn: case SYS_clone: case SYS_fork: case SYS_vfork:
    case SYS_execve: case SYS_exit: case SYS_exit_group: case SYS_execveat:
    case SYS_clone3:
        return 1;
    }
    if (nr >= NR_OWN_FIRST && nr <= NR_OWN_LAST)
        return !is_umem(nr, abi);
    switch (abi) {
    case SL_ABI_V5:
        return nr == 280 || nr == 281 || nr == 283;
    case SL_ABI_V6:
        return nr == 286 || nr == 287 || nr == 289;
    case SL_ABI_V7:
        return env_abi == SL_ABI_V7 && (nr == 286 || nr == 287);
    }
    return 0;
}

/* Calls that never sleep: run in place. */
static int never_blocks(uint64_t nr, const int64_t *a)
{
    switch (nr) {
    case 39: case 186: case 110: case 102: case 104: case 107: case 108:
    case 8:   /* lseek */
    case 32: case 33: case 292: /* dup, dup2, dup3 */
    case 5:   /* fstat */
    case 95:  /* umask */
    case 79:  /* getcwd */
    case 228: case 96: case 201: /* clock_gettime, gettimeofday, time */
    case 63:  /* uname */
    case 22: case 293: /* pipe, pipe2 */
    case 24:  /* sched_yield */
    case 97: case 98: case 99: /* getrlimit, getrusage, sysinfo */
    case 121: case 111: case 124: /* getpgid, getpgrp, getsid */
        return 1;
    case 72:  /* fcntl: only the commands that cannot wait */
        switch (a[1]) {
        case F_DUPFD: case F_GETFD: case F_SETFD: case F_GETFL: case F_SETFL:
        case F_DUPFD_CLOEXEC:
            return 1;
        }
        return 0;
    }
    return 0;
}

/* io_uring checks a READ/WRITE buffer with access_ok() at submission (prep),
 * and a failed prep cancels the whole linked segment, head included; the
 * native call checks the fd first.  Buffers outside the lowest 47-bit user
 * range therefore run natively. */
static int user_range(int64_t addr, int64_t len)
{
    const uint64_t top = 0x00007ffffffff000ULL;
    return (uint64_t)addr <= top && (uint64_t)len <= top - (uint64_t)addr;
}

/* Is a read/write (nr 0, 1) or pread64/pwrite64 (17, 18) with arguments a
 * exactly an io_uring READ/WRITE (and an RWF_NOWAIT read)? */
static inline int rw_exact(uint64_t nr, const int64_t *a)
{
    return (uint64_t)a[2] <= 0x7ffff000 && (nr < 17 || a[3] >= 0) && user_range(a[1], a[2]);
}

/* Does nr have an exact io_uring translation here?  Fills op/transfer. */
static int uring_op(struct member *m)
{
    const int64_t *a = m->args;
    m->transfer = 0;
    switch (m->nr) {
    case 0: case 1: /* read, write at the file position */
        if (!rw_exact(m->nr, a))
            return 0;
        m->op = m->nr == 0 ? IORING_OP_READ : IORING_OP_WRITE;
        m->transfer = 1;
        return 1;
    case 17: case 18: /* pread64, pwrite64 */
        if (!rw_exact(m->nr, a))
            return 0;
        m->op = m->nr == 17 ? IORING_OP_READ : IORING_OP_WRITE;
        m->transfer = 1;
        return 1;
    case 2: case 257: { /* open, openat */
        uint64_t path = m->nr == 2 ? (uint64_t)a[0] : (uint64_t)a[1];
        uint64_t len;
        if (m->nr == 257 && (a[0] < INT32_MIN || a[0] > INT32_MAX))
            return 0;
        /* The kernel copies the path at submission; a bad one would fail
         * the whole segment, so such atoms run natively. */
        if (g_strnlen(path, 4096, &len) || len >= 4096 || len == 0)
            return 0;   /* (an empty path fails at submission too: ENOENT) */
        m->op = IORING_OP_OPENAT;
        return 1;
    }
    case 3:
        m->op = IORING_OP_CLOSE;
        return 1;
    case 74: case 75:
        m->op = IORING_OP_FSYNC;
        return 1;
    }
    return 0;
}

static void member_desc(const struct member *m, struct us_desc *d, uint64_t ud)
{
    const int64_t *a = m->args;
    memset(d, 0, sizeof *d);
    d->opcode = m->op;
    d->flags = m->sqe_flags;
    d->user_data = ud;
    switch (m->nr) {
    case 0: case 1:
        d->fd = (int32_t)a[0];
        d->addr = (uint64_t)a[1];
        d->len = (uint32_t)a[2];
        d->off = (uint64_t)-1;
        break;
    case 17: case 18:
        d->fd = (int32_t)a[0];
        d->addr = (uint64_t)a[1];
        d->len = (uint32_t)a[2];
        d->off = (uint64_t)a[3];
        break;
    case 2:
        d->fd = AT_FDCWD;
        d->addr = (uint64_t)a[0];
        d->op_flags = (uint32_t)a[1];
        d->len = (uint32_t)a[2];
        break;
    case 257:
        d->fd = (int32_t)a[0];
        d->addr = (uint64_t)a[1];
        d->op_flags = (uint32_t)a[2];
        d->len = (uint32_t)a[3];
        break;
    case 3: case 74:
        d->fd = (int32_t)a[0];
        break;
    case 75:
        d->fd = (int32_t)a[0];
        d->op_flags = IORING_FSYNC_DATASYNC;
        break;
    }
    if (m->partial > 0) {   /* remainder of a short NOWAIT read */
        d->addr += (uint64_t)m->partial;
        d->len -= (uint32_t)m->partial;
        if (d->off != (uint64_t)-1)
            d->off += (uint64_t)m->partial;
    }
}

static int stop_holds(uint64_t flags, int64_t r)
{
    if ((flags & F_STOP_NONZERO) && r != 0) return 1;
    if ((flags & F_STOP_ZERO) && r == 0) return 1;
    if ((flags & F_STOP_NEGATIVE) && r < 0) return 1;
    if ((flags & F_STOP_NONPOS) && r <= 0) return 1;
    return 0;
}

/* Link flag for m when the segment continues after it, or 0 = end here.
 * IO_LINK is used only when every syslet stop outcome also severs the link. */
static int link_flag(const struct member *m)
{
    uint64_t s = m->flags & F_STOP_MASK;
    if (!s)
        return IOSQE_IO_HARDLINK;
    if (m->flags & F_SKIP)
        return 0;
    if (m->transfer) {
        if ((m->args[2] != 0 && !(s & ~(uint64_t)(F_STOP_NEGATIVE | F_STOP_ZERO | F_STOP_NONPOS))) ||
            s == F_STOP_NEGATIVE)
            return IOSQE_IO_LINK;
        return 0;
    }
    if (m->op == IORING_OP_OPENAT)
        return s == F_STOP_NEGATIVE ? IOSQE_IO_LINK : 0;
    /* close, fsync: success is always 0 */
    if (!(s & ~(uint64_t)(F_STOP_NEGATIVE | F_STOP_NONZERO)))
        return IOSQE_IO_LINK;
    return 0;
}
