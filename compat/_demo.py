"""``syslet-compat demo`` (``python -m compat demo``): syslet programs on a
scratch file, each verified and timed next to the plain synchronous system
calls.

A syslet is a small program of system calls -- atoms chained by ``next``,
with stop conditions, branches and loops -- handed to the kernel in one
call.  It runs in the caller until an atom would block; then the call
returns at once, the rest finishes in the background, and the final atom
appears in a completion ring in the program's memory.

(a) a file copy as one looping syslet:
    read(src, buf, 64 KiB) [STOP_ON_NON_POSITIVE] -> write(dst, buf, *n)
    -> umem_add(&total, *n) -> back to the read;
(b) fio-style random 4 KiB reads, 32 in flight, through the raw ABI
    (ctypes io units, async_exec, completion-ring reaping, async_wait);
(c) batches of 32 open -> read -> close chains (the fd flows through the
    open's ret cell) via Context.batch (Batch.run: exec_many with reused arrays);
(d) the same random 4 KiB reads two ways, 32 syslets in flight through
    Context.exec and Context.wait, each against a plain os.preadv loop:
    from the page cache -- nothing blocks, so every syslet completes inside
    exec and nothing reaches the ring -- and with O_DIRECT from the disk (by
    default the scratch directory is made in the current directory, not in a
    tmpfs) -- every read blocks, so every syslet goes async and is reaped
    from the ring; the counters show both.

The scratch file holds a pattern derivable from the offset (the native word
at byte offset x is PATTERN_BASE + x), so every read can be checked.
Exit status 1 when any verification fails; 2 (one line on stderr) for a bad
option.
"""
import argparse
import array
import ctypes
import mmap
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import compat
from compat import (AT_FDCWD, NR, SYSLET_STOP_ON_NEGATIVE, SYSLET_STOP_ON_NON_POSITIVE, Atom,
                    Buffer, Context, Var, async_head_user, syslet_uatom)

PATTERN_BASE = 0x5EED << 48
BS = 4096
MiB = 1 << 20


#: What a syslet is, in two plain sentences (the demo's first lines).
WHAT_IS_A_SYSLET = (
    "A syslet is a small program of system calls (atoms, each naming one call and where its "
    "arguments and result live) that a program hands to the kernel in a single call.\n"
    "It runs in the caller and returns the result at once when nothing blocks; when a call "
    "would block, the caller gets control back immediately and the rest finishes in the "
    "background, its last atom then appearing in a completion ring in the program's memory.")


def _at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, not {v}")
        return v
    parse.__name__ = "number"
    return parse


