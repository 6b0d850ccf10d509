"""``syslet-compat run [options] -- PROG ARGS...``: run a legacy syslet
program under the drop-in and write a migration report at its exit.

The program runs with ``LD_PRELOAD`` set to this package's ``libsyslet.so``
(in front of any ``LD_PRELOAD`` already set) and ``SYSLET_COMPAT_REPORT`` set
to a scratch directory: at exit, every process of the program that made a
syslet call writes its counters there as JSON (``compat/csrc/dropin.c``,
``report_write``).  This command adds them up and writes the report: per
system call, how many atoms ran inline (and of those, how many were page-cache
hits served with ``RWF_NOWAIT``), on io_uring (alone, or in a linked segment),
on the fallback pool; how many syslets completed in the caller and how many
went async; how often a finished syslet waited for a full ring; and what a
port to plain io_uring has to change.

The exit status is the program's (128 + N when signal N ended it; 127 when it
cannot be started).  A process that ends without running its ``atexit``
handlers (``_exit``, a fatal signal, ``exec`` of another program) writes no
counters; a static or set-uid program ignores ``LD_PRELOAD`` altogether.
"""
import argparse
import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._syscalls import NR

PKG_DIR = os.path.dirname(os.path.abspath(__file__))
LIBRARY = os.path.join(PKG_DIR, "libsyslet.so")

#: Atom ABIs: v1 is served today; the later ones are passed through to the
#: drop-in in SYSLET_COMPAT_ABI.
ABIS = ("v1", "v5", "v6", "v7")
#: Kinds of the per-call counters, in the drop-in's order (engine.h SL_NRC_*).
KINDS = ("inline", "nowait", "uring", "uring_linked", "pool")

_NAME = {v: k for k, v in NR.items()}
_NAME.update({1004: "umem_add", 1012: "umem_add (v5 number)", 1022: "umem_add (v6 number)"})
UMEM = {1004, 1012, 1022}
#: An atom's 2007 numbers under personalities v5 and v6 (docs/spec.md 8):
#: umem_add, and the refused syslet calls.
_ABI_NUMBERS = {
    "v5": ({282: "umem_add (v5 number 282)"}, {280, 281, 283}),
    "v6": ({288: "umem_add (v6 number 288)"}, {286, 287, 289}),
}

#: Calls refused in an atom (docs/spec.md 2.3, 6, 8): those that end or
#: replace the thread or process, and the project's range 1000-1039 but
#: umem_add's numbers.
REFUSED = {15, 56, 57, 58, 59, 60, 231, 322, 435} | (set(range(1000, 1040)) - UMEM)
#: Calls this engine sends to io_uring (compat/csrc/engine/sysclass.c, uring_op).
ENGINE_URING = {0, 1, 2, 3, 17, 18, 74, 75, 257}
#: Calls that never block (run in place by the engine; sysclass.c, never_blocks).
NEVER_BLOCKS = {39, 186, 110, 102, 104, 107, 108, 8, 32, 33, 292, 5, 95, 79, 228, 96, 201, 63,
                22, 293, 24, 97, 98, 99, 121, 111, 124}

