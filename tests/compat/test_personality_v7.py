"""Personality v7 (LATER_ABIS.md section 4: Zach Brown's indirect syslets,
December 2007): indirect()'s validation steps 1-3 in order, synchronous
results (32 bits, sign-extended) and pending calls whose {status,
caller_data} lands in a syslet_ring, the ring's backpressure, several rings
from several threads, plain calls with file_flags, syslet_ring_wait, and
compat.v7's raw calls.  On every executor where the call completes; the
reference never goes async, so ring tests run on the C engine only."""
import ctypes
import errno
import fcntl
import mmap
import os
import socket
import struct

import pytest

import compat.v7 as v7
from personality_lib import Indirect, Pipe, errno_of, signed64, spawn
from syslet_testlib import PAGE, PROT_NONE, addr, is_mapped, wait_until, wild

PENDING = v7.ESYSLETPENDING
NR = {"read": 0, "write": 1, "lseek": 8, "mmap": 9, "munmap": 11, "getpid": 39, "socket": 41,
      "accept": 43, "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "exit": 60,
      "exit_group": 231, "rt_sigreturn": 15, "execveat": 322, "clone3": 435, "signalfd": 282,
      "timerfd_create": 283, "eventfd": 284, "accept4": 288, "signalfd4": 289, "eventfd2": 290}
M64 = (1 << 64) - 1


def page_end(pages, n):
    a = pages.map(2)
    pages.protect(a + PAGE, 1, PROT_NONE)
    return a + PAGE - n


def pipe_empty(p):
    import select
    return not select.select([p.r], [], [], 0)[0]


@pytest.fixture
def pipe():
    p = Pipe()
    yield p
    p.close()


def write_regs(ind, p, data=b"X"):
    """A write of one marker byte into the pipe: visible if the call ran."""
    buf = ind.keep(ctypes.create_string_buffer(data))
    return ind.regs(NR["write"], p.w, addr(buf), len(data))


# ---- step 1: flags, registers, paramslen, params ----------------------------------

def test_flags_are_checked_first(ind, pages, pipe):
    ring = ind.ring()
    for flags in (1, 2, 1 << 31, 1 << 63):
        assert errno_of(ind.call, wild("freed", pages), ind.params(ring), 64, flags) == errno.EINVAL
        assert errno_of(ind.call, write_regs(ind, pipe), ind.params(ring), 32, flags) == errno.EINVAL
    assert pipe_empty(pipe)


@pytest.mark.parametrize("where", ["NULL", "freed", "kernel_half", "48 bytes"])
def test_unreadable_registers_are_efault_before_paramslen(ind, pages, where):
    if where == "48 bytes":     # rax ... r8 readable, r9 not
        regs = page_end(pages, 48)
        ctypes.memmove(regs, addr(ind.regs(NR["getpid"])), 48)
    else:
        regs = wild(where, pages)
    assert errno_of(ind.call, regs, 0, 33) == errno.EFAULT
    assert errno_of(ind.call, regs, ind.params(ind.ring()), 32) == errno.EFAULT


@pytest.mark.parametrize("paramslen", [33, 40, 64, 1 << 32, M64])
def test_paramslen_beyond_the_union_is_einval_before_params_are_read(ind, pages, pipe, paramslen):
    assert errno_of(ind.call, write_regs(ind, pipe), wild("freed", pages), paramslen) == errno.EINVAL
    assert pipe_empty(pipe)


def test_unreadable_params_are_efault(ind, pages, pipe):
    regs = write_regs(ind, pipe)
    for where in ("NULL", "freed", "kernel_half"):
        assert errno_of(ind.call, regs, wild(where, pages), 8) == errno.EFAULT
    tail = page_end(pages, 16)          # 16 readable bytes: paramslen 17 is too many
    ctypes.memmove(tail, addr(ind.params(ind.ring())), 16)
    assert errno_of(ind.call, regs, tail, 17) == errno.EFAULT
    assert errno_of(ind.call, regs, tail, 32) == errno.EFAULT
    assert pipe_empty(pipe)


