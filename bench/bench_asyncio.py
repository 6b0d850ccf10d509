#!/usr/bin/env python3
"""Context.exec_async against asyncio.to_thread: 10k blocking calls in flight.

  python3 bench/bench_asyncio.py [--chains N] [--pairs N] [--ring-slots N] [--quick]
                                 [--dir DIR] [--only NAME,...] [--strict] [--json FILE]

Every row runs the same workload twice in one event loop, ours and the
baseline, in alternating order, ``--pairs`` times (default 5); it reports
the medians of both rates and the median of the per-pair ratios with its
range, and the median of the per-pair ratios of CPU time (this process's,
all its threads: the loop's, the engine's driver and pool, the executor's;
``time.process_time()`` over the timed part; the writer process does the
same work for both sides and is not counted).  Nothing is compared with a
number from another run.

Ours: ``--chains`` (default 10000) one-atom chains of a ``compat.Context``
(with ``--ring-slots`` ring slots, default one per chain), all started at once with ``asyncio.gather(*(ctx.exec_async(ch) ...))``.
Baseline: the same system calls, ``asyncio.gather(*(asyncio.to_thread(...)
...))`` on the loop's default executor.  Every result is checked (return
value and the bytes read) after each run, outside the timed part.  The
collector runs as usual (a collection before each timed part; what was
built before the first pair -- chains, pipes, modules -- is frozen with
``gc.freeze()``, so that neither side's collections walk the other's
objects).

Rows (target in brackets):

* ``pipes-io_uring`` [>= 5]: each chain is one ``read(2)`` of 8 bytes from a
  pipe that is empty when the call is made: the run starts all calls, and a
  writer process then writes every pipe's 8-byte message (it holds the
  write ends; this process only the 10k read ends).  The row also checks
  that every syslet went async, i.e. really blocked.  The timed part is the
  whole ``gather``, from the first call to the last result.
* ``pipes-threadpool`` (info): the same on the pool-only backend, where the
  reads block in the engine's own pool of C threads (16 here) instead of
  io_uring.
* ``pipes-io_uring-nogc`` (info): ``pipes-io_uring`` with the garbage
  collector off during the timed parts.  With 10k calls in flight
  ``to_thread`` keeps ~10 GC-tracked objects alive per call (a
  ``concurrent.futures.Future`` with its ``Condition``, the work item, the
  asyncio future, ...), so full collections come often and walk them all;
  ``exec_async`` keeps its call's future (and its callback list).  This row shows what the
  two cost without that effect.
* ``pipes-io_uring-tasks`` (info): ``pipes-io_uring`` with every call made
  in a coroutine of its own on both sides (``async def one(ch): return
  await ctx.exec_async(ch)`` against ``async def one(fd): return await
  asyncio.to_thread(os.read, fd, 8)``), as a server's per-request
  handler would: ``gather`` then makes a task per call for ours too.
* ``pipes-io_uring-ring256`` (info): ``pipes-io_uring`` with the
  ``Context``'s default ring of 256 slots instead of one slot per call in
  flight: finished syslets wait in the engine for a slot, and the loop
  reaps a ring's worth per wake-up.
* ``direct-io_uring`` (info): each chain is one 4 KiB ``pread64`` of a random
  block of a 256 MiB file opened with ``O_DIRECT`` (``--dir``, default
  ``bench/_build``, on the checkout's file system: not tmpfs); the baseline
  ``os.preadv`` into page-aligned buffers.  With the device as the limit
  this row shows what io_uring's queue depth buys over the executor's
  threads, not the per-call costs.

Exit status 0 unless ``--strict`` and a target failed.
"""
import argparse
import asyncio
import gc
import json
import mmap
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
import compat  # noqa: E402

BS = 4096
DIRECT_MIB = 256


