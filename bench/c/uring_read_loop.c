/* Reference loops for bench/bench_compat.py: 4 KiB random reads on one file.
 *
 *   uring_read_loop uring FILE NREADS DEPTH SEED
 *       liburing, queue depth DEPTH: per batch DEPTH plain IORING_OP_READ
 *       SQEs at random 4 KiB-aligned offsets, one io_uring_submit_and_wait
 *       (DEPTH), reap every CQE (res must be 4096).
 *   uring_read_loop uring-linked FILE NREADS DEPTH SEED
 *       the same, but the DEPTH SQEs of a batch are chained with
 *       IOSQE_IO_HARDLINK (what a 32-atom syslet becomes): isolates the
 *       kernel's cost of running linked requests one after another.
 *   uring_read_loop pread FILE NREADS SEED
 *       a plain pread() loop over the same kind of offsets.
 *
 * Prints "reads_per_sec=<f> ns_per_read=<f> reads=<n> cpu_s=<f> wall_s=<f>"
 * on stdout; only the loop is timed (open, ring setup and buffers are not);
 * cpu_s is the process CPU time of the loop (CLOCK_PROCESS_CPUTIME_ID).
 * Built by the bench: gcc -O2 uring_read_loop.c liburing.a
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BS 4096

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

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu0;

static void report(double dt, long n)
{
    double cpu = cpu_now() - cpu0;
    printf("reads_per_sec=%.1f ns_per_read=%.1f reads=%ld cpu_s=%.6f wall_s=%.6f\n",
           n / dt, dt * 1e9 / n, n, cpu, dt);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s uring|uring-linked FILE NREADS DEPTH SEED | pread FILE NREADS SEED\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    struct stat st;
    fstat(fd, &st);
    uint64_t nblocks = (uint64_t)st.st_size / BS;
    if (!nblocks) {
        fprintf(stderr, "file too small\n");
        return 1;
    }
    long nreads = atol(argv[3]);

    if (!strcmp(mode, "pread")) {
        rng = strtoull(argv[4], NULL, 0) | 1;
        char *buf = aligned_alloc(BS, BS);
        cpu0 = cpu_now();
        double t0 = now();
        for (long i = 0; i < nreads; i++) {
            off_t off = (off_t)(xorshift() % nblocks) * BS;
            if (pread(fd, buf, BS, off) != BS) {
                fprintf(stderr, "short pread\n");
                return 1;
            }
        }
        report(now() - t0, nreads);
        return 0;
    }

    int linked = !strcmp(mode, "uring-linked");
    if ((strcmp(mode, "uring") && !linked) || argc < 6) {
        fprintf(stderr, "bad mode\n");
        return 2;
    }
    unsigned depth = (unsigned)atoi(argv[4]);
    rng = strtoull(argv[5], NULL, 0) | 1;
    struct io_uring ring;
    int r = io_uring_queue_init(depth * 2, &ring, 0);
    if (r < 0) {
        fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-r));
        return 1;
    }
    char *bufs = aligned_alloc(BS, (size_t)BS * depth);
    memset(bufs, 0, (size_t)BS * depth);
    long done = 0;
    cpu0 = cpu_now();
    double t0 = now();
    while (done < nreads) {
        unsigned n = depth;
        if (nreads - done < n)
            n = (unsigned)(nreads - done);
        for (unsigned i = 0; i < n; i++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            off_t off = (off_t)(xorshift() % nblocks) * BS;
            io_uring_prep_read(sqe, fd, bufs + (size_t)i * BS, BS, off);
            sqe->user_data = i;
            if (linked && i + 1 < n)
                sqe->flags |= IOSQE_IO_HARDLINK;
        }
        r = io_uring_submit_and_wait(&ring, n);
        if (r < 0) {
            fprintf(stderr, "submit_and_wait: %s\n", strerror(-r));
            return 1;
        }
        unsigned got = 0;
        while (got < n) {
            struct io_uring_cqe *cqe;
            unsigned head, k = 0;
            io_uring_for_each_cqe(&ring, head, cqe) {
                if (cqe->res != BS) {
                    fprintf(stderr, "read res %d\n", cqe->res);
                    return 1;
                }
                k++;
            }
            io_uring_cq_advance(&ring, k);
            got += k;
            if (got < n) {
                r = io_uring_wait_cqe_nr(&ring, &cqe, n - got);
                if (r < 0) {
                    fprintf(stderr, "wait: %s\n", strerror(-r));
                    return 1;
                }
            }
        }
        done += n;
    }
    report(now() - t0, done);
    io_uring_queue_exit(&ring);
    return 0;
}
