"""asyncio support for :class:`compat.Context`: ``Context.exec_async``.

How it works (docs/asyncio.md has the user's view):

* A syslet that goes async publishes its final atom's address into the
  context's completion ring; the engine then adds 1 to the context's eventfd
  (``sl_event_fd``, :meth:`Context.fileno`).  The event loop watches that fd
  (``loop.add_reader``); when it is readable, ``Context._reap_into`` empties
  it, takes the ring's entries, and each entry resolves the future of the
  ``exec_async`` call whose syslet it ends.  Nothing polls: the loop sleeps
  in its selector until the engine writes the eventfd.
* The ring only says *which atom* ended a syslet, so every call claims the
  atoms its syslet can end on (those reachable from its head by ``next``
  and by ``SYSLET_SKIP_TO_NEXT_ON_STOP``) until its final atom is reaped;
  a chain cannot run twice at once.
* ``exec_async`` with a loop running returns a ``Call``: the call's future,
  which is also a coroutine object, so that ``gather`` and ``ensure_future``
  take it without a task (asyncio's per-coroutine task, coroutine frame and
  two of its three ``call_soon`` hand-offs were most of a call's cost).
* The chains of all ``exec_async`` calls made in one turn of the loop are
  started together, by one ``Engine.exec_batch`` (one ``io_uring_enter`` for
  all of them) two turns later (``flush_soon``, then ``flush``: the turn in
  which a coroutine's task would have queued it, then the start).  ``exec_batch`` returns at once
  for chains without ``SYSLET_SYNC``: what would block goes to io_uring or
  the pool and the syslet goes async.  Chains that make their caller wait
  (``SYSLET_SYNC`` on any atom, ``max_threads=0``, the ``reference``
  executor) run in the loop's default executor instead, so the loop never
  blocks.
"""
import asyncio
import collections.abc
import errno
import os
import struct
import threading
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple, Union

from . import _core
from ._abi import ATOM_SIZE, SYSLET_NO_COMPLETE, SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_SYNC
from ._builder import Atom, Chain, Context

#: Most atoms one exec_async walks to find where its syslet may end.
WALK_LIMIT = 1 << 16

_peek = _core.peek
_words4: Callable[..., Tuple[int, int, int, int]] = struct.Struct("<QQQQ").unpack_from
_flags_next: Callable[..., Tuple[int, int]] = struct.Struct("<Q16xQ").unpack_from
_cancelled = asyncio.Future.cancelled
_SLOW_FLAGS = SYSLET_SKIP_TO_NEXT_ON_STOP | SYSLET_SYNC | SYSLET_NO_COMPLETE


class Call(asyncio.Future):  # type: ignore[type-arg]
    """What ``Context.exec_async`` returns when called with an event loop
    running: the future of the call's final atom, which is also a
    coroutine object (``send``/``throw``/``close``, registered as
    ``collections.abc.Coroutine``), so that ``await``, ``asyncio.gather``,
    ``asyncio.wait_for``, ``ensure_future``, ``create_task`` and
    ``TaskGroup.create_task`` all take it.  ``gather`` and ``ensure_future``
    use the future as it is: no task and no coroutine frame per call (the
    largest part of what a call cost asyncio before, docs/asyncio.md).

    As a coroutine it is an awaitable that yields itself until done: a
    task made from it waits on it, and cancelling that task cancels it."""

    __slots__ = ()

    def send(self, value: Any) -> "Call":
        if self.done():
            raise StopIteration(self.result())      # result() raises what the call raised
        self._asyncio_future_blocking = True
        return self

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> NoReturn:
        """A task that runs the call throws CancelledError into it when the
        task is cancelled: the call is cancelled too (before its turn: it
        never runs), as a coroutine would have been."""
        if val is None:
            val = typ() if isinstance(typ, type) else typ
        self.cancel()
        raise val

    def close(self) -> None:
        """Nothing to close: the call runs whether or not it is awaited
        (as a task does); cancel() it to keep it from starting."""


collections.abc.Coroutine.register(Call)


