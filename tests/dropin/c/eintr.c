/* async_wait and signals: a handled signal interrupts it (-1/EINTR) unless
 * its handler has SA_RESTART, which restarts the wait (the 2007
 * -ERESTARTSYS, LATER_ABIS.md 5); an ignored one does not; completions wake
 * it at once (no polling delay). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <syslet.h>

static struct syslet_uatom *ring[8];
static struct async_head_user ahu = {ring, sizeof ring, -1UL};
static volatile sig_atomic_t handled;

static void on_alarm(int sig) { (void)sig; handled++; }

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void arm_alarm(int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = flags;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {0, 100 * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void *raise_later(void *arg)
{
    (void)arg;
    usleep(50 * 1000);
    kill(getpid(), SIGUSR2);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(void)
{
    if (syscall(__NR_async_register, &ahu, sizeof ahu) < 0)
        return 1;
    handled = 0;
    arm_alarm(0);
    double t0 = now();
    long r0 = syscall(__NR_async_wait, 1UL);
    int e = errno;
    double dt = now() - t0;
    printf("wait with nothing in flight, SIGALRM handler: %ld %s, handled %d, waited >= 90 ms: %d\n",
           r0, r0 == -1 ? strerrorname_np(e) : "", (int)handled, dt >= 0.09);

    /* SA_RESTART: the alarm at 100 ms restarts the wait, which ends with
     * the completion of a 300 ms syslet. */
    {
        struct timespec ts3 = {0, 300 * 1000 * 1000};
        unsigned long ts3_addr = (unsigned long)&ts3;
        long res3 = 1;
        struct syslet_uatom a3;
        memset(&a3, 0, sizeof a3);
        a3.flags = SYSLET_ASYNC;
        a3.nr = SYS_nanosleep;
        a3.ret_ptr = &res3;
        a3.arg_ptr[0] = &ts3_addr;
        handled = 0;
        t0 = now();
        long x = syscall(__NR_async_exec, &a3);
        arm_alarm(SA_RESTART);
        long w3 = syscall(__NR_async_wait, 1UL);
        dt = now() - t0;
        printf("300 ms syslet, SIGALRM handler (SA_RESTART) at 100 ms: exec %ld, wait %ld, handled %d, "
               "waited >= 290 ms: %d, ring entry %d, result %ld\n", x, w3, (int)handled, dt >= 0.29,
               ring[0] == &a3, res3);
        ring[0] = NULL;
    }

    /* An ignored signal does not interrupt; the completion ends the wait. */
    signal(SIGUSR2, SIG_IGN);
    struct timespec ts = {0, 200 * 1000 * 1000};
    unsigned long ts_addr = (unsigned long)&ts;
    long res = 1;
    struct syslet_uatom a;
    memset(&a, 0, sizeof a);
    a.flags = SYSLET_ASYNC;
    a.nr = SYS_nanosleep;
    a.ret_ptr = &res;
    a.arg_ptr[0] = &ts_addr;
    pthread_t t;
    long r = syscall(__NR_async_exec, &a);
    pthread_create(&t, NULL, raise_later, NULL);
    long w = syscall(__NR_async_wait, 1UL);
    pthread_join(t, NULL);
    printf("ignored signal during a 200 ms syslet: exec %ld, wait %ld, ring entry %d, result %ld\n",
           r, w, ring[1] == &a, res);
    ring[1] = NULL;

    /* Wake-up latency: an async 1 ms nanosleep, then wait (which blocks);
     * median of 21.  Polling in 10 ms slices alone would give about 10 ms. */
    double lat[21];
    unsigned idx = 2;
    struct timespec ms = {0, 1000 * 1000};
    unsigned long ms_addr = (unsigned long)&ms;
    for (int i = 0; i < 21; i++) {
        memset(&a, 0, sizeof a);
        a.flags = SYSLET_ASYNC;
        a.nr = SYS_nanosleep;
        a.ret_ptr = &res;
        a.arg_ptr[0] = &ms_addr;
        double t0 = now();
        if (syscall(__NR_async_exec, &a) != 0 || syscall(__NR_async_wait, 1UL) != 0)
            return 1;
        lat[i] = now() - t0;
        if (ring[idx] != &a)
            return 1;
        ring[idx] = NULL;
        idx = (idx + 1) % 8;
    }
    qsort(lat, 21, sizeof lat[0], cmp);
    printf("1 ms syslet, wait returned within 4 ms (median): %d\n", lat[10] < 0.004);
    fprintf(stderr, "median exec+wait time for a 1 ms syslet: %.1f us\n", lat[10] * 1e6);
    return syscall(__NR_async_unregister, &ahu, sizeof ahu) == 0 ? 0 : 1;
}
