"""Translated calls give the native answer (issue 13, item 1; the table is
docs/translation.md section 9, the decision docs/decisions.md D35).

For every call the engine translates to io_uring -- read, write, pread64,
pwrite64 (count 4096 and 0), fsync, fdatasync, close, open, openat -- on
every kind of descriptor or path of the table, the syslet's result, the
bytes it read and the state it leaves (position, bytes queued, flags, file
content) equal the native call's.  Each row runs in a child process
(translation_cases.py) under a watchdog, so a call that never returns
fails its row instead of hanging the suite.  Each cell runs the call alone,
with SYSLET_SYNC, with SYSLET_ASYNC and linked after a pread64; where the
native call blocks, the syslet must go async (the caller is not blocked)
and complete once the partner acts.

The rows run on the executor of the suite's backend (URING_SHIM_BACKEND):
``make test`` runs the suite once per backend, so every row holds on both
without running twice per pass.

Nothing is timed: the watchdog only turns a hang into a failure."""
import errno
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile

import pytest

import compat
import uring_shim
from syslet_testlib import pattern

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import translation_cases as tc  # noqa: E402

#: Seconds without a line from the child before its cell counts as hung.
WATCHDOG = float(os.environ.get("SYSLET_TRANSLATION_WATCHDOG", "60"))


@pytest.fixture
def dirs(tmp_path):
    """A scratch directory in TMPDIR and one on the checkout's file system
    (O_DIRECT needs a disk file system), both removed afterwards."""
    disk = tempfile.mkdtemp(prefix=".translation-", dir=ROOT)
    yield str(tmp_path), disk
    shutil.rmtree(disk, ignore_errors=True)


def run_child(what, name, executor, dirs):
    """Runs translation_cases.py for one row; returns (cells, hung cell or
    None, unavailable reason or None, stderr)."""
    tmp, disk = dirs
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "translation_cases.py"), what, name,
                          executor, tmp, disk],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    cells, current, hung, unavailable = [], None, None, None
    buf = b""
    try:
        while True:
            ready, _, _ = select.select([p.stdout], [], [], WATCHDOG)
            if not ready:
                hung = current
                p.kill()
                break
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "start" in msg:
                    current = msg["start"]
                elif "unavailable" in msg:
                    unavailable = msg["unavailable"]
                else:
                    current = None
                    cells.append(msg)
    finally:
        p.wait()
        err = p.stderr.read().decode(errors="replace")
        p.stdout.close()
        p.stderr.close()
    if hung is None and p.returncode != 0:
        pytest.fail(f"{name} on {executor}: the child failed ({p.returncode}):\n{err[-3000:]}")
    return cells, hung, unavailable, err


def check_row(what, name, executor, dirs):
    if executor != uring_shim.backend():
        pytest.skip(f"the rows run on the suite's backend ({uring_shim.backend()})")
    cells, hung, unavailable, err = run_child(what, name, executor, dirs)
    if unavailable:
        pytest.skip(unavailable)
    bad = []
    for c in cells:
        eng = dict(c["engine"])
        went_async = eng.pop("async")
        if c["native"] != eng:
            bad.append(f"{c['cell']}: native {c['native']} != engine {eng}")
        elif c["blocks"] and not went_async:
            bad.append(f"{c['cell']}: the native call blocks, the syslet did not go async")
    if hung:
        bad.append(f"{hung}: never returned ({WATCHDOG:.0f} s without progress)")
    assert not bad, f"{name} on {executor}:\n" + "\n".join(bad)
    assert cells
    return {(tuple(c["cell"])): c for c in cells}


