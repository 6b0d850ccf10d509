"""fds and threads come back to baseline (psutil)."""
import os

import pytest

import uring_shim as us

NR_GETPPID = 110


def assert_back(resources, base):
    fds, threads = resources.settle_to(base)
    assert fds <= base[0], (fds, base)
    assert threads <= base[1], (threads, base)


def test_1000_ring_cycles(needs_io_uring, resources):
    base = resources.counts()
    for i in range(1000):
        with us.Ring(8) as r:
            if i % 100 == 0:
                r.prep_nop()
                assert len(r.wait()) == 1
    assert_back(resources, base)


@pytest.mark.parametrize("with_ring", [False, True])
def test_pool_shutdown_returns_threads_and_fds(with_ring, backend, resources):
    if with_ring and backend != "io_uring":
        pytest.skip(f"pool-into-ring needs io_uring; backend is {backend}")
    base = resources.counts()
    for _ in range(20):
        ring = us.Ring() if with_ring else None
        try:
            with us.Pool(max_workers=4, ring=ring) as pool:
                pool.submit_many([(NR_GETPPID, ())] * 64)
                src = ring if with_ring else pool
                got = []
                while len(got) < 64:
                    got += src.wait(64 - len(got), timeout=5)
                assert pool.workers >= 1
            assert pool.workers == 0
        finally:
            if ring is not None:
                ring.close()
    assert_back(resources, base)


def test_counts_really_move(backend, resources):
    """The helper sees the pool's threads (guards the two tests above)."""
    base = resources.counts()
    with us.Pool(max_workers=2) as pool:
        rfd, wfd = os.pipe()
        try:
            pool.submit_many([(0, (rfd, bytearray(1), 1))] * 2)
            during = resources.counts()
            os.write(wfd, b"xy")
            assert len(pool.wait(2, timeout=5)) == 2
        finally:
            os.close(rfd)
            os.close(wfd)
    assert during[1] >= base[1] + 2
    assert_back(resources, base)
