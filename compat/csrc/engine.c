/* The syslet v1 engine.  See engine.h and docs/translation.md.
 *
 * One mutex per context guards all engine state (syslet table, liburing's
 * submission and completion sides, the ring producer index).  Kernel waits
 * (us_wait / us_pool_wait) happen without it.  Only the driver thread waits
 * in the kernel; callers that must wait (SYSLET_SYNC, unregister) sleep on
 * the context's condition variable and are woken by the driver.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>
#include "shim.h"
#include "engine.h"
#include "guard.h"
#include "rawsys.h"

/* ---- ABI v1 ------------------------------------------------------------ */
#define ATOM_SIZE 88
#define F_ASYNC 0x01
#define F_SYNC 0x02
#define F_NO_COMPLETE 0x04
#define F_STOP_NONZERO 0x08
#define F_STOP_ZERO 0x10
#define F_STOP_NEGATIVE 0x20
#define F_STOP_NONPOS 0x40
#define F_STOP_MASK 0x78
#define F_SKIP 0x80
#define F_ALL 0xff

#define NR_ASYNC_REGISTER 1000
#define NR_UMEM_ADD 1004

#define SL_MAXSEG 64
#ifndef SL_PARALLEL_READS
#define SL_PARALLEL_READS 1
#endif
#define SL_YIELD_ATOMS 1024     /* inline atoms an async syslet runs per turn */
#define SL_FDK_SLOTS 4096       /* descriptors whose O_DIRECT state is cached */
#define UD_POOL 0xff

enum { K_URING = 1, K_INLINE, K_POOL, K_REFUSED, K_UMEM };
enum { ST_FREE = 0, ST_READY, ST_URING, ST_POOL, ST_DONE };

struct member {
    uint64_t atom, flags, nr, ret_ptr, next;
    int64_t args[6];
    uint64_t cells[6];      /* the arg_ptr words */
    int64_t result;
    int64_t partial;        /* bytes done by a NOWAIT attempt, -1 none */
    uint8_t op, sqe_flags, transfer, done;
    uint8_t direct;         /* not tried with RWF_NOWAIT: FDK_DIRECT (O_DIRECT) or FDK_COLD */
};

struct syslet {
    uint32_t slot, gen;
    uint64_t cur;           /* next atom to run, 0 = end */
    uint64_t final;         /* last executed atom */
    uint64_t final_flags;
    uint64_t natoms;
    uint8_t async, in_caller, state, force_async, err_first, queued;
    uint8_t sync_all;       /* SYSLET_SYNC on the first atom (or max_nr_threads 0) */
    uint8_t handoff;        /* left READY for the driver to submit */
    unsigned epoch;         /* c->cancel when it started */
    uint8_t resubmits;      /* segments resubmitted after a kernel-side cancel */
    uint8_t have_pre;       /* pre holds the first atom, read at exec time */
    struct member pre;
    unsigned nseg, nreaped;
    struct member seg[SL_MAXSEG];
    struct us_job job;
    struct member pm;       /* the atom on the pool */
    struct syslet *qnext;
};

