"""``Ring``: one io_uring instance with an in-flight table.

Thread-safety rule (the one rule of this class): every method may be called
from any thread.  An internal lock serialises everything that touches
liburing's user-space state -- prepare, submit, reap, register, close.
``wait()`` blocks in the kernel *without* the lock (the C wait only reads the
shared ring indices) and takes it only to submit and to reap, so one thread
may prepare and submit while another waits.  Concurrent waiters each receive
a disjoint share of the completions.  SQEs prepared but not yet submitted
are shared by all threads: a linked chain must be prepared by one
``prep_many()`` call (atomic) or under an outer lock, or another thread's
SQEs may land inside it.

Memory: everything an SQE points to must outlive the kernel's use of it.
``prep(..., keep=...)`` stores the objects under the SQE's ``user_data`` in
the in-flight table; they are released when the CQE carrying that
``user_data`` is reaped (the last one, if several SQEs share it; multishot
CQEs flagged ``IORING_CQE_F_MORE`` do not release), or by ``close()``.
"""
import collections
import errno
import itertools
import os
import threading
import time
import warnings
import weakref
from typing import (TYPE_CHECKING, Any, Callable, Deque, Iterable, Mapping, NamedTuple,
                    Optional, Sequence, Tuple, Union, cast, overload)

from . import _backend
from ._binding import ffi, lib
from ._constants import (IORING_ASYNC_CANCEL_ALL, IORING_ASYNC_CANCEL_ANY,
                         IORING_CQE_F_MORE, IORING_OP_ASYNC_CANCEL, IORING_OP_CLOSE,
                         IORING_OP_FIXED_FD_INSTALL, IORING_OP_NOP, IORING_OP_OPENAT,
                         IORING_OP_READ, IORING_OP_WRITE, IORING_SETUP_CQSIZE,
                         IOSQE_CQE_SKIP_SUCCESS, IOSQE_FIXED_FILE)
from ._errors import check, closed_error, oserror

if TYPE_CHECKING:
    from ._pool import Pool

#: A cffi ``cdata`` object (``ffi.new(...)``, ``ffi.from_buffer(...)``); cffi
#: has no type stubs.
CData = Any
#: What an SQE may point at: an int address, cffi cdata, or an object with
#: the buffer protocol (bytes, bytearray, memoryview, mmap, ...).
Address = Any

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
#: user_data reserved for the cancel request close() sends
CANCEL_USER_DATA = _U64
_WAIT_SLICE = 0.05          # longest single kernel wait (s): lets close() and signals in
_REAP_CHUNK = 256
_NOT_COUNTED = object()     # _prepped marker for SQEs that expect no CQE

_live: "weakref.WeakSet[Ring]" = weakref.WeakSet()
#: kept objects of requests close() could not account for: never freed, so
#: a late kernel write can never land in reused memory
_graveyard: list[Tuple[Any, ...]] = []


class Completion(NamedTuple):
    """One completion: ``user_data`` as submitted, ``res`` (``-errno`` on
    failure, the exact 64-bit result for pool jobs), ``flags`` (IORING_CQE_F_*)."""
    user_data: int
    res: int
    flags: int


_new_completion: Callable[[type, Tuple[int, int, int]], Completion] = tuple.__new__


def _address(obj: Address, hold: list[Any]) -> int:
    """Address of ``obj`` (int, cffi cdata, or a buffer); appends what must stay alive."""
    if obj is None:
        return 0
    if isinstance(obj, int):
        return obj & _U64
    if isinstance(obj, ffi.CData):
        hold.append(obj)
        return int(ffi.cast("uintptr_t", obj))
    c = ffi.from_buffer(obj)
    hold.append(c)
    hold.append(obj)
    return int(ffi.cast("uintptr_t", c))


def new_descs(n: int) -> CData:
    """Return a zeroed cffi ``struct us_desc[n]`` for ``prep_many``/``submit_wait_reap``.

    The caller owns it (freed when the last reference goes); the kernel never
    sees it -- it is only read while the call that takes it runs.
    """
    return ffi.new("struct us_desc[]", n)


def new_cqes(n: int) -> CData:
    """Return a cffi ``struct us_cqe[n]`` to reap into (``submit_wait_reap(out=...)``).

    Owned by the caller.
    """
    return ffi.new("struct us_cqe[]", n)


