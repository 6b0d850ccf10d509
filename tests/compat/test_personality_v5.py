"""Personality v5 (LATER_ABIS.md section 2: the ABI of v3, v4 and v5):
v1's 88-byte atoms with a head per call, the numbers of a v5 kernel inside
atoms, fio's v4 batching, and compat.v5's raw calls on the default context.
What v5 shares with v6 is in test_personality_heads.py."""
import ctypes
import errno
import os

import pytest

import compat.v5 as v5
from compat import NR, SYSLET_ASYNC, SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_STOP_ON_ZERO
from personality_lib import Head, Heads, Pipe, errno_of, set_atom, spawn
from syslet_testlib import SENTINEL, addr, pattern, wait_until, wild


@pytest.fixture
def v5heads(executor):
    h = Heads(executor, 5)
    yield h
    h.close()


@pytest.fixture
def v5engine(engine_executor):
    h = Heads(engine_executor, 5)
    yield h
    h.close()


# ---- numbers inside v5 atoms ------------------------------------------------------

def _one(heads, nr, args):
    h = heads.head()
    a = heads.atoms(2)
    ret = heads.cell(SENTINEL)
    cnt = heads.cell(0)
    set_atom(a[0], nr, [heads.cell(v) for v in args], ret=ret, next=a[1])
    set_atom(a[1], 1012, (heads.cell(addr(cnt)), heads.cell(1)))
    assert heads.run(a, h)[0] == addr(a[1])        # (calls that may sleep may go async)
    assert cnt.value == 1           # the chain went on
    return ret.value


def test_282_is_umem_add_in_a_v5_atom(v5heads):
    word = v5heads.cell(10)
    assert _one(v5heads, 282, (addr(word), 32)) == 42
    assert word.value == 42


@pytest.mark.parametrize("nr", [280, 281, 283])
def test_the_other_v5_syslet_numbers_are_refused(v5heads, nr):
    assert _one(v5heads, nr, (addr(v5heads.cell(0)), 1, 0)) == -errno.EINVAL


ZEROS = ctypes.create_string_buffer(64)


@pytest.mark.parametrize("nr,args,want", [
    (286, (-1, 0, addr(ZEROS), 0), -errno.EBADF),   # timerfd_settime
    (287, (-1, 0), -errno.EBADF),               # timerfd_gettime
    (288, (-1, 0, 0, 0), -errno.EBADF),         # accept4
    (289, (-1, 0, 8, 0), -errno.EFAULT),        # signalfd4, NULL mask
])
def test_v6s_numbers_are_ordinary_calls_in_a_v5_atom(v5heads, nr, args, want):
    assert _one(v5heads, nr, args) == want


# ---- fio's v4 batching: a chain of pread64 atoms through next ------------------------

@pytest.fixture
def datafd(tmp_path):
    data = pattern(64 * 1024, 5)
    p = tmp_path / "data"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    os.read(fd, len(data))          # page cache
    yield fd, data
    os.close(fd)


def _batch(heads, fd, n, bad=()):
    """n pread64 atoms, flags 0, chained through next (atoms in bad get fd -1)."""
    atoms = heads.atoms(n)
    fdc, badc = heads.cell(fd), heads.cell(-1)
    size = heads.cell(512)
    bufs = [heads.keep(ctypes.create_string_buffer(512)) for _ in range(n)]
    rets = [heads.cell(SENTINEL) for _ in range(n)]
    for i in range(n):
        set_atom(atoms[i], NR["pread64"], (badc if i in bad else fdc, heads.cell(addr(bufs[i])), size,
                                            heads.cell(1000 * i)),
                 ret=rets[i], next=atoms[i + 1] if i + 1 < n else None)
    return atoms, bufs, rets


def test_a_batch_completes_at_its_tail(v5heads, datafd):
    """One async_exec for the chain; the returned atom is the tail (fio
    asserted tail->next == NULL) and every atom's result is in its cell;
    a failing atom without STOP bits does not end the chain."""
    fd, data = datafd
    atoms, bufs, rets = _batch(v5heads, fd, 16, bad={5})
    h = v5heads.head()
    final, went_async = v5heads.run(atoms, h)
    assert final == addr(atoms[15])
    for i in range(16):
        if i == 5:
            assert rets[i].value == -errno.EBADF
        else:
            assert rets[i].value == 512
            assert bufs[i].raw == data[1000 * i:1000 * i + 512]