#: io_uring opcodes for system calls, with the first kernel that has them.
URING_OPS = {
    "read": ("IORING_OP_READ", "5.6"), "pread64": ("IORING_OP_READ", "5.6"),
    "write": ("IORING_OP_WRITE", "5.6"), "pwrite64": ("IORING_OP_WRITE", "5.6"),
    "readv": ("IORING_OP_READV", "5.1"), "preadv": ("IORING_OP_READV", "5.1"),
    "preadv2": ("IORING_OP_READV", "5.1"), "writev": ("IORING_OP_WRITEV", "5.1"),
    "pwritev": ("IORING_OP_WRITEV", "5.1"), "pwritev2": ("IORING_OP_WRITEV", "5.1"),
    "fsync": ("IORING_OP_FSYNC", "5.1"),
    "fdatasync": ("IORING_OP_FSYNC with IORING_FSYNC_DATASYNC", "5.1"),
    "poll": ("IORING_OP_POLL_ADD (one fd per SQE)", "5.1"),
    "ppoll": ("IORING_OP_POLL_ADD (one fd per SQE)", "5.1"),
    "sync_file_range": ("IORING_OP_SYNC_FILE_RANGE", "5.2"),
    "sendmsg": ("IORING_OP_SENDMSG", "5.3"), "recvmsg": ("IORING_OP_RECVMSG", "5.3"),
    "nanosleep": ("IORING_OP_TIMEOUT", "5.4"), "clock_nanosleep": ("IORING_OP_TIMEOUT", "5.4"),
    "accept": ("IORING_OP_ACCEPT", "5.5"), "accept4": ("IORING_OP_ACCEPT", "5.5"),
    "connect": ("IORING_OP_CONNECT", "5.5"),
    "fallocate": ("IORING_OP_FALLOCATE", "5.6"),
    "open": ("IORING_OP_OPENAT", "5.6"), "openat": ("IORING_OP_OPENAT", "5.6"),
    "openat2": ("IORING_OP_OPENAT2", "5.6"), "close": ("IORING_OP_CLOSE", "5.6"),
    "statx": ("IORING_OP_STATX", "5.6"),
    "stat": ("IORING_OP_STATX (struct statx instead of struct stat)", "5.6"),
    "lstat": ("IORING_OP_STATX (struct statx instead of struct stat)", "5.6"),
    "fstat": ("IORING_OP_STATX (struct statx instead of struct stat)", "5.6"),
    "newfstatat": ("IORING_OP_STATX (struct statx instead of struct stat)", "5.6"),
    "fadvise64": ("IORING_OP_FADVISE", "5.6"), "madvise": ("IORING_OP_MADVISE", "5.6"),
    "sendto": ("IORING_OP_SEND", "5.6"), "recvfrom": ("IORING_OP_RECV", "5.6"),
    "epoll_ctl": ("IORING_OP_EPOLL_CTL", "5.6"),
    "splice": ("IORING_OP_SPLICE", "5.7"), "tee": ("IORING_OP_TEE", "5.8"),
    "shutdown": ("IORING_OP_SHUTDOWN", "5.11"),
    "rename": ("IORING_OP_RENAMEAT", "5.11"), "renameat": ("IORING_OP_RENAMEAT", "5.11"),
    "renameat2": ("IORING_OP_RENAMEAT", "5.11"),
    "unlink": ("IORING_OP_UNLINKAT", "5.11"), "unlinkat": ("IORING_OP_UNLINKAT", "5.11"),
    "rmdir": ("IORING_OP_UNLINKAT with AT_REMOVEDIR", "5.11"),
    "mkdir": ("IORING_OP_MKDIRAT", "5.15"), "mkdirat": ("IORING_OP_MKDIRAT", "5.15"),
    "symlink": ("IORING_OP_SYMLINKAT", "5.15"), "symlinkat": ("IORING_OP_SYMLINKAT", "5.15"),
    "link": ("IORING_OP_LINKAT", "5.15"), "linkat": ("IORING_OP_LINKAT", "5.15"),
    "getxattr": ("IORING_OP_GETXATTR", "5.19"), "fgetxattr": ("IORING_OP_FGETXATTR", "5.19"),
    "setxattr": ("IORING_OP_SETXATTR", "5.19"), "fsetxattr": ("IORING_OP_FSETXATTR", "5.19"),
    "socket": ("IORING_OP_SOCKET", "5.19"),
    "waitid": ("IORING_OP_WAITID", "6.7"),
    "futex": ("IORING_OP_FUTEX_WAIT / IORING_OP_FUTEX_WAKE", "6.7"),
    "ftruncate": ("IORING_OP_FTRUNCATE", "6.9"),
    "bind": ("IORING_OP_BIND", "6.11"), "listen": ("IORING_OP_LISTEN", "6.11"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--abi", choices=ABIS, default=None,
                   help="atom ABI the program was written for (SYSLET_COMPAT_ABI; "
                        "default: the drop-in's, v1)")
    p.add_argument("--backend", choices=("auto", "io_uring", "threadpool"), default=None,
                   help="engine backend (URING_SHIM_BACKEND; default: as set, else auto)")
    p.add_argument("--report", metavar="FILE", default=None,
                   help="write the report to FILE (default: stderr, after the program's output)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="report format (default text)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- PROG ARGS",
                   help="the program and its arguments")


# ---- collecting ---------------------------------------------------------------

def call_name(key: str, abi: str = "v1") -> str:
    if key == "other":
        return "(unknown numbers)"
    nr = int(key)
    umem, refused = _ABI_NUMBERS.get(abi, ({}, set()))
    if nr in umem:
        return umem[nr]
    if nr in refused:
        return f"syscall {nr} (a {abi} syslet call)"
    if nr in REFUSED and nr >= 1000:
        return f"syscall {nr} (a syslet call)"
    return _NAME.get(nr, f"syscall {nr}")


def collect(report_dir: str, abi: str = "v1") -> Tuple[List[Dict[str, Any]], Dict[str, int],
                                                      Dict[str, Dict[str, Any]]]:
    """Adds up the drop-in's JSON files: (processes, counters, calls) where
    calls maps a call's name to {nr, inline, nowait, uring, uring_linked,
    pool, atoms}."""
    processes: List[Dict[str, Any]] = []
    counters: Dict[str, int] = {}
    calls: Dict[str, Dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(report_dir, "libsyslet-*.json"))):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        processes.append({"pid": data.get("pid"), "backend": data.get("backend")})
        for k, v in data.get("counters", {}).items():
            counters[k] = counters.get(k, 0) + int(v)
        for key, values in data.get("calls", {}).items():
            name = call_name(key, abi)
            entry = calls.setdefault(name, {"nr": None if key == "other" else int(key),
                                            **{k: 0 for k in KINDS}, "atoms": 0})
            for k, v in zip(KINDS, values):
                entry[k] += int(v)
                entry["atoms"] += int(v)
    return processes, counters, calls