def test_only_paramslen_bytes_are_read_the_rest_counts_as_zero(ind, pages, pipe):
    """ring_ptr and caller_data readable, the frame beyond the page: with
    paramslen 16 the frame counts as zero (EINVAL, not EFAULT)."""
    tail = page_end(pages, 16)
    ctypes.memmove(tail, addr(ind.params(ind.ring(), caller_data=7)), 16)
    assert errno_of(ind.call, write_regs(ind, pipe), tail, 16) == errno.EINVAL
    # a plain call needs only file_flags: 4 readable bytes, no params at all
    ff = page_end(pages, 4)
    ctypes.memmove(ff, struct.pack("<I", os.O_CLOEXEC), 4)
    fd = ind.call(ind.regs(NR["eventfd"], 0), ff, 4)
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    os.close(fd)
    fd = ind.call(ind.regs(NR["eventfd"], 0), 0, 0)
    assert not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    os.close(fd)
    assert pipe_empty(pipe)


# ---- step 2: a syslet submission ------------------------------------------------------

@pytest.mark.parametrize("ip,sp", [(0, 0x1000), (0x1000, 0), (0, 0)])
def test_a_zero_frame_is_einval_before_the_ring_is_read(ind, pages, pipe, ip, sp):
    regs = write_regs(ind, pipe)
    assert errno_of(ind.call, regs, ind.params(ind.ring(), ip=ip, sp=sp)) == errno.EINVAL
    assert errno_of(ind.call, regs, ind.params(wild("freed", pages), ip=ip, sp=sp)) == errno.EINVAL
    assert errno_of(ind.call, regs, ind.params(ind.ring(), ip=ip, sp=sp), 24) == errno.EINVAL
    assert pipe_empty(pipe)


def test_an_unreadable_ring_is_efault(ind, pages, pipe):
    regs = write_regs(ind, pipe)
    for where in ("freed", "kernel_half", "non_canonical"):
        assert errno_of(ind.call, regs, ind.params(wild(where, pages))) == errno.EFAULT
    hdr = page_end(pages, 8)            # kernel_head and user_tail readable, elements not
    assert errno_of(ind.call, regs, ind.params(hdr)) == errno.EFAULT
    assert pipe_empty(pipe)


@pytest.mark.parametrize("elements", [0, 3, 6, 12, 0x80000001, 0xFFFFFFFF])
def test_elements_not_a_power_of_two_is_einval(ind, pipe, elements):
    ring = ind.ring(8)
    ring.mem.elements = elements
    assert errno_of(ind.call, write_regs(ind, pipe), ind.params(ring)) == errno.EINVAL
    assert pipe_empty(pipe)


@pytest.mark.parametrize("elements", [1, 2, 1 << 31])
def test_any_power_of_two_is_a_ring(ind, elements):
    ring = ind.ring(1)
    ring.mem.elements = elements
    assert ind.call(ind.regs(NR["getpid"]), ind.params(ring)) == os.getpid()


def test_a_call_that_completes_returns_its_result_and_writes_no_entry(ind):
    ring = ind.ring(4, kernel_head=9)
    ctypes.memset(addr(ring.mem.comp), 0xAB, 64)
    for _ in range(3):
        assert ind.call(ind.regs(NR["getpid"]), ind.params(ring, caller_data=5)) == os.getpid()
    assert (ring.mem.kernel_head, ring.mem.user_tail) == (9, 9)
    assert ctypes.string_at(addr(ring.mem.comp), 64) == b"\xab" * 64


@pytest.mark.parametrize("name", ["fork", "vfork", "clone", "clone3", "execve", "execveat", "exit",
                                  "exit_group", "rt_sigreturn"])
def test_calls_that_need_the_callers_thread_are_refused(ind, name):
    assert errno_of(ind.call, ind.regs(NR[name]), ind.params(ind.ring())) == errno.EINVAL


@pytest.mark.parametrize("nr", list(range(1000, 1040)))
def test_the_projects_range_is_refused_umem_add_too(ind, nr):
    """No atoms in v7: 1004, 1012, 1022 refused like the rest."""
    word = ind.keep(ctypes.c_uint64(5))
    assert errno_of(ind.call, ind.regs(nr, addr(word), 1), ind.params(ind.ring())) == errno.EINVAL
    assert word.value == 5


