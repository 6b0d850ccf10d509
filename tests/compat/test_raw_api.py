"""The raw layer: compat.async_register / async_exec / async_wait /
async_unregister / umem_add on the process-wide default context, with
ctypes-built structures (the way C code and fio used the calls)."""
import ctypes
import errno
import os
import signal
import threading
import time

import pytest

import compat
from compat import (NR, SYSLET_ASYNC, SYSLET_NO_COMPLETE, SYSLET_STOP_ON_NON_POSITIVE,
                    async_head_user, syslet_uatom)
from syslet_testlib import PAGE, SENTINEL, addr, libc, mmap_pages, set_atom, wait_until

M1 = (1 << 64) - 1


def errno_of(fn, *args):
    with pytest.raises(OSError) as ei:
        fn(*args)
    return ei.value.errno


class Ring:
    """A zero-filled ring of pointers and its consumer index (fio style)."""

    def __init__(self, depth):
        self.depth = depth
        self.slots = (ctypes.c_uint64 * depth)()
        self.head = 0

    @property
    def addr(self):
        return addr(self.slots)

    def ahu(self, max_threads=M1):
        """A head for this ring, kept alive by the Ring (a temporary would
        be freed before the call reads it)."""
        h = async_head_user(self.addr, 8 * self.depth, max_threads)
        self._heads = getattr(self, "_heads", []) + [h]
        return h

    def reap(self):
        out = []
        while self.slots[self.head]:
            out.append(self.slots[self.head])
            self.slots[self.head] = 0
            self.head = (self.head + 1) % self.depth
        return out


def test_the_true_default_context_follows_uring_shim():
    import uring_shim
    compat.reset_default()
    try:
        e = compat.default_engine()
        assert e is compat.default_engine()
        assert e.backend == uring_shim.backend()
    finally:
        compat.reset_default()


def test_register_exec_wait_unregister(raw_api, rfd, datafile):
    data = datafile[1]
    ring = Ring(8)
    ahu = ring.ahu()
    assert compat.async_register(addr(ahu), ctypes.sizeof(ahu)) == 0
    atoms = (syslet_uatom * 3)()
    fd = ctypes.c_long(rfd)
    size = ctypes.c_ulong(100)
    bufs = [ctypes.create_string_buffer(100) for _ in range(3)]
    bptr = [ctypes.c_void_p(addr(b)) for b in bufs]
    offs = [ctypes.c_long(100 * i) for i in range(3)]
    rets = [ctypes.c_long(SENTINEL) for _ in range(3)]
    for i in range(3):
        set_atom(atoms[i], NR["pread64"], (fd, bptr[i], size, offs[i]), ret=rets[i],
                 next=atoms[i + 1] if i < 2 else None)
        atoms[i].private = 0x1000 + i
    assert compat.async_exec(addr(atoms[0])) == addr(atoms[2])
    assert [r.value for r in rets] == [100] * 3
    assert b"".join(b.raw for b in bufs) == data[:300]
    assert [atoms[i].private for i in range(3)] == [0x1000, 0x1001, 0x1002]   # never written
    assert compat.async_wait(0) == 0
    assert ring.reap() == []
    c = compat.counters()
    assert set(c) == set(compat.COUNTERS) and c["syslets_sync"] >= 1
    assert compat.async_unregister(addr(ahu), 24) == 0


def test_async_completion_through_the_ring(raw_api, late_pipe):
    ring = Ring(4)
    ahu = ring.ahu()
    compat.async_register(addr(ahu), 24)
    a = (syslet_uatom * 1)()
    buf = ctypes.create_string_buffer(8)
    args = (ctypes.c_long(late_pipe.r), ctypes.c_void_p(addr(buf)), ctypes.c_ulong(3))
    ret = ctypes.c_long(SENTINEL)
    set_atom(a[0], NR["read"], args, ret=ret)
    a[0].private = 0xC0FFEE
    assert compat.async_exec(addr(a[0])) == 0  # the pipe is empty until now
    late_pipe.later(b"raw", 0.1)
    assert compat.async_wait(1) == 0
    got = ring.reap()
    assert got == [addr(a[0])]
    done = syslet_uatom.from_address(got[0])
    assert done.private == 0xC0FFEE           # fio found its io_u this way
    assert ctypes.c_long.from_address(done.ret_ptr).value == 3 and buf.raw[:3] == b"raw"
    compat.async_unregister(addr(ahu), 24)


