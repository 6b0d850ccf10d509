"""The builder layer: a context with its own head and ring, atoms and
variables laid out in an arena of real memory, and a small chain builder."""
import errno
import os

from . import _core
from ._abi import (ATOM_SIZE, SYSLET_FLAGS_ALL)
from ._syscalls import NR

_ffi = _core.ffi
_M64 = 0xFFFFFFFFFFFFFFFF


class Arena:
    """Bump allocator over C memory that lives as long as the arena (and
    therefore as long as its :class:`Context`).

    With ``contiguous=True`` the arena is one reserved anonymous mapping of
    ``size`` bytes (pages are only backed when touched), so consecutive
    allocations are adjacent: that is how atoms are laid out, so that
    SYSLET_SKIP_TO_NEXT_ON_STOP (address + 88) lands on the next atom.  It
    raises MemoryError when full.  Otherwise it grows by ``size`` blocks."""

    def __init__(self, size=1 << 16, contiguous=False):
        self._blocks = []
        self._size = size
        self._contiguous = contiguous
        if contiguous:
            import mmap
            import ctypes
            self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS |
                                  getattr(mmap, "MAP_NORESERVE", 0))
            self._blocks.append(ctypes.c_char.from_buffer(self._map))
            self._base = ctypes.addressof(self._blocks[0])
            self._off = 0
            self._cap = size
        else:
            self._new_block(size)

    def _new_block(self, size):
        blk = _ffi.new("char[]", size)
        self._blocks.append(blk)
        self._base = int(_ffi.cast("uintptr_t", blk))
        self._off = 0
        self._cap = size

    def alloc(self, n, align=8):
        """Zeroed memory for ``n`` bytes at an address that is a multiple of
        ``align`` (a power of two); returns its address."""
        off = ((self._base + self._off + align - 1) & ~(align - 1)) - self._base
        if off + n > self._cap:
            if self._contiguous:
                raise MemoryError(f"contiguous arena of {self._cap} bytes is full")
            self._new_block(max(self._size, n + align))
            off = ((self._base + align - 1) & ~(align - 1)) - self._base
        self._off = off + n
        return self._base + off


class Var:
    """One native word in the arena: an argument cell or a result cell."""

    __slots__ = ("addr",)

    def __init__(self, addr):
        self.addr = addr

    @property
    def value(self):
        """The word as a signed integer."""
        return _core.peek_word(self.addr)

    @value.setter
    def value(self, v):
        _core.poke(self.addr, (v & _M64).to_bytes(8, "little"))

    def __repr__(self):
        return f"Var(0x{self.addr:x}, value={self.value})"


class Buffer:
    """A byte buffer in the arena.  Its address is passed as an argument."""

    __slots__ = ("addr", "size")

    def __init__(self, addr, size):
        self.addr = addr
        self.size = size

    def read(self, n=None):
        """The first ``n`` bytes (all by default) as bytes."""
        return _core.peek(self.addr, self.size if n is None else min(n, self.size))

    def write(self, data, offset=0):
        """Copies ``data`` into the buffer at ``offset``."""
        if offset + len(data) > self.size:
            raise ValueError("data does not fit the buffer")
        _core.poke(self.addr + offset, bytes(data))

    def __len__(self):
        return self.size


class Atom:
    """One ``struct syslet_uatom`` in the arena.  ``ret`` is its result cell
    (a :class:`Var`) or None."""

    def __init__(self, ctx, addr, ret):
        self._ctx = ctx
        self.addr = addr
        self.ret = ret

    def _get(self, off):
        return _core.peek_word(self.addr + off) & _M64

    def _set(self, off, v):
        _core.poke(self.addr + off, (v & _M64).to_bytes(8, "little"))

    @property
    def flags(self):
        """The SYSLET_* flags word."""
        return self._get(0)

    @flags.setter
    def flags(self, v):
        self._set(0, v)

    @property
    def nr(self):
        """The system call number."""
        return self._get(8)

    @property
    def next(self):
        """The next atom (an :class:`Atom`), or None."""
        a = self._get(24)
        return self._ctx.atom_at(a) if a else None

    @next.setter
    def next(self, atom):
        self._set(24, atom.addr if atom is not None else 0)

    @property
    def result(self):
        """The value stored through ``ret_ptr`` (None without a result cell)."""
        return None if self.ret is None else self.ret.value

    def __repr__(self):
        return f"Atom(0x{self.addr:x}, nr={self.nr}, flags=0x{self.flags:x})"


