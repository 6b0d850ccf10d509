"""The engine's own descriptors (issue 13, items 2 and 3): a program that
closes every descriptor above 2 (close_range(3, ~0U)) or dup2s its own file
over the engine's numbers keeps working; a pool completion that cannot be
posted is not dropped; a ring whose shared indices were written over, or
whose descriptor is lost for good, fails loudly (OSError(EIO)) instead of
hanging.  Every scenario runs in a child process (it closes every fd,
including pytest's), bounded by the child's timeout: a hang fails the test.
docs/decisions.md D33."""
import pytest

from rel_lib import describe, last_json, run_py

#: Shared by the children: syslets of every path, checked by their memory.
PRELUDE = r"""
import ctypes, errno, json, os, sys, tempfile, threading, time
import compat
from rel_lib import ASYNC, SYNC, KEEPER, Mem, RawRing, addr, install_seccomp, thread_names
backend = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
m = Mem()
ts = (ctypes.c_long * 2)(0, 1_000_000)          # 1 ms: a pool call (no io_uring opcode)
m.keep.append(ts)

def close_range_all():
    assert libc.syscall(436, 3, 0xFFFFFFFF, 0) == 0      # close_range(3, ~0U, 0)

def fds():
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out

def run_all(e, ring):
    '''A SYNC pipe read that waits (io_uring or a pool worker), a read that
    goes async, a SYNC and an ASYNC pool call: their results and bytes.'''
    out = []
    for flags in (SYNC, 0):
        rp, wp = os.pipe()
        a = m.atoms(1)[0]; r = m.cell(-999); buf = m.buf(8)
        m.set(a, 0, (rp, addr(buf), 4), ret=r, flags=flags)
        t = threading.Timer(0.1, os.write, (wp, b"wxyz"))
        t.start()
        x = e.exec(addr(a))
        if x == 0:
            assert e.wait(1, timeout=20) and ring.reap() == [addr(a)]
        t.join()
        os.close(rp); os.close(wp)
        out.append([r.value, buf.raw[:4].decode()])
    for flags in (SYNC, ASYNC):
        a = m.atoms(1)[0]; r = m.cell(-999)
        m.set(a, 35, (addr(ts), 0), ret=r, flags=flags)
        x = e.exec(addr(a))
        if x == 0:
            assert e.wait(1, timeout=20) and ring.reap() == [addr(a)]
        out.append(r.value)
    return out
"""

WANT = [[4, "wxyz"], [4, "wxyz"], 0, 0]


def run_child(code, backend, timeout=60):
    p = run_py(PRELUDE + code, backend, timeout=timeout)
    assert p.returncode == 0, describe(p)
    return last_json(p.stdout)


CLOSE_RANGE_CHILD = r"""
e = compat.Engine(backend)
ring = RawRing(e, 64)
res = {"before": run_all(e, ring), "rounds": []}
for _ in range(2):
    close_range_all()
    c0 = e.counters()
    got = run_all(e, ring)
    c = e.counters()
    res["rounds"].append({"got": got, **{k: c.get(k, 0) - c0.get(k, 0) for k in
                          ("caller_waits", "fd_recoveries", "post_fallbacks")}})
e.close()
print(json.dumps(res))
"""


def test_engine_survives_close_range(backend):
    """close_range(3, ~0U) twice while the engine lives: every kind of syslet
    completes with the right bytes; the io_uring backend took its ring and
    the pool's target back (2 recoveries a round), the pool-only backend made
    its eventfd anew (1); a waiting caller slept in the kernel instead of
    spinning on a dead descriptor (before: the io_uring backend hung, the
    pool-only one made some 10^5 kernel waits per round)."""
    out = run_child(CLOSE_RANGE_CHILD, backend)
    assert out["before"] == WANT, out
    for rnd in out["rounds"]:
        assert rnd["got"] == WANT, out
        assert rnd["fd_recoveries"] == (2 if backend == "io_uring" else 1), out
        assert rnd["post_fallbacks"] == 0, out
        assert rnd["caller_waits"] < 2000, out      # two 0.1 s waits in 2-20 ms slices


DUP2_CHILD = r"""
before = set(fds())
e = compat.Engine(backend)
ring = RawRing(e, 64)
res = {"before": run_all(e, ring)}
mine = sorted(fd for fd, t in fds().items() if fd not in before and t.startswith("anon_inode:"))
res["kinds"] = sorted(set(fds()[fd] for fd in mine))
victim = tempfile.TemporaryFile()
victim.write(b"precious"); victim.flush(); os.lseek(victim.fileno(), 0, os.SEEK_SET)
for fd in mine:
    os.dup2(victim.fileno(), fd)
res["after"] = run_all(e, ring)
res["after2"] = run_all(e, ring)
res["fd_recoveries"] = e.counters().get("fd_recoveries", 0)
res["victim_offset"] = os.lseek(victim.fileno(), 0, os.SEEK_CUR)
res["victim"] = os.pread(victim.fileno(), 64, 0).decode()
e.close()
res["still_victims"] = all(os.path.sameopenfile(fd, victim.fileno()) for fd in mine)
print(json.dumps(res))
"""


