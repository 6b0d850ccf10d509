"""cffi build script for ``uring_shim._liburing`` (out-of-line API mode).

liburing is linked statically from Debian's ``liburing-dev`` so the built
module needs no liburing at run time.  ``csrc/shim.c`` is compiled in.
"""
import os

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")


def liburing_static():
    """Path of liburing.a (override with URING_SHIM_LIBURING_A)."""
    env = os.environ.get("URING_SHIM_LIBURING_A")
    if env:
        return env
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
              "/usr/local/lib"):
        p = os.path.join(d, "liburing.a")
        if os.path.exists(p):
            return p
    raise RuntimeError("liburing.a not found: install liburing-dev (apt-get install -y liburing-dev)")


with open(os.path.join(HERE, "_cdef.h")) as f:
    CDEF = f.read()

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "uring_shim._liburing",
    '#include <liburing.h>\n#include "shim.h"\n',
    sources=[os.path.relpath(os.path.join(CSRC, "shim.c"))],
    include_dirs=[CSRC],
    extra_objects=[liburing_static()],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
