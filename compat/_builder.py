"""The builder layer: a context with its own head and ring, atoms and
variables laid out in an arena of real memory, and a small chain builder."""
import errno
import io
import math
import numbers
import operator
import os
import sys
from typing import (TYPE_CHECKING, Any, Callable, Coroutine, Dict, Iterable, List, Optional,
                    Sequence, Tuple, Union, cast)

from . import _core
from ._abi import (ATOM_SIZE, SYSLET_FLAGS_ALL)
from ._argcheck import SIGNATURES, THREAD_STATE
from ._syscalls import NAMES, NR

if TYPE_CHECKING:
    from ._aio import Completions
    from ._reference import Reference

#: (kind, value, size) of one argument (see Context._classify)
_Kind = Tuple[str, Any, Optional[int]]

_ffi = _core.ffi
_M64 = 0xFFFFFFFFFFFFFFFF
_MIN64 = -(1 << 63)
_MEMORY = ("mem", "bytes")      # argument kinds whose size the builder knows
#: asyncio.get_running_loop, once exec_async was called (asyncio is not
#: imported before)
_running_loop: Optional[Callable[[], Any]] = None


def _int(v: Any, what: str) -> int:
    """``v`` as an int (anything with ``__index__``); TypeError otherwise."""
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(v).__name__}") from None


def _word(value: Any, what: str) -> int:
    """``value`` as an int that fits a native word, signed or unsigned:
    ``-2**63 <= v < 2**64`` (ValueError otherwise; it would not wrap)."""
    v = _int(value, what)
    if not _MIN64 <= v <= _M64:
        raise ValueError(f"{what} = {v} does not fit a 64-bit word (-2**63 .. 2**64-1)")
    return v


def _size(value: Any, what: str) -> int:
    """``value`` as a non-negative int (ValueError when negative)."""
    v = _int(value, what)
    if v < 0:
        raise ValueError(f"{what} must not be negative, not {v}")
    return v


def _pow2(value: Any, what: str) -> int:
    v = _int(value, what)
    if v < 1 or v & (v - 1):
        raise ValueError(f"{what} must be a power of two, not {v}")
    return v


def _owned(obj: Union["Var", "Buffer", "Atom"], ctx: "Context", what: str) -> None:
    """Refuses a Var, Buffer or Atom made by another Context (its memory
    lives as long as that one)."""
    owner = obj._ctx
    if owner is not None and owner is not ctx:
        raise ValueError(f"{what} belongs to another Context")


class Arena:
    """Bump allocator over C memory that lives as long as the arena (and
    therefore as long as its :class:`Context`).

    With ``contiguous=True`` the arena is one reserved anonymous mapping of
    ``size`` bytes (pages are only backed when touched), so consecutive
    allocations are adjacent: that is how atoms are laid out, so that
    SYSLET_SKIP_TO_NEXT_ON_STOP (address + 88) lands on the next atom.  It
    raises MemoryError when full.  Otherwise it grows by ``size`` blocks."""

    def __init__(self, size: int = 1 << 16, contiguous: bool = False) -> None:
        size = _size(size, "Arena size")
        if size < 1:
            raise ValueError("Arena size must be at least 1 byte")
        self._blocks: List[Any] = []
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

    def _new_block(self, size: int) -> None:
        blk = _ffi.new("char[]", size)
        self._blocks.append(blk)
        self._base = int(_ffi.cast("uintptr_t", blk))
        self._off = 0
        self._cap = size

    def alloc(self, n: int, align: int = 8) -> int:
        """Zeroed memory for ``n`` bytes at an address that is a multiple of
        ``align`` (a power of two); returns its address.  ValueError for a
        negative ``n`` or an ``align`` that is not a power of two."""
        return self._alloc(_size(n, "Arena.alloc size"), _pow2(align, "Arena.alloc align"))

    def _alloc(self, n: int, align: int = 8) -> int:
        """alloc() for the builder's own, already checked, sizes."""
        off = ((self._base + self._off + align - 1) & ~(align - 1)) - self._base
        if off + n > self._cap:
            if self._contiguous:
                raise MemoryError(f"contiguous arena of {self._cap} bytes is full")
            self._new_block(max(self._size, n + align))
            off = ((self._base + align - 1) & ~(align - 1)) - self._base
        self._off = off + n
        return self._base + off


