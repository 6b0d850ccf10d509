#!/usr/bin/env python3
"""Benchmarks for the syslet layer (compat) against baselines measured in the
same run.

Workloads, on a page-cached file this script creates (256 MiB of random
bytes, 4 KiB reads at random 4 KiB-aligned offsets):

  batch   fio-v4 style: 32 pread64 atoms chained by ``next`` (flags 0), one
          compat.async_exec per batch (the default context on the backend); the 32 offset words are
          rewritten in place between batches (the atoms read them by
          pointer); the ring is reaped when a batch goes async.
          Target: >= 0.85 x a C liburing loop at queue depth 32
          (bench/c/uring_read_loop.c, submit_and_wait(32) per batch).
  single  one single-atom syslet per async_exec (the atom's offset word is
          rewritten each time).  Target: >= 0.80 x an os.pread loop over
          the same offsets.  An info row runs the same loop through a cffi
          function that only issues the atom's preadv2(RWF_NOWAIT): an
          engine costing nothing behind a cffi call.  (async_exec is a
          CPython builtin, cheaper to call than a cffi function, so it can
          land at or above that row.)
  chains  batches of 32 open -> read -> close chains (4 KiB files, the fd
          flows through the open's ret cell) via Context.exec_many.
          Target: >= 1.30 x os.open/os.read/os.close from Python.

Every comparison is paired: each run measures candidate and baseline back
to back (order alternating between runs); the ratio reported is the median
of the per-run ratios (min-max in brackets), throughputs are medians.  The
machine is noisy: quote ratios, not absolute numbers.  Not a test: exits 0
unless --strict and a target fails.
"""
import argparse
import array
import ctypes
import ctypes.util
import errno
import mmap
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compat                                    # noqa: E402
from compat import _core                         # noqa: E402
from compat import AT_FDCWD, NR                  # noqa: E402

ffi, lib = _core.ffi, _core.lib
BS = 4096
DEPTH = 32
C_SRC = ROOT / "bench" / "c" / "uring_read_loop.c"
BUILD = ROOT / "bench" / "_build"
LIBURING_A = "/usr/lib/x86_64-linux-gnu/liburing.a"

FLOOR = [None]       # build_floor()'s function, set in main()

TARGETS = {          # workload -> minimum ratio (candidate / baseline throughput)
    "batch": 0.85,
    "single": 0.80,
    "chains": 1.30,
}


def addr(p):
    return int(ffi.cast("uintptr_t", p))


# ---- setup -------------------------------------------------------------------------

def build_c():
    BUILD.mkdir(parents=True, exist_ok=True)
    exe = BUILD / "uring_read_loop"
    if exe.exists() and exe.stat().st_mtime >= C_SRC.stat().st_mtime:
        return exe
    link = [LIBURING_A] if os.path.exists(LIBURING_A) else ["-luring"]
    cmd = ["gcc", "-O2", "-Wall", "-o", str(exe), str(C_SRC)] + link
    subprocess.run(cmd, check=True)
    return exe


ENGINE_SRC = [ROOT / "compat" / "csrc" / "engine.c", ROOT / "compat" / "csrc" / "guard.c",
              ROOT / "uring_shim" / "csrc" / "shim.c"]
HARNESS_SRC = ROOT / "bench" / "c" / "engine_exec_loop.c"


def build_harness():
    """bench/c/engine_exec_loop.c linked with the engine's own C sources
    (engine.c, guard.c, shim.c).  Returns {"engine": exe}, or {} when the
    engine does not build that way (analysis rows are then skipped)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    link = [LIBURING_A] if os.path.exists(LIBURING_A) else ["-luring"]
    inc = [f"-I{ROOT / 'compat' / 'csrc'}", f"-I{ROOT / 'uring_shim' / 'csrc'}"]
    exe = BUILD / "engine_exec_loop"
    newest = max(p.stat().st_mtime for p in ENGINE_SRC + [HARNESS_SRC])
    if not exe.exists() or exe.stat().st_mtime < newest:
        cmd = ["gcc", "-O2", "-w"] + inc + ["-o", str(exe), str(HARNESS_SRC)] + \
            [str(p) for p in ENGINE_SRC] + link + ["-lpthread"]
        if subprocess.run(cmd, capture_output=True).returncode:
            return {}
    return {"engine": exe}


FLOOR_SRC = r"""
#include <errno.h>
#include <stdint.h>
#include <sys/uio.h>
/* A syslet engine with no cost at all: it reads one pread64 atom's argument
 * words by plain pointer (no fault guard, no checks), issues the same
 * preadv2(RWF_NOWAIT) the engine issues, stores the result, returns the
 * atom.  What remains is the Python loop, one cffi call and the non-blocking
 * read itself: the floor of "one single-atom syslet per exec". */
