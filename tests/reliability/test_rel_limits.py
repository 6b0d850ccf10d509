"""Limits: max_nr_threads (what it bounds, measured), 0 = synchronous,
RLIMIT_NOFILE / RLIMIT_MEMLOCK / RLIMIT_NPROC in children (clear errors or a
fallback, never a hang or a lost completion), 100k-atom chains."""
import ctypes
import errno
import os
import threading
import time

import pytest

import compat
from rel_lib import (ASYNC, S_ZERO, Mem, RawRing, addr, describe, last_json, run_py)

# ---- max_nr_threads ----------------------------------------------------------------

THREADS_CHILD = r"""
import atexit, ctypes, json, os, shutil, sys, tempfile, threading, time
import compat
from rel_lib import ASYNC, Mem, RawRing, addr, thread_names
backend, N, submitters, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = tempfile.mkdtemp()
atexit.register(shutil.rmtree, d, True)
fifo = os.path.join(d, "f")
os.mkfifo(fifo)
m = Mem()
base = set(thread_names())
e = compat.Engine(backend)
ring = RawRing(e, 1024, N)
path = m.buf(len(fifo) + 1, fifo.encode())
ts = (ctypes.c_long * 2)(30, 0)
m.keep.append(ts)
go = threading.Event()
mine = set()
def submit(k):
    mine.add(threading.get_native_id())
    for i in range(per):
        a = m.atoms(1)[0]
        if i % 2:       # blocks an io-wq worker (io_uring) or a pool worker
            m.set(a, 257, (-100, addr(path), os.O_RDONLY | os.O_CREAT), flags=ASYNC if k % 2 else 0)
        else:           # no opcode: blocks a pool worker
            m.set(a, 35, (addr(ts), 0), flags=ASYNC)
        e.exec(addr(a))
    go.wait()
ths = [threading.Thread(target=submit, args=(k,)) for k in range(submitters)]
for t in ths: t.start()
time.sleep(0.4)
peak, peak_names = 0, {}
for _ in range(30):
    now = {t: n for t, n in thread_names().items() if t not in base and t not in mine}
    if len(now) > peak:
        peak, peak_names = len(now), now
    time.sleep(0.01)
iou = sum(1 for n in peak_names.values() if n.startswith("iou-wrk"))
# the engine's own threads: the driver + pool workers (e.threads() counts them)
out = {"backend": e.backend, "N": N, "submitters": submitters, "peak_new_threads": peak,
       "iou_wrk": iou, "engine_threads": e.threads()}
fd = os.open(fifo, os.O_RDWR)     # a writer: every blocked open returns
go.set()
for t in ths: t.join()
e.close()
os.close(fd)
print(json.dumps(out))
"""


def run_threads(backend, n, submitters, per):
    p = run_py(THREADS_CHILD, backend, n, submitters, per, timeout=60)
    assert p.returncode == 0, describe(p)
    return last_json(p.stdout)


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_max_threads_one_submitter(backend, n):
    """One submitting thread: background workers (pool + io-wq) <= N; the
    driver thread is not a worker."""
    out = run_threads(backend, n, 1, 24)
    workers = out["peak_new_threads"] - 1                   # minus the driver
    assert workers <= n, out
    assert workers >= min(n, 2), out                        # the limit was reached
    print(f"\nMAXTHREADS {backend} N={n} 1 submitter: {workers} workers ({out['iou_wrk']} iou-wrk)")


@pytest.mark.parametrize("n", [2, 3, 6])
def test_max_threads_many_submitters(backend, n):
    """Eight submitting threads: still <= N workers.  io-wq keeps a worker
    pool per submitting task, so with a bound only the driver submits to
    io_uring (callers run what cannot block in place and hand the rest
    over); for N = 1 or 2 blocking calls run on the pool alone."""
    subs = 8
    out = run_threads(backend, n, subs, 12)
    workers = out["peak_new_threads"] - 1
    assert workers <= n, out
    print(f"\nMAXTHREADS {backend} N={n} {subs} submitters: {workers} workers "
          f"({out['iou_wrk']} iou-wrk, {workers - out['iou_wrk']} pool)")


def test_max_threads_zero_is_synchronous(backend):
    m = Mem()
    with compat.Engine(backend) as e:
        ring = RawRing(e, 8, max_threads=0)
        a = m.atoms(1)[0]
        r = m.cell(-999)
        m.set(a, 39, (), ret=r, flags=ASYNC)
        assert e.exec(addr(a)) == addr(a) and r.value == os.getpid()     # ASYNC ignored
        rp, wp = os.pipe()
        buf = m.buf(8)
        b = m.atoms(1)[0]
        r2 = m.cell(-999)
        m.set(b, 0, (rp, addr(buf), 4), ret=r2, flags=ASYNC)
        t = threading.Timer(0.2, os.write, (wp, b"abcd"))
        t.start()
        t0 = time.monotonic()
        assert e.exec(addr(b)) == addr(b)                 # waited for the data
        assert time.monotonic() - t0 >= 0.15 and r2.value == 4
        t.join()
        assert list(ring.ring) == [0] * 8
        assert e.threads() == 0
        ring.unregister()
        os.close(rp)
        os.close(wp)


