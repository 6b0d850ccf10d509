"""Ring lifecycle, waiting, signals, keep-alive, batches, fork."""
import errno
import gc
import os
import signal
import threading
import time
import weakref

import cffi
import pytest

import uring_shim as us
from waits import wait_blocked

NR_IO_URING_ENTER = 426

pytestmark = pytest.mark.usefixtures("needs_io_uring")
_ffi = cffi.FFI()


@pytest.fixture
def pipe():
    rfd, wfd = os.pipe()
    yield rfd, wfd
    os.close(rfd)
    os.close(wfd)


def test_attributes(ring):
    assert ring.fd >= 0 and ring.sq_entries == 64 and ring.cq_entries == 128
    assert ring.features & us.IORING_FEAT_NODROP
    with us.Ring(8, cq_entries=1024) as r:
        assert r.sq_entries == 8 and r.cq_entries == 1024
    assert {us.IORING_OP_NOP, us.IORING_OP_READ} <= ring.probe()
    assert ring.supports(us.IORING_OP_NOP) and not ring.supports(255)


def test_bad_setup_raises_errno(needs_io_uring):
    with pytest.raises(OSError) as ei:
        us.Ring(0)
    assert ei.value.errno == errno.EINVAL


def test_close_is_idempotent_and_closed_ring_raises_ebadf():
    r = us.Ring()
    r.close()
    r.close()
    assert r.closed
    for call in (lambda: r.prep_nop(), r.submit, r.wait, r.peek, r.probe):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.EBADF


def test_leaked_ring_warns():
    r = us.Ring()
    r.prep_nop()
    with pytest.warns(ResourceWarning):
        del r
        gc.collect()


def test_close_cancels_in_flight_read_promptly(pipe):
    rfd, wfd = pipe
    r = us.Ring()
    r.prep_read(rfd, bytearray(8), user_data=1)
    r.submit()
    assert r.outstanding == 1
    t0 = time.monotonic()
    r.close()
    assert time.monotonic() - t0 < 0.5
    os.write(wfd, b"later")
    assert os.read(rfd, 16) == b"later"            # the cancelled read took nothing


def test_close_releases_a_concurrent_waiter(pipe):
    r = us.Ring()
    r.prep_read(pipe[0], bytearray(8), user_data=1)
    got = []
    t = threading.Thread(target=lambda: got.append(r.wait()))
    t.start()
    assert wait_blocked(NR_IO_URING_ENTER, {r.fd})      # the waiter is in the kernel
    t0 = time.monotonic()
    r.close()
    t.join(2)
    assert not t.is_alive() and time.monotonic() - t0 < 1
    assert got == [[]]


def test_prep_many_dicts_keep_per_entry(ring, tmp_path):
    class Token:
        pass
    tok = Token()
    ref = weakref.ref(tok)
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    buf = bytearray(4)
    fd = os.open(path, os.O_RDONLY)
    try:
        ring.prep_many([dict(opcode=us.IORING_OP_READ, fd=fd, addr=buf, len=4, off=3,
                             user_data=1, keep=(tok,)),
                        dict(opcode=us.IORING_OP_NOP, user_data=2)])
        del tok
        assert ring.outstanding == 2
        assert sorted(ring.wait(2)) == [(1, 4, 0), (2, 0, 0)]
        assert bytes(buf) == b"3456"
        gc.collect()
        assert ref() is None
    finally:
        os.close(fd)


def test_close_drops_unsubmitted(ring, pipe):
    ring.prep_read(pipe[0], bytearray(8), user_data=1)
    assert ring.discard_prepared() == 1
    assert ring.outstanding == 0
    ring.prep_nop(user_data=2)
    assert ring.wait() == [(2, 0, 0)]


def test_wait_timeout_and_nothing_outstanding(ring, pipe):
    t0 = time.monotonic()
    assert ring.wait() == []                          # nothing outstanding: no blocking
    ring.prep_read(pipe[0], bytearray(8), user_data=1)
    assert ring.wait(timeout=0.1) == []
    assert 0.09 <= time.monotonic() - t0 < 1
    assert ring.peek() == []
    os.write(pipe[1], b"abc")
    assert ring.wait() == [(1, 3, 0)]


def test_wait_retries_after_eintr_and_handler_runs(ring, pipe):
    rfd, wfd = pipe
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append(time.monotonic()))
    writer = threading.Timer(0.4, os.write, (wfd, b"hi"))
    try:
        ring.prep_read(rfd, bytearray(8), user_data=7)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        writer.start()
        t0 = time.monotonic()
        got = ring.wait()
        assert got == [(7, 2, 0)]
        assert seen and seen[0] - t0 < 0.35            # handler ran before the data came
        assert time.monotonic() - t0 >= 0.35
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        writer.join()


