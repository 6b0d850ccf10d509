/* The calls of personality PERS (1, 5, 6 or 7: built once per personality,
 * with its header) and their C conventions: -1 and errno on failure, errno
 * untouched by every call that succeeds (errno = 1234 before each), through
 * syscall() with the project's numbers, or with USE_FUNCTIONS through
 * libsyslet's functions. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if PERS == 1
#include <syslet.h>
#elif PERS == 5
#include <syslet-v5.h>
#elif PERS == 6
#include <syslet-v6.h>
#else
#include <syslet-v7.h>
#endif

static void show(const char *what, long r)
{
    if (r == -1)
        printf("%s: -1 %s\n", what, strerrorname_np(errno));
    else
        printf("%s: %ld\n", what, r);
}

#define KEPT (errno == 1234)

#if PERS == 1

#ifdef USE_FUNCTIONS
#define REG(h, l)   async_register((h), (l))
#define EXEC(a)     ((long)async_exec(a))
#define WAIT(n)     async_wait(n)
#define UNREG(h, l) async_unregister((h), (l))
#define UMEM(p, i)  ((long)umem_add((p), (i)))
#else
#define REG(h, l)   syscall(__NR_async_register, (h), (l))
#define EXEC(a)     syscall(__NR_async_exec, (a))
#define WAIT(n)     syscall(__NR_async_wait, (n))
#define UNREG(h, l) syscall(__NR_async_unregister, (h), (l))
#define UMEM(p, i)  syscall(__NR_umem_add, (p), (i))
#endif

int main(void)
{
    static struct syslet_uatom *ring[4];
    struct async_head_user h = {ring, sizeof ring, -1UL};
    struct syslet_uatom a;
    long res = 0, r;
    unsigned long word = 40;

    memset(&a, 0, sizeof a);
    a.nr = SYS_getpid;
    a.ret_ptr = &res;
    errno = 1234;
    r = REG(&h, sizeof h);
    printf("register: %ld, errno kept: %d\n", r, KEPT);
    errno = 1234;
    r = EXEC(&a);
    printf("exec getpid: %s, errno kept: %d\n", r == (long)&a ? "final atom" : "?", KEPT);
    a.flags = SYSLET_ASYNC;
    errno = 1234;
    r = EXEC(&a);
    printf("exec ASYNC: %ld, errno kept: %d\n", r, KEPT);
    errno = 1234;
    r = WAIT(1);
    printf("wait 1: %ld, errno kept: %d, ring[0] is the atom: %d\n", r, KEPT, ring[0] == &a);
    errno = 1234;
    r = UMEM(&word, 2);
    printf("umem_add: %ld, errno kept: %d\n", r, KEPT);
    errno = 1234;
    r = UNREG(&h, sizeof h);
    printf("unregister: %ld, errno kept: %d\n", r, KEPT);
    show("exec after unregister", EXEC(&a));
    return 0;
}

#elif PERS == 5 || PERS == 6

#ifdef USE_FUNCTIONS
#if PERS == 5
#define EXEC(a, h)      async_exec_v5((a), (h))
#define WAIT(n, i, h)   async_wait_v5((n), (i), (h))
#define THREAD(e, h)    async_thread_v5((e), (h))
#else
#define EXEC(a, h)      async_exec_v6((a), (h))
#define WAIT(n, i, h)   async_wait_v6((n), (i), (h))
#define THREAD(e, h)    async_thread_v6((e), (h))
#endif
#define UMEM(p, i)      ((long)umem_add((unsigned long *)(p), (i)))
#else
#define EXEC(a, h)      syscall(__NR_async_exec, (a), (h))
#define WAIT(n, i, h)   syscall(__NR_async_wait, (n), (i), (h))
#define THREAD(e, h)    syscall(__NR_async_thread, (e), (h))
#define UMEM(p, i)      syscall(__NR_umem_add, (p), (i))
#endif

#if PERS == 5
#define PTR(p)          ((void *)(p))
#define WORD            unsigned long
#define SET_RING(h, r)  ((h)->completion_ring = (struct syslet_uatom **)(r))
#else
#define PTR(p)          ((unsigned long long)(uintptr_t)(p))
#define WORD            unsigned long long
#define SET_RING(h, r)  ((h)->completion_ring_ptr = (uintptr_t)(r))
#endif
#define ADDR(p)         ((WORD)(uintptr_t)(p))

static void atom(struct syslet_uatom *a, unsigned flags, unsigned nr, long *ret)
{
    memset(a, 0, sizeof *a);
    a->flags = flags;
    a->nr = nr;
    a->ret_ptr = PTR(ret);
}

int main(void)
{
    static WORD ring[4];
    struct async_head_user h;
    struct syslet_uatom a;
    long res = 0, r;

    memset(&h, 0, sizeof h);
    SET_RING(&h, ring);
    h.ring_size_bytes = sizeof ring;
    h.new_thread_stack = PTR(0x10000);

    printf("atom %zu bytes\n", sizeof a);
    atom(&a, 0, SYS_getpid, &res);
    errno = 1234;
    r = EXEC(&a, &h);
    printf("exec getpid: %s, result is pid: %d, errno kept: %d, ring empty: %d\n",
           r == (long)&a ? "final atom" : "?", res == getpid(), KEPT, !ring[0] && !h.kernel_ring_idx);

    atom(&a, SYSLET_ASYNC, SYS_getppid, &res);
    errno = 1234;
    r = EXEC(&a, &h);
    printf("exec ASYNC: %ld, errno kept: %d\n", r, KEPT);
    errno = 1234;
    r = WAIT(1, 0, &h);
    printf("wait 1: %ld, errno kept: %d, ring[0] is the atom: %d, kernel_ring_idx %lu, result is ppid: %d\n",
           r, KEPT, ring[0] == ADDR(&a), (unsigned long)h.kernel_ring_idx, res == getppid());
    ring[0] = 0;
    h.user_ring_idx = 1;
    errno = 1234;
    r = WAIT(0, 3, &h);
    printf("wait 0: %ld, errno kept: %d\n", r, KEPT);

    WORD word = 40;
    errno = 1234;
    r = UMEM(&word, 2);
    printf("umem_add: %ld, word %lu, errno kept: %d\n", r, (unsigned long)word, KEPT);

    show("exec bad head", EXEC(&a, (void *)16));
    h.new_thread_stack = 0;
    show("exec no new_thread_stack", EXEC(&a, &h));
    h.new_thread_stack = PTR(0x10000);
    h.ring_size_bytes = 12;
    show("exec ring 12 bytes", EXEC(&a, &h));
    h.ring_size_bytes = sizeof ring;
    show("exec bad atom", EXEC((void *)16, &h));
    atom(&a, SYSLET_ASYNC | SYSLET_SYNC, SYS_getpid, &res);
    show("exec ASYNC|SYNC", EXEC(&a, &h));
    show("wait user_ring_idx 4", WAIT(1, 4, &h));
    show("wait min 5", WAIT(5, 0, &h));
    show("wait bad head", WAIT(1, 0, (void *)16));
    show("umem_add bad pointer", UMEM((void *)16, 1));
    show("async_thread bad head", THREAD(NULL, (void *)16));
    return 0;
}

#else /* PERS == 7 */