int64_t floor_exec(uint64_t atom)
{
    const uint64_t *a = (const uint64_t *)(uintptr_t)atom;
    const uint64_t *const *cell = (const uint64_t *const *)(a + 4);
    struct iovec v = {(void *)(uintptr_t)*cell[1], (size_t)*cell[2]};
    long r = preadv2((int)*cell[0], &v, 1, (off_t)*cell[3], RWF_NOWAIT);
    *(int64_t *)(uintptr_t)a[2] = r < 0 ? -errno : r;
    return (int64_t)atom;
}
"""


def build_floor():
    """The zero-cost engine above as a cffi module in bench/_build, or None."""
    try:
        import cffi
        import importlib
        BUILD.mkdir(parents=True, exist_ok=True)
        fb = cffi.FFI()
        fb.cdef("int64_t floor_exec(uint64_t atom);")
        fb.set_source("_bench_floor", FLOOR_SRC)
        fb.compile(tmpdir=str(BUILD), verbose=False)
        sys.path.insert(0, str(BUILD))
        return importlib.import_module("_bench_floor").lib.floor_exec
    except Exception as e:          # analysis only
        print(f"bench_compat: floor module not built ({type(e).__name__}: {e})", file=sys.stderr)
        return None


def make_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


def warm(path):
    """Reads the file once (into the page cache) and returns the resident
    fraction according to mincore(2)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass
    size = os.path.getsize(path)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
        anchor = ctypes.c_char.from_buffer(mm)
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        r = libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vec)
        del anchor
        mm.close()
        if r != 0:
            return None
        return sum(v & 1 for v in vec) / pages
    except Exception:
        return None


class Ring:
    """A completion ring in cffi memory registered with an engine (raw ABI)."""

    def __init__(self, eng, slots=256):
        self.eng = eng
        self.slots = slots
        self.mem = ffi.new("uint64_t[]", slots)
        self.i = 0
        eng.register(addr(self.mem), 8 * slots, -1)

    def take(self, n):
        """Waits for and consumes n entries; returns their atom addresses."""
        got, mem = [], self.mem
        while len(got) < n:
            v = mem[self.i]
            if v:
                mem[self.i] = 0
                self.i = (self.i + 1) % self.slots
                got.append(v)
            else:
                self.eng.wait(1)
        return got

    def drain(self):
        """Consumes whatever is in the ring now."""
        mem, n = self.mem, 0
        while mem[self.i]:
            mem[self.i] = 0
            self.i = (self.i + 1) % self.slots
            n += 1
        return n

    def close(self):
        while True:             # unregister waits for every publish: keep reaping
            try:
                self.eng.unregister(addr(self.mem), 8 * self.slots, timeout=0.05)
                return
            except OSError as e:
                if e.errno != errno.ETIME:
                    raise
                self.drain()


# ---- workloads ------------------------------------------------------------------------

