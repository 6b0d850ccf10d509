#!/usr/bin/env python3
"""Benchmarks for the syslet layer (compat) against baselines measured in the
same run.

Workloads, on a page-cached file this script creates (256 MiB of random
bytes, 4 KiB reads at random 4 KiB-aligned offsets):

  batch   fio-v4 style: 32 pread64 atoms chained by ``next`` (flags 0), one
          async_exec (Engine.exec) per batch; the 32 offset words are
          rewritten in place between batches (the atoms read them by
          pointer); the ring is reaped when a batch goes async.
          Target: >= 0.85 x a C liburing loop at queue depth 32
          (bench/c/uring_read_loop.c, submit_and_wait(32) per batch).
  single  one single-atom syslet per async_exec (the atom's offset word is
          rewritten each time).  Target: >= 0.80 x an os.pread loop over
          the same offsets.
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

TARGETS = {          # workload -> (minimum ratio, baseline label)
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

    def __init__(self, eng, ring, fd, depth):
        self.eng, self.ring, self.depth = eng, ring, depth
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
        ex, mm, take = self.eng.exec, ffi.memmove, self.ring.take
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

    def run_single(self, offsets):
        """One single-atom syslet per exec: the last atom (next = NULL)."""
        ex, take, h = self.eng.exec, self.ring.take, self.tail
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


def preadv_nowait_loop(fd, offsets, buf):
    pv, b, fl = os.preadv, [buf], os.RWF_NOWAIT
    for o in offsets:
        pv(fd, b, o, fl)


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


def c_loop(exe, mode, path, n, seed):
    if mode == "pread":
        cmd = [str(exe), "pread", path, str(n), str(seed)]
    else:
        cmd = [str(exe), mode, path, str(n), str(DEPTH), str(seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    kv = dict(x.split("=") for x in out.split())
    return float(kv["reads_per_sec"])


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
        em, groups, expect = self.ctx.exec_many, self.groups, self.expect
        bad = 0
        for _ in range(rounds):
            for g, lst in enumerate(groups):
                fin = em(lst)
                if fin != expect[g]:
                    bad += self._settle(g, fin)
        return bad

    def run_engine_batch(self, rounds):
        """Engine.exec_batch on pre-made head lists (no builder layer)."""
        eb, heads = self.ctx.engine.exec_batch, self.heads
        for _ in range(rounds):
            for h in heads:
                eb(h)

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


def paired(runs, cand, base):
    """cand/base: callables returning ops/s.  Returns (cand list, base list,
    ratio list) with the order alternating per run."""
    cs, bs, rs = [], [], []
    for r in range(runs):
        if r % 2 == 0:
            c = cand()
            b = base()
        else:
            b = base()
            c = cand()
        cs.append(c)
        bs.append(b)
        rs.append(c / b)
    return cs, bs, rs


def fmt_rate(x):
    return f"{x / 1e3:8.0f}k"


def fmt_ratio(rs):
    return f"{statistics.median(rs):5.2f} ({min(rs):.2f}-{max(rs):.2f})"


def counters_delta(eng, fn):
    a = eng.counters()
    fn()
    b = eng.counters()
    return {k: b[k] - a[k] for k in a}


def bench_backend(backend, args, exe, data, paths, rows, notes):
    eng = compat.Engine(backend)
    actual = eng.backend
    ring = Ring(eng)
    fd = os.open(data, os.O_RDONLY)
    size = os.path.getsize(data)
    nblocks = size // BS
    rnd = random.Random(args.seed)
    nb = args.reads // DEPTH
    offs = array.array("Q", (rnd.randrange(nblocks) * BS for _ in range(nb * DEPTH)))
    src = ffi.from_buffer("uint64_t[]", offs)
    offs_list = offs.tolist()
    single_offs = offs_list[:args.single]
    ra = ReadAtoms(eng, ring, fd, DEPTH)
    tag = f"{backend}" + (f" (engine fell back to {actual})" if actual != backend else "")
    runs = args.runs
    bad = [0]

    # warm up every path once
    bad[0] += ra.run_batches(src, min(nb, 256))
    bad[0] += ra.run_single(single_offs[:2000])
    pread_loop(fd, offs_list[:2000])

    def cand_batch():
        t = timed(lambda: bad.__setitem__(0, bad[0] + ra.run_batches(src, nb)))
        return nb * DEPTH / t

    def base_c():
        return c_loop(exe, "uring", data, nb * DEPTH, rnd.randrange(1 << 62))

    def base_pread_all():
        return len(offs_list) / timed(lambda: pread_loop(fd, offs_list))

    def cand_single():
        t = timed(lambda: bad.__setitem__(0, bad[0] + ra.run_single(single_offs)))
        return len(single_offs) / t

    def base_pread_single():
        return len(single_offs) / timed(lambda: pread_loop(fd, single_offs))

    print(f"  [{tag}] batch vs C io_uring QD32 ...", flush=True)
    c1, b1, r1 = paired(runs, cand_batch, base_c)
    rows.append((tag, "batch", "32 pread64 atoms by next, 1 exec/batch", c1,
                 "C liburing QD32 (submit_and_wait 32)", b1, r1, TARGETS["batch"]))
    print(f"  [{tag}] batch vs os.pread ...", flush=True)
    c2, b2, r2 = paired(runs, cand_batch, base_pread_all)
    rows.append((tag, "batch", "  same", c2, "os.pread loop (same offsets)", b2, r2, None))
    print(f"  [{tag}] single vs os.pread ...", flush=True)
    c3, b3, r3 = paired(runs, cand_single, base_pread_single)
    rows.append((tag, "single", "1 pread64 atom per exec", c3,
                 "os.pread loop (same offsets)", b3, r3, TARGETS["single"]))

    # chains (builder layer, its own context on the same backend)
    rounds = max(1, args.chains // len(paths))
    nch = rounds * len(paths)
    with compat.Context(backend, ring_slots=256, arena_size=1 << 20) as ctx:
        chs = Chains(ctx, paths)
        bad[0] += chs.run(2) + chs.check()

        def cand_chains():
            t = timed(lambda: bad.__setitem__(0, bad[0] + chs.run(rounds)))
            return nch / t

        def base_sync():
            return nch / timed(lambda: sync_chains(paths, rounds))

        print(f"  [{tag}] chains vs os.open/read/close ...", flush=True)
        c4, b4, r4 = paired(runs, cand_chains, base_sync)
        rows.append((tag, "chains", "32 open->read->close per exec_many", c4,
                     "os.open/os.read/os.close", b4, r4, TARGETS["chains"]))
        bad[0] += chs.check()
        ch_cnt = counters_delta(ctx.engine, lambda: chs.run(1))
        ch_batches = len(chs.groups)
        if args.breakdown:
            eb = [nch / timed(lambda: chs.run_engine_batch(rounds)) for _ in range(runs)]
            ch_em = [nch / timed(lambda: chs.run(rounds)) for _ in range(runs)]
            bs = [nch / timed(lambda: sync_chains(paths, rounds)) for _ in range(runs)]

    # counters per unit of work
    bc = counters_delta(eng, lambda: ra.run_batches(src, 1000))
    sc = counters_delta(eng, lambda: ra.run_single(single_offs[:10000]))
    notes.append(f"[{tag}] counters per batch of 32 (1000 batches): " + per(bc, 1000))
    notes.append(f"[{tag}] counters per single exec (10000): " + per(sc, 10000))
    notes.append(f"[{tag}] counters per exec_many of 32 chains ({ch_batches}): " + per(ch_cnt, ch_batches))

    if args.breakdown:
        # ns per op of the pieces, interleaved, medians
        mv = memoryview(ffi.buffer(ffi.cast("char *", int(ra.bufw[0])), BS))
        n1 = len(single_offs)
        pieces = {
            "single: Engine.exec": lambda: ra.run_single(single_offs),
            "single: lib.sl_exec (no Python wrapper)": lambda: lib_single_loop(eng, ra, single_offs),
            "single: os.preadv RWF_NOWAIT (the engine's inline call)":
                lambda: preadv_nowait_loop(fd, single_offs, mv),
            "single: os.pread": lambda: pread_loop(fd, single_offs),
        }
        res = {k: [] for k in pieces}
        for _ in range(runs):
            for k, fn in pieces.items():
                res[k].append(timed(fn) / n1 * 1e9)
        for k, v in res.items():
            notes.append(f"[{tag}] {k:58s} {statistics.median(v):6.0f} ns/op")
        nbb = min(nb, 8192)
        bpieces = {
            "batch: Engine.exec per 32": lambda: ra.run_batches(src, nbb),
            "batch: lib.sl_exec per 32 (no wrapper, no result check)":
                lambda: lib_batch_loop(eng, ra, src, nbb),
        }
        res = {k: [] for k in bpieces}
        for _ in range(runs):
            for k, fn in bpieces.items():
                res[k].append(timed(fn) / (nbb * DEPTH) * 1e9)
        for k, v in res.items():
            notes.append(f"[{tag}] {k:58s} {statistics.median(v):6.0f} ns/read")
        cl = [1e9 / c_loop(exe, "uring-linked", data, nbb * DEPTH, rnd.randrange(1 << 62))
              for _ in range(runs)]
        cu = [1e9 / c_loop(exe, "uring", data, nbb * DEPTH, rnd.randrange(1 << 62))
              for _ in range(runs)]
        notes.append(f"[{tag}] {'batch: C liburing QD32, 32 SQEs HARDLINKed':58s} "
                     f"{statistics.median(cl):6.0f} ns/read")
        notes.append(f"[{tag}] {'batch: C liburing QD32, unlinked':58s} "
                     f"{statistics.median(cu):6.0f} ns/read")
        notes.append(f"[{tag}] {'chains: Context.exec_many':58s} "
                     f"{1e9 / statistics.median(ch_em):6.0f} ns/chain")
        notes.append(f"[{tag}] {'chains: Engine.exec_batch on ready head lists':58s} "
                     f"{1e9 / statistics.median(eb):6.0f} ns/chain")
        notes.append(f"[{tag}] {'chains: os.open/os.read/os.close':58s} "
                     f"{1e9 / statistics.median(bs):6.0f} ns/chain")

    if bad[0]:
        notes.append(f"[{tag}] WARNING: {bad[0]} wrong results (bad batches/chains/reads)")
    ring.close()
    eng.close()
    os.close(fd)
    return bad[0]


def per(d, n):
    keys = ("enters", "segments", "atoms_uring", "atoms_inline", "atoms_nowait", "atoms_pool",
            "pool_batches", "syslets_sync", "syslets_async", "overstops")
    return " ".join(f"{k}={d[k] / n:.2f}" for k in keys if d.get(k))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs (about 1/8 of the work)")
    ap.add_argument("--backend", choices=("both", "io_uring", "threadpool"), default="both")
    ap.add_argument("--runs", type=int, default=None, help="paired runs per comparison (>= 5)")
    ap.add_argument("--size-mib", type=int, default=256, help="data file size (default 256)")
    ap.add_argument("--dir", default=None, help="where to create the scratch directory")
    ap.add_argument("--seed", type=int, default=2007)
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the per-piece timings and counters used for analysis")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = ap.parse_args(argv)
    scale = 8 if args.quick else 1
    args.runs = max(5, args.runs or (5 if args.quick else 7))
    args.reads = (1 << 19) // scale
    args.single = (1 << 18) // scale
    args.chains = (1 << 16) // scale

    exe = build_c()
    tmp = tempfile.mkdtemp(prefix="bench-compat-", dir=args.dir)
    rows, notes = [], []
    bad = 0
    t0 = time.perf_counter()
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
        print(f"bench_compat: {args.size_mib} MiB file, page cache resident {res}; "
              f"{args.runs} paired runs; {args.reads} batch reads, {args.single} single reads, "
              f"{args.chains} chains per measurement; cores={os.cpu_count()}", flush=True)
        backends = ("io_uring", "threadpool") if args.backend == "both" else (args.backend,)
        for be in backends:
            bad += bench_backend(be, args, exe, data, paths, rows, notes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    hdr = (f"{'backend':10s} {'workload':38s} {'ops/s':>9s}  {'baseline':38s} {'ops/s':>9s}  "
           f"{'ratio (min-max)':18s} {'target':>7s}  result")
    print(hdr)
    print("-" * len(hdr))
    fails = 0
    for tag, _kind, what, cs, base, bs, rs, target in rows:
        med = statistics.median(rs)
        if target is None:
            tgt, result = "", "(info)"
        else:
            tgt = f">={target:.2f}"
            result = "PASS" if med >= target else "FAIL"
            fails += result == "FAIL"
        print(f"{tag:10s} {what:38s} {fmt_rate(statistics.median(cs))}  {base:38s} "
              f"{fmt_rate(statistics.median(bs))}  {fmt_ratio(rs):18s} {tgt:>7s}  {result}")
    print()
    for n in notes:
        print(n)
    print(f"\n{len([r for r in rows if r[7] is not None]) - fails} passed, {fails} failed, "
          f"{bad} wrong results; {time.perf_counter() - t0:.0f} s")
    if args.strict and (fails or bad):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
