"""``Pool``: the native fallback pool for system calls without an io_uring opcode.

C pthreads (``us_pool_*`` in csrc/shim.c) run raw ``syscall(nr, a0..a5)``
with the GIL released.  A batch is handed to C in one call and wakes the
workers once.  With ``ring=`` the completions are posted into that ring with
IORING_OP_MSG_RING and come out of ``ring.wait()``/``ring.peek()`` like any
CQE (one wait point); the ring's completion path looks the job up, so
``res`` is the exact 64-bit result, not the CQE's 32-bit field.  Without a
ring they queue inside the pool for ``Pool.wait()``/``Pool.peek()``.

Memory: each job's ``struct us_job`` and every object its arguments point
to stay referenced until the job's completion is reaped (or, without a
ring, until ``close()``).

Thread-safety: every method may be called from any thread.
"""
import errno
import itertools
import os
import threading
import time
import warnings
import weakref
from array import array
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ._binding import ffi, lib
from ._errors import closed_error, oserror
from ._ring import CData, Completion, Ring, _address

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
#: auto-assigned user_data carry this bit; choose your own below it
AUTO_USER_DATA_BIT = 1 << 63
_auto_lock = threading.Lock()
_auto_next = 1
_WAIT_SLICE = 0.05
_REAP_CHUNK = 256
_new_completion: Callable[[type, Tuple[int, int, int]], Completion] = tuple.__new__
_ZEROS = (0,) * _REAP_CHUNK
_repeat = itertools.repeat
_live: "weakref.WeakSet[Pool]" = weakref.WeakSet()


def _word(a: Any, hold: list[Any]) -> int:
    """One 64-bit argument word: ints (signed or unsigned), cdata or buffers by address."""
    if isinstance(a, int):
        if _I64_MIN <= a <= _I64_MAX:
            return a
        if _I64_MAX < a < (1 << 64):
            return a - (1 << 64)
        raise OverflowError(f"system call argument {a} does not fit 64 bits")
    v = _address(a, hold)
    return v - (1 << 64) if v > _I64_MAX else v


def _auto_user_data_base(n: int) -> int:
    """First of n fresh consecutive user_data values with AUTO_USER_DATA_BIT set."""
    global _auto_next
    with _auto_lock:
        start = _auto_next
        _auto_next += n
    return AUTO_USER_DATA_BIT | start


