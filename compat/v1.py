"""Personality v1: the seed's ABI (February 2007), under its own name.

The same calls, structures and constants as the top-level :mod:`compat`
raw layer (one process-wide default context, raw addresses, ``OSError``
where C returns -1/errno)::

    async_register(ahu_addr, size) -> 0
    async_exec(atom_addr) -> final atom address, or 0 when it went async
    async_wait(min_events) -> 0
    async_unregister(ahu_addr, size) -> 0
    umem_add(addr, inc) -> new value
"""
from . import async_exec, async_register, async_unregister, async_wait, umem_add
from ._abi import (AHU_SIZE, ATOM_SIZE, SYSLET_ASYNC, SYSLET_FLAGS_ALL, SYSLET_NO_COMPLETE,
                   SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_STOP_MASK, SYSLET_STOP_ON_NEGATIVE,
                   SYSLET_STOP_ON_NON_POSITIVE, SYSLET_STOP_ON_NONZERO, SYSLET_STOP_ON_ZERO,
                   SYSLET_SYNC, __NR_async_exec, __NR_async_register, __NR_async_unregister,
                   __NR_async_wait, __NR_umem_add, async_head_user, syslet_uatom)

__all__ = [
    "async_register", "async_exec", "async_wait", "async_unregister", "umem_add",
    "syslet_uatom", "async_head_user", "ATOM_SIZE", "AHU_SIZE",
    "SYSLET_ASYNC", "SYSLET_SYNC", "SYSLET_NO_COMPLETE", "SYSLET_STOP_ON_NONZERO",
    "SYSLET_STOP_ON_ZERO", "SYSLET_STOP_ON_NEGATIVE", "SYSLET_STOP_ON_NON_POSITIVE",
    "SYSLET_STOP_MASK", "SYSLET_SKIP_TO_NEXT_ON_STOP", "SYSLET_FLAGS_ALL",
    "__NR_async_register", "__NR_async_exec", "__NR_async_wait", "__NR_async_unregister",
    "__NR_umem_add",
]
