/* Signals in the waits of personality PERS (1, 5, 6, 7: LATER_ABIS.md 5).
 *
 *   restart restart   SIGALRM every 2 ms, handler with SA_RESTART, while the
 *                     wait waits for a completion a helper thread causes only
 *                     after 10 signals were handled: the wait returns 0.
 *   restart intr      the same handler without SA_RESTART: -1/EINTR; then
 *                     the completion comes and the wait returns 0.
 *   restart thread    async_thread (v5, v6) parks until a signal: -1/EINTR,
 *                     with or without SA_RESTART.
 *
 * SIGALRM is blocked in every other thread of ours (the engine's block all
 * signals), so the handler runs in the waiting thread.  A watchdog thread
 * ends the program (exit 3) if anything hangs. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
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

static volatile sig_atomic_t handled;
static volatile int base = -1;      /* handled when the main thread began to wait */
static int pfd[2];
static char buf[8];

static void on_alarm(int sig) { (void)sig; handled++; }

static void block_alarm(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void *watchdog(void *arg)
{
    (void)arg;
    block_alarm();
    sleep(20);
    fprintf(stderr, "watchdog: still waiting after 20 s\n");
    _exit(3);
}

static void *helper(void *arg)
{
    (void)arg;
    block_alarm();
    while (base < 0 || handled < base + 10)
        usleep(200);
    if (write(pfd[1], "x", 1) != 1)
        _exit(4);
    return NULL;
}

static void timer(int flags, long usec)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = flags;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, usec}, {0, usec}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void timer_off(void)
{
    struct itimerval it;
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);
}

/* ---- a completion to wait for: an async read of the empty pipe ---- */

#if PERS == 1
static struct syslet_uatom *ring[4];
static struct async_head_user ahu = {ring, sizeof ring, -1UL};
static struct syslet_uatom a;
static unsigned long fd_w, buf_w = (unsigned long)buf, len_w = 1;

static int submit(void)
{
    if (syscall(__NR_async_register, &ahu, sizeof ahu))
        return -1;
    fd_w = pfd[0];
    a.flags = SYSLET_ASYNC;
    a.nr = SYS_read;
    a.arg_ptr[0] = &fd_w;
    a.arg_ptr[1] = &buf_w;
    a.arg_ptr[2] = &len_w;
    return syscall(__NR_async_exec, &a) == 0 ? 0 : -1;
}
static long wait_one(void) { return syscall(__NR_async_wait, 1UL); }
static int arrived(void) { return ring[0] == &a; }

#elif PERS == 5 || PERS == 6
static unsigned long long ring[4];
static struct async_head_user h;
static struct syslet_uatom a;
static unsigned long fd_w, buf_w = (unsigned long)buf, len_w = 1;

static int submit(void)
{
#if PERS == 5
    h.completion_ring = (struct syslet_uatom **)ring;
    h.new_thread_stack = (void *)0x10000;
#else
    h.completion_ring_ptr = (uintptr_t)ring;
    h.new_thread_stack = 0x10000;
#endif
    h.ring_size_bytes = sizeof ring;
    fd_w = pfd[0];
    a.flags = SYSLET_ASYNC;
    a.nr = SYS_read;
#if PERS == 5
    a.arg_ptr[0] = &fd_w;
    a.arg_ptr[1] = &buf_w;
    a.arg_ptr[2] = &len_w;
#else
    a.arg_ptr[0] = (uintptr_t)&fd_w;
    a.arg_ptr[1] = (uintptr_t)&buf_w;
    a.arg_ptr[2] = (uintptr_t)&len_w;
#endif
    return syscall(__NR_async_exec, &a, &h) == 0 ? 0 : -1;
}
static long wait_one(void) { return syscall(__NR_async_wait, 1UL, 0UL, &h); }
static int arrived(void) { return ring[0] == (uintptr_t)&a; }

#else
static struct {
    struct syslet_ring hdr;
    struct syslet_completion comp[4];
} ring __attribute__((aligned(8)));

static int submit(void)
{
    static char stack[256];
    struct indirect_registers g = {SYS_read, (unsigned long)pfd[0], (unsigned long)buf, 1, 0, 0, 0};
    union indirect_params p;
    memset(&p, 0, sizeof p);
    ring.hdr.elements = 4;
    p.syslet.ring_ptr = (uintptr_t)&ring;
    p.syslet.caller_data = 5;
    p.syslet.frame.ip = (uintptr_t)&submit;
    p.syslet.frame.sp = (uintptr_t)stack;
    long r = syscall(__NR_indirect, &g, &p, sizeof p, 0);
    return r == -1 && errno == ESYSLETPENDING ? 0 : -1;
}
static long wait_one(void) { return syscall(__NR_syslet_ring_wait, &ring, 0UL); }
static int arrived(void) { return ring.hdr.kernel_head == 1 && ring.comp[0].caller_data == 5; }
#endif

static const char *err(long r) { return r == -1 ? strerrorname_np(errno) : "-"; }

int main(int argc, char **argv)
{
    pthread_t wd, hp;
    if (argc != 2)
        return 2;
    pthread_create(&wd, NULL, watchdog, NULL);
    if (pipe(pfd))
        return 1;

    if (strcmp(argv[1], "thread") == 0) {
#if PERS == 5 || PERS == 6
        for (int k = 0; k < 2; k++) {
            timer(k ? SA_RESTART : 0, 2000);
            long r = syscall(__NR_async_thread, NULL, &h);
            timer_off();
            printf("async_thread%s: %ld %s\n", k ? " (SA_RESTART)" : "", r, err(r));
        }
        return 0;
#else
        return 2;
#endif
    }
    if (submit() < 0) {
        printf("submit failed: %s\n", strerrorname_np(errno));
        return 1;
    }
    if (strcmp(argv[1], "restart") == 0) {
        timer(SA_RESTART, 2000);
        pthread_create(&hp, NULL, helper, NULL);
        base = handled;
        long r = wait_one();
        int e = errno, during = handled - base;
        pthread_join(hp, NULL);     /* (it needs the timer: a wait that failed came back early) */
        timer_off();
        errno = e;
        printf("wait, SA_RESTART handler: %ld %s, 10 signals handled before the completion: %d, "
               "entry: %d\n", r, err(r), during >= 10, arrived());
    } else {
        timer(0, 2000);
        base = handled;
        long r = wait_one();
        int e = errno;
        timer_off();
        errno = e;
        printf("wait, handler without SA_RESTART: %ld %s, handled: %d\n", r, err(r), handled > base);
        if (write(pfd[1], "x", 1) != 1)
            return 1;
        r = wait_one();
        printf("wait after the completion: %ld %s, entry: %d\n", r, err(r), arrived());
    }
    return 0;
}