class Chain:
    """Builds atoms linked by ``next`` in the order they are added.

    ``chain.<syscall name>(*args, ret=None, flags=0)`` appends one atom, e.g.
    ``chain.read(fd, buf, 4096, ret=n)``.  Arguments may be ints (a constant
    cell is allocated), :class:`Var` (passed by pointer: its value is read
    when the atom runs), :class:`Buffer` or :class:`Atom` (their address), or
    bytes (copied NUL-terminated into the arena; its address is passed).
    Atoms are laid out contiguously, so SYSLET_SKIP_TO_NEXT_ON_STOP lands on
    the atom added after it.
    """

    def __init__(self, ctx):
        self._ctx = ctx
        self.atoms = []

    @property
    def head(self):
        """The first atom."""
        return self.atoms[0]

    @property
    def tail(self):
        """The last atom added."""
        return self.atoms[-1]

    def atom(self, nr, *args, ret=None, flags=0, link=True):
        """Appends an atom for system call ``nr``; ``ret=True`` allocates a
        fresh result cell, a :class:`Var` uses that one.  With ``link``
        the previous atom's ``next`` points at it."""
        if len(args) > 6:
            raise ValueError("a system call takes at most 6 arguments")
        if flags & ~SYSLET_FLAGS_ALL:
            raise ValueError(f"unknown flag bits 0x{flags & ~SYSLET_FLAGS_ALL:x}")
        a = self._ctx._new_atom(nr, args, ret, flags)
        if link and self.atoms:
            self.atoms[-1].next = a
        self.atoms.append(a)
        return a

    def loop_to(self, atom):
        """Points the last atom's ``next`` back at ``atom`` (a loop)."""
        self.tail.next = atom
        return self

    def __getattr__(self, name):
        if name.startswith("_") or name not in NR:
            raise AttributeError(name)
        nr = NR[name]

        def add(*args, ret=None, flags=0, link=True):
            return self.atom(nr, *args, ret=ret, flags=flags, link=link)

        add.__name__ = name
        return add


class Batch:
    """Syslets run together with shared io_uring submissions (see
    :meth:`Context.batch`).  :meth:`run` returns, per syslet, its final atom,
    None when it went async, or an OSError; the chains must stay unchanged
    in shape (their atoms may be edited in place)."""

    def __init__(self, ctx, chains):
        self._ctx = ctx
        heads = [(c.head if isinstance(c, Chain) else c).addr for c in chains]
        self._run = ctx.engine.batch_runner(heads)
        self._n = len(heads)
        self._last = (None, None)   # (raw results, the atoms they meant)

    def __len__(self):
        return self._n

    def run(self):
        """Runs every syslet once; see the class docstring."""
        res = self._run()
        raw = bytes(_core.ffi.buffer(res))
        last_raw, last_out = self._last
        if raw == last_raw:     # the same final atoms as last time (the usual case)
            return list(last_out)
        get = self._ctx._atoms.get
        out = [get(r) for r in res]
        if None in out:     # async (0), errors (< 0) or foreign atoms
            ctx = self._ctx
            out = [a if a is not None else None if r == 0 else
                   OSError(-r, os.strerror(-r)) if r < 0 else ctx.atom_or_wrap(r)
                   for a, r in zip(out, res)]
        else:               # only Atoms of this context: valid for the same words again
            self._last = (raw, out)
            out = list(out)     # the caller's copy
        return out


