"""The reference interpreter: the specifications (docs/spec.md) executed
literally, strictly sequentially, with plain system calls in the calling
thread.

It is the oracle the engines are tested against, for every personality:

* v1 (section 2 of the spec): :meth:`Reference.register`, :meth:`~Reference.exec`,
  :meth:`~Reference.wait`, :meth:`~Reference.unregister`;
* v5 and v6 (the later personalities' sections): :meth:`~Reference.exec_head`,
  :meth:`~Reference.wait_head`, :meth:`~Reference.async_thread`, with the
  88-byte (v5) or 80-byte (v6) atoms and each kernel's own numbers inside
  atoms;
* v7 (indirect): :meth:`~Reference.indirect` and
  :meth:`~Reference.ring_wait`.

It never goes async, so it never publishes ring entries (a syslet that
completes without blocking publishes nothing; an ``indirect`` call that
completes returns its result and writes no ring entry).

An oracle is stronger when it shares no code with what it checks: every
number, layout and rule below is restated here from the specifications (not
imported from the engine's modules); the only shared code is the guarded
memory accessors ``_core.peek`` and ``_core.poke``, so that wild pointers
give EFAULT, never a crash.
"""
import ctypes
import errno
import os
import time
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from . import _core

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 7

_M64 = 0xFFFFFFFFFFFFFFFF
_M32 = 0xFFFFFFFF

# ---- the specifications' numbers ---------------------------------------------

# Flags (SYSLET_SPEC.md section 1; the same values in every atom ABI).
ASYNC, SYNC, NO_COMPLETE = 0x01, 0x02, 0x04
STOP_ON_NONZERO, STOP_ON_ZERO, STOP_ON_NEGATIVE, STOP_ON_NON_POSITIVE = 0x08, 0x10, 0x20, 0x40
SKIP_TO_NEXT_ON_STOP = 0x80
FLAGS_ALL = 0xFF

#: Calls an atom may not make (SYSLET_SPEC.md 2.3): rt_sigreturn, clone,
#: fork, vfork, execve, exit, exit_group, execveat, clone3.
REFUSED_CALLS = frozenset({15, 56, 57, 58, 59, 60, 231, 322, 435})
#: The project's own range (LATER_ABIS.md 1): never reaches the kernel.
OWN_RANGE = range(1000, 1040)
#: umem_add of v1, v5, v6 (the project's numbers): add in every atom personality.
OWN_UMEM = frozenset({1004, 1012, 1022})
#: The kernel keeps only the low 32 bits of a number (bit 30 selects x32):
#: from here on a number would alias another call, so it is unknown (-ENOSYS).
NR_LIMIT = 0x40000000

ESYSLETPENDING = 132

O_CLOEXEC = 0o2000000
O_NONBLOCK = 0o4000


class Personality:
    """One atom ABI: the atom's layout and the numbers its kernel spoke."""

    def __init__(self, name: str, atom_size: int, narrow: bool, args_off: int,
                 umem: FrozenSet[int], refused: FrozenSet[int]) -> None:
        self.name = name
        self.atom_size = atom_size      # what SKIP_TO_NEXT_ON_STOP adds
        self.narrow = narrow            # flags and nr are u32 (v6), else native words
        self.args_off = args_off        # offset of arg_ptr[0]
        self.umem = OWN_UMEM | umem     # numbers that run umem_add
        self.refused = REFUSED_CALLS | (frozenset(OWN_RANGE) - self.umem) | refused

    def read_atom(self, u: int) -> Tuple[int, int, int, int, List[int]]:
        """(flags, nr, ret_ptr, next, arg_ptrs): the header and arg_ptr[]
        up to its first NULL (tightly packed atoms end there; ``private`` is
        never read).  OSError(EFAULT) when any of that is unreadable."""
        if self.narrow:
            w0 = _u64(u)
            flags, nr = w0 & _M32, w0 >> 32
            ret, nxt = _u64(u + 8), _u64(u + 16)
        else:
            flags, nr, ret, nxt = (_u64(u + 8 * i) for i in range(4))
        ptrs = []
        for i in range(6):
            p = _u64(u + self.args_off + 8 * i)
            if not p:
                break
            ptrs.append(p)
        return flags, nr, ret, nxt, ptrs


