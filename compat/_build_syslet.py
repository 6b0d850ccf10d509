"""Build script for ``compat/libsyslet.so``: the C drop-in for 2007 syslet code.

A plain C shared library: the engine (``csrc/engine.c`` through
``csrc/dropin_engine.c``), ``csrc/guard.c``, uring_shim's ``csrc/shim.c``,
liburing (static) and the exported API (``csrc/dropin.c``).  It needs nothing
but libc at run time: no libpython, no interpreter (the policy -- backend,
trace, debug -- is read from the environment in C, at load), no RUNPATH, and
no path of the building machine (no debug information, which would carry the
compile directory and include paths).

The compiler is ``$CC``, else the one Python was built with (sysconfig
``CC``); ``$CFLAGS`` and ``$LDFLAGS`` are added.  Run by setup.py's
``build_ext`` (so ``pip install -e .`` / ``make venv``, ``pip install .`` and
``pip wheel .`` build it) and by hand::

    python compat/_build_syslet.py [OUTDIR]
"""
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CSRC = os.path.join(HERE, "csrc")
INCLUDE = os.path.join(HERE, "include")
SHIM_CSRC = os.path.join(ROOT, "uring_shim", "csrc")

LIBNAME = "libsyslet.so"

SOURCES = [os.path.join(CSRC, "dropin.c"), os.path.join(CSRC, "dropin_engine.c"),
           os.path.join(CSRC, "guard.c"), os.path.join(SHIM_CSRC, "shim.c")]

CFLAGS = ["-O2", "-g0", "-fPIC", "-pthread", "-fwrapv", "-fno-strict-aliasing", "-DNDEBUG",
          "-Wall", "-Wno-unused-function", "-Wno-dangling-pointer"]


def _liburing_static() -> str:
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_uring_shim_build_for_syslet", os.path.join(ROOT, "uring_shim", "_build.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path: str = mod.liburing_static()
    return path


def compiler() -> List[str]:
    """The C compiler command: ``$CC``, else sysconfig's ``CC``, else ``cc``."""
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def command(output: str) -> List[str]:
    """The one compiler invocation that builds libsyslet.so into ``output``."""
    return (compiler() + CFLAGS + shlex.split(os.environ.get("CFLAGS", ""))
            + ["-I" + CSRC, "-I" + INCLUDE, "-I" + SHIM_CSRC, "-shared", "-o", output]
            + SOURCES + [_liburing_static()]
            + ["-Wl,--version-script=" + os.path.join(CSRC, "libsyslet.map"),
               "-Wl,--exclude-libs,ALL", "-Wl,-z,nodelete"]
            + shlex.split(os.environ.get("LDFLAGS", "")) + ["-lpthread", "-ldl"])


def build(outdir: str, tmpdir: Optional[str] = None, verbose: bool = False) -> str:
    """Compiles libsyslet.so into ``outdir``; returns its path."""
    own_tmp = tmpdir is None
    tmp = tempfile.mkdtemp(prefix="libsyslet-") if tmpdir is None else tmpdir
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(outdir, exist_ok=True)
    try:
        built = os.path.join(tmp, LIBNAME)
        cmd = command(built)
        if verbose:
            print(shlex.join(cmd))
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.stdout:
            sys.stderr.write(r.stdout)
        if r.returncode != 0:
            raise RuntimeError(f"building {LIBNAME} failed (exit status {r.returncode}): "
                               f"{shlex.join(cmd)}")
        dest = os.path.join(outdir, LIBNAME)
        tmp_dest = dest + ".tmp"
        shutil.copyfile(built, tmp_dest)
        os.chmod(tmp_dest, 0o755)
        os.replace(tmp_dest, dest)      # atomic: running programs keep the old inode
        return dest
    finally:
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else HERE, verbose=True))
