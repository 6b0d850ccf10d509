"""Teardown with work in flight: runaway loops, blocked pool calls, io_uring
reads into buffers, unregister/close from another thread.  Everything is
bounded in time and nothing writes into a buffer after close returns."""
import ctypes
import errno
import fcntl
import os
import termios
import threading
import time

import pytest

import compat
from rel_lib import (ASYNC, SYNC, Mem, RawRing, addr, describe, last_json, run_py, thread_names,
                     wait_until)

ECANCELED, ELOOP = -errno.ECANCELED, -errno.ELOOP


def timed(f, *a, **kw):
    t0 = time.monotonic()
    r = f(*a, **kw)
    return r, time.monotonic() - t0


def pending(fd):
    n = ctypes.c_int()
    fcntl.ioctl(fd, termios.FIONREAD, n)
    return n.value


def test_context_close_cancels_a_runaway_loop(backend):
    ctx = compat.Context(backend=backend, ring_slots=8)
    ch = ctx.chain()
    r = ctx.var()
    a = ch.getpid(ret=r, flags=ASYNC)
    ch.loop_to(a)                                   # never ends by itself
    assert ctx.exec(ch) is None
    time.sleep(0.1)
    assert ctx.engine.inflight() == 1
    _, took = timed(ctx.close, cancel=True)
    assert took < 2.0, took
    assert r.value == ECANCELED


def test_engine_cancel_stops_the_loop_and_publishes_it(backend):
    m = Mem()
    with compat.Engine(backend) as e:
        ring = RawRing(e, 8)
        a = m.atoms(1)[0]
        r = m.cell(0)
        m.set(a, 39, (), ret=r, flags=ASYNC, next=a)
        assert e.exec(addr(a)) == 0
        time.sleep(0.05)
        _, took = timed(e.cancel)
        assert e.wait(1, timeout=2) and ring.reap() == [addr(a)], "cancelled loop not published"
        assert r.value == ECANCELED and took < 1.0
        # cancelling is not permanent: new syslets run normally
        b = m.atoms(1)[0]
        rb = m.cell(0)
        m.set(b, 39, (), ret=rb, flags=ASYNC)
        assert e.exec(addr(b)) == 0 and e.wait(1, timeout=2) and ring.reap() == [addr(b)]
        assert rb.value == os.getpid()
        ring.unregister()


def test_budget_ends_a_loop_so_raw_unregister_returns(backend):
    """async_unregister waits for every in-flight syslet; with the atom
    budget a runaway loop ends (-ELOOP) and unregister returns."""
    m = Mem()
    compat.reset_default()
    compat._default = compat.Engine(backend)
    try:
        compat.default_engine().set_budget(200_000)
        ring = (ctypes.c_uint64 * 8)()
        ahu = compat.async_head_user(addr(ring), 64, 2**64 - 1)
        assert compat.async_register(addr(ahu), 24) == 0
        a = m.atoms(1)[0]
        r = m.cell(0)
        m.set(a, 39, (), ret=r, flags=ASYNC, next=a)
        assert compat.async_exec(addr(a)) == 0
        _, took = timed(compat.async_unregister, addr(ahu), 24)
        assert ring[0] == addr(a) and r.value == ELOOP
        assert took < 20, took
    finally:
        compat.reset_default()


def test_unregister_with_a_timeout_while_blocked(backend):
    m = Mem()
    with compat.Engine(backend) as e:
        ring = RawRing(e, 8)
        rp, wp = os.pipe()
        buf = m.buf(8)
        a = m.atoms(1)[0]
        r = m.cell(-999)
        m.set(a, 0, (rp, addr(buf), 4), ret=r, flags=ASYNC)
        assert e.exec(addr(a)) == 0
        with pytest.raises(OSError) as ei:
            timed(ring.unregister, timeout=0.2)
        assert ei.value.errno == errno.ETIME
        os.write(wp, b"abcd")
        ring.unregister(timeout=5)          # drained: the read completed and was published
        assert ring.ring[0] == addr(a) and r.value == 4
        os.close(rp)
        os.close(wp)


