"""``syslet-compat conformance``: the syslet ABI v1 conformance suite.

One check per item of the v1 specification (docs/spec.md sections 1-6, and
the rules of sections 8 and 12 that hold for v1 atoms and calls; the checks are
``compat/conformance/conformance.c``, shipped inside the package), compiled at
run time with the system's C compiler against ``compat/include/syslet.h`` and
run with ``LD_PRELOAD`` set to the implementation under test:

* by default, this project's drop-in (``compat/libsyslet.so``) on the
  ``--backend`` asked for (``URING_SHIM_BACKEND`` in the checks' environment);
* with ``--preload PATH``, any shared library that implements the calls --
  the checks only use ``syscall()`` with the numbers of ``syslet-numbers.h``,
  plus the exported functions for the one item about them.

Each check runs in a process of its own with a time limit.  Output: a header
line, one line per item (``ok`` or ``FAIL`` with the reason), a summary line.
Exit status 0 only when every item passed; 1 when one failed; 2 when the suite
could not run (no C compiler, no such library, a bad option).
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

PKG_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(PKG_DIR, "conformance", "conformance.c")
INCLUDE_DIR = os.path.join(PKG_DIR, "include")
OWN_LIBRARY = os.path.join(PKG_DIR, "libsyslet.so")

#: Environment variables of ours that must not leak into the checks.
_OURS = ("LD_PRELOAD", "SYSLET_COMPAT_TRACE", "SYSLET_COMPAT_DEBUG", "SYSLET_COMPAT_REPORT",
         "SYSLET_COMPAT_ABI")    # v1: the 2007 numbers stay today's calls (item 6-old-numbers)
#: Whole-suite limit (each check has its own, 15 s, inside the program).
SUITE_TIMEOUT = 600


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("auto", "io_uring", "threadpool"), default=None,
                   help="backend of this project's engine (default: URING_SHIM_BACKEND, "
                        "else auto); ignored by other implementations")
    p.add_argument("--preload", metavar="PATH", default=None,
                   help="the implementation to check: a shared library preloaded into the "
                        "checks, or several as PATH:PATH... in LD_PRELOAD order (default: "
                        "this project's libsyslet.so)")
    p.add_argument("--cc", metavar="CC", default=None,
                   help="C compiler (default: $CC, else cc)")
    p.add_argument("--list", action="store_true", help="list the items and exit")
    p.add_argument("items", nargs="*", metavar="ITEM",
                   help="check only these items (ids as --list shows them)")


class SuiteError(Exception):
    """The suite could not run (exit status 2)."""


def _compiler(arg: Optional[str]) -> List[str]:
    cc = arg or os.environ.get("CC") or "cc"
    words = shlex.split(cc)
    if not words or not shutil.which(words[0]):
        raise SuiteError(f"no C compiler ({cc!r} not found; install gcc or give --cc)")
    return words


def build(outdir: str, cc: Optional[str] = None) -> str:
    """Compiles the checks; returns the executable's path."""
    if not os.path.exists(SOURCE):
        raise SuiteError(f"{SOURCE} is missing (a broken install?)")
    exe = os.path.join(outdir, "conformance")
    cmd = _compiler(cc) + ["-O1", "-std=gnu11", "-pthread", "-I", INCLUDE_DIR, SOURCE,
                           "-o", exe, "-ldl"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except OSError as e:
        raise SuiteError(f"cannot run {cmd[0]}: {e.strerror}") from None
    if r.returncode != 0:
        first = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr.strip())
        raise SuiteError(f"compiling the checks failed: {first.strip()}")
    return exe


def list_items(exe: str) -> List[Tuple[str, str, str]]:
    """[(id, section, title)] in the program's order."""
    r = subprocess.run([exe, "--list"], capture_output=True, text=True, timeout=60,
                       env=_clean_env())
    if r.returncode != 0:
        raise SuiteError(f"{exe} --list failed: {r.stderr.strip()}")
    out: List[Tuple[str, str, str]] = []
    for line in r.stdout.splitlines():
        if line:
            ident, section, title = line.split("\t", 2)
            out.append((ident, section, title))
    return out


def _clean_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _OURS}


