"""Personality v6 (LATER_ABIS.md section 3: Zach Brown, September 2007):
80-byte fixed-width atoms (flags and nr u32, every pointer u64,
SKIP_TO_NEXT_ON_STOP advancing 80 bytes), a head of eight u64, the numbers
of a v6 kernel inside atoms, and compat.v6's raw calls.  What v6 shares with
v5 is in test_personality_heads.py."""
import ctypes
import errno
import os
import struct

import pytest

import compat.v6 as v6
from compat import NR, SYSLET_ASYNC, SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_STOP_ON_NEGATIVE, SYSLET_STOP_ON_ZERO
from personality_lib import Head, Heads, errno_of, set_atom, spawn
from syslet_testlib import SENTINEL, addr, wild

UMEM = 1022


@pytest.fixture
def v6heads(executor):
    h = Heads(executor, 6)
    yield h
    h.close()


@pytest.fixture
def v6engine(engine_executor):
    h = Heads(engine_executor, 6)
    yield h
    h.close()


# ---- the 80-byte atom ---------------------------------------------------------------

def test_skip_to_next_on_stop_advances_80_bytes(v6heads):
    """STOP_ON_ZERO with SKIP on atom 0: the next atom run is atom 0 + 80
    (atoms[1]), not atom 0's next (atoms[2]) and not + 88."""
    h = v6heads.head()
    a = v6heads.atoms(3)
    word = v6heads.cell(-1)
    r0, r1, r2 = (v6heads.cell(SENTINEL) for _ in range(3))
    set_atom(a[0], UMEM, (v6heads.cell(addr(word)), v6heads.cell(1)), ret=r0,
             flags=SYSLET_STOP_ON_ZERO | SYSLET_SKIP_TO_NEXT_ON_STOP, next=a[2])
    set_atom(a[1], NR["getpid"], ret=r1)
    set_atom(a[2], NR["getppid"], ret=r2)
    assert addr(a[1]) - addr(a[0]) == 80
    assert v6heads.exec(a, h) == addr(a[1])
    assert (r0.value, r1.value, r2.value) == (0, os.getpid(), SENTINEL)


def test_skip_chain_of_80_byte_atoms(v6heads):
    """Several skips in a row walk the array 80 bytes at a time."""
    h = v6heads.head()
    a = v6heads.atoms(5)
    rets = [v6heads.cell(SENTINEL) for _ in range(5)]
    for i in range(4):      # lseek(-1): -EBADF, stop on negative, skip
        set_atom(a[i], NR["lseek"], (v6heads.cell(-1), v6heads.cell(0), v6heads.cell(0)), ret=rets[i],
                 flags=SYSLET_STOP_ON_NEGATIVE | SYSLET_SKIP_TO_NEXT_ON_STOP, next=0)
    set_atom(a[4], NR["getpid"], ret=rets[4])
    assert v6heads.exec(a, h) == addr(a[4])
    assert [r.value for r in rets] == [-errno.EBADF] * 4 + [os.getpid()]


def test_flags_and_nr_are_two_u32(v6heads):
    """The first word holds flags (low half) and nr (high half): written as
    raw bytes, a getpid with STOP_ON_ZERO.  Read as a v1 atom the same word
    would be an unknown flag (EINVAL)."""
    h = v6heads.head()
    a = v6heads.atoms(1)
    ret = v6heads.cell(SENTINEL)
    set_atom(a[0], 0, ret=ret)
    ctypes.memmove(addr(a), struct.pack("<II", SYSLET_STOP_ON_ZERO, NR["getpid"]), 8)
    assert (a[0].flags, a[0].nr) == (SYSLET_STOP_ON_ZERO, NR["getpid"])
    assert v6heads.exec(a, h) == addr(a)
    assert ret.value == os.getpid()
    # an unknown flag in the upper bits of the u32: EINVAL on the first atom
    ctypes.memmove(addr(a), struct.pack("<II", 0x100, NR["getpid"]), 8)
    assert errno_of(v6heads.exec, a, h) == errno.EINVAL


