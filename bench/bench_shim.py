#!/usr/bin/env python3
"""uring_shim benchmarks (never a timed unit test).

  python3 bench/bench_shim.py [--quick] [--runs N] [--strict] [--dir DIR]

Prints a table: each row is the median over N runs (default 7) of the
throughput of a candidate and of its baseline, both measured in the same
run (alternating in 4 chunks, ABAB, so load changes on a shared machine hit
both alike), and the median of the per-run ratios.  Rows with a target print
PASS/FAIL.  Exit status 0 unless --strict and a target failed.

1. Random 4 KiB reads, queue depth 32, on a page-cached scratch file (256 MiB,
   32 MiB with --quick) created in --dir (default /var/tmp) and removed
   afterwards: descriptors live in a cffi ``struct us_desc[]`` array, each
   batch is prepared, submitted, waited for and reaped in ONE C call
   (``Ring.submit_wait_reap``), vs a plain ``os.pread`` loop.  Target >= 1.05
   for READ_FIXED on a registered file and buffer; the same with plain READ
   on a plain fd, the Python-level path (32 x ``Ring.prep`` + ``wait``) and a
   pure C reference (bench/c/read_qd.c, built with gcc if available) are
   informational.
2. NOP submit+reap round trip from Python (``prep_nop`` + ``wait``, and the
   fused ``submit_wait_reap`` of one NOP) vs the same loop in C
   (``us_nop_loop``).  Reported, no target.
3. The native pool: batches of 64 ``getppid`` (no io_uring opcode) handed to
   C in one call and reaped, vs ``concurrent.futures.ThreadPoolExecutor``
   (4 workers) running ``os.getppid`` 64 times per batch.  Target >= 5x.
"""
import argparse
import concurrent.futures
import gc
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
try:
    import uring_shim as us
except ImportError:
    sys.path.insert(0, ROOT)
    import uring_shim as us

import cffi

_ffi = cffi.FFI()
QD = 32
BLOCK = 4096
NR_GETPPID = 110


