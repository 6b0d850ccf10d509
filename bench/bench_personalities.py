#!/usr/bin/env python3
"""The later syslet ABIs (personalities v5, v6, v7) against their baselines.

  python3 bench/bench_personalities.py [--pairs N] [--ios N] [--dir DIR]
                                       [--only NAME,...] [--strict] [--json FILE]

Every row runs ours and a baseline in alternating order, ``--pairs`` times
(default 5), and reports the medians of both rates and the median of the
per-pair ratios with its range (judged: wall clock), and the median ratio of
reads per second of CPU time (info: less sensitive to other load on a shared
machine; ours and the C loop: the whole process; fio: its job's user +
system time).  Ours are the C examples, run under
``LD_PRELOAD`` of libsyslet with the project's numbers, every block checked
(``--light-verify``: three words of each, enough for a wrong or torn block):
``examples/randread_v5.c`` (v5; ``-DV6`` for v6), ``examples/indirect_v7.c``
(v7) and, for v1, ``examples/randread.c``.

Page-cached rows (a 256 MiB pattern file read once before; 4 KiB random
reads):

* ``v5-batch32``: fio-v4 style, 32 pread64 atoms chained through ``next``,
  one ``async_exec`` per batch, against ``bench/c/uring_read_loop.c uring``
  (liburing, 32 plain read SQEs per ``io_uring_submit_and_wait``)
  [>= 0.9]; ``v6-batch32`` the same with 80-byte atoms (info);
  ``linked/plain-uring`` (info): the C loop with its 32 SQEs hard-linked --
  what a 32-atom chain becomes in io_uring -- against the plain one: the
  kernel's own price for running a chain in order;
* ``v7-indirect``: one ``indirect`` pread64 per read, against the same
  binary's plain ``pread()`` loop (``--plain``) [>= 0.9];
  ``v7-floor-nowait`` (info): the same binary's ``preadv2(RWF_NOWAIT)`` loop
  (``--plain-nowait``, no library at all) against the plain loop: the least
  any in-place "would it block?" try costs on this kernel, in the same run.

Blocking rows (the 1 GiB file of bench_blocking.py on the checkout's file
system, O_DIRECT 4 KiB random reads, 32 in flight, flags 0), each against
Debian's fio ``ioengine=io_uring`` at iodepth 32 [>= 0.9]:

* ``direct-d32-v1``: randread.c, one pread64 atom per syslet;
* ``direct-d32-v5`` / ``-v6``: one pread64 atom per ``async_exec``
  (``--batch 1``, as fio's v3 engine);
* ``direct-d32-v7``: one ``indirect`` per read;
* ``direct-v5-batch32`` (info): 32-atom chains, fio's default batching --
  the 32 independent reads of a chain go to the device together (one
  unlinked submission), but a chain is reported when its slowest read ends,
  and its units are free for the next batch only then.

Not a test: exit status 0 unless ``--strict`` and a target failed.
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_blocking import FILE_MIB, ensure_file, fio, fs_type, rate_of  # noqa: E402
from bench_dropin import build_liburing_program, config, env_for  # noqa: E402

BUILD = os.path.join(HERE, "_build")
EX = os.path.join(ROOT, "examples")
CACHED_MIB = 256


def build(cc, src, name, *flags):
    os.makedirs(BUILD, exist_ok=True)
    exe = os.path.join(BUILD, name)
    subprocess.run([cc, "-O2", *shlex.split(config("--cflags")), *flags, src, "-o", exe],
                   check=True)
    return exe


def example(exe, path, ios, *flags, preload=True):
    """An example's (reads/s, reads per CPU second); ours under LD_PRELOAD,
    --plain without it."""
    cmd = [exe, "--ios", str(ios), "--light-verify", "--cpu-rate", *flags, path]
    r = subprocess.run(cmd, env=env_for(preload), capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or " errors=0 " not in r.stdout:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return rate_of(r.stdout), rate_of(r.stdout, "cpu reads/s")


def uring_loop(exe, mode, path, ios, seed=1):
    """The C liburing loop's (reads/s, reads per CPU second)."""
    cmd = [exe, mode, path, str(ios), "32", str(seed)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    kv = dict(w.split("=") for w in r.stdout.split())
    return float(kv["reads_per_sec"]), float(kv["reads"]) / float(kv["cpu_s"])


def fio_rate(*args, **kw):
    """bench_blocking.fio's (IOPS, reads per CPU second of fio's job)."""
    iops, cpu_us = fio(*args, **kw)
    return iops, 1e6 / cpu_us if cpu_us > 0 else float("inf")


def compare(name, ours_fn, base_fn, target, pairs):
    """ours_fn/base_fn give a rate, or (rate, rate per CPU second)."""
    o, b, ratios, cpu = [], [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            x, y = ours_fn(), base_fn()
        else:
            y = base_fn()
            x = ours_fn()
        if isinstance(x, tuple) and isinstance(y, tuple):
            cpu.append(x[1] / y[1])
        x, y = (v[0] if isinstance(v, tuple) else v for v in (x, y))
        o.append(x)
        b.append(y)
        ratios.append(x / y)
    row = {"name": name, "ours": statistics.median(o), "base": statistics.median(b),
           "ratio": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios),
           "cpu_ratio": statistics.median(cpu) if cpu else None, "target": target}
    row["ok"] = target is None or row["ratio"] >= target
    verdict = "(info)" if target is None else \
        f"target >= {target:<4}  {'PASS' if row['ok'] else 'FAIL'}"
    c = f"{row['cpu_ratio']:5.2f}x" if cpu else "    -"
    print(f"{name:<22} {row['ours']:>9.0f} {row['base']:>9.0f}  {row['ratio']:5.2f}x "
          f"[{row['lo']:.2f}-{row['hi']:.2f}]  {c}  {verdict}", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--ios", type=int, default=200000, help="reads per cached run")
    ap.add_argument("--direct-ios", type=int, default=150000, help="reads per O_DIRECT run")
    ap.add_argument("--dir", default=BUILD, help="where the data files live (not tmpfs)")
    ap.add_argument("--only", default="", help="comma-separated row names")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    if a.pairs < 1 or a.ios < 1000 or a.direct_ios < 1000:
        ap.error("--pairs must be >= 1, --ios and --direct-ios >= 1000")
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        print("bench_personalities: no C compiler: skipped")
        return 0
    only = set(filter(None, a.only.split(",")))
    v1 = build(cc, os.path.join(EX, "randread.c"), "randread")
    v5 = build(cc, os.path.join(EX, "randread_v5.c"), "randread_v5")
    v6 = build(cc, os.path.join(EX, "randread_v5.c"), "randread_v6", "-DV6")
    v7 = build(cc, os.path.join(EX, "indirect_v7.c"), "indirect_v7")
    loop = build_liburing_program(cc, "uring_read_loop.c", "uring_read_loop")
    os.makedirs(a.dir, exist_ok=True)
    rows = []

    def row(name, o, b, target):
        if only and name not in only:
            return
        rows.append(compare(name, o, b, target, a.pairs))

    cached = os.path.join(a.dir, "personalities-256m.dat")
    if not os.path.exists(cached) or os.path.getsize(cached) != CACHED_MIB << 20:
        subprocess.run([v1, "--make", cached, str(CACHED_MIB)], check=True)
    with open(cached, "rb") as f:           # into the page cache
        while f.read(1 << 20):
            pass
    n = a.ios
    print(f"cached: {cached}, {CACHED_MIB} MiB in the page cache; {a.pairs} alternating pairs "
          f"per row; {n} reads per run")
    print(f"{'row':<22} {'ours/s':>9} {'base/s':>9}  ratio [range]        CPU ratio")
    row("v5-batch32", lambda: example(v5, cached, n, "--batch", "32"),
        lambda: uring_loop(loop, "uring", cached, n), 0.9)
    row("v6-batch32", lambda: example(v6, cached, n, "--batch", "32"),
        lambda: uring_loop(loop, "uring", cached, n), None)
    row("linked/plain-uring", lambda: uring_loop(loop, "uring-linked", cached, n),
        lambda: uring_loop(loop, "uring", cached, n), None)
    row("v7-indirect", lambda: example(v7, cached, n),
        lambda: example(v7, cached, n, "--plain", preload=False), 0.9)
    # The floor of any in-place try: preadv2(RWF_NOWAIT) alone, no library
    # code, against the same plain pread loop (docs/benchmarks.md).
    row("v7-floor-nowait", lambda: example(v7, cached, n, "--plain-nowait", preload=False),
        lambda: example(v7, cached, n, "--plain", preload=False), None)

    if not shutil.which("fio"):
        print("bench_personalities: fio is missing (make bench installs it): blocking rows "
              "skipped", file=sys.stderr)
    else:
        fst = fs_type(a.dir)
        if fst in ("tmpfs", "ramfs"):
            print(f"bench_personalities: {a.dir} is on {fst}: its reads never block; use --dir",
                  file=sys.stderr)
            return 2
        path = os.path.join(a.dir, "blocking-1g.dat")
        ensure_file(v1, path)
        d = a.direct_ios
        print(f"blocking: {path} ({fst}, {FILE_MIB} MiB), O_DIRECT, 32 in flight; {d} reads "
              "per run; baseline fio io_uring iodepth 32")
        base = lambda: fio_rate(path, "io_uring", 32, d)     # noqa: E731
        row("direct-d32-v1", lambda: example(v1, path, d, "--direct", "--iodepth", "32"),
            base, 0.9)
        row("direct-d32-v5", lambda: example(v5, path, d, "--direct", "--batch", "1"), base, 0.9)
        row("direct-d32-v6", lambda: example(v6, path, d, "--direct", "--batch", "1"), base, 0.9)
        row("direct-d32-v7", lambda: example(v7, path, d, "--direct"), base, 0.9)
        row("direct-v5-batch32", lambda: example(v5, path, d // 10, "--direct", "--batch", "32"),
            lambda: fio_rate(path, "io_uring", 32, d // 10), None)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [r["name"] for r in rows if not r["ok"]]
    print("personalities: " + ("all targets met" if not failed else "FAIL: " + ", ".join(failed)))
    return 1 if failed and a.strict else 0


if __name__ == "__main__":
    sys.exit(main())