# ---- what a port to io_uring changes ----------------------------------------------

def port_hint(name: str, e: Dict[str, Any], abi: str = "v1") -> str:
    """One sentence per call: what it becomes on plain io_uring."""
    nr = e["nr"]
    umem, refused = _ABI_NUMBERS.get(abi, ({}, set()))
    if nr in UMEM or nr in umem:
        return ("not a system call: an atomic add (__atomic_add_fetch) in your completion "
                "handler, before you prepare the SQE that reads the word")
    if nr is None:
        return "numbers no kernel knows (-ENOSYS): drop these atoms"
    if nr in REFUSED or nr in refused:
        return "refused in an atom (-EINVAL: it never ran): drop the atom"
    parts: List[str] = []
    op = URING_OPS.get(name)
    if op:
        parts.append(f"{op[0]} (Linux {op[1]}+)")
        if e["uring_linked"]:
            parts.append(f"{e['uring_linked']} ran in linked segments: keep those steps as "
                         "an IOSQE_IO_LINK chain (it ends only on an error or a short "
                         "transfer)")
        if e["pool"] and nr not in ENGINE_URING:
            parts.append(f"the drop-in ran it on its thread pool ({e['pool']}x): submit it "
                         "directly instead")
        if e["nowait"]:
            parts.append(f"{e['nowait']} were page-cache hits served in the caller; io_uring "
                         "completes those at submission too, but still through a CQE")
    elif nr in NEVER_BLOCKS or not e["pool"]:
        parts.append("no io_uring opcode and none needed: it does not block; call it directly "
                     "where the chain had it")
    else:
        parts.append(f"no io_uring opcode: keep it on threads of your own (the drop-in used "
                     f"its pool {e['pool']}x)")
    return "; ".join(parts)