class ReadAtoms:
    """``depth`` pread64 atoms chained by ``next`` (flags 0) over page-aligned
    buffers; each reads fd, buffer, length and offset by pointer."""

    def __init__(self, eng, ring, fd, depth, ex=None):
        self.eng, self.ring, self.depth = eng, ring, depth
        self.ex = ex or eng.exec            # the call measured
        self.atoms = ffi.new("uint64_t[]", 11 * depth)
        self.rets = ffi.new("int64_t[]", depth)
        self.offs = ffi.new("uint64_t[]", depth)
        self._bufmem = ffi.new("char[]", BS * (depth + 1))
        base = (addr(self._bufmem) + BS - 1) & ~(BS - 1)
        self.fdw = ffi.new("uint64_t[1]", [fd])
        self.lenw = ffi.new("uint64_t[1]", [BS])
        self.bufw = ffi.new("uint64_t[]", [base + BS * i for i in range(depth)])
        a = self.atoms
        for i in range(depth):
            b = 11 * i
            a[b + 1] = NR["pread64"]
            a[b + 2] = addr(self.rets + i)
            a[b + 3] = addr(a + 11 * (i + 1)) if i + 1 < depth else 0
            a[b + 4] = addr(self.fdw)
            a[b + 5] = addr(self.bufw + i)
            a[b + 6] = addr(self.lenw)
            a[b + 7] = addr(self.offs + i)
        self.head = addr(a)
        self.tail = addr(a + 11 * (depth - 1))
        self.expect_rets = (BS).to_bytes(8, "little") * depth

    def run_batches(self, src, nbatches):
        """src: cffi uint64_t[] of nbatches * depth offsets.  Returns the
        number of batches whose results were wrong."""
        ex, mm, take = self.ex, ffi.memmove, self.ring.take
        offs, head, tail, d = self.offs, self.head, self.tail, self.depth
        nb = 8 * d
        rets = ffi.buffer(self.rets)
        expect = self.expect_rets
        bad = 0
        for i in range(nbatches):
            mm(offs, src + i * d, nb)              # the 32 offset words, in place
            r = ex(head)
            if r != tail:
                if r:
                    bad += 1
                else:                              # went async: its final atom arrives
                    take(1)
            if rets[:] != expect:
                bad += 1
        return bad

    def run_single(self, offsets, ex=None):
        """One single-atom syslet per exec: the last atom (next = NULL)."""
        ex, take, h = ex or self.ex, self.ring.take, self.tail
        p = self.offs + (self.depth - 1)
        for o in offsets:
            p[0] = o
            if not ex(h):
                take(1)
        return 0 if self.rets[self.depth - 1] == BS else 1


def pread_loop(fd, offsets):
    pr = os.pread
    for o in offsets:
        pr(fd, BS, o)


NOWAIT_EAGAIN = [0]


def preadv_nowait_loop(fd, offsets, buf):
    """What the engine's inline fast path does; EAGAIN (rare even on cached
    pages) falls back to a plain pread, as the engine falls back to the ring."""
    pv, b, fl = os.preadv, [buf], os.RWF_NOWAIT
    for o in offsets:
        try:
            pv(fd, b, o, fl)
        except BlockingIOError:
            NOWAIT_EAGAIN[0] += 1
            os.pread(fd, BS, o)


def lib_single_loop(eng, ra, offsets):
    """The C exec path without the Python wrapper (analysis only)."""
    ex, c, h, take = lib.sl_exec, eng._c, ra.tail, ra.ring.take
    p = ra.offs + (ra.depth - 1)
    for o in offsets:
        p[0] = o
        if not ex(c, h):
            take(1)


def lib_batch_loop(eng, ra, src, nbatches):
    ex, c, h, mm, offs, d = lib.sl_exec, eng._c, ra.head, ffi.memmove, ra.offs, ra.depth
    take = ra.ring.take
    for i in range(nbatches):
        mm(offs, src + i * d, 8 * d)
        if not ex(c, h):
            take(1)


class Chains:
    """256 open -> read -> close chains, one per 4 KiB file, run 32 per
    exec_many."""

    def __init__(self, ctx, paths, batch=DEPTH):
        self.ctx = ctx
        self.chains, self.finals, self.cells = [], [], []
        for p in paths:
            fdv, nv, cv = ctx.var(), ctx.var(), ctx.var()
            buf = ctx.buffer(BS)
            ch = ctx.chain()
            ch.openat(AT_FDCWD, os.fsencode(p), os.O_RDONLY, ret=fdv,
                      flags=compat.SYSLET_STOP_ON_NEGATIVE)
            ch.read(fdv, buf, BS, ret=nv)
            ch.close(fdv, ret=cv)
            self.chains.append(ch)
            self.cells.append((fdv, nv, cv))
        self.groups = [self.chains[i:i + batch] for i in range(0, len(paths), batch)]
        self.expect = [[c.tail for c in g] for g in self.groups]
        self.heads = [[c.head.addr for c in g] for g in self.groups]
        self.batches = [ctx.batch(g) for g in self.groups]

    def _settle(self, g, fin):
        pending = {self.groups[g][i].tail.addr for i, f in enumerate(fin) if f is None}
        bad = 0
        while pending:
            for a in self.ctx.wait(1):
                pending.discard(getattr(a, "addr", a))
        for i, f in enumerate(fin):
            if f is not None and f is not self.expect[g][i]:
                bad += 1
        return bad

    def run(self, rounds):
        batches, expect = self.batches, self.expect
        bad = 0
        for _ in range(rounds):
            for g, b in enumerate(batches):
                fin = b.run()
                if fin != expect[g]:
                    bad += self._settle(g, fin)
        return bad

    def run_engine_batch(self, rounds):
        """Engine.exec_batch on pre-made head lists (no builder layer)."""
        eb, heads, wait = self.ctx.engine.exec_batch, self.heads, self.ctx.wait
        for _ in range(rounds):
            for h in heads:
                pending = eb(h).count(0)            # went async: reap their entries
                while pending > 0:
                    pending -= len(wait(1))

    def check(self):
        bad = 0
        for fdv, nv, cv in self.cells:
            bad += fdv.value < 0 or nv.value != BS or cv.value != 0
        return bad


