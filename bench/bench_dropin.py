#!/usr/bin/env python3
"""The C drop-in's benchmark (never a timed unit test).

  python3 bench/bench_dropin.py [--quick] [--runs N] [--ios N] [--bs N] [--cpu N]
                                [--strict] [--dir DIR]

examples/randread.c -- a fio-style random-read engine (io units with one
pread64 atom each, iodepth 32, the ring polled and async_wait only when short,
every block verified) -- run through the preloaded libsyslet, against the same
binary in --plain mode (a plain pread() loop, same offsets, same
verification), on a page-cached pattern file (256 MiB; 32 MiB with --quick)
in --dir (default /var/tmp, removed afterwards).  Each run measures every
case, in an order reversed from one run to the next; the table shows the
median over the runs (default 11, 200000 reads each) of each reads/s and of
the per-run ratios with their interquartile range, by wall clock (judged)
and by process CPU time (info: less sensitive to other load on a shared
machine).  Target: syslet/plain >= 0.9 (PASS/FAIL).  Informational rows:

* linked: the same program linked with -lsyslet instead of LD_PRELOAD;
* pool-only: LD_PRELOAD with URING_SHIM_BACKEND=threadpool;
* plain-nowait: the plain loop with libc's preadv2(RWF_NOWAIT), the system
  call the engine itself issues to learn whether a read would block (in the
  kernel it costs more than pread: the vector interface);
* ret after syscall: bench/c/ret_after_syscall.c -- what returning from a
  function with `ret` right after a pread64 costs, against returning with
  pop + jmp.  libsyslet's x86_64 exec entry returns the second way; libc's
  pread (the plain loop) the first (docs/decisions.md D22).  Where that
  penalty is large (AMD, SRSO "Safe RET") the syslet program can beat the
  plain loop; where it is ~0 expect the plain-nowait ratio or a little less.

Exit status 0 unless --strict and the target failed.
"""
import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "_build")
RANDREAD = os.path.join(ROOT, "examples", "randread.c")
TARGET = 0.9


def config(*flags):
    out = subprocess.run([sys.executable, "-m", "compat", "config", *flags], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip()


def build(cc, linked):
    os.makedirs(BUILD, exist_ok=True)
    exe = os.path.join(BUILD, "randread-linked" if linked else "randread")
    cmd = [cc, "-O2", *shlex.split(config("--cflags")), RANDREAD, "-o", exe]
    if linked:
        cmd += shlex.split(config("--libs"))
    subprocess.run(cmd, check=True)
    return exe


LIBURING_A = "/usr/lib/x86_64-linux-gnu/liburing.a"


def build_liburing_program(cc, src, name):
    """A C program of bench/c/ linked with liburing (static when the
    archive is there), built into bench/_build/name."""
    os.makedirs(BUILD, exist_ok=True)
    exe = os.path.join(BUILD, name)
    link = [LIBURING_A] if os.path.exists(LIBURING_A) else ["-luring"]
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "c", src)] + link, check=True)
    return exe


def env_for(preload, backend=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "SYSLET_COMPAT_DEBUG", "SYSLET_COMPAT_TRACE")}
    if preload:
        env["LD_PRELOAD"] = config("--preload")
    if backend:
        env["URING_SHIM_BACKEND"] = backend
    return env


