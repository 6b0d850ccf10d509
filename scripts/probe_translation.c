/* probe_translation.c -- the native call vs its io_uring translation, per
 * kind of file (docs/translation.md, "Native answer vs io_uring answer").
 *
 *   gcc -O2 -Wall -o /tmp/probe_translation scripts/probe_translation.c -luring
 *   /tmp/probe_translation            # markdown tables on stdout
 *   /tmp/probe_translation -o         # the open/openat table instead
 *
 * Each cell runs in two fresh child processes (one native, one io_uring),
 * each building the descriptor from scratch, so that one cell cannot
 * disturb another.  A native call still waiting after TIMEOUT_MS is
 * "wait" (interrupted by SIGALRM, whatever it then returns); an io_uring
 * request without a CQE after TIMEOUT_MS is "parks" ("wait" when both
 * wait).  A cell compares the result, the bytes a read put
 * into the buffer and the file position afterwards (when there is one).
 * Needs root for fanotify (else that row says n/a).  Writes only to files
 * it creates under $TMPDIR, to /proc/self/comm and to /dev/null, /dev/full. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <limits.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 300
#define N 4096

static char dir[PATH_MAX];
static int keep[8];             /* peers kept open in the child */

/* ---- kinds of descriptor --------------------------------------------- */

static void fill(int fd, size_t n)
{
    char b[N];
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (char)('a' + i % 26);
    while (n) {
        size_t k = n < sizeof b ? n : sizeof b;
        if (write(fd, b, k) != (ssize_t)k)
            _exit(90);
        n -= k;
    }
}

static int regfile(int flags)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/reg", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
    fill(fd, 2 * N);
    fsync(fd);
    close(fd);
    fd = open(p, flags);
    return fd;
}

static int mkpipe(int which, int nb, int data, int close_other)
{
    int p[2];
    if (pipe2(p, nb ? O_NONBLOCK : 0))
        return -1;
    if (data)
        fill(p[1], 100);
    if (close_other)
        close(p[!which]);
    else
        keep[0] = p[!which];
    return p[which];
}

static int fullpipe(int nb, int room)
{
    int p[2];
    if (pipe2(p, O_NONBLOCK))
        return -1;
    char b[N] = {0};
    while (write(p[1], b, sizeof b) > 0)
        ;
    while (write(p[1], b, 1) > 0)
        ;
    if (room && read(p[0], b, room) != room)    /* room for part of a write */
        return -1;
    if (!nb)
        fcntl(p[1], F_SETFL, 0);
    keep[0] = p[0];
    return p[1];
}

static int mksock(int type, int nb, int data, int peer_closed)
{
    int s[2];
    if (socketpair(AF_UNIX, type | (nb ? SOCK_NONBLOCK : 0), 0, s))
        return -1;
    if (data)
        fill(s[1], 100);
    if (peer_closed)
        close(s[1]);
    else
        keep[0] = s[1];
    return s[0];
}

static int mkpty(int slave, int nb, int data)
{
    int m, s;
    if (openpty(&m, &s, NULL, NULL, NULL))
        return -1;
    if (data) {
        if (write(m, "line\n", 5) != 5)
            return -1;
        usleep(20000);
    }
    int fd = slave ? s : m;
    keep[0] = slave ? m : s;
    if (nb)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int mktimerfd(int nb, int expired)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, nb ? TFD_NONBLOCK : 0);
    if (expired) {
        struct itimerspec it = {{0, 0}, {0, 1000}};
        timerfd_settime(fd, 0, &it, NULL);
        usleep(5000);
    }
    return fd;
}

static int mksignalfd(int nb, int pending)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigprocmask(SIG_BLOCK, &s, NULL);
    if (pending)
        raise(SIGUSR1);
    return signalfd(-1, &s, nb ? SFD_NONBLOCK : 0);
}

static int mkepoll(int nb, int ready)
{
    int ep = epoll_create1(0);
    if (ready) {
        int p = mkpipe(0, 0, 1, 0);
        struct epoll_event ev = {.events = EPOLLIN};
        epoll_ctl(ep, EPOLL_CTL_ADD, p, &ev);
        keep[1] = p;
    }
    if (nb)
        fcntl(ep, F_SETFL, O_NONBLOCK);
    return ep;
}

