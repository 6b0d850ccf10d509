"""Personality v7: Zach Brown's ``indirect`` syslets of December 2007.

No atoms: one system call per submission, its arguments by value in a
``struct indirect_registers``; with a ``struct syslet_args`` naming a
``struct syslet_ring``, a call that would block finishes in the background
and its ``{status, caller_data}`` lands in the ring.  Raw addresses in::

    indirect(regs_addr, params_addr, paramslen, flags) -> the call's result
        (32 bits, sign-extended); OSError(ESYSLETPENDING) when it went async,
        OSError(errno) when the call failed
    syslet_ring_wait(ring_addr, idx) -> 0 once kernel_head != idx

See docs/migration.md.
"""
import ctypes
from typing import Type

from ._core import ESYSLETPENDING

__NR_indirect = 1030
__NR_syslet_ring_wait = 1031

#: The 2007 x86_64 numbers (served by the C drop-in under SYSLET_COMPAT_ABI=v7).
HISTORICAL_NR = {"indirect": 286, "syslet_ring_wait": 287}


class indirect_registers(ctypes.Structure):
    """``struct indirect_registers``: the call number and its six arguments."""

    _fields_ = [
        ("rax", ctypes.c_uint64),
        ("rdi", ctypes.c_uint64),
        ("rsi", ctypes.c_uint64),
        ("rdx", ctypes.c_uint64),
        ("r10", ctypes.c_uint64),
        ("r8", ctypes.c_uint64),
        ("r9", ctypes.c_uint64),
    ]


class syslet_frame(ctypes.Structure):
    """``struct syslet_frame``: where the 2007 kernel returned a finished
    syslet's thread to (checked for non-zero, never run here)."""

    _fields_ = [("ip", ctypes.c_uint64), ("sp", ctypes.c_uint64)]


class syslet_args(ctypes.Structure):
    """``struct syslet_args``: the ring, the caller's cookie and the frame."""

    _fields_ = [
        ("ring_ptr", ctypes.c_uint64),
        ("caller_data", ctypes.c_uint64),
        ("frame", syslet_frame),
    ]


class indirect_params(ctypes.Union):
    """``union indirect_params``: ``file_flags`` (a plain call) or ``syslet``."""

    _fields_ = [("file_flags", ctypes.c_uint32), ("syslet", syslet_args)]


class syslet_completion(ctypes.Structure):
    """``struct syslet_completion``: one ring entry."""

    _fields_ = [("status", ctypes.c_uint64), ("caller_data", ctypes.c_uint64)]


class syslet_ring(ctypes.Structure):
    """``struct syslet_ring``: the 16-byte header; ``elements`` entries of
    :class:`syslet_completion` follow it (``comp`` has length 0 here: use
    :func:`ring_type` for a ring with its entries)."""

    _fields_ = [
        ("kernel_head", ctypes.c_uint32),
        ("user_tail", ctypes.c_uint32),
        ("elements", ctypes.c_uint32),
        ("wait_group", ctypes.c_uint32),
        ("comp", syslet_completion * 0),
    ]


def ring_type(elements: int) -> Type[ctypes.Structure]:
    """A ctypes structure type: the ring header followed by ``elements``
    completions (``elements`` must be a power of two for ``indirect``)."""
    return type(f"syslet_ring_{elements}", (ctypes.Structure,), {"_fields_": [
        ("kernel_head", ctypes.c_uint32),
        ("user_tail", ctypes.c_uint32),
        ("elements", ctypes.c_uint32),
        ("wait_group", ctypes.c_uint32),
        ("comp", syslet_completion * elements),
    ]})


assert ctypes.sizeof(indirect_registers) == 56 and ctypes.sizeof(syslet_args) == 32
assert ctypes.sizeof(indirect_params) == 32 and ctypes.sizeof(syslet_completion) == 16
assert ctypes.sizeof(syslet_ring) == 16


def indirect(regs_addr: int, params_addr: int, paramslen: int, flags: int) -> int:
    """Runs the call in the ``struct indirect_registers`` at ``regs_addr``.

    With ``paramslen`` >= 8 and a non-zero ``ring_ptr`` in the ``struct
    syslet_args`` at ``params_addr``: a syslet.  It returns the result when
    the call completed without blocking (no ring entry), or raises
    OSError(ESYSLETPENDING) when it went async (the entry comes later).
    Otherwise a plain call of accept, accept4, socket, socketpair, eventfd,
    eventfd2, signalfd, signalfd4 or timerfd_create, with ``file_flags``
    (O_CLOEXEC, O_NONBLOCK) applied atomically.

    Raises OSError: EINVAL (``flags`` != 0, ``paramslen`` > 32, a zero
    ``frame``, ``elements`` not a power of two, a refused call), EFAULT
    (unreadable registers, params or ring), or the call's own errno."""
    from . import default_engine
    return default_engine().indirect(regs_addr, params_addr, paramslen, flags)


def syslet_ring_wait(ring_addr: int, idx: int) -> int:
    """Returns 0 at once when the ring's ``kernel_head`` differs from ``idx``,
    otherwise once it changes.  Raises OSError(EFAULT) for an unreadable
    ring.  Python signal handlers run while it waits."""
    from . import default_engine
    default_engine().ring_wait(ring_addr, idx)
    return 0


__all__ = [
    "indirect", "syslet_ring_wait", "ESYSLETPENDING", "HISTORICAL_NR",
    "indirect_registers", "syslet_args", "syslet_frame", "indirect_params",
    "syslet_completion", "syslet_ring", "ring_type",
    "__NR_indirect", "__NR_syslet_ring_wait",
]
