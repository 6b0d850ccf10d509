"""Build script for ``compat/libsyslet.so``: the C drop-in for 2007 syslet code.

A shared library made with cffi's *embedding* support.  Everything on the
hot path is plain C compiled into it -- the engine (``csrc/engine.c`` through
``csrc/dropin_engine.c``), ``csrc/guard.c``, uring_shim's ``csrc/shim.c``,
liburing (static) and the exported API (``csrc/dropin.c``).  The embedded
Python interpreter is started once, on the first syslet call of a process, for
policy only (``syslet_py_policy``: the backend from ``uring_shim.backend()``
and the trace switch); it is the interpreter this build runs under
(``sys.executable``, usually the venv's), initialised in isolated mode so the
venv's site-packages are used.  ``SYSLET_COMPAT_PYTHON=0`` or a failed start
selects the same policy computed in C.

Run by setup.py's ``build_ext`` (so ``pip install -e .`` / ``make venv`` and
``pip install .`` build it) and by hand::

    python compat/_build_syslet.py [OUTDIR]
"""
import os
import shutil
import sys
import sysconfig
import tempfile

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CSRC = os.path.join(HERE, "csrc")
INCLUDE = os.path.join(HERE, "include")
SHIM_CSRC = os.path.join(ROOT, "uring_shim", "csrc")

LIBNAME = "libsyslet.so"
MODULE = "_syslet_embedded"

EMBEDDING_API = """
int syslet_py_policy(void);
"""

CDEF = """
const char *syslet_dropin_pkg_parent(void);
"""

INIT_CODE = r'''
import os
import sys

from _syslet_embedded import ffi, lib

_parent = ffi.string(lib.syslet_dropin_pkg_parent()).decode("utf-8", "surrogateescape")
if _parent and _parent not in sys.path:
    # the compat/uring_shim next to this libsyslet.so are the matching ones
    sys.path.insert(0, _parent)


def _policy_error(exc, value, tb):
    if os.environ.get("SYSLET_COMPAT_DEBUG") == "1":
        import traceback
        sys.stderr.write("libsyslet: Python policy failed: C policy\n")
        traceback.print_exception(exc, value, tb)
    return None     # 0: C decides


@ffi.def_extern(onerror=_policy_error)
def syslet_py_policy():
    """0x100 | trace << 1 | (backend == io_uring); 0 makes C decide."""
    import uring_shim
    try:
        backend = uring_shim.backend()
    except OSError as e:
        # io_uring forced but unusable: the engine would fall back anyway
        if os.environ.get("SYSLET_COMPAT_DEBUG") == "1":
            sys.stderr.write("libsyslet: %s: using the pool\n" % (e,))
        backend = "threadpool"
    trace = os.environ.get("SYSLET_COMPAT_TRACE") == "1"
    return 0x100 | (2 if trace else 0) | (1 if backend == "io_uring" else 0)
'''


def _liburing_static():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_uring_shim_build_for_syslet", os.path.join(ROOT, "uring_shim", "_build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.liburing_static()


def _c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_ffibuilder(python_exe=None):
    """The cffi builder of libsyslet (embedding)."""
    python_exe = python_exe or sys.executable
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ffi = cffi.FFI()
    ffi.embedding_api(EMBEDDING_API)
    ffi.cdef(CDEF)
    ffi.embedding_init_code(INIT_CODE)
    link_dirs = [libdir] if libdir and os.path.isdir(libdir) else []
    ffi.set_source(
        MODULE,
        '#define SYSLET_EMBED 1\n#include "dropin.c"\n',
        sources=[os.path.join(CSRC, "dropin_engine.c"), os.path.join(CSRC, "guard.c"),
                 os.path.join(SHIM_CSRC, "shim.c")],
        include_dirs=[CSRC, INCLUDE, SHIM_CSRC],
        define_macros=[("SYSLET_PYTHON_EXE", _c_string(python_exe))],
        extra_objects=[_liburing_static()],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-Wno-dangling-pointer",
                            "-fno-strict-aliasing"],
        extra_link_args=["-Wl,--version-script=" + os.path.join(CSRC, "libsyslet.map"),
                         "-Wl,--exclude-libs,ALL", "-Wl,-z,nodelete"],
        libraries=["pthread", "dl"],
        library_dirs=link_dirs,
        runtime_library_dirs=link_dirs,
        py_limited_api=False,
    )
    return ffi


def build(outdir, tmpdir=None, verbose=False):
    """Compiles libsyslet.so into ``outdir``; returns its path."""
    own_tmp = tmpdir is None
    if own_tmp:
        tmpdir = tempfile.mkdtemp(prefix="libsyslet-")
    os.makedirs(tmpdir, exist_ok=True)
    os.makedirs(outdir, exist_ok=True)
    try:
        ffi = make_ffibuilder()
        built = ffi.compile(tmpdir=tmpdir, target=LIBNAME, verbose=verbose)
        dest = os.path.join(outdir, LIBNAME)
        tmp_dest = dest + ".tmp"
        shutil.copyfile(built, tmp_dest)
        os.chmod(tmp_dest, 0o755)
        os.replace(tmp_dest, dest)      # atomic: running programs keep the old inode
        return dest
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else HERE, verbose=True))
