"""Signals: async_wait interrupted by a signal (Python: the handler runs while
waiting and its exception propagates; C: -1/EINTR), and SIGINT in the middle
of a loaded program ends it promptly with every ring slot intact."""
import ctypes
import os
import signal
import subprocess
import threading
import time

import pytest

import compat
from rel_lib import (ASYNC, PY, Mem, addr, build_c, child_env, describe, last_json, run_exe)


class Boom(Exception):
    pass


@pytest.fixture
def raw_default(backend):
    """The raw API's default context, on this run's backend explicitly."""
    compat.reset_default()
    compat._default = compat.Engine(backend)
    yield compat.default_engine()
    compat.reset_default()


@pytest.fixture
def head(raw_default):
    ring = (ctypes.c_uint64 * 8)()
    ahu = compat.async_head_user(ctypes.addressof(ring), 64, -1 & 0xFFFFFFFFFFFFFFFF)
    compat.async_register(ctypes.addressof(ahu), 24)
    yield ring
    for i in range(8):
        ring[i] = 0
    compat.async_unregister(ctypes.addressof(ahu), 24)


@pytest.fixture
def alarm():
    old = signal.getsignal(signal.SIGALRM)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def test_async_wait_handler_exception_propagates(head, alarm):
    def handler(sig, frame):
        raise Boom()
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    t0 = time.monotonic()
    with pytest.raises(Boom):
        compat.async_wait(1)            # nothing will ever arrive
    took = time.monotonic() - t0
    assert 0.15 < took < 2.0, took


def test_async_wait_handler_runs_while_waiting(head, alarm):
    """A handler that returns: the wait goes on and ends with the completion."""
    ran = []
    signal.signal(signal.SIGALRM, lambda s, f: ran.append(time.monotonic()))
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    m = Mem()
    rp, wp = os.pipe()
    buf = m.buf(8)
    a = m.atoms(1)[0]
    r = m.cell(-999)
    m.set(a, 0, (rp, addr(buf), 3), ret=r)
    assert compat.async_exec(addr(a)) == 0
    t = threading.Timer(0.5, os.write, (wp, b"xyz"))
    t.start()
    t0 = time.monotonic()
    assert compat.async_wait(1) == 0
    done = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, 0)
    t.join()
    assert head[0] == addr(a) and r.value == 3
    assert len([x for x in ran if t0 < x < done]) >= 2, ran     # handlers ran meanwhile
    os.close(rp)
    os.close(wp)


def test_engine_wait_keyboardinterrupt(backend, alarm):
    """Engine.wait as Ctrl-C sees it: KeyboardInterrupt from the handler."""
    def handler(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGALRM, handler)
    with compat.Context(backend=backend, ring_slots=8) as ctx:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            ctx.wait(1)


C_EINTR = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <syslet.h>

static volatile sig_atomic_t hits;
static void on_alarm(int s) { (void)s; hits++; }

