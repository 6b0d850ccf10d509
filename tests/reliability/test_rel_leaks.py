"""Leaks: a long mixed workload (sync and async syslets, io_uring and pool
calls, open/read/close chains, loops, faults, cancellations, budget stops,
engines created and closed) keeps fds, threads and RSS flat.

Measured in a child (a clean process): counts after a warm-up versus at
the end.  100k syslets per backend here; ``make leak-long`` (SYSLET_LONG=1)
runs 1M.
"""
import pytest

from rel_lib import LONG, describe, last_json, run_py

SYSLETS = 1_000_000 if LONG else 100_000
RSS_SLACK_KIB = 2048

LEAK_CHILD = r"""
import atexit, ctypes, errno, json, os, shutil, sys, tempfile, time
import compat
from rel_lib import (ASYNC, S_ZERO, Mem, RawRing, addr, fd_count, rss_kib, thread_names,
                     wait_until)
backend, total = sys.argv[1], int(sys.argv[2])
m = Mem()
e = compat.Engine(backend)
e.set_budget(5000)
ring = RawRing(e, 256)
d = tempfile.mkdtemp()
atexit.register(shutil.rmtree, d, True)
path = os.path.join(d, "f")
with open(path, "wb") as f:
    f.write(b"0123456789" * 100)
cpath = m.buf(len(path) + 1, path.encode())
rp, wp = os.pipe()
ts = (ctypes.c_long * 2)(0, 0)
m.keep.append(ts)
pid = os.getpid()

# --- the syslets, built once and run again and again --------------------------
kinds = []
def k_getpid(flags):
    a = m.atoms(1)[0]; r = m.cell()
    m.set(a, 39, (), ret=r, flags=flags)
    return a, (lambda: None)
def k_open_read_close(flags):
    at = m.atoms(3); fd = m.cell(-1); n = m.cell(); buf = m.buf(1000)
    m.set(at[0], 2, (addr(cpath), os.O_RDONLY), ret=fd, flags=flags | 0x20, next=at[1])   # STOP_ON_NEGATIVE
    m.set(at[1], 0, (fd, addr(buf), 1000), ret=n, next=at[2])
    m.set(at[2], 3, (fd,))
    return at[0], (lambda: None)
def k_pipe_read(flags):
    a = m.atoms(1)[0]; r = m.cell(); buf = m.buf(8)
    m.set(a, 0, (rp, addr(buf), 4), ret=r, flags=flags)
    return a, (lambda: os.write(wp, b"abcd"))
def k_loop(flags):
    a = m.atoms(1)[0]; c = m.cell(); r = m.cell()
    m.set(a, 1004, (addr(c), 1), ret=r, flags=flags | S_ZERO, next=a)
    def reset():
        c.value = -100
    return a, reset
def k_fault(flags):
    a = m.atoms(1)[0]
    a.nr = 0; a.flags = flags; a.arg_ptr[0] = 0xFFFF800000000000
    return a, (lambda: None)
def k_nanosleep(flags):
    a = m.atoms(1)[0]; r = m.cell()
    m.set(a, 35, (addr(ts), 0), ret=r, flags=flags)
    return a, (lambda: None)
def k_budget(flags):
    a = m.atoms(1)[0]
    m.set(a, 39, (), flags=flags, next=a)          # ends at the budget (-ELOOP)
    return a, (lambda: None)
for copy in range(4):
    for mk in (k_getpid, k_open_read_close, k_pipe_read, k_loop, k_fault, k_nanosleep, k_budget):
        for flags in (0, ASYNC):
            kinds.append(mk(flags))

def batch():
    n_async = 0
    for a, prep in kinds:
        prep()
        r = e.exec(addr(a))
        if r == 0:
            n_async += 1
        got = ring.reap()
        n_async -= len(got)
    deadline = time.monotonic() + 10
    while n_async > 0 and time.monotonic() < deadline:
        e.wait(1, timeout=0.05)
        n_async -= len(ring.reap())
    assert n_async == 0, n_async
    return len(kinds)

def side_engine():
    # a short-lived engine with a head, a cancelled blocked read and a loop
    with compat.Engine(backend) as x:
        rr = RawRing(x, 8)
        b = m.atoms(2); buf = m.buf(4)
        rp2, wp2 = os.pipe()
        m.set(b[0], 0, (rp2, addr(buf), 4), flags=ASYNC)
        m.set(b[1], 39, (), flags=ASYNC, next=b[1])
        x.exec(addr(b[0])); x.exec(addr(b[1]))
        x.cancel()
    os.close(rp2); os.close(wp2)

def settle_counts():
    # io-wq workers leave after an idle timeout: count the others.  The
    # driver and pool workers leave after 100 ms idle: a leaked one stays.
    time.sleep(0.3)
    return fd_count(), sum(1 for n in thread_names().values() if not n.startswith("iou-wrk"))

done = 0
warm = total // 10
samples = []
t0 = time.monotonic()
while done < total:
    done += batch()
    if done % 10000 < len(kinds):
        side_engine()
    if not samples and done >= warm:
        samples.append((done,) + settle_counts() + (rss_kib(),))
end = (done,) + settle_counts() + (rss_kib(),)
c = e.counters()
ring.unregister()
e.close()
print(json.dumps({"warm": samples[0], "end": end, "seconds": round(time.monotonic() - t0, 1),
                  "counters": {k: c[k] for k in ("syslets_sync", "syslets_async", "atoms_uring",
                                                  "atoms_pool", "published", "faults")}}))
"""


def test_no_leaks_over_many_syslets(backend):
    p = run_py(LEAK_CHILD, backend, SYSLETS, timeout=3000 if LONG else 300)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    (n0, fds0, thr0, rss0), (n1, fds1, thr1, rss1) = out["warm"], out["end"]
    assert n1 >= SYSLETS
    assert fds1 == fds0, out
    assert thr1 == thr0, out
    assert rss1 - rss0 < RSS_SLACK_KIB, out
    c = out["counters"]
    assert c["syslets_async"] > n1 // 4 and c["faults"] > 0, c
    if backend == "io_uring":
        assert c["atoms_uring"] > 0
    assert c["atoms_pool"] > 0
    print(f"\nLEAKS {backend}: {n1} syslets in {out['seconds']} s; fds {fds0}->{fds1}, "
          f"threads {thr0}->{thr1}, RSS {rss0}->{rss1} KiB ({rss1 - rss0:+d})")