class Var:
    """One native word in the arena: an argument cell or a result cell.

    A Var made by :meth:`Context.var` keeps its Context (and so its memory)
    alive; one you construct yourself is a plain view of the word at
    ``addr``."""

    __slots__ = ("_addr", "_ctx")

    def __init__(self, addr: int) -> None:
        self._addr = addr
        self._ctx: Optional["Context"] = None

    @property
    def addr(self) -> int:
        """The word's address (read-only)."""
        return self._addr

    @property
    def value(self) -> int:
        """The word as a signed integer.  Set it to any integer in
        ``[-2**63, 2**64)`` (ValueError otherwise)."""
        return _core.peek_word(self.addr)

    @value.setter
    def value(self, v: int) -> None:
        v = _word(v, "Var.value")
        _core.poke(self.addr, (v & _M64).to_bytes(8, "little"))

    def __repr__(self) -> str:
        return f"Var(0x{self.addr:x}, value={self.value})"


def _errno_hint(n: int) -> str:
    name = errno.errorcode.get(-n)
    return f" (an atom's error result? -{name})" if name else ""


class Buffer:
    """A byte buffer in the arena.  Its address is passed as an argument.

    A Buffer made by :meth:`Context.buffer` keeps its Context (and so its
    memory) alive; one you construct yourself is a plain view of ``size``
    bytes at ``addr``."""

    __slots__ = ("_addr", "_size", "_ctx")

    def __init__(self, addr: int, size: int) -> None:
        self._addr = addr
        self._size = _size(size, "Buffer size")
        self._ctx: Optional["Context"] = None

    @property
    def addr(self) -> int:
        """The buffer's address (read-only)."""
        return self._addr

    @property
    def size(self) -> int:
        """The buffer's size in bytes (read-only: the builder's checks rely on it)."""
        return self._size

    def read(self, n: Optional[int] = None) -> bytes:
        """The first ``n`` bytes (all by default; at most :attr:`size`) as
        bytes.  ValueError for a negative ``n`` (e.g. a failed read's
        ``-errno`` result)."""
        if n is None:
            n = self.size
        else:
            n = _int(n, "Buffer.read length")
            if n < 0:
                raise ValueError(f"Buffer.read length must not be negative, not {n}{_errno_hint(n)}")
        return _core.peek(self.addr, min(n, self.size))

    def write(self, data: Union[bytes, bytearray, memoryview], offset: int = 0) -> None:
        """Copies ``data`` (a bytes-like object) into the buffer at
        ``offset``; ValueError when it does not fit or ``offset`` is
        negative."""
        data = memoryview(data).tobytes()
        offset = _size(offset, "Buffer.write offset")
        if offset + len(data) > self.size:
            raise ValueError(f"{len(data)} bytes at offset {offset} do not fit the buffer "
                             f"of {self.size} bytes")
        _core.poke(self.addr + offset, data)

    def __len__(self) -> int:
        return self.size


class Atom:
    """One ``struct syslet_uatom`` in the arena.  ``ret`` is its result cell
    (a :class:`Var`) or None."""

    def __init__(self, ctx: "Context", addr: int, ret: Optional[Var]) -> None:
        self._ctx = ctx
        self._addr = addr
        self.ret = ret

    @property
    def addr(self) -> int:
        """The atom's address (read-only)."""
        return self._addr

    def _get(self, off: int) -> int:
        return _core.peek_word(self.addr + off) & _M64

    def _set(self, off: int, v: int) -> None:
        _core.poke(self.addr + off, (v & _M64).to_bytes(8, "little"))

    @property
    def flags(self) -> int:
        """The SYSLET_* flags word."""
        return self._get(0)

    @flags.setter
    def flags(self, v: int) -> None:
        v = _word(v, "Atom.flags")
        if v & ~SYSLET_FLAGS_ALL:
            raise ValueError(f"unknown flag bits 0x{v & ~SYSLET_FLAGS_ALL & _M64:x}")
        self._set(0, v)

    @property
    def nr(self) -> int:
        """The system call number."""
        return self._get(8)

    @property
    def next(self) -> "Optional[Atom]":
        """The next atom (an :class:`Atom`), or None."""
        a = self._get(24)
        return self._ctx.atom_at(a) if a else None

    @next.setter
    def next(self, atom: "Optional[Atom]") -> None:
        self._set(24, 0 if atom is None else self._ctx._built(atom, "Atom.next"))

    @property
    def result(self) -> Optional[int]:
        """The value stored through ``ret_ptr`` (None without a result cell)."""
        return None if self.ret is None else self.ret.value

    def __repr__(self) -> str:
        return f"Atom(0x{self.addr:x}, nr={self.nr}, flags=0x{self.flags:x})"


