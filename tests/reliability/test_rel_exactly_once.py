"""Completions exactly once: far more async syslets than ring slots, eight
submitting threads, a slow consumer; nothing lost, nothing duplicated, and
the producer really had to wait for slots (ring_full_waits > 0)."""
import collections
import ctypes
import os
import threading
import time

import pytest

import compat
from rel_lib import ASYNC, Mem, RawRing, addr, build_c, describe, run_exe

THREADS = 8
PER_THREAD = 1500          # getpid atoms per thread
READS_PER_THREAD = 60      # pipe reads per thread, data written later
SLOTS = 16


def test_exactly_once_python(backend):
    pid = os.getpid()
    mem = Mem()
    with compat.Engine(backend) as e:
        ring = RawRing(e, SLOTS)
        rp, wp = os.pipe()
        per = PER_THREAD + READS_PER_THREAD
        atoms = [mem.atoms(per) for _ in range(THREADS)]
        rets = [(ctypes.c_int64 * per)(*([-999] * per)) for _ in range(THREADS)]
        bufs = [mem.buf(per) for _ in range(THREADS)]
        want = {}
        for t in range(THREADS):
            for i in range(per):
                a = atoms[t][i]
                ret = ctypes.c_int64.from_address(addr(rets[t]) + 8 * i)
                if i < PER_THREAD:
                    mem.set(a, 39, (), ret=ret, flags=ASYNC)
                else:
                    mem.set(a, 0, (rp, addr(bufs[t]) + i, 1), ret=ret, flags=ASYNC)
                want[addr(a)] = (t, i)
        got = collections.Counter()
        errors = []
        start = threading.Barrier(THREADS + 2)

        def submit(t):
            start.wait()
            for i in range(per):
                try:
                    r = e.exec(addr(atoms[t][i]))
                except OSError as ex:
                    errors.append(ex)
                    return
                if r != 0:
                    errors.append(f"ASYNC atom completed synchronously: {r:#x}")

        def writer():
            start.wait()
            for _ in range(THREADS * READS_PER_THREAD // 8):
                time.sleep(0.002)
                os.write(wp, b"abcdefgh")

        ths = [threading.Thread(target=submit, args=(t,)) for t in range(THREADS)]
        ths.append(threading.Thread(target=writer))
        for th in ths:
            th.start()
        start.wait()
        total = THREADS * per
        deadline = time.monotonic() + 60
        n = 0
        while n < total and time.monotonic() < deadline:
            # slow consumer: at most 4 entries, then a pause
            for v in ring.reap(4):
                got[v] += 1
                n += 1
            time.sleep(0.0005)
        for th in ths:
            th.join(10)
        time.sleep(0.05)
        for v in ring.reap():
            got[v] += 1
        ring.unregister()
        c = e.counters()
        os.close(rp)
        os.close(wp)
    assert not errors, errors[:5]
    dup = {hex(k): v for k, v in got.items() if v > 1}
    foreign = [hex(k) for k in got if k not in want]
    missing = [want[k] for k in want if k not in got]
    assert not dup and not foreign and not missing, (dup, foreign, missing[:10])
    assert c["published"] == total, c
    assert c["ring_full_waits"] > 0, c
    for t in range(THREADS):
        assert list(rets[t][:PER_THREAD]) == [pid] * PER_THREAD
        assert list(rets[t][PER_THREAD:]) == [1] * READS_PER_THREAD
    print(f"\nEXACTLY-ONCE python {backend}: {total} syslets, {SLOTS} slots, "
          f"{THREADS} threads, ring_full_waits={c['ring_full_waits']}")


C_PROG = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <syslet.h>

#define THREADS 8
#define PER 1500
#define READS 60
#define SLOTS 16
#define TOTAL (THREADS * (PER + READS))

static struct syslet_uatom atoms[THREADS][PER + READS];
static long rets[THREADS][PER + READS];
static unsigned long nr_getpid = __NR_getpid, nr_read = __NR_read;
static unsigned long pipefd[2], one = 1;
static unsigned long bufaddr[THREADS][READS];
static char bufs[THREADS][READS];
static struct syslet_uatom *ring[SLOTS];
static pthread_barrier_t bar;
static int errors;

static void *submit(void *arg)
{
    long t = (long)arg;
    pthread_barrier_wait(&bar);
    for (int i = 0; i < PER + READS; i++) {
        struct syslet_uatom *r = async_exec(&atoms[t][i]);
        if (r != NULL) {
            fprintf(stderr, "exec %d/%d: %p errno %d\n", (int)t, i, (void *)r, errno);
            __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

static void *writer(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&bar);
    for (int i = 0; i < THREADS * READS / 8; i++) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        if (write((int)pipefd[1], "abcdefgh", 8) != 8)
            abort();
    }
    return NULL;
}

int main(void)
{
    int p[2];
    if (pipe(p))
        return 2;
    pipefd[0] = p[0];
    pipefd[1] = p[1];
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER + READS; i++) {
            struct syslet_uatom *a = &atoms[t][i];
            memset(a, 0, sizeof *a);
            a->flags = SYSLET_ASYNC;
            a->ret_ptr = &rets[t][i];
            rets[t][i] = -999;
            if (i < PER) {
                a->nr = nr_getpid;
            } else {
                a->nr = nr_read;
                bufaddr[t][i - PER] = (unsigned long)&bufs[t][i - PER];
                a->arg_ptr[0] = &pipefd[0];
                a->arg_ptr[1] = &bufaddr[t][i - PER];
                a->arg_ptr[2] = &one;
            }
        }
    struct async_head_user ahu = {ring, sizeof ring, -1UL};
    if (async_register(&ahu, sizeof ahu)) {
        perror("async_register");
        return 2;
    }
    pthread_barrier_init(&bar, NULL, THREADS + 2);
    pthread_t th[THREADS + 1];
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, submit, (void *)t);
    pthread_create(&th[THREADS], NULL, writer, NULL);
    pthread_barrier_wait(&bar);
    static unsigned char seen[THREADS][PER + READS];
    int n = 0, idx = 0, dup = 0, foreign = 0;
    while (n < TOTAL) {
        if (async_wait(1) != 0 && errno != EINTR) {
            perror("async_wait");
            return 2;
        }
        for (int k = 0; k < 4 && ring[idx]; k++) {     /* slow consumer */
            struct syslet_uatom *a = __atomic_load_n(&ring[idx], __ATOMIC_ACQUIRE);
            ring[idx] = NULL;
            idx = (idx + 1) % SLOTS;
            long off = a - &atoms[0][0];
            if (off < 0 || off >= TOTAL) {
                foreign++;
            } else if (seen[off / (PER + READS)][off % (PER + READS)]++) {
                dup++;
            }
            n++;
        }
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    for (int t = 0; t <= THREADS; t++)
        pthread_join(th[t], NULL);
    if (async_unregister(&ahu, sizeof ahu)) {
        perror("async_unregister");
        return 2;
    }
    int missing = 0, badret = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER + READS; i++) {
            missing += !seen[t][i];
            badret += rets[t][i] != (i < PER ? (long)getpid() : 1);
        }
    for (int i = 0; i < SLOTS; i++)
        foreign += ring[i] != NULL;
    printf("total=%d dup=%d foreign=%d missing=%d badret=%d errors=%d\n",
           TOTAL, dup, foreign, missing, badret, errors);
    return dup || foreign || missing || badret || errors;
}
"""


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("rel-c"))


def test_exactly_once_c(backend, outdir):
    exe = build_c(C_PROG, outdir, "exactly_once")
    p = run_exe(exe, backend=backend, env={"SYSLET_COMPAT_DEBUG": "1"}, timeout=120)
    assert p.returncode == 0, describe(p)
    assert "dup=0 foreign=0 missing=0 badret=0 errors=0" in p.stdout, describe(p)
    waits = [int(x.split("=")[1]) for x in p.stderr.split() if x.startswith("ring_full_waits=")]
    assert waits and waits[-1] > 0, describe(p)
    pub = [int(x.split("=")[1]) for x in p.stderr.split() if x.startswith("published=")]
    assert pub and pub[-1] == 8 * 1560, describe(p)
    print(f"\nEXACTLY-ONCE C {backend}: {p.stdout.strip()} ring_full_waits={waits[-1]}")