def walk(ctx: Context, head: int) -> Tuple[Tuple[int, ...], bool]:
    """(addresses of the atoms a syslet started at ``head`` can end on, does
    any of them carry SYSLET_SYNC).  Follows ``next`` and the skip target
    (address + 88); stops at NULL and at unreadable memory (the engine then
    ends the syslet at the atom before).  Atoms in the context's own atom
    arena are read directly, others through the guarded accessor.  Raises
    ValueError for an atom with SYSLET_NO_COMPLETE (a syslet that ends there
    publishes nothing: its call would never learn that it ended) and for
    more than WALK_LIMIT atoms."""
    arena = ctx._atom_arena
    mem, base, end = arena._map, arena._base, arena._cap - ATOM_SIZE
    seen: List[int] = []
    known = set()
    sync = False
    todo = [head]
    while todo:
        a = todo.pop()
        if a in known:
            continue
        if len(seen) == WALK_LIMIT:
            raise ValueError(f"exec_async: more than {WALK_LIMIT} atoms reachable from 0x{head:x}")
        off = a - base
        if 0 <= off <= end:
            flags, _, _, nxt = _words4(mem, off)
        else:
            try:
                flags, _, _, nxt = _words4(_peek(a, 32))
            except OSError:
                continue
        known.add(a)
        seen.append(a)
        if flags & SYSLET_NO_COMPLETE:
            raise ValueError(f"exec_async: the atom at 0x{a:x} has SYSLET_NO_COMPLETE: a syslet "
                             "that ends there publishes nothing (use exec)")
        if flags & SYSLET_SYNC:
            sync = True
        if flags & SYSLET_SKIP_TO_NEXT_ON_STOP:
            todo.append(a + ATOM_SIZE)
        if nxt:
            todo.append(nxt)
    return tuple(seen), sync


def _settle(fut: "asyncio.Future[Atom]", result: Optional[Atom],
            exc: Optional[BaseException]) -> None:
    if fut.done():
        return
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            assert result is not None
            fut.set_result(result)
    except RuntimeError:
        pass        # its loop was closed under it: nobody waits