def general_notes(counters: Dict[str, int], calls: Dict[str, Dict[str, Any]]) -> List[str]:
    c = counters
    notes: List[str] = []
    syslets = c.get("syslets_sync", 0) + c.get("syslets_async", 0)
    atoms = sum(e["atoms"] for e in calls.values())
    if atoms > syslets:
        notes.append(
            "arguments: an atom reads its argument words when it runs; an SQE's fields are "
            "values fixed when you prepare it.  A value one atom stores for a later one (an "
            "open's fd, a read's byte count, a umem_add'ed offset) needs the earlier CQE "
            "first, or io_uring's own means (direct descriptors: IORING_FILE_INDEX_ALLOC and "
            "IOSQE_FIXED_FILE for an fd)")
        notes.append(
            "control flow: stop conditions other than 'error or short transfer', "
            "SKIP_TO_NEXT_ON_STOP branches and loops (next pointing back) have no io_uring "
            "form; they become code in your completion handler that prepares the next SQE")
    if c.get("syslets_async"):
        notes.append(
            f"completions: {_n(c['syslets_async'], 'syslet')} went async and were published in "
            "the ring of final-atom pointers.  With io_uring every SQE gets a CQE: put the "
            "pointer you need in user_data, reap with io_uring_peek_cqe / "
            "io_uring_wait_cqe_nr (async_wait(n)), and set IOSQE_CQE_SKIP_SUCCESS (5.17+) on "
            "the non-final SQEs of a chain to get one CQE per chain")
    if c.get("syslets_sync"):
        notes.append(
            f"synchronous returns: {_n(c['syslets_sync'], 'syslet')} completed inside async_exec "
            "(the final atom returned, nothing in the ring).  io_uring has no such return: "
            "requests that finish at submission still post a CQE, to be reaped right after "
            "io_uring_submit")
    if c.get("ring_full_waits"):
        notes.append(
            f"ring-full waits: {c['ring_full_waits']} times a finished syslet waited for a "
            "free ring slot.  Size the CQ ring (IORING_SETUP_CQSIZE) for the completions you "
            "keep in flight; beyond it the kernel buffers them (IORING_FEAT_NODROP) instead of "
            "waiting")
    if c.get("overstops"):
        notes.append(
            f"cut links: {c['overstops']} times a linked segment ended on a result that did "
            "not stop the syslet (a short read, say); io_uring cancels the rest of a chain "
            "then: check each result in the handler and resubmit what is left")
    if c.get("atoms_pool"):
        notes.append(
            f"thread pool: {c['atoms_pool']} atoms ran on the drop-in's fallback pool (calls "
            "it does not send to io_uring)")
    return notes


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'s' * (k != 1)}"


# ---- writing ----------------------------------------------------------------------