#: v1 and v5: 88-byte native atoms (flags @0, nr @8, ret_ptr @16, next @24,
#: arg_ptr[6] @32, private @80).  v5 speaks 282 = umem_add and refuses its
#: other 2007 numbers 280, 281, 283.  v6: 80 bytes (flags u32 @0, nr u32 @4,
#: ret_ptr @8, next @16, arg_ptr[6] @24, private @72); 288 = umem_add, 286,
#: 287, 289 refused.
PERSONALITIES = {
    1: Personality("v1", 88, False, 32, frozenset(), frozenset()),
    5: Personality("v5", 88, False, 32, frozenset({282}), frozenset({280, 281, 283})),
    6: Personality("v6", 80, True, 24, frozenset({288}), frozenset({286, 287, 289})),
}

#: v7 plain indirect calls (LATER_ABIS.md 4.3): the number, and how file_flags
#: (O_CLOEXEC, O_NONBLOCK: the same bits as SOCK_/EFD_/SFD_/TFD_CLOEXEC and
#: NONBLOCK) reach the call's modern flags argument: (number to run, index of
#: the flags argument, whether it replaces (True) or is or-ed into it).
PLAIN_CALLS = {
    43: (288, 3, True),         # accept -> accept4(fd, addr, len, flags)
    288: (288, 3, False),       # accept4
    41: (41, 1, False),         # socket(domain, type | flags, proto)
    53: (53, 1, False),         # socketpair(domain, type | flags, proto, sv)
    284: (290, 1, True),        # eventfd -> eventfd2(count, flags)
    290: (290, 1, False),       # eventfd2
    282: (289, 3, True),        # signalfd -> signalfd4(fd, mask, size, flags)
    289: (289, 3, False),       # signalfd4
    283: (283, 1, False),       # timerfd_create(clockid, flags)
}

_ENV_ABI = {"v1": 1, "v5": 5, "v6": 6, "v7": 7}


# ---- memory and system calls ---------------------------------------------------

def _signed(v: int) -> int:
    v &= _M64
    return v - (1 << 64) if v & (1 << 63) else v


def _sext32(v: int) -> int:
    v &= _M32
    return v - (1 << 32) if v & (1 << 31) else v


def _u64(addr: int) -> int:
    return int.from_bytes(_core.peek(addr & _M64, 8), "little")


def _u32(addr: int) -> int:
    return int.from_bytes(_core.peek(addr & _M64, 4), "little")


def _store(addr: int, value: int) -> None:
    _core.poke(addr & _M64, (value & _M64).to_bytes(8, "little"))


def _efault(what: str) -> OSError:
    return OSError(errno.EFAULT, os.strerror(errno.EFAULT), what)


def _einval(what: str) -> OSError:
    return OSError(errno.EINVAL, os.strerror(errno.EINVAL), what)


def raw_syscall(nr: int, args: Sequence[int]) -> int:
    """syscall(nr, *args) with the raw kernel convention (-errno on failure)."""
    cargs = [ctypes.c_long(_signed(a)) for a in args]
    r: int = _syscall(ctypes.c_long(_signed(nr)), *cargs)
    if r == -1:
        e = ctypes.get_errno()
        if e:
            return -e
    return r


def umem_add(addr: int, inc: int) -> int:
    """umem_add done literally: read, add, write back (the reference is
    sequential).  The new value, or -EFAULT when the word is not readable
    and writable (nothing changes then)."""
    try:
        v = (_u64(addr) + inc) & _M64
        _store(addr, v)
    except OSError:
        return -errno.EFAULT
    return _signed(v)


def stop_holds(flags: int, r: int) -> bool:
    """The stop test of SYSLET_SPEC.md 2.5 (any set STOP bit)."""
    return bool((flags & STOP_ON_NONZERO and r != 0)
                or (flags & STOP_ON_ZERO and r == 0)
                or (flags & STOP_ON_NEGATIVE and r < 0)
                or (flags & STOP_ON_NON_POSITIVE and r <= 0))


