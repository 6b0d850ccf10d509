"""Helpers for the personality tests (LATER_ABIS.md: v5, v6, v7).

``Heads`` drives an executor (the reference, or the C engine on io_uring or
on the pool) through personality v5 or v6: atoms of that personality's
layout and heads with their rings, all in ctypes memory.  ``Indirect`` does
the same for v7.  Every wait takes a timeout, so a hang fails a test instead
of hanging the suite.
"""
import ctypes
import os
import threading
import time

import pytest

import compat.v5
import compat.v6
import compat.v7
from compat import Engine, Reference
from syslet_testlib import SENTINEL, addr, wait_until

MODULES = {5: compat.v5, 6: compat.v6}
#: A non-zero new_thread_stack (never consumed: any value will do).
STACK = 0x7000_0000_1000
M64 = (1 << 64) - 1


def new_executor(executor):
    return Reference() if executor == "reference" else Engine(executor)


def errno_of(fn, *args, **kw):
    """The errno of the OSError ``fn(*args)`` raises (fails if it returns)."""
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    return ei.value.errno


def set_atom(atom, nr, args=(), ret=None, flags=0, next=None):
    """Fills an atom of either layout (v5: v1's native words; v6: u32 flags
    and nr, u64 pointers).  ``args``: ctypes cells or raw addresses."""
    atom.flags = flags
    atom.nr = nr
    atom.ret_ptr = addr(ret)
    atom.next = addr(next)
    for i in range(6):
        atom.arg_ptr[i] = addr(args[i]) if i < len(args) else 0
    return atom


class Head:
    """A v5/v6 ``struct async_head_user`` with a ring of ``slots`` native
    pointers (kept alive together), and the consumer side fio had: take the
    slot at user_ring_idx while non-NULL, store NULL, advance."""

    def __init__(self, abi, slots=8, stack=STACK):
        self.abi = abi
        self.slots = slots
        self.ring = (ctypes.c_uint64 * max(slots, 1))()
        self.ahu = MODULES[abi].async_head_user()
        self.set_ring(addr(self.ring), 8 * slots)
        self.ahu.new_thread_stack = stack

    @property
    def addr(self):
        return addr(self.ahu)

    def set_ring(self, ring_addr, nbytes):
        if self.abi == 5:
            self.ahu.completion_ring = ring_addr or None
        else:
            self.ahu.completion_ring_ptr = ring_addr
        self.ahu.ring_size_bytes = nbytes

    def entries(self):
        """Non-NULL slots in slot order."""
        return [v for v in self.ring if v]

    def reap(self):
        out = []
        while self.ring[self.ahu.user_ring_idx]:
            i = self.ahu.user_ring_idx
            out.append(self.ring[i])
            self.ring[i] = 0
            self.ahu.user_ring_idx = (i + 1) % self.slots
        return out


class Heads:
    """One executor driven through personality ``abi`` (5 or 6)."""

    def __init__(self, executor, abi):
        self.executor = executor
        self.abi = abi
        self.mod = MODULES[abi]
        self.atom_size = self.mod.ATOM_SIZE
        self.engine = new_executor(executor)
        self._keep = []

    @property
    def is_engine(self):
        return self.executor != "reference"

    # memory
    def atoms(self, n):
        """``n`` contiguous zeroed atoms of this personality."""
        return self.keep((self.mod.syslet_uatom * n)())

    def cell(self, value=0):
        return self.keep(ctypes.c_int64(value))

    def keep(self, obj):
        self._keep.append(obj)
        return obj

    def head(self, slots=8, stack=STACK):
        return self.keep(Head(self.abi, slots, stack))

    # calls
    def exec(self, atom, head):
        return self.engine.exec_head(self.abi, addr(atom), head if isinstance(head, int) else head.addr)

    def wait(self, head, min_events, idx=None, timeout=10.0):
        """async_wait(min_events, idx (default: the head's user_ring_idx), head)."""
        h = head if isinstance(head, int) else head.addr
        if idx is None:
            idx = head.ahu.user_ring_idx
        return self.engine.wait_head(self.abi, min_events, idx, h, timeout=timeout)

    def run(self, atom, head, timeout=10.0):
        """Runs a syslet to its end: its final atom, and whether it went
        async (then exactly one entry came: that atom)."""
        r = self.exec(atom, head)
        if r:
            return r, False
        assert self.wait(head, 1, timeout=timeout), "no completion within the watchdog"
        got = head.reap()
        assert len(got) == 1, got
        assert self.settle()
        return got[0], True

    def settle(self, timeout=10.0):
        """True once nothing is in flight (the reference: always)."""
        if not self.is_engine:
            return True
        return wait_until(lambda: self.engine.inflight() == 0, timeout)

    def counters(self):
        return self.engine.counters()

    def close(self):
        self.engine.close()


# ---- v7 ------------------------------------------------------------------------

