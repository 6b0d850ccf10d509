"""What compat.v5 and compat.v6 share: their calls on the default context."""
from typing import Callable, Tuple

from . import _core

#: async_exec, async_wait, umem_add, async_thread of a personality
Calls = Tuple[Callable[[int, int], int], Callable[[int, int, int], int],
              Callable[[int, int], int], Callable[[int, int], None]]


def make_calls(abi: int, module: str) -> Calls:
    """The four raw calls of personality ``abi`` (5 or 6), for ``module``."""
    from . import default_engine

    def async_exec(atom_addr: int, ahu_addr: int) -> int:
        """Runs the syslet at ``atom_addr`` with the ``struct async_head_user``
        at ``ahu_addr`` (not copied: an async syslet publishes into that
        head's ring when it ends, read then).  Returns the final atom's
        address (it completed synchronously) or 0 (it went async).  Raises
        OSError, checked in this order: EFAULT (unreadable head), EINVAL
        (``completion_ring`` NULL, ``ring_size_bytes`` not a positive multiple
        of 8, ``new_thread_stack`` 0), EFAULT (unreadable first atom), then
        v1's errors (EINVAL for ASYNC with SYNC or unknown flag bits)."""
        return default_engine().exec_head(abi, atom_addr, ahu_addr)

    def async_wait(min_events: int, user_ring_idx: int, ahu_addr: int) -> int:
        """Returns 0 once at least ``min_events`` consecutive non-NULL slots
        start at ``user_ring_idx`` in the head's ring (0 events: at once).
        Raises OSError: EFAULT (unreadable head), EINVAL (no usable ring,
        ``user_ring_idx`` or ``min_events`` beyond its slots).  Python signal
        handlers run while it waits; an exception they raise propagates."""
        default_engine().wait_head(abi, min_events, user_ring_idx, ahu_addr)
        return 0

    def umem_add(addr: int, inc: int) -> int:
        """Atomically adds ``inc`` to the native word at ``addr``; returns the
        new value.  Raises OSError(EFAULT) on a bad pointer."""
        return _core.umem_add(addr, inc)

    def async_thread(event_addr: int, ahu_addr: int) -> None:
        """The emulator starts no threads on user stacks: this parks the
        calling thread, as an idle cachemiss thread, until a signal; then it
        raises OSError(EINTR) (EFAULT for an unreadable head).  The head's
        ``new_thread_stack`` is never consumed."""
        default_engine().async_thread(event_addr, ahu_addr)

    f: Callable[..., object]
    for f in (async_exec, async_wait, umem_add, async_thread):
        f.__module__ = module
        f.__qualname__ = f.__name__
    return async_exec, async_wait, umem_add, async_thread
