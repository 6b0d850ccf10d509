"""The distribution as a user gets it: an sdist of the tree and a wheel built
from that sdist (``python -m build``, isolated, once per session), then the
wheel installed with ``pip install --target`` outside any venv and used from
another directory -- from Python and as the C drop-in.

The wheel is tagged manylinux (checked with auditwheel) and installs into a
fresh venv.  It must carry no path of the building machine: no RUNPATH/RPATH, no
libpython, and no string naming the source tree, the build directories or the
build interpreter's prefix in any file.
"""
import email
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What a working tree holds that is no part of the sources.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.py[cod]", "*.so", "*.o",
    "_build", ".pytest_cache", ".hypothesis", ".last_count", ".blocking-*", "syslet-demo-*",
    "_engine.c", "_liburing.c")

#: Libraries a .so of ours may need: libc's.
_LIBC = {"libc.so.6", "libpthread.so.0", "libdl.so.2", "libm.so.6", "ld-linux-x86-64.so.2",
         "ld-linux-aarch64.so.1"}


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="session")
def dist(tmp_path_factory):
    """(source copy, sdist path, wheel path, build output): ``python -m build``
    on a copy of the tree (so the tree gets no build/ or egg-info): the sdist,
    then the wheel from the sdist."""
    base = tmp_path_factory.mktemp("dist")
    src = str(base / "src-tree")
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCES)
    out = str(base / "out")
    r = _run([sys.executable, "-m", "build", "--outdir", out, src])
    sdists = [f for f in os.listdir(out) if f.endswith(".tar.gz")]
    wheels = [f for f in os.listdir(out) if f.endswith(".whl")]
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(out)
    return src, os.path.join(out, sdists[0]), os.path.join(out, wheels[0]), r.stdout + r.stderr


@pytest.fixture(scope="session")
def unpacked_wheel(dist, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("wheel-files"))
    with zipfile.ZipFile(dist[2]) as z:
        z.extractall(d)
    return d


@pytest.fixture(scope="session")
def target(dist, tmp_path_factory):
    """The wheel installed with ``pip install --target`` (no venv of its own)."""
    d = str(tmp_path_factory.mktemp("target") / "site")
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--target", d, dist[2]])
    return d


def test_build_has_no_deprecation_warnings(dist):
    out = dist[3]
    bad = [ln for ln in out.splitlines()
           if re.search(r"(?i)deprecat|SetuptoolsWarning|BuildBackendWarning", ln)]
    assert not bad, "\n".join(bad)


def _files(top, sub):
    """Files under top/sub, relative to top."""
    found = set()
    for d, _, files in os.walk(os.path.join(top, sub)):
        found.update(os.path.relpath(os.path.join(d, f), top) for f in files)
    return found


def test_sdist_carries_docs_examples_tests(dist):
    src, sdist, _, _ = dist
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for f in ("LICENSE", "README.md", "Makefile", "pyproject.toml", "setup.py", "MANIFEST.in",
              "compat/include/syslet.h", "compat/csrc/dropin.c", "uring_shim/csrc/shim.c",
              "scripts/deps.sh"):
        assert f in names, f
    # every file of the tree's docs, examples and tests
    for sub in ("docs", "examples", "tests", "bench"):
        missing = _files(src, sub) - names
        assert not missing, sorted(missing)
    junk = [n for n in names if re.search(r"\.(so|o|pyc)$|__pycache__|\.egg-info/|_build/", n)
            and not n.startswith("syslet_compat.egg-info/")]
    assert not junk, junk


def test_wheel_metadata(dist, unpacked_wheel):
    info = [d for d in os.listdir(unpacked_wheel) if d.endswith(".dist-info")]
    assert len(info) == 1
    with open(os.path.join(unpacked_wheel, info[0], "METADATA"), encoding="utf-8") as f:
        meta = email.message_from_file(f)
    assert meta["Name"] == "syslet-compat"
    assert meta["License-Expression"] == "MIT"
    assert meta["Author"] == "syslet-compat developers"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) >= {"Homepage", "Source", "Issues", "Documentation"}
    classifiers = meta.get_all("Classifier")
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert meta["Description-Content-Type"] == "text/markdown"
    with open(os.path.join(ROOT, "docs", "overview.md"), encoding="utf-8") as f:
        assert meta.get_payload().strip() == f.read().strip()
    assert os.path.exists(os.path.join(unpacked_wheel, info[0], "licenses", "LICENSE"))
    assert "Typing :: Typed" in classifiers
    for f in ("compat/py.typed", "uring_shim/py.typed", "compat/_exec.pyi", "compat/_engine.pyi",
              "uring_shim/_liburing.pyi", "compat/conformance/conformance.c",
              "compat/include/syslet.h"):
        assert os.path.exists(os.path.join(unpacked_wheel, f)), f