def _env_abi() -> int:
    """The personality SYSLET_COMPAT_ABI names (1, 5, 6, 7), 0 when unset or
    not one of those."""
    return _ENV_ABI.get(os.environ.get("SYSLET_COMPAT_ABI", ""), 0)


def _poll(pred: Callable[[], bool], timeout: Optional[float]) -> bool:
    """Polls ``pred`` (which may raise) until it holds or ``timeout`` seconds
    passed (None: no limit): the reference never publishes, so only another
    thread writing the ring memory can make a wait end."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if pred():
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.001)


class Reference:
    """A syslet context that runs every syslet synchronously, atom by atom,
    and every ``indirect`` call in the caller.

    ``env_abi``: the personality of SYSLET_COMPAT_ABI (under 7, ``indirect``
    refuses 286 and 287 as well); None reads the environment."""

    backend = "reference"
    #: the memory of the Context whose syslets it runs (compat._builder)
    _builder_memory: Any = None

    def __init__(self, env_abi: Optional[int] = None) -> None:
        self._head: Optional[Tuple[int, int]] = None
        self.budget = 0
        self.env_abi = _env_abi() if env_abi is None else env_abi
        self._counters = dict.fromkeys(_core.COUNTERS, 0)

    # ---- v1: a registered head -----------------------------------------------
    def register(self, ring_addr: int, ring_bytes: int, max_threads: int = -1) -> int:
        """As :meth:`Engine.register` (``max_threads`` is accepted and ignored)."""
        if ring_bytes == 0 or ring_bytes % 8 or ring_addr % 8:
            raise _einval("ring_size_bytes must be a positive multiple of 8")
        if self._head is not None:
            raise OSError(errno.EBUSY, "a head is already registered")
        try:        # every page of the ring must be readable and writable
            a = ring_addr
            while a < ring_addr + ring_bytes:
                _store(a, _u64(a))
                a = (a | 4095) + 1
        except OSError:
            raise _efault("ring memory unusable") from None
        self._head = (ring_addr, ring_bytes)
        return 0

    def unregister(self, ring_addr: int, ring_bytes: int, timeout: Optional[float] = None) -> int:
        """As :meth:`Engine.unregister`; nothing is ever in flight."""
        if self._head != (ring_addr, ring_bytes):
            raise _einval("no such head")
        self._head = None
        return 0

    def wait(self, min_events: int, timeout: Optional[float] = None) -> bool:
        """True when ``min_events`` entries are in the ring already, else False
        at once: nothing is ever published, so waiting could not help."""
        if self._head is None:
            raise _einval("no head registered")
        return self.ring_count() >= min_events

    def ring_count(self) -> int:
        """Unconsumed (non-NULL) ring slots."""
        if self._head is None:
            raise _einval("no head registered")
        addr, size = self._head
        return sum(1 for i in range(size // 8) if _u64(addr + 8 * i))

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
        """v1 async_exec: runs the syslet to its end in the calling thread;
        returns the final atom's address.  OSError as :meth:`Engine.exec`
        (EINVAL without a registered head, then as :meth:`_exec_atoms`)."""
        if self._head is None:
            raise _einval("no head registered")
        return self._exec_atoms(PERSONALITIES[1], atom_addr)

    # ---- v5, v6: a head per call ---------------------------------------------
    @staticmethod
    def _read_ahu(ahu_addr: int) -> List[int]:
        """The eight words of a v5/v6 async_head_user; EFAULT when
        unreadable, EINVAL without a usable ring (completion_ring NULL,
        ring_size_bytes not a positive multiple of 8)."""
        try:
            h = [_u64(ahu_addr + 8 * i) for i in range(8)]
        except OSError:
            raise _efault("async_head_user unreadable") from None
        if not h[2] or not h[3] or h[3] % 8:
            raise _einval("no usable completion ring")
        return h

    def exec_head(self, abi: int, atom_addr: int, ahu_addr: int) -> int:
        """v5/v6 async_exec(atom, ahu) (LATER_ABIS.md 2): in this order
        EFAULT (head unreadable), EINVAL (completion_ring NULL,
        ring_size_bytes not a positive multiple of 8), EINVAL
        (new_thread_stack 0), then v1's rules (EFAULT first atom, EINVAL
        ASYNC with SYNC or unknown flag bits).  Returns the final atom."""
        if abi not in (5, 6):
            raise _einval("personality must be 5 or 6")
        h = self._read_ahu(ahu_addr)
        if not h[6]:
            raise _einval("new_thread_stack is 0")
        return self._exec_atoms(PERSONALITIES[abi], atom_addr)

    def wait_head(self, abi: int, min_events: int, user_ring_idx: int, ahu_addr: int,
                  timeout: Optional[float] = None) -> bool:
        """v5/v6 async_wait: EFAULT (head unreadable), EINVAL (no usable
        ring, ``user_ring_idx`` >= slots, ``min_events`` > slots); then True
        once ``min_events`` consecutive non-NULL slots start at
        ``user_ring_idx`` (at once for 0), False after ``timeout`` seconds."""
        if abi not in (5, 6):
            raise _einval("personality must be 5 or 6")
        h = self._read_ahu(ahu_addr)
        n = h[3] // 8
        if user_ring_idx >= n or min_events > n:
            raise _einval("user_ring_idx or min_events beyond the ring")
        if min_events == 0:
            return True

        def full() -> bool:
            h = self._read_ahu(ahu_addr)
            n = h[3] // 8
            return all(_u64(h[2] + 8 * ((user_ring_idx + k) % n)) for k in range(min_events))
        return _poll(full, timeout)

    def async_thread(self, event_addr: int, ahu_addr: int) -> None:
        """v5/v6 async_thread: EFAULT for an unreadable head; otherwise the
        caller parks until a signal handler runs, then EINTR (Python's
        ``signal.pause``: main thread only)."""
        try:
            for i in range(8):
                _u64(ahu_addr + 8 * i)
        except OSError:
            raise _efault("async_head_user unreadable") from None
        import signal
        signal.pause()
        raise OSError(errno.EINTR, os.strerror(errno.EINTR), "async_thread")

    # ---- v7: indirect ---------------------------------------------------------
    def indirect(self, regs_addr: int, params_addr: int, paramslen: int, flags: int) -> int:
        """v7 indirect (LATER_ABIS.md 4), steps 1-3 in order.  Returns the
        call's result as a 32-bit int sign-extended; raises OSError(errno)
        for -4095..-1 and for the validation errors.  Never ESYSLETPENDING:
        the reference runs the call to its end."""
        # 1.
        if flags:
            raise _einval("flags must be 0")
        try:
            regs = [_u64(regs_addr + 8 * i) for i in range(7)]
        except OSError:
            raise _efault("indirect_registers unreadable") from None
        if paramslen > 32:
            raise _einval("paramslen > 32")
        try:
            raw = _core.peek(params_addr & _M64, paramslen) if paramslen else b""
        except OSError:
            raise _efault("indirect_params unreadable") from None
        raw = raw + bytes(32 - len(raw))
        p = [int.from_bytes(raw[8 * i:8 * i + 8], "little") for i in range(4)]
        nr, args = regs[0], regs[1:]
        # 3. a plain call
        if paramslen < 8 or not p[0]:
            file_flags = p[0] & _M32
            if file_flags & ~(O_CLOEXEC | O_NONBLOCK) or nr not in PLAIN_CALLS:
                raise _einval("not a plain indirect call")
            run, k, replace = PLAIN_CALLS[nr]
            args = list(args)
            args[k] = file_flags if replace else args[k] | file_flags
            return self._indirect_result(raw_syscall(run, args))
        # 2. a syslet submission
        if not p[2] or not p[3]:
            raise _einval("frame.ip or frame.sp is 0")
        try:
            elements = _u32(p[0] + 8)
        except OSError:
            raise _efault("syslet_ring unreadable") from None
        if not elements or elements & (elements - 1):
            raise _einval("elements is not a power of two")
        refused = REFUSED_CALLS | frozenset(OWN_RANGE)
        if self.env_abi == 7:
            refused |= frozenset({286, 287})
        if nr in refused:
            r = -errno.EINVAL
        elif nr >= NR_LIMIT:
            r = -errno.ENOSYS
        else:
            r = raw_syscall(nr, args)
        self._counters["syslets_sync"] += 1
        return self._indirect_result(r)

    @staticmethod
    def _indirect_result(r: int) -> int:
        r = _sext32(r)
        if -4095 <= r < 0:
            raise OSError(-r, os.strerror(-r), "indirect")
        return r

    def ring_wait(self, ring_addr: int, idx: int, timeout: Optional[float] = None) -> bool:
        """v7 syslet_ring_wait: EFAULT for an unreadable ring header; True
        at once when ``kernel_head`` differs from ``idx`` (32 bits), else
        once it changes, False after ``timeout`` seconds."""
        def changed() -> bool:
            try:
                _core.peek(ring_addr & _M64, 16)
                return _u32(ring_addr) != idx & _M32
            except OSError:
                raise _efault("syslet_ring unreadable") from None
        return _poll(changed, timeout)

    # ---- the syslet algorithm (SYSLET_SPEC.md 2) -------------------------------
    def _exec_atoms(self, pers: Personality, atom_addr: int) -> int:
        """The first atom must be readable (EFAULT: nothing runs); ASYNC with
        SYNC or unknown flag bits on it: EINVAL.  Then runs the syslet and
        returns its final atom."""
        try:
            flags = pers.read_atom(atom_addr)[0]
        except OSError:
            raise _efault("first atom unreadable") from None
        if flags & ASYNC and flags & SYNC:
            raise _einval("SYSLET_ASYNC and SYSLET_SYNC together")
        if flags & ~FLAGS_ALL:
            raise _einval("unknown flag bits on the first atom")
        self._counters["syslets_sync"] += 1
        return self.run(atom_addr, pers)

    def run(self, u: int, pers: Optional[Personality] = None) -> int:
        """Runs the syslet at ``u`` with personality ``pers``'s atoms; returns
        the final atom's address."""
        if pers is None:
            pers = PERSONALITIES[1]
        final = 0
        executed = 0
        while u:
            # 1. read the atom
            try:
                flags, nr, ret_ptr, nxt, arg_ptrs = pers.read_atom(u)
            except OSError:
                break                       # unreadable: last executed is final
            # 7. the atom budget: this atom is not run, -ELOOP, it is final
            if self.budget and executed >= self.budget:
                if ret_ptr:
                    try:
                        _store(ret_ptr, -errno.ELOOP)
                    except OSError:
                        pass
                return u
            # 2. read the argument words now
            args = [0] * 6
            r: Optional[int] = None
            for i, p in enumerate(arg_ptrs):
                try:
                    args[i] = _u64(p)
                except OSError:
                    r = -errno.EFAULT
                    break
            # 3. execute
            if r is None:
                if flags & ~FLAGS_ALL:
                    r = -errno.EINVAL
                elif nr in pers.umem:
                    r = umem_add(args[0], args[1])
                elif nr in pers.refused:
                    r = -errno.EINVAL
                elif nr >= NR_LIMIT:
                    r = -errno.ENOSYS
                else:
                    r = raw_syscall(nr, args)
                self._counters["atoms_inline"] += 1
            executed += 1
            final = u
            # 4. store before testing
            if ret_ptr:
                try:
                    _store(ret_ptr, r)
                except OSError:
                    break
            # 5./6. stop test and successor
            if stop_holds(flags, r):
                if flags & SKIP_TO_NEXT_ON_STOP:
                    u = (u + pers.atom_size) & _M64
                    continue
                break
            u = nxt
        if not final:
            raise _efault("first atom unreadable")
        return final

    def close(self, cancel: bool = True) -> None:
        """Forgets the head.  Idempotent."""
        self._head = None

    def __enter__(self) -> "Reference":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