static int mkinotify(int nb, int event)
{
    int fd = inotify_init1(nb ? IN_NONBLOCK : 0);
    inotify_add_watch(fd, dir, IN_CREATE);
    if (event) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/ino", dir);
        close(open(p, O_CREAT | O_RDWR, 0600));
        unlink(p);
    }
    return fd;
}

static int mkuring(int nb, int cqe)
{
    static struct io_uring r;
    if (io_uring_queue_init(4, &r, 0))
        return -1;
    if (cqe) {
        io_uring_prep_nop(io_uring_get_sqe(&r));
        io_uring_submit(&r);
    }
    if (nb)
        fcntl(r.ring_fd, F_SETFL, O_NONBLOCK);
    return r.ring_fd;
}

static int mkpath(const char *p, int flags)
{
    return open(p, flags);
}

static int kmsg_end(void)
{
    int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
    if (fd >= 0)
        lseek(fd, 0, SEEK_END);
    return fd;
}

static int mktcp(int listening)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listening) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bind(fd, (void *)&a, sizeof a);
        listen(fd, 1);
    }
    return fd;
}

static int mkudp(void)
{
    return socket(AF_INET, SOCK_DGRAM, 0);
}

static int mkdirfd(void)
{
    return open(dir, O_RDONLY | O_DIRECTORY);
}

