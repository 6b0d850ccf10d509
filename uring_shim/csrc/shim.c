/* uring_shim C shim; see shim.h for the contract. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>
#include "shim.h"

const char *us_version(void) { return US_VERSION; }

/* ---- the shim's own descriptors ----------------------------------------
 *
 * Programs close every descriptor above 2 while libraries live
 * (close_range(3, ~0U), closefrom, os.closerange: daemons do), or dup2 a
 * file over a number they do not own.  The shim's descriptors therefore
 *  - live at or above fd_floor() (close-on-exec), out of reach of dup2s
 *    onto small numbers;
 *  - are checked where a wrong file would do harm, by fstat (the same
 *    inode; every io_uring has its own) and, for an eventfd, whose inode
 *    all eventfds share, also its close-on-exec flag (a dup2 clears it);
 *  - are taken back when lost: a ring from the keeper below (a ring's
 *    requests in flight must not be lost with it), an eventfd made anew.
 *
 * The keeper is one thread with a file table of its own
 * (close_range(0, ~0U, CLOSE_RANGE_UNSHARE): nothing the program does to
 * its table reaches it).  It pulls a copy of a ring's descriptor with
 * pidfd_getfd() from the thread that deposits it; a thread that lost its
 * number pulls the copy back the same way (pidfd_open of the keeper's
 * thread needs PIDFD_THREAD, Linux 6.9).  It exists while it holds
 * copies.  Where it cannot run, a lost ring is reported (us_ring_fault). */

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define US_FD_FLOOR 512

/* US_FD_FLOOR, or half the soft RLIMIT_NOFILE where that is lower. */
static int fd_floor(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur / 2 >= US_FD_FLOOR)
        return US_FD_FLOOR;
    return rl.rlim_cur / 2 > 3 ? (int)(rl.rlim_cur / 2) : 3;
}

/* fd moved to a high close-on-exec number (the old one closed), or fd
 * itself (made close-on-exec) where no high number is free.  errno kept. */
static int fd_move_high(int fd)
{
    int saved = errno;
    int floor = fd_floor();
    if (fd >= floor) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        return fd;
    }
    int n = fcntl(fd, F_DUPFD_CLOEXEC, floor);
    if (n >= 0)
        close(fd);
    else
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    errno = saved;
    return n >= 0 ? n : fd;
}

/* What a descriptor of ours refers to. */
struct fd_ident {
    dev_t dev;
    ino_t ino;
    int check_cloexec;      /* the inode is shared by all files of its kind */
};

static int fd_ident_of(int fd, struct fd_ident *id, int check_cloexec)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    id->dev = st.st_dev;
    id->ino = st.st_ino;
    id->check_cloexec = check_cloexec;
    return 0;
}

/* Is fd still that file?  errno kept. */
static int fd_is(int fd, const struct fd_ident *id)
{
    if (fd < 0)
        return 0;
    int saved = errno;
    struct stat st;
    int ok = fstat(fd, &st) == 0 && st.st_dev == id->dev && st.st_ino == id->ino &&
             (!id->check_cloexec || fcntl(fd, F_GETFD) == FD_CLOEXEC);
    errno = saved;
    return ok;
}

/* How long a keeper holding nothing waits for the next copy before it ends. */
#define US_KEEPER_IDLE_NS 100000000

/* The keeper.  One request at a time: op, arg, from -> res. */
enum { KEEP_PUT = 1, KEEP_DROP };
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;              /* 0: not running, 1: running, -1: cannot run here */
    pid_t tid;
    unsigned gen;           /* bumped in a child after fork: older keys are void */
    unsigned nkeys;         /* copies held */
    unsigned seq, done;     /* requests posted / answered */
    int op, arg, res;
    pid_t from;
} keeper = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
static pthread_once_t keeper_once = PTHREAD_ONCE_INIT;

static pthread_mutex_t ownfd_mu = PTHREAD_MUTEX_INITIALIZER;

static void keeper_after_fork_child(void)
{
    /* The keeper thread does not exist here, and another thread of the
     * parent may have held these locks. */
    pthread_mutex_init(&ownfd_mu, NULL);
    pthread_mutex_init(&keeper.mu, NULL);
    pthread_cond_init(&keeper.cv, NULL);
    if (keeper.state > 0)
        keeper.state = 0;
    keeper.tid = 0;
    keeper.gen++;
    keeper.nkeys = 0;
    keeper.seq = keeper.done = 0;
}

static void keeper_atfork(void)
{
    pthread_atfork(NULL, NULL, keeper_after_fork_child);
}

static void *keeper_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "us-fdkeeper");
    /* A table of its own, empty: it must hold none of the program's files. */
    int ok = syscall(SYS_close_range, 0, ~0U, CLOSE_RANGE_UNSHARE) == 0;
    pthread_mutex_lock(&keeper.mu);
    keeper.state = ok ? 1 : -1;
    keeper.tid = ok ? gettid() : 0;
    pthread_cond_broadcast(&keeper.cv);
    while (ok) {
        while (keeper.done == keeper.seq)
            pthread_cond_wait(&keeper.cv, &keeper.mu);
        if (keeper.op == KEEP_PUT) {
            int pf = (int)syscall(SYS_pidfd_open, keeper.from, PIDFD_THREAD);
            int r = pf < 0 ? -errno : (int)syscall(SYS_pidfd_getfd, pf, keeper.arg, 0);
            if (pf >= 0 && r < 0)
                r = -errno;
            if (pf >= 0)
                close(pf);
            if (r >= 0)
                keeper.nkeys++;
            else if (keeper.nkeys == 0 &&
                     (r == -ENOSYS || r == -EPERM || r == -EINVAL || r == -EACCES))
                keeper.state = -1;      /* pidfds unusable here (seccomp, < 6.9): for good */
            keeper.res = r;
        } else {
            close(keeper.arg);
            keeper.nkeys--;
            keeper.res = 0;
        }
        keeper.done = keeper.seq;
        pthread_cond_broadcast(&keeper.cv);
        if (keeper.state < 0)
            break;
        if (keeper.nkeys == 0) {
            /* Nothing to keep: linger US_KEEPER_IDLE_NS for the next put (a
             * program that makes context after context starts no thread
             * for each), then leave; a later put starts another. */
            struct timespec t;
            clock_gettime(CLOCK_REALTIME, &t);
            t.tv_nsec += US_KEEPER_IDLE_NS;
            while (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
            while (keeper.done == keeper.seq &&
                   pthread_cond_timedwait(&keeper.cv, &keeper.mu, &t) != ETIMEDOUT)
                ;
            if (keeper.done == keeper.seq)
                break;
        }
    }
    if (keeper.state > 0)
        keeper.state = 0;
    keeper.tid = 0;
    pthread_cond_broadcast(&keeper.cv);
    pthread_mutex_unlock(&keeper.mu);
    return NULL;
}

/* One request to the keeper (mutex held on entry and return): its answer,
 * or -ENOSYS where no keeper can run. */
