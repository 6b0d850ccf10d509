/* What the first `ret` after a system call costs on this machine (analysis
 * for bench/bench_dropin.py and docs/decisions.md D22).
 *
 *   ret_after_syscall FILE [BLOCKS]
 *
 * The same system call -- a pread64 of a random 4 KiB block of FILE, which
 * should be page-cached -- in two small assembly functions: one returns
 * with `ret`, the other with pop + jmp (what libsyslet's x86_64 exec entry
 * does).  BLOCKS (default 41) blocks of 20000 calls each, alternating, in
 * one process.  Prints "ret_ns=<median ns per call> jmp_ns=<...>
 * penalty_ns=<difference>".  On a kernel that leaves the return predictor
 * pointing at its own text (AMD SRSO "Safe RET") the penalty is a large part
 * of a cached read; elsewhere it is about 0.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#if defined(__x86_64__)
/* pread64(fd, buf, len, off): the C argument registers are the system
 * call's, but for the fourth (rcx -> r10) */
long sys_ret(long fd, void *buf, long len, long off);
long sys_jmp(long fd, void *buf, long len, long off);
__asm__(".text\n"
        ".globl sys_ret\n.type sys_ret, @function\n"
        "sys_ret:\n"
        "    movq %rcx, %r10\n"
        "    movl $17, %eax\n"         /* pread64 */
        "    syscall\n"
        "    ret\n"
        ".size sys_ret, .-sys_ret\n"
        ".globl sys_jmp\n.type sys_jmp, @function\n"
        "sys_jmp:\n"
        "    movq %rcx, %r10\n"
        "    movl $17, %eax\n"
        "    syscall\n"
        "    popq %rcx\n"
        "    jmp *%rcx\n"
        ".size sys_jmp, .-sys_jmp\n");

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int blocks = argc > 2 ? atoi(argv[2]) : 41;
    int fd = argc > 1 ? open(argv[1], O_RDONLY) : -1;
    struct stat st;
    if (argc < 2 || blocks < 1 || blocks > 1001) {
        fprintf(stderr, "usage: %s FILE [BLOCKS (1-1001)]\n", argv[0]);
        return 2;
    }
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 4096) {
        perror(argv[1]);
        return 2;
    }
    uint64_t nblk = (uint64_t)st.st_size / 4096, rng = 88172645463325252ULL;
    static char buf[4096] __attribute__((aligned(4096)));
    enum { N = 20000 };
    double *t[2];
    t[0] = calloc(blocks, sizeof(double));
    t[1] = calloc(blocks, sizeof(double));
    if (!t[0] || !t[1])
        return 1;
    long bad = 0;
    for (int b = 0; b < blocks; b++)
        for (int k = 0; k < 2; k++) {
            int m = (b & 1) ? 1 - k : k;
            double t0 = now();
            for (int i = 0; i < N; i++) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                long off = (long)(rng % nblk) * 4096;
                bad += (m ? sys_jmp(fd, buf, 4096, off) : sys_ret(fd, buf, 4096, off)) != 4096;
            }
            t[m][b] = (now() - t0) / N * 1e9;
        }
    qsort(t[0], blocks, sizeof(double), cmp);
    qsort(t[1], blocks, sizeof(double), cmp);
    double r = t[0][blocks / 2], j = t[1][blocks / 2];
    printf("ret_ns=%.1f jmp_ns=%.1f penalty_ns=%.1f\n", r, j, r - j);
    if (bad)
        fprintf(stderr, "ret_after_syscall: %ld short or failed reads\n", bad);
    return bad != 0;
}
#else
int main(void)
{
    printf("ret_ns=0 jmp_ns=0 penalty_ns=0\n");
    return 0;
}
#endif
