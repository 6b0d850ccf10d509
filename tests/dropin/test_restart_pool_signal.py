"""SA_RESTART restarts the waits also when the pool's own interrupt signal
(SIGRTMAX-3, a handler without SA_RESTART that only ever goes to pool
workers) is installed -- which it is in every process with a context.  A
v7 read of a pipe stays pending for 300 ms while a 5 ms SIGALRM timer,
installed with signal() (glibc: SA_RESTART, as fio did), fires:
syslet_ring_wait must return 0, never -1/EINTR."""
from dropin_lib import run

PROG = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>
#include <syslet-v7.h>

static volatile long alarms;
static int fds[2];
static void on_alarm(int s) { (void)s; alarms++; }
static void *writer(void *a) { (void)a; usleep(300000); write(fds[1], "x", 1); return NULL; }
static void back(void) {}

int main(void)
{
    static struct { struct syslet_ring r; struct syslet_completion c[4]; } ring;
    static char stack[4096], byte;
    ring.r.elements = 4;
    if (pipe(fds))
        return 1;
    signal(SIGALRM, on_alarm);
    struct indirect_registers regs = {SYS_read, (unsigned long long)fds[0],
                                      (unsigned long long)(unsigned long)&byte, 1};
    union indirect_params p;
    memset(&p, 0, sizeof p);
    p.syslet.ring_ptr = (unsigned long)&ring;
    p.syslet.caller_data = 7;
    p.syslet.frame.ip = (unsigned long)back;
    p.syslet.frame.sp = (unsigned long)(stack + sizeof stack);
    long r = syscall(__NR_indirect, &regs, &p, sizeof p.syslet, 0UL);
    if (r != -1 || errno != ESYSLETPENDING) {
        printf("indirect: %ld %s\n", r, strerror(errno));
        return 1;
    }
    struct sigaction sa;
    sigaction(SIGRTMAX - 3, NULL, &sa);
    pthread_t t;    /* the writer never takes the alarm: its sleep would end early */
    sigset_t al, old;
    sigemptyset(&al);
    sigaddset(&al, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &al, &old);
    pthread_create(&t, NULL, writer, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    struct itimerval it = {{0, 5000}, {0, 5000}};
    setitimer(ITIMER_REAL, &it, NULL);
    r = syscall(__NR_syslet_ring_wait, &ring, 0UL);
    int e = errno;
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    pthread_join(t, NULL);
    printf("wait=%ld%s%s alarms>5=%d head=%u status=%lld data=%llu pool_handler=%d\n", r,
           r ? " " : "", r ? strerror(e) : "", alarms > 5, ring.r.kernel_head,
           (long long)ring.c[0].status, ring.c[0].caller_data, sa.sa_handler != SIG_DFL);
    return 0;
}
"""


def test_sa_restart_wait_ignores_the_pools_interrupt_signal(builder, backend):
    exe = builder.build(PROG, linked=False, name="restart_pool_signal")
    r = run(exe, backend=backend, preload=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "wait=0 alarms>5=1 head=1 status=1 data=7 pool_handler=1\n", r.stdout