def _describe(status: int) -> str:
    if status < 0:
        import signal
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def run_suite(exe: str, library: str, backend: Optional[str], items: Sequence[str],
              out: TextIO = sys.stdout) -> Tuple[int, int, Optional[str]]:
    """Runs the checks with library preloaded; prints the report; returns
    (passed, failed, reported backend or None)."""
    titles = {i: (s, t) for i, s, t in list_items(exe)}
    selected = items or list(titles)
    env = _clean_env()
    env["LD_PRELOAD"] = library
    if backend:
        env["URING_SHIM_BACKEND"] = backend
    width = max(len(i) for i in selected)
    results: Dict[str, Tuple[str, str]] = {}
    seen_backend = None
    proc = subprocess.Popen([exe, *items], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None
    try:
        for line in stdout:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) != 3:
                continue
            ident, status, reason = parts
            if ident == "#":
                if status == "backend":
                    seen_backend = reason
                continue
            if ident not in titles or ident in results:
                continue
            results[ident] = (status, reason)
            _print_item(out, ident, titles[ident][1], status, reason, width)
        proc.wait(timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = stderr.read().strip()
    stderr.close()
    stdout.close()
    why = (f"the suite's process ended early ({_describe(proc.returncode)})"
           + (f": {err.splitlines()[-1]}" if err else ""))
    for ident in selected:
        if ident not in results:
            results[ident] = ("FAIL", f"no result: {why}")
            _print_item(out, ident, titles[ident][1], "FAIL", results[ident][1], width)
    passed = sum(1 for s, _ in results.values() if s == "ok")
    return passed, len(results) - passed, seen_backend


def _print_item(out: TextIO, ident: str, title: str, status: str, reason: str,
                width: int) -> None:
    if status == "ok":
        out.write(f"ok    {ident:<{width}}  {title}\n")
    else:
        out.write(f"FAIL  {ident:<{width}}  {title}: {reason}\n")
    out.flush()


def _usage_error(args: argparse.Namespace, message: str) -> int:
    parser = getattr(args, "_parser", None)
    if parser is not None:
        parser.error(message)           # one line, exit status 2
    print(f"syslet-compat conformance: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    prog = getattr(getattr(args, "_parser", None), "prog", "syslet-compat conformance")
    libs = [os.path.abspath(p) for p in args.preload.split(":") if p] if args.preload \
        else [OWN_LIBRARY]
    if not args.list:
        for lib in libs:
            if not os.path.isfile(lib):
                if args.preload:
                    return _usage_error(args, f"--preload {args.preload}: no such file"
                                        + (f" {lib}" if len(libs) > 1 else ""))
                print(f"{prog}: {OWN_LIBRARY} is missing; rebuild with `make venv` or "
                      "`pip install -e .`", file=sys.stderr)
                return 2
        if not libs:
            return _usage_error(args, "--preload: no library given")
    library = ":".join(libs)
    own = len(libs) == 1 and os.path.exists(libs[0]) and os.path.exists(OWN_LIBRARY) and \
        os.path.samefile(libs[0], OWN_LIBRARY)
    backend = args.backend or os.environ.get("URING_SHIM_BACKEND") or None
    if backend == "auto":
        backend = None
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="syslet-conformance-") as tmp:
            exe = build(tmp, args.cc)
            items = list_items(exe)
            if args.list:
                width = max(len(i) for i, _, _ in items)
                for ident, section, title in items:
                    print(f"{ident:<{width}}  §{section:<8} {title}")
                return 0
            known = {i for i, _, _ in items}
            unknown = [i for i in args.items if i not in known]
            if unknown:
                return _usage_error(args, f"no item named {unknown[0]} (--list lists them)")
            what = (f"this project's libsyslet.so ({library})" if own else library)
            n = len(args.items or items)
            print(f"syslet ABI v1 conformance: {n} item{'s' * (n != 1)} of the specification "
                  f"against {what}" + (f", backend {backend or 'auto'}" if own else ""))
            sys.stdout.flush()
            passed, failed, seen = run_suite(exe, library, backend, args.items)
    except SuiteError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    dt = time.monotonic() - t0
    mismatch = own and backend and seen and seen != backend
    ran_on = f"; ran on {seen}" if seen else ""
    n = passed + failed
    print(f"{n} item{'s' * (n != 1)}: {passed} ok, {failed} FAIL{ran_on} ({dt:.1f} s)")
    if mismatch:
        print(f"{prog}: asked for backend {backend} but the engine ran on {seen} "
              "(io_uring unavailable here?): not the backend asked for", file=sys.stderr)
        return 1
    return 0 if failed == 0 else 1