def test_argument_words_are_u64_and_results_s64(v6heads, tmp_path):
    """lseek to 1 TiB: the offset word's high bits reach the call, and the
    result is stored as 8 bytes; a negative result as a 64-bit -errno."""
    fd = os.open(tmp_path / "sparse", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        h = v6heads.head()
        a = v6heads.atoms(2)
        r0, r1 = v6heads.cell(SENTINEL), v6heads.cell(SENTINEL)
        set_atom(a[0], NR["lseek"], (v6heads.cell(fd), v6heads.cell(1 << 40), v6heads.cell(0)), ret=r0,
                 next=a[1])
        set_atom(a[1], NR["lseek"], (v6heads.cell(fd), v6heads.cell(-1), v6heads.cell(0)), ret=r1)
        assert v6heads.exec(a, h) == addr(a[1])
        assert r0.value == 1 << 40
        assert r1.value == -errno.EINVAL
        assert ctypes.c_uint64.from_address(addr(r1)).value == (1 << 64) - errno.EINVAL
    finally:
        os.close(fd)


def test_the_ring_holds_u64_atom_addresses(v6engine):
    h = v6engine.head(slots=2)
    a = v6engine.atoms(1)
    set_atom(a[0], NR["getpid"], flags=SYSLET_ASYNC)
    assert v6engine.exec(a, h) == 0
    assert v6engine.wait(h, 1, 0)
    assert v6engine.settle()
    assert struct.unpack("<2Q", bytes(h.ring)) == (addr(a), 0)
    assert h.ahu.kernel_ring_idx == 1


# ---- numbers inside v6 atoms ---------------------------------------------------------

def _one(heads, nr, args):
    h = heads.head()
    a = heads.atoms(2)
    ret = heads.cell(SENTINEL)
    cnt = heads.cell(0)
    set_atom(a[0], nr, [heads.cell(v) for v in args], ret=ret, next=a[1])
    set_atom(a[1], UMEM, (heads.cell(addr(cnt)), heads.cell(1)))
    assert heads.run(a, h)[0] == addr(a[1])
    assert cnt.value == 1
    return ret.value


def test_288_is_umem_add_in_a_v6_atom(v6heads):
    word = v6heads.cell(10)
    assert _one(v6heads, 288, (addr(word), 32)) == 42
    assert word.value == 42


@pytest.mark.parametrize("nr", [286, 287, 289])
def test_the_other_v6_syslet_numbers_are_refused(v6heads, nr):
    assert _one(v6heads, nr, (addr(v6heads.cell(0)), 1, 0)) == -errno.EINVAL


@pytest.mark.parametrize("nr,args,want", [
    (280, (-1, 0, 0, 0), -errno.EBADF),         # utimensat(-1, NULL, ...)
    (281, (-1, 0, 1, 0, 0, 8), -errno.EBADF),   # epoll_pwait
    (282, (-1, 0, 8), -errno.EFAULT),           # signalfd, NULL mask
])
def test_v5s_numbers_are_ordinary_calls_in_a_v6_atom(v6heads, nr, args, want):
    assert _one(v6heads, nr, args) == want


def test_283_is_timerfd_create_in_a_v6_atom(v6heads):
    fd = _one(v6heads, 283, (1, os.O_CLOEXEC))      # CLOCK_MONOTONIC, TFD_CLOEXEC
    assert fd >= 0
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[timerfd]"
    os.close(fd)


# ---- compat.v6: the pinned raw calls ---------------------------------------------------

def test_raw_calls(raw_api, pages):
    h = Head(6, slots=4)
    assert h.ahu.completion_ring_ptr == addr(h.ring)
    a = (v6.syslet_uatom * 1)()
    ret = ctypes.c_int64(SENTINEL)
    set_atom(a[0], NR["getpid"], ret=ret)
    assert v6.async_exec(addr(a), h.addr) == addr(a)
    assert ret.value == os.getpid()
    a[0].flags = SYSLET_ASYNC
    assert v6.async_exec(addr(a), h.addr) == 0
    assert spawn(v6.async_wait, 1, 0, h.addr).result(20) == 0
    assert h.ring[0] == addr(a) and h.ahu.kernel_ring_idx == 1
    assert errno_of(v6.async_exec, addr(a), wild("freed", pages)) == errno.EFAULT
    h.ahu.new_thread_stack = 0
    assert errno_of(v6.async_exec, addr(a), h.addr) == errno.EINVAL
    assert errno_of(v6.async_wait, 5, 0, h.addr) == errno.EINVAL
    assert errno_of(v6.async_thread, 0, 16) == errno.EFAULT
    word = ctypes.c_uint64(40)
    assert v6.umem_add(addr(word), 2) == 42