@pytest.mark.parametrize("cancel", [True, False])
def test_close_with_blocked_pool_calls_is_bounded(backend, cancel):
    """nanosleep(30 s) has no io_uring opcode: it blocks pool workers."""
    m = Mem()
    e = compat.Engine(backend)
    ring = RawRing(e, 16)
    ts = (ctypes.c_long * 2)(30, 0)
    m.keep.append(ts)
    rets = []
    for i in range(6):
        a = m.atoms(1)[0]
        r = m.cell(-999)
        rets.append(r)
        m.set(a, 35, (addr(ts), 0), ret=r, flags=ASYNC)
        assert e.exec(addr(a)) == 0
    assert wait_until(lambda: e.threads() >= 2, 2)
    _, took = timed(e.close, cancel=cancel)
    # cancel: interrupted at once; without: abandoned after the 3 s grace
    assert took < (2.0 if cancel else 8.0), took
    if cancel:
        assert all(r.value in (-errno.EINTR, ECANCELED, -999) for r in rets), [r.value for r in rets]


def test_close_leaves_inflight_read_buffers_alone(backend):
    """Reads blocked on empty pipes (io_uring: poll-armed; pool: workers in
    read()): after close, data written to the pipes stays in the pipes and
    the old buffers are never written."""
    m = Mem()
    K = 12
    e = compat.Engine(backend)
    ring = RawRing(e, 32)
    pipes = [os.pipe() for _ in range(K)]
    bufs = [m.buf(64, b"\xee" * 64) for _ in range(K)]
    rets = [m.cell(-999) for _ in range(K)]
    for i in range(K):
        a = m.atoms(1)[0]
        m.set(a, 0, (pipes[i][0], addr(bufs[i]), 64), ret=rets[i], flags=ASYNC if i % 2 else 0)
        assert e.exec(addr(a)) == 0
    time.sleep(0.05)
    _, took = timed(e.close, cancel=True)
    assert took < 3.0, took
    for rp, wp in pipes:
        os.write(wp, b"late data")
    time.sleep(0.2)
    assert all(b.raw == b"\xee" * 64 for b in bufs), "a buffer was written after close"
    assert [pending(rp) for rp, _ in pipes] == [9] * K
    assert all(r.value in (-999, ECANCELED, -errno.EINTR) for r in rets), [r.value for r in rets]
    for rp, wp in pipes:
        os.close(rp)
        os.close(wp)


def test_context_close_with_a_full_ring_and_work_in_flight(backend):
    """Nobody consumes: the ring is full and more syslets wait to publish;
    close() still returns promptly (it drops what nobody will reap)."""
    ctx = compat.Context(backend=backend, ring_slots=4)
    for _ in range(40):
        ch = ctx.chain()
        ch.getpid(flags=ASYNC)
        assert ctx.exec(ch) is None
    assert wait_until(lambda: ctx.engine.ring_count() == 4, 2)
    _, took = timed(ctx.close)
    assert took < 2.0, took


CLOSE_RACE = r"""
import errno, json, os, sys, threading, time
import compat
from rel_lib import ASYNC, SYNC, Mem, RawRing, addr
backend, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
res, closes = [], []
for _ in range(n):
    e = compat.Engine(backend)
    ring = RawRing(e, 8)
    m = Mem()
    rp, wp = os.pipe()
    def caller():
        try:
            if kind == "wait":
                e.wait(1)
            else:   # a SYNC read blocking in this thread (pool backend: inline)
                a = m.atoms(1)[0]; r = m.cell(-999); buf = m.buf(8)
                m.set(a, 0, (rp, addr(buf), 4), ret=r, flags=SYNC)
                e.exec(addr(a))
            res.append("returned")
        except OSError as ex:
            res.append(errno.errorcode[ex.errno])
    t = threading.Thread(target=caller)
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    e.close()
    closes.append(time.monotonic() - t0)
    os.write(wp, b"abcd")           # lets a blocked inline read return
    t.join(10)
    res.append("hung" if t.is_alive() else "joined")
    try:
        e.threads()
    except OSError as ex:
        res.append("after:" + errno.errorcode[ex.errno])
    os.close(rp); os.close(wp)
print(json.dumps({"res": {k: res.count(k) for k in set(res)}, "max_close": max(closes)}))
"""


