"""Helpers for the reliability suite: subprocesses, C programs against
libsyslet, a seccomp filter via ctypes, thread/fd/RSS sampling, raw atoms.

Child processes get this directory on PYTHONPATH, so their scripts can
``import rel_lib`` too (nothing here imports pytest at module level).
"""
import ctypes
import errno
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable

#: Long variants (make fuzz-long / leak-long) run only with SYSLET_LONG=1.
LONG = os.environ.get("SYSLET_LONG") == "1"

SENTINEL = -999999          # a result no call here produces
ASYNC, SYNC, NO_COMPLETE = 0x01, 0x02, 0x04
S_NONZERO, S_ZERO, S_NEG, S_NONPOS, SKIP = 0x08, 0x10, 0x20, 0x40, 0x80

#: Our environment variables that must not leak from the caller into a child.
_OURS = ("LD_PRELOAD", "SYSLET_COMPAT_DEBUG", "SYSLET_COMPAT_TRACE")


# ---- children ------------------------------------------------------------------

def child_env(backend=None, **extra):
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    env["PYTHONPATH"] = HERE + os.pathsep + ROOT
    env["PYTHONFAULTHANDLER"] = "1"
    if backend is not None:
        env["URING_SHIM_BACKEND"] = backend
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_py(code, *args, backend=None, timeout=60, env=None, backend_env=None, **kw):
    """Runs Python ``code`` (a string) in a child; returns CompletedProcess.
    URING_SHIM_BACKEND is ``backend_env`` if given, else ``backend``."""
    e = child_env(backend_env or backend, **(env or {}))
    return subprocess.run([PY, "-c", code, *map(str, args)], env=e, capture_output=True,
                          text=True, timeout=timeout, **kw)


def last_json(out):
    """The JSON object on the last line of ``out`` that parses."""
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AssertionError(f"no JSON line in output:\n{out[-3000:]}")


def describe(proc):
    return (f"rc={proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
            f"--- stderr ---\n{proc.stderr[-4000:]}")


# ---- C programs against libsyslet ------------------------------------------------

CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def compat_config(*flags):
    out = subprocess.run([PY, "-m", "compat", "config", *flags], check=True,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    return out.stdout.strip()


def libsyslet_path():
    return compat_config("--preload")


def build_c(source, outdir, name="prog", linked=True, extra=()):
    """Compiles C text against libsyslet's headers (and library when
    ``linked``); cached by content in ``outdir``.  Returns the executable."""
    args = list(extra) + (["L"] if linked else ["P"])
    digest = hashlib.sha1((source + "\0".join(args)).encode()).hexdigest()[:12]
    exe = os.path.join(outdir, f"{name}-{digest}")
    if os.path.exists(exe):
        return exe
    src = exe + ".c"
    with open(src, "w") as f:
        f.write(source)
    cmd = ([CC] + shlex.split(compat_config("--cflags")) + ["-O1", "-g", "-Wall", "-pthread"]
           + list(extra) + [src, "-o", exe] + (shlex.split(compat_config("--libs")) if linked else []))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"compile failed: {shlex.join(cmd)}\n{r.stderr}")
    return exe


def run_exe(exe, *args, backend=None, timeout=60, preload=False, env=None, **kw):
    e = child_env(backend, **(env or {}))
    if preload:
        e["LD_PRELOAD"] = libsyslet_path()
    return subprocess.run([exe, *map(str, args)], env=e, capture_output=True, text=True,
                          timeout=timeout, **kw)


# ---- seccomp (ctypes BPF) ---------------------------------------------------------

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
# BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def install_seccomp(rules):
    """Installs a seccomp filter for this process (and its future children):
    ``rules`` is a list of ``(lo, hi, action)``: system call numbers
    ``lo <= nr <= hi`` get ``action`` (e.g. ``SECCOMP_RET_ERRNO | EPERM``),
    everything else is allowed.  The filter compares seccomp_data.nr, the
    32-bit number the kernel really dispatches on."""
    prog = [(_LD_W_ABS, 0, 0, 4),                           # arch
            (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
            (_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
            (_LD_W_ABS, 0, 0, 0)]                           # nr
    for lo, hi, action in rules:
        # if nr >= lo and not nr >= hi + 1: return action
        prog += [(_JGE_K, 0, 2, lo), (_JGE_K, 1, 0, hi + 1), (_RET_K, 0, 0, action)]
    prog.append((_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    arr = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), arr)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def exec_under_seccomp(rules, argv):
    """For a child: install the filter, then execv ``argv`` (the filter
    stays across execve thanks to no_new_privs)."""
    install_seccomp(rules)
    os.execv(argv[0], argv)


# ---- sampling ----------------------------------------------------------------------

#: The name of uring_shim's descriptor keeper (shim.c; docs/decisions.md D33):
#: one thread per process while io_uring rings of the shim exist, not one of
#: a context's threads (``Engine.threads()``); test_rel_fds.py counts it.
KEEPER = "us-fdkeeper"


def thread_names(keeper=False):
    """{tid: comm} of this process's threads (without the descriptor keeper
    unless ``keeper``)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if keeper or name != KEEPER:
            out[int(tid)] = name
    return out


def fd_count():
    return len(os.listdir("/proc/self/fd")) - 1


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until(pred, timeout=5.0, step=0.005):
    dl = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > dl:
            return False
        time.sleep(step)
    return True


# ---- raw atoms (ctypes) ----------------------------------------------------------------

class Mem:
    """Keeps ctypes objects alive; hands out cells, buffers and atoms."""

    def __init__(self):
        from compat import syslet_uatom
        self._atom_t = syslet_uatom
        self.keep = []

    def cell(self, v=0):
        c = ctypes.c_int64(v)
        self.keep.append(c)
        return c

    def buf(self, n, fill=b""):
        b = ctypes.create_string_buffer(fill, n) if fill else ctypes.create_string_buffer(n)
        self.keep.append(b)
        return b

    def atoms(self, n):
        a = (self._atom_t * n)()
        self.keep.append(a)
        return a

    def set(self, atom, nr, args=(), ret=None, flags=0, next=None):
        """``args``: ints (a cell is made for each) or ctypes cells."""
        atom.flags = flags
        atom.nr = nr
        atom.ret_ptr = ctypes.addressof(ret) if ret is not None else None
        atom.next = (next if isinstance(next, int) else ctypes.addressof(next)) if next is not None else None
        for i in range(6):
            if i < len(args):
                a = args[i]
                if isinstance(a, int):
                    a = self.cell(a)
                atom.arg_ptr[i] = ctypes.addressof(a)
            else:
                atom.arg_ptr[i] = None
        return atom


def addr(obj):
    return ctypes.addressof(obj)


class RawRing:
    """A ring of ``slots`` words registered on an engine."""

    def __init__(self, engine, slots=64, max_threads=-1):
        self.engine = engine
        self.slots = slots
        self.ring = (ctypes.c_uint64 * slots)()
        self.addr = ctypes.addressof(self.ring)
        self.consumer = 0
        engine.register(self.addr, 8 * slots, max_threads)

    def reap(self, limit=None):
        out = []
        for _ in range(self.slots if limit is None else limit):
            v = self.ring[self.consumer]
            if not v:
                break
            self.ring[self.consumer] = 0
            self.consumer = (self.consumer + 1) % self.slots
            out.append(v)
        return out

    def unregister(self, timeout=10.0):
        self.engine.unregister(self.addr, 8 * self.slots, timeout)


def errname(neg):
    return errno.errorcode.get(-neg, str(neg)) if neg < 0 else str(neg)