class Context:
    """A syslet context of its own: an engine, a registered head and ring.

    ``backend``: ``'io_uring'``, ``'threadpool'``, ``'reference'`` (the
    sequential interpreter) or None for ``uring_shim.backend()``.
    ``ring_slots``: completion ring size.  ``max_threads``: the head's
    ``max_nr_threads`` (-1 = implementation default, 0 = always synchronous).
    """

    def __init__(self, backend=None, ring_slots=256, max_threads=-1, arena_size=1 << 16):
        if backend == "reference":
            from ._reference import Reference
            self.engine = Reference()
        else:
            self.engine = _core.Engine(backend)
        self.backend = self.engine.backend
        self.arena = Arena(arena_size)
        # Atoms get an arena of their own: result and constant cells allocated
        # while building must not land between two atoms, or
        # SYSLET_SKIP_TO_NEXT_ON_STOP (address + 88) would miss the next one.
        self._atom_arena = Arena(64 << 20, contiguous=True)   # ~760k atoms, backed on touch
        self._atoms = {}
        self._consumer = 0
        self.ring_slots = ring_slots
        self.ring_addr = self.arena.alloc(8 * ring_slots)
        self.engine.register(self.ring_addr, 8 * ring_slots, max_threads)
        self._registered = True

    # -- memory -----------------------------------------------------------
    def var(self, value=0):
        """A new native word holding ``value``."""
        v = Var(self.arena.alloc(8))
        if value:
            v.value = value
        return v

    def buffer(self, size, align=16):
        """A new zeroed buffer of ``size`` bytes at an address that is a
        multiple of ``align`` (a power of two; O_DIRECT I/O wants the
        device's logical block size, 4096 is always enough)."""
        if align < 1 or align & (align - 1):
            raise ValueError(f"align must be a power of two, not {align}")
        return Buffer(self.arena.alloc(max(size, 1), align), size)

    def cstring(self, data):
        """Copies bytes (or str, UTF-8) NUL-terminated into the arena; returns the address."""
        if isinstance(data, str):
            data = data.encode()
        addr = self.arena.alloc(len(data) + 1, 1)
        _core.poke(addr, bytes(data) + b"\0")
        return addr

    def _cell(self, arg):
        if isinstance(arg, Var):
            return arg.addr
        if isinstance(arg, (Buffer, Atom)):
            return self.var(arg.addr).addr
        if isinstance(arg, (bytes, bytearray, str)):
            return self.var(self.cstring(arg)).addr
        if isinstance(arg, int):
            return self.var(arg).addr
        raise TypeError(f"cannot pass {type(arg).__name__} as a syslet argument")

    def _new_atom(self, nr, args, ret, flags):
        addr = self._atom_arena.alloc(ATOM_SIZE, 8)
        if ret is True:
            ret = self.var()
        cells = [self._cell(a) for a in args]
        words = [flags, nr, ret.addr if ret is not None else 0, 0] + cells + [0] * (6 - len(cells)) + [0]
        _core.poke(addr, b"".join((w & _M64).to_bytes(8, "little") for w in words))
        a = Atom(self, addr, ret)
        self._atoms[addr] = a
        return a

    def chain(self):
        """A new, empty :class:`Chain`."""
        return Chain(self)

    def atom_or_wrap(self, addr):
        """The :class:`Atom` at ``addr``: one built here, or a plain view of
        an atom built elsewhere (no result cell known)."""
        a = self._atoms.get(addr)
        return a if a is not None else Atom(self, addr, None)

    def atom_at(self, addr):
        """The :class:`Atom` built here at ``addr`` (KeyError otherwise)."""
        return self._atoms[addr]

    # -- running ------------------------------------------------------------
    def exec(self, chain):
        """Runs a chain (or an :class:`Atom`).  Returns the final atom when the
        syslet completed synchronously, None when it went async (see
        :meth:`wait`).  Raises OSError with the errno of async_exec."""
        head = chain.head if isinstance(chain, Chain) else chain
        try:
            r = self.engine.exec(head.addr)
        except OSError as e:
            if e.errno != errno.EIO or not hasattr(self.engine, "explain"):
                raise
            raise self.engine.explain(e) from None      # a broken engine says why
        return self.atom_or_wrap(r) if r else None

    def exec_many(self, chains):
        """Runs several syslets with shared io_uring submissions.  Returns a
        list: the final atom, None (went async) or an OSError instance."""
        heads = [c.atoms[0].addr if type(c) is Chain else
                 (c.head if isinstance(c, Chain) else c).addr for c in chains]
        get = self._atoms.get
        return [(get(r) or self.atom_or_wrap(r)) if r > 0 else None if r == 0 else OSError(-r, os.strerror(-r))
                for r in self.engine.exec_batch(heads)]

    def batch(self, chains):
        """A :class:`Batch` of syslets to run together, again and again."""
        return Batch(self, chains)

    def reap(self):
        """Takes every published final atom out of the ring (oldest first)."""
        out = []
        n = self.ring_slots
        while len(out) < n:
            # The slots from the consumer index to the end of the ring, read
            # at once; the leading non-NULL ones are taken, then NULLed with
            # one store (a slot is written by the engine only while NULL).
            start = self._consumer
            words = memoryview(_core.peek(self.ring_addr + 8 * start, 8 * (n - start))).cast("Q")
            k = 0
            while k < len(words) and words[k]:
                k += 1
            if not k:
                break
            _core.poke(self.ring_addr + 8 * start, bytes(8 * k))
            get, wrap = self._atoms.get, self.atom_or_wrap
            out.extend(get(v) or wrap(v) for v in words[:k])
            self._consumer = (start + k) % n
            if self._consumer:
                break       # stopped at a NULL slot before the end
        return out

    def wait(self, min_events=1, timeout=None):
        """Waits for ``min_events`` ring entries, then reaps them all.
        Returns the list of final atoms (possibly empty after ``timeout``)."""
        self.engine.wait(min_events, timeout)
        return self.reap()

    def counters(self):
        """The engine's counters (a dict)."""
        return self.engine.counters()

    def close(self, cancel=True):
        """Unregisters (draining in-flight syslets) and closes the engine.
        With ``cancel`` (the default, as for :meth:`Engine.close`) running
        syslets first stop before their next atom (-ECANCELED through its
        ret_ptr; an atom already running completes), so a runaway loop cannot
        keep close() waiting; ``cancel=False`` lets every syslet run to its
        end.  Idempotent."""
        if self._registered:
            self._registered = False
            if cancel and hasattr(self.engine, "cancel"):
                try:
                    self.engine.cancel()
                except OSError:
                    pass
            while True:     # drain; entries nobody reaps are dropped here
                try:
                    self.engine.unregister(self.ring_addr, 8 * self.ring_slots, timeout=0.05)
                    break
                except OSError as e:
                    if e.errno in (errno.EBADF, errno.ECHILD):
                        break
                    if e.errno != errno.ETIME:
                        raise
                    self.reap()
        self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