def test_an_async_batch_publishes_its_tail_once(v5engine, datafd):
    fd, data = datafd
    atoms, bufs, rets = _batch(v5engine, fd, 8)
    atoms[0].flags = SYSLET_ASYNC
    h = v5engine.head(slots=4)
    assert v5engine.exec(atoms, h) == 0
    assert v5engine.wait(h, 1, 0)
    assert v5engine.settle()
    assert list(h.ring) == [addr(atoms[7]), 0, 0, 0]
    assert [r.value for r in rets] == [512] * 8


def test_a_lone_cached_read_takes_the_fast_path(v5engine, datafd):
    """v5 atoms have v1's layout: a lone read completes without blocking on
    the same path as v1's (RWF_NOWAIT in the caller)."""
    fd, data = datafd
    atoms, bufs, rets = _batch(v5engine, fd, 1)
    h = v5engine.head()
    before = v5engine.counters()["atoms_nowait"]
    for _ in range(3):
        assert v5engine.exec(atoms, h) == addr(atoms[0])
    assert v5engine.counters()["atoms_nowait"] == before + 3
    assert rets[0].value == 512 and bufs[0].raw == data[:512]
    assert h.entries() == []


def test_skip_advances_88_bytes(v5heads):
    h = v5heads.head()
    a = v5heads.atoms(3)
    word = v5heads.cell(-1)
    r1, r2 = v5heads.cell(SENTINEL), v5heads.cell(SENTINEL)
    set_atom(a[0], 1012, (v5heads.cell(addr(word)), v5heads.cell(1)),
             flags=SYSLET_STOP_ON_ZERO | SYSLET_SKIP_TO_NEXT_ON_STOP, next=a[2])
    set_atom(a[1], NR["getpid"], ret=r1)
    set_atom(a[2], NR["getppid"], ret=r2)
    assert addr(a[1]) == addr(a[0]) + 88
    assert v5heads.exec(a, h) == addr(a[1])
    assert (r1.value, r2.value) == (os.getpid(), SENTINEL)


# ---- compat.v5: the pinned raw calls on the default context ---------------------------

def test_raw_calls(raw_api, pages):
    h = Head(5, slots=4)
    a = (v5.syslet_uatom * 1)()
    ret = ctypes.c_int64(SENTINEL)
    set_atom(a[0], NR["getpid"], ret=ret)
    assert v5.async_exec(addr(a), h.addr) == addr(a)
    assert ret.value == os.getpid()
    a[0].flags = SYSLET_ASYNC
    assert v5.async_exec(addr(a), h.addr) == 0
    assert spawn(v5.async_wait, 1, 0, h.addr).result(20) == 0
    assert h.ring[0] == addr(a) and h.ahu.kernel_ring_idx == 1
    assert v5.async_wait(0, 3, h.addr) == 0
    assert errno_of(v5.async_exec, addr(a), wild("freed", pages)) == errno.EFAULT
    assert errno_of(v5.async_exec, 0, h.addr) == errno.EFAULT
    assert errno_of(v5.async_wait, 1, 4, h.addr) == errno.EINVAL
    assert errno_of(v5.async_wait, 1, 0, 0) == errno.EFAULT
    assert errno_of(v5.async_thread, 0, 16) == errno.EFAULT
    word = ctypes.c_uint64(40)
    assert v5.umem_add(addr(word), 2) == 42 and word.value == 42
    assert errno_of(v5.umem_add, 16, 1) == errno.EFAULT


def test_raw_wait_wakes_when_the_pipe_fills(raw_api):
    h = Head(5, slots=2)
    p = Pipe()
    try:
        a = (v5.syslet_uatom * 1)()
        buf = ctypes.create_string_buffer(4)
        cells = [ctypes.c_long(p.r), ctypes.c_long(addr(buf)), ctypes.c_long(4)]
        set_atom(a[0], NR["read"], cells)
        assert v5.async_exec(addr(a), h.addr) == 0
        w = spawn(v5.async_wait, 1, 0, h.addr)
        os.write(p.w, b"done")
        assert w.result(20) == 0
        assert h.ring[0] == addr(a) and buf.raw == b"done"
        assert wait_until(lambda: compat_inflight() == 0)
    finally:
        p.close()


def compat_inflight():
    import compat
    return compat.default_engine().inflight()