def sync_chains(paths, rounds):
    op, rd, cl, fl = os.open, os.read, os.close, os.O_RDONLY
    for _ in range(rounds):
        for p in paths:
            fd = op(p, fl)
            rd(fd, BS)
            cl(fd)


# ---- measurement ---------------------------------------------------------------------

def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def sample(fn, ops):
    """Runs fn once: (ops, wall seconds, process CPU seconds)."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    fn()
    return ops, time.perf_counter() - t0, time.process_time() - c0


def c_sample(exe, mode, path, n, seed):
    if mode == "pread":
        cmd = [str(exe), "pread", path, str(n), str(seed)]
    else:
        cmd = [str(exe), mode, path, str(n), str(DEPTH), str(seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    kv = dict(x.split("=") for x in out.split())
    return int(kv["reads"]), float(kv["wall_s"]), float(kv["cpu_s"])


class Result:
    """One paired comparison: per-run rates (wall and CPU) and ratios."""

    def __init__(self):
        self.cand, self.base, self.rw, self.rc = [], [], [], []

    def add(self, a, b):
        cw, cc = a[0] / a[1], a[0] / max(a[2], 1e-9)
        bw, bc = b[0] / b[1], b[0] / max(b[2], 1e-9)
        self.cand.append(cw)
        self.base.append(bw)
        self.rw.append(cw / bw)
        self.rc.append(cc / bc)


def paired(runs, slices, cand, base):
    """cand(j) / base(j) run slice j of the work and return (ops, wall, cpu).
    Each run alternates the slices of candidate and baseline (A B B A ...),
    so drift and other load on the machine hit both about equally; the run's
    ratio is total candidate rate over total baseline rate."""
    res = Result()
    for r in range(runs):
        a, b = [0, 0.0, 0.0], [0, 0.0, 0.0]
        for j in range(slices):
            order = ((cand, a), (base, b)) if (r + j) % 2 == 0 else ((base, b), (cand, a))
            for fn, acc in order:
                s = fn(j)
                for k in range(3):
                    acc[k] += s[k]
        res.add(a, b)
    return res


def counters_delta(eng, fn):
    a = eng.counters()
    fn()
    b = eng.counters()
    return {k: b[k] - a[k] for k in a}


def per(d, n):
    keys = ("enters", "segments", "atoms_uring", "atoms_inline", "atoms_nowait", "atoms_pool",
            "pool_batches", "syslets_sync", "syslets_async", "overstops")
    return " ".join(f"{k}={d[k] / n:.2f}" for k in keys if d.get(k))


def bench_backend(backend, args, exe, harn, data, paths, rows, notes):
    # The raw layer as the issue states it: compat.async_exec on the
    # process-wide default context, put on this backend.
    compat.reset_default(backend)
    eng = compat.default_engine()
    actual = eng.backend
    ring = Ring(eng)
    fd = os.open(data, os.O_RDONLY)
    nblocks = os.path.getsize(data) // BS
    rnd = random.Random(args.seed)
    S = args.slices
    nb = max(S, args.reads // DEPTH // S * S)        # batches, a multiple of S
    nbs = nb // S                                    # batches per slice
    offs = array.array("Q", (rnd.randrange(nblocks) * BS for _ in range(nb * DEPTH)))
    src = ffi.from_buffer("uint64_t[]", offs)
    offs_list = offs.tolist()
    ns = max(1, args.single // S)
    single_offs = offs_list[:ns * S]
    ra = ReadAtoms(eng, ring, fd, DEPTH, compat.async_exec)
    tag = backend if actual == backend else f"{backend}->{actual}"
    runs = args.runs
    bad = [0]
    # The batch and chain targets are io_uring's (a C io_uring loop; shared
    # submissions).  Without io_uring every atom is its own system call, so
    # the pool-only backend's ceiling is a C preadv2 loop and the Python sync
    # calls themselves: its rows are reported, not judged (docs/benchmarks.md).
    uring = actual == "io_uring"
    if not uring:
        notes.append(f"[{tag}] batch and chain rows are (info): their targets need io_uring's "
                     "shared submissions; the pool-only ceiling is one system call per atom")

    def add_bad(n):
        bad[0] += n

    # warm up every path once
    add_bad(ra.run_batches(src, min(nb, 256)))
    add_bad(ra.run_single(single_offs[:2000]))
    pread_loop(fd, offs_list[:2000])

    def cand_batch(j):
        return sample(lambda: add_bad(ra.run_batches(src + j * nbs * DEPTH, nbs)), nbs * DEPTH)

    def base_c(j):
        return c_sample(exe, "uring", data, nbs * DEPTH, rnd.randrange(1, 1 << 62))

    def base_pread_batch(j):
        o = offs_list[j * nbs * DEPTH:(j + 1) * nbs * DEPTH]
        return sample(lambda: pread_loop(fd, o), len(o))

    def cand_single(j):
        o = single_offs[j * ns:(j + 1) * ns]
        return sample(lambda: add_bad(ra.run_single(o)), len(o))

    def base_pread_single(j):
        o = single_offs[j * ns:(j + 1) * ns]
        return sample(lambda: pread_loop(fd, o), len(o))

    print(f"  [{tag}] batch vs C io_uring QD32 ...", flush=True)
    rows.append((tag, "32 pread64 atoms by next, 1 async_exec", "C liburing QD32, submit_and_wait(32)",
                 paired(runs, S, cand_batch, base_c), TARGETS["batch"] if uring else None))
    print(f"  [{tag}] batch vs os.pread ...", flush=True)
    rows.append((tag, "  same", "os.pread loop, same offsets",
                 paired(runs, S, cand_batch, base_pread_batch), None))
    print(f"  [{tag}] single vs os.pread ...", flush=True)
    rows.append((tag, "1 pread64 atom per async_exec", "os.pread loop, same offsets",
                 paired(runs, S, cand_single, base_pread_single), TARGETS["single"]))
    floor_exec = FLOOR[0]
    if floor_exec is not None:
        def floor_single(j):
            o = single_offs[j * ns:(j + 1) * ns]
            return sample(lambda: add_bad(ra.run_single(o, floor_exec)), len(o))
        print(f"  [{tag}] no-engine cffi call vs os.pread ...", flush=True)
        rows.append((tag, "  no engine, 1 cffi NOWAIT call", "os.pread loop, same offsets",
                     paired(runs, S, floor_single, base_pread_single), None))

    # chains (builder layer, a Context of its own on the same backend)
    rps = max(1, args.chains // len(paths) // S)     # rounds per slice
    nch = rps * len(paths)
    with compat.Context(backend, ring_slots=256, arena_size=1 << 20) as ctx:
        chs = Chains(ctx, paths)
        add_bad(chs.run(2) + chs.check())

        def cand_chains(j):
            return sample(lambda: add_bad(chs.run(rps)), nch)

        def base_sync(j):
            return sample(lambda: sync_chains(paths, rps), nch)

        print(f"  [{tag}] chains vs os.open/read/close ...", flush=True)
        rows.append((tag, "32 open->read->close per Batch.run", "os.open/os.read/os.close",
                     paired(runs, S, cand_chains, base_sync), TARGETS["chains"] if uring else None))
        add_bad(chs.check())
        ch_cnt = counters_delta(ctx.engine, lambda: chs.run(1))
        ch_batches = len(chs.groups)
        if args.breakdown:
            def eb(j):
                return sample(lambda: chs.run_engine_batch(rps), nch)
            chain_pieces = paired(runs, S, cand_chains, eb)

    bc = counters_delta(eng, lambda: ra.run_batches(src, min(nb, 1000)))
    sc = counters_delta(eng, lambda: ra.run_single(single_offs[:10000]))
    notes.append(f"[{tag}] counters per batch of 32: " + per(bc, min(nb, 1000)))
    notes.append(f"[{tag}] counters per single exec: " + per(sc, min(len(single_offs), 10000)))
    notes.append(f"[{tag}] counters per exec_many of 32 chains: " + per(ch_cnt, ch_batches))

    if args.breakdown:
        try:
            breakdown(args, tag, actual, eng, ra, fd, src, nb, single_offs, exe, harn, data, rnd,
                      chain_pieces, notes)
        except Exception as e:          # analysis only: keep the results above
            notes.append(f"[{tag}] breakdown failed: {type(e).__name__}: {e}")

    if bad[0]:
        notes.append(f"[{tag}] WARNING: {bad[0]} wrong results (bad batches/chains/reads)")
    ring.close()
    compat.reset_default()
    os.close(fd)
    return bad[0]


def breakdown(args, tag, actual, eng, ra, fd, src, nb, single_offs, exe, harn, data, rnd,
              chain_pieces, notes):
    """ns per read of the pieces of each path (interleaved, medians), for
    finding where the time goes."""
    runs = args.runs
    mv = memoryview(ffi.buffer(ffi.cast("char *", int(ra.bufw[0])), BS))
    n1 = len(single_offs)
    nbb = min(nb, 4096)
    pieces = {
        "py single: compat.async_exec": (lambda: ra.run_single(single_offs), n1),
        "py single: Engine.exec": (lambda: ra.run_single(single_offs, eng.exec), n1),
        "py single: lib.sl_exec direct (no Engine wrapper)":
            (lambda: lib_single_loop(eng, ra, single_offs), n1),
        "py single: os.preadv(RWF_NOWAIT), the engine's inline call":
            (lambda: preadv_nowait_loop(fd, single_offs, mv), n1),
        "py single: os.pread": (lambda: pread_loop(fd, single_offs), n1),
        "py batch: Engine.exec + result check": (lambda: ra.run_batches(src, nbb), nbb * DEPTH),
        "py batch: lib.sl_exec direct, no check":
            (lambda: lib_batch_loop(eng, ra, src, nbb), nbb * DEPTH),
    }
    cn = nbb * DEPTH
    c_pieces = {
        "C: liburing QD32, unlinked": lambda: c_sample(exe, "uring", data, cn, rnd.randrange(1, 1 << 62)),
        "C: liburing QD32, 32 SQEs HARDLINKed":
            lambda: c_sample(exe, "uring-linked", data, cn, rnd.randrange(1, 1 << 62)),
        "C: pread loop": lambda: c_sample(exe, "pread", data, cn, rnd.randrange(1, 1 << 62)),
    }
    for label, (variant, mode) in {
            "C: sl_exec, 1-atom syslet (engine without Python)": ("engine", "single"),
            "C: sl_exec, 32-atom syslet (engine without Python)": ("engine", "batch"),
            "C: preadv2(RWF_NOWAIT) loop": ("engine", "nowait")}.items():
        if variant in harn:
            c_pieces[label] = (lambda v=variant, m=mode:
                               harness(harn[v], m, actual, data, cn, rnd.randrange(1, 1 << 62)))
    res = {k: [] for k in list(pieces) + list(c_pieces)}
    for _ in range(runs):
        for k, (fn, n) in pieces.items():
            s = sample(fn, n)
            res[k].append((s[1] / n * 1e9, s[2] / n * 1e9))
        for k, fn in c_pieces.items():
            s = fn()
            if len(s) == 2:
                res[k].append(s)
            else:
                res[k].append((s[1] / s[0] * 1e9, s[2] / s[0] * 1e9))
    notes.append(f"[{tag}] breakdown, ns per read (wall / CPU, medians of {runs}):")
    for k, v in res.items():
        notes.append(f"[{tag}]   {k:58s} {statistics.median(x[0] for x in v):6.0f} / "
                     f"{statistics.median(x[1] for x in v):6.0f}")
    cp = chain_pieces
    if NOWAIT_EAGAIN[0]:
        notes.append(f"[{tag}]   (os.preadv RWF_NOWAIT met EAGAIN {NOWAIT_EAGAIN[0]} times on cached pages)")
        NOWAIT_EAGAIN[0] = 0
    notes.append(f"[{tag}]   {'chains: Context.exec_many':58s} {1e9 / statistics.median(cp.cand):6.0f} "
                 f"ns/chain wall")
    notes.append(f"[{tag}]   {'chains: Engine.exec_batch on ready head lists':58s} "
                 f"{1e9 / statistics.median(cp.base):6.0f} ns/chain wall")


def harness(exe, mode, backend, path, n, seed):
    out = subprocess.run([str(exe), mode, "1" if backend == "io_uring" else "0", path, str(n),
                          str(seed)], check=True, capture_output=True, text=True).stdout
    kv = dict(x.split("=") for x in out.split())
    return float(kv["ns_per_read"]), float(kv["cpu_ns_per_read"])


def fmt_rate(x):
    return f"{x / 1e3:7.0f}k"


def fmt_ratio(rs):
    return f"{statistics.median(rs):4.2f} ({min(rs):.2f}-{max(rs):.2f})"


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs (about 1/8 of the work)")
    ap.add_argument("--backend", choices=("both", "io_uring", "threadpool"), default="both",
                    help="engine backend(s) to measure (default both)")
    ap.add_argument("--runs", type=int, default=None,
                    help="paired runs per comparison (>= 5; default 5 quick, 7 full)")
    ap.add_argument("--slices", type=int, default=None,
                    help="alternating slices per run (default 4 quick, 8 full)")
    ap.add_argument("--size-mib", type=int, default=256, help="data file size (default 256)")
    ap.add_argument("--dir", default=None, help="where to create the scratch directory")
    ap.add_argument("--seed", type=int, default=2007)
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the per-piece timings used for analysis")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a target fails or a result is wrong")
    args = ap.parse_args(argv)
    scale = 8 if args.quick else 1
    args.runs = max(5, args.runs or (5 if args.quick else 7))
    args.slices = max(1, args.slices or (4 if args.quick else 8))
    args.reads = (1 << 19) // scale
    args.single = (1 << 18) // scale
    args.chains = (1 << 16) // scale

    exe = build_c()
    harn = build_harness() if args.breakdown else {}
    FLOOR[0] = build_floor()
    tmp = tempfile.mkdtemp(prefix="bench-compat-", dir=args.dir)
    rows, notes = [], []
    bad = 0
    t0 = time.perf_counter()
    load0 = loadavg()
    try:
        data = os.path.join(tmp, "data")
        make_file(data, args.size_mib << 20)
        resident = warm(data)
        sd = os.path.join(tmp, "small")
        os.mkdir(sd)
        paths = []
        for j in range(256):
            p = os.path.join(sd, f"f{j:03d}")
            with open(p, "wb") as f:
                f.write(os.urandom(BS))
            paths.append(p)
        for p in paths:
            with open(p, "rb") as f:
                f.read()
        res = "unknown" if resident is None else f"{resident * 100:.1f}%"
        print(f"bench_compat: {args.size_mib} MiB file ({res} page-cache resident); "
              f"{args.runs} paired runs x {args.slices} alternating slices; per run "
              f"{args.reads} batch reads, {args.single} single reads, {args.chains} chains; "
              f"{os.cpu_count()} cpus, load {load0:.2f}", flush=True)
        backends = ("io_uring", "threadpool") if args.backend == "both" else (args.backend,)
        for be in backends:
            bad += bench_backend(be, args, exe, harn, data, paths, rows, notes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = loadavg()

    print()
    hdr = (f"{'backend':10s} {'workload':36s} {'ops/s':>8s}  {'baseline':36s} {'ops/s':>8s}  "
           f"{'ratio wall (min-max)':20s} {'CPU ratio':9s} {'target':>6s}  result")
    print(hdr)
    print("-" * len(hdr))
    fails = 0
    for tag, what, base, r, target in rows:
        med = statistics.median(r.rw)
        if target is None:
            tgt, result = "", "(info)"
        else:
            tgt = f">={target:.2f}"
            result = "PASS" if med >= target else "FAIL"
            fails += result == "FAIL"
        print(f"{tag:10s} {what:36s} {fmt_rate(statistics.median(r.cand))}  {base:36s} "
              f"{fmt_rate(statistics.median(r.base))}  {fmt_ratio(r.rw):20s} "
              f"{statistics.median(r.rc):9.2f} {tgt:>6s}  {result}")
    print("ratio = candidate/baseline throughput (wall clock), median of per-run ratios; "
          "CPU ratio: the same from process CPU time (robust to other load on the machine)")
    if max(load0, load1) > 0.5:
        print(f"NOTE: load average {load0:.2f} -> {load1:.2f}: other work shared the CPUs; "
              "wall-clock ratios are noisy, compare with the CPU ratios")
    print()
    for n in notes:
        print(n)
    ntarget = sum(1 for r in rows if r[4] is not None)
    print(f"\n{ntarget - fails} passed, {fails} failed, {bad} wrong results; "
          f"{time.perf_counter() - t0:.0f} s")
    if args.strict and (fails or bad):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