static int keeper_call_locked(int op, int arg)
{
    for (;;) {
        while (keeper.done != keeper.seq)       /* another request in progress */
            pthread_cond_wait(&keeper.cv, &keeper.mu);
        if (keeper.state < 0)
            return -ENOSYS;
        if (keeper.state == 1 && keeper.tid)
            break;
        if (op == KEEP_DROP)
            return 0;                           /* no keeper: nothing held */
        /* Start one (it announces itself, then waits for this request). */
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 64 * 1024);
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);   /* it takes no signals */
        pthread_t t;
        int e = pthread_create(&t, &at, keeper_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&at);
        if (e)
            return -e;      /* RLIMIT_NPROC: try again next time */
        keeper.state = 2;   /* starting */
        while (keeper.state == 2)
            pthread_cond_wait(&keeper.cv, &keeper.mu);
    }
    keeper.op = op;
    keeper.arg = arg;
    keeper.from = gettid();
    unsigned me = ++keeper.seq;
    pthread_cond_broadcast(&keeper.cv);
    while (keeper.done != me)
        pthread_cond_wait(&keeper.cv, &keeper.mu);
    return keeper.res;
}

/* A copy of fd with the keeper: its number in the keeper's table, or -errno. */
static int keeper_put(int fd, unsigned *gen)
{
    int saved = errno;
    pthread_mutex_lock(&keeper.mu);
    int r = keeper_call_locked(KEEP_PUT, fd);
    *gen = keeper.gen;
    pthread_mutex_unlock(&keeper.mu);
    errno = saved;
    return r;
}

static void keeper_drop(int key, unsigned gen)
{
    if (key < 0)
        return;
    int saved = errno;
    pthread_mutex_lock(&keeper.mu);
    if (gen == keeper.gen)      /* not a parent's key, after fork */
        keeper_call_locked(KEEP_DROP, key);
    pthread_mutex_unlock(&keeper.mu);
    errno = saved;
}

/* A new descriptor (high, close-on-exec) for the keeper's copy key, or
 * -errno.  The keeper lives while it holds key. */
static int keeper_get(int key, unsigned gen)
{
    int saved = errno;
    pthread_mutex_lock(&keeper.mu);
    pid_t tid = gen == keeper.gen && keeper.state == 1 ? keeper.tid : 0;
    pthread_mutex_unlock(&keeper.mu);
    if (!tid || key < 0)
        return -ENOENT;
    int pf = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
    int fd = pf < 0 ? -errno : (int)syscall(SYS_pidfd_getfd, pf, key, 0);
    if (pf >= 0 && fd < 0)
        fd = -errno;
    if (pf >= 0)
        close(pf);
    errno = saved;
    return fd < 0 ? fd : fd_move_high(fd);
}

/* A descriptor of ours: its number now, what it is, and the keeper's copy. */
struct us_ownfd {
    int fd;                 /* -1: none */
    int key;                /* the keeper's copy, -1: none */
    unsigned gen;
    int borrowed;           /* key is another ownfd's (the ring's): not ours to drop */
    struct fd_ident id;
    uint64_t recoveries;    /* times taken back or made anew */
};

/* Takes fd (moved high); keep: deposit a copy with the keeper. */
static void ownfd_init(struct us_ownfd *o, int fd, int check_cloexec, int keep)
{
    o->fd = fd_move_high(fd);
    o->key = -1;
    o->gen = 0;
    o->borrowed = 0;
    o->recoveries = 0;
    if (fd_ident_of(o->fd, &o->id, check_cloexec) != 0)
        memset(&o->id, 0, sizeof o->id);
    if (keep) {
        int k = keeper_put(o->fd, &o->gen);
        o->key = k >= 0 ? k : -1;
    }
}

/* o->fd (the number we last used) is no longer ours: take the keeper's
 * copy back under a new number (ownfd_mu held).  0, or -errno. */
static int ownfd_take_back_locked(struct us_ownfd *o)
{
    int nfd = keeper_get(o->key, o->gen);
    if (nfd < 0)
        return nfd;
    if (!fd_is(nfd, &o->id)) {      /* not the file deposited: cannot happen */
        close(nfd);
        return -ESTALE;
    }
    __atomic_store_n(&o->fd, nfd, __ATOMIC_RELEASE);
    o->recoveries++;
    return 0;
}

/* Closes o->fd if it is still ours (never a number the program reused)
 * and lets the keeper's copy go. */
static void ownfd_close(struct us_ownfd *o)
{
    if (fd_is(o->fd, &o->id))
        close(o->fd);
    o->fd = -1;
    if (!o->borrowed)
        keeper_drop(o->key, o->gen);
    o->key = -1;
}

/* ---- rings of us_ring_init ---------------------------------------------- */

struct ring_rec {
    struct io_uring *ring;
    struct us_ownfd fd;
    const char *fault;
};
static struct ring_rec *g_rings;
static unsigned g_nrings, g_rings_cap;
static unsigned g_ring_faults;          /* rings in g_rings with a fault */

/* ring's record (ownfd_mu held), or NULL: a ring of someone else's. */
static struct ring_rec *ring_rec_locked(struct io_uring *ring)
{
    for (unsigned i = 0; i < g_nrings; i++)
        if (g_rings[i].ring == ring)
            return &g_rings[i];
    return NULL;
}

static void ring_set_fault(struct io_uring *ring, const char *why)
{
    pthread_mutex_lock(&ownfd_mu);
    struct ring_rec *rec = ring_rec_locked(ring);
    if (rec && !rec->fault) {
        rec->fault = why;
        __atomic_add_fetch(&g_ring_faults, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&ownfd_mu);
}

static const char *const FAULT_LOST =
    "the io_uring descriptor was closed or replaced by the program and could not be "
    "taken back (the descriptor keeper needs pidfd_getfd with PIDFD_THREAD, Linux 6.9, "
    "and a free descriptor)";
static const char *const FAULT_INDICES =
    "the io_uring's shared SQ/CQ indices are out of bounds: the program wrote over "
    "the ring's memory";

int us_ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    pthread_once(&keeper_once, keeper_atfork);
    int r = io_uring_queue_init_params(entries, ring, p);
    if (r < 0)
        return r;
    struct ring_rec rec = {ring, {0}, NULL};
    ownfd_init(&rec.fd, ring->ring_fd, 0, 1);
    ring->ring_fd = ring->enter_ring_fd = rec.fd.fd;
    pthread_mutex_lock(&ownfd_mu);
    if (g_nrings == g_rings_cap) {
        unsigned cap = g_rings_cap ? 2 * g_rings_cap : 8;
        struct ring_rec *t = realloc(g_rings, cap * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&ownfd_mu);
            ownfd_close(&rec.fd);
            ring->ring_fd = ring->enter_ring_fd = -1;
            io_uring_queue_exit(ring);
            return -ENOMEM;
        }
        g_rings = t;
        g_rings_cap = cap;
    }
    g_rings[g_nrings++] = rec;
    pthread_mutex_unlock(&ownfd_mu);
    return 0;
}

void us_ring_exit(struct io_uring *ring)
{
    struct ring_rec rec;
    int found = 0;
    pthread_mutex_lock(&ownfd_mu);
    struct ring_rec *p = ring_rec_locked(ring);
    if (p) {
        rec = *p;
        found = 1;
        if (p->fault)
            __atomic_sub_fetch(&g_ring_faults, 1, __ATOMIC_RELEASE);
        *p = g_rings[--g_nrings];
    }
    pthread_mutex_unlock(&ownfd_mu);
    if (found) {
        rec.fd.fd = ring->ring_fd;
        ownfd_close(&rec.fd);           /* a reused number stays the program's */
        ring->ring_fd = ring->enter_ring_fd = -1;
    }
    io_uring_queue_exit(ring);
}