struct sl_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* progress: publishes, syslets done */
    pthread_cond_t dcv;         /* driver: work to do */
    int backend;                /* 1: io_uring; 0: pool only */
    struct io_uring ring;
    int ring_ok;
    struct us_pool *pool;
    unsigned pool_max;
    int registered;
    uint64_t ring_addr, ring_bytes, nslots, prod, max_threads;
    int sync_only;              /* max_nr_threads == 0 */
    int bounded;                /* max_nr_threads == N > 0: only the driver submits */
    int uring_exec;             /* io_uring runs atoms (backend and N not 1-2) */
    unsigned iowq_saved[2];     /* io-wq limits before we changed them */
    int iowq_changed;
    struct syslet **tab;
    uint32_t tab_cap, tab_used;
    uint32_t *free_ids;
    uint32_t nfree;
    unsigned inflight;          /* async syslets not yet finished */
    struct syslet *ready_head, *ready_tail;
    uint64_t *pubq;             /* finished atoms waiting for a ring slot */
    unsigned pubq_cap, pubq_head, pubq_n;
    int pub_blocked;
    unsigned sqes_pending;
    struct us_job **jobs;
    unsigned njobs, jobs_cap;
    pthread_t driver;
    int driver_started, stop, stop_cancel;
    int driver_exited;          /* c->driver ended when idle: join it before another */
    unsigned cancel;            /* cancel epoch: bumped by sl_cancel_all */
    int driver_in_kernel;       /* the driver waits in us_wait/us_pool_wait */
    int driver_idle;            /* the driver sleeps on dcv with nothing in flight */
    unsigned kwaiters;          /* callers waiting in the kernel for completions */
    int64_t last_wait_ns;       /* when a caller's kernel wait last ended */
    int cancel_pending;         /* cancelled syslets still in flight */
    uint64_t budget;
    int trace;
    /* registered, not sync_only, no budget, no trace: exec may take its
     * fast path (one word for it to read; fast_update() keeps it) */
    int fast_ok;
    struct sl_counters cnt;
    /* Counted without the mutex by the exec fast path (atomic adds): each hit is one
     * synchronous syslet of one inline RWF_NOWAIT atom. */
    uint64_t fast_hits, fast_faults;
    unsigned gen;               /* fork generation it was made in */
    /* FDK_* of fds < SL_FDK_SLOTS: where a lone read goes first (D23);
     * single bytes, read and written without the mutex */
    uint8_t fdk[SL_FDK_SLOTS];
    unsigned fdk_direct_uses;   /* FDK_DIRECT lookups (SL_FDK_RECHECK) */
    const char *broken;         /* the ring is unusable (ring_broken): why; every call gives -EIO */
};

const char *sl_version(void) { return SL_VERSION; }

/* Bumped in every child after fork(): a context from another generation
 * belongs to the parent (cheaper than a getpid() system call per exec). */
static volatile unsigned fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { fork_gen++; }
static void atfork_install(void) { pthread_atfork(NULL, NULL, on_fork_child); }
#define FOREIGN(c) ((c)->gen != fork_gen)

static void fast_update(struct sl_ctx *c)
{
    int ok = c->registered && !c->sync_only && !c->budget && !c->trace && !c->broken;
    __atomic_store_n(&c->fast_ok, ok, __ATOMIC_RELAXED);
}

/* Is the ring unusable (us_ring_fault: the program wrote over its shared
 * indices, or its descriptor was lost for good)?  From the first time on,
 * every call fails with -EIO, and whoever waits is woken to see it. */
static int ring_broken(struct sl_ctx *c)
{
    if (c->broken || !c->backend || !(c->broken = us_ring_fault(&c->ring)))
        return c->broken != NULL;
    fast_update(c);
    pthread_cond_broadcast(&c->cv);
    pthread_cond_signal(&c->dcv);
    return 1;
}

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

