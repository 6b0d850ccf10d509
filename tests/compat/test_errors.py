"""Every error case of SYSLET_SPEC.md (sections 1-6) on every executor:
errno values and memory contents, never messages."""
import ctypes
import errno
import os

import psutil
import pytest

import compat
from compat import (NR, SYSLET_ASYNC, SYSLET_STOP_ON_NEGATIVE, SYSLET_SYNC, async_head_user)
from syslet_testlib import SENTINEL, Raw, addr, new_executor, set_atom


def errno_of(fn, *args):
    with pytest.raises(OSError) as ei:
        fn(*args)
    return ei.value.errno


# ---- async_exec ---------------------------------------------------------------------------

def test_exec_without_a_registered_head_is_einval(executor):
    a = (compat.syslet_uatom * 1)()
    cnt = ctypes.c_int64(0)
    arg = ctypes.c_int64(addr(cnt))
    one = ctypes.c_int64(1)
    set_atom(a[0], NR["umem_add"], (arg, one))
    with new_executor(executor) as e:
        assert errno_of(e.exec, addr(a[0])) == errno.EINVAL
        ring = (ctypes.c_uint64 * 2)()
        e.register(addr(ring), 16, -1)
        e.unregister(addr(ring), 16)
        assert errno_of(e.exec, addr(a[0])) == errno.EINVAL     # after unregister too
    assert cnt.value == 0


def test_exec_with_async_and_sync_on_the_first_atom_is_einval(raw):
    a = raw.atoms(2)
    cnt = raw.cell(0)
    ret = raw.cell(SENTINEL)
    set_atom(a[0], NR["umem_add"], (raw.cell(addr(cnt)), raw.cell(1)), ret=ret,
             flags=SYSLET_ASYNC | SYSLET_SYNC, next=a[1])
    set_atom(a[1], NR["umem_add"], (raw.cell(addr(cnt)), raw.cell(1)))
    assert errno_of(raw.exec, a[0]) == errno.EINVAL
    assert cnt.value == 0 and ret.value == SENTINEL
    assert raw.settle() and raw.entries() == []


def test_async_and_sync_on_a_later_atom_is_not_an_error(raw):
    a = raw.atoms(2)
    cnt = raw.cell(0)
    set_atom(a[0], NR["getpid"], next=a[1])
    set_atom(a[1], NR["umem_add"], (raw.cell(addr(cnt)), raw.cell(1)), flags=SYSLET_ASYNC | SYSLET_SYNC)
    assert raw.run(a[0]) == addr(a[1])
    assert cnt.value == 1


@pytest.mark.parametrize("bit", [0x100, 1 << 31, 1 << 63])
def test_unknown_flag_bits_on_the_first_atom_are_einval(raw, bit):
    a = raw.atoms(1)
    cnt = raw.cell(0)
    set_atom(a[0], NR["umem_add"], (raw.cell(addr(cnt)), raw.cell(1)), flags=bit)
    assert errno_of(raw.exec, a[0]) == errno.EINVAL
    assert cnt.value == 0


def test_unknown_flag_bits_on_a_later_atom_make_it_einval(raw):
    """Decision: such an atom is not executed, its result is -EINVAL, and
    the chain goes on (its STOP bits, if any, are not trusted either)."""
    a = raw.atoms(3)
    c1, c2 = raw.cell(0), raw.cell(0)
    ret = raw.cell(SENTINEL)
    set_atom(a[0], NR["getpid"], next=a[1])
    set_atom(a[1], NR["umem_add"], (raw.cell(addr(c1)), raw.cell(1)), ret=ret, flags=0x200, next=a[2])
    set_atom(a[2], NR["umem_add"], (raw.cell(addr(c2)), raw.cell(1)))
    assert raw.run(a[0]) == addr(a[2])
    assert ret.value == -errno.EINVAL
    assert (c1.value, c2.value) == (0, 1)


def test_exec_null_atom_is_efault(raw):
    assert errno_of(raw.exec, 0) == errno.EFAULT


# ---- async_register / async_unregister --------------------------------------------------------

@pytest.mark.parametrize("nbytes", [0, 1, 7, 12, 20, 4097])
def test_register_ring_size_not_a_positive_multiple_of_8(executor, nbytes):
    ring = (ctypes.c_uint64 * 1024)()
    with new_executor(executor) as e:
        assert errno_of(e.register, addr(ring), nbytes, -1) == errno.EINVAL
        assert e.register(addr(ring), 8, -1) == 0          # nothing was registered
        e.unregister(addr(ring), 8)


def test_register_misaligned_ring_is_einval(executor):
    """Decision: slots are native words written atomically; a ring that is
    not 8-byte aligned is refused with EINVAL."""
    buf = (ctypes.c_uint64 * 9)()
    with new_executor(executor) as e:
        assert errno_of(e.register, addr(buf) + 4, 64, -1) == errno.EINVAL