def test_register_copies_the_head(raw_api):
    """The seed fio engine registered a stack variable: the head memory may
    be overwritten and even unmapped right after async_register."""
    ring = Ring(4)
    page = mmap_pages(1)
    ahu = async_head_user.from_address(page)
    ahu.completion_ring, ahu.ring_size_bytes, ahu.max_nr_threads = ring.addr, 32, M1
    assert compat.async_register(page, 24) == 0
    ahu.completion_ring, ahu.ring_size_bytes, ahu.max_nr_threads = 0xdead0000, 7, 0
    del ahu
    assert libc.munmap(ctypes.c_void_p(page), PAGE) == 0
    atoms = (syslet_uatom * 4)()
    rets = [ctypes.c_long(SENTINEL) for _ in range(4)]
    for i in range(4):
        set_atom(atoms[i], NR["getpid"], ret=rets[i], flags=SYSLET_ASYNC)
        assert compat.async_exec(addr(atoms[i])) == 0       # async (max_nr_threads was -1)
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 4 and time.monotonic() < deadline:
        compat.async_wait(1)
        got += ring.reap()
    assert sorted(got) == sorted(addr(a) for a in atoms)
    assert all(r.value == os.getpid() for r in rets)
    fresh = ring.ahu()                          # same ring and size: matches
    assert compat.async_unregister(addr(fresh), 24) == 0


def test_register_then_reuse_the_head_memory(raw_api):
    """The head's memory reused for another head right after registering
    (a stack slot): completions still go to the ring registered."""
    ring, decoy = Ring(2), Ring(2)
    ahu = async_head_user(ring.addr, 16, M1)
    compat.async_register(addr(ahu), 24)
    ctypes.memmove(addr(ahu), addr(decoy.ahu()), 24)
    a = (syslet_uatom * 1)()
    set_atom(a[0], NR["getpid"], flags=SYSLET_ASYNC)
    assert compat.async_exec(addr(a[0])) == 0
    compat.async_wait(1)
    assert ring.reap() == [addr(a[0])] and decoy.reap() == []
    assert errno_of(compat.async_unregister, addr(ahu), 24) == errno.EINVAL    # now the decoy's
    assert compat.async_unregister(addr(ring.ahu()), 24) == 0


def test_raw_errors(raw_api):
    ring = Ring(4)
    ahu = ring.ahu()
    a = (syslet_uatom * 1)()
    set_atom(a[0], NR["getpid"])
    assert errno_of(compat.async_exec, addr(a[0])) == errno.EINVAL          # no head
    assert errno_of(compat.async_wait, 1) == errno.EINVAL
    assert errno_of(compat.async_unregister, addr(ahu), 24) == errno.EINVAL
    for bad in (0, 12, 31):
        h = async_head_user(ring.addr, bad, M1)
        assert errno_of(compat.async_register, addr(h), 24) == errno.EINVAL
    assert compat.async_register(addr(ahu), 24) == 0
    other = Ring(4)
    assert errno_of(compat.async_register, addr(other.ahu()), 24) == errno.EBUSY
    assert errno_of(compat.async_unregister, addr(other.ahu()), 24) == errno.EINVAL
    smaller = async_head_user(ring.addr, 16, M1)
    assert errno_of(compat.async_unregister, addr(smaller), 24) == errno.EINVAL
    both = (syslet_uatom * 1)()
    set_atom(both[0], NR["getpid"], flags=SYSLET_ASYNC | compat.SYSLET_SYNC)
    assert errno_of(compat.async_exec, addr(both[0])) == errno.EINVAL
    assert errno_of(compat.async_exec, 0) == errno.EFAULT
    assert compat.async_exec(addr(a[0])) == addr(a[0])
    assert compat.async_unregister(addr(ahu), 24) == 0
    assert errno_of(compat.async_exec, addr(a[0])) == errno.EINVAL          # gone


def test_max_nr_threads_zero_raw(raw_api, late_pipe):
    ring = Ring(4)
    compat.async_register(addr(ring.ahu(max_threads=0)), 24)
    a = (syslet_uatom * 1)()
    buf = ctypes.create_string_buffer(4)
    args = (ctypes.c_long(late_pipe.r), ctypes.c_void_p(addr(buf)), ctypes.c_ulong(2))
    set_atom(a[0], NR["read"], args, flags=SYSLET_ASYNC)
    late_pipe.later(b"s0", 0.1)
    assert compat.async_exec(addr(a[0])) == addr(a[0])
    assert buf.raw[:2] == b"s0" and ring.reap() == []
    compat.async_unregister(addr(ring.ahu()), 24)


def test_async_wait_is_interruptible(raw_api):
    """async_wait(1) on an empty ring blocks; a signal handler's exception
    gets the caller out (the -1/EINTR of the C call)."""
    class Interrupted(Exception):
        pass

    def handler(sig, frame):
        raise Interrupted()

    ring = Ring(2)
    compat.async_register(addr(ring.ahu()), 24)
    old = signal.signal(signal.SIGUSR1, handler)
    t = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        t.start()
        with pytest.raises(Interrupted):        # it did not return before the signal
            compat.async_wait(1)
    finally:
        t.cancel()
        t.join()
        signal.signal(signal.SIGUSR1, old)
    compat.async_unregister(addr(ring.ahu()), 24)


