"""cffi build script for ``compat._engine``: the syslet engine in C.

The engine sits on uring_shim's C API (``uring_shim/csrc/shim.h``), which is
compiled in, and on liburing, linked statically.
"""
import os
import sys

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "uring_shim"))
from _build import liburing_static  # noqa: E402  (uring_shim/_build.py)

sys.path.pop(0)

with open(os.path.join(HERE, "_cdef.h")) as f:
    CDEF = f.read()


def _rel(*parts):
    return os.path.relpath(os.path.join(*parts))


ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "compat._engine",
    '#include "engine.h"\n',
    sources=[_rel(HERE, "csrc", "engine.c"), _rel(HERE, "csrc", "guard.c"),
             _rel(ROOT, "uring_shim", "csrc", "shim.c")],
    include_dirs=[os.path.join(HERE, "csrc"), os.path.join(ROOT, "uring_shim", "csrc")],
    extra_objects=[liburing_static()],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-Wno-dangling-pointer"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
