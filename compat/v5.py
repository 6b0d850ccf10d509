"""Personality v5: the syslet ABI of v3, v4 and v5 (February 2007).

No registration: every call names its ``struct async_head_user`` (64 bytes,
eight native words), whose ring the engine fills through the head's
``kernel_ring_idx``.  Atoms are v1's (88 bytes).  Raw addresses in,
``OSError(errno)`` out where C returns -1/errno::

    async_exec(atom_addr, ahu_addr) -> final atom address, or 0 when it went async
    async_wait(min_events, user_ring_idx, ahu_addr) -> 0
    umem_add(addr, inc) -> new value
    async_thread(event_addr, ahu_addr) -> raises OSError(EINTR) after a signal

Inside a v5 atom, ``nr`` 282 (the 2007 x86_64 umem_add) adds too, and 280,
281, 283 are refused with EINVAL.  See docs/migration.md.
"""
import ctypes

from ._abi import (SYSLET_ASYNC, SYSLET_FLAGS_ALL, SYSLET_NO_COMPLETE,
                   SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_STOP_MASK, SYSLET_STOP_ON_NEGATIVE,
                   SYSLET_STOP_ON_NON_POSITIVE, SYSLET_STOP_ON_NONZERO, SYSLET_STOP_ON_ZERO,
                   SYSLET_SYNC, syslet_uatom)
from ._later import make_calls

__NR_async_exec = 1010
__NR_async_wait = 1011
__NR_umem_add = 1012
__NR_async_thread = 1013

#: The 2007 x86_64 numbers (served by the C drop-in under SYSLET_COMPAT_ABI=v5).
HISTORICAL_NR = {"async_exec": 280, "async_wait": 281, "umem_add": 282, "async_thread": 283}


class async_head_user(ctypes.Structure):
    """``struct async_head_user`` of v3-v5: 64 bytes, passed to every call."""

    _fields_ = [
        ("kernel_ring_idx", ctypes.c_ulong),
        ("user_ring_idx", ctypes.c_ulong),
        ("completion_ring", ctypes.c_void_p),
        ("ring_size_bytes", ctypes.c_ulong),
        ("head_stack", ctypes.c_void_p),
        ("head_eip", ctypes.c_void_p),
        ("new_thread_stack", ctypes.c_void_p),
        ("new_thread_eip", ctypes.c_void_p),
    ]


ATOM_SIZE = ctypes.sizeof(syslet_uatom)
AHU_SIZE = ctypes.sizeof(async_head_user)
assert ATOM_SIZE == 88 and AHU_SIZE == 64

async_exec, async_wait, umem_add, async_thread = make_calls(5, __name__)

__all__ = [
    "async_exec", "async_wait", "umem_add", "async_thread",
    "syslet_uatom", "async_head_user", "ATOM_SIZE", "AHU_SIZE", "HISTORICAL_NR",
    "__NR_async_exec", "__NR_async_wait", "__NR_umem_add", "__NR_async_thread",
    "SYSLET_ASYNC", "SYSLET_SYNC", "SYSLET_NO_COMPLETE", "SYSLET_STOP_ON_NONZERO",
    "SYSLET_STOP_ON_ZERO", "SYSLET_STOP_ON_NEGATIVE", "SYSLET_STOP_ON_NON_POSITIVE",
    "SYSLET_STOP_MASK", "SYSLET_SKIP_TO_NEXT_ON_STOP", "SYSLET_FLAGS_ALL",
]