/* After an enter on ring through descriptor bad failed with e (EBADF,
 * EOPNOTSUPP), or looked as if it went to another ring (e = 0): 0 when the
 * caller should try again (ring->ring_fd is ours, maybe a new number taken
 * from the keeper), -e (0 for e = 0) when bad is ours after all or the ring
 * is not one of us_ring_init's, -EIO when the ring is lost (marked faulty). */
static int ring_recover(struct io_uring *ring, int bad, int e)
{
    if (e != EBADF && e != EOPNOTSUPP && e != 0)
        return -e;
    pthread_mutex_lock(&ownfd_mu);
    struct ring_rec *rec = ring_rec_locked(ring);
    int r;
    if (!rec) {
        r = -e;
    } else if (rec->fault) {
        r = -EIO;
    } else if (rec->fd.fd != bad) {
        r = 0;                      /* another thread took it back already */
    } else if (fd_is(bad, &rec->fd.id)) {
        r = -e;                     /* ours: the error was real */
    } else if ((r = ownfd_take_back_locked(&rec->fd)) == 0) {
        __atomic_store_n(&ring->enter_ring_fd, rec->fd.fd, __ATOMIC_RELEASE);
        __atomic_store_n(&ring->ring_fd, rec->fd.fd, __ATOMIC_RELEASE);
    } else {
        rec->fault = FAULT_LOST;
        __atomic_add_fetch(&g_ring_faults, 1, __ATOMIC_RELEASE);
        r = -EIO;
    }
    pthread_mutex_unlock(&ownfd_mu);
    return r;
}

int us_submit(struct io_uring *ring)
{
    int r = 0;
    for (int tries = 0; tries < 3; tries++) {
        int fd = __atomic_load_n(&ring->ring_fd, __ATOMIC_ACQUIRE);
        r = io_uring_submit(ring);
        int e = r < 0 ? -r : 0;
        /* Fine, unless the descriptor is bad or the enter took nothing
         * from our SQ (it may have gone to a ring dup2'ed over ours). */
        if (r < 0 ? e != EBADF && e != EOPNOTSUPP
                  : io_uring_smp_load_acquire(ring->sq.khead) == *ring->sq.ktail)
            return r;
        int rr = ring_recover(ring, fd, e);
        if (rr < 0)
            return rr;
        if (r >= 0 && __atomic_load_n(&ring->ring_fd, __ATOMIC_RELAXED) == fd)
            return r;               /* ours: the kernel only stopped early */
    }
    return r;
}

const char *us_ring_fault(struct io_uring *ring)
{
    unsigned sqh = io_uring_smp_load_acquire(ring->sq.khead);
    unsigned sqt = *ring->sq.ktail;
    unsigned cqh = *ring->cq.khead;
    unsigned cqt = io_uring_smp_load_acquire(ring->cq.ktail);
    if (sqt - sqh > ring->sq.ring_entries || ring->sq.sqe_tail - sqh > ring->sq.ring_entries ||
        cqt - cqh > ring->cq.ring_entries) {
        ring_set_fault(ring, FAULT_INDICES);
        return FAULT_INDICES;
    }
    if (!__atomic_load_n(&g_ring_faults, __ATOMIC_ACQUIRE))
        return NULL;
    pthread_mutex_lock(&ownfd_mu);
    struct ring_rec *rec = ring_rec_locked(ring);
    const char *f = rec ? rec->fault : NULL;
    pthread_mutex_unlock(&ownfd_mu);
    return f;
}

uint64_t us_ring_recoveries(struct io_uring *ring)
{
    pthread_mutex_lock(&ownfd_mu);
    struct ring_rec *rec = ring_rec_locked(ring);
    uint64_t n = rec ? rec->fd.recoveries : 0;
    pthread_mutex_unlock(&ownfd_mu);
    return n;
}

void us_ring_index_addrs(struct io_uring *ring, uint64_t *out)
{
    out[0] = (uint64_t)(uintptr_t)ring->sq.khead;
    out[1] = (uint64_t)(uintptr_t)ring->sq.ktail;
    out[2] = (uint64_t)(uintptr_t)ring->cq.khead;
    out[3] = (uint64_t)(uintptr_t)ring->cq.ktail;
}

void us_fill_sqe(struct io_uring_sqe *sqe, const struct us_desc *d)
{
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = d->opcode;
    sqe->flags = d->flags;
    sqe->ioprio = d->ioprio;
    sqe->fd = d->fd;
    sqe->off = d->off;
    sqe->addr = d->addr;
    sqe->len = d->len;
    sqe->rw_flags = (__kernel_rwf_t)d->op_flags;
    sqe->user_data = d->user_data;
    sqe->buf_index = d->buf_index;
    sqe->personality = d->personality;
    sqe->file_index = d->file_index;
    sqe->addr3 = d->addr3;
}

int us_prep_many(struct io_uring *ring, const struct us_desc *d, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (!sqe)
            break;
        us_fill_sqe(sqe, &d[i]);
    }
    return (int)i;
}

int us_prep1(struct io_uring *ring, uint8_t opcode, uint8_t flags, uint16_t ioprio, int32_t fd,
             uint64_t off, uint64_t addr, uint32_t len, uint32_t op_flags, uint64_t user_data,
             uint16_t buf_index, uint16_t personality, uint32_t file_index, uint64_t addr3)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe)
        return 0;
    struct us_desc d = {opcode, flags, ioprio, fd, off, addr, len, op_flags, user_data,
                        buf_index, personality, file_index, addr3};
    us_fill_sqe(sqe, &d);
    return 1;
}

int us_submit_many(struct io_uring *ring, const struct us_desc *d, unsigned n)
{
    if (io_uring_sq_space_left(ring) < n)
        return -EBUSY;
    us_prep_many(ring, d, n);
    return io_uring_submit(ring);
}

int us_submit_wait_reap(struct io_uring *ring, const struct us_desc *d, unsigned n,
                        unsigned wait_nr, struct us_cqe *out, unsigned max, int *status)
{
    if (n) {
        if (io_uring_sq_space_left(ring) < n) {
            *status = -EBUSY;
            return 0;
        }
        us_prep_many(ring, d, n);
    }
    /* One io_uring_enter: submit everything prepared and wait for wait_nr. */
    *status = io_uring_submit_and_wait(ring, wait_nr);
    return (int)us_reap(ring, out, max);
}

unsigned us_reap(struct io_uring *ring, struct us_cqe *out, unsigned max)
{
    struct io_uring_cqe *c[64];
    unsigned total = 0;
    while (total < max) {
        unsigned want = max - total > 64 ? 64 : max - total;
        unsigned n = io_uring_peek_batch_cqe(ring, c, want);
        for (unsigned i = 0; i < n; i++) {
            out[total + i].user_data = c[i]->user_data;
            out[total + i].res = c[i]->res;
            out[total + i].flags = c[i]->flags;
        }
        io_uring_cq_advance(ring, n);
        total += n;
        if (n < want)
            break;
    }
    return total;
}

unsigned us_unprep(struct io_uring *ring)
{
    /* liburing keeps prepared SQEs in [sqe_head, sqe_tail) until the next
     * submit publishes them to the kernel; rewinding sqe_tail drops them. */
    unsigned n = ring->sq.sqe_tail - ring->sq.sqe_head;
    ring->sq.sqe_tail = ring->sq.sqe_head;
    return n;
}

unsigned us_cq_ready(struct io_uring *ring) { return io_uring_cq_ready(ring); }