# ---- resource limits in children ------------------------------------------------------

NOFILE_CHILD = r"""
import ctypes, errno, json, os, resource, sys, time
import compat, uring_shim
from rel_lib import ASYNC, Mem, RawRing, addr
backend, when, free = sys.argv[1], sys.argv[2], int(sys.argv[3])
hog = []
def lower():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 20000))
    while True:
        try:
            hog.append(os.open("/dev/null", 0))
        except OSError:
            break
    for _ in range(free):
        os.close(hog.pop())
out = {}
m = Mem()
if when == "before":
    lower()
    out["probe"] = [uring_shim.backend(), uring_shim.backend_reason()[:80]]
e = compat.Engine(backend)
out["engine_backend"] = e.backend
ring = RawRing(e, 64)
if when == "after":
    lower()
ts = (ctypes.c_long * 2)(0, 5_000_000)
m.keep.append(ts)
rets = []
for i in range(6):           # pool calls (their workers need an fd each on io_uring)
    a = m.atoms(1)[0]; r = m.cell(-999); rets.append(r)
    m.set(a, 35, (addr(ts), 0), ret=r, flags=ASYNC)
    e.exec(addr(a))
path = m.buf(16, b"/dev/null")
o = m.atoms(1)[0]; ro = m.cell(-999)
m.set(o, 257, (-100, addr(path), os.O_RDONLY), ret=ro, flags=ASYNC)
e.exec(addr(o))
got = []
deadline = time.monotonic() + 10
while len(got) < 7 and time.monotonic() < deadline:
    e.wait(1, timeout=0.1)
    got += ring.reap()
out["published"] = len(got)
out["nanosleep"] = sorted(set(r.value for r in rets))
out["open"] = ro.value
t0 = time.monotonic()
e.close()
out["close_s"] = round(time.monotonic() - t0, 3)
print(json.dumps(out))
"""


@pytest.mark.parametrize("when,free", [("before", 0), ("before", 1), ("before", 2), ("after", 0)])
def test_low_rlimit_nofile(backend, when, free):
    """With no fd left the engine falls back to the pool; with the ring set
    up but no fd for a pool worker's own ring, completions still arrive;
    an open atom fails with a clear -EMFILE."""
    p = run_py(NOFILE_CHILD, backend, when, free, backend_env="auto", timeout=60)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out["published"] == 7, out
    assert out["nanosleep"] == [0], out
    assert out["open"] == -errno.EMFILE or (free and out["open"] >= 0), out
    assert out["close_s"] < 2, out
    if when == "before" and free == 0:
        assert out["engine_backend"] == "threadpool", out
        if backend == "io_uring":
            assert out["probe"][0] == "threadpool" and "EMFILE" in out["probe"][1], out


UNPRIV_CHILD = r"""
import ctypes, errno, json, os, resource, sys, threading, time
import compat, uring_shim
from rel_lib import ASYNC, Mem, RawRing, addr
backend, limit, value = sys.argv[1], sys.argv[2], int(sys.argv[3])
# everything is imported: become an unprivileged user (root ignores both limits)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
out = {"uid": os.getuid()}
m = Mem()
rp, wp = os.pipe()
go = threading.Event()
def writer():
    go.wait(); time.sleep(0.3); os.write(wp, b"abcd")
threading.Thread(target=writer, daemon=True).start()    # started before the limit
if limit == "memlock":
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (value * 1024, value * 1024))
    out["probe"] = [uring_shim.backend(), uring_shim.backend_reason()[:70]]
    e = compat.Engine(backend)
    ring = RawRing(e, 64)
else:
    e = compat.Engine(backend)
    ring = RawRing(e, 64)
    n = len(os.listdir("/proc/self/task"))
    resource.setrlimit(resource.RLIMIT_NPROC, (n + value, n + value))
out["engine_backend"] = e.backend
ts = (ctypes.c_long * 2)(0, 5_000_000)
m.keep.append(ts)
res = {}
# an ASYNC pool call (needs the driver and a pool worker)
a = m.atoms(1)[0]; r = m.cell(-999)
m.set(a, 35, (addr(ts), 0), ret=r, flags=ASYNC)
try:
    x = e.exec(addr(a))
    res["async_pool"] = ["async" if x == 0 else "sync", e.wait(1, timeout=3) if x == 0 else None]
    ring.reap()
except OSError as ex:
    res["async_pool"] = ["error", errno.errorcode[ex.errno]]
res["async_pool_ret"] = r.value
# a pipe read that has to wait (goes async without the ASYNC flag)
b = m.atoms(1)[0]; r2 = m.cell(-999); buf = m.buf(8)
m.set(b, 0, (rp, addr(buf), 4), ret=r2)
go.set()
t0 = time.monotonic()
x = e.exec(addr(b))
res["read"] = ["async" if x == 0 else "sync", e.wait(1, timeout=3) if x == 0 else None,
               round(time.monotonic() - t0, 2)]
res["read_ret"] = r2.value
out.update(res)
t0 = time.monotonic()
e.close()
out["close_s"] = round(time.monotonic() - t0, 3)
print(json.dumps(out))
"""