#ifdef USE_FUNCTIONS
#define INDIRECT(r, p, l, f)    syslet_indirect((r), (p), (l), (f))
#define RING_WAIT(r, i)         syslet_ring_wait((struct syslet_ring *)(r), (i))
#else
#define INDIRECT(r, p, l, f)    syscall(__NR_indirect, (r), (p), (l), (f))
#define RING_WAIT(r, i)         syscall(__NR_syslet_ring_wait, (r), (i))
#endif

static struct {
    struct syslet_ring hdr;
    struct syslet_completion comp[4];
} ring __attribute__((aligned(8)));

static void regs_of(struct indirect_registers *g, long nr, long a, long b, long c)
{
    memset(g, 0, sizeof *g);
    g->rax = nr;
    g->rdi = a;
    g->rsi = b;
    g->rdx = c;
}

static void ret_func(void)
{
    syscall(SYS_exit, 0);       /* fio's frame: never run here */
}

int main(void)
{
    static char stack[4096];
    struct indirect_registers g;
    union indirect_params p;
    long r;
    int pfd[2];
    char buf[8];

    ring.hdr.elements = 4;
    memset(&p, 0, sizeof p);
    p.syslet.ring_ptr = (uintptr_t)&ring;
    p.syslet.caller_data = 77;
    p.syslet.frame.ip = (uintptr_t)ret_func;
    p.syslet.frame.sp = (uintptr_t)stack;

    regs_of(&g, SYS_getpid, 0, 0, 0);
    errno = 1234;
    r = INDIRECT(&g, &p, sizeof p, 0);
    printf("indirect getpid: result is pid: %d, errno kept: %d, no entry: %d\n", r == getpid(), KEPT,
           ring.hdr.kernel_head == 0);

    if (pipe(pfd))
        return 1;
    regs_of(&g, SYS_read, pfd[0], (long)buf, sizeof buf);
    errno = 1234;
    r = INDIRECT(&g, &p, sizeof p, 0);
    printf("indirect read of an empty pipe: %ld, errno %s\n", r,
           errno == ESYSLETPENDING ? "ESYSLETPENDING" : strerrorname_np(errno));
    if (write(pfd[1], "abc", 3) != 3)
        return 1;
    errno = 1234;
    r = RING_WAIT(&ring, 0);
    printf("ring_wait: %ld, errno kept: %d, kernel_head %u, status %lld, caller_data %llu\n", r, KEPT,
           ring.hdr.kernel_head, (long long)ring.comp[0].status, ring.comp[0].caller_data);
    errno = 1234;
    r = RING_WAIT(&ring, 7);
    printf("ring_wait other index: %ld, errno kept: %d\n", r, KEPT);

    int fd = open("/proc/self/exe", O_RDONLY);
    regs_of(&g, SYS_lseek, fd, 3L << 30, SEEK_SET);     /* 3 GiB: -(1 << 30) as an int */
    errno = 1234;
    r = INDIRECT(&g, &p, sizeof p, 0);
    printf("indirect lseek 3 GiB: %ld, errno kept: %d\n", r, KEPT);
    close(fd);

    union indirect_params plain;
    memset(&plain, 0, sizeof plain);
    plain.file_flags = O_CLOEXEC | O_NONBLOCK;
    regs_of(&g, SYS_eventfd2, 0, 0, 0);
    errno = 1234;
    r = INDIRECT(&g, &plain, sizeof plain.file_flags, 0);
    printf("indirect eventfd2 O_CLOEXEC|O_NONBLOCK: cloexec %d, nonblock %d, errno kept: %d\n",
           (fcntl((int)r, F_GETFD) & FD_CLOEXEC) != 0, (fcntl((int)r, F_GETFL) & O_NONBLOCK) != 0, KEPT);
    close((int)r);

    show("indirect flags 1", INDIRECT(&g, &p, sizeof p, 1));
    show("indirect bad regs", INDIRECT((void *)16, &p, sizeof p, 0));
    show("indirect paramslen 33", INDIRECT(&g, &p, 33, 0));
    regs_of(&g, SYS_getpid, 0, 0, 0);
    show("indirect plain getpid", INDIRECT(&g, &plain, 4, 0));
    p.syslet.frame.ip = 0;
    show("indirect frame.ip 0", INDIRECT(&g, &p, sizeof p, 0));
    p.syslet.frame.ip = (uintptr_t)ret_func;
    ring.hdr.elements = 3;
    show("indirect elements 3", INDIRECT(&g, &p, sizeof p, 0));
    ring.hdr.elements = 4;
    regs_of(&g, 1004, 0, 0, 0);
    show("indirect nr 1004", INDIRECT(&g, &p, sizeof p, 0));
    show("ring_wait bad ring", RING_WAIT((void *)16, 0));
    return 0;
}
#endif