static int mkmemfd(void)
{
    int fd = memfd_create("probe", 0);
    fill(fd, 2 * N);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static int mkopath(void)
{
    int fd = regfile(O_RDONLY);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/reg", dir);
    close(fd);
    return open(p, O_PATH);
}

static int mkpidfd(void)
{
    return (int)syscall(SYS_pidfd_open, getpid(), 0);
}

static int mkfanotify(void)
{
    return fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
}

static int reg_uncached(void)
{
    int fd = regfile(O_RDWR);
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return fd;
}

static int mkuffd(void)
{
    return (int)syscall(SYS_userfaultfd, O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
}

static int badfd(void)
{
    return 1000;
}

struct kind {
    const char *name;
    int (*make)(int);
    int arg;            /* 1: the data read differs by chance */
    size_t wlen;        /* a write's count (0: N) */
};

#define K(n, expr) static int mk_##n(int a) { (void)a; return expr; }
K(reg, regfile(O_RDWR))
K(reg_append, regfile(O_RDWR | O_APPEND))
K(reg_direct, regfile(O_RDWR | O_DIRECT))
K(reg_nb, regfile(O_RDWR | O_NONBLOCK))
K(memfd, mkmemfd())
K(dirfd, mkdirfd())
K(opath, mkopath())
K(pipe_r_empty, mkpipe(0, 0, 0, 0))
K(pipe_r_empty_nb, mkpipe(0, 1, 0, 0))
K(pipe_r_data, mkpipe(0, 0, 1, 0))
K(pipe_r_eof, mkpipe(0, 0, 0, 1))
K(pipe_w, mkpipe(1, 0, 0, 0))
K(pipe_w_full, fullpipe(0, 0))
K(pipe_w_full_nb, fullpipe(1, 0))
K(pipe_w_room_4k, fullpipe(0, 4096))
K(pipe_w_noreader, mkpipe(1, 0, 0, 1))
K(stream_empty, mksock(SOCK_STREAM, 0, 0, 0))
K(stream_empty_nb, mksock(SOCK_STREAM, 1, 0, 0))
K(stream_data, mksock(SOCK_STREAM, 0, 1, 0))
K(stream_peer_closed, mksock(SOCK_STREAM, 0, 0, 1))
K(dgram_empty, mksock(SOCK_DGRAM, 0, 0, 0))
K(dgram_empty_nb, mksock(SOCK_DGRAM, 1, 0, 0))
K(dgram_data, mksock(SOCK_DGRAM, 0, 1, 0))
K(tcp_unconnected, mktcp(0))
K(tcp_listening, mktcp(1))
K(udp_unconnected, mkudp())
K(pty_master, mkpty(0, 0, 0))
K(pty_master_nb, mkpty(0, 1, 0))
K(pty_slave, mkpty(1, 0, 0))
K(pty_slave_nb, mkpty(1, 1, 0))
K(pty_slave_data, mkpty(1, 0, 1))
K(eventfd_zero, eventfd(0, 0))
K(eventfd_zero_nb, eventfd(0, EFD_NONBLOCK))
K(eventfd_set, eventfd(3, 0))
K(timerfd_unarmed, mktimerfd(0, 0))
K(timerfd_unarmed_nb, mktimerfd(1, 0))
K(timerfd_expired, mktimerfd(0, 1))
K(signalfd_empty, mksignalfd(0, 0))
K(signalfd_empty_nb, mksignalfd(1, 0))
K(signalfd_pending, mksignalfd(0, 1))
K(epoll, mkepoll(0, 0))
K(epoll_nb, mkepoll(1, 0))
K(epoll_ready, mkepoll(0, 1))
K(inotify_empty, mkinotify(0, 0))
K(inotify_empty_nb, mkinotify(1, 0))
K(inotify_event, mkinotify(0, 1))
K(io_uring, mkuring(0, 0))
K(io_uring_nb, mkuring(1, 0))
K(io_uring_cqe, mkuring(0, 1))
K(dev_null, mkpath("/dev/null", O_RDWR))
K(dev_zero, mkpath("/dev/zero", O_RDWR))
K(dev_full, mkpath("/dev/full", O_RDWR))
K(dev_urandom, mkpath("/dev/urandom", O_RDONLY))
K(dev_kmsg_nb, kmsg_end())
K(proc_ostype, mkpath("/proc/sys/kernel/ostype", O_RDONLY))
K(nsfs, mkpath("/proc/self/ns/net", O_RDONLY))
K(reg_uncached, reg_uncached())
K(userfaultfd_nb, mkuffd())
K(proc_comm, mkpath("/proc/self/comm", O_RDWR))
K(proc_mounts, mkpath("/proc/self/mounts", O_RDONLY))
K(sysfs, mkpath("/sys/devices/system/cpu/online", O_RDONLY))
K(pidfd, mkpidfd())
K(fanotify_nb, mkfanotify())
K(bad_fd, badfd())

static const struct kind kinds[] = {
#define E(n) {#n, mk_##n, 0, 0}
#define NOISY(n) {#n, mk_##n, 1, 0}    /* the data differs by pid or by chance */
    E(reg), E(reg_uncached), E(reg_append), E(reg_direct), E(reg_nb), E(memfd), E(dirfd), E(opath),
    E(pipe_r_empty), E(pipe_r_empty_nb), E(pipe_r_data), E(pipe_r_eof),
    E(pipe_w), E(pipe_w_full), E(pipe_w_full_nb), {"pipe_w_room_4k", mk_pipe_w_room_4k, 0, 2 * N},
    E(pipe_w_noreader),
    E(stream_empty), E(stream_empty_nb), E(stream_data), E(stream_peer_closed),
    E(dgram_empty), E(dgram_empty_nb), E(dgram_data),
    E(tcp_unconnected), E(tcp_listening), E(udp_unconnected),
    E(pty_master), E(pty_master_nb), E(pty_slave), E(pty_slave_nb), E(pty_slave_data),
    E(eventfd_zero), E(eventfd_zero_nb), E(eventfd_set),
    E(timerfd_unarmed), E(timerfd_unarmed_nb), E(timerfd_expired),
    E(signalfd_empty), E(signalfd_empty_nb), NOISY(signalfd_pending),
    E(epoll), E(epoll_nb), E(epoll_ready),
    E(inotify_empty), E(inotify_empty_nb), E(inotify_event),
    E(io_uring), E(io_uring_nb), E(io_uring_cqe),
    E(dev_null), E(dev_zero), E(dev_full), NOISY(dev_urandom), E(dev_kmsg_nb),
    E(proc_ostype), E(proc_comm), E(proc_mounts), E(sysfs), E(nsfs),
    E(pidfd), E(fanotify_nb), E(userfaultfd_nb), E(bad_fd),
#undef E
#undef NOISY
};

/* ---- operations ------------------------------------------------------- */

enum { OP_READ, OP_READ0, OP_PREAD, OP_WRITE, OP_WRITE0, OP_PWRITE, OP_FSYNC, OP_FDATASYNC,
       OP_CLOSE, NOPS };
static const char *opname[NOPS] = {"read", "read 0", "pread64", "write", "write 0", "pwrite64",
                                   "fsync", "fdatasync", "close"};

struct outcome {
    long res;           /* result, -errno; LONG_MIN: blocks / parks */
    uint64_t hash;      /* of the read buffer */
    long pos;           /* lseek(fd, 0, SEEK_CUR) afterwards, or -errno */
    int setup;          /* 0: the kind could not be made here */
};

static volatile sig_atomic_t alarmed;

static void on_alarm(int s)
{
    (void)s;
    alarmed = 1;    /* the call was still waiting (it may return a partial count) */
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static void run_cell(const struct kind *k, int op, int uring, int outfd)
{
    struct outcome o = {LONG_MIN, 0, 0, 1};
    static unsigned char buf[N] __attribute__((aligned(4096)));
    static unsigned char wbuf[2 * N] __attribute__((aligned(4096)));
    memset(buf, 0xaa, sizeof buf);
    memset(wbuf, 0, sizeof wbuf);
    memcpy(wbuf, "probe\n", 6);
    signal(SIGPIPE, SIG_IGN);
    int fd = k->make(0);
    if (fd < 0) {
        o.setup = 0;
        if (write(outfd, &o, sizeof o) < 0)
            _exit(1);
        _exit(0);
    }
    size_t len = op == OP_READ0 || op == OP_WRITE0 ? 0 : N;
    if ((op == OP_WRITE || op == OP_PWRITE) && k->wlen)
        len = k->wlen;      /* longer than PIPE_BUF: not atomic */
    if (!uring) {
        struct sigaction sa = {.sa_handler = on_alarm};
        sigaction(SIGALRM, &sa, NULL);      /* no SA_RESTART: EINTR */
        struct itimerval it = {{0, 0}, {0, TIMEOUT_MS * 1000}};
        setitimer(ITIMER_REAL, &it, NULL);
        long r;
        switch (op) {
        case OP_READ: case OP_READ0: r = read(fd, buf, len); break;
        case OP_PREAD: r = pread(fd, buf, len, 0); break;
        case OP_WRITE: case OP_WRITE0: r = write(fd, wbuf, len); break;
        case OP_PWRITE: r = pwrite(fd, wbuf, len, 0); break;
        case OP_FSYNC: r = fsync(fd); break;
        case OP_FDATASYNC: r = fdatasync(fd); break;
        default: r = close(fd); break;
        }
        int e = errno;
        struct itimerval z = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &z, NULL);
        o.res = alarmed ? LONG_MIN : r < 0 ? -e : r;
    } else {
        struct io_uring ring;
        if (io_uring_queue_init(8, &ring, 0))
            _exit(91);
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        switch (op) {
        case OP_READ: case OP_READ0: io_uring_prep_read(sqe, fd, buf, len, -1); break;
        case OP_PREAD: io_uring_prep_read(sqe, fd, buf, len, 0); break;
        case OP_WRITE: case OP_WRITE0: io_uring_prep_write(sqe, fd, wbuf, len, -1); break;
        case OP_PWRITE: io_uring_prep_write(sqe, fd, wbuf, len, 0); break;
        case OP_FSYNC: io_uring_prep_fsync(sqe, fd, 0); break;
        case OP_FDATASYNC: io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); break;
        default: io_uring_prep_close(sqe, fd); break;
        }
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {0, TIMEOUT_MS * 1000000LL};
        if (io_uring_wait_cqe_timeout(&ring, &cqe, &ts) == 0)
            o.res = cqe->res;
    }
    if (op == OP_READ || op == OP_PREAD)
        o.hash = fnv(buf, sizeof buf);
    o.pos = op == OP_CLOSE ? 0 : lseek(fd, 0, SEEK_CUR);
    if (o.pos < 0)
        o.pos = -errno;
    if (write(outfd, &o, sizeof o) < 0)
        _exit(1);
    _exit(0);
}

static struct outcome cell(const struct kind *k, int op, int uring)
{
    int p[2];
    struct outcome o = {0};
    if (pipe(p))
        exit(1);
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/%d-%d", dir, op, uring);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        alarm(5);                   /* a stuck child dies */
        mkdir(sub, 0700);
        strcpy(dir, sub);
        run_cell(k, op, uring, p[1]);
    }
    close(p[1]);
    ssize_t n = read(p[0], &o, sizeof o);
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    if (n != sizeof o) {
        o.setup = 0;
        o.res = -9999;
    }
    return o;
}

