"""Executors: the C engine (io_uring or pool-only) behind one small class.

Only this module touches ``compat._engine``'s ``ffi``/``lib``.
"""
import errno
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _engine, _env, _exec
from ._abi import AHU_SIZE

#: cffi's ``ffi`` and ``lib`` of compat._engine (cffi has no type stubs: Any)
ffi: Any = _engine.ffi
lib: Any = _engine.lib

__version__ = "0.1.0"

_v: str = ffi.string(lib.sl_version()).decode()
if _v != __version__:
    raise ImportError(
        f"compat._engine is a stale build (C says {_v}, Python expects {__version__}); "
        "rebuild with `make venv` or `pip install -e .`")

#: Counter names, in struct sl_counters order (read from the C struct).
COUNTERS: Tuple[str, ...] = tuple(name for name, _ in ffi.typeof("struct sl_counters").fields)

_WAIT_SLICE_NS = 50_000_000

# Fork generation: bumped in every child.  An engine made in another
# generation belongs to the parent.  Cheaper than an os.getpid() system call
# (~0.2 us) on every exec.
_fork_gen = 0


def _after_fork_child() -> None:
    global _fork_gen
    _fork_gen += 1


os.register_at_fork(after_in_child=_after_fork_child)
_sl_exec = lib.sl_exec
#: The engine's exec entry for compat._exec.Binding (async_exec as a builtin).
SL_EXEC_UNLOCKING: int = int(ffi.cast("uintptr_t", ffi.addressof(lib, "sl_exec_unlocking")))
# ... and its fast path in two halves, for compat._exec's x86_64 entry
# (decisions D22: the builtin issues the read itself and returns without ret)
_exec.set_fast_path(int(ffi.cast("uintptr_t", ffi.addressof(lib, "sl_exec_fast_begin"))),
                    int(ffi.cast("uintptr_t", ffi.addressof(lib, "sl_exec_fast_end_unlocking"))))
#: What a closed engine holds instead of its context: NULL, which the C calls
#: answer with -EBADF (cffi takes no None for a pointer argument).
CLOSED: Any = ffi.cast("struct sl_ctx *", 0)

#: v7's "the call went async" (a Linux errno number too: ERFKILL).
ESYSLETPENDING = 132

_ABI_NAMES = {"v1": 1, "v5": 5, "v6": 6, "v7": 7}


def env_abi() -> int:
    """The personality ``SYSLET_COMPAT_ABI`` names (1, 5, 6, 7), 0 when unset.
    Raises :class:`compat.EnvVarError` for another value (compat._env)."""
    return _ABI_NAMES.get(_env.read()["SYSLET_COMPAT_ABI"] or "", 0)


def _oserror(neg: int, what: str) -> OSError:
    e = -neg
    return OSError(e, os.strerror(e), what)


def peek(addr: int, n: int) -> bytes:
    """Copies ``n`` bytes of user memory at ``addr``; OSError(EFAULT) when unreadable."""
    buf = ffi.new("char[]", max(n, 1))
    r = lib.sl_peek(addr, buf, n)
    if r < 0:
        raise _oserror(r, "peek")
    data: bytes = ffi.buffer(buf, n)[:]
    return data


def poke(addr: int, data: bytes) -> None:
    """Writes ``data`` to user memory at ``addr``; OSError(EFAULT) when unwritable."""
    r = lib.sl_poke(addr, ffi.from_buffer(data), len(data))
    if r < 0:
        raise _oserror(r, "poke")


def peek_word(addr: int) -> int:
    """Reads one native word (signed); OSError(EFAULT) when unreadable."""
    return int.from_bytes(peek(addr, 8), "little", signed=True)


def umem_add(addr: int, inc: int) -> int:
    """Atomically adds ``inc`` to the native word at ``addr`` and returns the
    new value (unsigned).  Raises OSError(EFAULT) on a bad pointer.  ``inc``
    is an unsigned long, given unsigned or as its signed equivalent
    (``-1`` subtracts one); OverflowError outside ``[-2**63, 2**64)``, as for
    any integer that does not fit a C argument (it used to wrap)."""
    if not -0x8000000000000000 <= inc <= 0xFFFFFFFFFFFFFFFF:
        raise OverflowError(f"umem_add: inc = {inc} does not fit a 64-bit word")
    err = ffi.new("int *")
    v: int = lib.sl_umem_add(addr, inc & 0xFFFFFFFFFFFFFFFF, err)
    if err[0]:
        raise _oserror(err[0], "umem_add")
    return v & 0xFFFFFFFFFFFFFFFF