def test_second_register_is_ebusy(executor):
    r1 = (ctypes.c_uint64 * 4)()
    r2 = (ctypes.c_uint64 * 4)()
    with new_executor(executor) as e:
        e.register(addr(r1), 32, -1)
        assert errno_of(e.register, addr(r2), 32, -1) == errno.EBUSY
        assert errno_of(e.register, addr(r1), 32, -1) == errno.EBUSY
        e.unregister(addr(r1), 32)
        assert e.register(addr(r2), 32, -1) == 0
        e.unregister(addr(r2), 32)


def test_unregister_with_a_non_matching_head_is_einval(executor):
    r1 = (ctypes.c_uint64 * 4)()
    r2 = (ctypes.c_uint64 * 4)()
    with new_executor(executor) as e:
        assert errno_of(e.unregister, addr(r1), 32) == errno.EINVAL      # none registered
        e.register(addr(r1), 32, -1)
        assert errno_of(e.unregister, addr(r2), 32) == errno.EINVAL      # other ring
        assert errno_of(e.unregister, addr(r1), 24) == errno.EINVAL      # other size
        assert errno_of(e.unregister, addr(r1), 40) == errno.EINVAL
        # still registered: it works, and the right head unregisters
        a = (compat.syslet_uatom * 1)()
        set_atom(a[0], NR["getpid"])
        assert e.exec(addr(a[0])) == addr(a[0])
        assert e.unregister(addr(r1), 32) == 0
        assert errno_of(e.unregister, addr(r1), 32) == errno.EINVAL      # twice


def test_wait_without_a_head_is_einval(engine_executor):
    with compat.Engine(engine_executor) as e:
        assert errno_of(e.wait, 1, 0.1) == errno.EINVAL


def test_wait_zero_returns_at_once(executor):
    with Raw(executor) as raw:
        assert raw.engine.wait(0, 0) is True
        assert raw.engine.wait(1, 0.01) is False


@pytest.mark.parametrize("size", [0, 8, 16, 23, 25, 32, 48])
def test_raw_register_with_the_wrong_len_is_einval(raw_api, size):
    ring = (ctypes.c_uint64 * 4)()
    ahu = async_head_user(addr(ring), 32, (1 << 64) - 1)
    assert errno_of(compat.async_register, addr(ahu), size) == errno.EINVAL
    assert compat.async_register(addr(ahu), 24) == 0
    assert errno_of(compat.async_unregister, addr(ahu), size) == errno.EINVAL
    assert compat.async_unregister(addr(ahu), 24) == 0


# ---- refused and unknown calls -----------------------------------------------------------------

REFUSED = {"rt_sigreturn": 15, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "exit": 60,
           "exit_group": 231, "execveat": 322, "clone3": 435, "async_register": 1000,
           "async_exec": 1001, "async_wait": 1002, "async_unregister": 1003}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_calls_are_einval_and_harmless(raw, name):
    """Arguments that would do damage if the call ran: exit codes, a real
    program to exec, clone flags of a fork, a valid head and atom."""
    nr = REFUSED[name]
    assert compat.NR[name] == nr
    me = psutil.Process()
    children = {p.pid for p in me.children()}
    nthreads = me.num_threads()
    prog = raw.buf(32)
    prog.raw = b"/bin/true\0"
    argv = (ctypes.c_void_p * 2)(addr(prog), None)
    raw.keep(argv)
    ring = (ctypes.c_uint64 * 2)()
    raw.keep(ring)
    ahu = raw.keep(async_head_user(addr(ring), 16, (1 << 64) - 1))
    inner = raw.atoms(1)
    set_atom(inner[0], NR["getpid"])
    args = {
        15: (0,), 56: (17, 0, 0, 0, 0), 57: (), 58: (), 59: (addr(prog), addr(argv), 0),
        60: (3,), 231: (3,), 322: (compat.AT_FDCWD, addr(prog), addr(argv), 0, 0),
        435: (0, 88), 1000: (addr(ahu), 24), 1001: (addr(inner[0]),), 1002: (0,),
        1003: (addr(ahu), 24),
    }[nr]
    a = raw.atoms(2)
    ret = raw.cell(SENTINEL)
    cnt = raw.cell(0)
    set_atom(a[0], nr, [raw.cell(v) for v in args], ret=ret, next=a[1])
    set_atom(a[1], NR["umem_add"], (raw.cell(addr(cnt)), raw.cell(1)))
    assert raw.run(a[0]) == addr(a[1])
    assert ret.value == -errno.EINVAL
    assert cnt.value == 1                   # not a stop: the chain went on
    assert os.getpid() == me.pid
    assert {p.pid for p in me.children()} == children
    assert me.num_threads() <= nthreads + 8
    assert list(ring) == [0, 0]             # the inner head was never registered


