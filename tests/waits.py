"""Waiting for a state instead of sleeping and hoping, for the tests in
tests/ and tests/compat/ (importable as ``waits``: pytest puts tests/ on
``sys.path`` with its conftest.py).  tests/reliability/rel_lib.py keeps a
``wait_until`` of its own: the child processes that import it have only
that directory on their path.

A test that must act while another thread of the process is blocked in a
system call -- a pool worker in ``read`` of an empty pipe, say -- asks the
kernel where the thread is (``/proc/self/task/TID/syscall``: the number and
arguments of the call it sleeps in, or ``running``) rather than sleeping a
fixed time, which on two shared cores may be too short.
"""
import os
import time
from typing import Callable, Container, Optional


def wait_until(pred: Callable[[], object], timeout: float = 5.0, step: float = 0.002) -> bool:
    """Polls pred() until it is true (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def threads_in_syscall(nr: int, fds: Optional[Container[int]] = None) -> int:
    """How many threads of this process sleep in system call nr (with its
    first argument in fds, when given)."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/syscall") as f:
                words = f.read().split()
        except OSError:             # the thread ended meanwhile
            continue
        if not words or words[0] in ("running", "-1") or int(words[0]) != nr:
            continue
        if fds is None or (len(words) > 1 and int(words[1], 16) in fds):
            n += 1
    return n


def wait_blocked(nr: int, fds: Optional[Container[int]] = None, count: int = 1,
                 timeout: float = 5.0) -> bool:
    """Waits until at least count threads sleep in system call nr (first
    argument in fds, when given); False after timeout seconds."""
    return wait_until(lambda: threads_in_syscall(nr, fds) >= count, timeout)