def _build_machine_paths(src):
    """Paths of this machine a build could leak (and their real paths)."""
    paths = {ROOT, src, os.path.dirname(src), sys.prefix, sys.base_prefix, sys.exec_prefix,
             sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_paths()["include"],
             os.path.expanduser("~")}
    paths |= {os.path.realpath(p) for p in paths if p}
    return sorted(p for p in paths if p and p != "/")


def test_no_build_machine_path_in_the_wheel(dist, unpacked_wheel):
    src = dist[0]
    paths = [p.encode() for p in _build_machine_paths(src)]
    # build directories whatever their names (pip, build, setuptools)
    generic = re.compile(rb"pip-req-build|pip-build-env|build-env-|/build/temp\.|"
                         rb"/site-packages/|/include/python3|\.venv/")
    sos = []
    for d, _, files in os.walk(unpacked_wheel):
        for f in files:
            path = os.path.join(d, f)
            rel = os.path.relpath(path, unpacked_wheel)
            with open(path, "rb") as fh:
                data = fh.read()
            for p in paths:
                assert p not in data, f"{rel} names {p.decode()}"
            if f.endswith(".so"):
                sos.append(path)
                strings = re.findall(rb"[\x20-\x7e]{4,}", data)
                # (a compiler may split a literal: "/pro" of "/proc/..." is one)
                leaked = [s for s in strings if generic.search(s) or (
                    s.startswith(b"/") and not s.startswith((b"/proc/", b"/dev/", b"/sys/"))
                    and not any(k.startswith(s) for k in (b"/proc/", b"/dev/", b"/sys/")))]
                assert not leaked, f"{rel}: {leaked[:5]}"
    assert {os.path.basename(s).split(".")[0] for s in sos} == {
        "_liburing", "_engine", "_exec", "libsyslet"}
    for so in sos:
        dyn = _run(["readelf", "-d", so]).stdout
        assert "RPATH" not in dyn and "RUNPATH" not in dyn, f"{so}:\n{dyn}"
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
        assert needed <= _LIBC, f"{os.path.basename(so)} needs {needed - _LIBC}"


def _wheel_tag(wheel):
    """(python, abi, platform) tags of a wheel, from its file name."""
    return tuple(os.path.basename(wheel)[:-len(".whl")].split("-")[-3:])


def test_wheel_is_tagged_manylinux_as_auditwheel_finds(dist, unpacked_wheel):
    """The wheel is tagged manylinux_2_Y_<arch> (setup.py's bdist_wheel),
    and auditwheel, reading the .so files' needs on its own, finds it
    consistent with exactly that tag: only glibc's libraries, no symbol
    version newer than 2.Y."""
    wheel = dist[2]
    py, abi, plat = _wheel_tag(wheel)
    arch = sysconfig.get_platform().split("-", 1)[1]
    assert re.fullmatch(r"manylinux_2_(\d+)_" + re.escape(arch), plat), plat
    assert py == abi == f"cp{sys.version_info[0]}{sys.version_info[1]}"
    info = [d for d in os.listdir(unpacked_wheel) if d.endswith(".dist-info")][0]
    with open(os.path.join(unpacked_wheel, info, "WHEEL"), encoding="utf-8") as f:
        assert email.message_from_file(f).get_all("Tag") == [f"{py}-{abi}-{plat}"]
    # (auditwheel needs no network and no patchelf to show)
    r = _run([sys.executable, "-m", "auditwheel", "show", wheel])
    out = " ".join(r.stdout.split())
    assert f'consistent with the following platform tag: "{plat}"' in out, r.stdout
    assert f'constrains the platform tag to "{plat}"' in out, r.stdout
    # the newest GLIBC_ version readelf lists is the tag's
    newest = (2, 17)
    for d, _, files in os.walk(unpacked_wheel):
        for f in files:
            if f.endswith(".so"):
                vs = _run(["readelf", "-V", "--wide", os.path.join(d, f)]).stdout
                for major, minor in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", vs):
                    newest = max(newest, (int(major), int(minor)))
    assert plat.startswith("manylinux_%d_%d_" % newest), (plat, newest)