#: Native answers that make a row meaningful (the kernel's, measured on
#: 6.18; checked so that a broken probe cannot pass as "equal").
EXPECT = {
    ("epoll", "read"): -errno.EINVAL,
    ("epoll", "write"): -errno.EINVAL,
    ("io_uring", "read"): -errno.EINVAL,
    ("io_uring", "close"): 0,
    ("pidfd", "read"): -errno.EINVAL,
    ("inotify_empty_nb", "read"): -errno.EAGAIN,
    ("pipe_r_empty_nb", "read"): -errno.EAGAIN,
    ("pipe_w_full_nb", "write"): -errno.EAGAIN,
    ("stream_empty_nb", "read"): -errno.EAGAIN,
    ("pty_slave_nb", "read"): -errno.EAGAIN,
    ("eventfd_zero_nb", "read"): -errno.EAGAIN,
    ("pipe_r_data", "pread64"): -errno.ESPIPE,
    ("stream_data", "pwrite64"): -errno.ESPIPE,
    ("procfs_comm", "pwrite64"): -errno.ESPIPE,
    ("directory", "read0"): -errno.EISDIR,
    ("eventfd_set", "write0"): -errno.EINVAL,
    ("dev_full", "write0"): -errno.ENOSPC,
    ("pty_master", "read0"): 0,
    ("reg_direct", "read"): 4096,
    ("reg", "pread64"): 4096,
}


@pytest.mark.parametrize("kind", list(tc.KINDS))
def test_every_translated_call_gives_the_native_answer(kind, engine_executor, dirs):
    cells = check_row("fds", kind, engine_executor, dirs)
    for (k, op), want in EXPECT.items():
        if k == kind:
            assert cells[(op, "plain")]["native"]["res"] == want, (op, cells[(op, "plain")])
    if kind == "reg_direct":
        # read at the file position moves it, also for O_DIRECT
        assert cells[("read", "plain")]["engine"]["state"][0][0] == 4096


@pytest.mark.parametrize("case", list(tc.OPEN_CASES))
def test_every_open_gives_the_native_answer(case, engine_executor, dirs):
    cells = check_row("opens", case, engine_executor, dirs)
    if case in ("fifo_rdonly_no_writer", "fifo_through_symlink", "fifo_wronly_no_reader"):
        assert cells[("open", "open")]["blocks"]


# ---- the same decisions, seen from the engine's side ------------------------------

@pytest.fixture
def ectx(engine_executor):
    with compat.Context(backend=engine_executor, ring_slots=16) as c:
        yield c


def run(ctx, chain):
    r = ctx.exec(chain)
    return r if r is not None else run_wait(ctx)


def test_o_direct_reads_at_the_file_position_move_it(ectx, dirs):
    """Two read atoms on an O_DIRECT fd read consecutive blocks (io_uring
    leaves an O_DIRECT file's position alone: such reads run natively)."""
    path = os.path.join(dirs[1], "direct.bin")
    data = pattern(4 * 4096, seed=5)
    with open(path, "wb") as f:
        f.write(data)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        b1, b2 = ectx.buffer(4096, align=4096), ectx.buffer(4096, align=4096)
        ch = ectx.chain()
        a = ch.read(fd, b1, 4096, ret=True)
        b = ch.read(fd, b2, 4096, ret=True)
        assert run(ectx, ch).addr == b.addr
        assert (a.result, b.result) == (4096, 4096)
        assert b1.read() == data[:4096] and b2.read() == data[4096:8192]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 8192
    finally:
        os.close(fd)


def test_a_number_reused_behind_the_engines_back_is_asked_again(ectx, datafile):
    """The engine caches a descriptor's kind.  A number that a regular file
    had and a non-blocking pipe has now (closed and reused without an atom):
    the lone read's try does not settle, the kind is asked again, and the
    read gives the native EAGAIN instead of waiting in io_uring."""
    path, _ = datafile
    fd = os.open(path, os.O_RDONLY)
    buf = ectx.buffer(4096)
    ch = ectx.chain()
    ch.read(fd, buf, 4096, ret=True)
    assert run(ectx, ch).result == 4096
    r, w = os.pipe2(os.O_NONBLOCK)
    os.dup2(r, fd)
    try:
        ch = ectx.chain()
        a = ch.read(fd, buf, 4096, ret=True)
        assert run(ectx, ch).addr == a.addr and a.result == -errno.EAGAIN
        ch = ectx.chain()
        a = ch.pread64(fd, buf, 4096, 0, ret=True, flags=compat.SYSLET_SYNC)
        assert run(ectx, ch).addr == a.addr and a.result == -errno.ESPIPE
    finally:
        for x in (fd, r, w):
            os.close(x)