def build_report(command: Sequence[str], status: int, abi: str,
                 processes: List[Dict[str, Any]], counters: Dict[str, int],
                 calls: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    ordered = sorted(calls.items(), key=lambda kv: (-kv[1]["atoms"], kv[0]))
    return {
        "command": command,
        "exit_status": status,
        "abi": abi,
        "processes": processes,
        "counters": counters,
        "calls": {name: {**e, "port": port_hint(name, e, abi)} for name, e in ordered},
        "notes": general_notes(counters, calls),
    }


def format_text(rep: Dict[str, Any]) -> str:
    out: List[str] = []
    c = rep["counters"]
    cmd = shlex.join(rep["command"])
    out.append(f"syslet-compat run: migration report for {cmd}")
    procs = rep["processes"]
    backends = sorted({p["backend"] for p in procs if p.get("backend")})
    out.append(f"exit status {rep['exit_status']}; ABI {rep['abi']}; "
               f"{len(procs)} process{'es' * (len(procs) != 1)} used libsyslet"
               + (f" (backend {', '.join(backends)})" if backends else ""))
    if not procs:
        out.append("no counters: the program made no syslet call under libsyslet, or ended "
                   "without running atexit handlers (_exit, a fatal signal, exec), or ignores "
                   "LD_PRELOAD (static or set-uid)")
        return "\n".join(out) + "\n"
    out.append(f"syslets: {c.get('syslets_sync', 0)} completed in the caller, "
               f"{c.get('syslets_async', 0)} went async; "
               f"ring entries published: {c.get('published', 0)}; "
               f"ring-full waits: {c.get('ring_full_waits', 0)}; "
               f"faults: {c.get('faults', 0)}")
    out.append("")
    head = ("system call", "atoms", "inline", "(nowait)", "io_uring", "(linked)", "pool")
    rows = []
    for name, e in rep["calls"].items():
        rows.append((name, e["atoms"], e["inline"] + e["nowait"], e["nowait"],
                     e["uring"] + e["uring_linked"], e["uring_linked"], e["pool"]))
    w0 = max([len(head[0])] + [len(r[0]) for r in rows])
    widths = [w0] + [max(len(head[i]), *(len(str(r[i])) for r in rows)) for i in range(1, 7)]
    out.append("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                         for i, h in enumerate(head)))
    for r in rows:
        out.append("  ".join(str(v).ljust(widths[0]) if i == 0 else str(v).rjust(widths[i])
                             for i, v in enumerate(r)))
    out.append("(inline: in the calling or the driver thread; nowait: of those, page-cache "
               "hits read with RWF_NOWAIT; linked: of the io_uring ones, in a linked segment "
               "of several SQEs)")
    out.append("")
    out.append("porting to plain io_uring, per call:")
    for name, e in rep["calls"].items():
        out.append(f"  {name}: {e['port']}")
    if rep["notes"]:
        out.append("and in general:")
        for n in rep["notes"]:
            out.append(f"  - {n}")
    return "\n".join(out) + "\n"


# ---- running ------------------------------------------------------------------------

def _error(args: argparse.Namespace, message: str) -> int:
    parser = getattr(args, "_parser", None)
    if parser is not None:
        parser.error(message)           # one line, exit status 2
    print(f"syslet-compat run: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    prog = getattr(getattr(args, "_parser", None), "prog", "syslet-compat run")
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _error(args, "no program given (run [options] -- PROG ARGS...)")
    if not os.path.exists(LIBRARY):
        print(f"{prog}: {LIBRARY} is missing; rebuild with `make venv` or `pip install -e .`",
              file=sys.stderr)
        return 2
    abi = args.abi or os.environ.get("SYSLET_COMPAT_ABI") or "v1"
    with tempfile.TemporaryDirectory(prefix="syslet-run-") as report_dir:
        env = dict(os.environ)
        env["LD_PRELOAD"] = LIBRARY + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
        env["SYSLET_COMPAT_REPORT"] = report_dir
        if args.abi:
            env["SYSLET_COMPAT_ABI"] = args.abi
        if args.backend:
            env["URING_SHIM_BACKEND"] = args.backend
        # The terminal's signals go to the program; we wait for its end.
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
        try:
            try:
                proc = subprocess.Popen(command, env=env,
                                        preexec_fn=_default_signals)
            except OSError as e:
                print(f"{prog}: {command[0]}: {e.strerror}", file=sys.stderr)
                return 126 if isinstance(e, PermissionError) else 127
            status = proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        code = 128 - status if status < 0 else status
        processes, counters, calls = collect(report_dir, abi)
    rep = build_report(command, code, abi, processes, counters, calls)
    text = (json.dumps(rep, indent=2) + "\n") if args.format == "json" else format_text(rep)
    if args.report:
        try:
            with open(args.report, "w") as f:
                f.write(text)
        except OSError as e:
            print(f"{prog}: --report {args.report}: {e.strerror}", file=sys.stderr)
            return code or 1
    else:
        sys.stderr.write(text)
    return code


def _default_signals() -> None:
    for s in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(s, signal.SIG_DFL)