def test_no_complete_raw_then_unregister(raw_api):
    ring = Ring(2)
    compat.async_register(addr(ring.ahu()), 24)
    cnt = ctypes.c_uint64(0)
    a = (syslet_uatom * 2)()
    set_atom(a[0], NR["getpid"], flags=SYSLET_ASYNC, next=a[1])
    set_atom(a[1], NR["umem_add"], (ctypes.c_void_p(addr(cnt)), ctypes.c_ulong(1)),
             flags=SYSLET_NO_COMPLETE)
    assert compat.async_exec(addr(a[0])) == 0
    assert wait_until(lambda: cnt.value == 1)
    assert compat.async_unregister(addr(ring.ahu()), 24) == 0
    assert list(ring.slots) == [0, 0]


def test_fio_style_loop(raw_api, tmp_path):
    """fio's v1 pattern: a ring of depth slots, atoms with private = io_u,
    exec; NULL -> collect later from the ring; umem_add loop counter."""
    data = os.urandom(8192 + 100)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        ring = Ring(4)
        compat.async_register(addr(ring.ahu()), 24)
        # loop: read 4096 at the file position until 0, counting reads
        a = (syslet_uatom * 2)()
        buf = ctypes.create_string_buffer(4096)
        cnt = ctypes.c_uint64(0)
        ret = ctypes.c_long(SENTINEL)
        fdw, bw, nw = ctypes.c_long(fd), ctypes.c_void_p(addr(buf)), ctypes.c_ulong(4096)
        cw, one = ctypes.c_void_p(addr(cnt)), ctypes.c_ulong(1)
        set_atom(a[0], NR["read"], (fdw, bw, nw), ret=ret, flags=SYSLET_STOP_ON_NON_POSITIVE, next=a[1])
        set_atom(a[1], NR["umem_add"], (cw, one), next=a[0])
        r = compat.async_exec(addr(a[0]))
        if r == 0:
            compat.async_wait(1)
            r = ring.reap()[0]
        assert r == addr(a[0])
        assert cnt.value == 3 and ret.value == 0
        assert buf.raw[:100] == data[8192:]
        compat.async_unregister(addr(ring.ahu()), 24)
    finally:
        os.close(fd)


def test_reset_default_forgets_the_head(raw_api):
    ring = Ring(2)
    compat.async_register(addr(ring.ahu()), 24)
    first = compat.default_engine()
    compat.reset_default()
    assert first._c is compat._core.CLOSED      # closed
    a = (syslet_uatom * 1)()
    set_atom(a[0], NR["getpid"])
    assert errno_of(compat.async_exec, addr(a[0])) == errno.EINVAL
    assert compat.default_engine() is not first


def test_reset_default_picks_the_next_backend():
    try:
        compat.reset_default("threadpool")
        assert compat.default_engine().backend == "threadpool"
        with pytest.raises(ValueError):
            compat.reset_default("uring")
        assert compat.default_engine().backend == "threadpool"     # unchanged
    finally:
        compat.reset_default()


def test_async_exec_takes_integers_only(raw_api):
    """The builtin entry converts its argument as the cffi call did:
    anything with __index__, no floats or strings, 0 <= addr < 2**64."""
    ring = Ring(2)
    compat.async_register(addr(ring.ahu()), 24)
    a = (syslet_uatom * 1)()
    ret = ctypes.c_long(0)
    set_atom(a[0], NR["getpid"], ret=ret)

    class Index:
        def __index__(self):
            return addr(a[0])
    assert compat.async_exec(Index()) == addr(a[0]) and ret.value == os.getpid()
    for bad, exc in (("1", TypeError), (1.0, TypeError), (None, TypeError),
                     (-1, OverflowError), (1 << 64, OverflowError)):
        with pytest.raises(exc):
            compat.async_exec(bad)
    assert errno_of(compat.async_exec, 8) == errno.EFAULT
    compat.async_unregister(addr(ring.ahu()), 24)