static const char *fmt(long r, char *b, size_t n)
{
    if (r == LONG_MIN)
        snprintf(b, n, "%s", "wait");
    else if (r < 0)
        snprintf(b, n, "%s", strerrorname_np((int)-r) ? strerrorname_np((int)-r) : "?");
    else
        snprintf(b, n, "%ld", r);
    return b;
}

static int same(const struct kind *k, const struct outcome *a, const struct outcome *b, int op)
{
    if (a->res != b->res)
        return 0;
    if ((op == OP_READ || op == OP_PREAD) && a->res > 0 && a->hash != b->hash && !k->arg)
        return 0;
    return a->pos == b->pos;
}

/* ---- open / openat ---------------------------------------------------- */

struct ocase {
    const char *name;
    int dfd;            /* 0: AT_FDCWD (open), 1: the directory, 2: a regular file, 3: a bad fd */
    const char *path;   /* "@" + name: under the probe's directory */
    long flags;
    long mode;
};

static const struct ocase ocases[] = {
    {"regular, O_RDONLY", 0, "@reg", O_RDONLY, 0},
    {"regular, O_RDWR+O_APPEND+O_CLOEXEC", 0, "@reg", O_RDWR | O_APPEND | O_CLOEXEC, 0},
    {"regular, O_DIRECT", 0, "@reg", O_RDONLY | O_DIRECT, 0},
    {"regular, O_TRUNC", 0, "@reg", O_RDWR | O_TRUNC, 0},
    {"new file, O_CREAT 0640", 0, "@new", O_RDWR | O_CREAT, 0640},
    {"new file, O_CREAT, mode with junk bits", 0, "@new", O_RDWR | O_CREAT, 0xfffff1ff},
    {"existing, O_CREAT+O_EXCL", 0, "@reg", O_RDWR | O_CREAT | O_EXCL, 0600},
    {"O_TMPFILE in the directory", 0, "@", O_RDWR | O_TMPFILE, 0600},
    {"regular, O_PATH", 0, "@reg", O_PATH, 0},
    {"regular, O_DIRECTORY", 0, "@reg", O_RDONLY | O_DIRECTORY, 0},
    {"symlink, O_NOFOLLOW", 0, "@link", O_RDONLY | O_NOFOLLOW, 0},
    {"directory, O_RDONLY", 0, "@sub", O_RDONLY, 0},
    {"directory, O_WRONLY", 0, "@sub", O_WRONLY, 0},
    {"missing", 0, "@missing", O_RDONLY, 0},
    {"missing component", 0, "@missing/x", O_RDONLY, 0},
    {"component of 300 bytes", 0, "@xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", O_RDONLY, 0},
    {"flags with unknown bits", 0, "@reg", O_RDONLY | 0x40000000L, 0},
    {"FIFO, O_RDONLY+O_NONBLOCK", 0, "@fifo", O_RDONLY | O_NONBLOCK, 0},
    {"FIFO, O_WRONLY+O_NONBLOCK, no reader", 0, "@fifo", O_WRONLY | O_NONBLOCK, 0},
    {"FIFO, O_RDONLY (no writer)", 0, "@fifo", O_RDONLY, 0},
    {"FIFO, O_WRONLY (no reader)", 0, "@fifo", O_WRONLY, 0},
    {"FIFO, O_RDWR", 0, "@fifo", O_RDWR, 0},
    {"FIFO, O_RDONLY+O_CREAT (no writer)", 0, "@fifo", O_RDONLY | O_CREAT, 0600},
    {"unix socket path", 0, "@sock", O_RDWR, 0},
    {"/dev/null", 0, "/dev/null", O_RDWR, 0},
    {"/dev/ptmx", 0, "/dev/ptmx", O_RDWR | O_NOCTTY, 0},
    {"/dev/tty (no controlling tty)", 0, "/dev/tty", O_RDWR, 0},
    {"/proc/self/stat", 0, "/proc/self/stat", O_RDONLY, 0},
    {"/proc/thread-self/stat", 0, "/proc/thread-self/stat", O_RDONLY, 0},
    {"/proc/self/ns/net", 0, "/proc/self/ns/net", O_RDONLY, 0},
    {"sysfs file", 0, "/sys/devices/system/cpu/online", O_RDONLY, 0},
    {"sysfs file, O_WRONLY (root)", 0, "/sys/devices/system/cpu/online", O_WRONLY, 0},
    {"openat, relative to a directory fd", 1, "reg", O_RDONLY, 0},
    {"openat, relative to a regular file fd", 2, "reg", O_RDONLY, 0},
    {"openat, relative to a bad fd", 3, "reg", O_RDONLY, 0},
    {"openat, absolute path, bad fd", 3, "/dev/null", O_RDONLY, 0},
    {"openat, empty path", 1, "", O_RDONLY, 0},
    {"RLIMIT_NOFILE reached", 0, "@reg", O_RDONLY | 0x1000000000L /* marker, masked */, 0},
};