def run_unpriv(backend, limit, value):
    p = run_py(UNPRIV_CHILD, backend, limit, value, backend_env="auto", timeout=60, cwd="/")
    assert p.returncode == 0, describe(p)
    return last_json(p.stdout)


@pytest.mark.parametrize("kib", [0, 64])
def test_low_rlimit_memlock_unprivileged(backend, kib):
    """uid 65534: 0 KiB -> no ring at all (pool); 64 KiB -> the engine's
    ring fits but the pool workers' small rings do not (their completions
    take the pool's list)."""
    out = run_unpriv(backend, "memlock", kib)
    assert out["uid"] == 65534
    if kib == 0:
        assert out["engine_backend"] == "threadpool", out
        assert out["probe"][0] == "threadpool" and "ENOMEM" in out["probe"][1], out
    else:
        assert out["engine_backend"] == backend, out
    assert out["async_pool"] == ["async", True] and out["async_pool_ret"] == 0, out
    assert out["read_ret"] == 4 and out["read"][0] == "async" and out["read"][1], out
    assert out["close_s"] < 2, out


@pytest.mark.parametrize("extra", [0, 1, 2])
def test_low_rlimit_nproc_unprivileged(backend, extra):
    """No thread can be created (0), only the driver (1), driver + one pool
    worker (2): clear EAGAIN errors or synchronous completion, no hang."""
    out = run_unpriv(backend, "nproc", extra)
    if extra == 0:
        assert out["async_pool"] == ["error", "EAGAIN"], out    # ASYNC needs the driver
        # a read that must wait: no driver to finish it later -> completed here
        # (io_uring), or -EAGAIN from a pool that cannot start a worker
        assert (out["read"][0] == "sync" and out["read_ret"] in (4, -errno.EAGAIN)), out
    elif extra == 1:
        assert out["async_pool"] == ["async", True] and out["async_pool_ret"] == -errno.EAGAIN, out
        assert out["read_ret"] in (4, -errno.EAGAIN), out
    else:
        assert out["async_pool"] == ["async", True] and out["async_pool_ret"] == 0, out
        assert out["read_ret"] == 4, out
    assert out["close_s"] < 2, out


# ---- 100k-atom chains ------------------------------------------------------------

N_ATOMS = 100_000


@pytest.mark.parametrize("executor", ["reference", "engine"])
@pytest.mark.parametrize("shape", ["chain", "loop"])
def test_100k_atom_syslet(backend, executor, shape):
    """100k umem_add atoms chained, or one umem_add looping 100k times
    (STOP_ON_ZERO), synchronous and (engine) with SYSLET_ASYNC."""
    m = Mem()
    eng = compat.Reference() if executor == "reference" else compat.Engine(backend)
    try:
        ring = RawRing(eng, 8)
        for flags0 in ((0,) if executor == "reference" else (0, ASYNC)):
            counter = m.cell(-N_ATOMS if shape == "loop" else 0)
            if shape == "chain":
                atoms = m.atoms(N_ATOMS)
                one = m.cell(1)
                pc = m.cell(addr(counter))
                base = addr(atoms)
                ret = m.cell(-999)
                for i in range(N_ATOMS):
                    a = atoms[i]
                    a.nr = 1004
                    a.arg_ptr[0] = addr(pc)
                    a.arg_ptr[1] = addr(one)
                    a.next = base + 88 * (i + 1) if i + 1 < N_ATOMS else None
                atoms[0].flags = flags0
                atoms[N_ATOMS - 1].ret_ptr = addr(ret)
                head, last, want = atoms[0], atoms[N_ATOMS - 1], N_ATOMS
            else:
                a = m.atoms(1)[0]
                ret = m.cell(-999)
                m.set(a, 1004, (addr(counter), 1), ret=ret, flags=S_ZERO | flags0, next=a)
                head, last, want = a, a, 0
            t0 = time.monotonic()
            r = eng.exec(addr(head))
            if r == 0:
                assert eng.wait(1, timeout=60) and ring.reap() == [addr(last)]
            else:
                assert r == addr(last)
            took = time.monotonic() - t0
            assert counter.value == (N_ATOMS if shape == "chain" else 0)
            assert ret.value == want
            print(f"\n100K {executor} {backend} {shape} flags={flags0}: {took:.2f} s")
        ring.unregister()
    finally:
        eng.close()
