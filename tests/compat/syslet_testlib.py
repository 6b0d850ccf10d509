"""Helpers for the compat conformance suite (fixtures are in conftest.py).

Every conformance scenario runs against three executors: ``reference`` (the
sequential interpreter, the oracle), ``io_uring`` and ``threadpool`` (the C
engine with and without io_uring).  The explicit parametrization is the same
under ``URING_SHIM_BACKEND=io_uring`` and ``=threadpool``.
"""
import ctypes
import os
import threading
import time

import pytest

from compat import Engine, Reference, syslet_uatom
from waits import wait_until  # noqa: F401  (re-exported)

EXECUTORS = ("reference", "io_uring", "threadpool")
ENGINES = ("io_uring", "threadpool")

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]

PAGE = os.sysconf("SC_PAGESIZE")
PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
MAP_FAILED = ctypes.c_void_p(-1).value

#: A word no executor ever stores (results are small or negative errnos).
SENTINEL = 0x5A5A5A5A5A5A5A5A
ALL = (1 << 64) - 1


# ---- io_uring availability ----------------------------------------------------

_uring_state = None


def io_uring_status():
    """(available, reason).  An Engine asked for io_uring falls back to the
    pool when ring setup fails, so its ``backend`` says whether it works
    regardless of URING_SHIM_BACKEND."""
    global _uring_state
    if _uring_state is None:
        try:
            with Engine("io_uring") as e:
                ok = e.backend == "io_uring"
        except Exception as exc:            # pragma: no cover - broken build
            ok, why = False, f"Engine('io_uring') failed: {exc!r}"
        else:
            why = "io_uring ring setup failed"
        if not ok:
            try:
                import uring_shim
                why = uring_shim.backend_reason()
            except Exception:
                pass
        _uring_state = (ok, "" if ok else why)
    return _uring_state


def skip_unless_io_uring():
    ok, why = io_uring_status()
    if not ok:
        pytest.skip(f"io_uring unavailable: {why}")


# ---- raw memory -------------------------------------------------------------