def test_engine_survives_dup2_over_its_fds(backend):
    """The program dup2s a file of its own over every descriptor the engine
    made: the engine neither reads nor writes that file (its bytes and
    offset stay), takes its ring back or makes a new eventfd, and every kind
    of syslet completes; close() leaves the program's file on those numbers
    (before: io_uring hung, the pool wrote eventfd counts into the file)."""
    out = run_child(DUP2_CHILD, backend)
    assert out["before"] == WANT and out["after"] == WANT and out["after2"] == WANT, out
    assert out["kinds"] == (["anon_inode:[io_uring]"] if backend == "io_uring"
                            else ["anon_inode:[eventfd]"]), out
    assert out["victim"] == "precious" and out["victim_offset"] == 0, out
    assert out["fd_recoveries"] >= 1, out
    assert out["still_victims"], out


WORKER_RINGS_CHILD = r"""
before = fds()
e = compat.Engine(backend)
ring = RawRing(e, 64)
after_new = fds()
# eight pool calls at once: every pool worker (4) starts and makes its own ring
atoms = m.atoms(8)
cells = [m.cell(-999) for _ in range(8)]
for a, r in zip(atoms, cells):
    m.set(a, 35, (addr(ts), 0), ret=r, flags=ASYNC)
    assert e.exec(addr(a)) == 0
assert e.wait(8, timeout=20) and len(ring.reap()) == 8
busy = fds()
res = {"workers": e.threads() - 1, "results": [r.value for r in cells],
       "new_at_creation": sorted(t for fd, t in after_new.items() if fd not in before),
       "new_while_busy": sorted(t for fd, t in busy.items() if fd not in after_new),
       "low": sorted(fd for fd in busy if fd not in before and fd < 256)}
e.close()
print(json.dumps(res))
"""


def test_pool_worker_rings_have_no_descriptor(needs_io_uring):
    """The pool workers' own rings (for MSG_RING) never appear in the file
    table (IORING_SETUP_REGISTERED_FD_ONLY); the engine's two descriptors
    (its ring and the pool's reference to it) sit at high numbers.  Before:
    one low-numbered io_uring fd per worker."""
    out = run_child(WORKER_RINGS_CHILD, "io_uring")
    assert out["results"] == [0] * 8 and out["workers"] >= 2, out
    assert out["new_at_creation"] == ["anon_inode:[io_uring]"] * 2, out
    assert out["new_while_busy"] == [] and out["low"] == [], out


KEEPER_CHILD = r"""
def keepers():
    return sum(1 for n in thread_names(keeper=True).values() if n == KEEPER)
res = {"start": keepers()}
e = compat.Engine(backend)
e2 = compat.Engine(backend)
res["two_engines"] = keepers()
e.close()
res["one_engine"] = keepers()
e2.close()
deadline = time.monotonic() + 10
while keepers() and time.monotonic() < deadline:
    time.sleep(0.01)
res["none"] = keepers()
print(json.dumps(res))
"""


def test_the_keeper_lives_as_long_as_the_rings(backend):
    """One descriptor keeper thread per process while io_uring engines live
    (none for the pool-only backend, whose eventfd needs no keeper), gone
    after the last engine closes."""
    out = run_child(KEEPER_CHILD, backend)
    n = 1 if backend == "io_uring" else 0
    assert out == {"start": 0, "two_engines": n, "one_engine": n, "none": 0}, out


NO_KEEPER_CHILD = r"""
# pidfd_getfd refused (as some sandboxes do): no descriptor keeper can work
install_seccomp([(438, 438, 0x00050000 | errno.EPERM)])
e = compat.Engine(backend)
ring = RawRing(e, 64)
res = {"before": run_all(e, ring)}
close_range_all()
try:
    res["after"] = run_all(e, ring)
except OSError as ex:
    res["after"] = ["OSError", errno.errorcode[ex.errno]]
res["fault"] = e.fault() is not None
calls = {"exec": lambda: e.exec(addr(m.set(m.atoms(1)[0], 39, ()))),
         "wait": lambda: e.wait(1, timeout=1),
         "unregister": lambda: ring.unregister(1)}
res["calls"] = {}
for name, f in calls.items():
    try:
        f()
        res["calls"][name] = "ok"
    except OSError as ex:
        res["calls"][name] = errno.errorcode[ex.errno]
e.close()
print(json.dumps(res))
"""


def test_a_ring_lost_for_good_fails_loudly(backend):
    """Without a keeper (pidfd_getfd refused by seccomp) close_range takes the
    io_uring backend's ring for good: the next call raises OSError(EIO) and
    so does every later one, Engine.fault() says why, close() returns
    (before: the next syslet hung).  The pool-only backend needs no keeper
    and just goes on."""
    out = run_child(NO_KEEPER_CHILD, backend)
    assert out["before"] == WANT, out
    if backend == "io_uring":
        assert out["after"] == ["OSError", "EIO"] and out["fault"], out
        assert out["calls"] == {"exec": "EIO", "wait": "EIO", "unregister": "EIO"}, out
    else:
        assert out["after"] == WANT and not out["fault"], out
        assert out["calls"] == {"exec": "ok", "wait": "ok", "unregister": "ok"}, out


