/* Engine internals shared by the parts under engine/: ABI constants, the
 * member / syslet / context structures.  Included once, by engine.c. */
#ifndef SL_ENGINE_INTERNAL_H
#define SL_ENGINE_INTERNAL_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
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
#define ATOM_SIZE 88            /* v1, v5 */
#define ATOM80_SIZE 80          /* v6 */
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

#define NR_UMEM_ADD 1004
/* The project's own numbers (1000-1039): never reach the kernel. */
#define NR_OWN_FIRST 1000
#define NR_OWN_LAST 1039

#define SL_MAXSEG 64
#ifndef SL_PARALLEL_READS
#define SL_PARALLEL_READS 1
#endif
#define SL_YIELD_ATOMS 1024     /* inline atoms an async syslet runs per turn */
/* Descriptors whose kind is cached: every number below the kernel's default
 * nr_open (1 << 20).  One byte each, in a mapping made with MAP_NORESERVE:
 * a page of it (4096 numbers) costs memory only once a number in it was
 * used (a program with 10 000 sockets: 3 pages). */
#define SL_FDK_SLOTS (1u << 20)
/* fdk (1 byte), fdk_round (4) and fdk_id (8) per number, in one mapping */
#define SL_FDK_MAP ((size_t)SL_FDK_SLOTS * 13)
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
    uint8_t abi;            /* SL_ABI_*: the personality whose atom this is (its numbers) */
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
    uint32_t fdk_round;     /* its round of descriptor checks (D39), never 0 */
    uint8_t resubmits;      /* segments resubmitted after a kernel-side cancel */
    uint8_t have_pre;       /* pre holds the first atom, read at exec time */
    struct member pre;
    unsigned nseg, nreaped;
    struct member seg[SL_MAXSEG];
    struct us_job job;
    struct member pm;       /* the atom on the pool */
    /* A FIFO that an open atom opened for reading before a writer came
     * (io_uring's non-blocking first try, D35): fd + 1 while the pool
     * waits for the writer by opening it again (fifo_path), valid for
     * generation fifo_gen only. */
    int fifo_fd;
    uint32_t fifo_gen;
    char fifo_path[32];
    struct syslet *qnext;
    /* Where its completion goes (SL_ABI_*): v1 the registered ring; v5/v6
     * the ring of the async_head_user at head; v7 the syslet_ring at head,
     * described by the struct v7call at head (its atom). */
    uint8_t abi;
    uint64_t head, cdata;
};

/* v7's indirect with a ring: the call as one v1-layout atom in engine
 * memory (its arguments by value in vals[], its result in ret), and where
 * its completion goes.  Freed when the syslet ends. */
struct v7call {
    uint64_t atom[11];      /* flags, nr, ret_ptr, next, arg_ptr[6], private */
    int64_t ret;
    int64_t vals[6];
    uint64_t ring, cdata;
};

/* What an exec names besides its atom: the personality, and the head
 * (v5, v6), or the struct v7call (v7).  NULL: v1. */
struct sl_tgt {
    unsigned abi;
    uint64_t head;
};

/* A finished syslet waiting for its ring entry (publish.c's queue): val is
 * the final atom (v1, v5, v6) or the status (v7). */
struct pubent {
    uint64_t val, head, cdata;
    uint8_t abi;
    uint8_t waited;         /* found its slot taken once (ring_full_waits) */
};

/* The entries waiting for a slot of one ring, oldest first: v1's
 * registered ring (key 0), or the ring named by a v5/v6 head or a v7
 * syslet_ring (key: that address). */
struct pubring {
    uint64_t key;
    struct pubent *e;
    unsigned cap, head, n;
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
    unsigned inflight_v1;       /* of those, the registered head's (what unregister drains) */
    struct syslet *ready_head, *ready_tail;
    struct pubring *pubr;       /* finished syslets waiting for a ring slot, per ring */
    unsigned npubr, pubr_cap;   /* rings with waiting entries; room */
    unsigned pubq_n;            /* waiting entries in all */
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
    int fast_free;              /* fast_ok but for registration: the per-call heads of v5-v7 */
    int env_abi;                /* SYSLET_COMPAT_ABI's personality (sl_set_env_abi), 0 unset */
    struct sl_counters cnt;
    uint64_t nrc[SL_NRC_SLOTS][SL_NRC_KINDS];  /* per nr: NRC(), sl_get_nr_counters */
    /* Counted without the mutex by the exec fast path (atomic adds): each hit is one
     * synchronous syslet of one inline RWF_NOWAIT atom. */
    uint64_t fast_hits[2], fast_faults;     /* hits: [0] read, [1] pread64 */
    unsigned gen;               /* fork generation it was made in */
    /* FDK_* of fds < SL_FDK_SLOTS: where a lone read goes first (D23);
     * single bytes, read and written without the mutex.  fdk, fdk_round and
     * fdk_id are one mapping made by sl_ctx_new (SL_FDK_MAP bytes,
     * MAP_NORESERVE: a page per 4096 numbers in use) */
    uint8_t *fdk;
    uint32_t fdk_hi;            /* above every fd whose entry was set (close_range) */
    /* The syslet (its fdk_round) for which fdk[fd] was last checked against
     * the kernel or set by an atom (D39: a number reused behind the
     * engine's back); read and written without the mutex */
    uint32_t *fdk_round;
    uint32_t fdk_rounds;        /* the last round handed to a syslet */
    /* What fdk[fd] was classified from (fd_ident), 0 unknown: an fstat that
     * finds the same file confirms the kind (D39) */
    uint64_t *fdk_id;
    unsigned fdk_direct_uses;   /* FDK_DIRECT lookups (SL_FDK_RECHECK) */
    const char *broken;         /* the ring is unusable (ring_broken): why; every call gives -EIO */
    int efd;                    /* sl_event_fd's eventfd; -1: none */
    int efd_signalled;          /* written since the consumer's last sl_event_fd_clear:
                                 * publishing does not write it again (mutex) */
    dev_t efd_dev;              /* ... and its identity (efd_ours) */
    ino_t efd_ino;
};

const char *sl_version(void) { return SL_VERSION; }

/* Bumped in every child after fork(): a context from another generation
 * belongs to the parent (cheaper than a getpid() system call per exec). */
static volatile unsigned fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { fork_gen++; }
static void atfork_install(void) { pthread_atfork(NULL, NULL, on_fork_child); }
#define FOREIGN(c) ((c)->gen != fork_gen)

/* The per-nr counter slot of nr (engine.h, SL_NRC_SLOTS); NRC counts one
 * atom of nr run in place kind (under the context's mutex). */
static inline unsigned nrc_slot(uint64_t nr)
{
    return nr < 512 ? (unsigned)nr : nr - 1000 < 40 ? 512 + (unsigned)(nr - 1000) : SL_NRC_SLOTS - 1;
}
#define NRC(c, nr, kind) ((c)->nrc[nrc_slot(nr)][kind]++)

static void fast_update(struct sl_ctx *c)
{
    int free_ = !c->budget && !c->trace && !c->broken;
    int ok = free_ && c->registered && !c->sync_only;
    __atomic_store_n(&c->fast_free, free_, __ATOMIC_RELAXED);
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

#endif