def mmap_pages(n, prot=PROT_READ | PROT_WRITE):
    a = libc.mmap(None, n * PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    assert a not in (None, MAP_FAILED), os.strerror(ctypes.get_errno())
    return a


def is_mapped(addr):
    vec = (ctypes.c_ubyte * 1)()
    return libc.mincore(ctypes.c_void_p(addr & ~(PAGE - 1)), PAGE, vec) == 0


class Pages:
    """mmap'ed pages owned by a test (unmapped at teardown)."""

    def __init__(self):
        self._maps = []

    def map(self, n=1, prot=PROT_READ | PROT_WRITE):
        a = mmap_pages(n, prot)
        self._maps.append((a, n))
        return a

    def protect(self, addr, n, prot):
        assert libc.mprotect(ctypes.c_void_p(addr), n * PAGE, prot) == 0

    _hint = 0x100000000000

    def freed(self, npages=3):
        """An address in the middle of a mapping that was just unmapped.

        The mapping is placed far below everything else (16 TiB; top-down
        mmap and brk never get there), so no later allocation of the
        process or its engine threads can land in the hole: a reused hole
        would turn "wild" pointers into pointers at live memory."""
        Pages._hint += 1 << 24
        a = libc.mmap(ctypes.c_void_p(Pages._hint), npages * PAGE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        assert a not in (None, MAP_FAILED), os.strerror(ctypes.get_errno())
        assert libc.munmap(ctypes.c_void_p(a), npages * PAGE) == 0
        mid = a + (npages // 2) * PAGE
        assert not is_mapped(mid)
        return mid

    def read_only(self):
        """A readable, unwritable page (filled with 0x11 bytes)."""
        a = self.map(1)
        ctypes.memset(a, 0x11, PAGE)
        self.protect(a, 1, PROT_READ)
        return a

    def close(self):
        for a, n in self._maps:
            libc.munmap(ctypes.c_void_p(a), n * PAGE)
        self._maps = []


#: Addresses that can never be user memory (the freed mapping and the
#: read-only page are made per test by :class:`Pages`).
FIXED_WILD = {
    "NULL+8": 8,
    "kernel_half": 0xFFFF800000000000,
    "vsyscall": 0xFFFFFFFFFF600000,
    "non_canonical": 0x0000800000000000,
}
WILD_NAMES = ["NULL", "NULL+8", "freed", "kernel_half", "vsyscall", "non_canonical"]


def wild(name, pages):
    if name == "NULL":
        return 0
    if name == "freed":
        return pages.freed()
    return FIXED_WILD[name]


# ---- raw harness ----------------------------------------------------------------

def new_executor(backend):
    return Reference() if backend == "reference" else Engine(backend)


class Raw:
    """An executor (Reference or Engine) driven through raw addresses, with
    atoms, cells and the ring in ctypes memory."""

    def __init__(self, backend, slots=16, max_threads=-1):
        self.backend = backend
        self.engine = new_executor(backend)
        self._keep = []
        self.slots = slots
        self.ring = (ctypes.c_uint64 * slots)()
        self.ring_addr = ctypes.addressof(self.ring)
        self.consumer = 0
        self.registered = False
        try:
            self.engine.register(self.ring_addr, 8 * slots, max_threads)
        except BaseException:
            self.engine.close()
            raise
        self.registered = True

    # memory
    def atoms(self, n):
        """n contiguous zeroed atoms (a ctypes array)."""
        arr = (syslet_uatom * n)()
        self._keep.append(arr)
        return arr

    def cell(self, value=0):
        c = ctypes.c_int64(value)
        self._keep.append(c)
        return c

    def buf(self, n):
        b = ctypes.create_string_buffer(n)
        self._keep.append(b)
        return b

    def keep(self, obj):
        self._keep.append(obj)
        return obj

    # running
    def exec(self, atom):
        return self.engine.exec(addr(atom))

    def run(self, atom, timeout=5.0):
        """Runs a syslet to its end and returns its final atom's address,
        whether it completed synchronously (then the ring stays empty) or
        went async (then exactly one entry appears: the final atom)."""
        r = self.exec(atom)
        if r:
            assert self.entries() == []
            return r
        assert self.wait(1, timeout)
        got = self.reap()
        assert len(got) == 1
        assert self.settle()
        return got[0]

    def entries(self):
        """Non-NULL ring slots, in slot order."""
        return [v for v in self.ring if v]

    def reap(self):
        out = []
        for _ in range(self.slots):
            v = self.ring[self.consumer]
            if not v:
                break
            self.ring[self.consumer] = 0
            self.consumer = (self.consumer + 1) % self.slots
            out.append(v)
        return out

    def wait(self, n=1, timeout=5.0):
        return self.engine.wait(n, timeout)

    def settle(self, timeout=5.0):
        """Waits until no syslet is in flight (engines only)."""
        if isinstance(self.engine, Reference):
            return True
        dl = time.monotonic() + timeout
        while self.engine.inflight():
            if time.monotonic() > dl:
                return False
            time.sleep(0.005)
        return True

    def unregister(self, timeout=5.0):
        if self.registered:
            self.registered = False
            self.engine.unregister(self.ring_addr, 8 * self.slots, timeout)

    def close(self):
        try:
            self.unregister()
        finally:
            self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def addr(obj):
    """Address of a ctypes object, or an int as is."""
    if obj is None:
        return 0
    if isinstance(obj, int):
        return obj
    return ctypes.addressof(obj)


def set_atom(atom, nr, args=(), ret=None, flags=0, next=None):
    """Fills a ctypes syslet_uatom.  ``args``: ctypes cells or raw ints
    (addresses of argument words); ``ret``/``next``: ctypes objects or ints."""
    atom.flags = flags
    atom.nr = nr
    atom.ret_ptr = addr(ret) or None
    atom.next = addr(next) or None
    for i in range(6):
        atom.arg_ptr[i] = (addr(args[i]) or None) if i < len(args) else None
    return atom


def word(address):
    return ctypes.c_int64.from_address(address).value


# ---- files and pipes ---------------------------------------------------------------

def pattern(n, seed=0):
    """Deterministic, position-dependent bytes."""
    return bytes(((i * 7 + seed + (i >> 8) * 13) & 0xFF) for i in range(n))


class LatePipe:
    """A pipe whose writer thread writes ``data`` after ``delay`` seconds."""

    def __init__(self):
        self.r, self.w = os.pipe()
        self._threads = []

    written_at = None

    def _write(self, data):
        self.written_at = time.monotonic()     # just before the data exists
        os.write(self.w, data)

    def later(self, data, delay=0.2):
        t = threading.Timer(delay, self._write, (data,))
        t.start()
        self._threads.append(t)
        return t

    def pending(self):
        """Bytes waiting in the pipe (FIONREAD)."""
        import fcntl
        import termios
        n = ctypes.c_int()
        fcntl.ioctl(self.r, termios.FIONREAD, n)
        return n.value

    def close(self):
        for t in self._threads:
            t.cancel()
            t.join()
        os.close(self.r)
        os.close(self.w)


# wait_until: tests/waits.py (re-exported here for the compat tests).


# ---- builder helpers -------------------------------------------------------------------

def run_chain(ctx, chain, timeout=5.0):
    """Runs a builder chain to its end: (final Atom, went_async).  A
    synchronous syslet leaves the ring empty; an async one publishes exactly
    one entry."""
    r = ctx.exec(chain)
    if r is not None:
        assert ctx.engine.ring_count() == 0
        return r, False
    got = ctx.wait(1, timeout)
    assert len(got) == 1, got
    assert settle(ctx.engine, timeout)
    return got[0], True


def settle(engine, timeout=5.0):
    """Waits until the executor has nothing in flight."""
    if not hasattr(engine, "inflight"):
        return True
    return wait_until(lambda: engine.inflight() == 0, timeout)


def set_budget(engine, n):
    if isinstance(engine, Reference):
        engine.budget = n
    else:
        engine.set_budget(n)


def is_async_capable(executor):
    return executor != "reference"