class Ring7:
    """A ``struct syslet_ring`` with ``elements`` completions, 8-aligned."""

    def __init__(self, elements=8, kernel_head=0):
        self.elements = elements
        self.mem = compat.v7.ring_type(max(elements, 1))()
        self.mem.elements = elements
        self.mem.kernel_head = kernel_head
        self.mem.user_tail = kernel_head

    @property
    def addr(self):
        return addr(self.mem)

    def pending(self):
        return (self.mem.kernel_head - self.mem.user_tail) & 0xFFFFFFFF

    def take(self):
        """Consumes every entry (fio's v7 reaping): [(status, caller_data)]."""
        kh = self.mem.kernel_head
        out = []
        while self.mem.user_tail != kh:
            c = self.mem.comp[self.mem.user_tail & (self.elements - 1)]
            out.append((c.status, c.caller_data))
            self.mem.user_tail = (self.mem.user_tail + 1) & 0xFFFFFFFF
        return out


def signed64(v):
    v &= M64
    return v - (1 << 64) if v >> 63 else v


class Indirect:
    """One executor driven through personality v7."""

    def __init__(self, executor):
        self.executor = executor
        self.engine = new_executor(executor)
        self._keep = []

    @property
    def is_engine(self):
        return self.executor != "reference"

    def keep(self, obj):
        self._keep.append(obj)
        return obj

    def regs(self, nr, *args):
        r = compat.v7.indirect_registers()
        r.rax = nr & M64
        for name, v in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(r, name, v & M64)
        return self.keep(r)

    def params(self, ring=None, caller_data=0, ip=0x401000, sp=0x7ffe0000):
        """A ``union indirect_params`` with syslet args (ring None: ring_ptr 0)."""
        p = compat.v7.indirect_params()
        p.syslet.ring_ptr = 0 if ring is None else (ring if isinstance(ring, int) else ring.addr)
        p.syslet.caller_data = caller_data & M64
        p.syslet.frame.ip = ip
        p.syslet.frame.sp = sp
        return self.keep(p)

    def plain(self, file_flags=0):
        p = compat.v7.indirect_params()
        p.file_flags = file_flags
        return self.keep(p)

    def ring(self, elements=8, kernel_head=0):
        return self.keep(Ring7(elements, kernel_head))

    def call(self, regs, params, paramslen=32, flags=0):
        """indirect(): the result, or raises OSError (ESYSLETPENDING too)."""
        return self.engine.indirect(addr(regs), addr(params), paramslen, flags)

    def outcome(self, regs, params, paramslen=32, flags=0):
        """("ok", result) | ("pending", None) | ("err", errno)."""
        try:
            return "ok", self.call(regs, params, paramslen, flags)
        except OSError as e:
            if e.errno == compat.v7.ESYSLETPENDING:
                return "pending", None
            return "err", e.errno

    def resolve(self, regs, ring, caller_data=0):
        """Runs the call with ``ring`` to its end, synchronous or not: the
        result (sign-extended) or -errno, from the return or the ring entry."""
        kind, v = self.outcome(regs, self.params(ring, caller_data=caller_data))
        if kind == "pending":
            (st, cd), = self.collect(ring, 1)
            assert cd == caller_data & M64
            return signed64(st)
        return v if kind == "ok" else -v

    def wait(self, ring, idx, timeout=10.0):
        r = ring if isinstance(ring, int) else ring.addr
        return self.engine.ring_wait(r, idx, timeout=timeout)

    def collect(self, ring, n, timeout=10.0):
        """Waits for and consumes ``n`` entries (watchdog: ``timeout``)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            out += ring.take()
            if len(out) >= n:
                break
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(out)} of {n} completions within the watchdog"
            self.wait(ring, ring.mem.user_tail, timeout=left)
        return out

    def settle(self, timeout=10.0):
        if not self.is_engine:
            return True
        return wait_until(lambda: self.engine.inflight() == 0, timeout)

    def counters(self):
        return self.engine.counters()

    def close(self):
        self.engine.close()


# ---- threads with a watchdog ------------------------------------------------------

class Worker(threading.Thread):
    """A thread whose result or exception is kept; ``result(timeout)`` fails
    the test when it has not finished by then."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._fn, self._args = fn, args
        self._out = None
        self._exc = None

    def run(self):
        try:
            self._out = self._fn(*self._args)
        except BaseException as e:       # handed to the test
            self._exc = e

    def result(self, timeout=10.0):
        self.join(timeout)
        assert not self.is_alive(), f"{self._fn.__name__} still running after {timeout} s"
        if self._exc is not None:
            raise self._exc
        return self._out


def spawn(fn, *args):
    w = Worker(fn, *args)
    w.start()
    return w


class Pipe:
    """A pipe closed at the end of the test."""

    def __init__(self):
        self.r, self.w = os.pipe()

    def close(self):
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


__all__ = ["MODULES", "STACK", "SENTINEL", "Head", "Heads", "Indirect", "Ring7", "Pipe", "Worker",
           "spawn", "set_atom", "errno_of", "signed64", "new_executor", "wait_until", "addr"]
