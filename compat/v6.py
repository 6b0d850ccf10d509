"""Personality v6: Zach Brown's syslets of September 2007.

As :mod:`compat.v5`, but atoms are fixed-width, 80 bytes (``flags`` and ``nr``
32 bits each, every pointer a u64; SKIP_TO_NEXT_ON_STOP advances 80 bytes) and
the head is eight u64.  Raw addresses in, ``OSError(errno)`` out::

    async_exec(atom_addr, ahu_addr) -> final atom address, or 0 when it went async
    async_wait(min_events, user_ring_idx, ahu_addr) -> 0
    umem_add(addr, inc) -> new value
    async_thread(event_addr, ahu_addr) -> raises OSError(EINTR) after a signal

Inside a v6 atom, ``nr`` 288 adds too, and 286, 287, 289 are refused with
EINVAL.  See docs/migration.md.
"""
import ctypes

from ._abi import (SYSLET_ASYNC, SYSLET_FLAGS_ALL, SYSLET_NO_COMPLETE,
                   SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_STOP_MASK, SYSLET_STOP_ON_NEGATIVE,
                   SYSLET_STOP_ON_NON_POSITIVE, SYSLET_STOP_ON_NONZERO, SYSLET_STOP_ON_ZERO,
                   SYSLET_SYNC)
from ._later import make_calls

__NR_async_exec = 1020
__NR_async_wait = 1021
__NR_umem_add = 1022
__NR_async_thread = 1023

#: The 2007 x86_64 numbers (served by the C drop-in under SYSLET_COMPAT_ABI=v6).
HISTORICAL_NR = {"async_exec": 286, "async_wait": 287, "umem_add": 288, "async_thread": 289}


class syslet_uatom(ctypes.Structure):
    """``struct syslet_uatom`` of v6: 80 bytes, fixed width."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("nr", ctypes.c_uint32),
        ("ret_ptr", ctypes.c_uint64),
        ("next", ctypes.c_uint64),
        ("arg_ptr", ctypes.c_uint64 * 6),
        ("private", ctypes.c_uint64),
    ]


class async_head_user(ctypes.Structure):
    """``struct async_head_user`` of v6: eight u64 at v5's offsets."""

    _fields_ = [
        ("kernel_ring_idx", ctypes.c_uint64),
        ("user_ring_idx", ctypes.c_uint64),
        ("completion_ring_ptr", ctypes.c_uint64),
        ("ring_size_bytes", ctypes.c_uint64),
        ("head_stack", ctypes.c_uint64),
        ("head_ip", ctypes.c_uint64),
        ("new_thread_stack", ctypes.c_uint64),
        ("new_thread_ip", ctypes.c_uint64),
    ]


ATOM_SIZE = ctypes.sizeof(syslet_uatom)
AHU_SIZE = ctypes.sizeof(async_head_user)
assert ATOM_SIZE == 80 and AHU_SIZE == 64

async_exec, async_wait, umem_add, async_thread = make_calls(6, __name__)

__all__ = [
    "async_exec", "async_wait", "umem_add", "async_thread",
    "syslet_uatom", "async_head_user", "ATOM_SIZE", "AHU_SIZE", "HISTORICAL_NR",
    "__NR_async_exec", "__NR_async_wait", "__NR_umem_add", "__NR_async_thread",
    "SYSLET_ASYNC", "SYSLET_SYNC", "SYSLET_NO_COMPLETE", "SYSLET_STOP_ON_NONZERO",
    "SYSLET_STOP_ON_ZERO", "SYSLET_STOP_ON_NEGATIVE", "SYSLET_STOP_ON_NON_POSITIVE",
    "SYSLET_STOP_MASK", "SYSLET_SKIP_TO_NEXT_ON_STOP", "SYSLET_FLAGS_ALL",
]