int us_wait_sigmask(struct io_uring *ring, unsigned min, int64_t timeout_ns,
                    const sigset_t *sigmask)
{
    if (min == 0 || io_uring_cq_ready(ring) >= min)
        return 0;
    unsigned flags = IORING_ENTER_GETEVENTS;
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    void *argp = (void *)sigmask;
    size_t argsz = _NSIG / 8;
    if (timeout_ns >= 0) {
        memset(&arg, 0, sizeof arg);
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        arg.ts = (uint64_t)(uintptr_t)&ts;
        arg.sigmask = (uint64_t)(uintptr_t)sigmask;
        arg.sigmask_sz = _NSIG / 8;
        argp = &arg;
        argsz = sizeof arg;
        flags |= IORING_ENTER_EXT_ARG;
    }
    for (int tries = 0;; tries++) {
        int fd = __atomic_load_n(&ring->ring_fd, __ATOMIC_ACQUIRE);
        long r = syscall(__NR_io_uring_enter, fd, 0, min, flags, argp, argsz);
        int e = r < 0 ? errno : 0;
        /* Suspect the descriptor when it is bad, or when the wait ended
         * without our completions or timed out with them there: a ring the
         * program dup2'ed over ours wakes on its own CQ (us_ring_init). */
        int ready = io_uring_cq_ready(ring) >= min;
        if (e == EBADF || e == EOPNOTSUPP || (e == 0 && !ready) || (e == ETIME && ready)) {
            if (tries == 2)
                return -e;
            int rr = ring_recover(ring, fd, e == ETIME ? 0 : e);
            if (rr < 0)
                return rr;
            if (__atomic_load_n(&ring->ring_fd, __ATOMIC_RELAXED) != fd)
                continue;           /* a new number: wait again */
        }
        return e == ETIME && ready ? 0 : -e;
    }
}

int us_wait(struct io_uring *ring, unsigned min, int64_t timeout_ns)
{
    return us_wait_sigmask(ring, min, timeout_ns, NULL);
}

int us_probe(struct io_uring *ring, uint8_t *supported, unsigned n)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(ring);
    if (!p)
        return -ENOMEM;
    memset(supported, 0, n);
    unsigned len = p->ops_len;
    for (unsigned i = 0; i < len && i < n; i++)
        supported[i] = (p->ops[i].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
    int last = p->last_op;
    io_uring_free_probe(p);
    return last + 1;
}

int us_nop_loop(struct io_uring *ring, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        struct io_uring_cqe *cqe;
        if (!sqe)
            return -EBUSY;
        io_uring_prep_nop(sqe);
        sqe->user_data = i;
        int r = io_uring_submit_and_wait(ring, 1);
        if (r < 0)
            return r;
        r = io_uring_peek_cqe(ring, &cqe);
        if (r < 0)
            return r;
        io_uring_cqe_seen(ring, cqe);
    }
    return 0;
}

/* ---- native fallback pool --------------------------------------------- */

#define US_POST_BATCH 32
#define US_INTR_SIG (SIGRTMAX - 3)
#define US_IDLE_NS 100000000      /* a worker idle this long leaves */

static void on_intr(int sig) { (void)sig; }

/* A no-op handler without SA_RESTART, so pthread_kill(US_INTR_SIG) makes a
 * blocked system call return EINTR.  Installed only where nobody else has a
 * handler for that signal. */
static void intr_install(void)
{
    struct sigaction cur;
    if (sigaction(US_INTR_SIG, NULL, &cur) == 0 && cur.sa_handler == SIG_DFL) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_intr;
        sigemptyset(&sa.sa_mask);
        sigaction(US_INTR_SIG, &sa, NULL);
    }
}
static pthread_once_t intr_once = PTHREAD_ONCE_INIT;

int us_pool_intr_signal(void)
{
    struct sigaction cur;
    return sigaction(US_INTR_SIG, NULL, &cur) == 0 && cur.sa_handler == on_intr ? US_INTR_SIG : 0;
}

struct us_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;
    struct us_job *head, *tail;
    unsigned npending;
    struct us_job *done_head, *done_tail;
    unsigned ndone;
    unsigned max, nworkers, nidle, nthreads;
    unsigned ngone;             /* threads[] entries that left when idle, not joined yet */
    struct us_ownfd efd;        /* us_pool_wait_fd's eventfd (fd -1 until first used) */
    int no_efd;                 /* none could be made: us_pool_wait_fd waits on done_cv */
    unsigned nfdwait;           /* threads in us_pool_wait_fd */
    uint8_t *gone;              /* per threads[] entry */
    int stop;
    int kicked;
    int has_target;             /* completions go into a target ring */
    struct us_ownfd target;     /* our duplicate of it (fd -1: lost for good) */
    uint64_t posted, post_retries, post_fallbacks;     /* us_pool_stats (atomic adds) */
    pthread_t *threads;
    unsigned threads_cap;
    uint64_t finished;          /* jobs run to their end (atomic adds): progress */
    uint64_t unstall_seen;      /* us_pool_unstall: finished when the stall it times began ... */
    int64_t unstall_at;         /* ... and when (CLOCK_MONOTONIC ns; 0: no stall timed) */
};

static int32_t clamp32(int64_t v)
{
    if (v > INT32_MAX) return INT32_MAX;
    if (v < INT32_MIN) return INT32_MIN;
    return (int32_t)v;
}

/* The target ring's descriptor, still ours (taken back from the keeper if
 * the program closed or replaced it), or -1. */
static int pool_target(struct us_pool *p)
{
    int fd = __atomic_load_n(&p->target.fd, __ATOMIC_ACQUIRE);
    if (fd_is(fd, &p->target.id))
        return fd;
    pthread_mutex_lock(&ownfd_mu);
    if (p->target.fd == fd && ownfd_take_back_locked(&p->target) < 0)
        __atomic_store_n(&p->target.fd, -1, __ATOMIC_RELEASE);
    fd = p->target.fd;
    pthread_mutex_unlock(&ownfd_mu);
    return fd;
}

/* The pool's eventfd, still ours (made anew if the program closed it or
 * dup2'ed something over it: an eventfd holds nothing a waiter needs), or
 * -1 when none can be made. */
static int pool_efd(struct us_pool *p)
{
    int fd = __atomic_load_n(&p->efd.fd, __ATOMIC_ACQUIRE);
    if (fd_is(fd, &p->efd.id))
        return fd;
    pthread_mutex_lock(&ownfd_mu);
    if (p->efd.fd == fd) {
        int saved = errno;
        int nfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        errno = saved;
        if (nfd >= 0) {
            if (fd >= 0)
                p->efd.recoveries++;
            nfd = fd_move_high(nfd);
            if (p->efd.id.ino == 0)
                fd_ident_of(nfd, &p->efd.id, 1);
        }
        __atomic_store_n(&p->efd.fd, nfd, __ATOMIC_RELEASE);
    }
    fd = p->efd.fd;
    pthread_mutex_unlock(&ownfd_mu);
    return fd;
}

/* Makes the pool's eventfd readable (errno untouched; a full counter is
 * readable). */
static void efd_signal(struct us_pool *p)
{
    int fd = pool_efd(p);
    if (fd < 0)
        return;
    int saved = errno;
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, it is readable anyway */
    }
    errno = saved;
}

/* Errors of a MSG_RING post worth another try (after a sleep): the target
 * CQ is full, the kernel is short of memory, or the target descriptor went
 * bad between our check and the post (the next round checks it again). */
static int post_retryable(int res)
{
    return res == -EOVERFLOW || res == -EAGAIN || res == -ENOMEM || res == -EBUSY ||
           res == -EBADF || res == -EBADFD;
}