def reads_per_s(exe, args, preload, cpu, backend=None):
    cmd = [exe, *args]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu)] + cmd
    r = subprocess.run(cmd, env=env_for(preload, backend), capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    first, rate, cpu_rate = r.stdout.splitlines()[:3]
    if " errors=0 " not in first:
        raise SystemExit(f"verification failed: {first}")
    return float(rate.split()[1]), float(cpu_rate.split()[2]), first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 MiB file, fewer reads")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--ios", type=int, help="reads per measurement (default 200000; quick 100000)")
    ap.add_argument("--bs", type=int, default=4096)
    ap.add_argument("--cpu", type=int, help="pin every measured process to this CPU (taskset)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if the target fails")
    ap.add_argument("--dir", default="/var/tmp")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be >= 1")
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        print("bench_dropin: no C compiler: skipped")
        return 0
    mib = 32 if a.quick else 256
    ios = a.ios or (100_000 if a.quick else 200_000)
    plain_exe, linked_exe = build(cc, False), build(cc, True)
    ras_exe = os.path.join(BUILD, "ret_after_syscall")
    subprocess.run([cc, "-O2", os.path.join(HERE, "c", "ret_after_syscall.c"), "-o", ras_exe],
                   check=True)

    tmpdir = tempfile.mkdtemp(prefix="bench-dropin-", dir=a.dir)
    try:
        path = os.path.join(tmpdir, "pattern.bin")
        subprocess.run([plain_exe, "--make", path, str(mib)], check=True)
        with open(path, "rb") as f:              # into the page cache
            while f.read(1 << 20):
                pass
        common = ["--ios", str(ios), "--bs", str(a.bs), "--iodepth", "32", "--cpu-rate"]
        rows = {"plain": [], "syslet": [], "linked": [], "pool": [], "plain-nowait": []}
        cpu = {k: [] for k in rows}
        firsts = set()
        cases = [("plain", plain_exe, ["--plain"], False, None),
                 ("syslet", plain_exe, [], True, "io_uring"),
                 ("plain-nowait", plain_exe, ["--plain-nowait"], False, None),
                 ("linked", linked_exe, [], False, "io_uring"),
                 ("pool", plain_exe, [], True, "threadpool")]
        for run in range(a.runs):
            for name, exe, args, preload, backend in (cases if run % 2 == 0 else cases[::-1]):
                rate, cpu_rate, first = reads_per_s(exe, args + common + [path], preload, a.cpu,
                                                    backend)
                rows[name].append(rate)
                cpu[name].append(cpu_rate)
                firsts.add(first)
        if len(firsts) != 1:
            raise SystemExit(f"outputs differ between modes: {sorted(firsts)}")
        ras = subprocess.run([ras_exe, path], check=True, capture_output=True, text=True,
                             timeout=600).stdout.split()
        ras = {k: float(v) for k, v in (w.split("=") for w in ras)}
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    def ratios(name, table=rows):
        return [x / p for x, p in zip(table[name], table["plain"])]

    def ratio(name, table=rows):
        return statistics.median(ratios(name, table))

    def iqr(name):
        rs = sorted(ratios(name))
        if len(rs) < 4:
            return "-"
        q = statistics.quantiles(rs, n=4)
        return f"{q[0]:.2f}-{q[2]:.2f}"

    print(f"bench_dropin: {platform.node()} {platform.release()}, {mib} MiB page-cached file, "
          f"{ios} random {a.bs}-byte reads x {a.runs} runs, iodepth 32"
          + (f", CPU {a.cpu}" if a.cpu is not None else ""))
    print(f"{'case':<46}{'reads/s':>10}{'plain':>10}{'ratio':>8}{'IQR':>11}{'CPU ratio':>11}"
          "  target")
    med_plain = statistics.median(rows["plain"])
    verdict = None
    for name, label in (("syslet", "randread via LD_PRELOAD libsyslet"),
                        ("linked", "randread linked -lsyslet (info)"),
                        ("pool", "LD_PRELOAD, pool-only backend (info)"),
                        ("plain-nowait", "plain loop, libc preadv2(RWF_NOWAIT) (info)")):
        r = ratio(name)
        tgt = ""
        if name == "syslet":
            ok = r >= TARGET
            verdict = ok
            tgt = f">= {TARGET}  {'PASS' if ok else 'FAIL'}"
        print(f"{label:<46}{statistics.median(rows[name]):>10.0f}{med_plain:>10.0f}{r:>8.3f}"
              f"{iqr(name):>11}{ratio(name, cpu):>11.3f}  {tgt}")
    print(f"ret after syscall (info): a function that returns with ret right after a cached "
          f"pread64: {ras['ret_ns']:.0f} ns, with pop+jmp: {ras['jmp_ns']:.0f} ns "
          f"(penalty {ras['penalty_ns']:.0f} ns; libc's pread pays it, libsyslet's exec entry "
          "does not)")
    print("ratio: wall-clock reads/s over the plain loop's, median of per-run ratios (judged), "
          "IQR their interquartile range; CPU ratio: the same per second of process CPU time "
          "(less sensitive to other load)")
    return 1 if a.strict and not verdict else 0


if __name__ == "__main__":
    sys.exit(main())
