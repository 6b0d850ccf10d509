#!/usr/bin/env python3
"""Syslets on I/O that really blocks, against the tools users would pick instead.

  python3 bench/bench_blocking.py [--pairs N] [--ios N] [--dir DIR] [--only NAME,...]
                                  [--strict] [--no-plot] [--json FILE]

Every row runs the same workload twice, ours and a baseline, in alternating
order, ``--pairs`` times (default 5); it reports the medians of both rates and
the median of the per-pair ratios with its range, and the median CPU time per
I/O of each side (ours: the whole process, every thread, over the timed span;
fio: its job threads' user + system time over the job's runtime).  Nothing is
compared with a number from another run or another machine.

The data file (1 GiB of a known pattern, ``examples/randread.c --make``; the
write rows use a second one, since fio writes bytes of its own) lives
in ``--dir`` (default ``bench/_build``, on the checkout's file system: not
tmpfs, whose reads never block).  Ours is ``examples/randread.c`` -- io units
of one pread64/pwrite64 atom, flags 0, the ring polled, ``async_wait`` only
when short -- run under ``LD_PRELOAD`` of libsyslet, every block checked
(``--light-verify``: three words of each, enough for a wrong or torn block;
fio checks nothing);
or, for the Python row, 32 one-atom chains of a ``compat.Context``.  The
baseline is Debian's ``fio`` (io_uring, libaio or psync engine) on the same
file, the same block size, queue depth and number of I/Os (``number_ios``),
random offsets with repeats (``norandommap``) as ours.

Rows (target in brackets):

* ``direct-dN``: 4 KiB random O_DIRECT reads at depth N = 1, 8, 32, 128
  against fio io_uring at the same depth [>= 0.9]; ``direct-d32-libaio``
  against fio libaio [>= 1.0]; ``fio-uring/libaio`` (info): fio's io_uring
  engine against its libaio one (with ``SINGLE_ISSUER | DEFER_TASKRUN``,
  which the syslet contract rules out: docs/benchmarks.md);
  ``uring-floor/libaio`` (info): a bare liburing loop with no library at
  all (``bench/c/uring_direct_loop.c ext``: one ``io_uring_enter`` per read,
  waiting with a timeout and signal mask as the engine's callers do, no
  ``DEFER_TASKRUN``) against fio libaio -- what any io_uring client that
  fits the contract reaches on that row, in the same run;
  ``direct-d1-psync`` against fio psync [>= 0.95], and ``uring-floor-d1/psync``
  (info), the same bare loop at depth 1 against it;
* ``write-d32``: random O_DIRECT writes of the pattern, depth 32, against
  fio io_uring randwrite [>= 0.9];
* ``cold-d32``: buffered random reads after ``posix_fadvise(DONTNEED)``,
  depth 32, against fio io_uring buffered (fio drops the cache itself)
  [>= 0.9];
* ``pool-d32``: the pool-only backend (``URING_SHIM_BACKEND=threadpool``),
  O_DIRECT reads, depth 32, against fio psync with 32 threads [>= 0.8];
* ``python-d32``: ``compat.Context`` with 32 O_DIRECT reads in flight (one
  ``Context.exec`` per chain that ``Context.wait`` reaped) against fio
  io_uring at depth 32 [>= 0.7].

It also draws IOPS against queue depth (the drop-in; fio io_uring, libaio;
psync with as many threads as the depth) into
``docs/blocking-iops.png`` (matplotlib; ``--no-plot`` skips it).  Exit status
0 unless ``--strict`` and a target failed.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_dropin import build, build_liburing_program, env_for  # noqa: E402

PLOT = os.path.join(ROOT, "docs", "blocking-iops.png")
FILE_MIB = 1024
BS = 4096


def fs_type(path):
    out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return out.stdout.strip()


def ensure_file(exe, path):
    """The pattern file at path: kept from an earlier run when it still reads
    back right (a spot check of 2000 blocks), else written anew."""
    if os.path.exists(path) and os.path.getsize(path) == FILE_MIB << 20:
        r = subprocess.run([exe, "--plain", "--ios", "2000", path], capture_output=True,
                           text=True)
        if r.returncode == 0:
            return
    print(f"writing the {FILE_MIB} MiB pattern file {path} ...", flush=True)
    subprocess.run([exe, "--make", path, str(FILE_MIB)], check=True)
    subprocess.run(["sync"], check=True)


def rate_of(stdout, what="reads/s"):
    for line in stdout.splitlines():
        if line.startswith(what + ":"):
            return float(line.split(":")[1])
    raise RuntimeError(f"no '{what}' line in:\n{stdout}")


def rate_cpu_of(stdout):
    """(I/Os per second, CPU microseconds per I/O) from a --cpu-rate output."""
    return rate_of(stdout), 1e6 / rate_of(stdout, "cpu reads/s")


def floor(exe, path, depth, ios):
    """The bare liburing loop, waiting as the engine's callers do (mode
    ext): (reads per second, CPU us per read)."""
    cmd = [exe, "ext", path, str(ios), str(depth), str(random.randrange(1, 1 << 30))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return rate_cpu_of(r.stdout)


def ours(exe, path, depth, ios, *flags, backend=None):
    """libsyslet under LD_PRELOAD: (reads (or writes) per second, CPU us per I/O)."""
    cmd = [exe, "--iodepth", str(depth), "--ios", str(ios), "--light-verify", "--cpu-rate",
           "--seed", str(random.randrange(1, 1 << 30)), *flags, path]
    r = subprocess.run(cmd, env=env_for(True, backend), capture_output=True, text=True)
    if r.returncode != 0 or "errors=0" not in r.stdout:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return rate_cpu_of(r.stdout)


def fio(path, engine, depth, ios, rw="randread", direct=1, jobs=1):
    """fio's (IOPS, CPU us per I/O) for the same work (ios I/Os in total)."""
    cmd = ["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", f"--bs={BS}",
           f"--direct={direct}", f"--ioengine={engine}", f"--iodepth={depth}",
           f"--number_ios={max(1, ios // jobs)}", "--norandommap", "--randrepeat=0",
           "--output-format=json"]
    if jobs > 1:
        cmd += [f"--numjobs={jobs}", "--thread", "--group_reporting"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    job = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
    side = job["write"] if rw.endswith("write") else job["read"]
    # usr_cpu/sys_cpu: percent of job_runtime, which group_reporting sums
    # over the jobs (numjobs threads: N times the wall-clock runtime)
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100 * job.get("job_runtime", side["runtime"]) / 1000
    return float(side["iops"]), 1e6 * cpu_s / max(1, side["total_ios"])


def python_worker(path, depth, ios):
    """The Python row's workload, in a process of its own: `depth` one-atom
    pread64 chains of an O_DIRECT fd in flight through compat.Context,
    each resubmitted with Context.exec as soon as Context.wait reaped it.
    Prints reads/s and cpu reads/s (per second of the process's CPU time)."""
    import time
    sys.path.insert(0, ROOT)
    import compat
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    nblocks = os.path.getsize(path) // BS
    rnd = random.Random(1)
    with compat.Context(ring_slots=2 * depth) as ctx:
        offs, chains = [], []
        for _ in range(depth):
            off = ctx.var()
            ch = ctx.chain()
            ch.pread64(fd, ctx.buffer(BS, align=4096), BS, off, ret=True)
            offs.append(off)
            chains.append(ch)
        index = {ch.head.addr: i for i, ch in enumerate(chains)}
        done = issued = bad = 0
        todo = list(range(depth))
        t0 = time.monotonic()
        c0 = time.process_time()
        while done < ios:
            # Each free chain is resubmitted as soon as it is reaped (one
            # Context.exec each): the device gets work back at once rather
            # than after a whole batch is prepared (measured: 1.27x the rate
            # of one exec_many over all 32).
            while todo and issued < ios:
                i = todo.pop()
                offs[i].value = rnd.randrange(nblocks) * BS
                issued += 1
                r = ctx.exec(chains[i])
                if r is not None:       # completed at once (or failed)
                    bad += not (isinstance(r, compat.Atom) and r.result == BS)
                    done += 1
                    todo.append(i)
            if issued > done:
                for a in ctx.wait(1):
                    bad += a.result != BS
                    done += 1
                    todo.append(index[a.addr])
        t1 = time.monotonic()
        c1 = time.process_time()
    os.close(fd)
    if bad:
        raise SystemExit(f"python worker: {bad} reads failed")
    print(f"reads/s: {ios / (t1 - t0):.0f}")
    print(f"cpu reads/s: {ios / max(c1 - c0, 1e-9):.0f}")


def python_rate(path, depth, ios):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--python-worker", path,
                        str(depth), str(ios)], capture_output=True, text=True,
                       env=env_for(False))
    if r.returncode != 0:
        raise RuntimeError(f"python worker failed:\n{r.stdout}{r.stderr}")
    return rate_cpu_of(r.stdout)


