/* branch.c — a syslet that branches on a failed open (syslet ABI v1).
 *
 * The atoms sit in one array, because SYSLET_SKIP_TO_NEXT_ON_STOP continues
 * at the *linearly next* atom (this atom's address + sizeof(struct syslet_uatom)):
 *
 *   [0] open(primary)  -> fd   STOP_ON_NEGATIVE|SKIP_TO_NEXT_ON_STOP  next [3]
 *   [1] umem_add(&fallbacks, 1)                                       next [2]
 *   [2] open(fallback) -> fd   STOP_ON_NEGATIVE                       next [3]
 *   [3] read(fd, buf, size) -> n   STOP_ON_NEGATIVE                   next [4]
 *   [4] close(fd)      -> c                                           next NULL
 *
 * primary opens: [0] -> [3] -> [4].  primary fails: the stop holds, so
 * instead of ending at [0] the syslet goes on at [1] (the failure branch
 * counts itself, then opens the fallback).  Both fail: [2] stops (no SKIP) and
 * is the final atom.  Results are stored (through ret_ptr) before the stop
 * test, and [3] and [4] read the fd word that [0] or [2] stored, when they run.
 *
 *   cc $(python -m compat config --cflags) branch.c -o branch $(python -m compat config --libs)
 *   cc $(python -m compat config --cflags) -DSYSLET_USE_SYSCALL branch.c -o branch   # for LD_PRELOAD
 *   ./branch PRIMARY FALLBACK
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
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

static const char *result_str(long r)
{
    return r < 0 ? strerror((int)-r) : "ok";
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PRIMARY FALLBACK\n", argv[0]);
        return 2;
    }
    static struct syslet_uatom *ring[4];
    static struct async_head_user ahu = {ring, sizeof ring, -1UL};
    if (sys_async_register(&ahu) < 0) {
        fprintf(stderr, "branch: async_register: %s\n", strerror(errno));
        return 1;
    }

    static char buf[256];
    unsigned long primary = (unsigned long)argv[1], fallback = (unsigned long)argv[2];
    unsigned long rdonly = O_RDONLY, buf_addr = (unsigned long)buf, size = sizeof buf - 1;
    unsigned long fallbacks = 0, fallbacks_addr = (unsigned long)&fallbacks, one = 1;
    long fd = -1, n = 0, closed = 1, counted = 0;

    struct syslet_uatom at[5];
    memset(at, 0, sizeof at);
    at[0].flags = SYSLET_STOP_ON_NEGATIVE | SYSLET_SKIP_TO_NEXT_ON_STOP;
    at[0].nr = SYS_open;
    at[0].ret_ptr = &fd;
    at[0].next = &at[3];
    at[0].arg_ptr[0] = &primary;
    at[0].arg_ptr[1] = &rdonly;

    at[1].nr = __NR_umem_add;
    at[1].ret_ptr = &counted;
    at[1].next = &at[2];
    at[1].arg_ptr[0] = &fallbacks_addr;
    at[1].arg_ptr[1] = &one;

    at[2].flags = SYSLET_STOP_ON_NEGATIVE;
    at[2].nr = SYS_open;
    at[2].ret_ptr = &fd;
    at[2].next = &at[3];
    at[2].arg_ptr[0] = &fallback;
    at[2].arg_ptr[1] = &rdonly;

    at[3].flags = SYSLET_STOP_ON_NEGATIVE;
    at[3].nr = SYS_read;
    at[3].ret_ptr = &n;
    at[3].next = &at[4];
    at[3].arg_ptr[0] = (unsigned long *)&fd;
    at[3].arg_ptr[1] = &buf_addr;
    at[3].arg_ptr[2] = &size;

    at[4].nr = SYS_close;
    at[4].ret_ptr = &closed;
    at[4].arg_ptr[0] = (unsigned long *)&fd;

    struct syslet_uatom *final = sys_async_exec(&at[0]);
    if (SYSLET_EXEC_FAILED(final)) {
        fprintf(stderr, "branch: async_exec: %s\n", strerror(errno));
        return 1;
    }
    if (final == NULL) {
        if (sys_async_wait(1) < 0) {
            fprintf(stderr, "branch: async_wait: %s\n", strerror(errno));
            return 1;
        }
        final = ring[0];
        ring[0] = NULL;
    }
    sys_async_unregister(&ahu);

    int idx = (int)(final - at);
    printf("final atom: [%d]; branch: %s\n", idx, fallbacks ? "fallback" : "primary");
    if (idx == 2) {
        printf("neither file opens: %s\n", result_str(fd));
        return 1;
    }
    if (idx == 3) {
        printf("read failed: %s\n", result_str(n));
        return 1;
    }
    buf[n > 0 ? n : 0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    printf("read %ld bytes; first line: %s\n", n, buf);
    printf("close: %s\n", result_str(closed));
    return 0;
}