#: What an atom's argument may be (see :class:`Chain`).
Arg = Union[int, Var, Buffer, Atom, bytes, bytearray, str]
#: Per syslet of :meth:`Context.exec_many` and :meth:`Batch.run`: its final
#: atom, None when it went async, or the OSError of its exec.
Result = Union[Atom, None, OSError]


class Chain:
    """Builds atoms linked by ``next`` in the order they are added.

    ``chain.<syscall name>(*args, ret=None, flags=0)`` appends one atom, e.g.
    ``chain.read(fd, buf, 4096, ret=n)``.  Arguments may be ints (a constant
    cell is allocated), :class:`Var` (passed by pointer: its value is read
    when the atom runs), :class:`Buffer` or :class:`Atom` (their address), or
    bytes (copied NUL-terminated into the arena; its address is passed).
    Atoms are laid out contiguously, so SYSLET_SKIP_TO_NEXT_ON_STOP lands on
    the atom added after it.  ``atoms`` lists them in order (read it; the
    chain relies on it holding atoms of its Context only).

    What the arguments say is checked before anything is built (see
    :ref:`compat-builder-checks`): a call with a Buffer smaller than its
    constant count, a word that does not fit 64 bits, an object of another
    Context and so on raise ValueError or TypeError and leave the chain
    as it was.
    """

    def __init__(self, ctx: "Context") -> None:
        self._ctx = ctx
        #: the atoms, in the order they were added
        self.atoms: List[Atom] = []

    @property
    def head(self) -> Atom:
        """The first atom (ValueError for an empty chain)."""
        if not self.atoms:
            raise ValueError("the chain is empty")
        return self.atoms[0]

    @property
    def tail(self) -> Atom:
        """The last atom added (ValueError for an empty chain)."""
        if not self.atoms:
            raise ValueError("the chain is empty")
        return self.atoms[-1]

    def atom(self, nr: int, *args: Arg, ret: Union[Var, bool, None] = None, flags: int = 0,
             link: bool = True) -> Atom:
        """Appends an atom for system call ``nr``; ``ret=True`` allocates a
        fresh result cell, a :class:`Var` uses that one.  With ``link``
        the previous atom's ``next`` points at it."""
        if len(args) > 6:
            raise ValueError("a system call takes at most 6 arguments")
        if type(flags) is not int or flags & ~SYSLET_FLAGS_ALL:
            flags = _word(flags, "flags")
            if flags & ~SYSLET_FLAGS_ALL:
                raise ValueError(f"unknown flag bits 0x{flags & ~SYSLET_FLAGS_ALL & _M64:x}")
        a = self._ctx._new_atom(nr, args, ret, flags)
        if link and self.atoms:
            self.atoms[-1].next = a
        self.atoms.append(a)
        return a

    def loop_to(self, atom: Atom) -> "Chain":
        """Points the last atom's ``next`` back at ``atom`` (a loop; an
        atom of this chain's Context)."""
        self.tail.next = atom
        return self

    def __getattr__(self, name: str) -> Callable[..., Atom]:
        if name.startswith("_") or name not in NR:
            raise AttributeError(name)
        nr = NR[name]

        def add(*args: Arg, ret: Union[Var, bool, None] = None, flags: int = 0,
                link: bool = True) -> Atom:
            return self.atom(nr, *args, ret=ret, flags=flags, link=link)

        add.__name__ = name
        return add


