"""The native fallback pool, with and without a ring (runs on both backends)."""
import errno
import gc
import os
import threading
import time

import cffi
import pytest

import uring_shim as us
from waits import wait_blocked

NR_LSEEK, NR_GETPPID, NR_READ, NR_GETDENTS64 = 8, 110, 0, 217
_ffi = cffi.FFI()


@pytest.fixture(params=["ring", "no_ring"])
def pool_and_reap(request, backend):
    """(pool, reap(n) -> {user_data: res}) with completions from a ring or the pool."""
    if request.param == "ring":
        if backend != "io_uring":
            pytest.skip(f"pool-into-ring needs io_uring; backend is {backend}")
        with us.Ring() as ring, us.Pool(max_workers=4, ring=ring) as pool:
            yield pool, lambda n: {c.user_data: c.res for c in _wait(ring, n)}
    else:
        with us.Pool(max_workers=4) as pool:
            yield pool, lambda n: {c.user_data: c.res for c in _wait(pool, n)}


def _wait(src, n):
    got = []
    deadline = time.monotonic() + 5
    while len(got) < n and time.monotonic() < deadline:
        got += src.wait(n - len(got), timeout=max(0.0, deadline - time.monotonic()))
    assert len(got) == n
    return got


def test_getdents64_no_opcode(pool_and_reap, tmp_path):
    pool, reap = pool_and_reap
    (tmp_path / "syslet_known_name.txt").write_bytes(b"x")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = _ffi.new("char[]", 4096)
        ud = pool.submit(NR_GETDENTS64, dfd, buf, 4096)
        res = reap(1)[ud]
        assert res > 0
        assert b"syslet_known_name.txt" in _ffi.buffer(buf, res)[:]
    finally:
        os.close(dfd)


def test_blocking_pipe_read(pool_and_reap):
    pool, reap = pool_and_reap
    rfd, wfd = os.pipe()
    try:
        buf = bytearray(16)
        t = threading.Timer(0.2, os.write, (wfd, b"late data"))
        t0 = time.monotonic()
        t.start()
        ud = pool.submit(NR_READ, rfd, buf, 16)
        assert reap(1) == {ud: 9}
        assert time.monotonic() - t0 >= 0.15
        assert bytes(buf[:9]) == b"late data"
        t.join()
    finally:
        os.close(rfd)
        os.close(wfd)


def test_full_64bit_result_and_errno(pool_and_reap, tmp_path):
    pool, reap = pool_and_reap
    fd = os.open(tmp_path / "sparse", os.O_RDWR | os.O_CREAT)
    rfd, wfd = os.pipe()
    try:
        big = 1 << 40
        u1 = pool.submit(NR_LSEEK, fd, big, os.SEEK_SET)
        u2 = pool.submit(NR_LSEEK, rfd, 0, os.SEEK_SET)
        assert reap(2) == {u1: big, u2: -errno.ESPIPE}
    finally:
        for f in (fd, rfd, wfd):
            os.close(f)


def test_negative_nr_and_unsigned_words(pool_and_reap, tmp_path):
    pool, reap = pool_and_reap
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        u1 = pool.submit(-1)                                   # no such system call
        u2 = pool.submit(NR_LSEEK, fd, (1 << 64) - 1, os.SEEK_SET)   # offset -1
        assert reap(2) == {u1: -errno.ENOSYS, u2: -errno.EINVAL}
    finally:
        os.close(fd)


def test_fork_child_cannot_use_parent_pool():
    with us.Pool() as pool:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:                                       # pragma: no cover - child
            code = 1
            try:
                pool.submit(NR_GETPPID)
            except OSError as e:
                code = 0 if e.errno == errno.EBADF and pool.closed else 2
            os.write(wfd, bytes([code]))
            os._exit(0)
        os.close(wfd)
        try:
            assert os.read(rfd, 1) == b"\0"
        finally:
            os.close(rfd)
            os.waitpid(pid, 0)
        ud = pool.submit(NR_GETPPID)                       # the parent's pool still works
        assert pool.wait() == [(ud, os.getppid(), 0)]