class Ring:
    """An io_uring instance (``io_uring_queue_init_params``).

    ``Ring(entries=64, flags=0, cq_entries=0)``: ``flags`` are
    ``IORING_SETUP_*``; ``cq_entries`` > 0 sets ``IORING_SETUP_CQSIZE``.

    Raises ``OSError`` with the setup's errno (EINVAL, ENOMEM, EPERM, ...), or
    with the probe's errno when the backend is ``'threadpool'`` (ENOSYS when
    forced by ``URING_SHIM_BACKEND``), ``ValueError`` for an invalid
    ``URING_SHIM_BACKEND``.  A context manager; ``close()`` is idempotent; a
    ring left open when collected emits ``ResourceWarning`` and is closed.

    After ``os.fork()`` the child must not use the parent's ring: in the
    child every method raises ``OSError(EBADF)`` (its copy of the mapping
    and fd is released at fork time) and no ResourceWarning is emitted.

    Attributes: ``fd``, ``features`` (IORING_FEAT_*), ``flags``,
    ``sq_entries``, ``cq_entries``.  Thread-safety and memory ownership:
    see the module docstring.
    """

    def __init__(self, entries: int = 64, flags: int = 0, cq_entries: int = 0) -> None:
        self._closed = True         # __del__ stays quiet if setup fails
        self._forked = False
        _backend.require_io_uring("Ring")
        ring = ffi.new("struct io_uring *")
        params = ffi.new("struct io_uring_params *")
        params.flags = flags
        if cq_entries:
            params.flags |= IORING_SETUP_CQSIZE
            params.cq_entries = cq_entries
        check(lib.io_uring_queue_init_params(entries, ring, params), "io_uring_queue_init_params")
        self._ring = ring
        self.fd = ring.ring_fd
        self.features = params.features
        self.flags = params.flags
        self.sq_entries = params.sq_entries
        self.cq_entries = params.cq_entries
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._inflight: dict[int, list[Any]] = {}   # user_data -> [count, [kept objects]]
        # user_data -> ((struct us_job[], kept), index)
        self._pool_jobs: dict[int, Tuple[Any, int]] = {}
        self._outstanding = 0       # SQEs/jobs whose final CQE is still due
        # user_data of SQEs not yet submitted (or _NOT_COUNTED)
        self._prepped: Deque[object] = collections.deque()
        self._held: list[list[Any]] = []    # kept objects of CQE_SKIP_SUCCESS SQEs (until close)
        self._pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
        # (user_data, res) of pool jobs not posted into the ring
        self._unposted: list[Tuple[int, int]] = []
        self._waiters = 0
        self._closing = False
        self._probe: Optional[frozenset[int]] = None
        # registered fixed buffers, kept until unregistered/closed
        self._buffers: Optional[Tuple[list[Any], list[CData]]] = None
        self._desc1 = ffi.new("struct us_desc[1]")     # for the cancel request
        self._ncqes = _REAP_CHUNK
        self._cqes = ffi.new("struct us_cqe[]", self._ncqes)
        self._status = ffi.new("int *")
        self._closed = False
        _live.add(self)

    # ---- lifecycle ----------------------------------------------------

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "forked" if self._forked else "closed" if self._closed else "open"
        fd = getattr(self, "fd", -1)
        return (f"<uring_shim.Ring fd={fd} sq={getattr(self, 'sq_entries', 0)} "
                f"cq={getattr(self, 'cq_entries', 0)} {state}>")

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (or in a child after fork)."""
        return self._closed

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        try:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
        finally:
            self.close(timeout=0.2)

    def close(self, timeout: float = 1.0) -> None:
        """Cancel and reap everything in flight, then release the ring.

        Order: pools attached to this ring are closed first (their queued
        jobs run, blocked calls are interrupted, see ``Pool.close``; their
        completions land in this ring and are discarded); SQEs prepared but not
        submitted are dropped; everything in flight is cancelled
        (IORING_OP_ASYNC_CANCEL with IORING_ASYNC_CANCEL_ANY|ALL) and reaped
        (completions are discarded) until every outstanding ``user_data`` is
        accounted for or ``timeout`` seconds pass; concurrent ``wait()`` calls
        return what they have; then ``io_uring_queue_exit``; then the kept
        objects are released.  Objects of requests still unaccounted for at
        the timeout (e.g. an io-wq read of a regular file that cannot be
        interrupted) are never released (deliberately leaked), so the kernel
        can never write into reused memory.  Idempotent; never raises for a
        ring that is already closed.
        """
        with self._lock:
            if self._closed or self._closing:
                return
            self._closing = True
            pools = list(self._pools)
        for pool in pools:
            pool.close()
        deadline = time.monotonic() + timeout
        with self._lock:
            self._discard_prepared_locked()
            if self._outstanding > 0 or self._held:
                self._prep_cancel_locked()
                lib.io_uring_submit(self._ring)
            self._prepped.clear()
        sink: list[Completion] = []
        while True:
            with self._lock:
                self._reap_locked(None, sink)
                sink.clear()
                if self._outstanding <= 0:
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            lib.us_wait(self._ring, 1, int(min(remaining, _WAIT_SLICE) * 1e9))
        with self._lock:
            while self._waiters:
                self._cond.wait(_WAIT_SLICE)
            if self._outstanding > 0:
                _graveyard.append((self._inflight, self._pool_jobs, self._buffers, self._held))
            lib.io_uring_queue_exit(self._ring)
            self._closed = True
            self._buffers = None
            self._inflight = {}
            self._pool_jobs = {}
            self._held = []
            self._outstanding = 0
        _live.discard(self)

    def _forget_after_fork(self) -> None:
        """In a fork child: release the child's copy (mapping and fd), mark forked."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        if not self._closed:
            lib.io_uring_queue_exit(self._ring)
        self._closed = True
        self._forked = True
        self._inflight = {}
        self._pool_jobs = {}
        self._held = []
        self._prepped.clear()
        self._pools = weakref.WeakSet()
        self._outstanding = 0
        self._waiters = 0

    def _check_open_locked(self, what: str) -> None:
        if self._closed or self._closing:
            raise closed_error(what, self._forked)

    # ---- probe --------------------------------------------------------

    def probe(self) -> frozenset[int]:
        """Return the frozenset of opcode numbers this kernel supports (cached).

        Raises ``OSError`` (EBADF when closed, or the probe's errno).
        """
        if self._probe is None:
            buf = ffi.new("uint8_t[256]")
            with self._lock:
                self._check_open_locked("Ring.probe")
                n = check(lib.us_probe(self._ring, buf, 256), "io_uring_get_probe_ring")
            self._probe = frozenset(i for i in range(min(n, 256)) if buf[i])
        return self._probe

    def supports(self, opcode: int) -> bool:
        """Return True if ``opcode`` (a number) is in ``probe()``."""
        return opcode in self.probe()

    # ---- preparation --------------------------------------------------

    def _track_locked(self, user_data: int, sqe_flags: int, hold: list[Any]) -> None:
        if sqe_flags & IOSQE_CQE_SKIP_SUCCESS:
            # no CQE on success: not counted; objects held until close()
            if hold:
                self._held.append(hold)
            self._prepped.append(_NOT_COUNTED)
            return
        e = self._inflight.get(user_data)
        if e is None:
            self._inflight[user_data] = [1, hold]
        else:
            e[0] += 1
            e[1].extend(hold)
        self._outstanding += 1
        self._prepped.append(user_data)

    def _retire_locked(self, user_data: int) -> None:
        e = self._inflight.get(user_data)
        if e is None:
            return
        self._outstanding -= 1
        if e[0] <= 1:
            del self._inflight[user_data]
        else:
            e[0] -= 1

    def _check_user_data_locked(self, user_data: int) -> None:
        if user_data == CANCEL_USER_DATA:
            raise ValueError(f"user_data {CANCEL_USER_DATA:#x} is reserved for Ring.close()")
        if user_data in self._pool_jobs:
            raise ValueError(f"user_data {user_data:#x} belongs to an in-flight pool job")

    def prep(self, opcode: int, fd: int = -1, addr: Address = 0, len: int = 0, off: int = 0,
             op_flags: int = 0, flags: int = 0, user_data: int = 0, file_index: int = 0,
             addr3: Address = 0, buf_index: int = 0, ioprio: int = 0, personality: int = 0,
             keep: Iterable[Any] = ()) -> int:
        """Prepare one SQE of any opcode (0 ... 255; fields are just filled in).

        ``op_flags`` is the 32-bit union word (rw_flags, open_flags,
        msg_flags, cancel_flags, install_fd_flags, ...); ``flags`` are
        IOSQE_*; ``file_index`` is also ``splice_fd_in``; ``off`` is also
        ``addr2`` (negative values wrap, so ``off=-1`` means "current
        position").  ``addr``/``addr3`` may be ints, cffi cdata or buffer
        objects (bytes, bytearray, memoryview, ...); non-int ones are kept
        alive automatically.  Bytes passed by address must only be *read* by
        the kernel (CPython bytes are NUL-terminated, so a bytes path works).

        ``keep``: objects the SQE points to; they stay referenced in the
        in-flight table until the CQE with this ``user_data`` is reaped (or
        ``close()``).  The SQE is only prepared: ``submit()`` (or ``wait()``)
        sends it.  Returns ``user_data``.

        Raises ``OSError(EBUSY)`` when the submission queue is full (nothing
        prepared), ``OSError(EBADF)`` when closed or inherited by fork,
        ``ValueError`` for a reserved ``user_data`` or one of an in-flight
        pool job, ``OverflowError`` for a field out of range.
        """
        hold = list(keep) if keep else []
        if not isinstance(addr, int):
            addr = _address(addr, hold)
        if not isinstance(addr3, int):
            addr3 = _address(addr3, hold)
        with self._lock:
            if self._closed or self._closing:
                raise closed_error("Ring.prep", self._forked)
            if user_data in self._pool_jobs or user_data == CANCEL_USER_DATA:
                self._check_user_data_locked(user_data)
            if not lib.us_prep1(self._ring, opcode, flags, ioprio, fd, off & _U64, addr & _U64,
                                len, op_flags & _U32, user_data, buf_index, personality,
                                file_index, addr3 & _U64):
                raise oserror(errno.EBUSY, "Ring.prep: submission queue full, submit() first")
            self._track_locked(user_data, flags, hold)
        return user_data

    def prep_many(self, descs: Union[CData, Iterable[Mapping[str, Any]]],
                  n: Optional[int] = None, keep: Iterable[Any] = ()) -> int:
        """Prepare a batch of SQEs in ONE C call, all or nothing.

        ``descs`` is a cffi ``struct us_desc`` array/pointer (see
        ``new_descs``; pass ``n`` for a bare pointer) or a sequence of dicts
        holding ``prep()``'s keyword arguments (each may carry its own
        ``keep``).  The batch is prepared atomically with respect to other
        threads, so it is the way to build a linked chain on a shared ring.
        ``keep`` is attached to every ``user_data`` of the batch.  Returns the
        number prepared.

        Raises ``OSError(EBUSY)`` if the batch does not fit into the free
        submission-queue space (nothing prepared), ``OSError(EBADF)`` when
        closed, ``ValueError`` for a reserved ``user_data``.
        """
        hold = list(keep) if keep else []
        per = None
        if not isinstance(descs, ffi.CData):
            descs, n, per = self._descs_from_dicts(descs)
        elif n is None:
            n = len(descs)
        with self._lock:
            self._check_open_locked("Ring.prep_many")
            if lib.io_uring_sq_space_left(self._ring) < n:
                raise oserror(errno.EBUSY, "Ring.prep_many: batch does not fit into the SQ")
            uds = [(descs[i].user_data, descs[i].flags) for i in range(n)]
            for ud, _ in uds:
                self._check_user_data_locked(ud)
            lib.us_prep_many(self._ring, descs, n)
            for i, (ud, fl) in enumerate(uds):
                h = list(hold)
                if per is not None:
                    h.extend(per[i])
                self._track_locked(ud, fl, h)
        return n

    @staticmethod
    def _descs_from_dicts(dicts: Iterable[Mapping[str, Any]]
                          ) -> Tuple[CData, int, list[list[Any]]]:
        items = list(dicts)
        n = len(items)
        arr = ffi.new("struct us_desc[]", max(n, 1))
        per: list[list[Any]] = []
        for i, it in enumerate(items):
            h = list(it.get("keep", ()))
            d = arr[i]
            d.opcode = it["opcode"]
            d.flags = it.get("flags", 0)
            d.ioprio = it.get("ioprio", 0)
            d.fd = it.get("fd", -1)
            d.off = it.get("off", 0) & _U64
            d.addr = _address(it.get("addr", 0), h)
            d.len = it.get("len", 0)
            d.op_flags = it.get("op_flags", 0) & _U32
            d.user_data = it.get("user_data", 0)
            d.buf_index = it.get("buf_index", 0)
            d.personality = it.get("personality", 0)
            d.file_index = it.get("file_index", 0)
            d.addr3 = _address(it.get("addr3", 0), h)
            per.append(h)
        return arr, n, per

    def discard_prepared(self) -> int:
        """Drop SQEs prepared since the last submit (they never run).

        Their kept objects are released.  Returns how many were dropped.
        Raises ``OSError(EBADF)`` when closed.
        """
        with self._lock:
            self._check_open_locked("Ring.discard_prepared")
            return self._discard_prepared_locked()

    def _discard_prepared_locked(self) -> int:
        n: int = lib.us_unprep(self._ring)
        for _ in range(n):
            ud = self._prepped.pop()
            if ud is not _NOT_COUNTED:
                self._retire_locked(cast(int, ud))
        return n

    def _prep_cancel_locked(self) -> None:
        if lib.io_uring_sq_space_left(self._ring) < 1:
            lib.io_uring_submit(self._ring)
        d = self._desc1[0]
        ffi.memmove(self._desc1, b"\0" * ffi.sizeof("struct us_desc"), ffi.sizeof("struct us_desc"))
        d.opcode = IORING_OP_ASYNC_CANCEL
        d.fd = -1
        d.op_flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL
        d.user_data = CANCEL_USER_DATA
        lib.us_prep_many(self._ring, self._desc1, 1)

    # convenience helpers: each only builds a descriptor ------------------

    def prep_nop(self, user_data: int = 0, flags: int = 0) -> int:
        """Prepare IORING_OP_NOP.  Raises like ``prep()``."""
        return self.prep(IORING_OP_NOP, user_data=user_data, flags=flags)

    def prep_read(self, fd: int, buf: Any, off: int = -1, user_data: int = 0, flags: int = 0,
                  nbytes: Optional[int] = None) -> int:
        """Prepare IORING_OP_READ of ``nbytes`` (default ``len(buf)``) into the
        writable buffer ``buf`` (kept alive until its CQE is reaped).

        ``off=-1`` reads at the file position.  Raises like ``prep()``, and
        ``TypeError``/``BufferError`` for a read-only buffer.
        """
        if isinstance(buf, ffi.CData):
            c = buf
            size = ffi.sizeof(buf) if nbytes is None else nbytes
        else:
            c = ffi.from_buffer(buf, require_writable=True)
            size = ffi.sizeof(c) if nbytes is None else nbytes
        return self.prep(IORING_OP_READ, fd=fd, addr=c, len=size, off=off, flags=flags,
                         user_data=user_data, keep=(buf,))

    def prep_write(self, fd: int, data: Any, off: int = -1, user_data: int = 0, flags: int = 0,
                   nbytes: Optional[int] = None) -> int:
        """Prepare IORING_OP_WRITE of ``data`` (any buffer, kept alive until
        its CQE is reaped).  ``off=-1`` writes at the file position.  Raises
        like ``prep()``."""
        c = data if isinstance(data, ffi.CData) else ffi.from_buffer(data)
        size = ffi.sizeof(c) if nbytes is None else nbytes
        return self.prep(IORING_OP_WRITE, fd=fd, addr=c, len=size, off=off, flags=flags,
                         user_data=user_data, keep=(data,))

    def prep_openat(self, dfd: int, path: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"],
                    open_flags: int = os.O_RDONLY, mode: int = 0, file_index: int = 0,
                    user_data: int = 0, flags: int = 0) -> int:
        """Prepare IORING_OP_OPENAT of ``path`` (str/bytes/PathLike, copied to a
        NUL-terminated C string kept until the CQE).

        ``file_index``: 0 for a normal fd (``res`` = fd), ``slot + 1`` to open
        into a registered-file slot (``res`` = 0), or IORING_FILE_INDEX_ALLOC.
        Raises like ``prep()``.
        """
        cpath = ffi.new("char[]", os.fsencode(path))
        return self.prep(IORING_OP_OPENAT, fd=dfd, addr=cpath, len=mode, op_flags=open_flags,
                         file_index=file_index, flags=flags, user_data=user_data)

    def prep_close(self, fd: int = 0, file_index: int = 0, user_data: int = 0,
                   flags: int = 0) -> int:
        """Prepare IORING_OP_CLOSE of ``fd``, or of registered slot
        ``file_index - 1`` when ``file_index`` > 0.  Raises like ``prep()``."""
        return self.prep(IORING_OP_CLOSE, fd=fd, file_index=file_index, flags=flags,
                         user_data=user_data)

    def prep_fixed_fd_install(self, slot: int, install_flags: int = 0, user_data: int = 0,
                              flags: int = 0) -> int:
        """Prepare IORING_OP_FIXED_FD_INSTALL (6.8+): ``res`` becomes a real fd
        for registered slot ``slot`` (O_CLOEXEC unless ``install_flags`` has
        IORING_FIXED_FD_NO_CLOEXEC).  IOSQE_FIXED_FILE is added.  Raises like
        ``prep()``."""
        return self.prep(IORING_OP_FIXED_FD_INSTALL, fd=slot, op_flags=install_flags,
                         flags=flags | IOSQE_FIXED_FILE, user_data=user_data)

    # ---- submission and completion --------------------------------------

    def _submit_locked(self) -> int:
        r: int = lib.io_uring_submit(self._ring)
        left = lib.io_uring_sq_ready(self._ring)
        prepped = self._prepped
        while len(prepped) > left:
            prepped.popleft()
        return r

    def submit(self) -> int:
        """Submit every prepared SQE (``io_uring_submit``); return the number submitted.

        Raises ``OSError`` with io_uring_enter's errno (EAGAIN, EBUSY,
        ENOMEM, ...; SQEs not taken stay queued and go with the next submit),
        ``OSError(EBADF)`` when closed.
        """
        with self._lock:
            self._check_open_locked("Ring.submit")
            return check(self._submit_locked(), "io_uring_submit")

    def _reap_locked(self, limit: Optional[int], out: list[Completion]) -> int:
        cqes = self._cqes
        inflight = self._inflight
        pool_jobs = self._pool_jobs
        ring = self._ring
        total = 0
        if pool_jobs:
            # Pool completions that could not be posted (shim.h: never dropped)
            for pool in list(self._pools):
                self._unposted += pool._reap_unposted()
            if self._unposted:
                k = len(self._unposted) if limit is None else min(limit, len(self._unposted))
                take = self._unposted[:k]
                del self._unposted[:k]
                for ud, res in take:
                    if pool_jobs.pop(ud, None) is not None:
                        self._outstanding -= 1
                    out.append(_new_completion(Completion, (ud, res, 0)))
                total = len(take)
        while limit is None or total < limit:
            want = self._ncqes if limit is None else min(self._ncqes, limit - total)
            n: int = lib.us_reap(ring, cqes, want)
            for i in range(n):
                c = cqes[i]
                ud = c.user_data
                res = c.res
                fl = c.flags
                e = inflight.get(ud)
                if e is not None:
                    if not fl & IORING_CQE_F_MORE:
                        self._outstanding -= 1
                        if e[0] <= 1:
                            del inflight[ud]
                        else:
                            e[0] -= 1
                elif pool_jobs and ud in pool_jobs:
                    owner, i = pool_jobs.pop(ud)
                    res = owner[0][i].result           # the exact 64-bit result
                    self._outstanding -= 1
                elif ud == CANCEL_USER_DATA:
                    continue
                out.append(_new_completion(Completion, (ud, res, fl)))
            total += n
            if n < want:
                break
        return total

    def peek(self, max: Optional[int] = None) -> list[Completion]:
        """Return up to ``max`` (default: all) ready completions without waiting.

        A list of ``Completion(user_data, res, flags)``; kept objects of the
        reaped requests are released.  Does not submit.  Raises
        ``OSError(EBADF)`` when closed.
        """
        out: list[Completion] = []
        with self._lock:
            self._check_open_locked("Ring.peek")
            self._reap_locked(max, out)
        return out

    @property
    def outstanding(self) -> int:
        """Number of submitted or prepared requests (and pool jobs) whose CQE is still due."""
        return self._outstanding

    def wait(self, min: int = 1, timeout: Optional[float] = None) -> list[Completion]:
        """Submit what is prepared, then wait for at least ``min`` completions.

        Returns a list of ``Completion`` (everything ready is reaped, so it
        may hold more than ``min``).  ``timeout`` (seconds) bounds the wait:
        on expiry whatever is there is returned, possibly an empty list.
        The wait only counts on what the ring tracks (prepared and submitted
        SQEs, jobs of attached pools): it returns early once none of them is
        outstanding any more, so ``wait()`` with nothing outstanding returns
        ``[]`` at once and never blocks forever.  Untracked CQEs (MSG_RING
        posts from foreign rings) are returned when they are there, but
        never waited for -- use ``peek()`` for those.  Requests whose CQE
        may be suppressed (members linked behind a failing
        IOSQE_CQE_SKIP_SUCCESS request) stay outstanding: use a timeout.
        With several waiting threads, a waiter whose completions another
        thread reaped notices within 50 ms.

        A signal interrupting the kernel wait returns to Python so its
        handler runs, then the wait continues (an exception from the
        handler propagates; completions already reaped by this call stay
        reaped and are lost to the caller -- KeyboardInterrupt semantics).
        A concurrent ``close()`` makes it return what it has.

        Raises ``OSError`` with io_uring_enter's errno, ``OSError(EBADF)``
        when closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        got: list[Completion] = []
        lock = self._lock
        with lock:
            self._check_open_locked("Ring.wait")
            if lib.io_uring_sq_ready(self._ring):
                check(self._submit_locked(), "io_uring_submit")
            self._reap_locked(None, got)
            if len(got) >= min or self._outstanding <= 0:
                return got                       # fast path: no kernel wait
            want = min - len(got)
            if want > self._outstanding:
                want = self._outstanding
            self._waiters += 1
        try:
            while True:
                if deadline is None:
                    slice_ = _WAIT_SLICE
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        with lock:
                            if not (self._closing or self._closed):
                                self._reap_locked(None, got)
                        return got
                    slice_ = remaining if remaining < _WAIT_SLICE else _WAIT_SLICE
                r: int = lib.us_wait(self._ring, want, int(slice_ * 1e9))
                if r < 0 and r != -errno.EINTR and r != -errno.ETIME:
                    raise oserror(-r, "io_uring_enter")
                # -EINTR: back in Python, so signal handlers run here; loop on.
                with lock:
                    if self._closing or self._closed:
                        return got
                    self._reap_locked(None, got)
                    if len(got) >= min or self._outstanding <= 0:
                        return got
                    want = min - len(got)
                    if want > self._outstanding:
                        want = self._outstanding
        finally:
            with lock:
                self._waiters -= 1
                if self._closing:
                    self._cond.notify_all()

    @overload
    def submit_wait_reap(self, descs: CData, n: Optional[int] = None, out: None = None,
                         timeout: Optional[float] = None,
                         keep: Iterable[Any] = ()) -> list[Completion]: ...

    @overload
    def submit_wait_reap(self, descs: CData, n: Optional[int], out: CData,
                         timeout: Optional[float] = None, keep: Iterable[Any] = ()) -> int: ...

    @overload
    def submit_wait_reap(self, descs: CData, n: Optional[int] = None, *, out: CData,
                         timeout: Optional[float] = None, keep: Iterable[Any] = ()) -> int: ...

    def submit_wait_reap(self, descs: CData, n: Optional[int] = None, out: Optional[CData] = None,
                         timeout: Optional[float] = None,
                         keep: Iterable[Any] = ()) -> Union[int, list[Completion]]:
        """Run a batch to completion: prepare, submit, wait and reap in one C call.

        The fast path of this package (``us_submit_wait_reap``): ``descs`` is a
        cffi ``struct us_desc`` array/pointer (``new_descs``; pass ``n`` for a
        bare pointer), prepared, submitted and waited for in ONE
        ``io_uring_enter`` and reaped in the same C call, with no per-request
        Python work.  It needs the ring to itself: nothing else may be
        outstanding or prepared (else ``OSError(EBUSY)``), and the ring lock
        is held for the whole call, so other threads' calls on this ring wait
        (a request that never completes blocks them until ``timeout``).

        ``out``: a cffi ``struct us_cqe`` array (``new_cqes``) of at least
        ``n`` entries; the results are written there and the number of
        completions is returned.  Without ``out`` a list of ``Completion`` is
        returned.  ``timeout`` (seconds; None = until all ``n`` completed):
        on expiry the requests still in flight are registered in the
        in-flight table (with ``keep``) and the partial result is returned --
        reap the rest with ``wait()``.  Requests whose CQE is suppressed
        (IOSQE_CQE_SKIP_SUCCESS) must not be used here.  Signals interrupt
        the wait and their handlers run before it continues.  ``keep`` needs
        to cover what the descriptors point to only if a timeout or an
        exception can leave requests in flight.

        Raises ``OSError(EBUSY)`` (ring not idle, or the batch does not fit
        the SQ: nothing prepared), ``OSError`` with io_uring_enter's errno,
        ``OSError(EBADF)`` when closed.
        """
        if n is None:
            n = len(descs)
        out_arr = out if out is not None else ffi.new("struct us_cqe[]", max(n, 1))
        status = self._status
        with self._lock:
            if self._closed or self._closing:
                raise closed_error("Ring.submit_wait_reap", self._forked)
            if self._outstanding or self._prepped:
                raise oserror(errno.EBUSY, "Ring.submit_wait_reap: ring is not idle")
            wait_nr = n if timeout is None else 0
            got: int = lib.us_submit_wait_reap(self._ring, descs, n, wait_nr, out_arr, n, status)
            if got != n:
                st = status[0]
                if st == -errno.EBUSY and got == 0 and lib.io_uring_sq_ready(self._ring) == 0:
                    raise oserror(errno.EBUSY, "Ring.submit_wait_reap: batch does not fit the SQ")
                # Slow path: register whatever is still due, then wait normally.
                seen = collections.Counter(out_arr[i].user_data for i in range(got))
                hold = list(keep)
                for i in range(n):
                    ud = descs[i].user_data
                    if seen[ud]:
                        seen[ud] -= 1
                    else:
                        self._track_locked(ud, 0, list(hold))
                self._prepped.clear()
                if st < 0 and st not in (-errno.EINTR, -errno.ETIME):
                    raise oserror(-st, "io_uring_submit_and_wait")
        if got == n:
            if out is not None:
                return n
            return [_new_completion(Completion, (c.user_data, c.res, c.flags))
                    for c in (out_arr[i] for i in range(n))]
        rest = self.wait(n - got, timeout)
        for c in rest[:max(0, n - got)]:
            o = out_arr[got]
            o.user_data = c.user_data
            o.res = c.res
            o.flags = c.flags
            got += 1
        if out is not None:
            return got
        return [_new_completion(Completion, (out_arr[i].user_data, out_arr[i].res,
                                             out_arr[i].flags)) for i in range(got)]

    def _c_nop_loop(self, count: int) -> None:
        """``count`` NOP round trips done entirely in C (benchmark reference)."""
        with self._lock:
            self._check_open_locked("Ring._c_nop_loop")
            if self._outstanding:
                raise oserror(errno.EBUSY, "Ring._c_nop_loop: ring is not idle")
            check(lib.us_nop_loop(self._ring, count), "us_nop_loop")

    # ---- registration ---------------------------------------------------

    def register_files_sparse(self, n: int) -> None:
        """Register a sparse table of ``n`` fixed-file slots (``io_uring_register_files_sparse``).

        Raises ``OSError`` (EBUSY if a table exists, EMFILE beyond
        RLIMIT_NOFILE, EINVAL, EBADF when closed).
        """
        with self._lock:
            self._check_open_locked("Ring.register_files_sparse")
            check(lib.io_uring_register_files_sparse(self._ring, n),
                  "io_uring_register_files_sparse")

    def unregister_files(self) -> None:
        """Unregister the fixed-file table.  Raises ``OSError`` (ENXIO if none)."""
        with self._lock:
            self._check_open_locked("Ring.unregister_files")
            check(lib.io_uring_unregister_files(self._ring), "io_uring_unregister_files")

    def register_files_update(self, off: int, fds: Iterable[int]) -> int:
        """Install ``fds`` (ints; -1 empties a slot) into slots ``off...``; return the count.

        The kernel takes its own references: the caller keeps owning its fds.
        Raises ``OSError`` (ENXIO without a table, EINVAL, EBADF).
        """
        fd_list = list(fds)
        arr = ffi.new("int[]", fd_list)
        with self._lock:
            self._check_open_locked("Ring.register_files_update")
            return check(lib.io_uring_register_files_update(self._ring, off, arr, len(fd_list)),
                         "io_uring_register_files_update")

    def register_buffers(self, buffers: Iterable[Any]) -> None:
        """Register fixed buffers for READ_FIXED/WRITE_FIXED (``buf_index`` = position).

        ``buffers``: writable buffer objects (bytearray, memoryview, mmap,
        cffi cdata).  The ring keeps them (and their pinned cffi views)
        referenced until ``unregister_buffers()`` or ``close()``; do not
        resize them meanwhile (bytearrays are pinned against resizing).
        Raises ``OSError`` (EBUSY if buffers are registered, ENOMEM beyond
        RLIMIT_MEMLOCK, EINVAL, EBADF when closed), ``TypeError``/``BufferError``
        for read-only buffers.
        """
        buffers = list(buffers)
        views = [b if isinstance(b, ffi.CData) else ffi.from_buffer(b, require_writable=True)
                 for b in buffers]
        iov = ffi.new("struct iovec[]", len(views))
        for i, v in enumerate(views):
            iov[i].iov_base = ffi.cast("void *", v)
            iov[i].iov_len = ffi.sizeof(v)
        with self._lock:
            self._check_open_locked("Ring.register_buffers")
            check(lib.io_uring_register_buffers(self._ring, iov, len(views)),
                  "io_uring_register_buffers")
            self._buffers = (buffers, views)

    def unregister_buffers(self) -> None:
        """Unregister the fixed buffers and release them.  Raises ``OSError`` (ENXIO if none)."""
        with self._lock:
            self._check_open_locked("Ring.unregister_buffers")
            check(lib.io_uring_unregister_buffers(self._ring), "io_uring_unregister_buffers")
            self._buffers = None

    def register_file_alloc_range(self, off: int, length: int) -> None:
        """Restrict IORING_FILE_INDEX_ALLOC to slots ``[off, off+length)``.  Raises ``OSError``."""
        with self._lock:
            self._check_open_locked("Ring.register_file_alloc_range")
            check(lib.io_uring_register_file_alloc_range(self._ring, off, length),
                  "io_uring_register_file_alloc_range")

    def set_iowq_max_workers(self, bounded: int, unbounded: int) -> Tuple[int, int]:
        """Set the io-wq worker limits (0 keeps a value); return the previous ``(bounded, unbounded)``.

        Raises ``OSError`` (EINVAL, EBADF when closed).
        """
        vals = ffi.new("unsigned int[2]", [bounded, unbounded])
        with self._lock:
            self._check_open_locked("Ring.set_iowq_max_workers")
            check(lib.io_uring_register_iowq_max_workers(self._ring, vals),
                  "io_uring_register_iowq_max_workers")
        return int(vals[0]), int(vals[1])

    # ---- pool integration (used by Pool only) ---------------------------

    def _attach_pool(self, pool: "Pool") -> None:
        with self._lock:
            self._check_open_locked("Pool(ring=...)")
            self._pools.add(pool)

    def _detach_pool(self, pool: "Pool") -> None:
        self._pools.discard(pool)

    def _take_unposted(self, items: Iterable[Tuple[int, int]]) -> None:
        """A closing pool's completions that could not be posted into this ring."""
        with self._lock:
            self._unposted += items

    def _track_pool_jobs(self, uds: Sequence[int], jobs: CData, owner: Any) -> None:
        """Register pool jobs: ``jobs`` is the ``struct us_job[]`` array (held by
        ``owner``), ``uds[i]`` is job i's user_data."""
        with self._lock:
            self._check_open_locked("Pool.submit")
            pj = self._pool_jobs
            if (CANCEL_USER_DATA in uds or not self._inflight.keys().isdisjoint(uds)
                    or not pj.keys().isdisjoint(uds)):
                raise ValueError("user_data already in flight on the ring")
            pj.update(zip(uds, zip(itertools.repeat(owner), range(len(uds)))))
            self._outstanding += len(uds)

    def _untrack_pool_jobs(self, uds: Iterable[int]) -> None:
        with self._lock:
            for ud in uds:
                if self._pool_jobs.pop(ud, None) is not None:
                    self._outstanding -= 1


def _after_fork_in_child() -> None:
    for ring in list(_live):
        ring._forget_after_fork()
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