class Batch:
    """Syslets run together with shared io_uring submissions (see
    :meth:`Context.batch`).  :meth:`run` returns, per syslet, its final atom,
    None when it went async, or an OSError; the chains must stay unchanged
    in shape (their atoms may be edited in place)."""

    def __init__(self, ctx: "Context", chains: Iterable[Union[Chain, Atom]]) -> None:
        self._ctx = ctx
        heads = [ctx._head_addr(c) for c in chains]
        self._run = ctx.engine.batch_runner(heads)
        self._n = len(heads)
        # (raw results, the atoms they meant)
        self._last: "tuple[Optional[bytes], Optional[List[Atom]]]" = (None, None)

    def __len__(self) -> int:
        return self._n

    def run(self) -> List[Result]:
        """Runs every syslet once; see the class docstring."""
        res = self._run()
        raw: bytes = bytes(_core.ffi.buffer(res))
        last_raw, last_out = self._last
        if raw == last_raw and last_out is not None:    # the same final atoms as last time
            return list(last_out)
        get = self._ctx._atoms.get
        found = [get(r) for r in res]
        if None in found:   # async (0), errors (< 0) or foreign atoms
            ctx = self._ctx
            return [a if a is not None else None if r == 0 else
                    OSError(-r, os.strerror(-r)) if r < 0 else ctx.atom_or_wrap(r)
                    for a, r in zip(found, res)]
        atoms = [a for a in found if a is not None]     # all of them: valid for the same words again
        self._last = (raw, atoms)
        return list(atoms)      # the caller's copy


