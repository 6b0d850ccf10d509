import importlib.util
import os
import re
import struct
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:     # setuptools < 70.1 (only outside the isolated build: pyproject asks 77)
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:
        bdist_wheel = None      # no wheels built here at all

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


# ---- the wheel's platform tag ---------------------------------------------------

#: Libraries a manylinux wheel may need from the system (PEP 600: glibc's own;
#: the wheel's .so files need libc.so.6 only).
_GLIBC_LIBS = re.compile(r"^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|"
                         r"librt\.so\.1|ld-linux-(x86-64|aarch64)\.so\.[12])$")
#: The oldest glibc a tag names (manylinux2014's), whatever the symbols ask.
_GLIBC_FLOOR = (2, 17)


def elf_needs(path):
    """(NEEDED libraries, {library: symbol versions it must provide}) of an
    ELF64 little-endian shared object, from its .dynamic and .gnu.version_r
    sections; None for anything else."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def cstr(strtab, off):
        base = secs[strtab][4] + off
        return data[base:data.index(b"\0", base)].decode()
    needed, versions = [], {}
    for name, typ, _, _, off, size, link, info, _, entsize in secs:
        if typ == 6:                        # SHT_DYNAMIC: DT_NEEDED entries
            for i in range(0, size, 16):
                tag, val = struct.unpack_from("<qQ", data, off + i)
                if tag == 1:
                    needed.append(cstr(link, val))
        elif typ == 0x6FFFFFFE:             # SHT_GNU_verneed
            pos = off
            for _ in range(info):
                _, cnt, file_, aux, nxt = struct.unpack_from("<HHIII", data, pos)
                lib = cstr(link, file_)
                apos = pos + aux
                for _ in range(cnt):
                    _, _, _, vname, anext = struct.unpack_from("<IHHII", data, apos)
                    versions.setdefault(lib, set()).add(cstr(link, vname))
                    apos += anext
                pos += nxt
    return needed, versions


def manylinux_tag(sos, arch):
    """The PEP 600 tag ``manylinux_2_Y_<arch>`` for shared objects that
    need only glibc's libraries and glibc symbol versions (the newest one
    decides Y, at least _GLIBC_FLOOR); None when one of them needs anything
    else (then the wheel keeps its ``linux_<arch>`` tag)."""
    newest = _GLIBC_FLOOR
    for so in sos:
        got = elf_needs(so)
        if got is None:
            return None
        needed, versions = got
        if not all(_GLIBC_LIBS.match(n) for n in needed):
            return None
        for lib, vs in versions.items():
            if not _GLIBC_LIBS.match(lib):
                return None
            for v in vs:
                m = re.match(r"^GLIBC_(\d+)\.(\d+)(\.\d+)?$", v)
                if not m:
                    return None     # GLIBC_PRIVATE, or another library's versions
                newest = max(newest, (int(m.group(1)), int(m.group(2))))
    return f"manylinux_{newest[0]}_{newest[1]}_{arch}"


class bdist_wheel_manylinux(bdist_wheel or object):  # type: ignore[misc]
    """bdist_wheel that tags the wheel ``manylinux_2_Y_<arch>`` instead of
    ``linux_<arch>``: its .so files need nothing but glibc (no RUNPATH, no
    libpython, no library of the building machine: build_ext_libsyslet),
    and Y is the newest glibc symbol version they use, read from their ELF
    version-needed sections when the wheel is packed.  tests/test_packaging.py
    checks the tag with auditwheel.  Any other need keeps the linux tag."""

    def get_tag(self):
        impl, abi, plat = super().get_tag()
        if plat.startswith("linux_") and sys.platform.startswith("linux"):
            sos = [os.path.join(d, f) for d, _, fs in os.walk(self.bdist_dir) for f in fs
                   if f.endswith(".so")]
            tag = manylinux_tag(sos, plat[len("linux_"):]) if sos else None
            if tag:
                plat = tag
            else:
                print("bdist_wheel: a .so needs more than glibc: the wheel keeps the tag "
                      + plat, file=sys.stderr)
        return impl, abi, plat


# compat._exec: async_exec as a CPython builtin over the engine's
# sl_exec_unlocking and, on x86_64, its fast path's two halves
# (compat/csrc/pyexec.c, retless.h); the engine itself is in the cffi module
# compat._engine, which hands over the functions' addresses.
EXEC_EXT = Extension("compat._exec", ["compat/csrc/pyexec.c"], include_dirs=["compat/csrc"],
                     depends=["compat/csrc/engine.h", "compat/csrc/retless.h"],
                     extra_compile_args=["-O2", "-Wall"])

setup(cffi_modules=["uring_shim/_build.py:ffibuilder", "compat/_build.py:ffibuilder"],
      ext_modules=[EXEC_EXT],
      cmdclass={"build_ext": build_ext_libsyslet,
                **({"bdist_wheel": bdist_wheel_manylinux} if bdist_wheel else {})})