def compare(name, ours_fn, base_fn, target, pairs):
    """ours_fn, base_fn: () -> (I/Os per second, CPU us per I/O)."""
    o, b, oc, bc, ratios = [], [], [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            x = ours_fn()
            y = base_fn()
        else:
            y = base_fn()
            x = ours_fn()
        o.append(x[0])
        b.append(y[0])
        oc.append(x[1])
        bc.append(y[1])
        ratios.append(x[0] / y[0])
    row = {"name": name, "ours": statistics.median(o), "base": statistics.median(b),
           "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios),
           "ours_cpu_us": statistics.median(oc), "base_cpu_us": statistics.median(bc),
           "target": target}
    row["ok"] = target is None or row["ratio"] >= target
    verdict = "(info)" if target is None else \
        f"target >= {target:<4}  {'PASS' if row['ok'] else 'FAIL'}"
    print(f"{name:<20} {row['ours']:>9.0f} {row['base']:>9.0f}  {row['ratio']:5.2f}x "
          f"[{row['lo']:.2f}-{row['hi']:.2f}]  {row['ours_cpu_us']:5.2f} {row['base_cpu_us']:5.2f}  "
          f"{verdict}", flush=True)
    return row


def plot(points, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no plot)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    style = {"syslet drop-in": "o-", "fio io_uring": "s--", "fio libaio": "^--",
             "fio psync (N threads)": "x:"}
    for label, series in points.items():
        ds = sorted(series)
        ax.plot(ds, [series[d] / 1000 for d in ds], style.get(label, "o-"), label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 8, 32, 128])
    ax.set_xticklabels(["1", "8", "32", "128"])
    ax.set_xlabel("queue depth (in-flight reads; psync: threads)")
    ax.set_ylabel("thousand reads/s")
    ax.set_title("4 KiB random O_DIRECT reads, 1 GiB file on ext4 (same run)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {os.path.relpath(path, ROOT)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--ios", type=int, default=150000, help="I/Os per run at depth >= 8")
    ap.add_argument("--dir", default=os.path.join(HERE, "_build"))
    ap.add_argument("--only", default="", help="comma-separated row names")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--python-worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.python_worker:
        p, d, n = a.python_worker
        python_worker(p, int(d), int(n))
        return 0
    if a.pairs < 1 or a.ios < 1000:
        ap.error("--pairs must be >= 1 and --ios >= 1000")
    if not shutil.which("fio"):
        print("bench_blocking: fio is missing (make bench installs it)", file=sys.stderr)
        return 2
    os.makedirs(a.dir, exist_ok=True)
    fst = fs_type(a.dir)
    if fst in ("tmpfs", "ramfs"):
        print(f"bench_blocking: {a.dir} is on {fst}: its reads never block; use --dir",
              file=sys.stderr)
        return 2
    exe = build(os.environ.get("CC", "cc"), False)
    floor_exe = build_liburing_program(os.environ.get("CC", "cc"), "uring_direct_loop.c",
                                       "uring_direct_loop")
    path = os.path.join(a.dir, "blocking-1g.dat")
    ensure_file(exe, path)
    # The write rows get a file of their own: fio writes its own bytes.
    wpath = os.path.join(a.dir, "blocking-1g-w.dat")
    ensure_file(exe, wpath)
    n = a.ios
    n1 = max(1000, n // 5)      # depth 1 is ~5x slower
    only = set(filter(None, a.only.split(",")))
    print(f"data: {path} ({fst}); {a.pairs} alternating pairs per row; "
          f"{n} I/Os per run ({n1} at depth 1)")
    print(f"{'row':<20} {'ours/s':>9} {'base/s':>9}  ratio [range]      CPU us/IO: ours base")
    rows = []
    points = {"syslet drop-in": {}, "fio io_uring": {}, "fio libaio": {},
              "fio psync (N threads)": {}}

    def row(name, o, b, target):
        if only and name not in only:
            return None
        r = compare(name, o, b, target, a.pairs)
        rows.append(r)
        return r

    for d in (1, 8, 32, 128):
        k = n1 if d == 1 else n
        r = row(f"direct-d{d}", lambda d=d, k=k: ours(exe, path, d, k, "--direct"),
                lambda d=d, k=k: fio(path, "io_uring", d, k), 0.9)
        if r:
            points["syslet drop-in"][d] = r["ours"]
            points["fio io_uring"][d] = r["base"]
    r = row("direct-d32-libaio", lambda: ours(exe, path, 32, n, "--direct"),
            lambda: fio(path, "libaio", 32, n), 1.0)
    if r:
        points["fio libaio"][32] = r["base"]
    # The ceiling of the row above: fio's own io_uring engine against its
    # libaio one (io_uring completes through task work in the submitter,
    # aio in the interrupt).
    row("fio-uring/libaio", lambda: fio(path, "io_uring", 32, n),
        lambda: fio(path, "libaio", 32, n), None)
    # What an io_uring client that fits the syslet contract reaches there
    # with no library at all (no DEFER_TASKRUN: docs/benchmarks.md).
    row("uring-floor/libaio", lambda: floor(floor_exe, path, 32, n),
        lambda: fio(path, "libaio", 32, n), None)
    r = row("direct-d1-psync", lambda: ours(exe, path, 1, n1, "--direct"),
            lambda: fio(path, "psync", 1, n1), 0.95)
    if r:
        points["fio psync (N threads)"][1] = r["base"]
    row("uring-floor-d1/psync", lambda: floor(floor_exe, path, 1, n1),
        lambda: fio(path, "psync", 1, n1), None)
    row("write-d32", lambda: ours(exe, wpath, 32, n, "--direct", "--write"),
        lambda: fio(wpath, "io_uring", 32, n, rw="randwrite"), 0.9)
    row("cold-d32", lambda: ours(exe, path, 32, n, "--drop-cache"),
        lambda: fio(path, "io_uring", 32, n, direct=0), 0.9)
    r = row("pool-d32", lambda: ours(exe, path, 32, n, "--direct", backend="threadpool"),
            lambda: fio(path, "psync", 1, n, jobs=32), 0.8)
    if r:
        points["fio psync (N threads)"][32] = r["base"]
    row("python-d32", lambda: python_rate(path, 32, n // 2),
        lambda: fio(path, "io_uring", 32, n // 2), 0.7)

    if not a.no_plot and not only:
        # the plot's remaining points: one run each
        for d in (1, 8, 128):
            points["fio libaio"][d] = fio(path, "libaio", d, n1 if d == 1 else n)[0]
        for d in (8, 128):
            points["fio psync (N threads)"][d] = fio(path, "psync", 1, n, jobs=d)[0]
        plot(points, PLOT)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [r["name"] for r in rows if not r["ok"]]
    print("blocking I/O: " + ("all targets met" if not failed else "FAIL: " + ", ".join(failed)))
    return 1 if failed and a.strict else 0


if __name__ == "__main__":
    sys.exit(main())