struct oout {
    long res;
    int fl, fd_flags;
    unsigned mode;
    char link[128];
    int setup;
};

static void norm_link(char *l, size_t n, int tid_ok)
{
    char b[PATH_MAX];
    size_t dl = strlen(dir);
    char *ino = strstr(l, "/#");     /* an O_TMPFILE's inode number */
    if (ino)
        strcpy(ino + 1, "#ino (deleted)");
    if (!strncmp(l, dir, dl)) {
        snprintf(b, sizeof b, "$D%s", l + dl);
        snprintf(l, n, "%s", b);
    } else if (!strncmp(l, "/proc/", 6) && strstr(l, "/task/")) {
        snprintf(l, n, "/proc/<pid>/task/<%s>/...", tid_ok ? "caller" : "another thread");
    } else if (!strncmp(l, "/proc/", 6) && l[6] >= '0' && l[6] <= '9') {
        snprintf(l, n, "/proc/<pid>/...");
    }
}

static void run_open(const struct ocase *oc, int uring, int outfd)
{
    struct oout o = {LONG_MIN, 0, 0, 0, "", 1};
    char p[PATH_MAX];
    signal(SIGPIPE, SIG_IGN);
    snprintf(p, sizeof p, "%s/reg", dir);
    close(regfile(O_RDONLY));
    snprintf(p, sizeof p, "%s/sub", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/fifo", dir);
    mkfifo(p, 0600);
    char t[PATH_MAX];
    snprintf(t, sizeof t, "%s/reg", dir);
    snprintf(p, sizeof p, "%s/link", dir);
    if (symlink(t, p))
        _exit(92);
    int us = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un ua = {.sun_family = AF_UNIX};
    snprintf(ua.sun_path, sizeof ua.sun_path, "%s/sock", dir);
    if (bind(us, (void *)&ua, sizeof ua))
        _exit(93);
    int dfd = AT_FDCWD;
    if (oc->dfd == 1)
        dfd = open(dir, O_RDONLY | O_DIRECTORY);
    else if (oc->dfd == 2)
        dfd = open(t, O_RDONLY);
    else if (oc->dfd == 3)
        dfd = 999;
    if (oc->path[0] == '@')
        snprintf(p, sizeof p, "%s/%s", dir, oc->path + 1);
    else
        snprintf(p, sizeof p, "%s", oc->path);
    long flags = oc->flags;
    struct io_uring ring;       /* in both children: the same descriptor table */
    if (io_uring_queue_init(8, &ring, 0))
        _exit(91);
    if (flags & 0x1000000000L) {        /* RLIMIT_NOFILE: no free descriptor */
        flags &= ~0x1000000000L;
        int top = 0, fd;
        while ((fd = dup(0)) >= 0)
            top = fd;
        close(top);
        struct rlimit rl = {(rlim_t)top, (rlim_t)top};
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    umask(022);
    if (!uring) {
        struct sigaction sa = {.sa_handler = on_alarm};
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 0}, {0, TIMEOUT_MS * 1000}};
        setitimer(ITIMER_REAL, &it, NULL);
        long r = syscall(SYS_openat, dfd, p, flags, oc->mode);
        int e = errno;
        struct itimerval z = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &z, NULL);
        o.res = alarmed ? LONG_MIN : r < 0 ? -e : r;
    } else {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_openat(sqe, dfd, p, (int)flags, (mode_t)oc->mode);
        sqe->open_flags = (uint32_t)flags;
        sqe->len = (uint32_t)oc->mode;
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {0, TIMEOUT_MS * 1000000LL};
        if (io_uring_wait_cqe_timeout(&ring, &cqe, &ts) == 0)
            o.res = cqe->res;
    }
    if (o.res >= 0 && o.res != LONG_MIN) {
        int fd = (int)o.res;
        o.fl = fcntl(fd, F_GETFL);
        o.fd_flags = fcntl(fd, F_GETFD);
        struct stat st;
        if (fstat(fd, &st) == 0)
            o.mode = st.st_mode;
        char l[PATH_MAX], q[64];
        snprintf(q, sizeof q, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(q, l, sizeof l - 1);
        l[n > 0 ? n : 0] = 0;
        int tid_ok = 1;
        char *tk = strstr(l, "/task/");
        if (tk)
            tid_ok = atoi(tk + 6) == (int)syscall(SYS_gettid);
        norm_link(l, sizeof l, tid_ok);
        snprintf(o.link, sizeof o.link, "%s", l);
    }
    if (write(outfd, &o, sizeof o) < 0)
        _exit(1);
    _exit(0);
}

