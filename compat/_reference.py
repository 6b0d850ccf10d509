"""The reference interpreter: docs/spec.md section 2 executed literally,
strictly sequentially, with plain system calls in the calling thread.

It is the oracle the engines are tested against.  It never goes async, so it
never publishes ring entries (spec section 3: a syslet that completes without
blocking publishes nothing).  User memory is read and written only through the
guarded accessors, so wild pointers give EFAULT, never a crash.
"""
import ctypes
import errno
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _core
from ._abi import (ATOM_SIZE, REFUSED, SYSLET_ASYNC, SYSLET_FLAGS_ALL, SYSLET_SKIP_TO_NEXT_ON_STOP,
                   SYSLET_STOP_ON_NEGATIVE, SYSLET_STOP_ON_NON_POSITIVE, SYSLET_STOP_ON_NONZERO,
                   SYSLET_STOP_ON_ZERO, SYSLET_SYNC)
from ._abi import UMEM_NUMBERS

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 7

_M64 = 0xFFFFFFFFFFFFFFFF


def _signed(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v


def _word(addr: int) -> int:
    return _core.peek_word(addr) & _M64


def raw_syscall(nr: int, args: Sequence[int]) -> int:
    """syscall(nr, *args) with the raw kernel convention (-errno on failure)."""
    cargs = [ctypes.c_long(_signed(a & _M64)) for a in args]
    r: int = _syscall(ctypes.c_long(_signed(nr & _M64)), *cargs)
    if r == -1:
        e = ctypes.get_errno()
        if e:
            return -e
    return r


def stop_holds(flags: int, r: int) -> bool:
    """The stop test of spec section 2 step 5 (any set STOP bit)."""
    return bool((flags & SYSLET_STOP_ON_NONZERO and r != 0)
                or (flags & SYSLET_STOP_ON_ZERO and r == 0)
                or (flags & SYSLET_STOP_ON_NEGATIVE and r < 0)
                or (flags & SYSLET_STOP_ON_NON_POSITIVE and r <= 0))


class Reference:
    """A syslet context that runs every syslet synchronously, atom by atom."""

    backend = "reference"
    #: the memory of the Context whose syslets it runs (compat._builder)
    _builder_memory: Any = None

    def __init__(self) -> None:
        self._head: Optional[Tuple[int, int]] = None
        self.budget = 0
        self._counters = dict.fromkeys(_core.COUNTERS, 0)

    def register(self, ring_addr: int, ring_bytes: int, max_threads: int = -1) -> int:
        """As :meth:`Engine.register` (``max_threads`` is accepted and ignored)."""
        if ring_bytes == 0 or ring_bytes % 8 or ring_addr % 8:
            raise OSError(errno.EINVAL, "ring_size_bytes must be a positive multiple of 8")
        if self._head is not None:
            raise OSError(errno.EBUSY, "a head is already registered")
        try:        # every page of the ring must be readable and writable
            a = ring_addr
            while a < ring_addr + ring_bytes:
                _core.umem_add(a, 0)
                a = (a | 4095) + 1
        except OSError:
            raise OSError(errno.EFAULT, "ring memory unusable") from None
        self._head = (ring_addr, ring_bytes)
        return 0

    def unregister(self, ring_addr: int, ring_bytes: int, timeout: Optional[float] = None) -> int:
        """As :meth:`Engine.unregister`; nothing is ever in flight."""
        if self._head != (ring_addr, ring_bytes):
            raise OSError(errno.EINVAL, "no such head")
        self._head = None
        return 0

    def wait(self, min_events: int, timeout: Optional[float] = None) -> bool:
        """True when ``min_events`` entries are in the ring already, else False
        at once: nothing is ever published, so waiting could not help."""
        if self._head is None:
            raise OSError(errno.EINVAL, "no head registered")
        return self.ring_count() >= min_events

    def ring_count(self) -> int:
        """Unconsumed (non-NULL) ring slots."""
        if self._head is None:
            raise OSError(errno.EINVAL, "no head registered")
        addr, size = self._head
        return sum(1 for i in range(size // 8) if _word(addr + 8 * i))

    def counters(self) -> Dict[str, int]:
        """A dict like :meth:`Engine.counters`; only ``syslets_sync`` and
        ``atoms_inline`` move."""
        return dict(self._counters)

    def exec_batch(self, atoms: Sequence[int]) -> List[int]:
        """One :meth:`exec` per address; the final atom or ``-errno`` each."""
        out: List[int] = []
        for a in atoms:
            try:
                out.append(self.exec(a))
            except OSError as e:
                out.append(-(e.errno or errno.EIO))
        return out

    def batch_runner(self, atom_addrs: Sequence[int]) -> Callable[[], Any]:
        """:meth:`exec_batch` over these syslets, shaped like
        ``Engine.batch_runner``: the callable returns a reused cffi
        ``int64_t[]`` of results."""
        addrs = list(atom_addrs)
        res = _core.ffi.new("int64_t[]", len(addrs))

        def run_batch() -> Any:
            res[0:len(addrs)] = self.exec_batch(addrs)
            return res
        return run_batch

    def exec(self, atom_addr: int) -> int:
        """Runs the syslet to its end in the calling thread; returns the final
        atom's address.  OSError as :meth:`Engine.exec`."""
        if self._head is None:
            raise OSError(errno.EINVAL, "no head registered")
        try:
            flags = _word(atom_addr)
        except OSError:
            raise OSError(errno.EFAULT, "first atom unreadable") from None
        if flags & SYSLET_ASYNC and flags & SYSLET_SYNC:
            raise OSError(errno.EINVAL, "SYSLET_ASYNC and SYSLET_SYNC together")
        if flags & ~SYSLET_FLAGS_ALL:
            raise OSError(errno.EINVAL, "unknown flag bits on the first atom")
        self._counters["syslets_sync"] += 1
        final = self.run(atom_addr)
        return final

    def run(self, u: int) -> int:
        """Runs the syslet at ``u``; returns the final atom's address."""
        final = 0
        executed = 0
        while u:
            # 1. read the atom
            # (the header and arg_ptr[] up to its first NULL: tightly packed
            # atoms end there, spec 4.1; private is never read)
            try:
                words = [_word(u + 8 * i) for i in range(4)]
                for i in range(6):
                    words.append(_word(u + 32 + 8 * i))
                    if not words[-1]:
                        break
            except OSError:
                break                       # unreadable: last executed is final
            words += [0] * (10 - len(words))
            flags, nr, ret_ptr, nxt = words[0:4]
            arg_ptrs = words[4:10]
            if self.budget and executed >= self.budget:
                if ret_ptr:
                    try:
                        _core.poke(ret_ptr, (-errno.ELOOP & _M64).to_bytes(8, "little"))
                    except OSError:
                        pass
                return u
            # 2. read the argument words now
            args = [0] * 6
            r: Optional[int] = None
            for i, p in enumerate(arg_ptrs):
                if not p:
                    break
                try:
                    args[i] = _word(p)
                except OSError:
                    r = -errno.EFAULT
                    break
            # 3. execute
            if r is None:
                if flags & ~SYSLET_FLAGS_ALL:
                    r = -errno.EINVAL
                elif nr in UMEM_NUMBERS:
                    try:
                        r = _signed(_core.umem_add(args[0], args[1]))
                    except OSError:
                        r = -errno.EFAULT
                elif nr in REFUSED:
                    r = -errno.EINVAL
                elif nr >= 0x40000000:
                    # the kernel keeps only the low 32 bits (bit 30: x32):
                    # such a number would alias another call; the 2007
                    # kernel compared the whole word, so it is unknown
                    r = -errno.ENOSYS
                else:
                    r = raw_syscall(nr, args)
                self._counters["atoms_inline"] += 1
            executed += 1
            final = u
            # 4. store before testing
            if ret_ptr:
                try:
                    _core.poke(ret_ptr, (r & _M64).to_bytes(8, "little"))
                except OSError:
                    break
            # 5./6. stop test and successor
            if stop_holds(flags, r):
                if flags & SYSLET_SKIP_TO_NEXT_ON_STOP:
                    u = (u + ATOM_SIZE) & _M64
                    continue
                break
            u = nxt
        if not final:
            raise OSError(errno.EFAULT, "first atom unreadable")
        return final

    def close(self, cancel: bool = True) -> None:
        """Forgets the head.  Idempotent."""
        self._head = None

    def __enter__(self) -> "Reference":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
