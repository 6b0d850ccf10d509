"""Backend choice: io_uring where a real probe works, the native pool otherwise.

The probe really creates a small ring, does a NOP round trip and reads the
opcode probe (the CPython ``selectors._can_use`` habit: probe by creating
the object).  The outcome and its cause are computed once, on first use, and
cached.  ``URING_SHIM_BACKEND=auto|io_uring|threadpool`` (read at that first
use; unset is ``auto``, any other value raises
:class:`~uring_shim.EnvVarError`) forces a choice.
"""
import errno
import os
import platform
import threading
from typing import Optional, Tuple, TypedDict

from ._binding import ffi, lib
from ._env import choice as _env_choice

ENV = "URING_SHIM_BACKEND"
CHOICES = ("auto", "io_uring", "threadpool")



class _State(TypedDict):
    backend: str            # 'io_uring' or 'threadpool'
    errno: int              # 0: io_uring works
    opcodes: "frozenset[int]"
    forced_error: bool      # io_uring forced but unusable
    reason: str


_lock = threading.Lock()
_state: Optional[_State] = None     # see _detect()
_NOP_UD = 0x5EED


def _errname(err: int) -> str:
    return f"{errno.errorcode.get(err, 'E?')} ({os.strerror(err)})"


def _disabled_sysctl() -> Optional[str]:
    """kernel.io_uring_disabled, for the diagnostic message only."""
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip()
    except OSError:
        return None


def _probe() -> Tuple[int, str, "frozenset[int]"]:
    """Return ``(errno, detail, opcodes)``; errno 0 means io_uring works."""
    ring = ffi.new("struct io_uring *")
    r: int = -errno.ENOMEM
    for entries in (8, 4, 2, 1):
        params = ffi.new("struct io_uring_params *")
        r = lib.io_uring_queue_init_params(entries, ring, params)
        if r != -errno.ENOMEM:
            break
    if r < 0:
        return -r, f"io_uring_setup failed with {_errname(-r)}", frozenset()
    try:
        desc = ffi.new("struct us_desc[1]")
        desc[0].opcode = 0
        desc[0].fd = -1
        desc[0].user_data = _NOP_UD
        r = lib.us_submit_many(ring, desc, 1)
        if r < 0:
            return -r, f"io_uring_enter (NOP submit) failed with {_errname(-r)}", frozenset()
        for _ in range(10):
            r = lib.us_wait(ring, 1, 1_000_000_000)
            if r != -errno.EINTR:
                break
        if r < 0:
            return -r, f"io_uring_enter (NOP wait) failed with {_errname(-r)}", frozenset()
        out = ffi.new("struct us_cqe[1]")
        if lib.us_reap(ring, out, 1) != 1 or out[0].user_data != _NOP_UD or out[0].res != 0:
            return errno.EIO, "NOP round trip returned no or a wrong completion", frozenset()
        supported = ffi.new("uint8_t[256]")
        r = lib.us_probe(ring, supported, 256)
        if r < 0:
            return -r, f"io_uring opcode probe failed with {_errname(-r)}", frozenset()
        ops = frozenset(i for i in range(min(r, 256)) if supported[i])
        return 0, f"{len(ops)} opcodes (last {r - 1}), features {params.features:#x}", ops
    finally:
        lib.io_uring_queue_exit(ring)


def _detect() -> _State:
    choice = _env_choice(ENV, CHOICES) or "auto"
    kernel = platform.release()
    if choice == "threadpool":
        return {"backend": "threadpool", "errno": errno.ENOSYS, "opcodes": frozenset(),
                "forced_error": False,
                "reason": f"forced by {ENV}=threadpool (io_uring not probed; kernel {kernel})"}
    err, detail, ops = _probe()
    if err == 0:
        how = f"forced by {ENV}=io_uring; " if choice == "io_uring" else ""
        return {"backend": "io_uring", "errno": 0, "opcodes": ops, "forced_error": False,
                "reason": f"{how}ring setup, NOP round trip and probe succeeded "
                          f"(kernel {kernel}, {detail})"}
    sysctl = _disabled_sysctl()
    why = f"io_uring unavailable: {detail}"
    if sysctl is not None:
        why += f"; kernel.io_uring_disabled={sysctl}"
    why += f"; kernel {kernel}"
    if choice == "io_uring":
        return {"backend": "io_uring", "errno": err, "opcodes": frozenset(),
                "forced_error": True, "reason": f"{ENV}=io_uring forced, but {why}"}
    return {"backend": "threadpool", "errno": err, "opcodes": frozenset(),
            "forced_error": False, "reason": why}


def _get() -> _State:
    global _state
    st = _state
    if st is None:
        with _lock:
            if _state is None:
                _state = _detect()
            st = _state
    return st


def _reset() -> None:
    """Forget the cached result (tests only)."""
    global _state
    with _lock:
        _state = None


def backend() -> str:
    """Return the backend in use: ``'io_uring'`` or ``'threadpool'``.

    The first call (or the first ``Ring()``) probes io_uring and reads
    ``URING_SHIM_BACKEND``; the result is cached for the process.

    Raises :class:`~uring_shim.EnvVarError` (a ``ValueError``) if
    ``URING_SHIM_BACKEND`` is set to anything but ``auto``, ``io_uring`` or
    ``threadpool``, and ``OSError`` with the probe's errno
    (e.g. EPERM, ENOSYS, ENOMEM) if ``io_uring`` was forced but does not work.
    Owns no memory.
    """
    st = _get()
    if st["forced_error"]:
        raise OSError(st["errno"], os.strerror(st["errno"]), st["reason"])
    return st["backend"]


def backend_reason() -> str:
    """Return a human-readable sentence saying why ``backend()`` is what it is.

    Never raises ``OSError`` (also not when io_uring was forced but failed:
    the sentence says so); raises :class:`~uring_shim.EnvVarError` for an
    invalid ``URING_SHIM_BACKEND``.  Owns no memory.
    """
    return _get()["reason"]


def io_uring_available() -> bool:
    """Return True if ``Ring()`` can be used (backend is io_uring and the probe passed).

    Never raises ``OSError``; raises :class:`~uring_shim.EnvVarError` for an
    invalid ``URING_SHIM_BACKEND``.  Owns no memory.
    """
    st = _get()
    return st["backend"] == "io_uring" and st["errno"] == 0


def require_io_uring(what: str) -> None:
    """Raise OSError unless rings may be created (errno of the probe, ENOSYS if forced off)."""
    st = _get()
    if st["errno"]:
        raise OSError(st["errno"], os.strerror(st["errno"]), f"{what}: {st['reason']}")


def probed_opcodes() -> "frozenset[int]":
    """Frozenset of opcodes the probe ring reported (empty on the threadpool backend)."""
    return _get()["opcodes"]


__all__ = ["backend", "backend_reason", "io_uring_available"]
