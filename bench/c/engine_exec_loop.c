/* The syslet engine's exec path timed from C, without Python (analysis for
 * bench/bench_compat.py --breakdown).  Built by the bench from the engine's
 * own sources: gcc -O2 engine_exec_loop.c compat/csrc/engine.c
 * compat/csrc/guard.c uring_shim/csrc/shim.c liburing.a -lpthread.
 *
 *   engine_exec_loop MODE BACKEND FILE NREADS SEED
 *     MODE    single   one pread64 atom per sl_exec (offset word rewritten)
 *             batch    32 pread64 atoms chained by next, one sl_exec per 32
 *             nowait   plain preadv2(RWF_NOWAIT) loop (the engine's inline call)
 *             pread    plain pread loop
 *     BACKEND 1 = io_uring, 0 = pool only
 *
 * Prints "ns_per_read=<f> cpu_ns_per_read=<f> user_ns_per_read=<f> reads=<n>
 * sync=<n> async=<n>" (wall, process CPU and user-mode CPU time of the loop
 * only; the user time is the engine's own share, the kernel's excluded).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "engine.h"

#define BS 4096
#define D 32

static uint64_t rng;
static inline uint64_t xorshift(void)
{
    uint64_t x = rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* User-mode CPU time alone: the engine's own work, without the kernel's. */
static double user_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6;
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

struct atom { uint64_t flags, nr, ret_ptr, next, arg[6], priv; };

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s single|batch|nowait|pread BACKEND FILE NREADS SEED\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int backend = atoi(argv[2]);
    int fd = open(argv[3], O_RDONLY);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    struct stat st;
    fstat(fd, &st);
    uint64_t nblocks = (uint64_t)st.st_size / BS;
    long n = atol(argv[4]);
    rng = strtoull(argv[5], NULL, 0) | 1;
    char *bufs = aligned_alloc(BS, (size_t)BS * D);
    memset(bufs, 0, (size_t)BS * D);
    long nsync = 0, nasync = 0;
    double t0, dt, c0, u0;

    if (!strcmp(mode, "pread") || !strcmp(mode, "nowait")) {
        int nw = !strcmp(mode, "nowait");
        c0 = cpu_now();
        u0 = user_now();
        t0 = now();
        for (long i = 0; i < n; i++) {
            off_t off = (off_t)(xorshift() % nblocks) * BS;
            struct iovec iov = {bufs, BS};
            ssize_t r = nw ? preadv2(fd, &iov, 1, off, RWF_NOWAIT) : pread(fd, bufs, BS, off);
            if (r < 0 && nw && errno == EAGAIN) {   /* the engine would go to the ring */
                nasync++;
                r = pread(fd, bufs, BS, off);
            }
            if (r != BS) {
                fprintf(stderr, "read: %zd\n", r);
                return 1;
            }
        }
        dt = now() - t0;
        printf("ns_per_read=%.1f cpu_ns_per_read=%.1f user_ns_per_read=%.1f reads=%ld sync=%ld async=%ld\n",
               dt * 1e9 / n, (cpu_now() - c0) * 1e9 / n, (user_now() - u0) * 1e9 / n, n,
               n - nasync, nasync);
        return 0;
    }

    int err;
    struct sl_ctx *c = sl_ctx_new(backend, 256, &err);
    if (!c) {
        fprintf(stderr, "sl_ctx_new: %s\n", strerror(-err));
        return 1;
    }
    enum { SLOTS = 256 };
    static uint64_t ring[SLOTS];
    unsigned ci = 0;
    if ((err = sl_register(c, (uint64_t)(uintptr_t)ring, sizeof ring, (uint64_t)-1)) < 0) {
        fprintf(stderr, "sl_register: %s\n", strerror(-err));
        return 1;
    }
    static struct atom atoms[D];
    static int64_t rets[D];
    static uint64_t offs[D], bufw[D];
    uint64_t fdw = (uint64_t)fd, lenw = BS;
    for (int i = 0; i < D; i++) {
        bufw[i] = (uint64_t)(uintptr_t)(bufs + (size_t)i * BS);
        atoms[i].nr = 17;
        atoms[i].ret_ptr = (uint64_t)(uintptr_t)&rets[i];
        atoms[i].next = i + 1 < D ? (uint64_t)(uintptr_t)&atoms[i + 1] : 0;
        atoms[i].arg[0] = (uint64_t)(uintptr_t)&fdw;
        atoms[i].arg[1] = (uint64_t)(uintptr_t)&bufw[i];
        atoms[i].arg[2] = (uint64_t)(uintptr_t)&lenw;
        atoms[i].arg[3] = (uint64_t)(uintptr_t)&offs[i];
    }
    int batch = !strcmp(mode, "batch");
    uint64_t head = (uint64_t)(uintptr_t)(batch ? &atoms[0] : &atoms[D - 1]);
    unsigned per = batch ? D : 1;
    long iters = n / per;
    c0 = cpu_now();
    u0 = user_now();
    t0 = now();
    for (long it = 0; it < iters; it++) {
        if (batch)
            for (int i = 0; i < D; i++)
                offs[i] = (xorshift() % nblocks) * BS;
        else
            offs[D - 1] = (xorshift() % nblocks) * BS;
        int64_t r = sl_exec(c, head);
        if (r < 0) {
            fprintf(stderr, "sl_exec: %s\n", strerror((int)-r));
            return 1;
        }
        if (r) {
            nsync++;
            continue;
        }
        nasync++;
        for (;;) {                  /* went async: take its ring entry */
            uint64_t v = __atomic_load_n(&ring[ci], __ATOMIC_ACQUIRE);
            if (v) {
                __atomic_store_n(&ring[ci], 0, __ATOMIC_RELAXED);
                ci = (ci + 1) % SLOTS;
                break;
            }
            sl_wait(c, 1, 100000000);
        }
    }
    dt = now() - t0;
    double cpu = cpu_now() - c0, user = user_now() - u0;
    long done = iters * per;
    printf("ns_per_read=%.1f cpu_ns_per_read=%.1f user_ns_per_read=%.1f reads=%ld sync=%ld async=%ld\n",
           dt * 1e9 / done, cpu * 1e9 / done, user * 1e9 / done, done, nsync, nasync);
    sl_unregister(c, (uint64_t)(uintptr_t)ring, sizeof ring, -1);
    sl_ctx_free(c, 1);
    return 0;
}
