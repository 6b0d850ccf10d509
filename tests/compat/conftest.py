"""Fixtures for the compat conformance suite (helpers: syslet_testlib.py).

Every conformance scenario runs against three executors: ``reference`` (the
sequential interpreter, the oracle), ``io_uring`` and ``threadpool`` (the C
engine with and without io_uring).  The explicit parametrization is the same
under ``URING_SHIM_BACKEND=io_uring`` and ``=threadpool``.
"""
import os

import pytest

import compat
from syslet_testlib import ENGINES, EXECUTORS, LatePipe, Pages, Raw, pattern, skip_unless_io_uring


@pytest.fixture(params=EXECUTORS)
def executor(request):
    """The executor name: 'reference', 'io_uring' or 'threadpool'."""
    if request.param == "io_uring":
        skip_unless_io_uring()
    return request.param


@pytest.fixture(params=ENGINES)
def engine_executor(request):
    """The C engine executors only (those that can go async)."""
    if request.param == "io_uring":
        skip_unless_io_uring()
    return request.param


@pytest.fixture
def uring_executor():
    """io_uring only (skipped where it does not work)."""
    skip_unless_io_uring()
    return "io_uring"


@pytest.fixture
def ctx(executor):
    """A builder Context on the executor, 16 ring slots."""
    with compat.Context(backend=executor, ring_slots=16) as c:
        yield c


@pytest.fixture
def raw(executor):
    """A raw harness (ctypes atoms and ring) on the executor."""
    with Raw(executor) as r:
        yield r


@pytest.fixture
def pages():
    """mmap'ed pages, unmapped at teardown; also freed and read-only pages."""
    p = Pages()
    yield p
    p.close()


@pytest.fixture
def datafile(tmp_path):
    """A page-cached 64 KiB file with a known pattern: (path, data)."""
    data = pattern(65536)
    p = tmp_path / "data.bin"
    p.write_bytes(data)
    with open(p, "rb") as f:        # make sure it is in the page cache
        f.read()
    return str(p), data


@pytest.fixture
def rfd(datafile):
    """A read-only fd on ``datafile``."""
    fd = os.open(datafile[0], os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.fixture
def late_pipe():
    """A pipe whose data a timer thread writes later (see LatePipe)."""
    p = LatePipe()
    yield p
    p.close()


@pytest.fixture(params=ENGINES)
def raw_api(request):
    """The raw API's process-wide default context, isolated per test and put
    on each engine backend in turn (compat.reset_default() around it)."""
    if request.param == "io_uring":
        skip_unless_io_uring()
    compat.reset_default(request.param)
    yield compat.default_engine()
    compat.reset_default()


# ---- the personality axis (LATER_ABIS.md; helpers: personality_lib.py) -------

@pytest.fixture(params=[5, 6], ids=["v5", "v6"])
def abi(request):
    """A personality with atoms and per-call heads: 5 or 6."""
    return request.param


@pytest.fixture
def heads(executor, abi):
    """personality_lib.Heads: the executor driven through personality ``abi``."""
    from personality_lib import Heads
    h = Heads(executor, abi)
    yield h
    h.close()


@pytest.fixture
def engine_heads(engine_executor, abi):
    """As ``heads``, on the C engine executors only (those that go async)."""
    from personality_lib import Heads
    h = Heads(engine_executor, abi)
    yield h
    h.close()


@pytest.fixture
def ind(executor):
    """personality_lib.Indirect: the executor driven through personality v7."""
    from personality_lib import Indirect
    i = Indirect(executor)
    yield i
    i.close()


@pytest.fixture
def engine_ind(engine_executor):
    """As ``ind``, on the C engine executors only."""
    from personality_lib import Indirect
    i = Indirect(engine_executor)
    yield i
    i.close()
