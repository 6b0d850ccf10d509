"""Differential property tests: random syslet programs, three executors.

Every generated program runs on the reference interpreter (the oracle), the C
engine on io_uring and the C engine with the pool only, each on a fresh
context and in a fresh scratch directory holding identical files, and must
leave identical state: every result word, every buffer, the atoms themselves
(flags and next, which programs may rewrite), the files on disk, the final
atom (by index within the program), position and flags of every fd left open,
and the completion ring entries (a multiset of atom indices).

Programs are drawn from a menu of safe calls on scratch files (read, pread64,
write, pwrite64, lseek, openat, close, fstat, dup, getpid, umem_add) with
random stop flags, SKIP_TO_NEXT_ON_STOP, SYNC/ASYNC/NO_COMPLETE, forward
branches and loops (a ``umem_add(&k, -1)`` latch with STOP_ON_NON_POSITIVE,
or an unguarded back edge).  The same atom budget is set on every executor, so
every loop ends (-ELOOP in the atom that would run next).  Arguments flow
through memory: fds from ``openat``/``dup`` results, counts and offsets from
read results or from bytes read straight into a count cell (the "live
argument" case that makes the engine split a segment), words written to files
from result cells, a path buffer rewritten between opens, atoms whose flags,
next pointer or result cell are rewritten by earlier atoms, and injected bad
argument / result / next pointers.  Patterns aimed at the io_uring translation
are generated on purpose: read -> write(count = read's result), and a short
read with STOP_ON_NEGATIVE/ZERO in the middle of a linked segment (io_uring's
IO_LINK severs it: an over-stop the engine must resume).

Memory safety of the generated programs is by construction: fds are only ever
produced by the program itself or the harness (fd cells are written by nothing
else), counts are bounded far below the 64 KiB buffers, at most one byte is
read into a word cell, paths always stay relative to the scratch directory.

The personality axis (LATER_ABIS.md): single programs run as v1 syslets
(a registered ring), as v5 syslets (the same 88-byte atoms, a head named in
the call, whose ring is filled through its kernel_ring_idx, started at a
random value and sometimes at a slot the program has not consumed yet: the
entry waits for it) and as v6 syslets (the same program laid out in 80-byte
atoms: SKIP_TO_NEXT_ON_STOP and the self-modifying programs' computed jumps
go 80 bytes, a result stored over an atom's first word rewrites its u32
flags and nr).  v7 has its own test below: random sequences of indirect
calls, by value, on every executor.

``SYSLET_PROPS_EXAMPLES`` scales the run (examples of the v1 single-program
test; the exec_many test runs a third as many, v5 and v6 half as many, v7
a quarter).  ``SYSLET_PROPS_SEED`` replaces the
fixed (derandomized) example sequence with a seeded random one;
``SYSLET_PROPS_NO_SHRINK=1`` reports the first failing program unshrunk.  The count of
programs run is printed at the end of the session and written to
``tests/compat_props/.last_count``.
"""
import ctypes
import errno
import fcntl
import os
import random
import shutil
import stat
import struct
import time

import pytest
from hypothesis import HealthCheck, Phase, given, seed as hyp_seed, settings, strategies as st

from compat import _core
from compat._abi import (ATOM_SIZE, SYSLET_ASYNC, SYSLET_NO_COMPLETE, SYSLET_SKIP_TO_NEXT_ON_STOP,
                         SYSLET_STOP_ON_NEGATIVE, SYSLET_STOP_ON_NON_POSITIVE,
                         SYSLET_STOP_ON_NONZERO, SYSLET_STOP_ON_ZERO, SYSLET_SYNC)
from compat._builder import Context
from compat._syscalls import NR

