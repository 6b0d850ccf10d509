/* fork(): the child gets a fresh context on first use (the parent's is
 * dropped untouched), must register its own ring, and works; the parent's
 * syslet in flight across the fork completes in the parent only. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <syslet.h>

static struct syslet_uatom *ring[8];
static struct async_head_user ahu = {ring, sizeof ring, -1UL};
static unsigned long ring_idx;

static void atom(struct syslet_uatom *a, unsigned long flags, unsigned long nr, long *ret,
                 unsigned long *a0, unsigned long *a1)
{
    memset(a, 0, sizeof *a);
    a->flags = flags;
    a->nr = nr;
    a->ret_ptr = ret;
    a->arg_ptr[0] = a0;
    a->arg_ptr[1] = a1;
}

static struct syslet_uatom *take(void)
{
    if (syscall(__NR_async_wait, 1UL) < 0)
        return NULL;
    struct syslet_uatom *a = ring[ring_idx];
    ring[ring_idx] = NULL;
    ring_idx = (ring_idx + 1) % 8;
    return a;
}

static const char *err(long r)
{
    return r == -1 ? strerrorname_np(errno) : "ok";
}

int main(void)
{
    struct syslet_uatom a, slow;
    long res = 0, slow_res = 1;
    struct timespec ts = {0, 150 * 1000 * 1000};
    unsigned long ts_addr = (unsigned long)&ts;

    printf("parent: register %s\n", err(syscall(__NR_async_register, &ahu, sizeof ahu)));
    /* In flight across the fork: a 150 ms nanosleep, forced async. */
    atom(&slow, SYSLET_ASYNC, SYS_nanosleep, &slow_res, &ts_addr, NULL);
    long r = syscall(__NR_async_exec, &slow);
    printf("parent: slow syslet %s\n", r == 0 ? "went async" : "?");
    fflush(stdout);

    pid_t pid = fork();
    if (pid == 0) {
        atom(&a, 0, SYS_getpid, &res, NULL, NULL);
        r = syscall(__NR_async_exec, &a);
        printf("child: exec before register: %s\n", err(r));
        /* The parent's ring memory was copied; the slow syslet is the
         * parent's: nothing will ever land here for it. */
        printf("child: register %s\n", err(syscall(__NR_async_register, &ahu, sizeof ahu)));
        atom(&a, SYSLET_ASYNC, SYS_getpid, &res, NULL, NULL);
        r = syscall(__NR_async_exec, &a);
        struct syslet_uatom *got = r == 0 ? take() : NULL;
        printf("child: async getpid: %s, result is my pid: %d\n",
               got == &a ? "ring entry" : "?", res == getpid());
        printf("child: unregister %s\n", err(syscall(__NR_async_unregister, &ahu, sizeof ahu)));
        printf("child: slow result untouched: %d\n", slow_res == 1);
        fflush(stdout);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("parent: child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    struct syslet_uatom *got = take();
    printf("parent: slow syslet %s, result %ld\n", got == &slow ? "ring entry" : "?", slow_res);
    atom(&a, SYSLET_ASYNC, SYS_getpid, &res, NULL, NULL);
    r = syscall(__NR_async_exec, &a);
    got = r == 0 ? take() : NULL;
    printf("parent: async getpid: %s, result is my pid: %d\n",
           got == &a ? "ring entry" : "?", res == getpid());
    printf("parent: unregister %s\n", err(syscall(__NR_async_unregister, &ahu, sizeof ahu)));
    return 0;
}
