"""Would it block?  The decision for every kind of file a lone read meets
(docs/decisions.md D23), and who waits for what went async (D24).

Nothing here is timed: each test reads the engine's counters of the path an
atom took -- ``atoms_nowait`` (tried with RWF_NOWAIT in the caller and
settled there), ``direct_reads`` (not tried: the fd is O_DIRECT),
``atoms_uring`` / ``atoms_pool`` (off the caller's thread) -- and the data
or result the atom produced.  Files that must really block live on the
checkout's own file system (``diskdir``), not in a tmpfs.

Every test runs on both engine backends (``engine_executor``)."""
import ctypes
import fcntl
import mmap
import os
import pty
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import compat
from syslet_testlib import ENGINES, LatePipe, pattern, skip_unless_io_uring

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BS = 4096
libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="module")
def diskdir():
    """A directory on the checkout's file system (O_DIRECT reads there go to
    the disk and block), removed afterwards."""
    d = tempfile.mkdtemp(prefix=".blocking-", dir=ROOT)
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def diskfile(diskdir):
    """(path, data): 1 MiB of pattern, on disk (fsync'ed)."""
    data = pattern(1 << 20, seed=3)
    path = os.path.join(diskdir, "data.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path, data


def resident(fd, page):
    """Is page `page` of fd in the page cache?  (mincore of a mapping that
    is never touched: mapping it reads nothing.)"""
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    addr = libc.mmap(None, BS, 1, 1, fd, page * BS)        # PROT_READ, MAP_SHARED
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        vec = (ctypes.c_ubyte * 1)()
        assert libc.mincore(addr, BS, vec) == 0
        return bool(vec[0] & 1)
    finally:
        libc.munmap(addr, BS)


def drop_cache(path, *pages):
    """Drops the file from the page cache; checks that `pages` are gone.
    (POSIX_FADV_DONTNEED skips pages still held in another CPU's LRU batch:
    asked again until they are out.)"""
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(200):
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if not any(resident(fd, p) for p in pages):
                return
            time.sleep(0.01)
        pytest.fail(f"pages {pages} of {path} stay in the page cache")
    finally:
        os.close(fd)


def run(ctx, chain, timeout=10.0):
    """Runs a chain to its end: (final atom, went_async)."""
    r = ctx.exec(chain)
    if r is not None:
        return r, False
    got = ctx.wait(1, timeout)
    assert len(got) == 1, got
    return got[0], True


def path_counts(ctx):
    c = ctx.counters()
    return {k: c[k] for k in ("atoms_nowait", "direct_reads", "atoms_uring", "atoms_pool",
                              "atoms_inline")}


def off_thread(executor):
    """The counter of the executor's off-caller path."""
    return "atoms_uring" if executor == "io_uring" else "atoms_pool"


@pytest.fixture
def ectx(engine_executor):
    with compat.Context(backend=engine_executor, ring_slots=16) as c:
        yield c


# ---- regular files and O_DIRECT --------------------------------------------------------

@pytest.mark.parametrize("call", ["pread64", "read"])
def test_an_o_direct_read_is_never_tried_in_the_caller(ectx, engine_executor, diskfile, call):
    path, data = diskfile
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = ectx.buffer(BS, align=BS)
        ch = ectx.chain()
        if call == "pread64":
            a = ch.pread64(fd, buf, BS, 8 * BS, ret=True)
        else:
            os.lseek(fd, 8 * BS, os.SEEK_SET)
            a = ch.read(fd, buf, BS, ret=True)
        final, _ = run(ectx, ch)
        assert final.addr == a.addr and a.result == BS
        assert buf.read() == data[8 * BS:9 * BS]
        # A read at the file position goes to the pool on both backends:
        # io_uring does not move an O_DIRECT file's position (D35).
        off = "atoms_pool" if call == "read" else off_thread(engine_executor)
        assert path_counts(ectx) == {"atoms_nowait": 0, "direct_reads": 1, off: 1,
                                     "atoms_inline": 0,
                                     ("atoms_uring" if off == "atoms_pool" else "atoms_pool"): 0}
        if call == "read":
            assert os.lseek(fd, 0, os.SEEK_CUR) == 9 * BS
    finally:
        os.close(fd)


def test_o_direct_reads_through_the_raw_api(raw_api, diskfile):
    """compat.async_exec (the builtin's own entry, D22) takes the same
    decision: O_DIRECT is asked before the RWF_NOWAIT read is issued."""
    path, data = diskfile
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    mem = mmap.mmap(-1, 2 * BS)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
        cells = (ctypes.c_uint64 * 5)(fd, base, BS, 3 * BS, 0)
        atom = compat.syslet_uatom()
        atom.nr = compat.NR["pread64"]
        atom.ret_ptr = ctypes.addressof(cells) + 32
        for i in range(4):
            atom.arg_ptr[i] = ctypes.addressof(cells) + 8 * i
        ring = (ctypes.c_uint64 * 4)()
        head = compat.async_head_user(ctypes.addressof(ring), ctypes.sizeof(ring),
                                      (1 << 64) - 1)
        before = raw_api.counters()
        compat.async_register(ctypes.addressof(head), ctypes.sizeof(head))
        try:
            r = compat.async_exec(ctypes.addressof(atom))
            if r == 0:
                compat.async_wait(1)
                assert ring[0] == ctypes.addressof(atom)
            else:
                assert r == ctypes.addressof(atom)
        finally:
            compat.async_unregister(ctypes.addressof(head), ctypes.sizeof(head))
        after = raw_api.counters()
        assert cells[4] == BS and mem[:BS] == data[3 * BS:4 * BS]
        assert after["direct_reads"] - before["direct_reads"] == 1
        assert after["atoms_nowait"] == before["atoms_nowait"]
    finally:
        del base
        mem.close()
        os.close(fd)


def test_an_o_direct_write_runs_off_the_callers_thread(ectx, engine_executor, diskdir):
    path = os.path.join(diskdir, "w.bin")
    with open(path, "wb") as f:
        f.write(bytes(4 * BS))
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        buf = ectx.buffer(BS, align=BS)
        payload = pattern(BS, seed=9)
        buf.write(payload)
        ch = ectx.chain()
        a = ch.pwrite64(fd, buf, BS, 2 * BS, ret=True)
        b = ch.fdatasync(fd, ret=True)
        final, _ = run(ectx, ch)
        assert final.addr == b.addr and (a.result, b.result) == (BS, 0)
        with open(path, "rb") as f:
            f.seek(2 * BS)
            assert f.read(BS) == payload
        c = path_counts(ectx)
        assert c["atoms_inline"] == 0 and c[off_thread(engine_executor)] == 2, c
    finally:
        os.close(fd)


def test_a_cached_buffered_read_completes_in_the_caller(ectx, diskfile):
    path, data = diskfile
    fd = os.open(path, os.O_RDONLY)
    try:
        os.pread(fd, BS, 5 * BS)        # in the page cache now
        buf = ectx.buffer(BS)
        ch = ectx.chain()
        a = ch.pread64(fd, buf, BS, 5 * BS, ret=True)
        final, went_async = run(ectx, ch)
        assert (final.addr, a.result, went_async) == (a.addr, BS, False)
        assert buf.read() == data[5 * BS:6 * BS]
        c = path_counts(ectx)
        assert (c["atoms_nowait"], c["direct_reads"]) == (1, 0), c
    finally:
        os.close(fd)


def test_an_uncached_buffered_read_goes_off_the_callers_thread(ectx, engine_executor, diskfile):
    """RWF_NOWAIT answers EAGAIN for a page that is not in the cache (after
    starting its readahead): the read itself runs on io_uring or the pool."""
    path, data = diskfile
    drop_cache(path, 200)
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = ectx.buffer(BS)
        ch = ectx.chain()
        a = ch.pread64(fd, buf, BS, 200 * BS, ret=True)
        final, _ = run(ectx, ch)
        assert (final.addr, a.result) == (a.addr, BS)
        assert buf.read() == data[200 * BS:201 * BS]
        c = path_counts(ectx)
        got = (c["atoms_nowait"], c["direct_reads"], c[off_thread(engine_executor)])
        if engine_executor == "io_uring":
            assert got == (0, 0, 1), c
        else:
            # The pool-only backend tries once more before the pool hop: the
            # readahead the first try started may have brought the page in
            # by then (a loaded machine), and that try cannot block either.
            assert got in ((0, 0, 1), (1, 0, 0)), c
    finally:
        os.close(fd)


# ---- pollable files: empty (goes async) and with data (stays in the caller) ----------

def _socketpair(kind):
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    return a, b


class Kind:
    """An fd to read from, a way to make `n` bytes readable, and cleanup."""

    def __init__(self, name):
        self.name = name
        self.keep = []
        if name == "pipe":
            self.r, self.w = os.pipe()
            self.n = 5
            self.fill = lambda: os.write(self.w, b"hello")
        elif name in ("stream socket", "datagram socket"):
            a, b = _socketpair(socket.SOCK_STREAM if name == "stream socket" else socket.SOCK_DGRAM)
            self.keep = [a, b]
            self.r = a.fileno()
            self.n = 5
            self.fill = lambda: b.send(b"hello")
        elif name == "eventfd":
            self.r = os.eventfd(0)
            self.n = 8
            self.fill = lambda: os.eventfd_write(self.r, 3)
        elif name == "pty":
            m, s = pty.openpty()
            self.keep_fds = [s]
            self.r = m
            self.n = 0      # whatever the line discipline hands over
            self.fill = lambda: os.write(s, b"hello\n")
        elif name == "timerfd":
            libc.timerfd_create.restype = ctypes.c_int
            self.r = libc.timerfd_create(1, 0)      # CLOCK_MONOTONIC
            assert self.r >= 0
            self.n = 8

            def arm():
                spec = struct.pack("qqqq", 0, 0, 0, 1000)      # fires in 1 us
                libc.timerfd_settime(self.r, 0, ctypes.c_char_p(spec), None)
            self.fill = arm
        else:
            raise ValueError(name)

    def close(self):
        for s in self.keep:
            s.close()
        if not self.keep:
            os.close(self.r)
        if self.name == "pipe":
            os.close(self.w)
        for fd in getattr(self, "keep_fds", []):
            os.close(fd)


KINDS = ["pipe", "stream socket", "datagram socket", "eventfd", "timerfd", "pty"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_pollable_file_goes_async_and_completes_when_written(ectx, engine_executor, kind):
    k = Kind(kind)
    try:
        buf = ectx.buffer(64)
        ch = ectx.chain()
        a = ch.read(k.r, buf, 64, ret=ectx.var(-99))
        assert ectx.exec(ch) is None            # went async: nothing to read yet
        assert a.result == -99
        c = path_counts(ectx)
        assert c["atoms_nowait"] == 0 and c["atoms_inline"] == 0, c
        threading.Timer(0.05, k.fill).start()
        got = ectx.wait(1, timeout=10)
        assert [x.addr for x in got] == [a.addr]
        assert a.result > 0 and (k.n == 0 or a.result == k.n), a.result
        assert path_counts(ectx)[off_thread(engine_executor)] == 1
    finally:
        k.close()


@pytest.mark.parametrize("kind", ["pipe", "stream socket", "datagram socket", "eventfd"])
def test_a_pollable_file_with_data_is_read_in_the_caller(ectx, kind):
    k = Kind(kind)
    try:
        k.fill()
        buf = ectx.buffer(64)
        ch = ectx.chain()
        a = ch.read(k.r, buf, 64, ret=True)
        final, went_async = run(ectx, ch)
        assert (final.addr, a.result, went_async) == (a.addr, k.n, False)
        c = path_counts(ectx)
        assert (c["atoms_nowait"], c["atoms_uring"], c["atoms_pool"]) == (1, 0, 0), c
    finally:
        k.close()


@pytest.mark.parametrize("name", ["/dev/zero", "/proc/self/stat"])
def test_files_that_never_wait_give_their_data(ectx, name):
    """/dev/zero answers RWF_NOWAIT at once (in the caller); procfs refuses
    RWF_NOWAIT (EOPNOTSUPP), so the read goes off the caller's thread --
    either way the data is the native read's."""
    fd = os.open(name, os.O_RDONLY)
    try:
        buf = ectx.buffer(64)
        buf.write(b"\xff" * 64)
        ch = ectx.chain()
        a = ch.read(fd, buf, 64, ret=True)
        final, _ = run(ectx, ch)
        assert final.addr == a.addr and a.result > 0
        if name == "/dev/zero":
            assert buf.read() == bytes(64)
            assert path_counts(ectx)["atoms_nowait"] == 1
        else:
            assert buf.read(a.result).split()[0] == str(os.getpid()).encode()
            assert path_counts(ectx)["atoms_nowait"] == 0
    finally:
        os.close(fd)


# ---- who waits ---------------------------------------------------------------------------

def test_a_waiting_caller_reaps_its_own_completion(ectx):
    """Context.wait waits in the kernel itself (io_uring_enter, or poll() on
    the pool's eventfd) and publishes what it reaps (D24)."""
    lp = LatePipe()
    try:
        buf = ectx.buffer(8)
        ch = ectx.chain()
        a = ch.read(lp.r, buf, 8, ret=True)
        assert ectx.exec(ch) is None
        lp.later(b"abcdefgh", 0.1)
        got = ectx.wait(1, timeout=10)
        assert [x.addr for x in got] == [a.addr] and buf.read() == b"abcdefgh"
        assert ectx.counters()["caller_waits"] >= 1
    finally:
        lp.close()


def test_a_sync_atom_in_flight_is_reaped_by_its_caller(ectx, engine_executor, diskfile):
    """SYSLET_SYNC on an O_DIRECT read: the syslet completes synchronously.
    With io_uring the read is submitted and the caller waits for its CQE
    itself; the pool-only backend runs it in the caller (SYSLET_SYNC asks
    for exactly that; no RWF_NOWAIT attempt either way)."""
    path, data = diskfile
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = ectx.buffer(BS, align=BS)
        ch = ectx.chain()
        a = ch.pread64(fd, buf, BS, 17 * BS, ret=True, flags=compat.SYSLET_SYNC)
        final, went_async = run(ectx, ch)
        assert (final.addr, a.result, went_async) == (a.addr, BS, False)
        assert buf.read() == data[17 * BS:18 * BS]
        c = ectx.counters()
        assert c["atoms_nowait"] == 0
        if engine_executor == "io_uring":
            assert (c["direct_reads"], c["atoms_uring"], c["atoms_inline"]) == (1, 1, 0), c
        else:
            assert (c["atoms_inline"], c["atoms_pool"]) == (1, 0), c
    finally:
        os.close(fd)


@pytest.mark.parametrize("backend", ENGINES)
def test_many_o_direct_reads_in_flight_all_arrive_once(backend, diskfile):
    """32 O_DIRECT reads in flight, resubmitted as they complete: every one
    is published exactly once with the right data."""
    if backend == "io_uring":
        skip_unless_io_uring()
    path, data = diskfile
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        with compat.Context(backend=backend, ring_slots=64) as ctx:
            units = []
            for i in range(32):
                off = ctx.var(i * BS)
                buf = ctx.buffer(BS, align=BS)
                ch = ctx.chain()
                ch.pread64(fd, buf, BS, off, ret=True)
                units.append((ch, off, buf))
            index = {u[0].head.addr: u for u in units}
            seen = 0
            pending = 0
            for ch, _, _ in units:
                if ctx.exec(ch) is None:
                    pending += 1
                else:
                    seen += 1
            rounds = 0
            while pending and rounds < 1000:
                rounds += 1
                for atom in ctx.wait(1, timeout=10):
                    pending -= 1
                    ch, off, buf = index[atom.addr]
                    o = off.value
                    assert atom.result == BS and buf.read() == data[o:o + BS]
                    seen += 1
            assert pending == 0 and seen == 32
            c = ctx.counters()
            assert c["direct_reads"] == 32 and c["atoms_nowait"] == 0
            assert c["syslets_async"] == c["published"]
    finally:
        os.close(fd)


# ---- the engine's memory of which descriptors are not O_DIRECT ---------------------------

def _read_chain(ctx, fd, off):
    buf = ctx.buffer(BS, align=BS)
    ch = ctx.chain()
    a = ch.pread64(fd, buf, BS, off, ret=True)
    return ch, a, buf


def _reuse_as_direct(path, fd):
    """Opens path O_DIRECT onto descriptor number fd (closed by the caller)."""
    nfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    if nfd != fd:
        os.dup2(nfd, fd)
        os.close(nfd)
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    assert fl & os.O_DIRECT


def _remembered_buffered_fd(ctx, path):
    """A buffered fd on path, read once through ctx so that the engine
    remembers it as not O_DIRECT (checked)."""
    fd = os.open(path, os.O_RDONLY)
    os.pread(fd, BS, 0)
    ch, _, _ = _read_chain(ctx, fd, 0)
    run(ctx, ch)
    assert path_counts(ctx)["atoms_nowait"] == 1      # remembered: not O_DIRECT
    return fd


@pytest.mark.parametrize("how", ["close atom", "close_range atom", "dup2 atom", "fcntl atom"])
def test_a_descriptor_changed_by_an_atom_is_asked_again(ectx, diskfile, how):
    """The engine remembers which descriptors are not O_DIRECT (so a cached
    read costs no fcntl); an atom that closes, duplicates onto or changes
    the flags of a descriptor makes it forget that one: the next read of an
    O_DIRECT file there is not tried in the caller."""
    path, data = diskfile
    _changed_by_an_atom(ectx, path, data, how)


def _changed_by_an_atom(ectx, path, data, how, at=None):
    if at is None:
        fd = _remembered_buffered_fd(ectx, path)
    else:       # already open at that number
        fd = at
        os.pread(fd, BS, 0)
        ch, _, _ = _read_chain(ectx, fd, 0)
        run(ectx, ch)
        assert path_counts(ectx)["atoms_nowait"] == 1
    try:
        if how == "close atom":
            ch = ectx.chain()
            ch.close(fd, ret=True)
            run(ectx, ch)
            _reuse_as_direct(path, fd)
        elif how == "close_range atom":
            ch = ectx.chain()
            ch.close_range(fd, fd + 10, 0, ret=True)
            run(ectx, ch)
            _reuse_as_direct(path, fd)
        elif how == "dup2 atom":
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            ch = ectx.chain()
            ch.dup2(dfd, fd, ret=True)
            run(ectx, ch)
            os.close(dfd)
        else:
            ch = ectx.chain()
            ch.fcntl(fd, fcntl.F_SETFL, os.O_RDONLY | os.O_DIRECT, ret=True)
            run(ectx, ch)
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
        ch, a, buf = _read_chain(ectx, fd, 9 * BS)
        final, _ = run(ectx, ch)
        assert (final.addr, a.result) == (a.addr, BS) and buf.read() == data[9 * BS:10 * BS]
        c = path_counts(ectx)
        assert (c["atoms_nowait"], c["direct_reads"]) == (1, 1), c
    finally:
        os.close(fd)


#: A descriptor number far above the first 4096 (the engine's fd-kind cache
#: covered only those before; every number below 1 << 20 now).
HIGH_FD = 5000

_HIGH_PROGRAM = r"""
import os, resource, sys
sys.path[:0] = sys.argv[3:]
import compat, test_blocking as tb
path, backend = sys.argv[1], sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft <= tb.HIGH_FD:
    resource.setrlimit(resource.RLIMIT_NOFILE, (tb.HIGH_FD + 1, max(hard, tb.HIGH_FD + 1)))
with open(path, "rb") as f:
    data = f.read()
for how in ("close atom", "close_range atom", "dup2 atom", "fcntl atom"):
    with compat.Context(backend=backend, ring_slots=16) as ctx:
        fd = os.open(path, os.O_RDONLY)
        os.dup2(fd, tb.HIGH_FD)
        os.close(fd)
        tb._changed_by_an_atom(ctx, path, data, how, at=tb.HIGH_FD)
print("ok")
"""


def test_a_high_descriptor_is_remembered_and_forgotten_as_a_low_one(engine_executor, diskfile):
    """The same at descriptor 5000, in a child process (a process whose
    descriptor table grew that far reads differently in the cold-descriptor
    test below)."""
    path, _ = diskfile
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", _HIGH_PROGRAM, path, engine_executor, here,
                        os.path.dirname(here)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stdout + r.stderr


def test_a_descriptor_reused_behind_the_engines_back_costs_one_read(ectx, diskfile):
    """os.close + os.open outside any syslet: the engine cannot see it.  The
    first read of the O_DIRECT file that reused the number may still be
    tried in the caller (it waits for the device once); the engine notices
    the slow read and asks again, so the next ones go off the caller's
    thread."""
    path, data = diskfile
    fd = _remembered_buffered_fd(ectx, path)
    try:
        os.close(fd)
        _reuse_as_direct(path, fd)
        for i in range(3):
            ch, a, buf = _read_chain(ectx, fd, (40 + i) * BS)
            final, _ = run(ectx, ch)
            assert a.result == BS and buf.read() == data[(40 + i) * BS:(41 + i) * BS]
        c = path_counts(ectx)
        assert c["atoms_nowait"] <= 2 and c["direct_reads"] >= 2, c
    finally:
        os.close(fd)


def test_a_cold_descriptor_skips_the_try_until_a_read_hits_the_cache(ectx, engine_executor,
                                                                     diskfile):
    """After a read of fd missed the page cache (RWF_NOWAIT: EAGAIN), the
    next read of fd goes to io_uring untried (``cold_reads``): io_uring's own
    non-blocking attempt does what the try would.  A read that then completes
    during the submit (it was cached) makes fd a try-first fd again.  The
    pool-only backend keeps trying (a pool hop costs more than a try)."""
    path, data = diskfile
    fd = os.open(path, os.O_RDONLY)
    try:
        # A miss whose io_uring read completed during the submit (the
        # readahead its try started was quick) makes fd try-first again at
        # once: the premise needs one that went async (asked up to 20 times).
        for page in range(100, 140, 2):
            drop_cache(path, page, page + 1)
            ch, a, buf = _read_chain(ectx, fd, page * BS)
            _, miss_async = run(ectx, ch)               # a miss
            assert a.result == BS and buf.read() == data[page * BS:(page + 1) * BS]
            if miss_async or engine_executor != "io_uring":
                break
        else:
            pytest.fail("every miss completed during its submission")
        # (a try that missed is no reason to ask the fd's kind again, however
        # long its readahead took: only a slow read that returned data is)
        nxt = page + 1
        os.pread(fd, BS, nxt * BS)                  # this page is cached now
        c0, cold0 = path_counts(ectx), ectx.counters()["cold_reads"]
        ch, a, buf = _read_chain(ectx, fd, nxt * BS)
        final, went_async = run(ectx, ch)
        assert a.result == BS and buf.read() == data[nxt * BS:(nxt + 1) * BS]
        c = {k: v - c0[k] for k, v in path_counts(ectx).items()}
        cold = ectx.counters()["cold_reads"] - cold0
        if engine_executor == "io_uring":
            # untried, through io_uring, completed during the submit
            assert (cold, c["atoms_nowait"], c["atoms_uring"], went_async) == (1, 0, 1, False), c
        else:
            assert (cold, c["atoms_nowait"]) == (0, 1), c
        ch, a, buf = _read_chain(ectx, fd, nxt * BS)    # tried again: a hit
        run(ectx, ch)
        c = {k: v - c0[k] for k, v in path_counts(ectx).items()}
        assert c["atoms_nowait"] == 1 + (engine_executor != "io_uring"), c
    finally:
        os.close(fd)


def test_turning_cold_and_cached_again_does_not_ask_the_kind_again(ectx, engine_executor,
                                                                    diskfile):
    """A file whose reads alternate between misses (the fd turns cold) and
    hits (cached again) is the same file all along: its kind is asked from
    the kernel in full (``fd_classified``: fstat, fstatfs, fcntl) when it
    is first met, not again at every change.  Before, each change forgot which file
    the entry was, and the next syslet classified it anew: a fifth of the
    reads of a cold random-read run paid four extra system calls."""
    path, data = diskfile
    fd = os.open(path, os.O_RDONLY)
    try:
        for page in (0, 1):                         # the fd becomes known: a hit, a miss
            if page:
                drop_cache(path, page, page + 1)
            ch, a, buf = _read_chain(ectx, fd, page * BS)
            run(ectx, ch)
        k0 = ectx.counters()["fd_classified"]
        c0 = path_counts(ectx)
        for page in range(150, 190):
            drop_cache(path, page, page + 1)
            ch, a, buf = _read_chain(ectx, fd, page * BS)       # a miss: cold
            run(ectx, ch)
            assert a.result == BS and buf.read() == data[page * BS:(page + 1) * BS]
            os.pread(fd, BS, (page + 50) * BS)
            ch, a, buf = _read_chain(ectx, fd, (page + 50) * BS)   # a hit: cached again
            run(ectx, ch)
            assert a.result == BS and buf.read() == data[(page + 50) * BS:(page + 51) * BS]
        c = {k: v - c0[k] for k, v in path_counts(ectx).items()}
        assert c[off_thread(engine_executor)] >= 1, c     # misses went off the caller's thread
        # (a try the scheduler preempted looks slow: D23 then asks again, rarely)
        assert ectx.counters()["fd_classified"] - k0 <= 4, (ectx.counters(), c)
    finally:
        os.close(fd)


# ---- more blocked syslets than pool workers ------------------------------------------------

def test_blocked_syslets_get_threads_past_the_pool_size(engine_executor, tmp_path):
    """Without a thread limit a syslet that blocks gets a thread of its own,
    as under the 2007 kernel: more syslets blocked in a call io_uring has no
    opcode for (flock) than the pool has workers (4 on the io_uring backend,
    8 per CPU on the pool-only one), and only the last one's lock released:
    the last completes, then the others (D36)."""
    n = min(8 * (os.cpu_count() or 1), 256) + 4
    with compat.Context(backend=engine_executor, ring_slots=512) as ctx:
        holders, fds, rets = [], [], []
        try:
            for i in range(n):
                path = tmp_path / f"lock{i}"
                path.write_bytes(b"")
                holders.append(os.open(path, os.O_RDONLY))
                fcntl.flock(holders[-1], fcntl.LOCK_EX)
                fds.append(os.open(path, os.O_RDONLY))
            atoms = []
            for fd in fds:
                ch = ctx.chain()
                atoms.append(ch.flock(fd, fcntl.LOCK_EX, ret=True, flags=compat.SYSLET_ASYNC))
                assert ctx.exec(ch) is None
            fcntl.flock(holders[-1], fcntl.LOCK_UN)
            got = ctx.wait(1, timeout=20)
            assert [a.addr for a in got] == [atoms[-1].addr]
            assert atoms[-1].result == 0
            assert ctx.counters()["published"] == 1
            for h in holders[:-1]:
                fcntl.flock(h, fcntl.LOCK_UN)
            left, deadline = n - 1, time.monotonic() + 20
            while left and time.monotonic() < deadline:
                left -= len(ctx.wait(left, timeout=max(0.0, deadline - time.monotonic())))
            assert left == 0
            assert [a.result for a in atoms] == [0] * n
        finally:
            for fd in holders + fds:
                os.close(fd)