#define US_POST_SLEEP_NS 100000         /* the first sleep before a retry */
#define US_POST_SLEEP_MAX_NS 10000000   /* doubling up to this */
#define US_POST_ROUNDS 64               /* rounds without progress (~0.6 s) before giving up */

static void sleep_ns(long ns)
{
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    nanosleep(&ts, NULL);
}

/* Posts one completion per job into the target ring with IORING_OP_MSG_RING
 * from the worker's own ring.  Each job is posted at most once; what cannot
 * be posted (the target stays full or is gone, the own ring fails) is
 * returned in rest[] (the count) for the caller to queue inside the pool,
 * where the target's reaper finds it.  Nothing is dropped, and every retry
 * comes after a sleep.  *own_ok is cleared for good when the own ring
 * cannot be used any more. */
static unsigned post_to_ring(struct us_pool *p, struct io_uring *own, int *own_ok,
                             struct us_job **jobs, unsigned n, struct us_job **rest)
{
    struct us_job *todo[US_POST_BATCH], *again[US_POST_BATCH];
    unsigned ntodo = n, nrest = 0, fruitless = 0;
    long pause = US_POST_SLEEP_NS;
    memcpy(todo, jobs, n * sizeof *todo);
    while (ntodo > 0) {
        int target = pool_target(p);
        /* Each round leaves the own SQ empty: anything else means its
         * indices were written over. */
        if (*own_ok && target >= 0 && (us_ring_fault(own) || io_uring_sq_space_left(own) < ntodo))
            *own_ok = 0;
        if (target < 0 || !*own_ok)
            break;
        unsigned base = io_uring_smp_load_acquire(own->sq.khead);
        for (unsigned k = 0; k < ntodo; k++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(own);
            struct us_job *j = todo[k];
            io_uring_prep_msg_ring(sqe, target, (unsigned)clamp32(j->result), j->user_data, 0);
            sqe->user_data = k;
        }
        /* Every SQE the kernel takes posts one CQE on the own ring; one it
         * does not take stays in the own SQ. */
        unsigned seen = 0, nagain = 0, done = 0, failures = 0, waits = 0;
        uint8_t handled[US_POST_BATCH] = {0};
        while (seen < ntodo) {
            int r = *own_ok ? io_uring_submit_and_wait(own, 1) : 0;
            struct io_uring_cqe *cqe;
            while (io_uring_peek_cqe(own, &cqe) == 0) {
                unsigned idx = (unsigned)cqe->user_data;
                int res = cqe->res;
                io_uring_cqe_seen(own, cqe);
                if (idx >= ntodo || handled[idx])
                    continue;           /* not one of this round's: cannot happen */
                handled[idx] = 1;
                seen++;
                if (res >= 0)
                    done++;
                else if (post_retryable(res))
                    again[nagain++] = todo[idx];
                else
                    rest[nrest++] = todo[idx];
            }
            if (seen == ntodo)
                break;
            if (*own_ok) {
                if (r >= 0 || r == -EINTR || r == -ETIME)
                    continue;
                /* The own ring's enter failed (that call took nothing). */
                __atomic_add_fetch(&p->post_retries, 1, __ATOMIC_RELAXED);
                if (++failures < US_POST_ROUNDS) {
                    sleep_ns(pause);
                    pause = pause * 2 > US_POST_SLEEP_MAX_NS ? US_POST_SLEEP_MAX_NS : pause * 2;
                    continue;
                }
                *own_ok = 0;    /* give it up: its untaken SQEs never run */
            }
            /* Given up: the SQEs it took complete on their own (an io-wq
             * worker may post their CQEs later); the others go to the pool. */
            unsigned taken = io_uring_smp_load_acquire(own->sq.khead) - base;
            int missing = 0;
            for (unsigned k = 0; k < taken && k < ntodo; k++)
                missing |= !handled[k];
            if (missing && ++waits < 1000) {
                sleep_ns(1000000);
                continue;
            }
            for (unsigned k = 0; k < ntodo; k++)
                if (!handled[k]) {
                    handled[k] = 1;
                    rest[nrest++] = todo[k];
                }
            break;
        }
        __atomic_add_fetch(&p->posted, done, __ATOMIC_RELAXED);
        ntodo = 0;
        if (nagain == 0)
            break;
        /* Not posted yet (the target is full, or went bad): sleep, then
         * try those again; after US_POST_ROUNDS rounds without any success,
         * the pool keeps them. */
        fruitless = done ? 0 : fruitless + 1;
        if (!*own_ok || fruitless >= US_POST_ROUNDS) {
            for (unsigned i = 0; i < nagain; i++)
                rest[nrest++] = again[i];
            break;
        }
        __atomic_add_fetch(&p->post_retries, nagain, __ATOMIC_RELAXED);
        sleep_ns(pause);
        pause = pause * 2 > US_POST_SLEEP_MAX_NS ? US_POST_SLEEP_MAX_NS : pause * 2;
        memcpy(todo, again, nagain * sizeof *todo);
        ntodo = nagain;
    }
    /* Not tried at all: no target, or no own ring. */
    for (unsigned i = 0; i < ntodo; i++)
        rest[nrest++] = todo[i];
    return nrest;
}

#ifndef IORING_SETUP_NO_MMAP
#define IORING_SETUP_NO_MMAP (1U << 14)
#endif
#ifndef IORING_SETUP_REGISTERED_FD_ONLY
#define IORING_SETUP_REGISTERED_FD_ONLY (1U << 15)
#endif
#ifndef IORING_REGISTER_USE_REGISTERED_RING
#define IORING_REGISTER_USE_REGISTERED_RING (1U << 31)
#endif

/* The worker's own ring for MSG_RING posts.  Only its thread enters it, so
 * it needs no descriptor: it is made registered with that thread only
 * (IORING_SETUP_REGISTERED_FD_ONLY, with its rings in two pages of ours:
 * IORING_SETUP_NO_MMAP, Linux 6.5), and never appears in the file table --
 * the program can neither close it nor dup2 over it, nor see a number come
 * and go.  On older kernels: an ordinary ring whose descriptor is
 * registered with the thread and then closed.  Returns 1 (no descriptor
 * ever), 0 (the older way), or -errno. */