class Pool:
    """Native pool of up to ``max_workers`` C threads running raw system calls.

    ``Pool(max_workers=4, ring=None)``.  Workers start lazily (never more
    than the jobs queued) and block every signal except the pool's own
    interrupt signal (SIGRTMAX-3, see ``interrupt()``).  With ``ring`` (a ``Ring``)
    completions arrive through that ring (see the module docstring); the
    ring closes the pool when it closes.  Works on both backends; a ring
    is only possible on the io_uring backend.

    A context manager with an idempotent ``close()`` (alias ``shutdown()``);
    a pool left open when collected emits ``ResourceWarning`` and is closed.
    After ``os.fork()`` the child's copy is unusable: every method raises
    ``OSError(EBADF)``.

    Raises ``ValueError`` for ``max_workers < 1``, ``OSError`` (EBADF for a
    closed ring, or the errno of ``us_pool_new``, e.g. EMFILE/ENOMEM).
    """

    def __init__(self, max_workers: int = 4, ring: Optional[Ring] = None) -> None:
        self._closed = True
        self._forked = False
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        target = -1
        if ring is not None:
            if ring.closed:
                raise closed_error("Pool(ring=...)", ring._forked)
            target = ring.fd
        p = lib.us_pool_new(max_workers, target)
        if p == ffi.NULL:
            raise oserror(ffi.errno or errno.ENOMEM, "us_pool_new")
        self._p = p
        self._ring = ring
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._users = 0
        self._closing = False
        # without a ring: user_data -> (struct us_job[], kept objects) of its batch
        self._jobs: dict[int, Tuple[CData, list[Any]]] = {}
        self._uds = ffi.new("uint64_t[]", _REAP_CHUNK)
        self._res = ffi.new("int64_t[]", _REAP_CHUNK)
        self._closed = False
        _live.add(self)
        if ring is not None:
            try:
                ring._attach_pool(self)
            except BaseException:
                self.close()
                raise

    # ---- lifecycle ----------------------------------------------------

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "forked" if self._forked else "closed" if self._closed else "open"
        return f"<uring_shim.Pool max_workers={getattr(self, '_max_workers', 0)} {state}>"

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        try:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
        finally:
            self.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (or in a child after fork)."""
        return self._closed

    def close(self) -> None:
        """Stop the pool: run every queued job, join every worker, free the pool.

        Calls blocked in the kernel (a read from an empty pipe, say) are
        interrupted: the workers get a no-op signal (SIGRTMAX-3, without
        SA_RESTART) every 5 ms until they exit, for up to 5 s, so such a job
        completes with ``-EINTR`` (a call that restarts or ignores signals
        is waited for).  With a ring, every completion has been posted into
        the ring when this returns (reap them there); without a ring,
        completions not reaped yet are discarded.  Idempotent.  Releases the
        GIL while joining.
        """
        with self._lock:
            if self._closed or self._closing:
                return
            self._closing = True
            while self._users:
                self._cond.wait(_WAIT_SLICE)
            p = self._p
        if self._ring is not None:
            # Completions that could not be posted are queued in the pool:
            # hand them to the ring before the pool goes.
            lib.us_pool_stop(p)
            left = self._drain_unposted(p)
            if left:
                self._ring._take_unposted(left)
        lib.us_pool_free(p)
        with self._lock:
            self._p = ffi.NULL
            self._closed = True
            self._jobs = {}
        if self._ring is not None:
            self._ring._detach_pool(self)
        _live.discard(self)

    shutdown = close

    def interrupt(self) -> None:
        """Interrupt every call currently blocked in the kernel: it completes with ``-EINTR``.

        Sends SIGRTMAX-3 (a no-op handler without SA_RESTART, installed by
        the pool if that signal has no handler yet) to each worker; queued
        jobs are not affected.  Raises ``OSError(EBADF)`` when closed.
        """
        self._enter("Pool.interrupt")
        try:
            lib.us_pool_interrupt(self._p)
        finally:
            self._leave()

    def _forget_after_fork(self) -> None:
        # The C pool's threads do not exist in the child and its mutex may be
        # held: never touch it again (its memory is leaked in the child).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._p = ffi.NULL
        self._closed = True
        self._forked = True
        self._jobs = {}
        self._users = 0

    def _enter(self, what: str) -> None:
        with self._lock:
            if self._closed or self._closing:
                raise closed_error(what, self._forked)
            self._users += 1

    def _leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._closing:
                self._cond.notify_all()

    # ---- properties -----------------------------------------------------

    @property
    def workers(self) -> int:
        """Number of worker threads currently alive (0 after close)."""
        with self._lock:
            if self._closed:
                return 0
            return int(lib.us_pool_workers(self._p))

    def stats(self) -> Dict[str, int]:
        """A dict of counts: ``posted`` (completions posted into the ring),
        ``post_retries`` (posts tried again after a sleep: the ring's CQ was
        full), ``post_fallbacks`` (completions that could not be posted and
        were queued in the pool instead: ``ring.wait()`` reaps them there
        too), ``fd_recoveries`` (the pool's own descriptors that the program
        closed or replaced, taken back or made anew).  Raises
        ``OSError(EBADF)`` when closed."""
        out = ffi.new("struct us_pool_stats *")
        self._enter("Pool.stats")
        try:
            lib.us_pool_stats(self._p, out)
        finally:
            self._leave()
        return {name: getattr(out, name) for name, _ in ffi.typeof("struct us_pool_stats").fields}

    @property
    def max_workers(self) -> int:
        """Upper bound on workers; settable (>= 1; applies to later growth)."""
        return self._max_workers

    @max_workers.setter
    def max_workers(self, value: int) -> None:
        if value < 1:
            raise ValueError("max_workers must be >= 1")
        self._enter("Pool.max_workers")
        try:
            lib.us_pool_set_max(self._p, value)
            self._max_workers = value
        finally:
            self._leave()

    @property
    def ring(self) -> Optional[Ring]:
        """The ``Ring`` completions are posted into, or None."""
        return self._ring

    @property
    def outstanding(self) -> int:
        """Jobs submitted whose completion was not reaped yet (without a ring)."""
        return len(self._jobs)

    # ---- submission -------------------------------------------------------

    def submit(self, nr: int, *args: Any, user_data: Optional[int] = None,
               keep: Iterable[Any] = ()) -> int:
        """Queue ``syscall(nr, *args)`` (up to 6 arguments); return its ``user_data``.

        Arguments are ints (signed or unsigned 64-bit), cffi cdata (passed
        by address) or buffer objects (passed by address); cdata, buffers and
        ``keep`` stay referenced until the completion is reaped.  The result
        follows the kernel convention: ``res`` is the return value or
        ``-errno``.  ``user_data`` None picks a fresh value with
        ``AUTO_USER_DATA_BIT`` set.

        Raises ``ValueError`` (more than 6 arguments; ``user_data`` already
        in flight on this pool or its ring), ``OverflowError`` (argument out
        of range), ``OSError(EBADF)`` when closed, ``OSError`` with the errno
        of ``us_pool_submit`` (EAGAIN if no worker thread could be started).
        """
        return self.submit_many([(nr, args)], None if user_data is None else [user_data],
                                keep)[0]

    def submit_many(self, calls: Iterable[Tuple[int, Sequence[Any]]],
                    user_data: Optional[Iterable[int]] = None,
                    keep: Iterable[Any] = ()) -> list[int]:
        """Queue a batch of ``(nr, args)`` calls in ONE C call (one wake-up); return their user_data.

        ``user_data``: None (auto) or a sequence with one value per call.
        ``keep`` is referenced by every job of the batch.  Raises like
        ``submit()``; on error nothing is queued.
        """
        calls = calls if isinstance(calls, list) else list(calls)
        n = len(calls)
        if n == 0:
            return []
        hold = list(keep)
        flat: list[Any] = []
        append = flat.append
        for nr, args in calls:
            k = len(args)
            if k > 6:
                raise ValueError("a system call takes at most 6 arguments")
            append(nr * 64 + k)                   # packed head word, see shim.h
            flat += args
        try:
            words = array("q", flat)
        except (TypeError, OverflowError):
            flat = []
            for nr, args in calls:
                flat.append(_word(nr * 64 + len(args), []))
                flat += [_word(a, hold) for a in args]
            words = array("q", flat)
        if user_data is None:
            base = _auto_user_data_base(n)
            uds = list(range(base, base + n))
            ud_arr = ffi.NULL
        else:
            base = 0
            uds = list(user_data)
            if len(uds) != n:
                raise ValueError("user_data needs one value per call")
            if len(set(uds)) != n:
                raise ValueError("user_data values of one batch must differ")
            ud_arr = ffi.from_buffer("uint64_t[]", array("Q", uds))
        jobs = ffi.new("struct us_job[]", n)
        owner = (jobs, hold)
        ring = self._ring
        self._enter("Pool.submit")
        try:
            if ring is not None:
                ring._track_pool_jobs(uds, jobs, owner)
            else:
                with self._lock:
                    jt = self._jobs
                    if not jt.keys().isdisjoint(uds):
                        raise ValueError("user_data already in flight on this pool")
                    jt.update(zip(uds, _repeat(owner)))
            r: int = lib.us_pool_submit_packed(self._p, jobs, n, ffi.from_buffer("int64_t[]", words),
                                          len(words), ud_arr, base)
            if r < 0:
                if ring is not None:
                    ring._untrack_pool_jobs(uds)
                else:
                    with self._lock:
                        for ud in uds:
                            self._jobs.pop(ud, None)
                raise oserror(-r, "us_pool_submit")
        finally:
            self._leave()
        return uds

    # ---- completion (without a ring) --------------------------------------

    def _reap_unposted(self) -> List[Tuple[int, int]]:
        """For the pool's ring: [(user_data, res)] of completions that could
        not be posted into it (queued in the pool instead); [] when closing."""
        try:
            self._enter("Pool._reap_unposted")
        except OSError:
            return []
        try:
            return self._drain_unposted(self._p)
        finally:
            self._leave()

    def _drain_unposted(self, p: CData) -> List[Tuple[int, int]]:
        out: List[Tuple[int, int]] = []
        while True:
            n: int = lib.us_pool_reap64(p, self._uds, self._res, _REAP_CHUNK)
            if n:
                out += zip(ffi.unpack(self._uds, n), ffi.unpack(self._res, n))
            if n < _REAP_CHUNK:
                return out

    def _no_ring(self, what: str) -> None:
        if self._ring is not None:
            raise ValueError(f"{what}: completions of a pool with a ring arrive through ring.wait()")

    def _reap_locked(self, limit: Optional[int], out: list[Completion]) -> int:
        uds_arr, res_arr = self._uds, self._res
        pop = self._jobs.pop
        total = 0
        while limit is None or total < limit:
            want = _REAP_CHUNK if limit is None else min(_REAP_CHUNK, limit - total)
            n: int = lib.us_pool_reap64(self._p, uds_arr, res_arr, want)
            if n:
                uds = ffi.unpack(uds_arr, n)
                for ud in uds:
                    pop(ud, None)
                out += map(_new_completion, _repeat(Completion, n),
                           zip(uds, ffi.unpack(res_arr, n), _ZEROS))
            total += n
            if n < want:
                break
        return total

    def peek(self, max: Optional[int] = None) -> list[Completion]:
        """Return up to ``max`` (default all) finished jobs as ``Completion`` without waiting.

        ``res`` is the exact 64-bit result (``-errno`` on failure); the
        job's memory is released.  Raises ``ValueError`` if the pool has a
        ring, ``OSError(EBADF)`` when closed.
        """
        self._no_ring("Pool.peek")
        out: list[Completion] = []
        self._enter("Pool.peek")
        try:
            with self._lock:
                self._reap_locked(max, out)
        finally:
            self._leave()
        return out

    def wait(self, min: int = 1, timeout: Optional[float] = None) -> list[Completion]:
        """Wait for at least ``min`` finished jobs; return them (and any others ready).

        ``timeout`` (seconds) bounds the wait; on expiry what is there is
        returned, possibly ``[]``.  It returns early once no job is
        outstanding, so it never blocks forever.  Waits in slices of
        50 ms so signal handlers run and ``close()`` can proceed (a
        concurrent close makes it return what it has).

        Raises ``ValueError`` if the pool has a ring, ``OSError(EBADF)``
        when closed.
        """
        self._no_ring("Pool.wait")
        deadline = None if timeout is None else time.monotonic() + timeout
        got: list[Completion] = []
        self._enter("Pool.wait")
        try:
            while True:
                with self._lock:
                    if self._closing:
                        return got
                    self._reap_locked(None, got)
                    if len(got) >= min:
                        return got
                    want = min - len(got)
                    if not self._jobs:
                        return got
                    if want > len(self._jobs):
                        want = len(self._jobs)
                if deadline is None:
                    slice_ = _WAIT_SLICE
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        with self._lock:
                            self._reap_locked(None, got)
                        return got
                    slice_ = remaining if remaining < _WAIT_SLICE else _WAIT_SLICE
                lib.us_pool_wait(self._p, want, int(slice_ * 1e9))
        finally:
            self._leave()


def _after_fork_in_child() -> None:
    for pool in list(_live):
        pool._forget_after_fork()
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
