import importlib.util
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _without_rpath(args):
    """``args`` (a linker command) without run-time search paths: -Wl,-rpath,DIR,
    -Wl,-rpath=DIR, -Wl,-R,DIR / -Wl,-RDIR (also inside a longer -Wl, list),
    -R DIR and -RDIR."""
    out = []
    skip_next = False
    for a in args:
        if skip_next:
            skip_next = False
            continue
        if a == "-R":
            skip_next = True
            continue
        if a.startswith("-R"):
            continue
        if a.startswith("-Wl,"):
            parts, kept, i = a[4:].split(","), [], 0
            while i < len(parts):
                p = parts[i]
                if p in ("-rpath", "--rpath", "-R"):
                    i += 2
                    continue
                if p.startswith(("-rpath=", "--rpath=")) or (p.startswith("-R") and len(p) > 2):
                    i += 1
                    continue
                kept.append(p)
                i += 1
            if kept:
                out.append("-Wl," + ",".join(kept))
            continue
        out.append(a)
    return out


class build_ext_libsyslet(build_ext):
    """build_ext for wheels that carry no path of the building machine, plus
    compat/libsyslet.so, the C drop-in (compat/_build_syslet.py): a plain
    shared library, not a Python extension module, so it is built here
    rather than as an extension.

    Some Pythons (pyenv's, for one) put ``-Wl,-rpath,<their lib dir>`` into
    the link command of every extension (sysconfig LDSHARED): taken out, as
    the modules need no libpython.  Debug information (``-g`` in Python's
    CFLAGS) is turned off: it names the compile directory and include paths.
    """

    def build_extensions(self):
        c = self.compiler
        for attr in ("linker_so", "linker_so_cxx"):
            if getattr(c, attr, None):
                setattr(c, attr, _without_rpath(getattr(c, attr)))
        for attr in ("compiler_so", "compiler_so_cxx"):
            if getattr(c, attr, None):
                setattr(c, attr, getattr(c, attr) + ["-g0"])
        super().build_extensions()

    def _libsyslet_path(self):
        pkgdir = os.path.dirname(self.get_ext_fullpath("compat._engine"))
        return os.path.join(pkgdir, "libsyslet.so")

    def run(self):
        super().run()
        spec = importlib.util.spec_from_file_location(
            "_build_syslet", os.path.join(ROOT, "compat", "_build_syslet.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out = self._libsyslet_path()
        mod.build(os.path.dirname(out), tmpdir=os.path.join(self.build_temp, "libsyslet"),
                  verbose=self.verbose)

    def get_outputs(self):
        return super().get_outputs() + [self._libsyslet_path()]


# compat._exec: async_exec as a CPython builtin over the engine's
# sl_exec_unlocking and, on x86_64, its fast path's two halves
# (compat/csrc/pyexec.c, retless.h); the engine itself is in the cffi module
# compat._engine, which hands over the functions' addresses.
EXEC_EXT = Extension("compat._exec", ["compat/csrc/pyexec.c"], include_dirs=["compat/csrc"],
                     depends=["compat/csrc/engine.h", "compat/csrc/retless.h"],
                     extra_compile_args=["-O2", "-Wall"])

setup(cffi_modules=["uring_shim/_build.py:ffibuilder", "compat/_build.py:ffibuilder"],
      ext_modules=[EXEC_EXT],
      cmdclass={"build_ext": build_ext_libsyslet})