@pytest.mark.parametrize("kind", ["wait", "sync_exec"])
def test_close_while_another_thread_is_inside(backend, kind):
    """close() from one thread while another waits or runs a blocking
    syslet: no use after free (in a child: a crash fails the test), the
    waiter gets EBADF, a blocked inline call frees the context on return."""
    n = 20 if kind == "wait" else 3
    p = run_py(CLOSE_RACE, backend, kind, n, timeout=120)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out["res"].get("joined") == n and out["res"].get("after:EBADF") == n, out
    if kind == "wait":
        assert out["res"].get("EBADF") == n and out["max_close"] < 1.0, out
    else:
        assert out["res"].get("returned", 0) + out["res"].get("EBADF", 0) == n, out
        assert out["max_close"] < 3.0, out


def test_submitting_thread_exits_with_syslets_in_flight(backend):
    """Syslets outlive the thread that started them (its io-wq included)."""
    m = Mem()
    with compat.Engine(backend) as e:
        ring = RawRing(e, 32)
        rp, wp = os.pipe()
        bufs = m.buf(16)
        rets = [m.cell(-999) for _ in range(16)]
        atoms = m.atoms(16)

        def submit(lo):
            for i in range(lo, lo + 4):
                m.set(atoms[i], 0, (rp, addr(bufs) + i, 1), ret=rets[i], flags=ASYNC if i % 2 else 0)
                assert e.exec(addr(atoms[i])) == 0
        ths = [threading.Thread(target=submit, args=(lo,)) for lo in range(0, 16, 4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        time.sleep(0.1)
        os.write(wp, b"z" * 16)
        got = []
        assert wait_until(lambda: got.extend(ring.reap()) or len(got) == 16, 5), got
        assert sorted(got) == sorted(addr(a) for a in atoms)
        assert [r.value for r in rets] == [1] * 16
        ring.unregister()
        os.close(rp)
        os.close(wp)


def test_an_idle_driver_ends_and_the_next_async_syslet_starts_another(backend):
    """The driver thread ends after ~100 ms with nothing in flight (engine.c
    DRIVER_IDLE_NS), so an idle context keeps no thread of its own and a
    process whose syslets all complete synchronously is single-threaded
    again; the next syslet that goes async starts a new one, and close()
    joins whichever ended last.  Repeated around the timeout, where an exit
    races with a new submission."""
    m = Mem()
    base = set(thread_names())
    e = compat.Engine(backend)
    try:
        ring = RawRing(e, 8)
        for delay in (0.3, 0.09, 0.1, 0.11, 0.1, 0.3, 0.0):
            a = m.atoms(1)[0]
            r = m.cell(0)
            m.set(a, 39, (), ret=r, flags=ASYNC)            # getpid, went async
            assert e.exec(addr(a)) == 0
            assert e.wait(1, timeout=5) and ring.reap() == [addr(a)]
            assert r.value == os.getpid()
            time.sleep(delay)
        busy = e.threads()
        assert busy >= 1                                    # the driver at least
        assert wait_until(lambda: e.threads() == busy - 1, 3), (busy, e.threads())
        # the thread itself is gone, not only the count
        assert wait_until(lambda: len(set(thread_names()) - base) == busy - 1, 3)
        # a synchronous syslet needs no driver
        a = m.atoms(1)[0]
        r = m.cell(0)
        m.set(a, 39, (), ret=r)
        assert e.exec(addr(a)) == addr(a) and r.value == os.getpid()
        assert e.threads() == busy - 1
    finally:
        e.close()
    assert wait_until(lambda: not set(thread_names()) - base, 3)