def raise_fd_limit(want):
    """Raises the descriptor limit towards ``want`` (past the hard limit
    only where allowed: root); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Pipes:
    """n pipes, one per reader; their write ends belong to a writer process
    (handed over with SCM_RIGHTS as they are made, so this process keeps
    only the read ends) that writes every pipe's message when told to."""

    BATCH = 200

    def __init__(self, n):
        raise_fd_limit(n + 2 * self.BATCH + 1024)
        self.n = n
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:       # the writer: no threads, no event loop
            code = 1
            try:
                self.sock.close()
                self._writer(child)
                code = 0
            finally:
                os._exit(code)
        child.close()
        self.rd = []
        while len(self.rd) < n:
            ws = []
            for _ in range(min(self.BATCH, n - len(self.rd))):
                r, w = os.pipe()
                self.rd.append(r)
                ws.append(w)
            socket.send_fds(self.sock, [b"P"], ws)
            for w in ws:
                os.close(w)
        self.sock.sendall(b"E")
        if self.sock.recv(1) != b"R":
            raise SystemExit("bench_asyncio: the writer process failed")

    @staticmethod
    def _writer(sock):
        wr = []
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, 1, Pipes.BATCH)
            wr.extend(fds)
            if msg == b"E":
                break
            if msg != b"P":
                return
        sock.sendall(b"R")
        pack = struct.pack
        while True:
            b = sock.recv(4, socket.MSG_WAITALL)
            if len(b) < 4:
                return
            rnd, = struct.unpack("<I", b)
            for i, w in enumerate(wr):
                os.write(w, pack("<II", i, rnd))
            sock.sendall(b"D")

    def msg(self, i, rnd):
        return struct.pack("<II", i, rnd)

    def write(self, rnd):
        """Tells the writer to write round ``rnd``'s messages (returns at once)."""
        self.sock.sendall(struct.pack("<I", rnd))

    def written(self):
        """Waits until the writer has written them all."""
        if self.sock.recv(1) != b"D":
            raise SystemExit("bench_asyncio: the writer process failed")

    def close(self):
        self.sock.close()
        os.waitpid(self.pid, 0)
        for r in self.rd:
            os.close(r)


def gc_start(nogc):
    """Before a timed part: collect now; with ``nogc`` the collector stays
    off until gc_end()."""
    gc.collect()
    if nogc:
        gc.disable()


def gc_end():
    gc.enable()


async def _after_start(fn):
    # Runs in the third turn of the loop after the calls were made: the
    # first runs every task's first step (to_thread: submitted; ours: the
    # calls were queued when made, their batch start is scheduled), the
    # second exec_async's batch start (every syslet checked to go async).
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return fn()


def _timed():
    return time.perf_counter(), time.process_time()


def _rates(n, t):
    """(calls per second, CPU seconds per call) since t = _timed()."""
    w, c = _timed()
    return n / (w - t[0]), (c - t[1]) / n


class PipeRow:
    def __init__(self, pipes, backend, ring_slots, nogc=False, tasks=False):
        self.p = pipes
        self.nogc = nogc
        self.tasks = tasks
        self.ctx = compat.Context(backend=backend, ring_slots=ring_slots,
                                  arena_size=1 << 20)
        self.backend = self.ctx.backend
        self.cells = []
        self.chains = []
        for i in range(pipes.n):
            buf, n = self.ctx.buffer(8), self.ctx.var()
            ch = self.ctx.chain()
            ch.read(pipes.rd[i], buf, 8, ret=n)
            self.chains.append(ch)
            self.cells.append((buf, n))
        self.rnd = 0

    async def ours(self):
        self.rnd += 1
        rnd, ctx, chains = self.rnd, self.ctx, self.chains
        gone = ctx.counters()["syslets_async"]
        if self.tasks:
            async def one(ch):
                return await ctx.exec_async(ch)
            call = one
        else:
            call = ctx.exec_async
        gc_start(self.nogc)
        t0 = _timed()
        res = await asyncio.gather(*(call(ch) for ch in chains),
                                   _after_start(lambda: self.p.write(rnd)))
        rates = _rates(len(chains), t0)
        gc_end()
        res.pop()
        self.p.written()
        gone = ctx.counters()["syslets_async"] - gone
        for i, (a, ch, (buf, n)) in enumerate(zip(res, chains, self.cells)):
            if a is not ch.tail or n.value != 8 or buf.read(8) != self.p.msg(i, rnd):
                raise SystemExit(f"pipes: chain {i} ended wrong: {a!r} n={n.value} "
                                 f"{buf.read(8)!r}")
        if gone != len(chains):
            raise SystemExit(f"pipes: only {gone} of {len(chains)} syslets went async "
                             "(the writer started too early?)")
        return rates

    async def base(self):
        self.rnd += 1
        rnd, rd = self.rnd, self.p.rd
        if self.tasks:
            async def one(fd):
                return await asyncio.to_thread(os.read, fd, 8)
        else:
            def one(fd):
                return asyncio.to_thread(os.read, fd, 8)
        gc_start(self.nogc)
        t0 = _timed()
        res = await asyncio.gather(*(one(fd) for fd in rd),
                                   _after_start(lambda: self.p.write(rnd)))
        rates = _rates(len(rd), t0)
        gc_end()
        res.pop()
        self.p.written()
        for i, got in enumerate(res):
            if got != self.p.msg(i, rnd):
                raise SystemExit(f"pipes: to_thread read {i} got {got!r}")
        return rates

    def close(self):
        self.ctx.close()


