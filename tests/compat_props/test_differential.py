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

``SYSLET_PROPS_EXAMPLES`` scales the run (examples of the single-program test;
the exec_many test runs a third as many).  ``SYSLET_PROPS_SEED`` replaces the
fixed (derandomized) example sequence with a seeded random one;
``SYSLET_PROPS_NO_SHRINK=1`` reports the first failing program unshrunk.  The count of
programs run is printed at the end of the session and written to
``tests/compat_props/.last_count``.
"""
import fcntl
import os
import random
import shutil
import stat
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
# constant) | ('atom', (j, offset)) (an address inside atom j) | ('path', file)
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
                return f"&atom{v[0]}+{v[1]}"
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

    def __repr__(self):
        lines = [f"Program(budget={self.budget}, max_threads={self.max_threads}, "
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
def programs(draw, allow_fd_ops=True):
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
            atoms[i] = ASpec("read", [_fd(draw), ("atom", (j, 0)), ("const", 1)],
                             f"R{i}" if _chance(draw, 50) else None, draw(_flags()))
        elif what == 1:     # flip stop bits by adding (may leave the flag range: EINVAL)
            inc = draw(st.sampled_from((8, 16, 32, 64, 128, 256, -8)))
            atoms[i] = ASpec("umem_add", [("atom", (j, 0)), ("const", inc)], f"R{i}", draw(_flags()))
        elif what == 2 and atoms[i].op in ("read", "pread64", "write", "pwrite64", "getpid"):
            atoms[i].ret = ("atom", (j, 0))     # a result becomes atom j's flags
        elif what == 3 and not loops and nexts[j] + shifted[j] < n:
            # next += 88 * k: a computed jump to a later atom (loop-free only,
            # so it happens at most once and stays inside the program).  No
            # result cell: the new value is an address, different per context.
            k = draw(st.integers(1, n - nexts[j] - shifted[j]))
            shifted[j] += k
            atoms[i] = ASpec("umem_add", [("atom", (j, 24)), ("const", ATOM_SIZE * k)], None,
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
def single_programs(draw):
    prog = draw(programs())
    prog.budget, prog.max_threads, prog.ring_slots = _context_params(draw)
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

        patches = []        # (cell, (j, offset)): atom addresses, known after layout

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
        for a, atom in zip(prog.atoms, ch.atoms):
            atom.next = ch.atoms[a.next] if a.next is not None else None
            if isinstance(a.ret, tuple):        # a result cell inside an atom
                j, off = a.ret[1]
                _poke_word(atom.addr + 16, ch.atoms[j].addr + off)
            if a.fault == ("ret",):
                _poke_word(atom.addr + 16, BAD_PTR)
            elif a.fault == ("next",):
                _poke_word(atom.addr + 24, BAD_PTR)
            elif a.fault:
                _poke_word(atom.addr + 32 + 8 * a.fault[1], BAD_PTR)
        for cell, (j, off) in patches:
            cell.value = ch.atoms[j].addr + off
        self.chain = ch
        self.index = {atom.addr: i for i, atom in enumerate(ch.atoms)}

    def idx(self, atom):
        if atom is None:
            return None
        addr = atom if isinstance(atom, int) else atom.addr
        return self.index.get(addr, f"foreign 0x{addr:x}")

    def next_idx(self, atom):
        w = _core.peek_word(atom.addr + 24) & 0xFFFFFFFFFFFFFFFF
        return self.idx(w) if w not in (0, BAD_PTR) else w


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
        # Atoms may rewrite atoms: their flags and next (as an index) at the end
        s[f"atoms{p}"] = [(a.flags, m.next_idx(a)) for a in m.chain.atoms]
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
        if batch:
            res = ex.ctx.exec_many([m.chain for m in mats])
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
        ring = _collect_async(ex, expect) if went_async else ex.ctx.reap()
        ring_idx = []
        for entry in ring:
            addr = entry if isinstance(entry, int) else entry.addr
            who = [(p, m.index[addr]) for p, m in enumerate(mats) if addr in m.index]
            ring_idx.append(who[0] if who else f"foreign 0x{addr:x}")
        state = _state(ex, mats, dirs, before, opened)
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
    sync_only = progs[0].max_threads == 0
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
        for key in ref_state:
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


@pytest.mark.timeout(max(120, EXAMPLES // 2))
@_seeded
@_settings(EXAMPLES)
@given(prog=single_programs())
def test_single_program(uring_ok, tmp_root, props_stats, prog):
    """One random program (opening its own files) on all three executors."""
    _run_all([prog], tmp_root, props_stats, batch=False)


@pytest.mark.timeout(max(120, EXAMPLES // 2))
@_seeded
@_settings(BATCH_EXAMPLES)
@given(progs=batches())
def test_exec_many(uring_ok, tmp_root, props_stats, progs):
    """Independent programs on harness-opened fds, run together with
    exec_many: each one's state and the ring multiset must match."""
    _run_all(progs, tmp_root, props_stats, batch=True)