class Context:
    """A syslet context of its own: an engine, a registered head and ring.

    ``backend``: ``'io_uring'``, ``'threadpool'``, ``'reference'`` (the
    sequential interpreter) or None for ``uring_shim.backend()``.
    ``ring_slots``: completion ring size (at least 1).  ``max_threads``: the
    head's ``max_nr_threads`` (-1 = implementation default, 0 = always
    synchronous).  Out-of-range values raise ValueError before anything is
    created.  With asyncio, :meth:`exec_async` runs a chain and awaits its
    final atom; :meth:`fileno` serves other event loops.
    """

    def __init__(self, backend: Optional[str] = None, ring_slots: int = 256,
                 max_threads: int = -1, arena_size: int = 1 << 16) -> None:
        ring_slots = _int(ring_slots, "ring_slots")
        if not 1 <= ring_slots <= sys.maxsize // 8:
            raise ValueError(f"ring_slots must be at least 1 (and the ring fit in memory), "
                             f"not {ring_slots}")
        max_threads = _int(max_threads, "max_threads")
        if not -1 <= max_threads <= _M64:
            raise ValueError(f"max_threads must be -1 (default), 0 (synchronous) or a "
                             f"number of threads, not {max_threads}")
        self.arena = Arena(arena_size)
        # Atoms get an arena of their own: result and constant cells allocated
        # while building must not land between two atoms, or
        # SYSLET_SKIP_TO_NEXT_ON_STOP (address + 88) would miss the next one.
        self._atom_arena = Arena(64 << 20, contiguous=True)   # ~760k atoms, backed on touch
        self._atoms: Dict[int, Atom] = {}
        self._consumer = 0
        self._ring_slots = ring_slots
        self._ring_addr = self.arena.alloc(8 * ring_slots)
        self._max_threads = max_threads
        self._efd: Optional[int] = None     # fileno() was asked for: reaps empty the eventfd
        self._aio: Optional["Completions"] = None   # exec_async's state (compat._aio)
        self._unclaimed: List[Atom] = []    # entries an event loop reaped for nobody
        self.engine: Union[_core.Engine, "Reference"]
        if backend == "reference":
            from ._reference import Reference
            self.engine = Reference()
        else:
            self.engine = _core.Engine(backend)
        # The memory syslets use lives at least as long as the engine that
        # runs them (someone may keep ctx.engine and drop the Context), and
        # as long as any Var, Buffer or Atom made here (they hold the Context).
        self.engine._builder_memory = (self.arena, self._atom_arena)
        #: ``'io_uring'``, ``'threadpool'`` or ``'reference'``: what runs the syslets
        self.backend: str = self.engine.backend
        try:
            self.engine.register(self.ring_addr, 8 * ring_slots, max_threads)
        except BaseException:
            self.engine.close()
            raise
        self._registered = True

    @property
    def ring_slots(self) -> int:
        """The completion ring's slots (read-only)."""
        return self._ring_slots

    @property
    def ring_addr(self) -> int:
        """The completion ring's address (read-only)."""
        return self._ring_addr

    # -- memory -----------------------------------------------------------
    def var(self, value: int = 0) -> Var:
        """A new native word holding ``value`` (an integer in ``[-2**63,
        2**64)``; ValueError otherwise)."""
        value = _word(value, "Var value")
        v = Var(self.arena._alloc(8))
        v._ctx = self
        if value:
            _core.poke(v.addr, (value & _M64).to_bytes(8, "little"))
        return v

    def buffer(self, size: int, align: int = 16) -> Buffer:
        """A new zeroed buffer of ``size`` bytes (``size >= 0``) at an address
        that is a multiple of ``align`` (a power of two; O_DIRECT I/O wants
        the device's logical block size, 4096 is always enough)."""
        size = _size(size, "Buffer size")
        align = _pow2(align, "align")
        b = Buffer(self.arena._alloc(max(size, 1), align), size)
        b._ctx = self
        return b

    def cstring(self, data: Union[bytes, bytearray, str]) -> int:
        """Copies bytes (or str, UTF-8) NUL-terminated into the arena; returns the address."""
        if isinstance(data, str):
            data = data.encode()
        data = memoryview(data).tobytes()
        addr = self.arena.alloc(len(data) + 1, 1)
        _core.poke(addr, data + b"\0")
        return addr

    def _const(self, v: int) -> int:
        addr = self.arena.alloc(8)
        if v:
            _core.poke(addr, (v & _M64).to_bytes(8, "little"))
        return addr

    def _built(self, atom: object, what: str) -> int:
        """The address of ``atom``, an Atom built by this Context."""
        if not isinstance(atom, Atom):
            raise TypeError(f"{what} must be an Atom, not {type(atom).__name__}")
        if atom._ctx is not self:
            raise ValueError(f"{what}: the atom belongs to another Context")
        if self._atoms.get(atom.addr) is not atom:
            raise ValueError(f"{what}: the atom at 0x{atom.addr:x} was not built by this Context")
        return atom.addr

    def _classify(self, i: int, arg: Any) -> _Kind:
        """(kind, value, size) of argument ``i``: kind is 'var' (passed by
        pointer, value = its address), 'mem' (a Buffer or Atom: value = its
        address, size = its bytes), 'bytes' (value = the bytes, size = the
        copy with its NUL) or 'int' (value = the int)."""
        t = type(arg)
        if t is int and _MIN64 <= arg <= _M64:          # the usual cases first
            return "int", arg, None
        if t is Var and arg._ctx is self:
            return "var", arg._addr, None
        if t is Buffer and arg._ctx is self:
            return "mem", arg._addr, arg._size
        what = f"argument {i + 1}"
        if isinstance(arg, Var):
            _owned(arg, self, f"{what} (a Var)")
            return "var", arg.addr, None
        if isinstance(arg, Buffer):
            _owned(arg, self, f"{what} (a Buffer)")
            return "mem", arg.addr, arg.size
        if isinstance(arg, Atom):
            _owned(arg, self, f"{what} (an Atom)")
            return "mem", arg.addr, ATOM_SIZE
        if isinstance(arg, (bytes, bytearray, str)):
            data = arg.encode() if isinstance(arg, str) else bytes(arg)
            return "bytes", data, len(data) + 1
        try:
            v = operator.index(arg)
        except TypeError:
            raise TypeError(f"cannot pass {type(arg).__name__} as a syslet argument "
                            f"({what})") from None
        return "int", _word(v, what), None

    def _check_call(self, nr: int, kinds: Sequence[_Kind]) -> None:
        """The memory checks of the call table (compat/_argcheck.py)."""
        name = NAMES.get(nr)
        if name in THREAD_STATE:
            raise ValueError(f"{name} changes the engine thread that runs it (a Context.close() "
                             f"could hang or the thread crash); the builder refuses it")
        sig = SIGNATURES.get(name or "")
        if sig is None or not any(k[0] in _MEMORY for k in kinds):
            return              # no call with sized pointers, or no memory of known size passed
        consts: Dict[str, int] = {}
        for i, p in enumerate(sig):
            if i >= len(kinds):
                consts[p.name] = 0          # a missing argument is 0
            elif kinds[i][0] == "int":
                consts[p.name] = kinds[i][1] & _M64
        for i, (kind, value, size) in enumerate(kinds[:len(sig)]):
            if kind not in _MEMORY:
                continue
            p = sig[i]
            what = f"{name}: argument {i + 1} ({p.name})"
            if p.name in sig.sizes:
                raise TypeError(f"{what} is a size: pass an int or a Var, not memory")
            if p.dir is None:
                continue
            if p.dir == "map":
                raise ValueError(f"{what} would change the mapping of memory this Context "
                                 f"owns; pass a raw address")
            if kind == "bytes" and "w" in p.dir:
                raise TypeError(f"{what} is written by the kernel: pass a Buffer "
                                f"(bytes are copied, the data would be lost)")
            need = p.need(consts)
            if need is not None and size is not None and need > size:
                raise ValueError(f"{what} needs {need} bytes ({p.size}), the memory passed "
                                 f"holds {size}")

    def _new_atom(self, nr: int, args: Sequence[Arg], ret: Union[Var, bool, None],
                  flags: int) -> Atom:
        if type(nr) is not int or not 0 <= nr <= _M64:
            nr = _word(nr, "nr")
            if nr < 0:
                raise ValueError(f"nr must not be negative, not {nr}")
        if ret is not None and ret is not True and ret is not False:
            if not isinstance(ret, Var):
                raise TypeError(f"ret must be None, True or a Var, not {type(ret).__name__}")
            _owned(ret, self, "ret (a Var)")
        kinds = [self._classify(i, a) for i, a in enumerate(args)]
        self._check_call(nr, kinds)
        cell = self.var() if ret is True else ret if isinstance(ret, Var) else None
        # constant cells: one block for the atom, written at once
        consts: List[int] = []
        for kind, value, _ in kinds:
            if kind == "bytes":
                at = self.arena._alloc(len(value) + 1, 1)
                _core.poke(at, value + b"\0")
                consts.append(at)
            elif kind != "var":
                consts.append(value)
        block = 0
        if consts:
            block = self.arena._alloc(8 * len(consts))
            _core.poke(block, b"".join((v & _M64).to_bytes(8, "little") for v in consts))
        cells: List[int] = []
        k = 0
        for kind, value, _ in kinds:
            if kind == "var":
                cells.append(value)
            else:
                cells.append(block + 8 * k)
                k += 1
        addr = self._atom_arena._alloc(ATOM_SIZE, 8)
        words = [flags, nr, cell.addr if cell is not None else 0, 0] + cells + [0] * (6 - len(cells)) + [0]
        _core.poke(addr, b"".join((w & _M64).to_bytes(8, "little") for w in words))
        a = Atom(self, addr, cell)
        self._atoms[addr] = a
        return a

    def chain(self) -> Chain:
        """A new, empty :class:`Chain`."""
        return Chain(self)

    def atom_or_wrap(self, addr: int) -> Atom:
        """The :class:`Atom` at ``addr``: one built here, or a plain view of
        an atom built elsewhere (no result cell known)."""
        a = self._atoms.get(addr)
        return a if a is not None else Atom(self, addr, None)

    def atom_at(self, addr: int) -> Atom:
        """The :class:`Atom` built here at ``addr`` (KeyError otherwise)."""
        return self._atoms[addr]

    # -- running ------------------------------------------------------------
    def _head_addr(self, chain: object) -> int:
        """The first atom's address of a Chain of this Context, or of an
        Atom built here; TypeError / ValueError otherwise."""
        if isinstance(chain, Chain):
            if chain._ctx is not self:
                raise ValueError("the chain belongs to another Context")
            if not chain.atoms:
                raise ValueError("the chain is empty")
            return chain.atoms[0]._addr
        if not isinstance(chain, Atom):
            raise TypeError(f"a Chain or an Atom runs, not {type(chain).__name__}")
        return self._built(chain, "exec")

    def exec(self, chain: Union[Chain, Atom]) -> Optional[Atom]:
        """Runs a chain (or an :class:`Atom`) built by this Context.  Returns
        the final atom (an :class:`Atom`, see :meth:`reap`) when the syslet
        completed synchronously, None when it went async (see :meth:`wait`).  Raises OSError with the errno of
        async_exec; TypeError for anything but a Chain or an Atom, ValueError
        for an empty chain or one of another Context."""
        if type(chain) is Chain and chain._ctx is self and chain.atoms:     # the usual case, inline
            addr = chain.atoms[0]._addr
        else:
            addr = self._head_addr(chain)
        try:
            r = self.engine.exec(addr)
        except OSError as e:
            if e.errno != errno.EIO or not isinstance(self.engine, _core.Engine):
                raise
            raise self.engine.explain(e) from None      # a broken engine says why
        return self.atom_or_wrap(r) if r else None

    def exec_many(self, chains: Iterable[Union[Chain, Atom]]) -> List[Result]:
        """Runs several syslets with shared io_uring submissions.  Returns a
        list: the final atom, None (went async) or an OSError instance."""
        try:        # _head_addr with the usual case inline (a chain holds atoms built by its Context)
            heads = [c.atoms[0]._addr if type(c) is Chain and c._ctx is self else self._head_addr(c)
                     for c in chains]
        except IndexError:
            heads = [self._head_addr(c) for c in chains]    # an empty chain: ValueError
        get = self._atoms.get
        return [(get(r) or self.atom_or_wrap(r)) if r > 0 else None if r == 0 else OSError(-r, os.strerror(-r))
                for r in self.engine.exec_batch(heads)]

    def batch(self, chains: Iterable[Union[Chain, Atom]]) -> Batch:
        """A :class:`Batch` of syslets to run together, again and again."""
        return Batch(self, chains)

    def reap(self) -> List[Atom]:
        """Takes every published final atom out of the ring (oldest first,
        at most :attr:`ring_slots`) and returns them as a list of
        :class:`Atom`: the one built here at that address, or a plain view
        (:meth:`atom_or_wrap`) of an atom built elsewhere.  Entries that end
        an :meth:`exec_async` call resolve it instead; entries an event loop
        took out of the ring for no call come first."""
        out, self._unclaimed = self._unclaimed, []
        self._reap_into(out)
        return out

    def _reap_raw(self) -> List[int]:
        """The ring's entries as addresses, taken out of the ring."""
        out: List[int] = []
        n = self.ring_slots
        while len(out) < n:
            # Up to 512 slots from the consumer index on, read at once; the
            # leading non-NULL ones are taken, then NULLed with one store (a
            # slot is written by the engine only while NULL).
            start = self._consumer
            want = min(n - start, 512)
            words = memoryview(_core.peek(self.ring_addr + 8 * start, 8 * want)).cast("Q").tolist()
            try:
                k = words.index(0)
            except ValueError:
                k = want
            if not k:
                break
            _core.poke(self.ring_addr + 8 * start, bytes(8 * k))
            out.extend(words[:k])
            self._consumer = (start + k) % n
            if k < want:
                break       # stopped at a NULL slot
        return out

    def _reap_into(self, out: Optional[List[Atom]]) -> int:
        """Empties the eventfd (once :meth:`fileno` made one), then the
        ring: entries that end an exec_async call resolve it, the others go
        to ``out`` (None: kept for the next reap()).  Returns the number of
        entries taken out of the ring."""
        if self._efd is not None and isinstance(self.engine, _core.Engine):
            self.engine.event_clear()
        raw = self._reap_raw()
        n = len(raw)
        st = self._aio
        if st is not None and st.pending:
            raw = st.dispatch(raw)
        if raw:
            get, wrap = self._atoms.get, self.atom_or_wrap
            (self._unclaimed if out is None else out).extend(get(v) or wrap(v) for v in raw)
        return n

    def fileno(self) -> int:
        """A file descriptor (an eventfd) that becomes readable when the
        engine has published ring entries, for any event loop to watch: when
        it is readable, call :meth:`reap` (which empties it first, so an
        entry published during the reap makes it readable again).  It is
        readable when first made, so entries published before are reaped
        too.  It belongs to the context: do not close it (the engine would
        stop using it; the next call makes another).  The ``reference``
        executor never publishes and has none (``io.UnsupportedOperation``).
        OSError(EBADF) once closed."""
        if not isinstance(self.engine, _core.Engine):
            raise io.UnsupportedOperation("the reference executor publishes nothing")
        self._efd = self.engine.fileno()
        return self._efd

    def exec_async(self, chain: Union[Chain, Atom]) -> "Coroutine[Any, Any, Atom]":
        """Runs a chain (or an :class:`Atom`) built by this Context like
        :meth:`exec`; awaiting the call returns its final :class:`Atom`,
        whether the syslet completed at once or went async (then the event
        loop watches :meth:`fileno` and the call ends when the final atom is
        reaped from the ring).  The loop never blocks: the calls made in one
        turn of the loop start together, with one :meth:`Engine.exec_batch`,
        and chains that make their caller wait (``SYSLET_SYNC`` on any atom,
        ``max_threads=0``, the ``reference`` executor) run in the loop's
        default executor.  Cancelling the call before its turn started it
        means it never runs; after, the syslet runs on, its entry is dropped
        when reaped, and until then its atoms stay claimed (running one of
        them again raises RuntimeError).  Awaiting it raises what
        :meth:`exec` raises, and ValueError for a chain with
        ``SYSLET_NO_COMPLETE`` (no entry would end the call).

        Called with an event loop running, it returns a future that is also
        a coroutine object (no task per call: ``asyncio.gather`` and
        ``ensure_future`` take it as it is, ``create_task`` wraps it);
        without one, a coroutine that starts the chain once awaited in a
        loop.  See :doc:`asyncio`."""
        global _running_loop
        running = _running_loop
        if running is None:     # asyncio is imported on first use only
            from asyncio import get_running_loop
            running = _running_loop = get_running_loop
        try:
            loop = running()
        except RuntimeError:
            return self._exec_async_later(chain)
        st = self._aio
        if st is None:
            from ._aio import Completions
            st = self._aio = Completions(self)
        try:
            fut = st.start(chain, loop)
        except Exception as e:      # raised by the await, as by a coroutine
            from ._aio import Call
            fut = Call(loop=loop)
            fut.set_exception(e)
        return cast("Coroutine[Any, Any, Atom]", fut)     # it is one (Call)

    async def _exec_async_later(self, chain: Union[Chain, Atom]) -> Atom:
        """exec_async called with no loop running: a coroutine."""
        return await self.exec_async(chain)

    def wait(self, min_events: int = 1, timeout: Optional[float] = None) -> List[Atom]:
        """Waits for ``min_events`` ring entries, then reaps them all.
        Returns the list of final atoms (possibly empty after ``timeout``
        seconds; None or ``inf``: no limit).  ValueError when ``min_events``
        is negative or more than :attr:`ring_slots` (the ring could never
        hold them), or ``timeout`` is negative or NaN."""
        min_events = _int(min_events, "min_events")
        if not 0 <= min_events <= self.ring_slots:
            raise ValueError(f"min_events must be between 0 and the ring's {self.ring_slots} "
                             f"slots, not {min_events}")
        if timeout is not None:
            if not isinstance(timeout, numbers.Real):
                raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
            timeout = float(timeout)
            if math.isnan(timeout) or timeout < 0:
                raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout}")
            if math.isinf(timeout):
                timeout = None
        # entries an event loop took out of the ring for no call count
        if min_events > len(self._unclaimed):
            self.engine.wait(min_events - len(self._unclaimed), timeout)
        return self.reap()

    def counters(self) -> Dict[str, int]:
        """The engine's counters (a dict)."""
        return self.engine.counters()

    def close(self, cancel: bool = True) -> None:
        """Unregisters (draining in-flight syslets) and closes the engine.
        With ``cancel`` (the default, as for :meth:`Engine.close`) running
        syslets first stop before their next atom (-ECANCELED through its
        ret_ptr; an atom already running completes), so a runaway loop cannot
        keep close() waiting; ``cancel=False`` lets every syslet run to its
        end.  Idempotent."""
        if self._registered:
            self._registered = False
            if cancel and isinstance(self.engine, _core.Engine):
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
        st = self._aio
        if st is not None:      # exec_async calls in flight end now
            if st.pending and isinstance(self.engine, _core.Engine):
                try:    # what the drain published resolves them
                    self._reap_into(None)
                except OSError:
                    pass
            st.abandon()
            self._aio = None
        self._efd = None
        self.engine.close()

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
