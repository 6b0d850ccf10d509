"""Helpers for the C drop-in tests: compile C programs against libsyslet and
run them linked (-lsyslet) or under LD_PRELOAD, with the backend of this
pytest run (``URING_SHIM_BACKEND``) passed to the child explicitly."""
import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
HERE = os.path.dirname(os.path.abspath(__file__))

CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")

#: Environment variables of ours that must not leak from the caller into a child.
_OURS = ("LD_PRELOAD", "SYSLET_COMPAT_DEBUG", "SYSLET_COMPAT_TRACE")


def require_cc():
    if not CC:
        pytest.skip("no C compiler")


@functools.lru_cache(maxsize=None)
def config(*flags):
    """Output of ``python -m compat config FLAGS`` (stripped)."""
    out = subprocess.run([sys.executable, "-m", "compat", "config", *flags],
                         check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def cflags():
    return shlex.split(config("--cflags")) + ["-O2", "-Wall", "-Werror", "-pthread"]


def libs():
    return shlex.split(config("--libs"))


def preload_path():
    return config("--preload")


class Builder:
    """Compiles C sources into a per-session directory (cached by content)."""

    def __init__(self, outdir):
        self.outdir = outdir

    def build(self, source, *, linked, extra=(), name=None, lang="c"):
        """``source``: a path or C text.  ``linked``: add ``--libs`` (else the
        binary must run under LD_PRELOAD).  Returns the executable's path."""
        require_cc()
        if "\n" not in source and os.path.exists(source):
            with open(source) as f:
                text = f.read()
            base = os.path.splitext(os.path.basename(source))[0]
        else:
            text = source
            base = name or "prog"
        args = list(extra) + (["LINKED"] if linked else ["PRELOAD"])
        digest = hashlib.sha1((text + "\0" + "\0".join(args)).encode()).hexdigest()[:12]
        exe = os.path.join(self.outdir, f"{base}-{'l' if linked else 'p'}-{digest}")
        if os.path.exists(exe):
            return exe
        src = exe + (".c" if lang == "c" else ".cc")
        with open(src, "w") as f:
            f.write(text)
        compiler = CC if lang == "c" else (shutil.which("c++") or shutil.which("g++"))
        cmd = [compiler] + cflags() + list(extra) + [src, "-o", exe] + (libs() if linked else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"compile failed: {shlex.join(cmd)}\n{r.stderr}")
        return exe


def child_env(backend, *, preload=False, extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    env["URING_SHIM_BACKEND"] = backend
    if preload:
        env["LD_PRELOAD"] = preload_path()
    if extra:
        env.update(extra)
    return env


def run(exe, *args, backend, preload=False, env=None, timeout=60, input=None):
    """Runs a compiled program; returns the CompletedProcess (text)."""
    return subprocess.run([exe, *map(str, args)], env=child_env(backend, preload=preload, extra=env),
                          capture_output=True, text=True, timeout=timeout, input=input)


def context_line(stderr):
    """(backend, backend asked for) of libsyslet's 'context:' debug line(s)."""
    return re.findall(r"libsyslet: pid \d+ context: backend=(\w+) \(asked (\w+)\)$", stderr,
                      re.M)


def expected_backend(backend):
    """What the engine really runs on for this pytest backend."""
    import uring_shim
    if backend == "io_uring" and uring_shim.io_uring_available():
        return "io_uring"
    return "threadpool"


#: The two ways to run a program against libsyslet.
MODES = ("linked", "preload")
