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
    /* A FIFO that an open atom opened for reading before a writer came
     * (io_uring's non-blocking first try, D26): fd + 1 while the pool
     * waits for the writer by opening it again (fifo_path), valid for
     * generation fifo_gen only. */
    int fifo_fd;
    uint32_t fifo_gen;
    char fifo_path[32];
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
    int ok = c->registered && !c->sync_only && !c->budget && !c->trace;
    __atomic_store_n(&c->fast_ok, ok, __ATOMIC_RELAXED);
}

#endif
