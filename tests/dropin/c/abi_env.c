/* Which 2007 x86_64 numbers syscall() takes as syslet calls: each of
 * 280-283 and 286-289 called with the arguments of the personality whose
 * number it was, and a memory effect or errno that only that personality's
 * call gives ("1": it was served as that call, "0": it reached the kernel
 * as today's call -- utimensat, epoll_pwait, signalfd, timerfd_create,
 * timerfd_settime, timerfd_gettime, accept4, signalfd4 -- harmlessly).
 * Own structures (a legacy program's), no project header.  The project's
 * numbers are served whatever SYSLET_COMPAT_ABI says. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct atom88 { unsigned long flags, nr; long *ret_ptr; void *next; unsigned long *arg_ptr[6]; void *priv; };
struct atom80 { uint32_t flags, nr; uint64_t ret_ptr, next, arg_ptr[6], priv; };
struct head64 { uint64_t kernel_ring_idx, user_ring_idx, ring, ring_size_bytes, head_stack, head_ip,
                new_thread_stack, new_thread_ip; };
struct regs7 { uint64_t rax, rdi, rsi, rdx, r10, r8, r9; };
struct params7 { uint64_t ring_ptr, caller_data, ip, sp, pad[4]; };   /* 64 readable bytes */
struct ring7 { uint32_t kernel_head, user_tail, elements, wait_group; uint64_t comp[16]; };

static uint64_t slots[8];
static struct head64 head = {0, 0, (uintptr_t)slots, sizeof slots, 0, 0, 0x10000, 0};
static struct ring7 ring7 __attribute__((aligned(8))) = {0, 0, 8, 0, {0}};
static char stack[4096] __attribute__((aligned(16)));

static void out(int nr, const char *what, int served)
{
    printf("%d %s: %d\n", nr, what, served);
}

int main(void)
{
    long r, res;
    unsigned long word;

    /* v5 */
    struct atom88 a88;
    memset(&a88, 0, sizeof a88);
    a88.nr = SYS_getpid;
    a88.ret_ptr = &res;
    res = 0;
    r = syscall(280, &a88, &head, 0L, 0L, 0L, 0L);
    out(280, "v5 async_exec", r == (long)&a88 && res == getpid());
    r = syscall(281, 0L, 0L, &head, 0L, 0L, 0L);
    out(281, "v5 async_wait", r == 0);
    word = 40;
    r = syscall(282, &word, 5L, 0L, 0L, 0L, 0L);
    out(282, "v5 umem_add", r == 45 && word == 45);
    errno = 0;
    r = syscall(283, 0L, 16L, 0L, 0L, 0L, 0L);
    out(283, "v5 async_thread", r == -1 && errno == EFAULT);

    /* v6 */
    struct atom80 a80;
    memset(&a80, 0, sizeof a80);
    a80.nr = SYS_getpid;
    a80.ret_ptr = (uintptr_t)&res;
    res = 0;
    r = syscall(286, &a80, &head, 0L, 0L, 0L, 0L);
    out(286, "v6 async_exec", r == (long)&a80 && res == getpid());
    r = syscall(287, 0L, 0L, &head, 0L, 0L, 0L);
    out(287, "v6 async_wait", r == 0);
    word = 40;
    r = syscall(288, &word, 5L, 0L, 0L, 0L, 0L);
    out(288, "v6 umem_add", r == 45 && word == 45);
    errno = 0;
    r = syscall(289, 0L, 16L, 0L, 0L, 0L, 0L);
    out(289, "v6 async_thread", r == -1 && errno == EFAULT);

    /* v7 */
    struct regs7 g = {SYS_getpid, 0, 0, 0, 0, 0, 0};
    struct params7 p;
    memset(&p, 0, sizeof p);
    p.ring_ptr = (uintptr_t)&ring7;
    p.ip = (uintptr_t)&main;
    p.sp = (uintptr_t)(stack + sizeof stack);
    r = syscall(286, &g, &p, 32L, 0L, 0L, 0L);
    out(286, "v7 indirect", r == getpid());
    r = syscall(287, &ring7, 1L, 0L, 0L, 0L, 0L);
    out(287, "v7 syslet_ring_wait", r == 0);

    /* the project's numbers: always */
    word = 1;
    printf("1012 umem_add: %d\n", syscall(1012, &word, 1L) == 2);
    printf("1030 indirect: %d\n", syscall(1030, &g, &p, 32L, 0L) == getpid());
    printf("1020 async_exec: %d\n", syscall(1020, &a80, &head) == (long)&a80);
    return 0;
}