def test_handler_exception_propagates_from_wait(ring, pipe):
    def boom(*a):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGALRM, boom)
    try:
        ring.prep_read(pipe[0], bytearray(8), user_data=7)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            ring.wait(timeout=5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert ring.outstanding == 1                      # still tracked; close() cancels it


def test_keep_alive_until_reaped(ring, pipe):
    class Token:
        pass
    tok = Token()
    ref = weakref.ref(tok)
    ring.prep_read(pipe[0], bytearray(4), user_data=3)
    ring.prep(us.IORING_OP_NOP, user_data=4, keep=(tok,))
    del tok
    ring.submit()
    gc.collect()
    assert ring.wait(1, timeout=5) == [(4, 0, 0)]
    gc.collect()
    assert ref() is None
    # the read buffer is held by the in-flight table until its CQE
    os.write(pipe[1], b"abcd")
    assert ring.wait() == [(3, 4, 0)]


def test_shared_user_data_released_on_last(ring):
    class Token:
        pass
    tok = Token()
    ref = weakref.ref(tok)
    ring.prep_nop(user_data=5)
    ring.prep(us.IORING_OP_NOP, user_data=5, keep=(tok,))
    del tok
    assert ring.outstanding == 2
    assert len(ring.wait(2)) == 2 and ring.outstanding == 0
    gc.collect()
    assert ref() is None


def test_cqe_skip_success_is_not_outstanding(ring):
    ring.prep(us.IORING_OP_NOP, flags=us.IOSQE_CQE_SKIP_SUCCESS, user_data=1)
    ring.prep_nop(user_data=2)
    assert ring.outstanding == 1
    assert ring.wait(2, timeout=0.2) == [(2, 0, 0)]


def test_sq_full_raises_ebusy_and_prep_many_is_all_or_nothing():
    with us.Ring(4) as r:
        for i in range(4):
            r.prep_nop(user_data=i)
        with pytest.raises(OSError) as ei:
            r.prep_nop()
        assert ei.value.errno == errno.EBUSY
        assert r.discard_prepared() == 4
        r.prep_nop()
        with pytest.raises(OSError) as ei:
            r.prep_many([dict(opcode=us.IORING_OP_NOP)] * 4)
        assert ei.value.errno == errno.EBUSY
        assert r.outstanding == 1


def test_reserved_user_data(ring):
    with pytest.raises(ValueError):
        ring.prep_nop(user_data=us.CANCEL_USER_DATA)


def test_prep_many_cffi_array_and_submit_wait_reap(ring):
    descs = us.new_descs(32)
    for i in range(32):
        descs[i].opcode = us.IORING_OP_NOP
        descs[i].user_data = 100 + i
    assert ring.prep_many(descs) == 32
    assert sorted(c.user_data for c in ring.wait(32)) == list(range(100, 132))
    out = us.new_cqes(32)
    assert ring.submit_wait_reap(descs, 32, out) == 32
    assert sorted(out[i].user_data for i in range(32)) == list(range(100, 132))
    assert ring.outstanding == 0
    comps = ring.submit_wait_reap(descs, 4)
    assert [c.res for c in comps] == [0] * 4


def test_submit_wait_reap_needs_idle_ring_and_times_out(ring, pipe):
    descs = us.new_descs(1)
    descs[0].opcode = us.IORING_OP_NOP
    descs[0].user_data = 1
    ring.prep_nop()
    with pytest.raises(OSError) as ei:
        ring.submit_wait_reap(descs, 1)
    assert ei.value.errno == errno.EBUSY
    ring.wait()
    # a read that cannot complete yet: partial result, the rest through wait()
    buf = bytearray(4)
    cbuf = _ffi.from_buffer(buf)
    descs = us.new_descs(2)
    descs[0].opcode = us.IORING_OP_NOP
    descs[0].user_data = 1
    descs[1].opcode = us.IORING_OP_READ
    descs[1].fd = pipe[0]
    descs[1].addr = int(_ffi.cast("uintptr_t", cbuf))
    descs[1].len = 4
    descs[1].off = (1 << 64) - 1                     # current position
    descs[1].user_data = 2
    got = ring.submit_wait_reap(descs, 2, timeout=0.1, keep=(buf, cbuf))
    assert got == [(1, 0, 0)] and ring.outstanding == 1
    os.write(pipe[1], b"wxyz")
    assert ring.wait() == [(2, 4, 0)] and bytes(buf) == b"wxyz"


def test_waiter_does_not_block_submitter(ring, pipe):
    got = []
    ring.prep_read(pipe[0], bytearray(4), user_data=10)
    t = threading.Thread(target=lambda: got.extend(ring.wait(2, timeout=3)))
    t.start()
    assert wait_blocked(NR_IO_URING_ENTER, {ring.fd})   # the waiter is in the kernel now
    t0 = time.monotonic()
    ring.prep_nop(user_data=11)
    ring.submit()
    assert time.monotonic() - t0 < 0.04               # not serialised behind the wait
    os.write(pipe[1], b"abcd")
    t.join()
    assert sorted(got) == [(10, 4, 0), (11, 0, 0)]


def test_threads_share_a_ring(ring):
    per, nthreads = 300, 4
    got = []
    lock = threading.Lock()

    def worker(k):
        mine = []
        for i in range(per):
            ring.prep_nop(user_data=k * per + i)
            mine += ring.wait(1, timeout=5)
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got += ring.wait(per * nthreads, timeout=2) if ring.outstanding else []
    assert sorted(c.user_data for c in got) == list(range(per * nthreads))
    assert ring.outstanding == 0


def test_iowq_max_workers(ring):
    prev = ring.set_iowq_max_workers(3, 5)
    assert len(prev) == 2
    assert ring.set_iowq_max_workers(0, 0) == (3, 5)


def test_fork_child_cannot_use_parent_ring(ring):
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                       # pragma: no cover - child
        code = 1
        try:
            ring.prep_nop()
        except OSError as e:
            code = 0 if e.errno == errno.EBADF and ring.closed else 2
        os.write(wfd, bytes([code]))
        os._exit(0)
    os.close(wfd)
    try:
        assert os.read(rfd, 1) == b"\0"
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    ring.prep_nop(user_data=1)                         # the parent's ring still works
    assert ring.wait() == [(1, 0, 0)]