def ensure_direct_file(path):
    size = DIRECT_MIB << 20
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    print(f"writing the {DIRECT_MIB} MiB file {path} ...", flush=True)
    chunk = bytearray(1 << 20)
    with open(path + ".tmp", "wb") as f:
        for mib in range(DIRECT_MIB):
            for b in range(256):        # each block starts with its index
                struct.pack_into("<Q", chunk, b * BS, mib * 256 + b)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


class DirectRow:
    def __init__(self, path, n, backend, ring_slots):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        self.nblocks = os.path.getsize(path) // BS
        self.n = n
        self.ctx = compat.Context(backend=backend, ring_slots=ring_slots,
                                  arena_size=1 << 22)
        self.chains, self.offs, self.bufs = [], [], []
        for _ in range(n):
            off, buf = self.ctx.var(), self.ctx.buffer(BS, align=4096)
            ch = self.ctx.chain()
            ch.pread64(self.fd, buf, BS, off, ret=True)
            self.chains.append(ch)
            self.offs.append(off)
            self.bufs.append(buf)
        self.mem = mmap.mmap(-1, n * BS)      # page-aligned buffers for the baseline
        self.views = [memoryview(self.mem)[i * BS:(i + 1) * BS] for i in range(n)]
        self.rng = random.Random(7)

    def blocks(self):
        return [self.rng.randrange(self.nblocks) for _ in range(self.n)]

    async def ours(self):
        blocks = self.blocks()
        for off, b in zip(self.offs, blocks):
            off.value = b * BS
        ctx = self.ctx
        gc_start(False)
        t0 = _timed()
        res = await asyncio.gather(*(ctx.exec_async(ch) for ch in self.chains))
        rates = _rates(self.n, t0)
        for a, buf, b in zip(res, self.bufs, blocks):
            if a.result != BS or struct.unpack_from("<Q", buf.read(8))[0] != b:
                raise SystemExit(f"direct: block {b} read wrong ({a.result})")
        return rates

    async def base(self):
        blocks = self.blocks()
        fd, views = self.fd, self.views
        gc_start(False)
        t0 = _timed()
        res = await asyncio.gather(*(asyncio.to_thread(os.preadv, fd, [v], b * BS)
                                     for v, b in zip(views, blocks)))
        rates = _rates(self.n, t0)
        for r, v, b in zip(res, views, blocks):
            if r != BS or struct.unpack_from("<Q", v)[0] != b:
                raise SystemExit(f"direct: to_thread block {b} read wrong ({r})")
        return rates

    def close(self):
        self.ctx.close()
        for v in self.views:
            v.release()
        self.mem.close()
        os.close(self.fd)