def rate(fn, ops):
    """ops/s of one call of fn() doing ``ops`` operations (GC off while timing)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    return ops / dt


def pair(base_fn, base_ops, cand_fn, cand_ops, chunks=4):
    """(baseline ops/s, candidate ops/s) of one run: the two alternate ``chunks``
    times (ABAB...), so a load change on the machine hits both alike."""
    tb = tc = 0.0
    gc.collect()
    gc.disable()
    try:
        for _ in range(chunks):
            t0 = time.perf_counter()
            base_fn()
            t1 = time.perf_counter()
            cand_fn()
            t2 = time.perf_counter()
            tb += t1 - t0
            tc += t2 - t1
    finally:
        gc.enable()
    return base_ops * chunks / tb, cand_ops * chunks / tc


class Row:
    def __init__(self, name, base_name, target=None, unit="ops/s"):
        self.name, self.base_name, self.target, self.unit = name, base_name, target, unit
        self.base, self.cand = [], []

    def add(self, base, cand):
        self.base.append(base)
        self.cand.append(cand)

    def ratio(self):
        return statistics.median(c / b for b, c in zip(self.base, self.cand))

    def verdict(self):
        if self.target is None:
            return "info"
        return "PASS" if self.ratio() >= self.target else "FAIL"


def fmt_rate(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k/s"
    return f"{v:.0f} /s"


def fmt_us(v):
    return f"{1e6 / v:.2f} us/op"


# ---- 1. random reads -----------------------------------------------------

def make_file(directory, size):
    fd, path = tempfile.mkstemp(prefix="bench_shim_", dir=directory)
    chunk = os.urandom(1 << 20)
    try:
        for _ in range(size >> 20):
            os.write(fd, chunk)
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        while os.read(fd, 1 << 20):          # make sure every page is cached
            pass
    finally:
        os.close(fd)
    return path


def build_c_reference():
    gcc = shutil.which("gcc")
    if not gcc:
        return None
    out_dir = os.path.join(HERE, "_build")
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, "read_qd")
    src = os.path.join(HERE, "c", "read_qd.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        r = subprocess.run([gcc, "-O2", "-o", exe, src, "-luring"], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"(C reference not built: {r.stderr.strip()[:200]})")
            return None
    return exe


def bench_reads(args, rows):
    size = (32 if args.quick else 256) << 20
    nops = QD * (128 if args.quick else 512)            # per chunk; 4 chunks per run
    path = make_file(args.dir, size)
    try:
        fd = os.open(path, os.O_RDONLY)
        ring = us.Ring(QD * 2)
        try:
            rng = random.Random(1)
            offs = [rng.randrange(size // BLOCK) * BLOCK for _ in range(nops)]
            cbuf = _ffi.new("char[]", QD * BLOCK)
            base_addr = int(_ffi.cast("uintptr_t", cbuf))
            ring.register_files_sparse(1)
            ring.register_files_update(0, [fd])
            ring.register_buffers([cbuf])

            def make_descs(registered):
                descs = us.new_descs(nops)
                for i, off in enumerate(offs):
                    d = descs[i]
                    d.opcode = us.IORING_OP_READ_FIXED if registered else us.IORING_OP_READ
                    d.flags = us.IOSQE_FIXED_FILE if registered else 0
                    d.fd = 0 if registered else fd
                    d.addr = base_addr + (i % QD) * BLOCK
                    d.len = BLOCK
                    d.off = off
                    d.user_data = i
                return descs

            reg_descs, plain_descs = make_descs(True), make_descs(False)
            reg_ptrs = [reg_descs + b for b in range(0, nops, QD)]
            plain_ptrs = [plain_descs + b for b in range(0, nops, QD)]
            out = us.new_cqes(QD)
            swr = ring.submit_wait_reap

            # untimed verification pass (and warm-up)
            for ptrs in (reg_ptrs, plain_ptrs):
                for p in ptrs:
                    assert swr(p, QD, out) == QD
                    assert all(out[i].res == BLOCK for i in range(QD)), "short read"

            def pread_loop():
                pread = os.pread
                for off in offs:
                    pread(fd, BLOCK, off)

            def fused_loop():
                for p in reg_ptrs:
                    swr(p, QD, out)

            def fused_plain_loop():
                for p in plain_ptrs:
                    swr(p, QD, out)

            py_batches = max(8, nops // QD // 16)
            buf = bytearray(QD * BLOCK)
            views = [memoryview(buf)[i * BLOCK:(i + 1) * BLOCK] for i in range(QD)]

            def python_prep_loop():
                prep = ring.prep_read
                for b in range(py_batches):
                    base = b * QD
                    for i in range(QD):
                        prep(fd, views[i], offs[base + i], user_data=base + i)
                    got = ring.wait(QD)
                    while len(got) < QD:
                        got += ring.wait(QD - len(got))

            fused = Row("4K rand read QD32, fused C batch, reg. file+buf", "os.pread loop", 1.05)
            plain = Row("4K rand read QD32, fused C batch, plain fd", "os.pread loop")
            pyprep = Row("4K rand read QD32, prep()x32+wait", "os.pread loop")
            for _ in range(args.runs):
                fused.add(*pair(pread_loop, nops, fused_loop, nops))
                plain.add(*pair(pread_loop, nops, fused_plain_loop, nops))
                pyprep.add(*pair(pread_loop, nops, python_prep_loop, py_batches * QD, 1))
            rows += [fused, plain, pyprep]
        finally:
            ring.close()
            os.close(fd)

        exe = build_c_reference()
        if exe:
            crow = Row("C reference: liburing QD32 loop", "C pread loop")
            for run in range(args.runs):
                r = subprocess.run([exe, path, str(nops), str(QD), str(run + 1)],
                                   capture_output=True, text=True, timeout=120)
                if r.returncode != 0:
                    print(f"(C reference failed: {r.stderr.strip()[:200]})")
                    break
                vals = dict(line.split() for line in r.stdout.splitlines())
                crow.add(float(vals["pread"]), float(vals["uring"]))
            if crow.base:
                rows.append(crow)
    finally:
        os.unlink(path)


# ---- 2. NOP round trip -----------------------------------------------------

def bench_nop(args, rows):
    n = 5_000 if args.quick else 50_000                  # per chunk
    npy = n // 4
    with us.Ring(8) as ring:
        d1 = us.new_descs(1)
        d1[0].opcode = us.IORING_OP_NOP
        out1 = us.new_cqes(1)

        def c_loop():
            ring._c_nop_loop(n)

        def py_loop():
            prep, wait = ring.prep_nop, ring.wait
            for i in range(npy):
                prep(user_data=i)
                wait()

        def fused_loop():
            swr = ring.submit_wait_reap
            for _ in range(npy):
                swr(d1, 1, out1)

        plain = Row("NOP round trip: prep_nop()+wait()", "C us_nop_loop", unit="us")
        fused = Row("NOP round trip: submit_wait_reap(1)", "C us_nop_loop", unit="us")
        for _ in range(args.runs):
            plain.add(*pair(c_loop, n, py_loop, npy))
            fused.add(*pair(c_loop, n, fused_loop, npy))
        rows += [plain, fused]


# ---- 3. pool -----------------------------------------------------------------

def bench_pool(args, rows, with_ring):
    iters = 15 if args.quick else 150                    # batches per chunk
    batch = [(NR_GETPPID, ())] * 64
    ppid = os.getppid()
    ring = us.Ring() if with_ring else None
    try:
        with us.Pool(max_workers=4, ring=ring) as pool, \
                concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
            src = ring if with_ring else pool

            def pool_loop():
                submit_many, wait = pool.submit_many, src.wait
                for _ in range(iters):
                    submit_many(batch)
                    got = wait(64)
                    while len(got) < 64:
                        got += wait(64 - len(got))

            def tpe_loop():
                submit, getppid = ex.submit, os.getppid
                for _ in range(iters):
                    futs = [submit(getppid) for _ in range(64)]
                    for f in futs:
                        f.result()

            # correctness, untimed
            pool.submit_many(batch)
            got = src.wait(64, timeout=10)
            assert len(got) == 64 and all(c.res == ppid for c in got)
            name = "pool 64x getppid batch" + (" -> ring CQ" if with_ring else "")
            row = Row(name, "ThreadPoolExecutor(4)", None if with_ring else 5.0)
            for _ in range(args.runs):
                row.add(*pair(tpe_loop, iters * 64, pool_loop, iters * 64))
            rows.append(row)
    finally:
        if ring is not None:
            ring.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized runs")
    ap.add_argument("--runs", type=int, default=7, help="runs per row (median; >= 5)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    ap.add_argument("--dir", default="/var/tmp", help="where the scratch file goes")
    args = ap.parse_args()
    args.runs = max(args.runs, 5)

    print(f"uring_shim {us.__version__}, backend {us.backend()}: {us.backend_reason()}")
    print(f"python {platform.python_version()}, kernel {platform.release()}, "
          f"{os.cpu_count()} CPUs, runs {args.runs}{', quick' if args.quick else ''}")
    rows = []
    if us.io_uring_available():
        bench_reads(args, rows)
        bench_nop(args, rows)
    else:
        print("(io_uring rows skipped: threadpool backend)")
    bench_pool(args, rows, with_ring=False)
    if us.io_uring_available():
        bench_pool(args, rows, with_ring=True)

    w = max(len(r.name) for r in rows)
    wb = max(len(r.base_name) for r in rows)
    print()
    print(f"{'benchmark':<{w}}  {'baseline':<{wb}}  {'base':>12}  {'candidate':>12}  "
          f"{'ratio':>7}  {'target':>7}  result")
    fails = 0
    for r in rows:
        b, c = statistics.median(r.base), statistics.median(r.cand)
        if r.unit == "us":
            bs, cs = fmt_us(b), fmt_us(c)
            ratio = f"{1 / r.ratio():.2f}x"      # how many times slower than C
        else:
            bs, cs = fmt_rate(b), fmt_rate(c)
            ratio = f"{r.ratio():.2f}x"
        tgt = f">={r.target:g}x" if r.target else "-"
        v = r.verdict()
        fails += v == "FAIL"
        print(f"{r.name:<{w}}  {r.base_name:<{wb}}  {bs:>12}  {cs:>12}  {ratio:>7}  {tgt:>7}  {v}")
    print("\n(ratio = candidate/baseline throughput, median of per-run ratios; "
          "for 'us' rows: candidate time / C time)")
    return 1 if (fails and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