@pytest.fixture(scope="session")
def fresh_venv(dist, tmp_path_factory):
    """A new venv (no system site-packages) with the wheel installed by pip
    as a user would; its one dependency, cffi, comes from the package index
    as for the isolated build above."""
    d = str(tmp_path_factory.mktemp("fresh") / "venv")
    _run([sys.executable, "-m", "venv", d])
    py = os.path.join(d, "bin", "python")
    _run([py, "-m", "pip", "install", "-q", dist[2]])
    return py


def test_wheel_installs_and_runs_in_a_fresh_venv(fresh_venv, tmp_path, backend):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SYSLET_"))}
    env.update(URING_SHIM_BACKEND=backend)
    site = _run([fresh_venv, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                env=env, cwd=str(tmp_path)).stdout.strip()
    assert not site.startswith(ROOT)
    r = _run([fresh_venv, "-c", _PROGRAM, site], cwd=str(tmp_path), env=env)
    n, head, closed, ran_on = r.stdout.split()
    assert (n, head, closed) == ("100", "234567890123", "True")
    assert ran_on == backend
    script = os.path.join(os.path.dirname(fresh_venv), "syslet-compat")
    r = _run([script, "--version"], cwd=str(tmp_path), env=env)
    assert r.stdout.split()[-1] == "0.1.0", r.stdout


_PROGRAM = r"""
import os, sys, compat
assert compat.__file__.startswith(sys.argv[1]), compat.__file__
with open("data", "wb") as f:
    f.write(b"0123456789" * 1000)
with compat.Context() as ctx:
    fd, n, buf = ctx.var(), ctx.var(), ctx.buffer(100)
    ch = ctx.chain()
    ch.openat(compat.AT_FDCWD, b"data", os.O_RDONLY, ret=fd)
    ch.pread64(fd, buf, 100, 42, ret=n)
    ch.close(fd)
    final = ctx.exec(ch) or ctx.wait(1)[0]
    print(n.value, buf.read(n.value)[:12].decode(), final.nr == compat.NR["close"], ctx.backend)
"""


def test_installed_wheel_runs_a_syslet(target, tmp_path, backend):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SYSLET_"))}
    env.update(PYTHONPATH=target, URING_SHIM_BACKEND=backend)
    r = _run([sys.executable, "-c", _PROGRAM, target], cwd=str(tmp_path), env=env)
    n, head, closed, ran_on = r.stdout.split()
    assert (n, head, closed) == ("100", "234567890123", "True")
    assert ran_on in ("io_uring", "threadpool")


@pytest.mark.parametrize("linked", [False, True], ids=["preload", "linked"])
def test_installed_wheel_drop_in(target, tmp_path, backend, linked):
    """examples/copy.c built against the installed headers, run with the
    installed libsyslet.so (LD_PRELOAD, or linked with -lsyslet)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    pkg = os.path.join(target, "compat")
    exe = str(tmp_path / "copy")
    cmd = [cc, "-O2", "-Wall", "-Werror", "-I" + os.path.join(pkg, "include"),
           os.path.join(ROOT, "examples", "copy.c"), "-o", exe]
    if linked:
        cmd += ["-L" + pkg, "-Wl,-rpath," + pkg, "-lsyslet"]
    else:
        cmd += ["-DSYSLET_USE_SYSCALL"]
    _run(cmd)
    data = os.urandom(300_000)
    (tmp_path / "src").write_bytes(data)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "SYSLET_", "LD_"))}
    env.update(URING_SHIM_BACKEND=backend, SYSLET_COMPAT_DEBUG="1", PATH="/usr/bin:/bin")
    if not linked:
        env["LD_PRELOAD"] = os.path.join(pkg, "libsyslet.so")
    r = _run([exe, "src", "dst"], cwd=str(tmp_path), env=env)
    assert r.stdout == "copied 300000 bytes in 5 chunks; final atom pread64, result 0\n"
    assert (tmp_path / "dst").read_bytes() == data
    assert re.search(r"^libsyslet: pid \d+ context: backend=\w+ \(asked "
                     + ("threadpool" if backend == "threadpool" else "io_uring") + r"\)$",
                     r.stderr, re.M), r.stderr
