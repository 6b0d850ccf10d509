/* C reference loops for bench_shim.py: random 4 KiB reads of a page-cached
 * file, (a) plain pread(), (b) io_uring batches of QD READs with one
 * io_uring_submit_and_wait per batch.  Prints "pread <ops/s>" and
 * "uring <ops/s>".  Build: gcc -O2 read_qd.c -o read_qd -luring
 * Usage: read_qd PATH NOPS QD SEED */
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s PATH NOPS QD SEED\n", argv[0]);
        return 2;
    }
    unsigned nops = (unsigned)atoi(argv[2]), qd = (unsigned)atoi(argv[3]);
    srand((unsigned)atoi(argv[4]));
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    off_t size = lseek(fd, 0, SEEK_END);
    unsigned long blocks = (unsigned long)(size / 4096);
    off_t *offs = malloc(nops * sizeof *offs);
    char *buf = aligned_alloc(4096, (size_t)qd * 4096);
    for (unsigned i = 0; i < nops; i++)
        offs[i] = (off_t)(((unsigned long)rand() * 2654435761UL) % blocks) * 4096;

    double t0 = now();
    for (unsigned i = 0; i < nops; i++)
        if (pread(fd, buf, 4096, offs[i]) != 4096) { perror("pread"); return 1; }
    double t1 = now();
    printf("pread %.0f\n", nops / (t1 - t0));

    struct io_uring ring;
    if (io_uring_queue_init(qd, &ring, 0) < 0) { perror("queue_init"); return 1; }
    t0 = now();
    for (unsigned b = 0; b + qd <= nops; b += qd) {
        for (unsigned i = 0; i < qd; i++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_read(sqe, fd, buf + (size_t)i * 4096, 4096, offs[b + i]);
            sqe->user_data = b + i;
        }
        io_uring_submit_and_wait(&ring, qd);
        struct io_uring_cqe *cqes[256];
        unsigned got = 0;
        while (got < qd) {
            unsigned n = io_uring_peek_batch_cqe(&ring, cqes, qd - got);
            for (unsigned i = 0; i < n; i++)
                if (cqes[i]->res != 4096) { fprintf(stderr, "res %d\n", cqes[i]->res); return 1; }
            io_uring_cq_advance(&ring, n);
            got += n;
            if (got < qd) io_uring_wait_cqe(&ring, cqes);
        }
    }
    t1 = now();
    printf("uring %.0f\n", (nops / qd * qd) / (t1 - t0));
    io_uring_queue_exit(&ring);
    return 0;
}