@pytest.mark.parametrize("nr", [1000, 1001, 1005, 1010, 1011, 1013, 1020, 1030, 1031, 1039])
def test_project_numbers_are_refused(raw, nr):
    """The project's range 1000-1039 never reaches the kernel: inside an atom
    every number but umem_add's is refused (LATER_ABIS.md section 1)."""
    a = raw.atoms(2)
    ret = raw.cell(SENTINEL)
    cnt = raw.cell(0)
    set_atom(a[0], nr, (raw.cell(3),), ret=ret, next=a[1])
    set_atom(a[1], NR["umem_add"], (raw.cell(addr(cnt)), raw.cell(1)))
    assert raw.run(a[0]) == addr(a[1])
    assert ret.value == -errno.EINVAL
    assert cnt.value == 1


@pytest.mark.parametrize("nr", [1004, 1012, 1022])
def test_every_umem_number_adds(raw, nr):
    """1004, 1012 and 1022 (umem_add of v1, v5, v6) add in every atom."""
    a = raw.atoms(1)
    ret = raw.cell(SENTINEL)
    cnt = raw.cell(40)
    set_atom(a[0], nr, (raw.cell(addr(cnt)), raw.cell(2)), ret=ret)
    assert raw.run(a[0]) == addr(a[0])
    assert cnt.value == 42
    assert ret.value == 42


@pytest.mark.parametrize("nr", [999, 1040, 5000, 0x3FFFFFFF, 0x40000000 + 39, (1 << 32) + 39,
                                (1 << 32) + 231, (1 << 32) + 57, (1 << 63) + 60, (1 << 64) - 1])
def test_unknown_numbers_are_enosys(raw, nr):
    """Numbers the kernel would truncate to a real call (low 32 bits, or the
    x32 bit) are unknown too: never getpid, never exit_group, never fork."""
    me = psutil.Process()
    children = {p.pid for p in me.children()}
    a = raw.atoms(2)
    ret = raw.cell(SENTINEL)
    cnt = raw.cell(0)
    set_atom(a[0], nr, (raw.cell(3),), ret=ret, next=a[1])
    set_atom(a[1], NR["umem_add"], (raw.cell(addr(cnt)), raw.cell(1)))
    assert raw.run(a[0]) == addr(a[1])
    assert ret.value == -errno.ENOSYS
    assert cnt.value == 1
    assert {p.pid for p in me.children()} == children


def test_enosys_with_stop_on_negative_stops(raw):
    a = raw.atoms(2)
    ret = raw.cell(SENTINEL)
    cnt = raw.cell(0)
    set_atom(a[0], 5000, ret=ret, next=a[1], flags=SYSLET_STOP_ON_NEGATIVE)
    set_atom(a[1], NR["umem_add"], (raw.cell(addr(cnt)), raw.cell(1)))
    assert raw.run(a[0]) == addr(a[0])
    assert ret.value == -errno.ENOSYS and cnt.value == 0


def test_the_2007_numbers_are_todays_syscalls(raw):
    """280-283 (x86_64 v1 numbers) are ordinary calls now: an atom with 283
    (timerfd_create) runs it, it is not the syslet layer."""
    a = raw.atoms(1)
    ret = raw.cell(SENTINEL)
    set_atom(a[0], 283, (raw.cell(1), raw.cell(0)), ret=ret)      # CLOCK_MONOTONIC
    assert raw.run(a[0]) == addr(a[0])
    assert ret.value >= 0
    os.close(ret.value)


# ---- umem_add ------------------------------------------------------------------------------------

def test_umem_add_atom_1004_returns_the_new_value(raw):
    a = raw.atoms(3)
    cnt = raw.cell(40)
    rets = [raw.cell(SENTINEL) for _ in range(3)]
    set_atom(a[0], 1004, (raw.cell(addr(cnt)), raw.cell(2)), ret=rets[0], next=a[1])
    set_atom(a[1], 1004, (raw.cell(addr(cnt)), raw.cell(-50)), ret=rets[1], next=a[2])
    set_atom(a[2], 1004, (raw.cell(addr(cnt)),), ret=rets[2])       # inc missing: 0
    assert raw.run(a[0]) == addr(a[2])
    assert [r.value for r in rets] == [42, -8, -8]
    assert cnt.value == -8


def test_umem_add_atom_without_arguments_is_efault(raw):
    """Arguments after the first NULL are 0: umem_add(NULL, 0) -> -EFAULT."""
    a = raw.atoms(1)
    ret = raw.cell(SENTINEL)
    set_atom(a[0], 1004, ret=ret)
    assert raw.run(a[0]) == addr(a[0])
    assert ret.value == -errno.EFAULT


def test_raw_umem_add():
    c = ctypes.c_uint64(5)
    assert compat.umem_add(addr(c), 3) == 8
    assert compat.umem_add(addr(c), -8) == 0
    assert compat.umem_add(addr(c), -1) == (1 << 64) - 1
    assert c.value == (1 << 64) - 1
    assert errno_of(compat.umem_add, 0, 1) == errno.EFAULT
    assert errno_of(compat.umem_add, 8, 1) == errno.EFAULT