def _resolve_backend(backend: Optional[str]) -> str:
    if backend is None or backend == "auto":
        import uring_shim
        backend = uring_shim.backend()
    if backend not in ("io_uring", "threadpool"):
        raise ValueError(f"backend must be 'io_uring', 'threadpool' or 'auto', not {backend!r}")
    return backend


class Engine:
    """One syslet context on the C engine (a ``compat`` engine instance).

    ``backend`` is ``'io_uring'``, ``'threadpool'`` or ``None``/``'auto'``
    (``uring_shim.backend()``).  If io_uring setup fails the engine runs on
    the pool and :attr:`backend` says so.  Use as a context manager or call
    :meth:`close`; closing cancels running syslets (loops stop before their
    next atom) and joins every thread.

    Reads and checks the environment variables (``compat._env``) first:
    raises :class:`compat.EnvVarError` (a ``ValueError``) for a bad value.
    """

    #: the memory of the Context whose syslets this engine runs (compat._builder):
    #: kept as long as the engine
    _builder_memory: Any = None

    def __init__(self, backend: Optional[str] = None, sq_entries: int = 256) -> None:
        self._bindings: list[_exec.Binding] = []     # compat._exec bindings of the context, detached by close()
        env = _env.read()
        want = _resolve_backend(backend)
        err = ffi.new("int *")
        c = lib.sl_ctx_new(1 if want == "io_uring" else 0, sq_entries, err)
        if c == ffi.NULL:
            self._c = CLOSED    # so that __del__ has nothing to close
            raise _oserror(err[0], "sl_ctx_new")
        # The C context is freed when the last reference to this cdata goes:
        # every call holds one while it runs (its argument), so close() never
        # frees it under a call of another thread, at no cost per call.
        # sl_ctx_free is a no-op in a child after fork (the parent's context).
        self._cancel = [1]
        cancel = self._cancel
        self._c = ffi.gc(c, lambda p: lib.sl_ctx_free(p, cancel[0]))
        #: ``'io_uring'`` or ``'threadpool'``: what the engine really runs on
        self.backend: str = "io_uring" if lib.sl_ctx_backend(self._c) else "threadpool"
        lib.sl_set_env_abi(self._c, _ABI_NAMES.get(env["SYSLET_COMPAT_ABI"] or "", 0))
        self._pid = os.getpid()
        self._gen = _fork_gen
        self._lock = threading.Lock()
        # exec is a builtin (compat._exec) bound to this context: one C call
        # that keeps the GIL unless the engine may block.  Every binding of
        # the context holds a reference to it.
        b = _exec.Binding(SL_EXEC_UNLOCKING)
        self.bind(b)
        self.exec = b.function()     # type: ignore[method-assign,assignment]
        if env["SYSLET_COMPAT_TRACE"] == "1":
            lib.sl_set_trace(self._c, 1)

    # -- the five calls -------------------------------------------------
    def register(self, ring_addr: int, ring_bytes: int, max_threads: int = -1) -> int:
        """Registers a completion ring; raw-ABI semantics (EINVAL, EBUSY, EFAULT)."""
        r = self._call(lib.sl_register, ring_addr, ring_bytes, max_threads & 0xFFFFFFFFFFFFFFFF)
        if r < 0:
            raise self._error(r, "async_register")
        return 0

    def exec(self, atom_addr: int) -> int:
        """Runs a syslet: the final atom's address, or 0 when it went async.
        Raises OSError: EINVAL (no ring registered, ASYNC and SYNC together,
        unknown flag bits), EFAULT (unreadable first atom), EBADF (closed),
        ECHILD (the parent's engine after fork).

        Each instance replaces this method by a builtin doing the same in C
        (``compat._exec``); this body is what it does."""
        r: int = _sl_exec(self._c, atom_addr)
        if r < 0:
            self._cp()          # closed, or the parent's: raises as every call does
            raise self._error(r, "async_exec")
        return r

    def exec_batch(self, atom_addrs: Sequence[int]) -> list[int]:
        """Runs several syslets with shared submissions.  Returns one entry per
        syslet: the final atom address, 0 (went async) or a negative errno."""
        n = len(atom_addrs)
        arr = ffi.new("uint64_t[]", atom_addrs)
        res = ffi.new("int64_t[]", n)
        r = self._call(lib.sl_exec_batch, arr, n, res)
        if r < 0:
            raise self._error(r, "exec_batch")
        return list(res)

    def batch_runner(self, atom_addrs: Sequence[int]) -> Callable[[], Any]:
        """A callable that runs these syslets with shared submissions, like
        :meth:`exec_batch`, reusing its argument and result arrays (the
        cheapest way to run the same set of chains again and again).  It
        returns the cffi ``int64_t[]`` of results, valid until the next call."""
        n = len(atom_addrs)
        arr = ffi.new("uint64_t[]", atom_addrs)
        res = ffi.new("int64_t[]", n)
        run = lib.sl_exec_batch

        def run_batch() -> Any:
            r = self._call(run, arr, n, res)
            if r < 0:
                raise self._error(r, "exec_batch")
            return res
        return run_batch

    def wait(self, min_events: int, timeout: Optional[float] = None) -> bool:
        """Blocks until ``min_events`` unconsumed ring entries exist.  Python
        signal handlers run while waiting (their exceptions propagate).
        Returns True, or False when ``timeout`` seconds passed.  Raises
        OSError(EBADF) when another thread closes the engine meanwhile."""
        if timeout is None:
            while True:
                r = self._call(lib.sl_wait, min_events, _WAIT_SLICE_NS)
                if r == 0:
                    return True
                if r != -errno.ETIME:
                    raise self._error(r, "async_wait")
        if timeout != timeout:
            raise ValueError("timeout is NaN")     # would never end
        import time
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            r = self._call(lib.sl_wait, min_events, int(max(0, min(left, 0.05)) * 1e9))
            if r == 0:
                return True
            if r != -errno.ETIME:
                raise self._error(r, "async_wait")
            if left <= 0:
                return False

    # -- the later personalities (compat.v5, v6, v7) ---------------------------
    def exec_head(self, abi: int, atom_addr: int, ahu_addr: int) -> int:
        """v5/v6 ``async_exec``: personality ``abi`` (5 or 6), the head named
        in the call.  The final atom's address, or 0 when it went async (its
        completion then goes to that head's ring).  Raises OSError."""
        r: int = self._call(lib.sl_exec_head, abi, atom_addr, ahu_addr, ffi.NULL)
        if r < 0:
            raise self._error(r, "async_exec")
        return r

    def _wait_slices(self, what: str, fn: Callable[..., int], *args: int,
                     timeout: Optional[float] = None) -> bool:
        # Waits in slices so Python signal handlers run between them (an
        # exception they raise propagates), as Engine.wait does.
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ns = _WAIT_SLICE_NS
            if deadline is not None:
                slice_ns = int(max(0.0, min(deadline - time.monotonic(), 0.05)) * 1e9)
            r = self._call(fn, *args, slice_ns, 0)
            if r == 0:
                return True
            if r != -errno.ETIME:
                raise self._error(r, what)
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def wait_head(self, abi: int, min_events: int, user_ring_idx: int, ahu_addr: int,
                  timeout: Optional[float] = None) -> bool:
        """v5/v6 ``async_wait``: True once ``min_events`` consecutive entries
        start at ``user_ring_idx`` in the head's ring (False after
        ``timeout`` seconds).  Raises OSError: EFAULT, EINVAL."""
        return self._wait_slices("async_wait", lib.sl_wait_head, abi, min_events,
                                 user_ring_idx, ahu_addr, timeout=timeout)

    def async_thread(self, event_addr: int, ahu_addr: int) -> None:
        """v5/v6 ``async_thread``: parks the calling thread until a signal
        (the GIL released); raises OSError(EINTR) then, EFAULT for an
        unreadable head."""
        r = self._call(lib.sl_async_thread, event_addr, ahu_addr)
        raise self._error(r, "async_thread")

    def indirect(self, regs_addr: int, params_addr: int, paramslen: int, flags: int) -> int:
        """v7 ``indirect``: the call's result (32 bits, sign-extended).
        Raises OSError(ESYSLETPENDING) when it went async, OSError(errno)
        for -4095..-1."""
        r: int = self._call(lib.sl_indirect, regs_addr, params_addr, paramslen,
                       flags & 0xFFFFFFFFFFFFFFFF, ffi.NULL)
        if r == -ESYSLETPENDING:
            raise OSError(ESYSLETPENDING, "ESYSLETPENDING: the call went async", "indirect")
        if -4095 <= r < 0:
            raise self._error(r, "indirect")
        return r

    def ring_wait(self, ring_addr: int, idx: int, timeout: Optional[float] = None) -> bool:
        """v7 ``syslet_ring_wait``: True once the ring's ``kernel_head``
        differs from ``idx`` (False after ``timeout`` seconds).  Raises
        OSError(EFAULT)."""
        return self._wait_slices("syslet_ring_wait", lib.sl_ring_wait, ring_addr,
                                 idx & 0xFFFFFFFF, timeout=timeout)

    def unregister(self, ring_addr: int, ring_bytes: int, timeout: Optional[float] = None) -> int:
        """Drains every in-flight syslet (published) then forgets the ring."""
        r = self._call(lib.sl_unregister, ring_addr, ring_bytes,
                       -1 if timeout is None else int(timeout * 1e9))
        if r < 0:
            raise self._error(r, "async_unregister")
        return 0

    def fileno(self) -> int:
        """An eventfd (nonblocking, close-on-exec) that the engine adds 1 to
        when it has written ring entries: readable while entries may be
        waiting, for event loops to watch.  Written once per consumer round:
        the first publish after :meth:`event_clear` writes it, the ones
        after leave it readable as it is until the next clear (reading the
        eventfd yourself does not re-arm it).  Made on the first call, readable
        (so that entries published before are not missed); the same fd
        afterwards, or a new one if the program closed it.  It belongs to
        the engine (closed with it).  Empty it with :meth:`event_clear`
        *before* consuming the ring, so that an entry published meanwhile
        makes it readable again."""
        r = self._call(lib.sl_event_fd)
        if r < 0:
            raise self._error(r, "fileno")
        return int(r)

    def event_clear(self) -> bool:
        """Reads :meth:`fileno`'s eventfd empty; False when there is none
        (never made, or the program closed it)."""
        r = int(self._call(lib.sl_event_fd_clear))
        if r < 0 and r != -errno.EBADF:
            raise self._error(r, "event_clear")
        return r == 0

    # -- observability ---------------------------------------------------
    def counters(self) -> Dict[str, int]:
        """A dict of the counters (see :data:`COUNTERS`)."""
        out = ffi.new("struct sl_counters *")
        self._call(lib.sl_get_counters, out)
        return {k: getattr(out, k) for k in COUNTERS}

    def ring_count(self) -> int:
        """Unconsumed (non-NULL) ring slots."""
        r: int = self._call(lib.sl_ring_count)
        if r < 0:
            raise _oserror(r, "ring_count")
        return r

    def inflight(self) -> int:
        """Syslets that went async and have not finished."""
        return int(self._call(lib.sl_inflight))

    def threads(self) -> int:
        """Threads this engine has started (pool workers + driver)."""
        return int(self._call(lib.sl_threads))

    def set_trace(self, on: bool) -> None:
        """Print each chain's plan on stderr (also SYSLET_COMPAT_TRACE=1)."""
        self._call(lib.sl_set_trace, 1 if on else 0)

    def set_budget(self, max_atoms: int) -> None:
        """Per-syslet atom budget (0 = off): the atom that would exceed it is
        not run, -ELOOP is stored through its ret_ptr and it becomes final."""
        self._call(lib.sl_set_budget, max_atoms)

    def cancel(self) -> None:
        """Stops every running syslet before its next atom (-ECANCELED)."""
        self._call(lib.sl_cancel_all)

    def fault(self) -> Optional[str]:
        """None while the engine is usable; else why it is not: its io_uring's
        shared indices were written over, or its descriptor was closed or
        replaced and could not be taken back (docs/decisions.md D33).  Every
        call then raises OSError(EIO)."""
        f = self._call(lib.sl_ctx_fault)
        return None if f == ffi.NULL else str(ffi.string(f).decode())

    def _ring_index_addrs(self) -> List[int]:
        """For tests: the addresses of the io_uring's shared SQ head, SQ tail,
        CQ head and CQ tail.  OSError(EOPNOTSUPP) on the pool-only backend."""
        out = ffi.new("uint64_t[4]")
        r = self._call(lib.sl_ring_index_addrs, out)
        if r < 0:
            raise _oserror(r, "ring_index_addrs")
        return list(out)

    def _error(self, r: int, what: str) -> OSError:
        """The OSError for the engine's -errno r; EIO from a broken engine says why."""
        if r == -errno.EIO and self._c is not CLOSED and self._gen == _fork_gen:
            why = self.fault()
            if why:
                return OSError(errno.EIO, f"{os.strerror(errno.EIO)}: the syslet context is "
                               f"unusable: {why}", what)
        return _oserror(r, what)

    def explain(self, e: OSError) -> OSError:
        """``e`` (an OSError from this engine's calls, e.g. the builtin
        ``exec``), with the reason added when it is EIO from a broken engine."""
        if e.errno == errno.EIO and self._c is not CLOSED and self._gen == _fork_gen:
            return self._error(-errno.EIO, str(e.filename or "async_exec"))
        return e

    # -- lifetime -----------------------------------------------------------
    def _cp(self) -> Any:
        c = self._c
        if c is CLOSED:
            raise OSError(errno.EBADF, "engine is closed")
        if self._gen != _fork_gen:
            raise OSError(errno.ECHILD, "engine belongs to the parent process")
        return c

    def bind(self, binding: _exec.Binding) -> None:
        """Attaches a ``compat._exec.Binding`` to this context until close()."""
        with self._lock:
            c = self._cp()
            binding.attach(int(ffi.cast("uintptr_t", c)), c)
            self._bindings.append(binding)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(context, *args); the argument keeps the context alive."""
        return fn(self._cp(), *args)

    def close(self, cancel: bool = True) -> None:
        """Stops the driver and pool (cancelling loops when ``cancel``), joins
        their threads, frees the ring.  Idempotent.  Calls running in other
        threads first get up to 2 s to return (their next call or wait slice
        raises OSError(EBADF)); one that is still blocked then (an inline
        system call in its thread) frees the context when it returns."""
        with self._lock:
            c, self._c = self._c, CLOSED
            for b in self._bindings:
                b.detach()
            self._bindings = []
        if c is CLOSED:
            return
        if self._pid != os.getpid():
            return              # a child: the destructor touches nothing
        self._cancel[0] = 1 if cancel else 0
        # References now: c, getrefcount's argument, and one per call running.
        if sys.getrefcount(c) > 2:
            import time
            if cancel:
                lib.sl_cancel_all(c)
            deadline = time.monotonic() + 2.0
            while sys.getrefcount(c) > 2 and time.monotonic() < deadline:
                time.sleep(0.001)
        del c                   # frees it now, or when the last call returns

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_c", CLOSED) is not CLOSED:
            import warnings
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self.close()


def read_head(ahu_addr: int, size: int, what: str) -> Tuple[int, int, int]:
    """Reads a ``struct async_head_user``: (ring, ring_size_bytes, max_nr_threads).
    Its OSErrors (EINVAL for a size other than 24, EFAULT) name ``what``,
    the call that reads it."""
    if size != AHU_SIZE:
        raise OSError(errno.EINVAL, "async_head_user size must be 24", what)
    try:
        raw = peek(ahu_addr, AHU_SIZE)
    except OSError as e:
        raise OSError(e.errno, e.strerror, what) from None
    return (int.from_bytes(raw[0:8], "little"), int.from_bytes(raw[8:16], "little"),
            int.from_bytes(raw[16:24], "little"))
