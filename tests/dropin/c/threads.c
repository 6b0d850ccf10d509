/* Several pthreads use the process-wide context at once, the 2007 way
 * (syscall() with our numbers): each runs chains of
 *     umem_add(&counter, 1) -> pread64(fd, buf, 8, &off) -> getpid
 * and checks every result.  Every 7th chain is SYSLET_ASYNC: its final atom
 * comes through the one shared ring, which the main thread reaps (polling
 * it, async_wait when short) and hands back to the submitting thread.
 * Every thread starts with async_register at the same moment, so the
 * context (and the embedded Python's policy) is created under contention:
 * exactly one register succeeds, the others get EBUSY. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <syslet.h>

#define THREADS 8
#define CHAINS 400
#define SLOTS 64

static struct syslet_uatom *ring[SLOTS];
static struct async_head_user ahu = {ring, sizeof ring, -1UL};
static unsigned long counter;
static int fd;
static pthread_barrier_t start, registered;
static unsigned long went_async, reaped, errors, reg_ok, reg_busy;

struct chain {
    struct syslet_uatom a[3];
    long r[3];
    unsigned long counter_addr, one, fdw, bufw, len, off;
    uint64_t buf;
    volatile int done;
};

static inline uint64_t pattern(uint64_t p) { return (p >> 3) * 0x9E3779B97F4A7C15ULL + 0x5157; }

static void *worker(void *arg)
{
    long id = (long)arg;
    struct chain *c = calloc(1, sizeof *c);
    pthread_barrier_wait(&start);
    long rr = syscall(__NR_async_register, &ahu, sizeof ahu);
    if (rr == 0)
        __atomic_add_fetch(&reg_ok, 1, __ATOMIC_RELAXED);
    else if (errno == EBUSY)
        __atomic_add_fetch(&reg_busy, 1, __ATOMIC_RELAXED);
    pthread_barrier_wait(&registered);
    for (int i = 0; i < CHAINS; i++) {
        memset(c, 0, sizeof *c);
        c->counter_addr = (unsigned long)&counter;
        c->one = 1;
        c->fdw = (unsigned long)fd;
        c->bufw = (unsigned long)&c->buf;
        c->len = 8;
        c->off = 8 * (unsigned long)((id * CHAINS + i) % 4096);
        c->a[0].nr = __NR_umem_add;
        c->a[0].ret_ptr = &c->r[0];
        c->a[0].next = &c->a[1];
        c->a[0].arg_ptr[0] = &c->counter_addr;
        c->a[0].arg_ptr[1] = &c->one;
        c->a[1].nr = SYS_pread64;
        c->a[1].ret_ptr = &c->r[1];
        c->a[1].next = &c->a[2];
        c->a[1].arg_ptr[0] = &c->fdw;
        c->a[1].arg_ptr[1] = &c->bufw;
        c->a[1].arg_ptr[2] = &c->len;
        c->a[1].arg_ptr[3] = &c->off;
        c->a[2].nr = SYS_getpid;
        c->a[2].ret_ptr = &c->r[2];
        c->a[2].private = c;
        if (i % 7 == 3)
            c->a[0].flags = SYSLET_ASYNC;
        long r = syscall(__NR_async_exec, &c->a[0]);
        if (r == -1) {
            fprintf(stderr, "thread %ld: async_exec: %s\n", id, strerror(errno));
            __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
            break;
        }
        if (r == 0) {
            __atomic_add_fetch(&went_async, 1, __ATOMIC_SEQ_CST);
            while (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE))
                sched_yield();
        } else if (r != (long)&c->a[2]) {
            __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
        }
        if (c->r[0] <= 0 || c->r[1] != 8 || c->buf != pattern(c->off) || c->r[2] != getpid())
            __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
    }
    free(c);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    pthread_t t[THREADS];
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_barrier_init(&registered, NULL, THREADS);
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    /* Reap until every thread finished and every async chain came back. */
    unsigned long idx = 0;
    int live = THREADS;
    while (live || reaped < __atomic_load_n(&went_async, __ATOMIC_SEQ_CST)) {
        struct syslet_uatom *a = __atomic_load_n(&ring[idx], __ATOMIC_ACQUIRE);
        if (a) {
            __atomic_store_n(&ring[idx], NULL, __ATOMIC_RELEASE);
            idx = (idx + 1) % SLOTS;
            reaped++;
            struct chain *c = a->private;
            if (a != &c->a[2])
                errors++;
            __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
            continue;
        }
        if (reaped < __atomic_load_n(&went_async, __ATOMIC_SEQ_CST)) {
            if (syscall(__NR_async_wait, 1UL) < 0)
                errors++;
            continue;
        }
        if (live) {
            /* Nothing pending: see whether the workers are done. */
            int still = 0;
            for (int i = 0; i < THREADS; i++)
                if (t[i] && pthread_tryjoin_np(t[i], NULL) == EBUSY)
                    still++;
                else
                    t[i] = 0;
            live = still;
            if (live)
                usleep(200);
        }
    }
    if (syscall(__NR_async_unregister, &ahu, sizeof ahu) < 0)
        errors++;
    printf("threads=%d register: ok=%lu busy=%lu chains=%d counter=%lu async=%s errors=%lu\n",
           THREADS, reg_ok, reg_busy, CHAINS, counter, went_async == reaped ? "all reaped" : "LOST",
           errors);
    return errors || counter != THREADS * CHAINS || reg_ok != 1;
}