static int is_refused(uint64_t nr)
{
    switch (nr) {
    case 15:  /* rt_sigreturn */
    case 56:  /* clone */
    case 57:  /* fork */
    case 58:  /* vfork */
    case 59:  /* execve */
    case 60:  /* exit */
    case 231: /* exit_group */
    case 322: /* execveat */
    case 435: /* clone3 */
    case 1000: case 1001: case 1002: case 1003:
        return 1;
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

/* ---- small helpers ----------------------------------------------------- */

/* The kernel's convention: -errno for -4095..-1, anything else a value (a
 * result below -4095 is one: fcntl(F_GETOWN) of a process group above 4095).
 * libc's syscall() maps exactly that range to -1 and errno, and passes the
 * rest through. */
static int64_t raw_syscall(uint64_t nr, const int64_t *a)
{
    long r = syscall((long)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    return r == -1 ? -(int64_t)errno : (int64_t)r;
}

/* Reads the atom at addr and its argument words.  0, or -EFAULT for an
 * unreadable atom, or 1 for an unreadable argument pointer (atom readable). */
/* The member of the atom at addr, not begun: w[0..3] its header words,
 * w[4..4+ncells) its first argument cells (the rest 0); args are the
 * caller's. */
static void member_set(struct member *m, uint64_t addr, const uint64_t *w, unsigned ncells)
{
    m->atom = addr;
    m->flags = w[0];
    m->nr = w[1];
    m->ret_ptr = w[2];
    m->next = w[3];
    for (unsigned k = 0; k < 6; k++)
        m->cells[k] = k < ncells ? w[4 + k] : 0;
    m->partial = -1;
    m->done = 0;
    m->direct = 0;
    m->sqe_flags = 0;
    m->op = 0;
    m->transfer = 0;
}

static int read_atom(uint64_t addr, struct member *m)
{
    uint64_t w[11];
    int r = g_read_atom(addr, w, m->args);
    if (r >= 0)
        member_set(m, addr, w, 6);
    return r;
}

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

/* ---- syslet table ------------------------------------------------------ */

static struct syslet *syslet_new(struct sl_ctx *c)
{
    uint32_t id;
    if (c->nfree) {
        id = c->free_ids[--c->nfree];
    } else {
        if (c->tab_used == c->tab_cap) {
            uint32_t cap = c->tab_cap ? c->tab_cap * 2 : 64;
            if (cap > (1u << 24))
                return NULL;
            struct syslet **t = realloc(c->tab, cap * sizeof *t);
            uint32_t *f = realloc(c->free_ids, cap * sizeof *f);
            if (!t || !f) {
                if (t) c->tab = t;
                if (f) c->free_ids = f;
                return NULL;
            }
            c->tab = t;
            c->free_ids = f;
            for (uint32_t i = c->tab_cap; i < cap; i++)
                c->tab[i] = NULL;
            c->tab_cap = cap;
        }
        id = c->tab_used++;
    }
    struct syslet *s = c->tab[id];
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            c->free_ids[c->nfree++] = id;
            return NULL;
        }
        c->tab[id] = s;
        s->slot = id;
    }
    uint32_t gen = s->gen + 1;
    s->gen = gen & 0xffff;
    s->cur = s->final = s->final_flags = s->natoms = 0;
    s->async = s->in_caller = s->force_async = s->err_first = s->queued = 0;
    s->nseg = s->nreaped = 0;
    s->state = ST_READY;
    s->qnext = NULL;
    s->epoch = __atomic_load_n(&c->cancel, __ATOMIC_RELAXED);
    s->resubmits = 0;
    s->have_pre = 0;
    s->sync_all = s->handoff = 0;
    return s;
}

static void syslet_free(struct sl_ctx *c, struct syslet *s)
{
    s->state = ST_FREE;
    c->free_ids[c->nfree++] = s->slot;
}

static inline uint64_t make_ud(const struct syslet *s, unsigned member)
{
    return ((uint64_t)s->gen << 40) | ((uint64_t)s->slot << 8) | member;
}

/* ---- ring publishing ---------------------------------------------------- */

static void kick_waiters(struct sl_ctx *c);

static void try_publish(struct sl_ctx *c)
{
    uint64_t published = c->cnt.published;
    while (c->pubq_n && c->registered) {
        uint64_t slot_addr = c->ring_addr + 8 * c->prod;
        uint64_t atom = c->pubq[c->pubq_head];
        int swapped = 0;
        if (g_cas_release(slot_addr, 0, atom, &swapped)) {
            c->cnt.faults++;        /* ring memory vanished: entry lost */
            swapped = 1;
        } else if (!swapped) {
            if (!c->pub_blocked) {
                c->pub_blocked = 1;
                c->cnt.ring_full_waits++;
            }
            return;
        } else {
            c->cnt.published++;
        }
        c->pub_blocked = 0;
        c->prod = (c->prod + 1) % c->nslots;
        c->pubq_head = (c->pubq_head + 1) % c->pubq_cap;
        c->pubq_n--;
        pthread_cond_broadcast(&c->cv);
    }
    if (c->cnt.published != published)
        kick_waiters(c);
}

static void enqueue_publish(struct sl_ctx *c, uint64_t atom)
{
    if (c->pubq_n == c->pubq_cap) {
        unsigned cap = c->pubq_cap ? c->pubq_cap * 2 : 64;
        uint64_t *q = malloc(cap * sizeof *q);
        if (!q)
            return;     /* out of memory: cannot happen in practice */
        for (unsigned i = 0; i < c->pubq_n; i++)
            q[i] = c->pubq[(c->pubq_head + i) % c->pubq_cap];
        free(c->pubq);
        c->pubq = q;
        c->pubq_cap = cap;
        c->pubq_head = 0;
    }
    c->pubq[(c->pubq_head + c->pubq_n) % c->pubq_cap] = atom;
    c->pubq_n++;
    try_publish(c);
}

/* The syslet has ended with s->final as its final atom. */
static void finish(struct sl_ctx *c, struct syslet *s)
{
    s->state = ST_DONE;
    if (s->in_caller)
        return;         /* the caller collects it */
    if (s->final && !(s->final_flags & F_NO_COMPLETE))
        enqueue_publish(c, s->final);
    c->inflight--;
    syslet_free(c, s);
    pthread_cond_broadcast(&c->cv);
}

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
            s->cur = m->atom + ATOM_SIZE;
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
    if (m->nr == NR_UMEM_ADD) {
        uint64_t v;
        if (g_add((uint64_t)m->args[0], (uint64_t)m->args[1], &v))
            return -EFAULT;
        return (int64_t)v;
    }
    if (is_refused(m->nr))
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
    uint64_t wpage = 0;             /* a page a ret cell was just written on */
    uint64_t seen[2 * SL_MAXSEG];   /* atom addresses, once n reaches SEEN_SCAN */
    seg[n++] = *first;
    outs_member(&outs, first);
    /* Extend along next while every rule allows it. */
    while (n < max) {
        struct member *prev = &seg[n - 1];
        int lf = link_flag(prev);
        if (!lf || !prev->next || prev->partial >= 0)
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
        if (outs_hit(&outs, nx, ATOM_SIZE))
            break;
        struct member *mp = &seg[n];   /* read in place: no copy */
        if (n == 1 && second && second->atom == nx)
            *mp = *second;
        else if (read_atom(nx, mp) != 0)
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
        if (is_refused(mp->nr) || mp->nr == NR_UMEM_ADD || !uring_op(mp))
            break;
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
                if (read_atom(s->cur, &m) >= 0) {
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
            rr = read_atom(s->cur, &m);
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
        int must_sync = c->sync_only ||
                        (s->in_caller && ((m.flags & F_SYNC) || (c->bounded && s->sync_all)));
        int special = is_refused(m.nr) || out_of_range(m.nr) || m.nr == NR_UMEM_ADD;
        int has_op = !special && uring_op(&m);
        if (special || never_blocks(m.nr, m.args) || c->sync_only || (must_sync && !(use_uring && has_op))) {
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
            if (complete_atom(c, s, &m, r))
                s->cur = 0;
            continue;
        }
        struct member peekm;    /* m's successor, when read to decide */
        int peeked = 0;
        if (has_op && m.op == IORING_OP_READ && !s->force_async && m.partial < 0) {
            /* The 2007 kernel ran the call in the caller until it would
             * block; RWF_NOWAIT says exactly that.  With io_uring, only for
             * a read that would be alone in its segment: a chain of reads
             * is cheaper as one submission. */
            int alone = !use_uring || !m.next || (m.flags & F_STOP_MASK) ||
                        read_atom(m.next, &peekm) != 0 || !uring_op(&peekm);
            peeked = !alone;
            if (alone && try_nowait_read(c, &m, &r)) {
                trace_member(c, s, &m, "nowait");
                c->cnt.atoms_inline++;
                c->cnt.atoms_nowait++;
                if (complete_atom(c, s, &m, r))
                    s->cur = 0;
                continue;
            }
        }
        if (use_uring && has_op) {
            if (io_uring_sq_space_left(&c->ring) == 0) {
                c->cnt.enters++;
                us_submit(&c->ring);
                c->sqes_pending = 0;
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
            trace_member(c, s, &m, "inline(cached)");
            c->cnt.atoms_inline++;
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
    if (c->sqes_pending) {
        c->cnt.enters++;
        int r;
        do {
            r = us_submit(&c->ring);
        } while (r == -EINTR);
        c->sqes_pending = 0;
    }
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
        s->state = ST_READY;
        int64_t r = s->job.result;
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
        if (m->direct == FDK_COLD && s->in_caller && r >= 0)
            fdk_set(c, m->args[0], FDK_BUFFERED);   /* it was cached after all */
        c->cnt.atoms_uring++;
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

/* ---- callers that wait reap for themselves ------------------------------- */

/* A caller that must wait for completions (async_wait, a SYSLET_SYNC atom
 * in flight) waits in the kernel itself and applies what it reaps: the CQE
 * wakes the thread that wants it, with no hand-off through the driver
 * (docs/decisions.md D24).  Not with max_nr_threads = N: there only the
 * driver may submit (io-wq keeps its workers per submitting thread), and
 * what a caller reaps may start new segments. */
static inline int caller_reaps(const struct sl_ctx *c)
{
    return !c->bounded;
}

/* How long after a caller's kernel wait the driver keeps out of the kernel
 * (two threads woken by every CQE would fight over the mutex); a program
 * that stops waiting and only polls the ring is served again after this. */
#define WAITER_LINGER_NS 10000000

/* Wakes the callers waiting in the kernel: something was published (by a
 * thread that reaped their completion first, or from the queue of entries
 * that waited for a free slot, or by a syslet that finished in a caller). */
static void kick_waiters(struct sl_ctx *c)
{
    if (!c->kwaiters)
        return;
    if (c->backend) {
        if (queue_wake_nop(c)) {    /* submitted now (the SQEs only: no pool hand-off) */
            c->cnt.enters++;
            while (us_submit(&c->ring) == -EINTR)
                ;
            c->sqes_pending = 0;
        }
    } else {
        us_pool_kick(c->pool);
    }
}

/* What the driver does in one round, done by a waiting caller (mutex held):
 * background syslets run, prepared work is sent, completions are applied and
 * finished syslets published. */
static void caller_progress(struct sl_ctx *c)
{
    run_ready(c);
    flush(c);
    reap_all(c);
    flush(c);
    try_publish(c);
}

/* One wait in the kernel for at least one completion, up to tmo ns, by a
 * caller (mutex held on entry and on return, not during): io_uring_enter
 * on the context's ring, or ppoll() on the pool's eventfd, with the signal
 * mask *sigmask during the wait (NULL: the thread's).  Returns 0, -ETIME
 * or -EINTR (a signal). */
static int caller_kernel_wait(struct sl_ctx *c, int64_t tmo, const sigset_t *sigmask)
{
    c->kwaiters++;
    c->cnt.caller_waits++;
    pthread_mutex_unlock(&c->mu);
    int r = c->backend ? us_wait_sigmask(&c->ring, 1, tmo, sigmask)
                       : us_pool_wait_fd(c->pool, tmo, sigmask);
    pthread_mutex_lock(&c->mu);
    c->kwaiters--;
    c->last_wait_ns = now_ns();
    return r;
}

/* ---- driver thread ------------------------------------------------------ */

/* How long the driver stays with nothing to do before it ends. */
#define DRIVER_IDLE_NS 100000000

/* Pool calls of cancelled syslets are interrupted until they return. */
static void interrupt_cancelled(struct sl_ctx *c)
{
    if (!c->cancel_pending)
        return;
    unsigned ep = __atomic_load_n(&c->cancel, __ATOMIC_RELAXED);
    int left = 0;
    for (uint32_t i = 0; i < c->tab_used; i++) {
        struct syslet *s = c->tab[i];
        if (!s || s->epoch == ep || s->in_caller)
            continue;
        if (s->state == ST_POOL) {
            us_pool_interrupt_job(c->pool, &s->job);
            left = 1;
        } else if (s->state == ST_URING || s->state == ST_READY) {
            left = 1;
        }
    }
    c->cancel_pending = left;
}

static void *driver_main(void *arg)
{
    struct sl_ctx *c = arg;
    int cancel_sent = 0;
    int64_t deadline = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->broken)
            break;      /* nothing more can complete; sl_ctx_free joins it */
        run_ready(c);
        flush(c);
        try_publish(c);
        if (c->stop) {
            /* Closing: entries nobody will consume are dropped; with
             * cancellation, in-flight requests are cancelled and loops stop
             * before their next atom.  Bounded: after 3 s what still runs
             * (an uninterruptible call) is abandoned. */
            if (c->inflight == 0)
                break;
            if (!deadline)
                deadline = now_ns() + 3000000000LL;
            if (c->stop_cancel && !cancel_sent && c->backend) {
                struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
                if (sqe) {
                    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
                    sqe->user_data = (uint64_t)-2;
                    us_submit(&c->ring);
                    cancel_sent = 1;
                }
            }
            if (c->stop_cancel)
                us_pool_interrupt(c->pool);
            if (now_ns() > deadline)
                break;
        }
        if (c->inflight == 0 && c->pubq_n == 0 && !c->ready_head) {
            /* Idle.  After DRIVER_IDLE_NS with nothing to do the driver
             * ends (the next syslet that goes async starts another:
             * ensure_driver), so an idle context keeps no thread -- and a
             * process whose syslets all complete synchronously is single-
             * threaded again, which the kernel rewards on every system call
             * (a lone thread's fd lookups take no file reference). */
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_nsec += DRIVER_IDLE_NS;
            while (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
            c->driver_idle = 1;
            int tr = pthread_cond_timedwait(&c->dcv, &c->mu, &t);
            c->driver_idle = 0;
            if (tr == ETIMEDOUT && !c->stop &&
                c->inflight == 0 && c->pubq_n == 0 && !c->ready_head) {
                c->driver_started = 0;
                c->driver_exited = 1;
                break;
            }
            continue;
        }
        if (c->ready_head) {    /* a long syslet yielded: let others in, go on */
            pthread_mutex_unlock(&c->mu);
            sched_yield();
            pthread_mutex_lock(&c->mu);
            reap_all(c);
            continue;
        }
        if (!c->stop && !c->cancel_pending && (c->kwaiters || c->last_wait_ns)) {
            /* Callers wait and reap for themselves: keep out of the kernel
             * until none has for WAITER_LINGER_NS (dcv still wakes us). */
            int64_t until = c->last_wait_ns + WAITER_LINGER_NS, now = now_ns();
            if (c->kwaiters && until < now + WAITER_LINGER_NS)
                until = now + WAITER_LINGER_NS;
            if (until > now) {
                struct timespec t = ts_at(until);
                pthread_cond_timedwait(&c->dcv, &c->mu, &t);
                reap_all(c);
                continue;
            }
            c->last_wait_ns = 0;
        }
        int64_t tmo = c->stop || c->cancel_pending ? 5000000 : c->pubq_n ? 200000 : 50000000;   /* poll a full ring */
        c->driver_in_kernel = 1;
        c->cnt.driver_waits++;
        pthread_mutex_unlock(&c->mu);
        if (c->backend)
            us_wait(&c->ring, 1, tmo);
        else
            us_pool_wait(c->pool, 1, tmo);
        pthread_mutex_lock(&c->mu);
        c->driver_in_kernel = 0;
        reap_all(c);
        interrupt_cancelled(c);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int ensure_driver(struct sl_ctx *c)
{
    if (c->driver_started)
        return 0;
    if (c->driver_exited) {
        /* It set driver_exited under the mutex and needs it no more. */
        pthread_join(c->driver, NULL);
        c->driver_exited = 0;
    }
    sigset_t all, old;
    all_but_guard_signals(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&c->driver, NULL, driver_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r)
        return -r;
    c->driver_started = 1;
    return 0;
}

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
        free(c);
        *err = -e;
        return NULL;
    }
    *err = 0;
    return c;
}

int sl_ctx_backend(struct sl_ctx *c) { return c->backend; }

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
    /* Drain: every in-flight syslet completes and is published. */
    while (c->inflight || c->pubq_n || ring_broken(c)) {
        if (c->broken) {
            pthread_mutex_unlock(&c->mu);
            return -EIO;
        }
        pthread_cond_signal(&c->dcv);
        if (timeout_ns >= 0) {
            if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT &&
                (c->inflight || c->pubq_n)) {
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
    fast_update(c);
    c->ring_addr = c->ring_bytes = c->nslots = 0;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static struct syslet *start_syslet(struct sl_ctx *c, uint64_t atom, int64_t *err, uint8_t *sync_all,
                                   const struct member *pre)
{
    struct member first;
    int rr = 0;
    if (c->broken) {
        *err = -EIO;
        return NULL;
    }
    if (pre) {          /* the exec fast path read it and began it (a short read) */
        first = *pre;
    } else {
        if (!c->registered) {
            *err = -EINVAL;
            return NULL;
        }
        /* The whole first atom must be readable, also when it goes async at
         * once: otherwise EFAULT and nothing runs. */
        if ((rr = read_atom(atom, &first)) < 0) {
            c->cnt.faults++;
            *err = -EFAULT;
            return NULL;
        }
    }
    uint64_t flags = first.flags;
    *sync_all = (flags & F_SYNC) || c->sync_only;
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
    s->in_caller = 1;
    s->sync_all = *sync_all;
    s->pre = first;
    s->pre.done = (uint8_t)rr;
    s->have_pre = 1;
    if ((flags & F_ASYNC) && !c->sync_only) {
        s->have_pre = 0;    /* the driver reads it when it runs it */
        s->in_caller = 0;
        s->async = 1;
        s->force_async = 1;
        c->inflight++;
        c->cnt.syslets_async++;
        int r = ensure_driver(c);
        if (r) {
            syslet_free(c, s);
            c->inflight--;
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
    c->cnt.syslets_async++;
    if (s->state == ST_READY)
        queue_ready(c, s);
    else if (c->driver_idle)    /* it has something to wait for now */
        pthread_cond_signal(&c->dcv);
    return 0;
}

static int exec_many(struct sl_ctx *c, const uint64_t *atoms, unsigned n, int64_t *results,
                     const struct member *pre)
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
        ss[i] = start_syslet(c, atoms[i], &err, &sync_all[i], i == 0 ? pre : NULL);
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
    return exec_many(c, atoms, n, results, NULL);
}

/* The general path of one exec (cold: out of line, so the hot path below
 * keeps a small frame).  pre, when not NULL, is the atom's first member,
 * already begun by a short NOWAIT read. */
static __attribute__((noinline)) int64_t exec_general(struct sl_ctx *c, uint64_t atom,
                                                      const struct sl_unlock *u,
                                                      struct member *pre)
{
    int64_t r;
    /* The fast path leaves errno alone; the general one may not (locks,
     * condition waits, the pool), and a successful C call must. */
    int saved = errno;
    if (u)
        u->leave(u->arg);
    int e = exec_many(c, &atom, 1, &r, pre);
    if (u)
        u->enter(u->arg);
    errno = saved;
    return e < 0 ? e : r;
}

/* The fast path settled the atom with result r: store it, count it, and
 * the syslet ends here (no next, no skip). */
static inline __attribute__((always_inline)) int64_t fast_done(struct sl_ctx *c, uint64_t atom,
                                                               uint64_t ret_ptr, int64_t r)
{
    if (ret_ptr && __builtin_expect(g_store8(ret_ptr, (uint64_t)r) != 0, 0))
        __atomic_add_fetch(&c->fast_faults, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->fast_hits, 1, __ATOMIC_RELAXED);
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
                                                        int direct)
{
    if (!direct)
        fdk_tried(c, (int64_t)o[8], r);
    switch (direct ? NW_SHORT : nowait_outcome(o[1], (const int64_t *)(o + 8), r)) {
    case NW_BLOCK:
        return exec_general(c, atom, u, NULL);      /* nothing done */
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
        return exec_general(c, atom, u, &pre);
    }
    }
    return fast_done(c, atom, o[2], r);
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
                                                            struct sl_fast *f)
{
    if (__builtin_expect(!__atomic_load_n(&c->fast_ok, __ATOMIC_RELAXED) || FOREIGN(c), 0))
        return 0;
    sl_guard_check();
    uint64_t *o = f->o;
    if (__builtin_expect(g_read_atom4(atom, o) != 0, 0))
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
                                                              const struct sl_unlock *u)
{
    if (__builtin_expect(sl_ticks() - f->t0 > SL_SLOW_TICKS, 0))
        fdk_forget(f->ctx, f->fd);      /* slow: ask about O_DIRECT again next time */
    if (__builtin_expect(r != (int64_t)f->iov.iov_len || f->direct, 0))
        return exec_fast_rest(f->ctx, f->atom, u, f->o, r, (int)f->direct);
    return fast_done(f->ctx, f->atom, f->o[2], r);
}

static inline __attribute__((always_inline)) int64_t exec_one(struct sl_ctx *c, uint64_t atom,
                                                              const struct sl_unlock *u)
{
    struct sl_fast f;
    if (__builtin_expect(!c, 0))
        return -EBADF;
    if (__builtin_expect(!fast_begin(c, atom, &f), 0))
        return exec_general(c, atom, u, NULL);
    return fast_end(&f, f.direct ? -EBADF : nowait_preadv((int)f.fd, &f.iov, (off_t)f.off), u);
}

int sl_exec_fast_begin(struct sl_ctx *c, uint64_t atom, struct sl_fast *f)
{
    return c ? fast_begin(c, atom, f) : 0;
}

int64_t sl_exec_fast_end_unlocking(const struct sl_fast *f, int64_t r, const struct sl_unlock *u)
{
    return fast_end(f, r, u);
}

int64_t sl_exec(struct sl_ctx *c, uint64_t atom)
{
    return exec_one(c, atom, NULL);
}

int64_t sl_exec_unlocking(struct sl_ctx *c, uint64_t atom, const struct sl_unlock *u)
{
    return exec_one(c, atom, u);
}

static uint64_t ring_count_locked(struct sl_ctx *c)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < c->nslots; i++) {
        uint64_t v;
        if (g_load_acquire(c->ring_addr + 8 * i, &v) == 0 && v)
            n++;
    }
    return n;
}

int64_t sl_ring_count(struct sl_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    int64_t n = c->registered ? (int64_t)ring_count_locked(c) : -EINVAL;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* Waits for min_events unconsumed ring entries (the body of sl_wait and
 * sl_wait_intr).  A caller that may reap waits in the kernel for
 * completions and applies them itself; otherwise (max_nr_threads = N, or
 * nothing in flight that could complete) it sleeps on cv, which every
 * publish broadcasts.  Either way it looks again at least every 2 ms:
 * consumers clear slots without telling us, and a blocked producer must see
 * the space.  intr: a signal during a kernel wait ends it with -EINTR. */
static int wait_ring(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns, int intr)
{
    /* intr: from the first kernel wait on, signals are blocked but during
     * the kernel waits, which take the caller's mask back atomically (as
     * ppoll does): a handled signal then always ends a wait with EINTR, and
     * never slips in between two waits unnoticed.  The guard's signals stay
     * open.  (A wait the first look satisfies costs no mask change.) */
    sigset_t old, *wmask = NULL;       /* set before the first kernel wait */
    pthread_mutex_lock(&c->mu);
    if (!c->registered || min_events == 0) {
        int e = c->registered ? 0 : -EINVAL;
        pthread_mutex_unlock(&c->mu);
        return e;
    }
    int64_t deadline = timeout_ns >= 0 ? now_ns() + timeout_ns : INT64_MAX;
    int r;
    for (;;) {
        if (caller_reaps(c))
            caller_progress(c);
        else
            try_publish(c);
        if (ring_broken(c)) {
            r = -EIO;
            break;
        }
        if (ring_count_locked(c) >= min_events) {
            r = 0;
            break;
        }
        int64_t now = now_ns();
        if (now >= deadline) {
            r = -ETIME;
            break;
        }
        int64_t slice = deadline - now < 2000000 ? deadline - now : 2000000;
        /* Interruptible: in the kernel even with nothing in flight (a
         * signal, or the kick of a publish, ends it). */
        if (caller_reaps(c) && (intr || c->inflight || c->ready_head)) {
            if (intr && !wmask) {
                sigset_t all;
                all_but_guard_signals(&all);
                pthread_sigmask(SIG_BLOCK, &all, &old);
                wmask = &old;
            }
            if (caller_kernel_wait(c, slice, wmask) == -EINTR && intr) {
                caller_progress(c);
                r = ring_count_locked(c) >= min_events ? 0 : -EINTR;
                break;
            }
        } else {
            struct timespec t = ts_at(now + slice);
            pthread_cond_timedwait(&c->cv, &c->mu, &t);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (wmask)
        pthread_sigmask(SIG_SETMASK, &old, NULL);   /* a pending handler runs now */
    return r;
}

int sl_wait(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns)
{
    return wait_ring(c, min_events, timeout_ns, 0);
}

int sl_wait_intr(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns)
{
    pthread_mutex_lock(&c->mu);
    int ok = caller_reaps(c);
    pthread_mutex_unlock(&c->mu);
    if (!ok)
        return -EOPNOTSUPP;
    return wait_ring(c, min_events, timeout_ns, 1);
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
    uint64_t hits = __atomic_load_n(&c->fast_hits, __ATOMIC_RELAXED);
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
                us_submit(&c->ring);
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
    free(c->pubq);
    free(c->jobs);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->dcv);
    free(c);
    return abandoned;
}