@pytest.mark.parametrize("nr", [0x40000000 + 39, (1 << 32) + 39, (1 << 32) + 60, (1 << 63) + 57, M64])
def test_numbers_beyond_the_kernels_word_are_enosys(ind, nr):
    assert errno_of(ind.call, ind.regs(nr), ind.params(ind.ring())) == errno.ENOSYS


@pytest.mark.parametrize("env", [None, "v5", "v7"])
def test_286_and_287_are_refused_only_under_syslet_compat_abi_v7(monkeypatch, executor, env):
    """Under SYSLET_COMPAT_ABI=v7 they are indirect's and syslet_ring_wait's
    own numbers; otherwise timerfd_settime and timerfd_gettime."""
    if env is None:
        monkeypatch.delenv("SYSLET_COMPAT_ABI", raising=False)
    else:
        monkeypatch.setenv("SYSLET_COMPAT_ABI", env)
    ind = Indirect(executor)
    try:
        zeros = ind.keep(ctypes.create_string_buffer(64))
        want = -errno.EINVAL if env == "v7" else -errno.EBADF
        ring = ind.ring()
        assert ind.resolve(ind.regs(286, -1, 0, addr(zeros), 0), ring) == want
        assert ind.resolve(ind.regs(287, -1, addr(zeros)), ring) == want
    finally:
        ind.close()


# ---- results: 32 bits, sign-extended ------------------------------------------------------