def test_the_fast_entry_reads_like_the_general_path(raw_api, rfd, datafile):
    """A lone pread64 takes the builtin's assembly entry on x86_64 (decisions
    D22): same result, data and counters as through the C entry (an
    __index__ object takes that one), and a failing read stores -errno and
    still returns the atom."""
    path, data = datafile
    ring = Ring(2)
    compat.async_register(addr(ring.ahu()), 24)
    buf = ctypes.create_string_buffer(4096)
    ret = ctypes.c_long(SENTINEL)
    off = ctypes.c_long(8192)
    args = (ctypes.c_long(rfd), ctypes.c_void_p(addr(buf)), ctypes.c_ulong(4096), off)
    a = (syslet_uatom * 1)()
    set_atom(a[0], NR["pread64"], args, ret=ret)

    class Index:
        def __index__(self):
            return addr(a[0])
    before = compat.default_engine().counters()["atoms_nowait"]
    for arg in (addr(a[0]), Index()):
        ret.value = SENTINEL
        buf.raw = bytes(4096)
        assert compat.async_exec(arg) == addr(a[0])
        assert ret.value == 4096 and buf.raw == data[off.value:off.value + 4096]
        off.value += 4096
    assert compat.default_engine().counters()["atoms_nowait"] == before + 2
    bad = os.open(path, os.O_RDONLY)
    os.close(bad)
    args[0].value = bad
    assert compat.async_exec(addr(a[0])) == addr(a[0]) and ret.value == -errno.EBADF
    assert ring.reap() == []
    compat.async_unregister(addr(ring.ahu()), 24)


def test_set_fast_path_takes_both_halves_or_neither():
    from compat import _exec
    for pair in ((1, 0), (0, 1)):
        with pytest.raises(ValueError):
            _exec.set_fast_path(*pair)


def test_a_blocking_async_exec_lets_other_python_threads_run(raw_api):
    """The fast entry keeps the GIL only while nothing can block: a SYNC
    read of an empty pipe waits with the GIL released, so a Python thread
    can write what it reads.  (Were the GIL held, only the child process's
    backstop write, 5 s later, would end the call.)"""
    ring = Ring(2)
    compat.async_register(addr(ring.ahu()), 24)
    r, w = os.pipe()
    backstop = os.fork()
    if backstop == 0:                           # child: no Python threads, no GIL
        try:
            time.sleep(5)
            os.write(w, b"ch")
        finally:
            os._exit(0)
    try:
        buf = ctypes.create_string_buffer(2)
        ret = ctypes.c_long(SENTINEL)
        a = (syslet_uatom * 1)()
        args = (ctypes.c_long(r), ctypes.c_void_p(addr(buf)), ctypes.c_ulong(2))   # kept alive
        set_atom(a[0], NR["read"], args, ret=ret, flags=compat.SYSLET_SYNC)
        t = threading.Thread(target=lambda: (time.sleep(0.05), os.write(w, b"py")))
        t.start()
        assert compat.async_exec(addr(a[0])) == addr(a[0])
        t.join()
        assert ret.value == 2 and buf.raw == b"py"
    finally:
        os.kill(backstop, signal.SIGKILL)
        os.waitpid(backstop, 0)
        os.close(r)
        os.close(w)
    compat.async_unregister(addr(ring.ahu()), 24)


def test_async_exec_of_a_closed_or_parents_engine(raw_api):
    """Engine.exec is a builtin bound to its context: EBADF once closed
    (also for a copy of the method taken before), ECHILD in a child."""
    e = compat.Engine(raw_api.backend)
    ring = Ring(2)
    e.register(ring.addr, 16)
    a = (syslet_uatom * 1)()
    set_atom(a[0], NR["getpid"])
    ex = e.exec
    assert ex(addr(a[0])) == addr(a[0])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                ex(addr(a[0]))
            except OSError as err:
                code = 0 if err.errno == errno.ECHILD else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    e.close()
    assert errno_of(ex, addr(a[0])) == errno.EBADF
    assert errno_of(e.exec, addr(a[0])) == errno.EBADF


def test_child_after_fork_gets_a_fresh_default_context(raw_api):
    ring = Ring(2)
    compat.async_register(addr(ring.ahu()), 24)
    pid = os.fork()
    if pid == 0:                                 # child: never return into pytest
        code = 1
        try:
            a = (syslet_uatom * 1)()
            ret = ctypes.c_long(0)
            set_atom(a[0], NR["getpid"], ret=ret)
            try:
                compat.async_exec(addr(a[0]))
                code = 2                         # the parent's head must not be visible
            except OSError as e:
                if e.errno == errno.EINVAL:
                    r2 = Ring(2)
                    compat.async_register(addr(r2.ahu()), 24)
                    if compat.async_exec(addr(a[0])) == addr(a[0]) and ret.value == os.getpid():
                        code = 0
                    compat.async_unregister(addr(r2.ahu()), 24)
                    compat.reset_default()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    a = (syslet_uatom * 1)()
    set_atom(a[0], NR["getpid"])
    assert compat.async_exec(addr(a[0])) == addr(a[0])          # parent unaffected
    compat.async_unregister(addr(ring.ahu()), 24)


def test_raw_umem_add_is_atomic_across_threads():
    c = ctypes.c_uint64(0)

    def work():
        for _ in range(2000):
            compat.umem_add(addr(c), 1)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert c.value == 8000