def _directory(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not os.access(text, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: not writable")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("auto", "io_uring", "threadpool"), default=None,
                   help="engine backend (default: URING_SHIM_BACKEND or auto)")
    p.add_argument("--size-mib", type=_at_least(1), default=64, metavar="N",
                   help="scratch file size in MiB (default 64)")
    p.add_argument("--reads", type=_at_least(1), default=65536, metavar="N",
                   help="random reads in (b) (default 65536)")
    p.add_argument("--depth", type=_at_least(1), default=32, metavar="N",
                   help="reads in flight in (b) and (d) (default 32)")
    p.add_argument("--chains", type=_at_least(1), default=8192, metavar="N",
                   help="open/read/close chains in (c) (default 8192)")
    p.add_argument("--repeat", type=_at_least(1), default=5, metavar="N",
                   help="timed pairs (syslet, baseline) per measurement, after one untimed "
                        "warm-up of each; medians are shown (default 5)")
    p.add_argument("--dir", type=_directory, default=None, metavar="DIR",
                   help="an existing directory to make the scratch directory in (default: "
                        "the current directory, unless it is a tmpfs: then the system's "
                        "temporary one)")
    p.add_argument("--direct-reads", type=_at_least(1), default=8192, metavar="N",
                   help="random reads per case in (d) (default 8192)")
    p.add_argument("--seed", type=int, default=2007, metavar="N")


# ---- helpers -----------------------------------------------------------------

class Report:
    def __init__(self) -> None:
        self.failures: List[str] = []

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        if not ok:
            self.failures.append(f"{what}: {detail}" if detail else what)
        return ok


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    ts: List[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _timed(fn: Callable[[], object]) -> float:
    """fn's own figure when it returns one (seconds), else its wall time."""
    t0 = time.perf_counter()
    r = fn()
    return r if isinstance(r, float) else time.perf_counter() - t0


def _paired(fa: Callable[[], object], fb: Callable[[], object],
            repeat: int) -> Tuple[float, float, float]:
    """Runs fa and fb once untimed, then ``repeat`` timed pairs in alternating
    order (a b, b a, ...), as the benchmarks do on this shared machine.
    Returns (median time of a, median time of b, median of the per-pair
    speed ratios t_b / t_a)."""
    fa()
    fb()
    ta: List[float] = []
    tb: List[float] = []
    ratios: List[float] = []
    for i in range(max(1, repeat)):
        if i % 2 == 0:
            a = _timed(fa)
            b = _timed(fb)
        else:
            b = _timed(fb)
            a = _timed(fa)
        ta.append(a)
        tb.append(b)
        ratios.append(b / a if a > 0 else float("inf"))
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def _fmt_counters(c: Dict[str, int]) -> str:
    keys = [k for k, v in c.items() if v]
    return " ".join(f"{k}={c[k]}" for k in keys) or "(all zero)"


def _pattern(size: int) -> bytes:
    return array.array("Q", range(PATTERN_BASE, PATTERN_BASE + size, 8)).tobytes()


def _rate(n: int, dt: float) -> float:
    return n / dt if dt > 0 else float("inf")


# ---- (a) copy loop -------------------------------------------------------------

def _copy_syslet(ctx: Context, src: str, dst: str,
                 chunk: int) -> Tuple[Atom, Atom, Var, Var, Var]:
    """One looping syslet copies src to dst.  Returns (final atom, read atom,
    n, total, w)."""
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        buf = ctx.buffer(chunk)
        n, w, total = ctx.var(), ctx.var(), ctx.var(0)
        ch = ctx.chain()
        rd = ch.read(sfd, buf, chunk, ret=n, flags=SYSLET_STOP_ON_NON_POSITIVE)
        ch.write(dfd, buf, n, ret=w, flags=SYSLET_STOP_ON_NEGATIVE)  # count by pointer
        ch.umem_add(total.addr, n)          # &total as a constant, the increment by pointer
        ch.loop_to(rd)
        final = ctx.exec(ch)
        if final is None:                   # went async: its final atom arrives in the ring
            got: List[Atom] = []
            while not got:
                got = ctx.wait(1)
            final = got[0]
        return final, rd, n, total, w
    finally:
        os.close(sfd)
        os.close(dfd)


def _copy_rw(src: str, dst: str, chunk: int) -> None:
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        rd, wr = os.read, os.write
        while True:
            b = rd(sfd, chunk)
            if not b:
                break
            wr(dfd, b)
    finally:
        os.close(sfd)
        os.close(dfd)


def part_a(rep: Report, backend: Optional[str], src: str, tmp: str, size: int, pattern: bytes,
           repeat: int) -> None:
    chunk = 64 * 1024
    dst = os.path.join(tmp, "copy.dst")
    results: List[Tuple[Atom, Atom, Var, Var, Var]] = []
    with compat.Context(backend, arena_size=1 << 18) as ctx:
        def run() -> None:
            results.append(_copy_syslet(ctx, src, dst, chunk))
        c0 = ctx.counters()
        t_sys, t_rw, speed = _paired(run, lambda: _copy_rw(src, dst, chunk), repeat)
        run()                               # the copy verified below, and its counters
        c1 = ctx.counters()
        counters = {k: (c1[k] - c0[k]) // (repeat + 2) for k in c1}
        final, rd, n, total, w = results[-1]
        ok = rep.check("(a) final atom is the read", final is rd,
                       f"final={final!r} n={n.value} w={w.value}")
        ok &= rep.check("(a) read ended at EOF", n.value == 0, f"n={n.value}")
        ok &= rep.check("(a) total == size", total.value == size, f"total={total.value} size={size}")
        with open(dst, "rb") as f:
            ok &= rep.check("(a) copy is byte-for-byte equal", f.read() == pattern, "content differs")
    t_cf = _median_time(lambda: shutil.copyfile(src, dst), repeat)
    os.unlink(dst)
    mb = size / MiB
    print("(a) copy loop  read[STOP_ON_NON_POSITIVE] -> write(n by pointer) -> umem_add(&total, n) -> back")
    print(f"    {mb:.0f} MiB, 64 KiB per loop ({size // chunk} loops): syslet {mb / t_sys:7.0f} MiB/s | "
          f"os.read/os.write {mb / t_rw:7.0f} MiB/s (syslet {speed:.2f}x) | "
          f"shutil.copyfile {mb / t_cf:7.0f} MiB/s")
    print(f"    verify: {'OK' if ok else 'FAILED'} (total={total.value}, bytes compared)")
    print(f"    counters per copy: {_fmt_counters(counters)}")


# ---- (b) fio-style raw-ABI reads --------------------------------------------------

class IOUnit(ctypes.Structure):
    """fio's ``struct io_u`` in miniature: one pread64 atom and its argument
    and result words; ``atom.private`` points back at the unit."""
    _fields_ = [
        ("atom", syslet_uatom),
        ("ret", ctypes.c_long),
        ("fd", ctypes.c_ulong),
        ("buf", ctypes.c_ulong),
        ("len", ctypes.c_ulong),
        ("off", ctypes.c_ulong),
    ]


def part_b(rep: Report, src: str, size: int, pattern: bytes, nreads: int, depth: int, seed: int,
           repeat: int) -> None:
    nblocks = size // BS
    rnd = random.Random(seed)
    offs = [rnd.randrange(nblocks) * BS for _ in range(nreads)]
    fd = os.open(src, os.O_RDONLY)
    bufs = mmap.mmap(-1, BS * depth)            # page-aligned read buffers
    anchor = ctypes.c_char.from_buffer(bufs)
    base = ctypes.addressof(anchor)
    units = (IOUnit * depth)()
    slots = 2 * depth
    ring = (ctypes.c_void_p * slots)()
    ahu = async_head_user(ctypes.addressof(ring), ctypes.sizeof(ring), 2**64 - 1)
    atom_addr: List[int] = []
    unit_of: Dict[int, int] = {}
    for k, u in enumerate(units):
        ua = ctypes.addressof(u)
        u.fd, u.buf, u.len = fd, base + k * BS, BS
        a = u.atom
        a.flags, a.nr, a.next = 0, NR["pread64"], None
        a.ret_ptr = ua + IOUnit.ret.offset
        for i, field in enumerate(("fd", "buf", "len", "off")):
            a.arg_ptr[i] = ua + getattr(IOUnit, field).offset
        a.private = ua
        atom_addr.append(ua + IOUnit.atom.offset)
        unit_of[ua] = k
    stats = {"sync": 0, "async": 0, "waits": 0, "bad": 0}

    # The units' words as a flat array: item access is several times cheaper
    # than a ctypes field, and this loop is all Python.
    words = memoryview(units).cast("B").cast("Q")
    per_unit = ctypes.sizeof(IOUnit) // 8
    RET, OFF = IOUnit.ret.offset // 8, IOUnit.off.offset // 8

    def run() -> None:
        async_exec, async_wait = compat.async_exec, compat.async_wait
        cur = [0] * depth
        free = list(range(depth))
        inflight = head = i = bad = nsync = nasync = nwaits = 0

        def complete(k: int) -> bool:
            o = cur[k]
            # (bytes against bytes: memcmp; a memoryview compares item by item)
            return words[k * per_unit + RET] != BS or bufs[k * BS:(k + 1) * BS] != pattern[o:o + BS]

        while i < nreads or inflight:
            while free and i < nreads:
                k = free.pop()
                words[k * per_unit + OFF] = cur[k] = offs[i]
                i += 1
                r = async_exec(atom_addr[k])
                if r:                               # completed synchronously
                    nsync += 1
                    bad += r != atom_addr[k] or complete(k)
                    free.append(k)
                else:                               # went async: will be in the ring
                    nasync += 1
                    inflight += 1
            if inflight:
                got = 0
                while True:                         # poll ring memory first
                    v = ring[head]
                    if not v:
                        break
                    ring[head] = None
                    head = (head + 1) % slots
                    k = unit_of[syslet_uatom.from_address(v).private]
                    bad += complete(k)
                    free.append(k)
                    inflight -= 1
                    got += 1
                if not got:                         # nothing there: sleep in async_wait
                    nwaits += 1
                    async_wait(1)
        stats["bad"] += bad
        stats["sync"] += nsync
        stats["async"] += nasync
        stats["waits"] += nwaits

    def run_pread() -> None:
        pr = os.pread
        bad = 0
        for o in offs:
            bad += pr(fd, BS, o) != pattern[o:o + BS]
        stats["bad_pread"] = stats.get("bad_pread", 0) + bad

    compat.async_register(ctypes.addressof(ahu), ctypes.sizeof(ahu))
    try:
        t_sys, t_pr, speed = _paired(run, run_pread, repeat)
        counters = compat.counters()
    finally:
        compat.async_unregister(ctypes.addressof(ahu), ctypes.sizeof(ahu))
        backend = compat.default_engine().backend
        compat.reset_default()
    words.release()
    del anchor
    bufs.close()
    os.close(fd)
    ok = rep.check("(b) every read returned 4096 pattern bytes", stats["bad"] == 0,
                   f"{stats['bad']} bad reads")
    rep.check("(b) os.pread baseline data", stats.get("bad_pread", 0) == 0, "pattern mismatch")
    print(f"(b) fio-style random 4 KiB reads, depth {depth}, raw ABI (ctypes io units, async_exec, "
          f"ring reaping; default context on {backend})")
    print(f"    {nreads} reads x{repeat}: syslet {_rate(nreads, t_sys) / 1e3:7.0f} k reads/s | "
          f"os.pread loop {_rate(nreads, t_pr) / 1e3:7.0f} k reads/s (syslet {speed:.2f}x)"
          f"  [both check every read]")
    print(f"    verify: {'OK' if ok else 'FAILED'}  (exec: {stats['sync']} sync, {stats['async']} async, "
          f"{stats['waits']} async_wait calls)")
    print(f"    counters: {_fmt_counters(counters)}")


# ---- (c) open -> read -> close chains --------------------------------------------------

def part_c(rep: Report, backend: Optional[str], tmp: str, pattern: bytes, nchains: int,
           repeat: int, batch: int = 32) -> None:
    nfiles = 256
    d = os.path.join(tmp, "small")
    os.mkdir(d)
    paths = []
    for j in range(nfiles):
        p = os.path.join(d, f"f{j:03d}")
        with open(p, "wb") as f:
            f.write(pattern[j * BS:(j + 1) * BS])
        paths.append(p)
    rounds = max(1, nchains // nfiles)
    total = rounds * nfiles
    stats = {"bad": 0, "async": 0}
    with compat.Context(backend, ring_slots=256, arena_size=1 << 20) as ctx:
        chains: List[Tuple[Any, Var, Var, Var, Buffer, int]] = []
        for j, p in enumerate(paths):
            fdv, nv, cv = ctx.var(), ctx.var(), ctx.var()
            buf = ctx.buffer(BS)
            ch = ctx.chain()
            ch.openat(AT_FDCWD, os.fsencode(p), os.O_RDONLY, ret=fdv, flags=SYSLET_STOP_ON_NEGATIVE)
            ch.read(fdv, buf, BS, ret=nv)           # fd by pointer: open's ret cell
            ch.close(fdv, ret=cv)
            chains.append((ch, fdv, nv, cv, buf, j))
        groups = [chains[b:b + batch] for b in range(0, nfiles, batch)]
        lists = [[c[0] for c in g] for g in groups]

        def verify(group: Sequence[Tuple[Any, Var, Var, Var, Buffer, int]],
                   finals: Sequence[Any]) -> int:
            bad = 0
            for (ch, fdv, nv, cv, buf, j), fin in zip(group, finals):
                if (fin is not ch.tail or fdv.value < 0 or nv.value != BS or cv.value != 0
                        or buf.read() != pattern[j * BS:(j + 1) * BS]):
                    bad += 1
            return bad

        batches = [ctx.batch(lst) for lst in lists]    # arrays made once

        def run() -> float:
            t = 0.0
            for _ in range(rounds):
                for g, lst, b in zip(groups, lists, batches):
                    t0 = time.perf_counter()
                    finals = b.run()
                    pending = [i for i, f in enumerate(finals) if f is None]
                    if pending:                     # went async: collect from the ring
                        stats["async"] += len(pending)
                        heads = {lst[i].tail.addr: i for i in pending}
                        while heads:
                            for a in ctx.wait(1):
                                i = heads.pop(a.addr, None)
                                if i is not None:
                                    finals[i] = a
                    t += time.perf_counter() - t0
                    stats["bad"] += verify(g, finals)   # not timed
            return t

        def sync_once() -> float:
            op, rd, cl, flag = os.open, os.read, os.close, os.O_RDONLY
            datas: List[Optional[bytes]] = [None] * nfiles    # the last round's data, checked untimed
            t0 = time.perf_counter()
            for _ in range(rounds):
                for j, p in enumerate(paths):
                    fd = op(p, flag)
                    datas[j] = rd(fd, BS)
                    cl(fd)
            t = time.perf_counter() - t0
            bad = sum(dat != pattern[j * BS:(j + 1) * BS] for j, dat in enumerate(datas))
            stats["bad_sync"] = stats.get("bad_sync", 0) + bad
            return t

        t_sys, t_sync, speed = _paired(run, sync_once, repeat)
        counters = ctx.counters()

    ok = rep.check("(c) every chain read its file", stats["bad"] == 0, f"{stats['bad']} bad chains")
    rep.check("(c) sync baseline data", stats.get("bad_sync", 0) == 0, "pattern mismatch")
    print(f"(c) open -> read -> close chains (fd through open's ret cell), {batch} per Batch.run, "
          f"{nfiles} files of 4 KiB")
    print(f"    {total} chains x{repeat}: syslet {_rate(total, t_sys) / 1e3:7.0f} k chains/s | "
          f"os.open/os.read/os.close {_rate(total, t_sync) / 1e3:7.0f} k chains/s "
          f"(syslet {speed:.2f}x)  [verification not timed]")
    print(f"    verify: {'OK' if ok else 'FAILED'}  ({stats['async']} chains went async)")
    print(f"    counters: {_fmt_counters(counters)}")


# ---- (d) the same reads, cached and O_DIRECT ---------------------------------------

def _fs_type(path: str) -> str:
    """The file system type of path (from /proc/self/mounts), or '?'."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def _reads_in_flight(ctx: Context, fd: int, offs: Sequence[int], pattern: bytes, depth: int,
                     repeat: int) -> Tuple[float, float, float, int, int, int, Dict[str, int]]:
    """Random 4 KiB reads of fd at offs, depth syslets in flight (Context.exec,
    Context.wait), against a plain os.preadv loop.  Returns (syslet time,
    plain time, ratio, went async, completed inside exec, wrong reads,
    counter deltas); counts are over the warm-up and the timed runs."""
    plain_buf = mmap.mmap(-1, BS)           # page-aligned, as O_DIRECT wants
    stats = {"bad": 0, "async": 0, "sync": 0}
    cells: List[Var] = []
    bufs: List[Buffer] = []
    chains: List[Any] = []
    for _ in range(depth):
        off = ctx.var()
        buf = ctx.buffer(BS, align=BS)
        ch = ctx.chain()
        ch.pread64(fd, buf, BS, off, ret=True)
        cells.append(off)
        bufs.append(buf)
        chains.append(ch)
    unit = {ch.head.addr: k for k, ch in enumerate(chains)}
    cur = [0] * depth

    def check(k: int, result: Optional[int]) -> bool:
        o = cur[k]
        return result != BS or bufs[k].read() != pattern[o:o + BS]

    def run_syslets() -> None:
        free, i, inflight, bad = list(range(depth)), 0, 0, 0
        while i < len(offs) or inflight:
            while free and i < len(offs):       # every free unit back in flight at once
                k = free.pop()
                cells[k].value = cur[k] = offs[i]
                i += 1
                r = ctx.exec(chains[k])
                if r is None:                   # went async: its final atom comes in the ring
                    inflight += 1
                    stats["async"] += 1
                else:                           # completed inside exec: nothing in the ring
                    stats["sync"] += 1
                    bad += check(k, r.result)
                    free.append(k)
            if inflight:
                for a in ctx.wait(1):
                    k = unit[a.addr]
                    inflight -= 1
                    bad += check(k, a.result)
                    free.append(k)
        stats["bad"] += bad

    def run_plain() -> None:
        bad = 0
        for o in offs:
            n = os.preadv(fd, [plain_buf], o)
            bad += n != BS or plain_buf[:] != pattern[o:o + BS]
        stats["bad"] += bad

    try:
        before = ctx.counters()
        t_sys, t_plain, ratio = _paired(run_syslets, run_plain, repeat)
        after = ctx.counters()
    finally:
        plain_buf.close()
    counters = {k: after[k] - before[k] for k in after}
    return t_sys, t_plain, ratio, stats["async"], stats["sync"], stats["bad"], counters


def part_d(rep: Report, backend: Optional[str], src: str, size: int, pattern: bytes, nreads: int,
           depth: int, seed: int, repeat: int) -> None:
    fs = _fs_type(src)
    nblocks = size // BS
    rnd = random.Random(seed + 1)
    offs = [rnd.randrange(nblocks) * BS for _ in range(nreads)]
    runs = repeat + 1
    print(f"(d) the same {nreads} random 4 KiB reads of {size // MiB} MiB on {fs}, {depth} syslets "
          f"in flight (Context.exec + Context.wait), each case against a plain os.preadv loop:")
    # Cached: the file was just written, and is read through once more here.
    fd = os.open(src, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        for o in range(0, size, 1 << 20):
            os.pread(fd, 1 << 20, o)
        with compat.Context(backend, ring_slots=2 * depth) as ctx:
            t_sys, t_plain, ratio, n_async, n_sync, bad, c = _reads_in_flight(
                ctx, fd, offs, pattern, depth, repeat)
    finally:
        os.close(fd)
    print(f"    cached:   nothing blocks, so every syslet completes inside exec and nothing "
          f"reaches the ring: {n_sync} of {runs * nreads} completed synchronously, {n_async} "
          f"went async")
    print(f"              syslet {_rate(nreads, t_sys) / 1e3:6.1f} k reads/s | plain "
          f"{_rate(nreads, t_plain) / 1e3:6.1f} k reads/s | {ratio:.2f}x")
    ok = rep.check("(d) cached data", bad == 0, f"{bad} wrong reads")
    # Erring towards "sync" is the rule; a page the kernel evicted meanwhile
    # may still go async, so allow a few in a thousand.
    ok &= rep.check("(d) cached reads stayed synchronous",
                    n_sync == runs * nreads - n_async and n_async * 200 <= runs * nreads and
                    c["published"] == n_async,
                    f"{n_async} of {runs * nreads} went async, published={c['published']}")
    print(f"              verify: {'OK' if ok else 'FAILED'}  counters: {_fmt_counters(c)}")
    try:
        fd = os.open(src, os.O_RDONLY | os.O_DIRECT)
    except OSError as e:
        print(f"    O_DIRECT: skipped, {src} cannot be opened with O_DIRECT on {fs} "
              f"({e.strerror})")
        return
    try:
        with compat.Context(backend, ring_slots=2 * depth) as ctx:
            t_sys, t_plain, ratio, n_async, n_sync, bad, c = _reads_in_flight(
                ctx, fd, offs, pattern, depth, repeat)
    finally:
        os.close(fd)
    print(f"    O_DIRECT: a read that waits for the disk makes its syslet go async, to be reaped "
          f"from the ring: {n_async} of {runs * nreads} went async, {n_sync} finished before "
          f"exec looked and completed synchronously")
    print(f"              syslet {_rate(nreads, t_sys) / 1e3:6.1f} k reads/s | plain "
          f"{_rate(nreads, t_plain) / 1e3:6.1f} k reads/s | {ratio:.2f}x")
    ok = rep.check("(d) O_DIRECT data", bad == 0, f"{bad} wrong reads")
    ok &= rep.check("(d) O_DIRECT reads never tried in the caller",
                    c["direct_reads"] == runs * nreads and c["atoms_nowait"] == 0,
                    f"direct_reads={c['direct_reads']} atoms_nowait={c['atoms_nowait']}")
    ok &= rep.check("(d) O_DIRECT reads went async", n_async > 0 and c["syslets_async"] > 0)
    print(f"              verify: {'OK' if ok else 'FAILED'}  ({c['caller_waits']} waits reaped "
          f"by the waiting thread)  counters: {_fmt_counters(c)}")


# ---- main ---------------------------------------------------------------------------

def _scratch_parent(arg: Optional[str]) -> Optional[str]:
    """--dir, else the current directory unless it is a tmpfs (whose reads
    never block), else the system's temporary directory."""
    if arg:
        return arg
    if _fs_type(os.getcwd()) not in ("tmpfs", "ramfs", "?") and os.access(os.getcwd(), os.W_OK):
        return os.getcwd()
    return None


def _shim_backend() -> str:
    try:
        import uring_shim
        return f"{uring_shim.backend()} ({uring_shim.backend_reason()})"
    except Exception as e:          # the shim is optional for this demo
        return f"unavailable ({type(e).__name__}: {e})"


def main(args: argparse.Namespace) -> int:
    if args.backend:
        os.environ["URING_SHIM_BACKEND"] = args.backend     # the raw layer's default context too
    backend = None if args.backend in (None, "auto") else args.backend
    size = args.size_mib * MiB
    rep = Report()
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="syslet-demo-", dir=_scratch_parent(args.dir))
    try:
        pattern = _pattern(size)
        src = os.path.join(tmp, "scratch.dat")
        with open(src, "wb") as f:
            f.write(pattern)
            f.flush()
            os.fsync(f.fileno())        # (d) reads it from the disk
        with compat.Context(backend) as probe:
            eng_backend = probe.backend
        print(WHAT_IS_A_SYSLET)
        print()
        print(f"syslet-compat {compat.__version__} demo: engine backend {eng_backend}; "
              f"uring_shim backend {_shim_backend()}")
        print(f"scratch: {size // MiB} MiB pattern file in {tmp} (removed afterwards); "
              f"timings are medians of {args.repeat} interleaved pairs after a warm-up; "
              f"ratios are medians of the per-pair ratios")
        sections: Tuple[Callable[[], None], ...] = (
            lambda: part_a(rep, backend, src, tmp, size, pattern, args.repeat),
            lambda: part_b(rep, src, size, pattern, args.reads, args.depth, args.seed, args.repeat),
            lambda: part_c(rep, backend, tmp, pattern, args.chains, args.repeat),
            lambda: part_d(rep, backend, src, size, pattern, args.direct_reads, args.depth,
                           args.seed, args.repeat),
        )
        for run in sections:
            try:
                run()
            except Exception as e:          # report, keep going, fail at the end
                rep.check("exception", False, f"{type(e).__name__}: {e}")
                import traceback
                traceback.print_exc()
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    dt = time.perf_counter() - t_start
    if rep.failures:
        print(f"FAILED ({dt:.1f} s):")
        for failure in rep.failures:
            print(f"  - {failure}")
        return 1
    print(f"all verifications passed ({dt:.1f} s)")
    return 0


if __name__ == "__main__":
    from compat.__main__ import OneLineParser
    ap = OneLineParser(prog="python -m compat._demo")
    add_arguments(ap)
    sys.exit(main(ap.parse_args()))