int main(int argc, char **argv)
{
    int restart = argc > 1 && argv[1][0] == 'r';
    static struct syslet_uatom *ring[4];
    struct async_head_user ahu = {ring, sizeof ring, -1UL};
    if (async_register(&ahu, sizeof ahu)) { perror("register"); return 2; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    /* With SA_RESTART the wait restarts (LATER_ABIS.md 5): a 600 ms syslet
     * in flight ends it. */
    struct timespec ts = {0, 600 * 1000 * 1000};
    unsigned long ts_addr = (unsigned long)&ts;
    long res = 1;
    struct syslet_uatom a;
    memset(&a, 0, sizeof a);
    a.flags = SYSLET_ASYNC;
    a.nr = SYS_nanosleep;
    a.ret_ptr = &res;
    a.arg_ptr[0] = &ts_addr;
    if (restart && async_exec(&a) != NULL) { perror("exec"); return 2; }
    struct itimerval it = {{0, 0}, {0, 200000}};
    setitimer(ITIMER_REAL, &it, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    errno = 0;
    long r = async_wait(1);
    int e = errno;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("r=%ld errno=%s hits=%d took=%.2f\n", r, e == EINTR ? "EINTR" : strerror(e), (int)hits, took);
    return async_unregister(&ahu, sizeof ahu) ? 3 : 0;
}
"""


@pytest.mark.parametrize("flags", ["plain", "restart"])
def test_c_async_wait_eintr(backend, tmp_path, flags):
    exe = build_c(C_EINTR, str(tmp_path), "eintr")
    p = run_exe(exe, flags, backend=backend, timeout=30)
    assert p.returncode == 0, describe(p)
    out = dict(kv.split("=") for kv in p.stdout.split())
    if flags == "plain":    # the handler ends the wait
        assert out["r"] == "-1" and out["errno"] == "EINTR" and out["hits"] == "1", describe(p)
        assert 0.15 < float(out["took"]) < 2.0, describe(p)
    else:                   # SA_RESTART: the wait goes on until the syslet's entry
        assert out["r"] == "0" and out["hits"] == "1", describe(p)
        assert 0.55 < float(out["took"]) < 3.0, describe(p)


SIGINT_CHILD = r"""
import ctypes, json, os, sys, threading, time
import compat
from rel_lib import ASYNC, Mem, RawRing, addr
backend, catch = sys.argv[1], sys.argv[2] == "catch"
N = 50000
m = Mem()
e = compat.Engine(backend)
ring = RawRing(e, 64)
atoms = m.atoms(N)
base = addr(atoms)
rp, wp = os.pipe()
buf = m.buf(N)
for i in range(N):
    if i % 10 == 9:     # a blocking read now and then (data from the writer)
        m.set(atoms[i], 0, (rp, addr(buf) + i, 1), flags=ASYNC)
    else:
        m.set(atoms[i], 39, (), flags=ASYNC)
def writer():
    while True:
        os.write(wp, b"x" * 8)
        time.sleep(0.001)
threading.Thread(target=writer, daemon=True).start()
def valid(v):
    return base <= v < base + 88 * N and (v - base) % 88 == 0
submitted = reaped = 0
bad = []
def loop():
    global submitted, reaped
    print("running", flush=True)
    i = 0
    while True:
        e.exec(addr(atoms[i % N]))
        submitted += 1
        i += 1
        for v in ring.reap():
            reaped += 1
            if not valid(v):
                bad.append(v)
        if ring.ring[ring.consumer]:
            continue
        if i % 64 == 0:
            e.wait(1, timeout=0.01)
if not catch:
    loop()          # KeyboardInterrupt ends the interpreter
try:
    loop()
except KeyboardInterrupt:
    slots = list(ring.ring)
    t0 = time.monotonic()
    e.cancel()
    e.close()
    took = time.monotonic() - t0
    print(json.dumps({"submitted": submitted, "reaped": reaped, "bad": len(bad),
                      "nonnull": sum(1 for v in slots if v),
                      "invalid_slots": [hex(v) for v in slots if v and not valid(v)],
                      "close_s": round(took, 3)}), flush=True)
"""


def _interrupt_running(cmd, env):
    """Starts cmd, waits for its "running" line, sends SIGINT a second later.
    Returns (exit status, stdout, stderr, seconds from SIGINT to exit)."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "running", (line, p.stderr.read() if p.poll() is not None else "")
    time.sleep(1.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"no exit 30 s after SIGINT\n{out}\n{err}")
    return p.returncode, out, err, time.monotonic() - t0


def _start_and_interrupt(args, catch):
    return _interrupt_running([PY, "-c", SIGINT_CHILD, *args, "catch" if catch else "nocatch"],
                              child_env(args[-1]))


def test_sigint_under_load_python(backend):
    rc, out, err, took = _start_and_interrupt([backend], True)
    assert rc == 0, (rc, out, err)
    res = last_json(out)
    assert res["bad"] == 0 and res["invalid_slots"] == [], res
    assert res["submitted"] > 1000, res
    assert res["close_s"] < 5, res
    assert took < 10, took
    print(f"\nSIGINT python {backend}: {res} exit {took:.2f} s after SIGINT")


def test_sigint_uncaught_ends_the_program(backend):
    rc, out, err, took = _start_and_interrupt([backend], False)
    assert rc != 0 and "KeyboardInterrupt" in err, (rc, out, err[-2000:])
    assert took < 10, took


C_SIGINT = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <syslet.h>

#define N 50000
#define SLOTS 64
static struct syslet_uatom atoms[N];
static struct syslet_uatom *ring[SLOTS];
static volatile sig_atomic_t stop;
static unsigned long nr_getpid = __NR_getpid;
static int pfd[2];
static void on_int(int s) { (void)s; stop = 1; }
static void *writer(void *a) {
    (void)a;
    for (;;) {
        if (write(pfd[1], "xxxxxxxx", 8) != 8) return NULL;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}
static int valid(struct syslet_uatom *v) { return v >= atoms && v < atoms + N; }

int main(void)
{
    struct async_head_user ahu = {ring, sizeof ring, -1UL};
    if (async_register(&ahu, sizeof ahu)) { perror("register"); return 2; }
    if (pipe(pfd)) return 2;
    static unsigned long fdw, one = 1, bufa[N];
    static char buf[N];
    fdw = pfd[0];
    for (int i = 0; i < N; i++) {
        atoms[i].flags = SYSLET_ASYNC;
        if (i % 10 == 9) {
            atoms[i].nr = __NR_read;
            bufa[i] = (unsigned long)&buf[i];
            atoms[i].arg_ptr[0] = &fdw; atoms[i].arg_ptr[1] = &bufa[i]; atoms[i].arg_ptr[2] = &one;
        } else {
            atoms[i].nr = nr_getpid;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_int;
    sigaction(SIGINT, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, writer, NULL);
    printf("running\n");
    fflush(stdout);
    long submitted = 0, reaped = 0, bad = 0;
    int idx = 0;
    while (!stop) {
        if (async_exec(&atoms[submitted % N]) != NULL) { perror("exec"); return 2; }
        submitted++;
        while (ring[idx]) {
            bad += !valid(ring[idx]);
            ring[idx] = NULL;
            idx = (idx + 1) % SLOTS;
            reaped++;
        }
        if (submitted - reaped > SLOTS && async_wait(1) && errno != EINTR) { perror("wait"); return 2; }
    }
    int invalid = 0, nonnull = 0;
    for (int i = 0; i < SLOTS; i++)
        if (ring[i]) { nonnull++; invalid += !valid(ring[i]); }
    /* drain: every submitted syslet publishes exactly once */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (reaped < submitted) {
        while (ring[idx]) {
            bad += !valid(ring[idx]);
            ring[idx] = NULL;
            idx = (idx + 1) % SLOTS;
            reaped++;
        }
        if (reaped < submitted && async_wait(1) && errno != EINTR) { perror("wait2"); return 2; }
    }
    int ur = (int)async_unregister(&ahu, sizeof ahu);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("submitted=%ld reaped=%ld bad=%ld nonnull=%d invalid=%d unregister=%d drain_s=%.3f\n",
           submitted, reaped, bad, nonnull, invalid, ur,
           (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
"""


def test_sigint_under_load_c(backend, tmp_path):
    exe = build_c(C_SIGINT, str(tmp_path), "sigint")
    rc, out, err, _ = _interrupt_running([exe], child_env(backend))
    assert rc == 0, (out, err)
    res = dict(kv.split("=") for kv in out.split())
    assert res["bad"] == "0" and res["invalid"] == "0" and res["unregister"] == "0", res
    assert res["submitted"] == res["reaped"] and int(res["submitted"]) > 1000, res
    assert float(res["drain_s"]) < 5, res
    print(f"\nSIGINT C {backend}: {out.strip()}")