async def compare(name, row, target, pairs):
    await row.ours()        # warm-up: threads, io-wq workers, caches
    await row.base()
    # What the runs allocate is collected as usual; what was built before
    # (the chains, the pipes, modules) is frozen, so that neither side's
    # collections walk the other side's objects.
    gc.collect()
    gc.freeze()
    o, b, ratios, cpu = [], [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            x = await row.ours()
            y = await row.base()
        else:
            y = await row.base()
            x = await row.ours()
        o.append(x[0])
        b.append(y[0])
        ratios.append(x[0] / y[0])
        cpu.append(y[1] / x[1])
    res = {"name": name, "ours": statistics.median(o), "base": statistics.median(b),
           "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios),
           "ratios": ratios, "cpu_ratio": statistics.median(cpu), "cpu_ratios": cpu,
           "target": target}
    res["ok"] = target is None or res["ratio"] >= target
    verdict = "(info)" if target is None else \
        f"target >= {target:<4}  {'PASS' if res['ok'] else 'FAIL'}"
    print(f"{name:<22} {res['ours']:>9.0f} {res['base']:>9.0f}  {res['ratio']:5.2f}x "
          f"[{res['lo']:.2f}-{res['hi']:.2f}]  cpu {res['cpu_ratio']:5.2f}x  {verdict}",
          flush=True)
    return res


def fs_type(path):
    out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return out.stdout.strip()


async def run(a):
    only = set(filter(None, a.only.split(",")))
    rows = []
    names = ["pipes-io_uring", "pipes-threadpool", "pipes-io_uring-nogc", "pipes-io_uring-ring256",
             "pipes-io_uring-tasks", "direct-io_uring"]
    for nm in only - set(names):
        raise SystemExit(f"bench_asyncio: unknown row {nm!r} (rows: {', '.join(names)})")
    want = [nm for nm in names if not only or nm in only]
    loop = asyncio.get_running_loop()
    print(f"{a.chains} chains per run, {a.pairs} alternating pairs per row (after a warm-up "
          f"pair); ring of {a.ring_slots} slots; to_thread: the default executor "
          f"({loop._default_executor or 'min(32, CPUs + 4)'} threads); "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'row':<22} {'ours/s':>9} {'base/s':>9}  ratio [range]  cpu ratio (base/ours)")
    pipes = None
    for nm in want:
        if nm.startswith("pipes-"):
            pipes = pipes or Pipes(a.chains)
            backend = nm.split("-")[1]
            slots = 256 if nm.endswith("-ring256") else a.ring_slots
            row = PipeRow(pipes, backend, slots, nogc=nm.endswith("-nogc"),
                          tasks=nm.endswith("-tasks"))
            if row.backend != backend:
                print(f"{nm:<22} skipped: the engine runs on {row.backend}")
                row.close()
                continue
            target = 5.0 if nm == "pipes-io_uring" else None
        else:
            os.makedirs(a.dir, exist_ok=True)
            fst = fs_type(a.dir)
            if fst in ("tmpfs", "ramfs"):
                print(f"{nm:<22} skipped: {a.dir} is on {fst} (reads never block); use --dir")
                continue
            path = os.path.join(a.dir, "asyncio-direct.dat")
            ensure_direct_file(path)
            row = DirectRow(path, a.chains, "io_uring", a.ring_slots)
            target = None
        try:
            rows.append(await compare(nm, row, target, a.pairs))
        finally:
            gc.unfreeze()
            row.close()
    if pipes:
        pipes.close()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=10000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--ring-slots", type=int, default=0,
                    help="Context ring size (default: --chains, one slot per call in flight)")
    ap.add_argument("--dir", default=os.path.join(HERE, "_build"))
    ap.add_argument("--only", default="", help="comma-separated row names")
    ap.add_argument("--quick", action="store_true",
                    help="a short run: 2000 chains, one pair per row")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    if a.quick:
        a.chains, a.pairs = 2000, 1
    if a.chains < 1 or a.pairs < 1 or a.ring_slots < 0:
        ap.error("--chains and --pairs must be >= 1, --ring-slots >= 0")
    a.ring_slots = a.ring_slots or a.chains
    rows = asyncio.run(run(a))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [r["name"] for r in rows if not r["ok"]]
    print("asyncio: " + ("all targets met" if not failed else "FAIL: " + ", ".join(failed)))
    return 1 if failed and a.strict else 0


if __name__ == "__main__":
    sys.exit(main())