@pytest.fixture
def sparse_fd(tmp_path):
    fd = os.open(tmp_path / "sparse", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def test_a_result_of_2_31_or_more_comes_back_negative(ind, sparse_fd):
    """lseek to 3 GiB returns 3 << 30; as a 32-bit int that is -(1 << 30):
    a negative value, but no errno (below -4095)."""
    ring = ind.ring()
    assert ind.call(ind.regs(NR["lseek"], sparse_fd, 3 << 30, os.SEEK_SET), ind.params(ring)) == -(1 << 30)
    assert os.lseek(sparse_fd, 0, os.SEEK_CUR) == 3 << 30       # the call itself was whole
    assert ind.call(ind.regs(NR["lseek"], sparse_fd, (1 << 32) + 5, os.SEEK_SET), ind.params(ring)) == 5
    # 2**32 - 1 is -1 as an int: -1/errno 1, literally the 2007 convention
    assert errno_of(ind.call, ind.regs(NR["lseek"], sparse_fd, (1 << 32) - 1, os.SEEK_SET),
                    ind.params(ring)) == 1
    assert ring.mem.kernel_head == 0


# ---- pending calls and the ring -------------------------------------------------------------

def pending_read(ind, ring, p, caller_data, n=8):
    buf = ind.keep(ctypes.create_string_buffer(n))
    assert errno_of(ind.call, ind.regs(NR["read"], p.r, addr(buf), n),
                    ind.params(ring, caller_data=caller_data)) == PENDING
    return buf


def test_a_call_that_blocks_is_pending_and_its_completion_lands_in_the_ring(engine_ind, pipe):
    ind = engine_ind
    ring = ind.ring(4)
    buf = pending_read(ind, ring, pipe, 0xFEDCBA9876543210)
    assert ring.mem.kernel_head == 0
    os.write(pipe.w, b"hello")
    assert ind.collect(ring, 1) == [(5, 0xFEDCBA9876543210)]
    assert buf.raw[:5] == b"hello"
    assert ring.mem.kernel_head == 1
    assert ind.settle()
    assert ind.counters()["published"] == 1


def test_completion_slots_are_kernel_head_modulo_elements_and_kernel_head_wraps(engine_ind):
    ind = engine_ind
    ring = ind.ring(4, kernel_head=0xFFFFFFFE)
    pipes = [Pipe() for _ in range(3)]
    try:
        for k, p in enumerate(pipes):
            pending_read(ind, ring, p, 100 + k)
            os.write(p.w, b"z" * (k + 1))
            assert ind.wait(ring, (0xFFFFFFFE + k) & 0xFFFFFFFF)
        assert ring.mem.kernel_head == 1                    # 0xFFFFFFFE + 3, wrapped
        comp = [(ring.mem.comp[i].status, ring.mem.comp[i].caller_data) for i in range(4)]
        assert comp[2] == (1, 100) and comp[3] == (2, 101) and comp[0] == (3, 102)
    finally:
        for p in pipes:
            p.close()


def test_a_negative_status_is_sign_extended(engine_ind):
    """A pending accept ended by shutdown: status -EINVAL as 64 bits."""
    ind = engine_ind
    ring = ind.ring(2)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        assert errno_of(ind.call, ind.regs(NR["accept"], srv.fileno(), 0, 0),
                        ind.params(ring, caller_data=3)) == PENDING
        srv.shutdown(socket.SHUT_RDWR)
        st, cd = ind.collect(ring, 1)[0]
        assert (signed64(st), cd) == (-errno.EINVAL, 3)
    finally:
        srv.close()


def test_a_pending_status_of_2_31_or_more_is_sign_extended(engine_ind):
    """mmap at 6 GiB returns 0x180000000: 32 bits of it, sign-extended, are
    -2**31, in the ring entry as in a synchronous result.  (mmap may finish
    before the engine looks: tried until one goes async.)"""
    ind = engine_ind
    ring = ind.ring(2)
    want = 0x1_8000_0000
    if is_mapped(want):
        pytest.skip("6 GiB is mapped in this process")
    MAP_FIXED_NOREPLACE = 0x100000
    regs = ind.regs(NR["mmap"], want, PAGE, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS |
                    MAP_FIXED_NOREPLACE, M64, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    went_async = False
    for _ in range(50):
        kind, v = ind.outcome(regs, ind.params(ring, caller_data=9))
        if kind == "pending":
            st, cd = ind.collect(ring, 1)[0]
            assert (signed64(st), cd) == (-(1 << 31), 9)
            went_async = True
        else:
            assert (kind, v) == ("ok", -(1 << 31))
        assert is_mapped(want)
        assert libc.munmap(want, PAGE) == 0
        if went_async:
            break
    if not went_async:
        pytest.skip("mmap completed before the engine looked, 50 times")


def test_a_full_ring_makes_the_producer_wait_never_overwrite(engine_ind, pipe):
    """kernel_head - user_tail == elements: the entry waits (counted), the
    unread entries stay; when user_tail advances it lands."""
    ind = engine_ind
    ring = ind.ring(2, kernel_head=7)
    ring.mem.user_tail = 5
    ring.mem.comp[0].status, ring.mem.comp[0].caller_data = 111, 1
    ring.mem.comp[1].status, ring.mem.comp[1].caller_data = 222, 2
    before = ind.counters()["ring_full_waits"]
    pending_read(ind, ring, pipe, 42)
    os.write(pipe.w, b"abc")
    assert wait_until(lambda: ind.counters()["ring_full_waits"] == before + 1, 10)
    assert ind.settle()
    assert ring.mem.kernel_head == 7
    assert [(c.status, c.caller_data) for c in ring.mem.comp] == [(111, 1), (222, 2)]
    ring.mem.user_tail = 6              # the program consumed comp[5 & 1]
    assert ind.wait(ring, 7)
    assert ring.mem.kernel_head == 8
    assert [(c.status, c.caller_data) for c in ring.mem.comp] == [(111, 1), (3, 42)]


def test_a_full_ring_holds_back_only_its_own_entries(engine_ind):
    ind = engine_ind
    full = ind.ring(1, kernel_head=1)
    full.mem.user_tail = 0
    pa = Pipe()
    try:
        before = ind.counters()["ring_full_waits"]
        pending_read(ind, full, pa, 1)
        os.write(pa.w, b"a")
        assert wait_until(lambda: ind.counters()["ring_full_waits"] > before, 10)

        def other_ring():
            ring = ind.ring(4)
            got = []
            for k in range(12):
                p = Pipe()
                try:
                    pending_read(ind, ring, p, k)
                    os.write(p.w, b"b")
                    got += ind.collect(ring, 1)
                finally:
                    p.close()
            return got

        assert spawn(other_ring).result(30) == [(1, k) for k in range(12)]
        assert full.mem.kernel_head == 1
        full.mem.user_tail = 1
        assert ind.collect(full, 1) == [(1, 1)]
    finally:
        pa.close()


def test_several_rings_from_several_threads(engine_ind):
    ind = engine_ind

    def worker(t):
        ring = ind.ring(4)
        p = Pipe()
        got = []
        try:
            for k in range(25):
                kind, _ = ind.outcome(ind.regs(NR["read"], p.r, addr(ind.keep(ctypes.create_string_buffer(4))), 4),
                                      ind.params(ring, caller_data=(t << 32) | k))
                assert kind == "pending"
                os.write(p.w, b"1234")
                got += ind.collect(ring, 1)
        finally:
            p.close()
        return got

    ws = [spawn(worker, t) for t in range(4)]
    for t, w in enumerate(ws):
        assert w.result(60) == [(4, (t << 32) | k) for k in range(25)]
    assert ind.settle()


# ---- syslet_ring_wait ---------------------------------------------------------------------

def test_ring_wait_validation_and_inequality(ind, pages):
    ring = ind.ring(4, kernel_head=10)
    for where in ("NULL", "freed", "kernel_half"):
        assert errno_of(ind.wait, wild(where, pages), 0, 1) == errno.EFAULT
    part = page_end(pages, 8)
    assert errno_of(ind.wait, part, 0, 1) == errno.EFAULT
    for idx in (0, 9, 11, 0xFFFFFFFF):           # any difference, not "greater"
        assert ind.wait(ring, idx) is True
    assert ind.wait(ring, 10, timeout=0.05) is False
    assert ind.wait(ring, 10 + (1 << 32), timeout=0.05) is False    # 32-bit comparison


def test_ring_wait_returns_when_kernel_head_changes(ind):
    ring = ind.ring(4, kernel_head=3)
    w = spawn(ind.wait, ring, 3, 20.0)
    ring.mem.kernel_head = 4            # user space may move it too
    assert w.result(30) is True


def test_ring_wait_returns_once_a_completion_arrives(engine_ind, pipe):
    ind = engine_ind
    ring = ind.ring(4)
    pending_read(ind, ring, pipe, 1)
    w = spawn(ind.wait, ring, 0, 20.0)
    os.write(pipe.w, b"x")
    assert w.result(30) is True
    assert ring.mem.kernel_head == 1


# ---- step 3: plain calls ------------------------------------------------------------------

class _Listener:
    def __init__(self):
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind("\0syslet-v7-%d-%d" % (os.getpid(), id(self)))
        self.srv.listen(4)
        self.cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.cli.connect(self.srv.getsockname())      # accept() will not block

    def close(self):
        self.cli.close()
        self.srv.close()


def _plain_regs(ind, name, keep):
    mask = ind.keep(ctypes.c_uint64(1 << (10 - 1)))   # SIGUSR1
    if name in ("accept", "accept4"):
        lst = _Listener()
        keep.append(lst)
        return ind.regs(NR[name], lst.srv.fileno(), 0, 0, 0)
    if name == "socket":
        return ind.regs(NR[name], socket.AF_UNIX, socket.SOCK_STREAM, 0)
    if name == "socketpair":
        sv = ind.keep((ctypes.c_int * 2)(-1, -1))
        keep.append(sv)
        return ind.regs(NR[name], socket.AF_UNIX, socket.SOCK_STREAM, 0, addr(sv))
    if name in ("eventfd", "eventfd2"):
        return ind.regs(NR[name], 0, 0)
    if name in ("signalfd", "signalfd4"):
        return ind.regs(NR[name], M64, addr(mask), 8, 0)
    return ind.regs(NR[name], 1, 0)             # timerfd_create(CLOCK_MONOTONIC, 0)


PLAIN = ["accept", "accept4", "socket", "socketpair", "eventfd", "eventfd2", "signalfd", "signalfd4",
         "timerfd_create"]


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("ff", [0, os.O_CLOEXEC, os.O_NONBLOCK, os.O_CLOEXEC | os.O_NONBLOCK],
                         ids=["none", "cloexec", "nonblock", "both"])
def test_plain_calls_apply_file_flags(ind, name, ff):
    """file_flags through the call's modern flags argument: O_CLOEXEC seen
    by F_GETFD, O_NONBLOCK by F_GETFL, on every descriptor made."""
    keep = []
    try:
        regs = _plain_regs(ind, name, keep)
        fd = ind.call(regs, ind.plain(ff), 4)
        fds = [fd] + ([keep[0][1]] if name == "socketpair" else [])
        if name == "socketpair":
            assert fd == 0 and list(keep[0]) != [-1, -1]
            fds = list(keep[0])
        for f in fds:
            assert bool(fcntl.fcntl(f, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) == bool(ff & os.O_CLOEXEC)
            assert bool(fcntl.fcntl(f, fcntl.F_GETFL) & os.O_NONBLOCK) == bool(ff & os.O_NONBLOCK)
            os.close(f)
    finally:
        for k in keep:
            if isinstance(k, _Listener):
                k.close()


def test_a_plain_call_by_paramslen_or_a_zero_ring_ptr(ind):
    """paramslen < 8 makes a plain call whatever else the memory holds
    (file_flags overlays ring_ptr's low half: the 2007 clash); paramslen >= 8
    with ring_ptr 0 is plain too."""
    p = ind.params(os.O_CLOEXEC, ip=0, sp=0)          # ring_ptr == O_CLOEXEC
    fd = ind.call(ind.regs(NR["eventfd"], 0), p, 4)
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    os.close(fd)
    assert errno_of(ind.call, ind.regs(NR["eventfd"], 0), p, 32) == errno.EINVAL   # a ring: no frame
    p.syslet.frame.ip = p.syslet.frame.sp = 0x1000
    assert errno_of(ind.call, ind.regs(NR["eventfd"], 0), p, 32) == errno.EFAULT   # no ring there
    p2 = ind.params(None, caller_data=5)
    fd = ind.call(ind.regs(NR["eventfd"], 0), p2, 32)
    assert not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    os.close(fd)


@pytest.mark.parametrize("nr", [NR["getpid"], NR["write"], NR["read"], NR["lseek"], 2, 257, 1030])
def test_other_plain_calls_are_refused(ind, pipe, nr):
    regs = ind.regs(nr, pipe.w, addr(ind.keep(ctypes.create_string_buffer(b"X"))), 1)
    assert errno_of(ind.call, regs, ind.plain(0), 4) == errno.EINVAL
    assert errno_of(ind.call, regs, ind.params(None), 32) == errno.EINVAL
    assert pipe_empty(pipe)


@pytest.mark.parametrize("ff", [os.O_APPEND, os.O_RDWR, 1 << 31, os.O_CLOEXEC | os.O_DIRECT])
def test_file_flags_beyond_cloexec_and_nonblock_are_einval(ind, ff):
    assert errno_of(ind.call, ind.regs(NR["eventfd"], 0), ind.plain(ff), 4) == errno.EINVAL


# ---- compat.v7: the pinned raw calls ---------------------------------------------------------

def test_raw_calls(raw_api, pipe, pages):
    ring = v7.ring_type(4)()
    ring.elements = 4
    regs = v7.indirect_registers(rax=NR["getpid"])
    params = v7.indirect_params()
    params.syslet = v7.syslet_args(addr(ring), 77, v7.syslet_frame(0x1000, 0x2000))
    assert v7.indirect(addr(regs), addr(params), 32, 0) == os.getpid()
    buf = ctypes.create_string_buffer(4)
    rd = v7.indirect_registers(NR["read"], pipe.r, addr(buf), 4)
    with pytest.raises(OSError) as ei:
        v7.indirect(addr(rd), addr(params), ctypes.sizeof(params), 0)
    assert ei.value.errno == v7.ESYSLETPENDING
    os.write(pipe.w, b"ring")
    assert spawn(v7.syslet_ring_wait, addr(ring), 0).result(20) == 0
    assert ring.kernel_head == 1 and (ring.comp[0].status, ring.comp[0].caller_data) == (4, 77)
    assert v7.syslet_ring_wait(addr(ring), 0) == 0
    assert errno_of(v7.syslet_ring_wait, wild("freed", pages), 0) == errno.EFAULT
    assert errno_of(v7.indirect, addr(regs), addr(params), 32, 1) == errno.EINVAL
    assert errno_of(v7.indirect, 16, addr(params), 32, 0) == errno.EFAULT