static int own_ring_init(struct io_uring *own)
{
    long pg = sysconf(_SC_PAGESIZE);
    void *sqes = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *rings = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sqes != MAP_FAILED && rings != MAP_FAILED) {
        madvise(sqes, pg, MADV_DONTFORK);
        madvise(rings, pg, MADV_DONTFORK);
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_NO_MMAP | IORING_SETUP_REGISTERED_FD_ONLY;
        p.sq_off.resv2 = (uint64_t)(uintptr_t)sqes;     /* user_addr */
        p.cq_off.resv2 = (uint64_t)(uintptr_t)rings;
        int saved = errno;
        long idx = syscall(__NR_io_uring_setup, US_POST_BATCH, &p);
        errno = saved;
        /* SQEs and rings must each fit their page (32 + 64 entries do). */
        if (idx >= 0 && p.sq_entries * sizeof(struct io_uring_sqe) <= (size_t)pg &&
            p.sq_off.array + p.sq_entries * sizeof(unsigned) <= (size_t)pg) {
            struct io_uring_sq *sq = &own->sq;
            struct io_uring_cq *cq = &own->cq;
            char *r = rings;
            memset(own, 0, sizeof *own);
            sq->khead = (unsigned *)(r + p.sq_off.head);
            sq->ktail = (unsigned *)(r + p.sq_off.tail);
            sq->kring_mask = (unsigned *)(r + p.sq_off.ring_mask);
            sq->kring_entries = (unsigned *)(r + p.sq_off.ring_entries);
            sq->kflags = (unsigned *)(r + p.sq_off.flags);
            sq->kdropped = (unsigned *)(r + p.sq_off.dropped);
            sq->array = (unsigned *)(r + p.sq_off.array);
            sq->sqes = sqes;
            sq->ring_ptr = rings;
            sq->ring_mask = *sq->kring_mask;
            sq->ring_entries = *sq->kring_entries;
            cq->khead = (unsigned *)(r + p.cq_off.head);
            cq->ktail = (unsigned *)(r + p.cq_off.tail);
            cq->kring_mask = (unsigned *)(r + p.cq_off.ring_mask);
            cq->kring_entries = (unsigned *)(r + p.cq_off.ring_entries);
            cq->koverflow = (unsigned *)(r + p.cq_off.overflow);
            cq->cqes = (struct io_uring_cqe *)(r + p.cq_off.cqes);
            cq->kflags = p.cq_off.flags ? (unsigned *)(r + p.cq_off.flags) : NULL;
            cq->ring_ptr = rings;
            cq->ring_mask = *cq->kring_mask;
            cq->ring_entries = *cq->kring_entries;
            for (unsigned i = 0; i < sq->ring_entries; i++)
                sq->array[i] = i;
            own->flags = p.flags;
            own->features = p.features;
            own->ring_fd = -1;
            own->enter_ring_fd = (int)idx;
            own->int_flags = 1;         /* liburing's INT_FLAG_REG_RING: enter by index */
            return 1;
        }
        if (idx >= 0) {
            struct io_uring_rsrc_update up = {.offset = (unsigned)idx};
            syscall(__NR_io_uring_register, (int)idx,
                    IORING_UNREGISTER_RING_FDS | IORING_REGISTER_USE_REGISTERED_RING, &up, 1);
        }
    }
    if (sqes != MAP_FAILED)
        munmap(sqes, pg);
    if (rings != MAP_FAILED)
        munmap(rings, pg);
    int r = io_uring_queue_init(US_POST_BATCH, own, 0);
    if (r < 0)
        return r;
    if (io_uring_register_ring_fd(own) == 1) {
        close(own->ring_fd);
        own->ring_fd = -1;      /* io_uring_queue_exit: close(-1) is harmless */
    } else {
        own->ring_fd = own->enter_ring_fd = fd_move_high(own->ring_fd);
    }
    return 0;
}

/* Undoes own_ring_init (kind: its result). */
static void own_ring_exit(struct io_uring *own, int kind)
{
    if (kind == 0) {
        io_uring_queue_exit(own);
        return;
    }
    int saved = errno;
    struct io_uring_rsrc_update up = {.offset = (unsigned)own->enter_ring_fd};
    syscall(__NR_io_uring_register, own->enter_ring_fd,
            IORING_UNREGISTER_RING_FDS | IORING_REGISTER_USE_REGISTERED_RING, &up, 1);
    long pg = sysconf(_SC_PAGESIZE);
    munmap(own->sq.sqes, pg);
    munmap(own->sq.ring_ptr, pg);
    errno = saved;
}

