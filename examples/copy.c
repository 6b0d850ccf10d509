/* copy.c — a file copier written as one syslet loop (syslet ABI v1).
 *
 *   A: pread64(in,  buf, CHUNK, *off)  -> n     STOP_ON_NON_POSITIVE  next B
 *   B: pwrite64(out, buf, n,    *off)  -> w     STOP_ON_NEGATIVE      next C
 *   C: umem_add(&off, n)               -> off'                        next D
 *   D: umem_add(&chunks, 1)            -> k                           next A   (back edge)
 *
 * Arguments are passed by pointer and read when each atom runs, so B sees the
 * byte count A just stored and every pread/pwrite sees the offset C advanced.
 * The loop ends at A: result 0 at end of file (success), < 0 on an error.
 * One async_exec runs the whole copy; if it goes async its final atom (A)
 * appears in the completion ring.
 *
 * Build (calls libsyslet's exported functions):
 *     cc $(python -m compat config --cflags) copy.c -o copy $(python -m compat config --libs)
 * or the 2007 way, through syscall() with our numbers, for LD_PRELOAD:
 *     cc $(python -m compat config --cflags) -DSYSLET_USE_SYSCALL copy.c -o copy
 *     LD_PRELOAD=$(python -m compat config --preload) ./copy SRC DST
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <syslet.h>

#ifdef SYSLET_USE_SYSCALL
#define sys_async_register(h)   syscall(__NR_async_register, (h), sizeof *(h))
#define sys_async_exec(a)       ((struct syslet_uatom *)syscall(__NR_async_exec, (a)))
#define sys_async_wait(n)       syscall(__NR_async_wait, (unsigned long)(n))
#define sys_async_unregister(h) syscall(__NR_async_unregister, (h), sizeof *(h))
#else
#define sys_async_register(h)   async_register((h), sizeof *(h))
#define sys_async_exec(a)       async_exec(a)
#define sys_async_wait(n)       async_wait(n)
#define sys_async_unregister(h) async_unregister((h), sizeof *(h))
#endif

#define CHUNK (64 * 1024)

static void init_atom(struct syslet_uatom *a, unsigned long flags, unsigned long nr,
                      long *ret, struct syslet_uatom *next,
                      unsigned long *a0, unsigned long *a1, unsigned long *a2, unsigned long *a3)
{
    memset(a, 0, sizeof *a);
    a->flags = flags;
    a->nr = nr;
    a->ret_ptr = ret;
    a->next = next;
    a->arg_ptr[0] = a0;
    a->arg_ptr[1] = a1;
    a->arg_ptr[2] = a2;
    a->arg_ptr[3] = a3;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SRC DST\n", argv[0]);
        return 2;
    }
    int in = open(argv[1], O_RDONLY);
    if (in < 0) {
        fprintf(stderr, "copy: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    int out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        fprintf(stderr, "copy: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }

    static struct syslet_uatom *ring[4];
    static struct async_head_user ahu = {ring, sizeof ring, -1UL};
    if (sys_async_register(&ahu) < 0) {
        fprintf(stderr, "copy: async_register: %s\n", strerror(errno));
        return 1;
    }

    /* The argument words (native longs, as the ABI wants). */
    static char buf[CHUNK];
    unsigned long fd_in = (unsigned long)in, fd_out = (unsigned long)out;
    unsigned long buf_addr = (unsigned long)buf, chunk = CHUNK;
    unsigned long off = 0, chunks = 0, one = 1;
    unsigned long off_addr = (unsigned long)&off, chunks_addr = (unsigned long)&chunks;
    long n = 0, w = 0, off_new = 0, k = 0;

    struct syslet_uatom A, B, C, D;
    init_atom(&A, SYSLET_STOP_ON_NON_POSITIVE, SYS_pread64, &n, &B,
              &fd_in, &buf_addr, &chunk, &off);
    init_atom(&B, SYSLET_STOP_ON_NEGATIVE, SYS_pwrite64, &w, &C,
              &fd_out, &buf_addr, (unsigned long *)&n, &off);
    init_atom(&C, 0, __NR_umem_add, &off_new, &D, &off_addr, (unsigned long *)&n, NULL, NULL);
    init_atom(&D, 0, __NR_umem_add, &k, &A, &chunks_addr, &one, NULL, NULL);

    struct syslet_uatom *final = sys_async_exec(&A);
    if (SYSLET_EXEC_FAILED(final)) {
        fprintf(stderr, "copy: async_exec: %s\n", strerror(errno));
        return 1;
    }
    if (final == NULL) {
        /* Went async: wait for the one ring entry and take it. */
        if (sys_async_wait(1) < 0) {
            fprintf(stderr, "copy: async_wait: %s\n", strerror(errno));
            return 1;
        }
        final = ring[0];
        ring[0] = NULL;
    }
    if (sys_async_unregister(&ahu) < 0) {
        fprintf(stderr, "copy: async_unregister: %s\n", strerror(errno));
        return 1;
    }
    const char *name = final == &A ? "pread64" : final == &B ? "pwrite64" : "?";
    if (final != &A || n != 0) {
        long r = final == &B ? w : n;
        fprintf(stderr, "copy: stopped at %s: %s\n", name, r < 0 ? strerror((int)-r) : "short write");
        return 1;
    }
    if (fsync(out) < 0 || close(out) < 0) {
        fprintf(stderr, "copy: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    close(in);
    printf("copied %lu bytes in %lu chunks; final atom %s, result %ld\n", off, chunks, name, n);
    return 0;
}