def test_close_releases_a_concurrent_waiter():
    pool = us.Pool()
    rfd, wfd = os.pipe()
    try:
        pool.submit(NR_READ, rfd, bytearray(1), 1)
        assert wait_blocked(NR_READ, {rfd})
        got = []
        t = threading.Thread(target=lambda: got.append(pool.wait()))
        t.start()
        time.sleep(0.1)                 # (the waiter's own sleep has no fd to look for)
        t0 = time.monotonic()
        pool.close()
        t.join(2)
        assert not t.is_alive() and time.monotonic() - t0 < 1.5
    finally:
        os.close(rfd)
        os.close(wfd)


def test_a_blocked_call_never_holds_back_calls_queued_with_it(pool_and_reap):
    """Reads of empty pipes: two are running (blocked) when a batch of two
    more comes, and only the last pipe is written.  The pool may run four:
    the last read must get a worker of its own -- not wait in the queue
    because blocked workers were counted as soon free (the pool started one
    worker for the batch), nor in a worker's hands behind a read that
    blocks, nor its result behind the others'."""
    pool, reap = pool_and_reap
    pipes = [os.pipe() for _ in range(4)]
    bufs = [bytearray(8) for _ in pipes]
    try:
        uds = [pool.submit(NR_READ, pipes[i][0], bufs[i], 8) for i in range(2)]
        assert wait_blocked(NR_READ, {pipes[0][0], pipes[1][0]}, count=2)
        uds += pool.submit_many([(NR_READ, (pipes[i][0], bufs[i], 8)) for i in (2, 3)])
        os.write(pipes[3][1], b"last one")
        assert reap(1) == {uds[3]: 8}
        assert bytes(bufs[3]) == b"last one"
        assert bufs[:3] == [bytearray(8)] * 3
        for _, w in pipes[:3]:
            os.write(w, b"x")
        assert reap(3) == {ud: 1 for ud in uds[:3]}
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_a_call_queued_beyond_max_workers_goes_to_the_first_free_worker():
    """At max_workers, a queued call waits for the first worker that is
    free -- not in the hands of one whose call blocks (workers once took a
    share of the queue at once).  Two workers: A blocks, then B, C, D come
    (the second worker takes B); A's and C's pipes are written: C runs on
    A's worker once A is done, while B blocks."""
    with us.Pool(max_workers=2) as pool:
        pipes = [os.pipe() for _ in range(4)]
        bufs = [bytearray(8) for _ in pipes]
        try:
            uds = [pool.submit(NR_READ, pipes[0][0], bufs[0], 8)]
            assert wait_blocked(NR_READ, {pipes[0][0]})
            uds += pool.submit_many([(NR_READ, (pipes[i][0], bufs[i], 8)) for i in (1, 2, 3)])
            assert wait_blocked(NR_READ, {pipes[1][0]})     # the second worker took B
            os.write(pipes[2][1], b"third!!!")
            os.write(pipes[0][1], b"first!!!")
            got = {c.user_data: c.res for c in _wait(pool, 2)}
            assert got == {uds[0]: 8, uds[2]: 8}
            assert bytes(bufs[0]) == b"first!!!" and bytes(bufs[2]) == b"third!!!"
            assert bufs[1] == bufs[3] == bytearray(8)
            for i in (1, 3):
                os.write(pipes[i][1], b"y")
            got = {c.user_data: c.res for c in _wait(pool, 2)}
            assert got == {uds[1]: 1, uds[3]: 1}
        finally:
            for r, w in pipes:
                os.close(r)
                os.close(w)


def test_batch_of_64(pool_and_reap):
    pool, reap = pool_and_reap
    uds = pool.submit_many([(NR_GETPPID, ())] * 64)
    assert len(set(uds)) == 64
    assert all(ud & us.AUTO_USER_DATA_BIT for ud in uds)
    res = reap(64)
    assert set(res) == set(uds) and set(res.values()) == {os.getppid()}
    assert 1 <= pool.workers <= pool.max_workers == 4