static struct oout open_cell(const struct ocase *oc, int uring)
{
    int p[2];
    struct oout o = {0};
    if (pipe(p))
        exit(1);
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/o%d", dir, uring);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        alarm(5);
        mkdir(sub, 0700);
        strcpy(dir, sub);
        run_open(oc, uring, p[1]);
    }
    close(p[1]);
    ssize_t n = read(p[0], &o, sizeof o);
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    if (n != sizeof o)
        o.setup = 0;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", sub);
    if (system(cmd) != 0)
        exit(1);
    return o;
}

static int open_table(void)
{
    int diffs = 0;
    printf("| path, flags | native | io_uring OPENAT |\n|---|---|---|\n");
    for (size_t i = 0; i < sizeof ocases / sizeof ocases[0]; i++) {
        struct oout a = open_cell(&ocases[i], 0), b = open_cell(&ocases[i], 1);
        char b1[64], b2[64], d1[256], d2[256];
        if (!a.setup || !b.setup) {
            printf("| %s | n/a | n/a |\n", ocases[i].name);
            continue;
        }
        snprintf(d1, sizeof d1, "%s", fmt(a.res, b1, sizeof b1));
        snprintf(d2, sizeof d2, "%s", b.res == LONG_MIN ? "parks" : fmt(b.res, b2, sizeof b2));
        if (a.res >= 0 && a.res != LONG_MIN)
            snprintf(d1 + strlen(d1), sizeof d1 - strlen(d1), " `%s` fl=%#o fd=%d mode=%o", a.link,
                     a.fl, a.fd_flags, a.mode);
        if (b.res >= 0 && b.res != LONG_MIN)
            snprintf(d2 + strlen(d2), sizeof d2 - strlen(d2), " `%s` fl=%#o fd=%d mode=%o", b.link,
                     b.fl, b.fd_flags, b.mode);
        int eq = !strcmp(d1 + (a.res >= 0), d2 + (b.res >= 0)) && a.res == b.res;
        eq = a.res == b.res && a.fl == b.fl && a.fd_flags == b.fd_flags && a.mode == b.mode &&
             !strcmp(a.link, b.link);
        diffs += !eq;
        printf("| %s | %s%s%s | %s%s%s |\n", ocases[i].name, eq ? "" : "**", d1, eq ? "" : "**",
               eq ? "" : "**", d2, eq ? "" : "**");
        fflush(stdout);
    }
    printf("\n%d rows differ\n", diffs);
    return 0;
}

