"""syslet-compat: the 2007 Linux syslet API (ABI v1) on io_uring.

Raw layer (one process-wide default context, raw addresses, as the 2007
kernel had one per process)::

    async_register(ahu_addr, size) -> 0
    async_exec(atom_addr) -> final atom address, or 0 when it went async
    async_wait(min_events) -> 0
    async_unregister(ahu_addr, size) -> 0
    umem_add(addr, inc) -> new value

Where the C call would return -1/errno these raise ``OSError`` with that
errno.  Builder layer for new code: :class:`Context`.
"""
import errno as _errno
import os as _os
import threading as _threading
from typing import Dict, Optional

from . import _core, _exec
from ._abi import (AHU_SIZE, ATOM_SIZE, SYSLET_ASYNC, SYSLET_FLAGS_ALL, SYSLET_NO_COMPLETE,
                   SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_STOP_MASK, SYSLET_STOP_ON_NEGATIVE,
                   SYSLET_STOP_ON_NON_POSITIVE, SYSLET_STOP_ON_NONZERO, SYSLET_STOP_ON_ZERO,
                   SYSLET_SYNC, __NR_async_exec, __NR_async_register, __NR_async_unregister,
                   __NR_async_wait, __NR_umem_add, async_head_user, syslet_uatom)
from ._builder import Arena, Atom, Batch, Buffer, Chain, Context, Var
from ._core import COUNTERS, Engine
from ._env import EnvVarError
from ._reference import Reference
from ._syscalls import NR

__version__ = _core.__version__

AT_FDCWD = -100

__all__ = [
    "async_register", "async_exec", "async_wait", "async_unregister", "umem_add",
    "counters", "default_engine", "reset_default",
    "SYSLET_ASYNC", "SYSLET_SYNC", "SYSLET_NO_COMPLETE", "SYSLET_STOP_ON_NONZERO",
    "SYSLET_STOP_ON_ZERO", "SYSLET_STOP_ON_NEGATIVE", "SYSLET_STOP_ON_NON_POSITIVE",
    "SYSLET_STOP_MASK", "SYSLET_SKIP_TO_NEXT_ON_STOP", "SYSLET_FLAGS_ALL",
    "__NR_async_register", "__NR_async_exec", "__NR_async_wait", "__NR_async_unregister",
    "__NR_umem_add", "NR", "AT_FDCWD", "ATOM_SIZE", "AHU_SIZE",
    "syslet_uatom", "async_head_user",
    "Context", "Chain", "Batch", "Atom", "Var", "Buffer", "Arena", "Engine", "Reference", "COUNTERS",
    "EnvVarError",
]

_default: Optional[Engine] = None
_default_backend: Optional[str] = None
_default_lock = _threading.Lock()


def default_engine() -> Engine:
    """The process-wide default context used by the raw calls (created on
    first use, on the backend last given to :func:`reset_default`, else
    ``uring_shim.backend()``; a child after ``fork()`` gets a fresh one)."""
    global _default
    e = _default
    if e is None or e._gen != _core._fork_gen:     # no getpid() per call
        with _default_lock:
            if _default is None or _default._gen != _core._fork_gen:
                _default = Engine(_default_backend)
                _default.bind(_default_exec)
            e = _default
    return e


def reset_default(backend: Optional[str] = None) -> None:
    """Closes the default context (cancelling what runs) so the next raw call
    starts a fresh one, on ``backend``: ``'io_uring'``, ``'threadpool'`` or
    ``None``/``'auto'`` (``uring_shim.backend()``).  Raises ValueError for
    another name."""
    global _default, _default_backend
    if backend not in (None, "auto", "io_uring", "threadpool"):
        raise ValueError(f"backend must be 'io_uring', 'threadpool' or 'auto', not {backend!r}")
    with _default_lock:
        e, _default = _default, None
        _default_backend = backend
    if e is not None and e._pid == _os.getpid():
        e.close()


def _after_fork_in_child() -> None:
    global _default, _default_lock
    _default_lock = _threading.Lock()
    _default_exec.detach()
    if _default is not None:
        _default._c = _core.CLOSED  # the parent's engine: never touch it here
    _default = None


_os.register_at_fork(after_in_child=_after_fork_in_child)


def async_register(ahu_addr: int, size: int) -> int:
    """Registers the ``struct async_head_user`` at ``ahu_addr`` (its three
    fields are copied; the ring memory must stay valid until unregister).
    Raises OSError: EINVAL (size != 24, ring size not a positive multiple of
    8), EBUSY (a head is already registered), EFAULT (unreadable head)."""
    ring, nbytes, maxthr = _core.read_head(ahu_addr, size, "async_register")
    return default_engine().register(ring, nbytes, maxthr)


def _async_exec_slow(atom_addr: int) -> int:
    return default_engine().exec(atom_addr)


# async_exec is a builtin (compat/csrc/pyexec.c) bound to the default
# context while it lives; before the first call, after reset_default() and
# in a child after fork() it goes through default_engine().
_default_exec = _exec.Binding(_core.SL_EXEC_UNLOCKING, _async_exec_slow)
async_exec = _default_exec.function()
async_exec.__module__ = __name__


def async_wait(min_events: int) -> int:
    """Blocks until at least ``min_events`` unconsumed entries are in the ring
    (0 returns at once).  Python signal handlers run while it waits; an
    exception they raise propagates.  Raises OSError(EINVAL) without a head."""
    default_engine().wait(min_events)
    return 0


def async_unregister(ahu_addr: int, size: int) -> int:
    """Waits until every in-flight syslet of the head has completed and been
    published, then unregisters it.  The head is identified by the ring
    address and size it carries.  Raises OSError(EINVAL) when no registered
    head matches, EFAULT for an unreadable ``ahu``."""
    ring, nbytes, _ = _core.read_head(ahu_addr, size, "async_unregister")
    return default_engine().unregister(ring, nbytes)


def umem_add(addr: int, inc: int) -> int:
    """Atomically adds ``inc`` to the native word at ``addr``; returns the new
    value.  Raises OSError(EFAULT) on a bad pointer."""
    return _core.umem_add(addr, inc)


def counters() -> Dict[str, int]:
    """The default context's counters (a dict, see :data:`COUNTERS`)."""
    return default_engine().counters()