EXAMPLES = int(os.environ.get("SYSLET_PROPS_EXAMPLES", "400"))
BATCH_EXAMPLES = max(1, EXAMPLES // 3)
HEAD_EXAMPLES = max(1, EXAMPLES // 2)          # per personality v5, v6
V7_EXAMPLES = max(1, EXAMPLES // 4)
_SEED = os.environ.get("SYSLET_PROPS_SEED")

BUF = 1 << 16           # data buffers: far larger than any count a program can build
AT_FDCWD = -100
FILES = ("f0", "f1", "f2")          # exist at start (seeded contents)
NEW_FILES = ("n0", "n1")            # do not exist (O_CREAT makes them)
NF, NC, NK = 3, 3, 2                # fd cells, count cells, loop counters
ASYNC_DEADLINE = 20.0
MAX_BATCH = 4
BAD_PTR = 0x10                      # never mapped (below mmap_min_addr)
# Buffer addresses a call must reject: unmapped, straddling the top of user
# space, non-canonical, kernel.  io_uring checks some at submission.
BAD_BUFS = (BAD_PTR, 0x7FFFFFFFF000 - 4, 1 << 47, 0xFFFF800000000000)

STOP_BITS = (SYSLET_STOP_ON_NONZERO, SYSLET_STOP_ON_ZERO, SYSLET_STOP_ON_NEGATIVE,
             SYSLET_STOP_ON_NON_POSITIVE)
OPEN_FLAGS = (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)
EXECUTORS = ("reference", "io_uring", "threadpool")


class Layout:
    """Where an atom personality keeps its fields (offsets in bytes)."""

    def __init__(self, size, ret, nxt, args, narrow):
        self.size, self.ret, self.next, self.args, self.narrow = size, ret, nxt, args, narrow
        self.field = {"flags": 0, "next": nxt}


#: v1 and v5: 88-byte native atoms; v6: 80 bytes, flags and nr u32.
LAYOUTS = {1: Layout(88, 16, 24, 32, False), 5: Layout(88, 16, 24, 32, False),
           6: Layout(80, 8, 16, 24, True)}
FLAG_NAMES = {SYSLET_ASYNC: "ASYNC", SYSLET_SYNC: "SYNC", SYSLET_NO_COMPLETE: "NOCOMP",
              SYSLET_STOP_ON_NONZERO: "NZ", SYSLET_STOP_ON_ZERO: "Z", SYSLET_STOP_ON_NEGATIVE: "NEG",
              SYSLET_STOP_ON_NON_POSITIVE: "NP", SYSLET_SKIP_TO_NEXT_ON_STOP: "SKIP"}


def _settings(n):
    kw = dict(max_examples=n, deadline=None, database=None, print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    if _SEED is None:
        kw["derandomize"] = True
    if os.environ.get("SYSLET_PROPS_NO_SHRINK") == "1":     # report the first failure as found
        kw["phases"] = [Phase.explicit, Phase.generate]
    return settings(**kw)


def _seeded(f):
    return hyp_seed(int(_SEED))(f) if _SEED is not None else f


# ---------------------------------------------------------------------------
# The program model: plain data, laid out anew in every executor's context
# ---------------------------------------------------------------------------
# An argument is ('const', int) | ('var', cell) (passed by pointer: read when
# the atom runs) | ('addr', (name, offset)) (the address of a cell or buffer, a
# constant) | ('atom', (j, field)) (the address of atom j's 'flags' or 'next'
# field in the personality's layout) | ('path', file)
# (the absolute path in the executor's directory) | ('raw', bytes) (copied
# NUL-terminated into the arena; its address).  Cells: F0..F2 fds, C0..C2
# counts/offsets, K0..K1 loop counters, D a directory fd, R<i> atom i's fresh
# result cell.  Buffers: B0, B1 (data), S (struct stat), P (a relative path).

class ASpec:
    __slots__ = ("op", "args", "ret", "flags", "next", "fault")

    def __init__(self, op, args, ret=None, flags=0):
        self.op, self.args, self.ret, self.flags = op, tuple(args), ret, flags
        self.next = "+1"
        self.fault = None       # ('arg', k) | ('ret',) | ('next',): a bad pointer

    def __repr__(self):
        def a(x):
            k, v = x
            if k == "addr":
                return f"&{v[0]}" + (f"+{v[1]}" if v[1] else "")
            if k == "atom":
                return f"&atom{v[0]}.{v[1]}"
            return repr(v) if k in ("path", "raw") else str(v)
        fl = "|".join(n for bit, n in FLAG_NAMES.items() if self.flags & bit)
        ret = "" if self.ret is None else f"{a(self.ret) if isinstance(self.ret, tuple) else self.ret} = "
        fault = f" FAULT{self.fault}" if self.fault else ""
        return f"{ret}{self.op}({', '.join(map(a, self.args))}) [{fl}] -> {self.next}{fault}"


class Program:
    def __init__(self, atoms, files, c_init, k_init, f_init, fd_modes, path0):
        self.atoms = atoms                  # ASpec list; next resolved to an index or None
        self.files = files                  # {name: bytes}
        self.c_init, self.k_init, self.f_init = c_init, k_init, f_init
        self.fd_modes = fd_modes            # exec_many: harness-opened fds [(file, flags)]
        self.path0 = path0                  # initial contents of the path buffer P
        self.budget, self.max_threads, self.ring_slots = 0, -1, 256     # per context
        self.abi = 1
        self.kri, self.prefill = 0, False   # v5/v6: the head's kernel_ring_idx, slot taken

    def __repr__(self):
        lines = [f"Program(abi=v{self.abi}, kri={self.kri}, prefill={self.prefill}, "
                 f"budget={self.budget}, max_threads={self.max_threads}, "
                 f"ring_slots={self.ring_slots}, files={ {k: len(v) for k, v in self.files.items()} }, "
                 f"C={self.c_init}, K={self.k_init}, F={self.f_init}, fd_modes={self.fd_modes}, "
                 f"P={self.path0!r})"]
        lines += [f"  {i:2d}: {a!r}" for i, a in enumerate(self.atoms)]
        return "\n".join(lines)


def _chance(draw, pct):
    """True with probability pct/100; shrinks towards False."""
    return draw(st.integers(0, 99)) >= 100 - pct


@st.composite
def _flags(draw):
    f = 0
    if _chance(draw, 25):
        bits = draw(st.integers(1, 15))
        for i, b in enumerate(STOP_BITS):
            if bits >> i & 1:
                f |= b
        if _chance(draw, 50):
            f |= SYSLET_SKIP_TO_NEXT_ON_STOP
    elif _chance(draw, 5):
        f |= SYSLET_SKIP_TO_NEXT_ON_STOP        # no stop bit: no effect
    if _chance(draw, 8):
        f |= SYSLET_NO_COMPLETE
    if _chance(draw, 5):
        f |= SYSLET_SYNC
    return f


def _fd(draw):
    if _chance(draw, 4):
        return ("const", -1)
    return ("var", f"F{draw(st.integers(0, NF - 1))}")


def _count(draw):
    if _chance(draw, 40):
        return ("var", f"C{draw(st.integers(0, NC - 1))}")
    return ("const", draw(st.sampled_from((0, 1, 3, 8, 17, 64, 100, 255, 256, 400, 1000, 1024))))


def _offset(draw):
    if _chance(draw, 35):
        return ("var", f"C{draw(st.integers(0, NC - 1))}")
    if _chance(draw, 5):
        return ("const", -draw(st.integers(1, 9)))
    return ("const", draw(st.integers(0, 600)))


def _count_ret(draw, i):
    """Result cell of a transfer: a count cell (bounded by the count) or fresh."""
    r = draw(st.integers(0, 9))
    if r < 4:
        return f"C{r % NC}"
    return f"R{i}" if r < 8 else None


def _word_cell(draw, i):
    """A word cell whose 8 bytes a write may send to a file."""
    pool = [f"F{j}" for j in range(NF)] + [f"C{j}" for j in range(NC)] + [f"K{j}" for j in range(NK)]
    pool += [f"R{j}" for j in range(i)]
    return draw(st.sampled_from(pool))


def _open_flags(draw):
    fl = os.O_RDWR if _chance(draw, 50) else draw(st.sampled_from(OPEN_FLAGS))
    for extra, pct in ((os.O_CREAT, 30), (os.O_TRUNC, 15), (os.O_APPEND, 15)):
        if _chance(draw, pct):
            fl |= extra
    return ("const", fl)


@st.composite
def _atom(draw, i, allow_fd_ops):
    ops = ["read", "pread64", "write", "pwrite64"] * 3 + ["lseek", "fstat", "getpid", "umem_add", "close"]
    if allow_fd_ops:
        ops += ["openat", "openat", "dup", "path"]
    op = draw(st.sampled_from(ops))
    flags = draw(_flags())
    fresh = f"R{i}"
    if op == "openat":
        ret = f"F{draw(st.integers(0, NF - 1))}" if _chance(draw, 85) else fresh
        if _chance(draw, 35):       # relative to the directory fd, path from the buffer P
            return ASpec(op, [("var", "D"), ("addr", ("P", 0)), _open_flags(draw), ("const", 0o644)],
                         ret, flags)
        if _chance(draw, 8):        # the empty path: ENOENT (io_uring: at submission)
            return ASpec(op, [("var", "D"), ("raw", b""), _open_flags(draw), ("const", 0o644)], ret, flags)
        name = draw(st.sampled_from(FILES + NEW_FILES))
        return ASpec(op, [("const", AT_FDCWD), ("path", name), _open_flags(draw), ("const", 0o644)],
                     ret, flags)
    if op == "path":
        # Rewrites the name in P: "f0" -> "f1" by adding 256, or a file byte
        # as its second character (the first stays 'f': always relative).
        if _chance(draw, 60):
            return ASpec("umem_add", [("addr", ("P", 0)), ("const", 256 * draw(st.integers(-2, 3)))],
                         fresh if _chance(draw, 50) else None, flags)
        return ASpec("read", [_fd(draw), ("addr", ("P", 1)), ("const", 1)], _count_ret(draw, i), flags)
    if op == "dup":
        ret = f"F{draw(st.integers(0, NF - 1))}" if _chance(draw, 70) else fresh
        return ASpec(op, [_fd(draw)], ret, flags)
    if op == "close":
        return ASpec(op, [_fd(draw)], fresh if _chance(draw, 70) else None, flags)
    if op in ("read", "pread64"):
        if _chance(draw, 25):       # live argument: one byte into a count cell
            buf, cnt = ("addr", (f"C{draw(st.integers(0, NC - 1))}", 0)), ("const", 1)
        elif _chance(draw, 6):
            buf, cnt = ("const", draw(st.sampled_from(BAD_BUFS))), _count(draw)
        else:
            buf, cnt = ("addr", (draw(st.sampled_from(("B0", "B1"))), 0)), _count(draw)
        args = [_fd(draw), buf, cnt] + ([_offset(draw)] if op == "pread64" else [])
        return ASpec(op, args, _count_ret(draw, i), flags)
    if op in ("write", "pwrite64"):
        if _chance(draw, 25):       # a result word, written to the file
            buf, cnt = ("addr", (_word_cell(draw, i), 0)), ("const", 8)
        elif _chance(draw, 6):
            buf, cnt = ("const", draw(st.sampled_from(BAD_BUFS))), _count(draw)
        else:
            buf, cnt = ("addr", (draw(st.sampled_from(("B0", "B1"))), 0)), _count(draw)
        args = [_fd(draw), buf, cnt] + ([_offset(draw)] if op == "pwrite64" else [])
        return ASpec(op, args, _count_ret(draw, i), flags)
    if op == "lseek":
        # Positions can grow without bound: never into a count cell.
        return ASpec(op, [_fd(draw), _offset(draw), ("const", draw(st.integers(0, 2)))],
                     fresh if _chance(draw, 80) else None, flags)
    if op == "fstat":
        return ASpec(op, [_fd(draw), ("addr", ("S", 0))], fresh, flags)
    if op == "getpid":
        return ASpec(op, [], fresh if _chance(draw, 70) else None, flags)
    # umem_add on a loop counter or (bounded increments) a count cell
    if _chance(draw, 50):
        tgt, inc = f"K{draw(st.integers(0, NK - 1))}", draw(st.integers(-2, 2))
    else:
        tgt, inc = f"C{draw(st.integers(0, NC - 1))}", draw(st.integers(-8, 8))
    return ASpec(op, [("addr", (tgt, 0)), ("const", inc)], fresh if _chance(draw, 70) else None, flags)


@st.composite
def programs(draw, allow_fd_ops=True, abi=1):
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    files = {}
    for name in FILES:
        size = draw(st.sampled_from((0, 1, 5, 8, 17, 64, 100, 255, 300, 513)))
        files[name] = rng.randbytes(size)
    c_init = [draw(st.sampled_from((0, 1, 2, 8, 16, 100, 300, -1))) for _ in range(NC)]
    k_init = [draw(st.integers(0, 4)) for _ in range(NK)]
    path0 = draw(st.sampled_from((b"f0", b"f1", b"f2", b"n0", b"n1")))
    atoms = []
    fd_modes = None
    if allow_fd_ops and not _chance(draw, 35):
        f_init = [-1] * NF
        for j in range(draw(st.integers(1, NF))):       # the program opens its own files
            name = draw(st.sampled_from(FILES + NEW_FILES))
            flags = draw(_flags()) if _chance(draw, 30) else 0
            atoms.append(ASpec("openat", [("const", AT_FDCWD), ("path", name), _open_flags(draw),
                                          ("const", 0o644)], f"F{j}", flags))
    else:
        f_init = None       # filled with fds the harness opens, in order
        fd_modes = [(draw(st.sampled_from(FILES)),
                     draw(st.sampled_from((os.O_RDWR, os.O_RDONLY, os.O_WRONLY, os.O_RDWR | os.O_APPEND))))
                    for _ in range(NF)]
    for _ in range(draw(st.integers(1, 14))):
        if _chance(draw, 12):
            # The classic pipeline: n = read(fd, buf, count); write(fd2, buf, n)
            # (the write's count cell is written by the read: a live argument).
            c, b = f"C{draw(st.integers(0, NC - 1))}", draw(st.sampled_from(("B0", "B1")))
            atoms.append(ASpec("read", [_fd(draw), ("addr", (b, 0)), _count(draw)], c, draw(_flags())))
            atoms.append(ASpec("write", [_fd(draw), ("addr", (b, 0)), ("var", c)], c, draw(_flags())))
        elif _chance(draw, 8):
            # Side-by-side reads: pread64s after a write to the same file
            # (they must see it), and a write of their data after them.
            fd = _fd(draw)
            if _chance(draw, 15):
                atoms.append(ASpec("close", [fd], f"R{len(atoms)}", 0))
            else:
                atoms.append(ASpec("write", [fd, ("addr", ("B0", 0)), ("const", draw(st.integers(1, 64)))],
                                   f"R{len(atoms)}", 0))
            for k in range(draw(st.integers(2, 3))):
                atoms.append(ASpec("pread64", [fd, ("addr", ("B1", 2048 * k)), ("const", draw(st.integers(1, 100))),
                                               ("const", draw(st.integers(0, 40)))], f"R{len(atoms)}", 0))
            if _chance(draw, 60):
                atoms.append(ASpec("pwrite64", [_fd(draw), ("addr", ("B1", 0)), ("const", 32), ("const", 0)],
                                   f"R{len(atoms)}", 0))
        elif _chance(draw, 10):
            # Over-stop: a read in the middle of a linked segment whose stop
            # set io_uring's IO_LINK over-approximates (a short read severs
            # the link although STOP_ON_NEGATIVE/ZERO does not hold).
            stop = draw(st.sampled_from((SYSLET_STOP_ON_NEGATIVE, SYSLET_STOP_ON_ZERO,
                                         SYSLET_STOP_ON_NEGATIVE | SYSLET_STOP_ON_ZERO,
                                         SYSLET_STOP_ON_NON_POSITIVE)))
            fd = _fd(draw)
            atoms.append(ASpec("write", [fd, ("addr", ("B0", 0)), ("const", draw(st.integers(1, 64)))],
                               f"R{len(atoms)}", 0))
            rd = draw(st.sampled_from(("read", "pread64")))
            args = [fd, ("addr", ("B1", 0)), ("const", 1024)]
            if rd == "pread64":
                args.append(("const", draw(st.integers(0, 80))))
            atoms.append(ASpec(rd, args, f"R{len(atoms)}", stop))
            atoms.append(ASpec("pwrite64", [_fd(draw), ("addr", ("B1", 0)), ("const", 16), ("const", 0)],
                               f"R{len(atoms)}", 0))
        else:
            atoms.append(draw(_atom(len(atoms), allow_fd_ops)))
    n = len(atoms)                       # index of the sentinel
    nexts = list(range(1, n + 1))
    latches = set()
    for _ in range(draw(st.integers(0, 2))):        # loops
        e = draw(st.integers(0, n - 1))
        lo = draw(st.integers(0, e))
        if _chance(draw, 80):            # guarded: a counter latch that stops
            k = draw(st.integers(0, NK - 1))
            fl = SYSLET_STOP_ON_NON_POSITIVE
            if _chance(draw, 70):
                fl |= SYSLET_SKIP_TO_NEXT_ON_STOP
            atoms[e] = ASpec("umem_add", [("addr", (f"K{k}", 0)), ("const", -1)], f"R{e}", fl)
            latches.add(e)
        nexts[e] = lo
    for _ in range(draw(st.integers(0, 2))):        # forward branches
        i = draw(st.integers(0, n - 1))
        if i + 2 <= n and i not in latches:
            nexts[i] = draw(st.integers(i + 2, n))
    loops = any(nexts[i] <= i for i in range(n))
    shifted = [0] * n
    for _ in range(draw(st.integers(1, 3)) if _chance(draw, 30) else 0):
        # Self-modifying programs: an atom rewrites an atom's flags, next
        # pointer or result pointer, which must be read when that atom runs.
        # Never the sentinel's, so SKIP and next stay inside the program.
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(0, n - 1))
        if i in latches or j in latches or i == j:
            # (i == j: an atom rewriting its own flags makes "the final atom
            # has NO_COMPLETE" depend on when its flags are looked at)
            continue
        what = draw(st.integers(0, 3))
        if what == 0:       # one file byte becomes atom j's flags
            atoms[i] = ASpec("read", [_fd(draw), ("atom", (j, "flags")), ("const", 1)],
                             f"R{i}" if _chance(draw, 50) else None, draw(_flags()))
        elif what == 1:     # flip stop bits by adding (may leave the flag range: EINVAL)
            # (not -8 on v6: a borrow from its u32 flags would change nr to any call)
            inc = draw(st.sampled_from((8, 16, 32, 64, 128, 256) + ((-8,) if abi != 6 else ())))
            atoms[i] = ASpec("umem_add", [("atom", (j, "flags")), ("const", inc)], f"R{i}", draw(_flags()))
        elif what == 2 and atoms[i].op in ("read", "pread64", "write", "pwrite64", "getpid"):
            atoms[i].ret = ("atom", (j, "flags"))   # a result becomes atom j's flags (v6: and nr)
        elif what == 3 and not loops and nexts[j] + shifted[j] < n:
            # next += 88 * k: a computed jump to a later atom (loop-free only,
            # so it happens at most once and stays inside the program).  No
            # result cell: the new value is an address, different per context.
            k = draw(st.integers(1, n - nexts[j] - shifted[j]))
            shifted[j] += k
            atoms[i] = ASpec("umem_add", [("atom", (j, "next")), ("const", LAYOUTS[abi].size * k)], None,
                             draw(_flags()))
    if _chance(draw, 10):   # a bad argument, result or next pointer
        i = draw(st.integers(0, n - 1))
        if i not in latches:
            kind = draw(st.sampled_from(("arg", "ret", "next")))
            atoms[i].fault = ("arg", draw(st.integers(0, len(atoms[i].args)))) if kind == "arg" else (kind,)
    # The first atom: ASYNC sometimes (rarely with SYNC too: EINVAL)
    if _chance(draw, 20):
        atoms[0].flags |= SYSLET_ASYNC
        if not _chance(draw, 10):
            atoms[0].flags &= ~SYSLET_SYNC
    for i, a in enumerate(atoms):
        a.next = nexts[i]
    # Sentinel: SKIP_TO_NEXT on the last real atom lands on an atom we own.
    sent = ASpec("getpid", [], f"R{n}", 0)
    sent.next = None
    atoms.append(sent)
    return Program(atoms, files, c_init, k_init, f_init, fd_modes, path0)


def _context_params(draw):
    budget = draw(st.integers(4, 64))
    max_threads = -1 if not _chance(draw, 30) else draw(st.sampled_from((0, 1, 2, 3, 6)))
    ring_slots = 256 if not _chance(draw, 30) else draw(st.sampled_from((1, 2)))
    return budget, max_threads, ring_slots


@st.composite
def single_programs(draw, abi=1):
    prog = draw(programs(abi=abi))
    prog.budget, prog.max_threads, prog.ring_slots = _context_params(draw)
    prog.abi = abi
    if abi != 1:
        n = prog.ring_slots
        prog.kri = draw(st.sampled_from((0, 0, n - 1, n, 3 * n + 1, (1 << 64) - 1)))
        prog.prefill = _chance(draw, 15)
    return prog


@st.composite
def batches(draw):
    progs = draw(st.lists(programs(allow_fd_ops=False), min_size=2, max_size=MAX_BATCH))
    params = _context_params(draw)
    for p in progs:             # one context runs them all
        p.budget, p.max_threads, p.ring_slots = params
    return progs


# ---------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------

class Executor:
    """A fresh Context plus big buffers, one set per program of a batch."""

    def __init__(self, kind, prog):
        self.kind = kind
        self.ctx = Context(backend=kind, ring_slots=prog.ring_slots, max_threads=prog.max_threads)
        self.bufsets = [{"B0": self.ctx.buffer(BUF), "B1": self.ctx.buffer(BUF),
                         "S": self.ctx.buffer(256), "P": self.ctx.buffer(16)} for _ in range(MAX_BATCH)]
        # v5/v6: the head named in every call, and its ring
        self.abi = prog.abi
        self.ahu = self.ctx.buffer(64, align=8)
        self.hring = self.ctx.buffer(8 * prog.ring_slots, align=8)

    def set_budget(self, n):
        if self.kind == "reference":
            self.ctx.engine.budget = n
        else:
            self.ctx.engine.set_budget(n)

    def inflight(self):
        return 0 if self.kind == "reference" else self.ctx.engine.inflight()

    def close(self):
        self.ctx.close()


@pytest.fixture(scope="module")
def uring_ok():
    """Skips when this machine cannot create io_uring rings."""
    with _core.Engine("io_uring") as e:
        if e.backend != "io_uring":
            pytest.skip("io_uring rings cannot be created here (the engine fell back to the pool)")


# The engines' own descriptors come and go by themselves (a pool worker's
# ring, an idle worker leaving after 100 ms): the programs here open files
# only, so these are never theirs.
_ENGINE_FDS = ("anon_inode:[io_uring]", "anon_inode:[eventfd]")


def _fd_table():
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target not in _ENGINE_FDS:
            out[int(name)] = target
    return out


def _poke_word(addr, v):
    _core.poke(addr, (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))


class Materialized:
    """A program laid out in one executor's context."""

    def __init__(self, ex, prog, d, f_init, dirfd, bufs):
        ctx = ex.ctx
        self.prog = prog
        self.bufs = bufs
        self.cells = {}
        for j in range(NF):
            self.cells[f"F{j}"] = ctx.var(f_init[j])
        for j in range(NC):
            self.cells[f"C{j}"] = ctx.var(prog.c_init[j])
        for j in range(NK):
            self.cells[f"K{j}"] = ctx.var(prog.k_init[j])
        self.cells["D"] = ctx.var(dirfd)
        for i in range(len(prog.atoms)):     # R<i>: atom i's fresh result cell
            self.cells[f"R{i}"] = ctx.var()
        rng = random.Random(repr(sorted(prog.files.items())))    # seed-derived contents
        for name in ("B0", "B1"):
            bufs[name].write(rng.randbytes(1024) + bytes(BUF - 1024))
        bufs["S"].write(bytes(256))
        bufs["P"].write(prog.path0 + bytes(16 - len(prog.path0)))

        patches = []        # (cell, (j, field)): atom addresses, known after layout
        lay = self.lay = LAYOUTS[prog.abi]

        def arg(x):
            kind, v = x
            if kind == "const":
                return v
            if kind == "var":
                return self.cells[v]
            if kind == "addr":
                name, off = v
                return (bufs[name].addr if name in bufs else self.cells[name].addr) + off
            if kind == "atom":
                cell = ctx.var()
                patches.append((cell, v))
                return cell
            if kind == "raw":       # bytes, copied NUL-terminated by the builder
                return v
            return os.path.join(d, v).encode()

        ch = ctx.chain()
        for a in prog.atoms:
            ret = self.cells[a.ret] if isinstance(a.ret, str) else None
            ch.atom(NR[a.op], *[arg(x) for x in a.args], ret=ret, flags=a.flags, link=False)
        for i in range(len(ch.atoms) - 1):      # the layout SKIP_TO_NEXT relies on
            assert ch.atoms[i + 1].addr == ch.atoms[i].addr + ATOM_SIZE, "atoms not contiguous"
        if lay.narrow:
            # v6: the same atoms (their cells made by the builder) written
            # again in the 80-byte layout, contiguous; the builder's stay unused
            block = ctx.buffer(lay.size * len(ch.atoms), align=8)
            self.addrs = [block.addr + lay.size * i for i in range(len(ch.atoms))]
            for atom, at in zip(ch.atoms, self.addrs):
                w = struct.unpack("<11Q", _core.peek(atom.addr, 88))
                _core.poke(at, struct.pack("<IIQQ6QQ", w[0], w[1], w[2], 0, *w[4:10], 0))
        else:
            self.addrs = [atom.addr for atom in ch.atoms]
        ad = self.addrs
        for i, a in enumerate(prog.atoms):
            _poke_word(ad[i] + lay.next, ad[a.next] if a.next is not None else 0)
            if isinstance(a.ret, tuple):        # a result cell inside an atom
                j, field = a.ret[1]
                _poke_word(ad[i] + lay.ret, ad[j] + lay.field[field])
            if a.fault == ("ret",):
                _poke_word(ad[i] + lay.ret, BAD_PTR)
            elif a.fault == ("next",):
                _poke_word(ad[i] + lay.next, BAD_PTR)
            elif a.fault:
                _poke_word(ad[i] + lay.args + 8 * a.fault[1], BAD_PTR)
        for cell, (j, field) in patches:
            cell.value = ad[j] + lay.field[field]
        self.chain = ch
        self.head = ad[0]
        self.index = {at: i for i, at in enumerate(ad)}

    def idx(self, atom):
        if atom is None:
            return None
        addr = atom if isinstance(atom, int) else atom.addr
        return self.index.get(addr, f"foreign 0x{addr:x}")

    def atom_state(self, i):
        """(flags, nr, next as an index): atoms may rewrite atoms."""
        at = self.addrs[i]
        if self.lay.narrow:
            flags, nr = struct.unpack("<II", _core.peek(at, 8))
        else:
            flags, nr = struct.unpack("<QQ", _core.peek(at, 16))
        w = struct.unpack("<Q", _core.peek(at + self.lay.next, 8))[0]
        return flags, nr, self.idx(w) if w not in (0, BAD_PTR) else w


def _write_files(d, files):
    os.makedirs(d)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def _snapshot_files(d):
    out = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        st_ = os.lstat(p)
        with open(p, "rb") as f:
            out[name] = (stat.S_IMODE(st_.st_mode), st_.st_size, f.read())
    return out


def _state(ex, mats, dirs, before, extra_fds):
    """Everything a program can observably change, normalized."""
    s = {}
    for p, m in enumerate(mats):
        s[f"cells{p}"] = {k: v.value for k, v in m.cells.items()}
        st_buf = m.bufs["S"].read(64)     # st_nlink, st_mode, st_size only
        s[f"stat{p}"] = (int.from_bytes(st_buf[16:24], "little"), int.from_bytes(st_buf[24:28], "little"),
                         int.from_bytes(st_buf[48:56], "little"))
        s[f"bufs{p}"] = (m.bufs["B0"].read(), m.bufs["B1"].read(), m.bufs["P"].read())
        # Atoms may rewrite atoms: their flags, nr and next (as an index) at the end
        s[f"atoms{p}"] = [m.atom_state(i) for i in range(len(m.addrs))]
    s["files"] = [_snapshot_files(d) for d in dirs]
    after = _fd_table()
    gone = {fd: t for fd, t in before.items() if fd not in after and fd not in extra_fds}
    assert not gone, f"{ex.kind}: fds the program did not own were closed: {gone}"
    fds = {}
    for fd, target in sorted(after.items()):
        if fd in before and before[fd] == target and fd not in extra_fds:
            continue
        where = next((p for p, d in enumerate(dirs) if target.startswith(d + os.sep)), None)
        assert where is not None, f"{ex.kind}: an fd appeared that no program opened: {fd} -> {target}"
        try:
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError as e:
            pos, fl = -e.errno, None
        fds[fd] = (where, os.path.basename(target), pos, fl)
    s["fds"] = fds
    return s


def _close_new(before):
    for fd, target in _fd_table().items():
        if before.get(fd) != target:
            try:
                os.close(fd)
            except OSError:
                pass


def _collect_async(ex, expect, deadline=ASYNC_DEADLINE):
    """Reaps the ring until nothing is in flight and ``expect`` entries came
    (the reference's count: entries may still wait for a free slot after their
    syslet finished), then once more a moment later to catch extra ones."""
    end = time.monotonic() + deadline
    ring = ex.ctx.reap()
    while (ex.inflight() or len(ring) < expect) and time.monotonic() < end:
        time.sleep(0.0003)
        ring += ex.ctx.reap()
    assert not ex.inflight(), f"{ex.kind}: syslets still in flight after {deadline}s"
    time.sleep(0.002)
    return ring + ex.ctx.reap()


class HeadRing:
    """A v5/v6 head and its ring in an executor's context: set up, exec,
    and reaping the ring the way fio did (slot at user_ring_idx, NULL it)."""

    MARK = 0x1                  # an entry the program has not consumed yet

    def __init__(self, ex, prog):
        self.ex, self.n = ex, prog.ring_slots
        self.ring, self.ahu = ex.hring.addr, ex.ahu.addr
        self.k0 = prog.kri
        self.user = prog.kri % self.n
        _core.poke(self.ring, bytes(8 * self.n))
        _core.poke(self.ahu, struct.pack("<8Q", prog.kri, self.user, self.ring, 8 * self.n, 0, 0, 1, 0))
        self.marked = prog.prefill
        if self.marked:
            _poke_word(self.ring + 8 * self.user, self.MARK)

    def exec(self, m):
        return self.ex.ctx.engine.exec_head(self.ex.abi, m.head, self.ahu)

    def kri(self):
        return _core.peek_word(self.ahu) & 0xFFFFFFFFFFFFFFFF

    def reap(self):
        out = []
        while True:
            at = self.ring + 8 * self.user
            v = _core.peek_word(at) & 0xFFFFFFFFFFFFFFFF
            if not v or v == self.MARK:
                return out
            _poke_word(at, 0)
            out.append(v)
            self.user = (self.user + 1) % self.n

    def collect(self, expect, deadline=ASYNC_DEADLINE):
        """As _collect_async; a slot the program had not consumed is
        consumed once the syslet finished (its entry waits until then)."""
        ex = self.ex
        end = time.monotonic() + deadline
        while ex.inflight() and time.monotonic() < end:
            time.sleep(0.0003)
        if self.marked:
            _poke_word(self.ring + 8 * self.user, 0)
        ring = self.reap()
        while (ex.inflight() or len(ring) < expect) and time.monotonic() < end:
            time.sleep(0.0003)
            ring += self.reap()
        assert not ex.inflight(), f"{ex.kind}: syslets still in flight after {deadline}s"
        time.sleep(0.002)
        return ring + self.reap()


def _run(ex, progs, base, batch, ref=None):
    """Runs the programs (one exec, or one exec_many) on ``ex`` in fresh
    directories under ``base``.  ``ref``: the reference's run (for how many
    ring entries to wait).  Returns (state, outcomes, ring multiset, async?)."""
    dirs = [os.path.join(base, ex.kind, f"p{p}") for p in range(len(progs))]
    for d, prog in zip(dirs, progs):
        _write_files(d, prog.files)
    dirfds = [] if batch else [os.open(dirs[0], os.O_RDONLY | os.O_DIRECTORY)]
    before = _fd_table()
    ex.set_budget(progs[0].budget)
    try:
        mats = []
        for p, (d, prog) in enumerate(zip(dirs, progs)):
            f_init = prog.f_init
            if f_init is None:       # exec_many: the harness opens the fds, in order
                f_init = [os.open(os.path.join(d, name), fl) for name, fl in prog.fd_modes]
            mats.append(Materialized(ex, prog, d, f_init, dirfds[p] if dirfds else -1, ex.bufsets[p]))
        opened = set(_fd_table()) - set(before)
        head = HeadRing(ex, progs[0]) if ex.abi != 1 else None
        if batch:
            res = ex.ctx.exec_many([m.chain for m in mats])
        elif head:
            try:
                r = head.exec(mats[0])
                res = [ex.ctx.atom_or_wrap(r) if r else None]
            except OSError as e:
                res = [e]
        else:
            try:
                res = [ex.ctx.exec(mats[0].chain)]
            except OSError as e:
                res = [e]
        outcomes = []
        expect = 0
        for p, (m, r) in enumerate(zip(mats, res)):
            if isinstance(r, OSError):
                outcomes.append(("error", r.errno))
            elif r is None:
                outcomes.append(("async", None))
                rk, rv = ref[1][p]
                if rk == "sync" and not ref[0][f"atoms{p}"][rv][0] & SYSLET_NO_COMPLETE:
                    expect += 1
            else:
                outcomes.append(("sync", m.idx(r)))
        went_async = any(k == "async" for k, _ in outcomes)
        if head:
            ring = head.collect(expect) if went_async else head.reap()
            if head.marked and not went_async:
                _poke_word(head.ring + 8 * head.user, 0)
            kri = (head.k0, head.kri())
        else:
            ring = _collect_async(ex, expect) if went_async else ex.ctx.reap()
            kri = None
        ring_idx = []
        for entry in ring:
            addr = entry if isinstance(entry, int) else entry.addr
            who = [(p, m.index[addr]) for p, m in enumerate(mats) if addr in m.index]
            ring_idx.append(who[0] if who else f"foreign 0x{addr:x}")
        state = _state(ex, mats, dirs, before, opened)
        state["kri"] = kri
    finally:
        _close_new(before)
        for fd in dirfds:
            os.close(fd)
        ex.set_budget(0)
    return state, outcomes, sorted(ring_idx, key=repr), went_async


def _check(progs, runs):
    """Compares the engines' runs with the reference's."""
    ref_state, ref_out, ref_ring, _ = runs["reference"]
    assert ref_ring == [], "the reference never publishes"
    assert all(k in ("sync", "error") for k, _ in ref_out), ref_out
    sync_only = progs[0].max_threads == 0 and progs[0].abi == 1    # (the registered head's)
    for name, (state, out, ring, _) in runs.items():
        if name == "reference":
            continue
        expect_ring = []
        for p, prog in enumerate(progs):
            rk, rv = ref_out[p]
            kind, v = out[p]
            first = prog.atoms[0].flags
            where = f"{name}: program {p}"
            if rk == "error":
                assert (kind, v) == (rk, rv), f"{where}: exec gave {out[p]}, the reference {ref_out[p]}"
                continue
            assert kind != "error", f"{where}: exec failed with errno {v}; the reference ran it"
            if sync_only:
                assert kind == "sync", f"{where}: max_nr_threads == 0, but the syslet went async"
            elif first & SYSLET_ASYNC:
                assert kind == "async", f"{where}: SYSLET_ASYNC on the first atom, but exec returned atom {v}"
            if first & SYSLET_SYNC:
                assert kind == "sync", f"{where}: SYSLET_SYNC on the first atom, but it went async"
            if kind == "sync":
                assert v == rv, f"{where}: final atom {v}, the reference's {rv}"
            elif not ref_state[f"atoms{p}"][rv][0] & SYSLET_NO_COMPLETE:    # flags as it ran
                expect_ring.append((p, rv))
        assert ring == sorted(expect_ring, key=repr), \
            f"{name}: ring entries {ring}, expected {expect_ring} (outcomes {out}, reference {ref_out})"
        if progs[0].abi != 1:
            # v5/v6: kernel_ring_idx read, taken modulo N, the next one stored back
            k0, k = state["kri"]
            n = progs[0].ring_slots
            want = (k0 % n + len(ring)) % n if ring else k0
            assert k == want, f"{name}: kernel_ring_idx {k} after {len(ring)} entries from {k0}, not {want}"
        for key in ref_state:
            if key != "kri":
                assert state[key] == ref_state[key], _diff(name, key, state[key], ref_state[key])


def _diff(name, key, got, want):
    if isinstance(got, dict) and isinstance(want, dict):
        d = {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want), key=repr)
             if got.get(k) != want.get(k)}
        return f"{name}: {key} differs from the reference (got, reference): {d}"
    if isinstance(got, list) and len(got) == len(want):
        d = {i: (g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w}
        return f"{name}: {key} differs from the reference at (got, reference): {d}"[:3000]
    if isinstance(got, tuple) and all(isinstance(x, bytes) for x in got):
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                at = next(j for j in range(min(len(g), len(w))) if g[j] != w[j])
                return (f"{name}: {key}[{i}] differs from byte {at}: got {g[at:at + 16].hex()}, "
                        f"reference {w[at:at + 16].hex()}")
    return f"{name}: {key} differs from the reference: got {got!r}, reference {want!r}"[:3000]


def _run_all(progs, tmp_root, stats, batch):
    """Fresh contexts (all made before any scratch file is opened, so fd
    numbers line up) and fresh directories for every example."""
    base = os.path.join(tmp_root, f"ex{stats['programs']}")
    executors = []
    try:
        for kind in EXECUTORS:
            executors.append(Executor(kind, progs[0]))
        runs = {}
        for ex in executors:
            runs[ex.kind] = _run(ex, progs, base, batch, runs.get("reference"))
        stats["programs"] += len(progs)
        if progs[0].abi != 1:
            stats[f"v{progs[0].abi}"] += 1
        stats["executions"] += len(progs) * len(executors)
        stats["atoms"] += sum(len(p.atoms) for p in progs)
        stats["async"] += sum(1 for r in runs.values() if r[3])
        stats["batches"] += batch
        _check(progs, runs)
    finally:
        for ex in executors:
            ex.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("syslet-diff"))


def _single_program_test(abi, examples):
    @pytest.mark.timeout(max(120, examples // 2))
    @_seeded
    @_settings(examples)
    @given(prog=single_programs(abi))
    def test(uring_ok, tmp_root, props_stats, prog):
        _run_all([prog], tmp_root, props_stats, batch=False)
    test.__doc__ = (f"One random program (opening its own files) on all three executors, "
                    f"as a v{abi} syslet.")
    return test


test_single_program = _single_program_test(1, EXAMPLES)
test_single_program_v5 = _single_program_test(5, HEAD_EXAMPLES)
test_single_program_v6 = _single_program_test(6, HEAD_EXAMPLES)


@pytest.mark.timeout(max(120, EXAMPLES // 2))
@_seeded
@_settings(BATCH_EXAMPLES)
@given(progs=batches())
def test_exec_many(uring_ok, tmp_root, props_stats, progs):
    """Independent programs on harness-opened fds, run together with
    exec_many: each one's state and the ring multiset must match."""
    _run_all(progs, tmp_root, props_stats, batch=True)


# ---------------------------------------------------------------------------
# v7: random sequences of indirect calls
# ---------------------------------------------------------------------------
# A call is (rax, args, how): args are tokens -- ('fd', j) harness fd j,
# ('buf', name, offset) an address, ('const', v) -- passed by value; how says
# what indirect() is given: a syslet submission (the ring, caller_data = the
# call's index, a frame), a plain call (file_flags), or a broken one (flags,
# paramslen, a zero frame, an unusable ring, unreadable registers).  Every
# executor runs the sequence in order; a call that went async (ESYSLETPENDING)
# is waited for before the next, so the order of effects is the same.

V7_NR = {"read": 0, "write": 1, "fstat": 5, "lseek": 8, "pread64": 17, "pwrite64": 18, "dup": 32,
         "nanosleep": 35, "getpid": 39, "socket": 41, "getppid": 110, "timerfd_create": 283,
         "eventfd2": 290, "fork": 57, "exit": 60, "timerfd_settime": 286, "timerfd_gettime": 287}
V7_PLAIN = ("eventfd2", "socket", "timerfd_create")
ESYSLETPENDING = 132


class V7Program:
    def __init__(self, calls, files, fd_modes, elements, kh0, full):
        self.calls, self.files, self.fd_modes = calls, files, fd_modes
        self.elements, self.kh0, self.full = elements, kh0, full
        self.budget, self.max_threads, self.ring_slots, self.abi = 0, -1, 4, 7
        self.atoms = calls              # (for the statistics)

    def __repr__(self):
        lines = [f"V7Program(elements={self.elements}, kernel_head={self.kh0:#x}, full={self.full}, "
                 f"files={ {k: len(v) for k, v in self.files.items()} }, fd_modes={self.fd_modes})"]
        lines += [f"  {i:2d}: {c!r}" for i, c in enumerate(self.calls)]
        return "\n".join(lines)


def _v7_fd(draw):
    return ("fd", draw(st.integers(0, NF - 1))) if not _chance(draw, 6) else ("const", -1)


@st.composite
def _v7_call(draw):
    op = draw(st.sampled_from(("read", "pread64", "write", "pwrite64") * 3 +
                              ("lseek", "lseek", "fstat", "getpid", "getppid", "dup", "nanosleep",
                               "refused", "unknown", "timerfd_settime", "timerfd_gettime") +
                              V7_PLAIN))
    buf = ("buf", draw(st.sampled_from(("B0", "B1"))), draw(st.sampled_from((0, 1, 100, 4000))))
    if _chance(draw, 5):
        buf = ("const", draw(st.sampled_from(BAD_BUFS)))
    cnt = ("const", draw(st.sampled_from((0, 1, 17, 64, 300, 1024))))
    off = ("const", draw(st.sampled_from((0, 5, 200, 600, -1))))
    how = "syslet"
    if op in ("read", "write"):
        args = (_v7_fd(draw), buf, cnt)
    elif op in ("pread64", "pwrite64"):
        args = (_v7_fd(draw), buf, cnt, off)
    elif op == "lseek":
        # beyond 2**31: the result comes back sign-extended from 32 bits
        pos = draw(st.sampled_from((0, 7, 300, (3 << 30), (1 << 32) + 9, (1 << 31) - 1, -1)))
        args = (_v7_fd(draw), ("const", pos), ("const", draw(st.integers(0, 3))))
    elif op == "fstat":
        args = (_v7_fd(draw), ("buf", "S", 0))
    elif op == "dup":
        args = (_v7_fd(draw),)
    elif op in ("getpid", "getppid"):
        args = ()
    elif op == "nanosleep":
        args = (("buf", "T", 0), ("const", 0))
    elif op == "refused":
        op = draw(st.sampled_from(("fork", "exit", 1004, 1012, 1030, 1039)))
        args = (("const", 0),)
    elif op == "unknown":
        op = draw(st.sampled_from(((1 << 32) + 39, 0x40000000 + 39, (1 << 63) + 60)))
        args = ()
    elif op in ("timerfd_settime", "timerfd_gettime"):
        args = (("const", -1), ("const", 0), ("buf", "S", 0), ("const", 0))
    else:   # a plain call: a new fd, file_flags applied
        how = "plain"
        args = {"eventfd2": (("const", 0), ("const", 0)),
                "socket": (("const", 1), ("const", 1), ("const", 0)),        # AF_UNIX, SOCK_STREAM
                "timerfd_create": (("const", 1), ("const", 0))}[op]
    if how == "syslet" and _chance(draw, 4):
        how = "plain"           # a refused plain call
    nr = V7_NR[op] if isinstance(op, str) else op
    bad = None
    if _chance(draw, 8):
        bad = draw(st.sampled_from(("flags", "paramslen", "frame", "elements", "ring", "regs")))
    file_flags = draw(st.sampled_from((0, os.O_CLOEXEC, os.O_NONBLOCK, os.O_CLOEXEC | os.O_NONBLOCK,
                                       os.O_APPEND)))
    paramslen = 32 if how == "syslet" else draw(st.sampled_from((0, 4, 4, 7, 32)))
    return (nr, args, how, bad, file_flags, paramslen)


@st.composite
def v7_programs(draw):
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    files = {n: rng.randbytes(draw(st.sampled_from((0, 5, 64, 300, 5000)))) for n in FILES}
    fd_modes = [(draw(st.sampled_from(FILES)), draw(st.sampled_from((os.O_RDWR, os.O_RDONLY, os.O_WRONLY))))
                for _ in range(NF)]
    calls = [draw(_v7_call()) for _ in range(draw(st.integers(1, 12)))]
    elements = draw(st.sampled_from((1, 2, 4, 8)))
    kh0 = draw(st.sampled_from((0, 3, 0xFFFFFFFF, 0xFFFFFFFE)))
    return V7Program(calls, files, fd_modes, elements, kh0, _chance(draw, 20))


class V7Ring:
    """The syslet_ring of a v7 run, and its consumer."""

    def __init__(self, ex, prog):
        self.ex, self.n = ex, prog.elements
        self.buf = ex.ctx.buffer(16 + 16 * 8, align=8)
        self.addr = self.buf.addr
        tail = (prog.kh0 - (self.n if prog.full else 0)) & 0xFFFFFFFF
        self.full = prog.full
        _core.poke(self.addr, struct.pack("<IIII", prog.kh0, tail, self.n, 0) + b"\xee" * 128)

    def header(self):
        return struct.unpack("<IIII", _core.peek(self.addr, 16))

    def take(self, deadline=ASYNC_DEADLINE):
        """The next entry of a call that went async (the ring full at first:
        the entries the program had not consumed are consumed once the call
        has finished, and its entry waits until then)."""
        ex = self.ex
        end = time.monotonic() + deadline
        if self.full:
            while ex.inflight() and time.monotonic() < end:
                time.sleep(0.0003)
            kh, tail, _, _ = self.header()
            _core.poke(self.addr + 4, struct.pack("<I", kh))      # consumed
            self.full = False
        while True:
            kh, tail, _, _ = self.header()
            if kh != tail:
                break
            assert time.monotonic() < end, f"{ex.kind}: no ring entry within {deadline}s"
            ex.ctx.engine.ring_wait(self.addr, tail, timeout=0.05)
        st_, cd = struct.unpack("<QQ", _core.peek(self.addr + 16 + 16 * (tail & (self.n - 1)), 16))
        _core.poke(self.addr + 4, struct.pack("<I", (tail + 1) & 0xFFFFFFFF))
        return st_, cd


def _v7_run(ex, prog, base):
    d = os.path.join(base, ex.kind)
    _write_files(d, prog.files)
    before = _fd_table()
    bufs = ex.bufsets[0]
    ctx = ex.ctx
    rng = random.Random(repr(sorted(prog.files.items())))
    bufs["B0"].write(rng.randbytes(1024) + bytes(BUF - 1024))
    bufs["B1"].write(bytes(BUF))
    bufs["S"].write(bytes(256))
    ts = ctx.buffer(16, align=8)
    ts.write(struct.pack("<qq", 0, 1_000_000))
    made = []           # fds the calls returned (an eventfd is not in _fd_table)
    try:
        fds = [os.open(os.path.join(d, name), fl) for name, fl in prog.fd_modes]
        ring = V7Ring(ex, prog)
        regs, params = ctx.buffer(56, align=8), ctx.buffer(32, align=8)
        out = []
        for i, (nr, args, how, bad, file_flags, paramslen) in enumerate(prog.calls):
            vals = []
            for tok in args:
                if tok[0] == "fd":
                    vals.append(fds[tok[1]])
                elif tok[0] == "buf":
                    vals.append((ts.addr if tok[1] == "T" else bufs[tok[1]].addr) + tok[2])
                else:
                    vals.append(tok[1])
            vals += [0] * (6 - len(vals))
            regs.write(struct.pack("<7Q", *((v & 0xFFFFFFFFFFFFFFFF) for v in [nr] + vals)))
            if how == "plain":
                params.write(struct.pack("<I", file_flags) + bytes(28))
            else:
                params.write(struct.pack("<4Q", ring.addr, 1000 + i, 0x1000, 0x2000))
            rp, flags = regs.addr, 0
            if bad == "flags":
                flags = 1
            elif bad == "paramslen":
                paramslen = 33
            elif bad == "frame" and how == "syslet":
                _core.poke(params.addr + 16, bytes(8))
            elif bad == "elements" and how == "syslet":        # a ring of 0 elements
                _core.poke(params.addr, struct.pack("<Q", ex.ctx.buffer(16, align=8).addr))
            elif bad == "ring" and how == "syslet":
                _core.poke(params.addr, struct.pack("<Q", BAD_PTR))
            elif bad == "regs":
                rp = BAD_PTR
            try:
                r = ctx.engine.indirect(rp, params.addr, paramslen, flags)
                out.append(("ok", r))
                if r >= 0 and (how == "plain" or nr == V7_NR["dup"]):
                    made.append(r)
            except OSError as e:
                if e.errno != ESYSLETPENDING:
                    out.append(("err", e.errno))
                else:
                    st_, cd = ring.take()
                    assert cd == 1000 + i, f"{ex.kind}: call {i}'s entry has caller_data {cd}"
                    v = st_ - (1 << 64) if st_ >> 63 else st_
                    out.append(("err", -v) if -4095 <= v < 0 else ("ok", v))
                    out.append("pending")
        assert not ex.inflight()
        kh = ring.header()[0]
        newfds = {}
        table = _fd_table()
        for fd in sorted(set(made) | {f for f, t in table.items() if before.get(f) != t} - set(fds)):
            target = os.readlink(f"/proc/self/fd/{fd}")
            newfds[fd] = (target if target.startswith("anon_inode") else
                          target.split(":")[0] if ":" in target else "file",
                          fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC,
                          fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_NONBLOCK | os.O_ACCMODE))
        state = {
            "bufs": (bufs["B0"].read(), bufs["B1"].read()),
            "stat": bufs["S"].read(64)[16:32] + bufs["S"].read(64)[48:56],
            "files": _snapshot_files(d),
            "fds": [(os.lseek(fd, 0, os.SEEK_CUR), fcntl.fcntl(fd, fcntl.F_GETFL)) for fd in fds],
            "newfds": newfds,
        }
    finally:
        for fd in set(made):
            try:
                os.close(fd)
            except OSError:
                pass
        _close_new(before)
    return out, state, kh


def _v7_run_all(prog, tmp_root, stats):
    base = os.path.join(tmp_root, f"v7ex{stats['v7']}")
    executors = []
    try:
        for kind in EXECUTORS:
            executors.append(Executor(kind, prog))
        runs = {}
        for ex in executors:
            runs[ex.kind] = _v7_run(ex, prog, base)
        stats["v7"] += 1
        stats["v7_calls"] += len(prog.calls)
        stats["executions"] += len(executors)
        ref_out, ref_state, ref_kh = runs["reference"]
        assert "pending" not in ref_out and ref_kh == prog.kh0
        for name, (out, state, kh) in runs.items():
            pending = out.count("pending")
            stats["v7_pending"] += pending if name != "reference" else 0
            got = [o for o in out if o != "pending"]
            assert got == ref_out, (f"{name}: results {got}, the reference's {ref_out}")
            assert kh == (prog.kh0 + pending) & 0xFFFFFFFF, f"{name}: kernel_head {kh:#x}"
            for key in ref_state:
                assert state[key] == ref_state[key], _diff(name, key, state[key], ref_state[key])
    finally:
        for ex in executors:
            ex.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(max(120, V7_EXAMPLES))
@_seeded
@_settings(V7_EXAMPLES)
@given(prog=v7_programs())
def test_v7_indirect_sequences(uring_ok, tmp_root, props_stats, prog):
    """Random indirect calls, by value, on all three executors: the same
    results (synchronous, or from the ring entry of a call that went async),
    memory, files, fd positions and new fds' flags; kernel_head advanced
    once per pending call."""
    _v7_run_all(prog, tmp_root, props_stats)