int main(int argc, char **argv)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/probe-translation-XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    if (argc > 1 && !strcmp(argv[1], "-o")) {
        open_table();
        rmdir(dir);
        return 0;
    }
    printf("| kind |");
    for (int op = 0; op < NOPS; op++)
        printf(" %s |", opname[op]);
    printf("\n|---|");
    for (int op = 0; op < NOPS; op++)
        printf("---|");
    printf("\n");
    int diffs = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const struct kind *k = &kinds[i];
        printf("| %s |", k->name);
        for (int op = 0; op < NOPS; op++) {
            struct outcome nat = cell(k, op, 0), uri = cell(k, op, 1);
            char b1[32], b2[32];
            if (!nat.setup || !uri.setup) {
                printf(" n/a |");
                continue;
            }
            if (same(k, &nat, &uri, op)) {
                printf(" %s |", fmt(nat.res, b1, sizeof b1));
            } else {
                diffs++;
                char extra[64] = "";
                if (nat.res == uri.res && nat.pos == uri.pos)
                    snprintf(extra, sizeof extra, " (data differs)");
                else if (nat.res == uri.res)
                    snprintf(extra, sizeof extra, " (pos %ld vs %ld)", nat.pos, uri.pos);
                printf(" **%s / %s**%s |", fmt(nat.res, b1, sizeof b1),
                       uri.res == LONG_MIN ? "parks" : fmt(uri.res, b2, sizeof b2), extra);
            }
            fflush(stdout);
        }
        printf("\n");
    }
    printf("\n%d cells differ (bold: native / io_uring; \"wait\": both still waiting after %d ms)\n",
           diffs, TIMEOUT_MS);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) != 0;
}