static void *worker_main(void *arg)
{
    struct us_pool *p = arg;
    struct io_uring own;
    int have_ring = 0, own_kind = -1;
    struct us_job *batch[1], *rest[1];     /* one job at a time (below) */

    if (p->has_target) {
        own_kind = own_ring_init(&own);
        have_ring = own_kind >= 0;
    }
    sigset_t intr;
    sigemptyset(&intr);
    sigaddset(&intr, US_INTR_SIG);
    pthread_sigmask(SIG_UNBLOCK, &intr, NULL);

    pthread_mutex_lock(&p->mu);
    for (;;) {
        int idle_out = 0;
        while (!p->head && !p->stop && !idle_out) {
            /* A worker with nothing to do for US_IDLE_NS leaves (the next
             * burst starts workers again): an idle pool keeps no thread. */
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_nsec += US_IDLE_NS;
            while (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
            p->nidle++;
            idle_out = pthread_cond_timedwait(&p->work_cv, &p->mu, &t) == ETIMEDOUT;
            p->nidle--;
        }
        if (!p->head)
            break;
        /* One job at a time, its result posted before the next is taken:
         * any job may block for ever (a read of a pipe nobody writes yet),
         * and a job queued behind it in this worker's hands, or a result
         * held back until it returns, would wait with it while other
         * workers are free -- independent calls must never wait for each
         * other (docs/decisions.md D36).  A worker that finds more queued
         * takes the next without sleeping. */
        struct us_job *j = p->head;
        p->head = j->link_;
        if (!p->head) p->tail = NULL;
        j->link_ = NULL;
        p->npending--;
        if (p->head && p->nidle)
            pthread_cond_signal(&p->work_cv);
        pthread_mutex_unlock(&p->mu);

        __atomic_store_n(&j->runner_, pthread_self(), __ATOMIC_SEQ_CST);
        long r = syscall(j->nr, j->args[0], j->args[1], j->args[2],
                         j->args[3], j->args[4], j->args[5]);
        __atomic_store_n(&j->runner_, (pthread_t)0, __ATOMIC_SEQ_CST);
        /* libc's -1 is the kernel's -4095..-1; other negative
         * results are values (fcntl F_GETOWN of a process group) */
        j->result = r == -1 ? -(int64_t)errno : (int64_t)r;
        __atomic_add_fetch(&p->finished, 1, __ATOMIC_RELAXED);
        batch[0] = j;
        unsigned k = 1;

        /* Into the target ring, or (what could not be posted there, or
         * everything without one) onto the pool's list. */
        struct us_job **queue = batch;
        if (p->has_target) {
            if (have_ring) {
                k = post_to_ring(p, &own, &have_ring, batch, k, rest);
                queue = rest;
            }
            __atomic_add_fetch(&p->post_fallbacks, k, __ATOMIC_RELAXED);
        }
        pthread_mutex_lock(&p->mu);
        if (k) {
            for (unsigned i = 0; i < k; i++) {
                if (p->done_tail) p->done_tail->link_ = queue[i];
                else p->done_head = queue[i];
                p->done_tail = queue[i];
            }
            p->ndone += k;
            pthread_cond_broadcast(&p->done_cv);
            if (p->nfdwait) {
                /* Written without the mutex (a system call under it would
                 * keep the other workers and the reaper waiting). */
                pthread_mutex_unlock(&p->mu);
                efd_signal(p);
                pthread_mutex_lock(&p->mu);
            }
        }
    }
    p->nworkers--;
    if (!p->stop) {     /* left when idle: the next spawn (or us_pool_free) joins it */
        for (unsigned i = 0; i < p->nthreads; i++)
            if (pthread_equal(p->threads[i], pthread_self())) {
                p->gone[i] = 1;
                p->ngone++;
                break;
            }
    }
    pthread_mutex_unlock(&p->mu);
    if (own_kind >= 0)
        own_ring_exit(&own, own_kind);
    return NULL;
}

/* Joins the workers that left when idle and drops them from threads[]
 * (p->mu held; they no longer need it). */
static void join_gone_locked(struct us_pool *p)
{
    if (!p->ngone)
        return;
    unsigned k = 0;
    for (unsigned i = 0; i < p->nthreads; i++) {
        if (p->gone[i]) {
            pthread_join(p->threads[i], NULL);
            continue;
        }
        p->threads[k] = p->threads[i];
        p->gone[k++] = 0;
    }
    p->nthreads = k;
    p->ngone = 0;
}

struct us_pool *us_pool_new(unsigned max_workers, int target_ring_fd)
{
    struct us_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_once(&intr_once, intr_install);
    pthread_once(&keeper_once, keeper_atfork);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->work_cv, &ca);
    pthread_cond_init(&p->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    p->max = max_workers ? max_workers : 1;
    p->target.fd = p->target.key = -1;
    p->efd.fd = p->efd.key = -1;
    if (target_ring_fd < 0) {
        /* Completions stay in the pool: us_pool_wait_fd's eventfd, made now
         * so that the pool's descriptors never change while it lives (unless
         * the program closes it: pool_efd).  Without a free fd
         * (RLIMIT_NOFILE) the pool still works: its waits are then the
         * condition's (not ended by signals). */
        int saved = errno;
        int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        p->no_efd = efd < 0;
        errno = saved;
        if (efd >= 0)
            ownfd_init(&p->efd, efd, 1, 0);
    } else {
        /* Own a reference to the target ring file (its fd number can then
         * never be reused for another file while workers post into it),
         * high and with a copy in the keeper. */
        int fd = fcntl(target_ring_fd, F_DUPFD_CLOEXEC, fd_floor());
        if (fd < 0)
            fd = fcntl(target_ring_fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            int e = errno;
            pthread_mutex_destroy(&p->mu);
            pthread_cond_destroy(&p->work_cv);
            pthread_cond_destroy(&p->done_cv);
            free(p);
            errno = e;
            return NULL;
        }
        p->has_target = 1;
        /* A ring of us_ring_init (the engine's) has its copy with the keeper
         * already, and outlives the pool: borrow its key. */
        pthread_mutex_lock(&ownfd_mu);
        struct us_ownfd ring_fd = {-1, -1, 0, 0, {0, 0, 0}, 0};
        for (unsigned i = 0; i < g_nrings; i++)
            if (g_rings[i].fd.fd == target_ring_fd)
                ring_fd = g_rings[i].fd;
        pthread_mutex_unlock(&ownfd_mu);
        ownfd_init(&p->target, fd, 0, ring_fd.key < 0);
        if (ring_fd.key >= 0) {
            p->target.key = ring_fd.key;
            p->target.gen = ring_fd.gen;
            p->target.borrowed = 1;
        }
    }
    return p;
}

static int spawn_locked(struct us_pool *p)
{
    join_gone_locked(p);
    if (p->nthreads == p->threads_cap) {
        unsigned cap = p->threads_cap ? p->threads_cap * 2 : 8;
        pthread_t *t = realloc(p->threads, cap * sizeof *t);
        if (!t)
            return -ENOMEM;
        p->threads = t;
        uint8_t *g = realloc(p->gone, cap);
        if (!g)
            return -ENOMEM;
        p->gone = g;
        p->threads_cap = cap;
    }
    p->gone[p->nthreads] = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* workers take no signals */
    int r = pthread_create(&p->threads[p->nthreads], NULL, worker_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r)
        return -r;
    p->nthreads++;
    p->nworkers++;
    return 0;
}

int us_pool_submit(struct us_pool *p, struct us_job **jobs, unsigned n)
{
    if (n == 0)
        return 0;
    pthread_mutex_lock(&p->mu);
    if (p->stop) {
        pthread_mutex_unlock(&p->mu);
        return -ESHUTDOWN;
    }
    for (unsigned i = 0; i < n; i++) {
        jobs[i]->link_ = NULL;
        if (p->tail) p->tail->link_ = jobs[i];
        else p->head = jobs[i];
        p->tail = jobs[i];
    }
    p->npending += n;
    int err = 0;
    /* Grow only when the idle workers cannot cover the queue.  A busy
     * worker is no capacity: its call may block for ever (a read of a pipe
     * nobody writes yet), and a call queued behind it would wait with it
     * while the pool may still grow (D36).  Workers started by an earlier
     * submit and not idle yet are not counted either: at worst one more
     * starts, which leaves again when idle. */
    unsigned fresh = 0;
    while (p->nidle + fresh < p->npending && p->nworkers < p->max) {
        err = spawn_locked(p);
        if (err)
            break;
        fresh++;
    }
    if (p->nworkers == 0 && err) {
        /* Could not start a single worker: take the jobs back. */
        p->head = p->tail = NULL;
        p->npending = 0;
        pthread_mutex_unlock(&p->mu);
        return err;
    }
    pthread_mutex_unlock(&p->mu);
    /* Wake after unlocking: a worker woken while we still hold the mutex
     * would only block on it again (two extra context switches). */
    if (n > 1)
        pthread_cond_broadcast(&p->work_cv);
    else
        pthread_cond_signal(&p->work_cv);
    return (int)n;
}

/* Takes the oldest completed job off the done list (p->mu held), or NULL. */
static struct us_job *pop_done_locked(struct us_pool *p)
{
    struct us_job *j = p->done_head;
    if (j) {
        p->done_head = j->link_;
        if (!p->done_head) p->done_tail = NULL;
        j->link_ = NULL;
    }
    return j;
}

unsigned us_pool_reap(struct us_pool *p, struct us_cqe *out, unsigned max)
{
    unsigned k = 0;
    if (!__atomic_load_n(&p->ndone, __ATOMIC_ACQUIRE))
        return 0;       /* cheap check without the lock (a hint; callers poll) */
    pthread_mutex_lock(&p->mu);
    for (struct us_job *j; k < max && (j = pop_done_locked(p));) {
        out[k].user_data = j->user_data;
        out[k].res = clamp32(j->result);
        out[k].flags = 0;
        k++;
    }
    p->ndone -= k;
    pthread_mutex_unlock(&p->mu);
    return k;
}

int us_pool_submit_packed(struct us_pool *p, struct us_job *jobs, unsigned n,
                          const int64_t *words, size_t nwords, const uint64_t *uds,
                          uint64_t ud_base)
{
    struct us_job *small[64];
    size_t pos = 0;
    for (unsigned i = 0; i < n; i++) {            /* validate before touching jobs */
        if (pos >= nwords)
            return -EINVAL;
        unsigned k = (unsigned)(words[pos] & 63);
        if (k > 6 || pos + 1 + k > nwords)
            return -EINVAL;
        pos += 1 + k;
    }
    if (pos != nwords)
        return -EINVAL;
    struct us_job **ptrs = n <= 64 ? small : malloc(n * sizeof *ptrs);
    if (!ptrs)
        return -ENOMEM;
    pos = 0;
    for (unsigned i = 0; i < n; i++) {
        int64_t head = words[pos++];
        unsigned k = (unsigned)(head & 63);
        jobs[i].nr = head >> 6;                /* arithmetic: negative nr survive */
        for (unsigned a = 0; a < 6; a++)
            jobs[i].args[a] = a < k ? words[pos + a] : 0;
        pos += k;
        jobs[i].user_data = uds ? uds[i] : ud_base + i;
        jobs[i].result = 0;
        ptrs[i] = &jobs[i];
    }
    int r = us_pool_submit(p, ptrs, n);
    if (ptrs != small)
        free(ptrs);
    return r;
}

unsigned us_pool_reap64(struct us_pool *p, uint64_t *uds, int64_t *res, unsigned max)
{
    unsigned k = 0;
    if (!__atomic_load_n(&p->ndone, __ATOMIC_ACQUIRE))
        return 0;       /* cheap check without the lock (a hint; callers poll) */
    pthread_mutex_lock(&p->mu);
    for (struct us_job *j; k < max && (j = pop_done_locked(p));) {
        uds[k] = j->user_data;
        res[k] = j->result;
        k++;
    }
    p->ndone -= k;
    pthread_mutex_unlock(&p->mu);
    return k;
}

int us_pool_wait(struct us_pool *p, unsigned min, int64_t timeout_ns)
{
    int r = 0;
    struct timespec dl;
    if (timeout_ns >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += timeout_ns / 1000000000;
        dl.tv_nsec += timeout_ns % 1000000000;
        if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    }
    pthread_mutex_lock(&p->mu);
    while (p->ndone < min && !p->kicked) {
        if (timeout_ns >= 0) {
            if (pthread_cond_timedwait(&p->done_cv, &p->mu, &dl) == ETIMEDOUT) {
                r = p->ndone >= min ? 0 : -ETIME;
                break;
            }
        } else {
            pthread_cond_wait(&p->done_cv, &p->mu);
        }
    }
    p->kicked = 0;
    pthread_mutex_unlock(&p->mu);
    return r;
}

void us_pool_stats(struct us_pool *p, struct us_pool_stats *out)
{
    out->posted = __atomic_load_n(&p->posted, __ATOMIC_RELAXED);
    out->post_retries = __atomic_load_n(&p->post_retries, __ATOMIC_RELAXED);
    out->post_fallbacks = __atomic_load_n(&p->post_fallbacks, __ATOMIC_RELAXED);
    pthread_mutex_lock(&ownfd_mu);
    out->fd_recoveries = p->target.recoveries + p->efd.recoveries;
    pthread_mutex_unlock(&ownfd_mu);
}

unsigned us_pool_workers(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned n = p->nworkers;
    pthread_mutex_unlock(&p->mu);
    return n;
}

unsigned us_pool_pending(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned n = p->npending;
    pthread_mutex_unlock(&p->mu);
    return n;
}

unsigned us_pool_unstall(struct us_pool *p, int64_t stall_ns, unsigned hard_max)
{
    /* Nothing waits and no stall is being timed: the usual case, no lock
     * and no clock (a hint: a job queued just now is seen next time). */
    if (!__atomic_load_n(&p->npending, __ATOMIC_RELAXED) &&
        !__atomic_load_n(&p->unstall_at, __ATOMIC_RELAXED))
        return 0;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int64_t now = (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
    uint64_t fin = __atomic_load_n(&p->finished, __ATOMIC_RELAXED);
    unsigned n = 0;
    pthread_mutex_lock(&p->mu);
    if (!p->npending || p->nidle || p->stop) {
        p->unstall_at = 0;          /* no stall */
    } else if (!p->unstall_at || fin != p->unstall_seen) {
        p->unstall_seen = fin;      /* a stall may start now: time it from here */
        p->unstall_at = now;
    } else if (now - p->unstall_at >= stall_ns) {
        while (n < p->npending && p->nworkers < hard_max && spawn_locked(p) == 0)
            n++;
        p->unstall_at = now;
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

int us_pool_set_max(struct us_pool *p, unsigned max_workers)
{
    pthread_mutex_lock(&p->mu);
    p->max = max_workers ? max_workers : 1;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void us_pool_interrupt(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        if (!p->gone[i])
            pthread_kill(p->threads[i], US_INTR_SIG);
    pthread_mutex_unlock(&p->mu);
}

void us_pool_interrupt_job(struct us_pool *p, struct us_job *j)
{
    /* Under p->mu: a worker is joined only under it (join_gone_locked,
     * after it left) or in us_pool_free, so t stays a valid thread. */
    pthread_mutex_lock(&p->mu);
    pthread_t t = __atomic_load_n(&j->runner_, __ATOMIC_SEQ_CST);
    if (t)
        pthread_kill(t, US_INTR_SIG);
    pthread_mutex_unlock(&p->mu);
}

void us_pool_kick(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->kicked = 1;
    pthread_cond_broadcast(&p->done_cv);
    int fdwait = p->nfdwait;
    pthread_mutex_unlock(&p->mu);
    if (fdwait)
        efd_signal(p);
}

int us_pool_wait_fd(struct us_pool *p, int64_t timeout_ns, const sigset_t *sigmask)
{
    pthread_mutex_lock(&p->mu);
    if (p->ndone || p->kicked) {
        p->kicked = 0;
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    if (p->no_efd) {
        pthread_mutex_unlock(&p->mu);
        return us_pool_wait(p, 1, timeout_ns);
    }
    p->nfdwait++;       /* from now on every completion writes the eventfd */
    pthread_mutex_unlock(&p->mu);
    int fd = pool_efd(p);       /* made at the first call with a target ring */
    if (fd < 0) {
        pthread_mutex_lock(&p->mu);
        p->nfdwait--;
        p->no_efd = 1;
        pthread_mutex_unlock(&p->mu);
        return us_pool_wait(p, 1, timeout_ns);
    }
    struct pollfd pf = {fd, POLLIN, 0};
    struct timespec ts = {timeout_ns / 1000000000, timeout_ns % 1000000000};
    int saved = errno;
    int n = ppoll(&pf, 1, timeout_ns < 0 ? NULL : &ts, sigmask);
    int r = n > 0 ? 0 : n == 0 ? -ETIME : -errno;
    /* Drain it, if fd is still the eventfd: the program may have closed it
     * (POLLNVAL) or dup2'ed its own file over it meanwhile (the next call
     * makes a new one). */
    if (n > 0 && !(pf.revents & POLLNVAL) && fd_is(fd, &p->efd.id)) {
        uint64_t v;
        if (read(fd, &v, sizeof v) < 0) {
            /* EAGAIN: another waiter drained it */
        }
    }
    errno = saved;
    pthread_mutex_lock(&p->mu);
    p->nfdwait--;
    p->kicked = 0;
    pthread_mutex_unlock(&p->mu);
    return r;
}

void us_pool_stop(struct us_pool *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->stop) {          /* stopped already (the joins below are done once) */
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->stop = 1;
    pthread_cond_broadcast(&p->work_cv);
    unsigned n = p->nthreads;
    pthread_mutex_unlock(&p->mu);
    /* Workers blocked in a system call (a read on an empty pipe, ...) are
     * interrupted with US_INTR_SIG until they notice the stop, for 5 s. */
    for (int tries = 0; tries < 1000; tries++) {
        pthread_mutex_lock(&p->mu);
        unsigned alive = p->nworkers;
        pthread_mutex_unlock(&p->mu);
        if (!alive)
            break;
        if (tries > 0) {
            pthread_mutex_lock(&p->mu);
            for (unsigned i = 0; i < n; i++)
                if (!p->gone[i])
                    pthread_kill(p->threads[i], US_INTR_SIG);
            pthread_mutex_unlock(&p->mu);
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    for (unsigned i = 0; i < n; i++)
        pthread_join(p->threads[i], NULL);
}

void us_pool_free(struct us_pool *p)
{
    if (!p)
        return;
    us_pool_stop(p);
    free(p->threads);
    free(p->gone);
    ownfd_close(&p->efd);
    ownfd_close(&p->target);      /* the dup taken in us_pool_new */
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}