class Completions:
    """The exec_async state of one Context: which atoms are claimed by which
    call, the calls to start in this turn of the loop, and the event loop
    whose reader watches the context's eventfd."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # The calls in flight, without an object of their own (fewer objects
        # for the garbage collector): each claimed atom maps to its call's
        # future; a call that claims more than one atom has them in multi.
        self.by_atom: Dict[int, "asyncio.Future[Atom]"] = {}
        self.multi: Dict["asyncio.Future[Atom]", Tuple[int, ...]] = {}
        self.pending = 0        # calls not released (cancelled ones included)
        self.qheads: List[int] = []     # the calls to start at the next flush(): heads ...
        self.qfuts: List["asyncio.Future[Atom]"] = []   # ... and futures
        self.loop: Optional[asyncio.AbstractEventLoop] = None   # the one reaping the ring
        self.loop_thread: Optional[int] = None
        engine = ctx.engine
        self.engine: Optional[_core.Engine] = engine if isinstance(engine, _core.Engine) else None
        self.fd: Optional[int] = ctx.fileno() if self.engine is not None else None
        # every chain in an executor thread: the engine runs all syslets in
        # the caller (max_threads 0), or there is no ring to wait on
        self.in_thread = ctx._max_threads == 0 or self.engine is None
        arena = ctx._atom_arena
        self.mem, self.base, self.end = arena._map, arena._base, arena._cap - ATOM_SIZE

    # -- the loop -----------------------------------------------------------
    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Makes ``loop`` the one that consumes the ring (RuntimeError while
        another live loop still waits for syslets of this context)."""
        old = self.loop
        if old is loop:
            return
        if old is not None and not old.is_closed() and self.pending:
            raise RuntimeError("this Context has exec_async calls in flight on another event loop")
        self.detach()
        if self.fd is not None:
            self.fd = self.ctx.fileno()     # the same, unless the program closed it
            loop.add_reader(self.fd, self.on_readable)
        self.loop = loop
        self.loop_thread = threading.get_ident()
        # Entries published while no reader watched: the eventfd counted
        # them, but look once in any case.
        loop.call_soon(self.on_readable)

    def detach(self) -> None:
        loop, self.loop = self.loop, None
        if loop is None or loop.is_closed() or self.fd is None:
            return
        if threading.get_ident() == self.loop_thread:
            loop.remove_reader(self.fd)
        else:       # close() from another thread: the loop removes it
            try:
                loop.call_soon_threadsafe(loop.remove_reader, self.fd)
            except RuntimeError:
                pass

    def on_readable(self) -> None:
        """The eventfd is readable: reap the ring (``_reap_into`` empties the
        eventfd first and hands the claimed entries to dispatch())."""
        ctx = self.ctx
        if self.engine is None or self.loop is None:
            return
        try:
            n = ctx._reap_into(None)
        except OSError:     # closed under us: close() resolved what was left
            return
        if n >= ctx.ring_slots:
            # The ring was full: finished syslets may wait in the engine for
            # a slot.  One progress round (no waiting) publishes them now --
            # which adds to the eventfd, so this runs again -- instead of at
            # the driver's next look at a full ring (200 us).
            try:
                self.engine.wait(1, timeout=0)
            except OSError:
                pass
        elif not self.pending:
            self.detach()

    # -- starting syslets ----------------------------------------------------------
    def start(self, chain: Union[Chain, Atom], loop: asyncio.AbstractEventLoop) -> Call:
        """Context.exec_async: starts ``chain`` (at the next flush, or in an
        executor thread) and returns the future of its final atom.  ``loop``
        is the loop running in this thread."""
        if self.loop is not loop:
            self.use_loop(loop)
        ctx = self.ctx
        if type(chain) is Chain and chain._ctx is ctx and chain.atoms:    # the usual case
            head = chain.atoms[0]._addr
        else:
            head = ctx._head_addr(chain)    # TypeError / ValueError as for exec
        off = head - self.base
        if 0 <= off <= self.end and not self.in_thread:
            flags, nxt = _flags_next(self.mem, off)
            if not nxt and not flags & _SLOW_FLAGS:
                # A lone atom of this context: walk() and claim(), inline.
                by = self.by_atom
                if head in by:
                    self.check_free((head,))       # raises
                fut = Call(loop=loop)
                by[head] = fut
                self.pending += 1
                if not self.qheads:
                    loop.call_soon(self.flush_soon)
                self.qheads.append(head)
                self.qfuts.append(fut)
                return fut
        atoms, sync = walk(ctx, head)
        if not atoms:
            atoms = (head,)     # unreadable: exec says EFAULT
        fut = Call(loop=loop)
        self.claim(fut, atoms)
        if sync or self.in_thread:
            self._in_thread(loop, head, fut)
        else:
            if not self.qheads:
                loop.call_soon(self.flush_soon)
            self.qheads.append(head)
            self.qfuts.append(fut)
        return fut

    def _in_thread(self, loop: asyncio.AbstractEventLoop, head: int,
                   fut: "asyncio.Future[Atom]") -> None:
        """A chain that makes its caller wait runs in the loop's default
        executor; if it still goes async there, its ring entry resolves it."""
        ctx = self.ctx

        def done(f: "asyncio.Future[int]") -> None:
            exc = asyncio.CancelledError() if f.cancelled() else f.exception()
            if exc is not None:
                self.release(fut, head, None, exc)
            elif f.result():
                self.release(fut, head, ctx.atom_or_wrap(f.result()))
            # 0: went async after all; its ring entry resolves it

        run: Callable[[int], int] = ctx.engine.exec
        loop.run_in_executor(None, run, head).add_done_callback(done)

    def check_free(self, atoms: Tuple[int, ...]) -> None:
        """RuntimeError when one of ``atoms`` is claimed by a call in flight.
        A call cancelled before it started (still queued: flush() would
        only drop it) frees its atoms here."""
        for a in atoms:
            f = self.by_atom.get(a)
            if f is not None and f.cancelled() and any(q is f for q in self.qfuts):
                self.unclaim(f, a)      # flush() skips it
                continue
            if a in self.by_atom:
                raise RuntimeError(f"the atom at 0x{a:x} belongs to a syslet still in flight "
                                   "(a chain cannot run twice at once)")

    def claim(self, fut: "asyncio.Future[Atom]", atoms: Tuple[int, ...]) -> None:
        """Maps ``atoms`` to ``fut`` (RuntimeError when one of them is
        claimed by a call in flight)."""
        self.check_free(atoms)
        by = self.by_atom
        for a in atoms:
            by[a] = fut
        if len(atoms) > 1:
            self.multi[fut] = atoms
        self.pending += 1

    def unclaim(self, fut: "asyncio.Future[Atom]", addr: int) -> bool:
        """Frees the atoms of the call ``fut`` that claims ``addr``; False
        when that call was released already."""
        by = self.by_atom
        if by.get(addr) is not fut:
            return False
        atoms = self.multi.pop(fut, None) if self.multi else None
        if atoms is None:
            del by[addr]
        else:
            for a in atoms:
                del by[a]
        self.pending -= 1
        return True

    def flush_soon(self) -> None:
        """A turn after the first call of a batch was queued: the flush is
        the turn after this one.  (A call is started in the turn after the
        one in which its caller's task next runs, as when exec_async was a
        coroutine that its task ran first: a call cancelled before that
        never runs.)  One callback per batch, not per call."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Starts every queued syslet with one exec_batch."""
        heads, futs = self.qheads, self.qfuts
        self.qheads, self.qfuts = [], []
        if any(map(_cancelled, futs)):      # cancelled before it started: never runs
            for h, f in zip(heads, futs):
                if f.cancelled():
                    self.unclaim(f, h)
            live = [(h, f) for h, f in zip(heads, futs) if not f.cancelled()]
            heads, futs = [h for h, _ in live], [f for _, f in live]
        if not heads:
            return
        assert self.engine is not None
        try:
            res = self.engine.exec_batch(heads)
        except OSError as e:        # closed, or the parent's after fork
            for h, f in zip(heads, futs):
                self.release(f, h, None, OSError(e.errno, e.strerror, "async_exec"))
            return
        if not any(res):
            return      # all went async; their ring entries resolve them
        wrap = self.ctx.atom_or_wrap
        for h, f, r in zip(heads, futs, res):
            if r > 0:
                self.release(f, h, wrap(r))
            elif r < 0:
                self.release(f, h, None, OSError(-r, os.strerror(-r), "async_exec"))
            # 0: went async; its ring entry resolves it

    # -- ending calls ------------------------------------------------------------------
    def release(self, fut: "asyncio.Future[Atom]", addr: int, result: Optional[Atom],
                exc: Optional[BaseException] = None) -> None:
        """Ends the call ``fut`` that claims ``addr``: its atoms are free
        again, its future gets the result (unless it was cancelled: then the
        result is dropped)."""
        if not self.unclaim(fut, addr) or fut.done():
            return
        if threading.get_ident() == self.loop_thread:
            _settle(fut, result, exc)
        else:           # reap() or close() in another thread
            try:
                fut.get_loop().call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:
                pass    # its loop is closed: nobody waits for it

    def dispatch(self, addrs: List[int]) -> List[int]:
        """Reaped ring entries: each resolves the call it ends.  Returns the
        entries no call claims."""
        by = self.by_atom
        wrap = self.ctx.atom_or_wrap
        left: List[int] = []
        if threading.get_ident() != self.loop_thread or self.multi:
            get = by.get
            for addr in addrs:
                f = get(addr)
                if f is None:
                    left.append(addr)
                else:
                    self.release(f, addr, wrap(addr))
            return left
        n = 0
        pop = by.pop
        atom = self.ctx._atoms.get
        for addr in addrs:      # release(), inline: the hot path
            fut = pop(addr, None)
            if fut is None:
                left.append(addr)
                continue
            n += 1
            if not fut.done():      # cancelled: the result is dropped
                try:
                    fut.set_result(atom(addr) or wrap(addr))
                except RuntimeError:
                    pass            # its loop was closed under it: nobody waits
        self.pending -= n
        return left

    def abandon(self) -> None:
        """close(): calls still waiting fail with EBADF."""
        self.qheads, self.qfuts = [], []
        seen = set()
        for a, f in list(self.by_atom.items()):
            if id(f) not in seen:
                seen.add(id(f))
                self.release(f, a, None, OSError(errno.EBADF, "the Context was closed",
                                                 "async_exec"))
        self.detach()

