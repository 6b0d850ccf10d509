import importlib.util
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class build_ext_libsyslet(build_ext):
    """build_ext plus compat/libsyslet.so, the C drop-in (compat/_build_syslet.py):
    a plain shared library (cffi embedding), not a Python extension module, so
    it is built here rather than through cffi_modules."""

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