def test_explicit_user_data_and_duplicates(pool_and_reap):
    pool, reap = pool_and_reap
    rfd, wfd = os.pipe()
    try:
        pool.submit(NR_READ, rfd, bytearray(1), 1, user_data=42)
        with pytest.raises(ValueError):
            pool.submit(NR_GETPPID, user_data=42)
        with pytest.raises(ValueError):
            pool.submit_many([(NR_GETPPID, ()), (NR_GETPPID, ())], user_data=[7, 7])
        os.write(wfd, b"!")
        assert reap(1) == {42: 1}
    finally:
        os.close(rfd)
        os.close(wfd)


def test_argument_checks():
    with us.Pool(max_workers=1) as pool:
        with pytest.raises(ValueError):
            pool.submit(NR_GETPPID, 1, 2, 3, 4, 5, 6, 7)
        with pytest.raises(OverflowError):
            pool.submit(NR_GETPPID, 1 << 64)
    with pytest.raises(ValueError):
        us.Pool(max_workers=0)


def test_workers_start_lazily_and_max_is_settable():
    with us.Pool(max_workers=3) as pool:
        assert pool.workers == 0
        pool.max_workers = 1
        pool.submit_many([(NR_GETPPID, ())] * 8)
        assert len(_wait(pool, 8)) == 8
        assert pool.workers == 1


def test_wait_without_outstanding_and_timeout():
    with us.Pool() as pool:
        t0 = time.monotonic()
        assert pool.wait() == []
        assert pool.peek() == []
        rfd, wfd = os.pipe()
        try:
            pool.submit(NR_READ, rfd, bytearray(1), 1)
            assert pool.wait(timeout=0.1) == []
            os.write(wfd, b"x")
            assert [c.res for c in pool.wait()] == [1]
        finally:
            os.close(rfd)
            os.close(wfd)
        assert time.monotonic() - t0 < 2


def test_close_interrupts_a_blocked_call(backend):
    rfd, wfd = os.pipe()
    try:
        ring = us.Ring() if backend == "io_uring" else None
        try:
            pool = us.Pool(ring=ring)
            ud = pool.submit(NR_READ, rfd, bytearray(4), 4)
            assert wait_blocked(NR_READ, {rfd})           # the worker blocks in read()
            t0 = time.monotonic()
            pool.close()
            assert time.monotonic() - t0 < 1
            assert pool.closed and pool.workers == 0
            pool.close()                                  # idempotent
            with pytest.raises(OSError) as ei:
                pool.submit(NR_GETPPID)
            assert ei.value.errno == errno.EBADF
            if ring is not None:                          # the result is in the ring
                assert ring.wait() == [(ud, -errno.EINTR, 0)]
        finally:
            if ring is not None:
                ring.close()
        os.write(wfd, b"data")
        assert os.read(rfd, 8) == b"data"                 # the interrupted read took nothing
    finally:
        os.close(rfd)
        os.close(wfd)


def test_interrupt(pool_and_reap):
    pool, reap = pool_and_reap
    rfd, wfd = os.pipe()
    try:
        ud = pool.submit(NR_READ, rfd, bytearray(4), 4)
        assert wait_blocked(NR_READ, {rfd})
        pool.interrupt()
        assert reap(1) == {ud: -errno.EINTR}
    finally:
        os.close(rfd)
        os.close(wfd)


def test_close_with_ring_leaves_results_in_ring(needs_io_uring):
    with us.Ring() as ring:
        pool = us.Pool(ring=ring)
        uds = pool.submit_many([(NR_GETPPID, ())] * 5)
        pool.close()
        got = ring.wait(5, timeout=5)
        assert {c.user_data for c in got} == set(uds)
        with us.Pool(ring=ring) as other, pytest.raises(ValueError):
            other.wait()


def test_ring_close_closes_attached_pool(needs_io_uring):
    ring = us.Ring()
    pool = us.Pool(ring=ring)
    pool.submit(NR_GETPPID)
    ring.close()
    assert pool.closed


def test_leaked_pool_warns():
    pool = us.Pool()
    pool.submit(NR_GETPPID)
    with pytest.warns(ResourceWarning):
        del pool
        gc.collect()
