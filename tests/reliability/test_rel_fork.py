"""fork() with syslets in flight: the parent's syslets complete and are
published, the child starts a fresh context (and cannot touch the parent's),
nobody hangs.  Forks happen in child processes (bounded by timeouts)."""
import pytest

from rel_lib import build_c, describe, last_json, run_exe, run_py

PY_CHILD = r"""
import ctypes, errno, json, os, sys, time
import compat
from rel_lib import ASYNC, Mem, RawRing, addr, wait_until
backend, mode = sys.argv[1], sys.argv[2]
K = 20
m = Mem()
out = {}
# 1. an explicit engine with K blocked pipe reads in flight (and a busy loop)
e = compat.Engine(backend)
e.set_budget(2_000_000)
ring = RawRing(e, 64)
rp, wp = os.pipe()
bufs = m.buf(K)
reads = m.atoms(K)
rets = [m.cell(-999) for _ in range(K)]
for i in range(K):
    m.set(reads[i], 0, (rp, addr(bufs) + i, 1), ret=rets[i], flags=ASYNC)
    assert e.exec(addr(reads[i])) == 0
loop = m.atoms(1)[0]
m.set(loop, 39, (), flags=ASYNC, next=loop)          # runs until the budget
if mode == "loop":
    assert e.exec(addr(loop)) == 0
# 2. the raw API's default context with a blocked read too
rring = (ctypes.c_uint64 * 8)()
ahu = compat.async_head_user(addr(rring), 64, 2**64 - 1)
compat.async_register(addr(ahu), 24)
rp2, wp2 = os.pipe()
rb = m.buf(4); ra = m.atoms(1)[0]; rr = m.cell(-999)
m.set(ra, 0, (rp2, addr(rb), 4), ret=rr, flags=ASYNC)
assert compat.async_exec(addr(ra)) == 0
time.sleep(0.05)
pid = os.fork()
if pid == 0:
    res = {}
    try:
        try:
            e.exec(addr(reads[0]))
            res["parent_engine"] = "usable?!"
        except OSError as ex:
            res["parent_engine"] = errno.errorcode[ex.errno]
        # the raw API: a fresh default context; the copied head registers again
        try:
            compat.async_exec(addr(ra))
            res["raw_before_register"] = "ran?!"
        except OSError as ex:
            res["raw_before_register"] = errno.errorcode[ex.errno]
        for i in range(8):
            rring[i] = 0
        compat.async_register(addr(ahu), 24)
        a = m.atoms(1)[0]; r = m.cell(-999)
        m.set(a, 39, (), ret=r)
        res["raw_sync"] = compat.async_exec(addr(a)) == addr(a) and r.value == os.getpid()
        b = m.atoms(1)[0]; r2 = m.cell(-999)
        m.set(b, 39, (), ret=r2, flags=ASYNC)
        res["raw_async"] = compat.async_exec(addr(b)) == 0 and compat.async_wait(1) == 0 \
            and rring[0] == addr(b) and r2.value == os.getpid()
        rring[0] = 0
        cp_r, cp_w = os.pipe()
        cb = m.buf(2); c = m.atoms(1)[0]; r3 = m.cell(-999)
        m.set(c, 0, (cp_r, addr(cb), 2), ret=r3)
        went = compat.async_exec(addr(c))
        os.write(cp_w, b"ok")
        compat.async_wait(1)
        res["raw_read"] = [went == 0, rring[1] == addr(c), r3.value, cb.raw[:2].decode()]
        compat.async_unregister(addr(ahu), 24)
        # a new explicit engine and a Context
        with compat.Context(backend=backend, ring_slots=8) as ctx:
            ch = ctx.chain(); v = ctx.var()
            ch.getpid(ret=v, flags=ASYNC)
            res["context"] = [ctx.exec(ch) is None, len(ctx.wait(1, timeout=5)), v.value == os.getpid(),
                              ctx.backend]
        res["ok"] = True
    except BaseException as ex:
        res["error"] = repr(ex)
    print("CHILD " + json.dumps(res), flush=True)
    os._exit(0)
# parent: its syslets go on
t0 = time.monotonic()
os.write(wp, b"y" * K)
os.write(wp2, b"abcd")
got = []
deadline = time.monotonic() + 10
while len(got) < K + (mode == "loop") and time.monotonic() < deadline:
    e.wait(1, timeout=0.1)
    got += ring.reap()
out["parent_published"] = len(got)
out["parent_all_reads"] = sorted(got[:K] if mode != "loop" else [g for g in got if g != addr(loop)]) == \
    sorted(addr(x) for x in reads)
out["parent_results"] = sorted(set(r.value for r in rets))
out["raw_parent"] = compat.async_wait(1) == 0 and rring[0] == addr(ra) and rr.value == 4
rring[0] = 0
deadline = time.monotonic() + 20
while True:
    wpid, st = os.waitpid(pid, os.WNOHANG)
    if wpid:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        out["child_hung"] = True
        break
    time.sleep(0.01)
out["child_status"] = st
compat.async_unregister(addr(ahu), 24)
ring.unregister()
e.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["reads", "loop"])
def test_fork_python(backend, mode):
    p = run_py(PY_CHILD, backend, mode, timeout=90)
    assert p.returncode == 0, describe(p)
    child = [line for line in p.stdout.splitlines() if line.startswith("CHILD ")]
    assert child, describe(p)
    import json
    c = json.loads(child[0][6:])
    assert c.get("ok"), c
    assert c["parent_engine"] == "ECHILD" and c["raw_before_register"] == "EINVAL", c
    assert c["raw_sync"] and c["raw_async"] and c["raw_read"] == [True, True, 2, "ok"], c
    assert c["context"] == [True, 1, True, backend], c
    out = last_json(p.stdout)
    assert "child_hung" not in out and out["child_status"] == 0, out
    assert out["parent_all_reads"] and out["parent_results"] == [1], out
    assert out["parent_published"] == 20 + (mode == "loop"), out
    assert out["raw_parent"], out


C_FORK = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <syslet.h>
#ifdef VIA_SYSCALL      /* the 2007 way: served by libsyslet's syscall() (LD_PRELOAD) */
#define async_register(h, l) syscall(__NR_async_register, h, l)
#define async_exec(a) ((struct syslet_uatom *)syscall(__NR_async_exec, a))
#define async_wait(n) syscall(__NR_async_wait, n)
#define async_unregister(h, l) syscall(__NR_async_unregister, h, l)
#endif

#define K 20
static struct syslet_uatom *ring[64];
static struct syslet_uatom reads[K], loop, a, b;
static long rets[K];
static unsigned long fdw, one = 1, bufa[K], nr_getpid = __NR_getpid;
static char buf[K];

int main(void)
{
    struct async_head_user ahu = {ring, sizeof ring, -1UL};
    int pfd[2];
    if (async_register(&ahu, sizeof ahu) || pipe(pfd)) return 2;
    fdw = pfd[0];
    for (int i = 0; i < K; i++) {
        reads[i].flags = SYSLET_ASYNC; reads[i].nr = __NR_read; reads[i].ret_ptr = &rets[i];
        bufa[i] = (unsigned long)&buf[i];
        reads[i].arg_ptr[0] = &fdw; reads[i].arg_ptr[1] = &bufa[i]; reads[i].arg_ptr[2] = &one;
        if (async_exec(&reads[i]) != NULL) return 3;
    }
    pid_t pid = fork();
    if (pid == 0) {
        /* the parent's context is gone here: exec without a head is EINVAL */
        errno = 0;
        struct syslet_uatom *r = async_exec(&a);
        int e1 = errno;
        memset(ring, 0, sizeof ring);
        if (async_register(&ahu, sizeof ahu)) { perror("child register"); _exit(4); }
        a.nr = nr_getpid; long ra = -999; a.ret_ptr = &ra;
        int sync_ok = async_exec(&a) == &a && ra == getpid();
        b.nr = nr_getpid; b.flags = SYSLET_ASYNC; long rb = -999; b.ret_ptr = &rb;
        int async_ok = async_exec(&b) == NULL && async_wait(1) == 0 && ring[0] == &b && rb == getpid();
        ring[0] = NULL;
        int unreg = (int)async_unregister(&ahu, sizeof ahu);
        printf("child: before_register=%s sync=%d async=%d unregister=%d\n",
               SYSLET_EXEC_FAILED(r) && e1 == EINVAL ? "EINVAL" : "?", sync_ok, async_ok, unreg);
        fflush(stdout);
        _exit(sync_ok && async_ok && unreg == 0 ? 0 : 5);
    }
    if (write(pfd[1], "yyyyyyyyyyyyyyyyyyyy", K) != K) return 6;
    int n = 0, idx = 0, okres = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (n < K) {
        if (async_wait(1) && errno != EINTR) return 7;
        while (ring[idx]) { ring[idx] = NULL; idx = (idx + 1) % 64; n++; }
    }
    for (int i = 0; i < K; i++) okres += rets[i] == 1;
    int st = -1;
    for (int i = 0; i < 2000; i++) {          /* 20 s */
        if (waitpid(pid, &st, WNOHANG) == pid) break;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
        if (i == 1999) { kill(pid, SIGKILL); printf("child hung\n"); }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("parent: published=%d results_ok=%d child_status=%d unregister=%d\n", n, okres,
           WIFEXITED(st) ? WEXITSTATUS(st) : -1, (int)async_unregister(&ahu, sizeof ahu));
    return 0;
}
"""


@pytest.mark.parametrize("preload", [False, True], ids=["linked", "preload"])
def test_fork_c(backend, tmp_path, preload):
    extra = ["-DVIA_SYSCALL"] if preload else []
    exe = build_c(C_FORK, str(tmp_path), "fork", linked=not preload, extra=extra)
    p = run_exe(exe, backend=backend, preload=preload, timeout=60)
    assert p.returncode == 0, describe(p)
    assert "child: before_register=EINVAL sync=1 async=1 unregister=0" in p.stdout, describe(p)
    assert "parent: published=20 results_ok=20 child_status=0 unregister=0" in p.stdout, describe(p)