def test_closing_an_io_uring_fd(ectx):
    """io_uring's CLOSE refuses io_uring fds (EBADF); close(2) closes them."""
    import ctypes
    params = ctypes.create_string_buffer(120)
    fd = tc.sysc(425, 4, ctypes.addressof(params))
    assert fd >= 0
    ch = ectx.chain()
    a = ch.close(fd, ret=True)
    assert run(ectx, ch).addr == a.addr and a.result == 0
    assert tc.sysc(72, fd, 1) == -errno.EBADF


def test_a_read_after_a_fifo_open_gets_the_writers_data(ectx, tmp_path):
    """open(fifo, O_RDONLY) then read, no writer yet: the open waits for a
    writer off the caller's thread, and the read gets the writer's data,
    not the end of file that a FIFO without a writer reads.  (io_uring's
    non-blocking open returned at once; the pool-only backend opened the
    FIFO in the caller, which blocked until a writer came.)"""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    fdv, buf = ectx.var(), ectx.buffer(64)
    ch = ectx.chain()
    ch.open(fifo.encode(), os.O_RDONLY, 0, ret=fdv, flags=compat.SYSLET_STOP_ON_NEGATIVE)
    rd = ch.read(fdv, buf, 64, ret=True)
    assert ectx.exec(ch) is None        # waits, off the caller's thread
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.write(w, b"hello")
        assert run_wait(ectx).addr == rd.addr
        assert rd.result == 5 and buf.read(5) == b"hello"
    finally:
        os.close(w)
        if fdv.value > 0:
            os.close(fdv.value)


def run_wait(ctx):
    """The next published atom; a watchdog (WATCHDOG s without one) turns a
    syslet that never ends into a failure."""
    got = ctx.wait(1, WATCHDOG)
    assert got, f"the syslet did not end ({WATCHDOG:.0f} s)"
    return got[0]


@pytest.mark.parametrize("case", ["fifo_pread", "fifo_nonblock_read", "fifo_write_read",
                                  "procfs_pwrite", "regular_pread", "directory_read0",
                                  "pidfd_reopened"])
def test_calls_on_a_descriptor_an_atom_opened(ectx, tmp_path, case):
    """A descriptor that an atom of the syslet opened: the engine knows it
    came from a path open (no epoll or io_uring fd), which settles a
    blocking read by itself; any other call still asks its kind.  A pidfd
    can be opened again through /proc/self/fd/N: not taken for a file."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    reg = tmp_path / "reg"
    reg.write_bytes(pattern(8192, seed=2))
    pidfd = os.pidfd_open(os.getpid())
    try:
        _atom_opened(ectx, tmp_path, case, fifo, reg, pidfd)
    finally:
        os.close(pidfd)


def _atom_opened(ectx, tmp_path, case, fifo, reg, pidfd):
    path, flags, call, want = {
        "pidfd_reopened": (f"/proc/self/fd/{pidfd}", os.O_RDONLY, ("read", 64), -errno.EINVAL),
        "fifo_pread": (fifo, os.O_RDWR, ("pread64", 64, 0), -errno.ESPIPE),
        "fifo_nonblock_read": (fifo, os.O_RDWR | os.O_NONBLOCK, ("read", 64), -errno.EAGAIN),
        "fifo_write_read": (fifo, os.O_RDWR, ("write", 5), 5),
        "procfs_pwrite": ("/proc/self/comm", os.O_RDWR, ("pwrite64", 6, 0), -errno.ESPIPE),
        "regular_pread": (str(reg), os.O_RDONLY, ("pread64", 64, 4096), 64),
        "directory_read0": (str(tmp_path), os.O_RDONLY, ("read", 0), -errno.EISDIR),
    }[case]
    fdv, buf = ectx.var(), ectx.buffer(64)
    buf.write(b"hello")
    ch = ectx.chain()
    ch.open(path.encode(), flags, 0, ret=fdv, flags=compat.SYSLET_STOP_ON_NEGATIVE)
    a = ch.atom(compat.NR[call[0]], fdv, buf, *call[1:], ret=True)
    cl = ch.close(fdv, ret=True)
    final = run(ectx, ch)
    assert final.addr == cl.addr and a.result == want, (case, a.result)
    if case == "regular_pread":
        assert buf.read() == pattern(8192, seed=2)[4096:4160]
    assert cl.result == 0       # (the number may be a pool worker's ring by now)
