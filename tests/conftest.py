"""Shared fixtures: the selected backend and a resource counter (psutil);
tmp_path directories that do not outlive the session."""
import shutil
import tempfile
import time

import psutil
import pytest

import uring_shim


_basetemp = None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """tmp_path directories live in a fresh directory of TMPDIR that the
    session removes when it ends (pytest would keep its last three runs in
    TMPDIR/pytest-of-USER): a test run leaves TMPDIR as it found it.  With
    --basetemp, pytest's own behaviour."""
    global _basetemp
    if config.option.basetemp is None:
        _basetemp = tempfile.mkdtemp(prefix="syslet-tests-")
        config.option.basetemp = _basetemp


def pytest_unconfigure(config):
    if _basetemp is not None:
        shutil.rmtree(_basetemp, ignore_errors=True)


@pytest.fixture(scope="session")
def backend():
    """The backend this run uses ('io_uring' or 'threadpool'; see URING_SHIM_BACKEND)."""
    return uring_shim.backend()


@pytest.fixture
def needs_io_uring(backend):
    """Skip the test unless rings can be created."""
    if backend != "io_uring":
        pytest.skip(f"needs io_uring; backend is {backend}: {uring_shim.backend_reason()}")


@pytest.fixture
def ring(needs_io_uring):
    """A fresh ``uring_shim.Ring()``, closed after the test."""
    with uring_shim.Ring() as r:
        yield r


def resource_counts():
    """(open fds, threads) of this process."""
    p = psutil.Process()
    return p.num_fds(), p.num_threads()


def settle_to(baseline, timeout=5.0):
    """Poll until fds and threads are back to <= ``baseline``; return the last counts.

    Kernel-side teardown (io-wq workers, deferred ring exit) is asynchronous,
    so counts may need a moment to come back.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = resource_counts()
        if (now[0] <= baseline[0] and now[1] <= baseline[1]) or time.monotonic() > deadline:
            return now
        time.sleep(0.02)


@pytest.fixture
def resources():
    """Helpers to count fds/threads: ``resources.counts()``, ``resources.settle_to(base)``."""
    class _R:
        counts = staticmethod(resource_counts)
        settle_to = staticmethod(settle_to)
    return _R