INDICES_CHILD = r"""
which = int(sys.argv[2])
e = compat.Engine(backend)
ring = RawRing(e, 64)
res = {"before": run_all(e, ring)}
addrs = e._ring_index_addrs()
# a SYSLET_SYNC read blocked in the kernel while the program scribbles
rp, wp = os.pipe()
a = m.atoms(1)[0]; r = m.cell(-999); buf = m.buf(8)
m.set(a, 0, (rp, addr(buf), 4), ret=r, flags=SYNC)
blocked = {}
def reader():
    try:
        blocked["ret"] = e.exec(addr(a))
    except OSError as ex:
        blocked["ret"] = errno.errorcode[ex.errno]
t = threading.Thread(target=reader)
t.start()
time.sleep(0.1)
word = ctypes.c_uint32.from_address(addrs[which])
word.value = (word.value + 100000) & 0xFFFFFFFF          # out of bounds
t.join(20)
res["blocked"] = blocked.get("ret", "hung")
res["fault"] = e.fault() is not None
res["calls"] = {}
for name, f in {"exec": lambda: e.exec(addr(m.set(m.atoms(1)[0], 39, ()))),
                "wait": lambda: e.wait(1, timeout=1),
                "register": lambda: RawRing(e, 8)}.items():
    try:
        f()
        res["calls"][name] = "ok"
    except OSError as ex:
        res["calls"][name] = errno.errorcode[ex.errno]
os.write(wp, b"late")
e.close()
print(json.dumps(res))
"""


@pytest.mark.parametrize("which", ["sq_head", "sq_tail", "cq_head", "cq_tail"])
def test_ring_indices_out_of_bounds_fail_loudly(needs_io_uring, which):
    """The program writes over one of the ring's shared indices while a
    SYSLET_SYNC read waits: that caller gets OSError(EIO) instead of
    spinning on garbage CQEs or waiting for ever, and so does every later
    call (exec, wait, register); Engine.fault() says why; close() returns."""
    idx = ["sq_head", "sq_tail", "cq_head", "cq_tail"].index(which)
    p = run_py(PRELUDE + INDICES_CHILD, "io_uring", idx, timeout=60)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out["before"] == WANT, out
    assert out["blocked"] == "EIO" and out["fault"], out
    assert out["calls"] == {"exec": "EIO", "wait": "EIO", "register": "EIO"}, out


UNPOSTED_CHILD = r"""
# no keeper (pidfd_getfd refused): the pool's reference to the ring, once
# replaced, cannot be taken back, so posting into the ring is impossible
install_seccomp([(438, 438, 0x00050000 | errno.EPERM)])
import uring_shim
ringobj = uring_shim.Ring(64)
before = set(fds())
pool = uring_shim.Pool(max_workers=2, ring=ringobj)
dup = [fd for fd, t in fds().items() if fd not in before and t == "anon_inode:[io_uring]"]
buf = bytearray(4)
rp, wp = os.pipe()
os.write(wp, b"abcd")
uds = pool.submit_many([(39, ()), (0, (rp, buf, 4))], user_data=[7, 8])
got = ringobj.wait(2, timeout=20)
res = {"posted": sorted((c.user_data, c.res) for c in got)}
devnull = os.open("/dev/null", os.O_RDWR)
for fd in dup:
    os.dup2(devnull, fd)
os.write(wp, b"efgh")
pool.submit_many([(39, ()), (0, (rp, buf, 4))], user_data=[9, 10])
got = ringobj.wait(2, timeout=20)
res["unposted"] = sorted((c.user_data, c.res) for c in got)
res["buf"] = bytes(buf).decode()
res["stats"] = pool.stats()
res["dup"] = len(dup)
pool.close(); ringobj.close()
print(json.dumps(res))
"""


def test_pool_completions_that_cannot_be_posted_still_arrive(needs_io_uring):
    """uring_shim.Pool(ring=...): the pool's reference to the ring is
    replaced and cannot be taken back; its completions go to the pool's
    list and ring.wait() returns them with their exact results (before:
    dropped after the failed post, and the waiter waited for ever)."""
    p = run_py(PRELUDE + UNPOSTED_CHILD, "io_uring", timeout=60)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out["dup"] == 1, out
    assert [ud for ud, _ in out["posted"]] == [7, 8] and out["posted"][1][1] == 4, out
    assert [ud for ud, _ in out["unposted"]] == [9, 10] and out["unposted"][1][1] == 4, out
    assert out["buf"] == "efgh", out
    assert out["stats"]["posted"] == 2 and out["stats"]["post_fallbacks"] == 2, out
