/* A bare liburing loop of random 4 KiB O_DIRECT reads (default depth 32),
 * shaped like examples/randread.c through the drop-in (one io_uring_enter
 * per read submitted, a wait for at least one completion when none is
 * ready), to tell the kernel's part of the completion path from the
 * engine's (docs/benchmarks.md, "The libaio row: where the time goes"), and
 * bench_blocking.py's floor rows: what an io_uring client set up as the
 * syslet contract allows (mode ext) reaches with no library at all.
 *
 *   cc -O2 uring_direct_loop.c -o uring_direct_loop -luring
 *   uring_direct_loop MODE FILE [READS [DEPTH [SEED]]]
 *
 * MODE: plain (wait with no argument), ext (a 2 ms timeout and a signal
 * mask through IORING_ENTER_EXT_ARG, as the engine's caller waits),
 * coop (IORING_SETUP_COOP_TASKRUN), defer (SINGLE_ISSUER | DEFER_TASKRUN,
 * fio's choice; submits with GETEVENTS).  Prints "reads/s: N" and
 * "cpu reads/s: N" (per second of the process's CPU time).
 * Trace it with perf record -a -e irq:irq_handler_entry,block:block_rq_issue,
 * block:block_rq_complete,syscalls:sys_{enter,exit}_io_uring_enter,
 * sched:sched_switch and bench/trace_rounds.py.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 1024
#define BS 4096

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static unsigned long long rng_state = 88172645463325252ULL;
static unsigned long long rng(void)
{
    unsigned long long x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s plain|ext|coop|defer FILE [READS [DEPTH [SEED]]]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long n = argc > 3 ? atol(argv[3]) : 100000;
    int depth = argc > 4 ? atoi(argv[4]) : 32;
    if (argc > 5)
        rng_state ^= strtoull(argv[5], NULL, 0) * 0x9E3779B97F4A7C15ULL;
    if (n < 1 || depth < 1 || depth > MAX_DEPTH) {
        fprintf(stderr, "READS >= 1, 1 <= DEPTH <= %d\n", MAX_DEPTH);
        return 2;
    }
    int defer = !strcmp(mode, "defer"), ext = !strcmp(mode, "ext");
    int fd = open(argv[2], O_RDONLY | O_DIRECT);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < BS) {
        perror(argv[2]);
        return 1;
    }
    long nb = st.st_size / BS;
    struct io_uring ring;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 2048;
    if (!strcmp(mode, "coop"))
        p.flags |= IORING_SETUP_COOP_TASKRUN;
    if (defer)
        p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int r = io_uring_queue_init_params(256, &ring, &p);
    if (r < 0) {
        fprintf(stderr, "io_uring_queue_init_params: %s\n", strerror(-r));
        return 1;
    }
    char *bufs;
    if (posix_memalign((void **)&bufs, 4096, (size_t)depth * BS))
        return 1;
    sigset_t mask;
    sigemptyset(&mask);
    long issued = 0, done = 0;
    int free_ids[MAX_DEPTH], nfree = 0;
    for (int i = 0; i < depth; i++)
        free_ids[nfree++] = i;
    double t0 = now(), c0 = cpu_s();
    while (done < n) {
        while (nfree && issued < n) {      /* one enter per read, as the drop-in */
            int id = free_ids[--nfree];
            struct io_uring_sqe *s = io_uring_get_sqe(&ring);
            io_uring_prep_read(s, fd, bufs + id * BS, BS, (rng() % nb) * BS);
            s->user_data = id;
            if (defer)
                io_uring_submit_and_get_events(&ring);
            else
                io_uring_submit(&ring);
            issued++;
        }
        if (io_uring_cq_ready(&ring) == 0) {
            if (ext) {
                struct __kernel_timespec ts = {0, 2000000};
                struct io_uring_getevents_arg arg;
                memset(&arg, 0, sizeof arg);
                arg.ts = (unsigned long long)(uintptr_t)&ts;
                arg.sigmask = (unsigned long long)(uintptr_t)&mask;
                arg.sigmask_sz = _NSIG / 8;
                syscall(__NR_io_uring_enter, ring.ring_fd, 0, 1,
                        IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
            } else {
                syscall(__NR_io_uring_enter, ring.ring_fd, 0, 1, IORING_ENTER_GETEVENTS, NULL,
                        _NSIG / 8);
            }
        }
        struct io_uring_cqe *c[MAX_DEPTH];
        unsigned k = io_uring_peek_batch_cqe(&ring, c, depth);
        for (unsigned i = 0; i < k; i++) {
            if (c[i]->res != BS) {
                fprintf(stderr, "read: %d\n", c[i]->res);
                return 1;
            }
            free_ids[nfree++] = (int)c[i]->user_data;
        }
        io_uring_cq_advance(&ring, k);
        done += k;
    }
    double t1 = now(), c1 = cpu_s();
    printf("reads/s: %.0f\ncpu reads/s: %.0f\n", n / (t1 - t0), n / (c1 - c0 > 1e-9 ? c1 - c0 : 1e-9));
    io_uring_queue_exit(&ring);
    return 0;
}
