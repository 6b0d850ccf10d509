"""libsyslet itself: conventions, threads, fork, signals, 2007-style code,
ENOSYS without it, exports, policy (from the environment, no Python), the
headers and ``python -m compat config``.  C sources: tests/dropin/c/."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from dropin_lib import (HERE, child_env, config, context_line, expected_backend, preload_path,
                        require_cc, run)

C = os.path.join(HERE, "c")


def src(name):
    return os.path.join(C, name)


CONVENTIONS = """\
exec before register: -1 EINVAL
wait before register: -1 EINVAL
unregister before register: -1 EINVAL
register len 23: -1 EINVAL
register bad pointer: -1 EFAULT
register ring 12 bytes: -1 EINVAL
register: 0
register again: -1 EBUSY
exec bad pointer: -1 EFAULT
exec ASYNC|SYNC: -1 EINVAL
exec getpid: final atom, result is pid: 1, errno kept: 1
exec read pipe whole: final atom, result 3, data abc, errno kept: 1
exec read pipe short: final atom, result 2, data de, errno kept: 1
exec read pipe at EOF: final atom, result 0, errno kept: 1
exec read closed fd: final atom, result -9, errno kept: 1
exec atom nr 1001: final atom, result -22
exec atom umem_add: final atom, result 42, word 42
exec atom umem_add bad pointer: result -14
umem_add: 50
umem_add bad pointer: -1 EFAULT
wait 0: 0
exec ASYNC: 0
wait 1: 0
ring[0] is the atom: 1, result is pid: 1, ring[1] empty: 1
exec ASYNC|NO_COMPLETE: 0
unregister other ring: -1 EINVAL
unregister len 8: -1 EINVAL
unregister: 0
after unregister: result is ppid: 1, ring empty: 1
exec after unregister: -1 EINVAL
register max_nr_threads 0: 0
exec ASYNC without threads: final atom
unregister: 0
getpid forwarded: 1
syscall 999: -1 ENOSYS
syscall 1005: -1 ENOSYS
copy_file_range forwarded: 6, offsets 10 8, data 456789
"""


@pytest.mark.parametrize("how", ["syscall-preload", "syscall-linked", "functions-linked"])
def test_conventions(builder, backend, how):
    """-1/errno everywhere, the ring protocol, and pass-through of other numbers."""
    linked = how.endswith("linked")
    extra = ["-DUSE_FUNCTIONS"] if how.startswith("functions") else []
    exe = builder.build(src("conventions.c"), linked=linked, extra=extra)
    r = run(exe, backend=backend, preload=not linked)
    assert r.returncode == 0, r.stderr
    assert r.stdout == CONVENTIONS
    assert r.stderr == ""


def test_enosys_without_the_library(builder, backend):
    exe = builder.build(src("enosys.c"), linked=False)
    r = run(exe, backend=backend)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "".join(f"{n}: -1 ENOSYS\n" for n in range(1000, 1005))


@pytest.mark.parametrize("linked", [False, True], ids=["preload", "linked"])
def test_threads(builder, pattern_file, backend, linked):
    """8 pthreads register at once (one wins, 7 EBUSY), then run 400 chains
    each, some async through the shared ring reaped by the main thread."""
    exe = builder.build(src("threads.c"), linked=linked)
    r = run(exe, pattern_file, backend=backend, preload=not linked,
            env={"SYSLET_COMPAT_DEBUG": "1"}, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ("threads=8 register: ok=1 busy=7 chains=400 counter=3200 "
                        "async=all reaped errors=0\n")
    ctx = context_line(r.stderr)
    assert len(ctx) == 1 and ctx[0][0] == expected_backend(backend)


FORK = """\
parent: register ok
parent: slow syslet went async
child: exec before register: EINVAL
child: register ok
child: async getpid: ring entry, result is my pid: 1
child: unregister ok
child: slow result untouched: 1
parent: child exit 0
parent: slow syslet ring entry, result 0
parent: async getpid: ring entry, result is my pid: 1
parent: unregister ok
"""


@pytest.mark.parametrize("linked", [False, True], ids=["preload", "linked"])
def test_fork(builder, backend, linked):
    exe = builder.build(src("fork.c"), linked=linked)
    r = run(exe, backend=backend, preload=not linked, env={"SYSLET_COMPAT_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == FORK
    ctx = context_line(r.stderr)
    assert len(ctx) == 2, r.stderr      # the parent's context and the child's fresh one
    assert {c[0] for c in ctx} == {expected_backend(backend)}


def test_async_wait_signals(builder, backend):
    exe = builder.build(src("eintr.c"), linked=False)
    r = run(exe, backend=backend, preload=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "wait with nothing in flight, SIGALRM handler: -1 EINTR, handled 1, waited >= 90 ms: 1\n"
        "300 ms syslet, SIGALRM handler (SA_RESTART) at 100 ms: exec 0, wait 0, handled 1, "
        "waited >= 290 ms: 1, ring entry 1, result 0\n"
        "ignored signal during a 200 ms syslet: exec 0, wait 0, ring entry 1, result 0\n"
        "1 ms syslet, wait returned within 4 ms (median): 1\n")


LEGACY = """\
numbers: 1000 1001 1002 1003 1004
sync: final atom B 1, private 0x1234, seek 8, read 8: 89abcdef
async: final atom B 1, private 0x1234, seek 9, read 8: 9abcdefg
umem_add: 42
"""


@pytest.mark.parametrize("linked", [False, True], ids=["preload", "linked"])
def test_legacy_2007_program(builder, tmp_path, backend, linked):
    """Its own copy of the old header (old numbers under #ifndef, __user),
    built with -include syslet-numbers.h -D__user= (config --legacy-cflags)."""
    flags = shlex.split(config("--legacy-cflags"))
    assert flags[-3:] == ["-include", "syslet-numbers.h", "-D__user="]
    exe = builder.build(src("legacy/legacy.c"), linked=linked,
                        extra=flags[1:] + ["-iquote", src("legacy")])
    data = tmp_path / "data"
    data.write_bytes(b"0123456789abcdefghij")
    r = run(exe, data, backend=backend, preload=not linked)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == LEGACY
    # The same binary without the library: our numbers reach the kernel: ENOSYS.
    if not linked:
        r = run(exe, data, backend=backend)
        assert r.returncode == 1
        assert r.stderr == "async_register: Function not implemented\n"


def test_legacy_header_without_our_numbers_uses_the_old_ones(builder):
    """Sanity check of the trick: without -include, the old header's numbers
    (2007 x86_64: 280...) would be compiled in."""
    require_cc()
    r = subprocess.run([shutil.which("cc") or "gcc", "-E", "-dM", "-D__user=", "-I" + src("legacy"),
                        "-include", "syslet.h", "-x", "c", "/dev/null"],
                       capture_output=True, text=True, check=True)
    assert "#define __NR_async_exec 281" in r.stdout


def test_cxx(builder):
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler")
    exe = builder.build(src("cxx.cc"), linked=True, lang="c++")
    r = run(exe, backend="threadpool")
    assert (r.returncode, r.stdout) == (0, "42 1001\n")


@pytest.mark.parametrize("std", ["-std=c89", "-std=c99", "-std=c11"])
def test_header_layout(builder, std):
    prog = r"""
#include <stddef.h>
#include <stdio.h>
#include <syslet.h>
int main(void)
{
    printf("%lu %lu %lu %lu %lu %lu %lu %lu %lu %lu\n",
           (unsigned long)sizeof(struct syslet_uatom),
           (unsigned long)offsetof(struct syslet_uatom, flags),
           (unsigned long)offsetof(struct syslet_uatom, nr),
           (unsigned long)offsetof(struct syslet_uatom, ret_ptr),
           (unsigned long)offsetof(struct syslet_uatom, next),
           (unsigned long)offsetof(struct syslet_uatom, arg_ptr),
           (unsigned long)offsetof(struct syslet_uatom, private),
           (unsigned long)sizeof(struct async_head_user),
           (unsigned long)offsetof(struct async_head_user, ring_size_bytes),
           (unsigned long)offsetof(struct async_head_user, max_nr_threads));
    printf("%#x %#x %#x %#x %#x %#x %#x %#x %#x\n", SYSLET_ASYNC, SYSLET_SYNC,
           SYSLET_NO_COMPLETE, SYSLET_STOP_ON_NONZERO, SYSLET_STOP_ON_ZERO,
           SYSLET_STOP_ON_NEGATIVE, SYSLET_STOP_ON_NON_POSITIVE, SYSLET_STOP_MASK,
           SYSLET_SKIP_TO_NEXT_ON_STOP);
    printf("%d %d %d %d %d\n", __NR_async_register, __NR_async_exec, __NR_async_wait,
           __NR_async_unregister, __NR_umem_add);
    return 0;
}
"""
    exe = builder.build(prog, linked=False, extra=[std, "-pedantic"], name="layout" + std[5:])
    r = run(exe, backend="threadpool")
    assert r.returncode == 0
    assert r.stdout == ("88 0 8 16 24 32 80 24 8 16\n"
                        "0x1 0x2 0x4 0x8 0x10 0x20 0x40 0x78 0x80\n"
                        "1000 1001 1002 1003 1004\n")


# ---- policy: from the environment, in C ------------------------------------------

def _policy_run(builder, backend, env):
    exe = builder.build(src("conventions.c"), linked=False)
    r = run(exe, backend=backend, preload=True, env={"SYSLET_COMPAT_DEBUG": "1", **env})
    assert r.returncode == 0, r.stderr
    assert r.stdout == CONVENTIONS
    return context_line(r.stderr), r.stderr


def test_policy_from_the_environment(builder, backend):
    # Whatever the Python variables say: libsyslet starts no interpreter.
    ctx, err = _policy_run(builder, backend, {"PYTHONHOME": "/nonexistent",
                                              "PYTHONPATH": "/nonexistent"})
    assert ctx == [(expected_backend(backend), backend)], err


@pytest.mark.parametrize("value", ["auto", None])
def test_policy_auto_is_io_uring(builder, backend, value):
    """auto, or unset: io_uring, where the engine can set it up."""
    from uring_shim import _backend
    works = _backend._probe()[0] == 0       # io_uring on this machine, whatever the run's backend
    exe = builder.build(src("conventions.c"), linked=False)
    env = child_env(backend, preload=True, extra={"SYSLET_COMPAT_DEBUG": "1"})
    if value is None:
        del env["URING_SHIM_BACKEND"]
    else:
        env["URING_SHIM_BACKEND"] = value
    r = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == CONVENTIONS, r.stderr
    assert context_line(r.stderr) == [("io_uring" if works else "threadpool", "io_uring")], r.stderr


def test_no_python_in_the_process(builder, backend):
    """No libpython is loaded, before or after the first syslet call."""
    exe = builder.build(src("conventions.c"), linked=False)
    r = run(exe, backend=backend, preload=True, env={"LD_DEBUG": "libs"})
    assert r.returncode == 0 and r.stdout == CONVENTIONS, r.stderr
    assert "libsyslet.so" in r.stderr and "libpython" not in r.stderr


def test_trace_switch(builder, backend):
    exe = builder.build(src("conventions.c"), linked=False)
    r = run(exe, backend=backend, preload=True, env={"SYSLET_COMPAT_TRACE": "1"})
    assert r.returncode == 0 and r.stdout == CONVENTIONS
    assert "[syslet" in r.stderr


# ---- the library file, the headers, config ------------------------------------

EXPORTS = {"async_register", "async_exec", "async_wait", "async_unregister", "umem_add",
           "syscall", "syslet_compat_backend",
           "async_exec_v5", "async_wait_v5", "async_thread_v5",
           "async_exec_v6", "async_wait_v6", "async_thread_v6",
           "syslet_indirect", "syslet_ring_wait"}


def test_exports():
    nm = shutil.which("nm")
    if not nm:
        pytest.skip("no nm")
    out = subprocess.run([nm, "-D", "--defined-only", preload_path()], capture_output=True,
                         text=True, check=True).stdout
    names = {ln.split()[-1] for ln in out.splitlines() if ln.strip()}
    assert names == EXPORTS      # nothing of the engine, the shim or liburing leaks


def _fdes(lib):
    """[(start, end, rows)] of lib's call-frame information (readelf)."""
    fdes = []
    for ln in subprocess.run(["readelf", "--debug-dump=frames-interp", lib], capture_output=True,
                             text=True, check=True).stdout.splitlines():
        if " FDE " in ln and "pc=" in ln:
            lo, hi = ln.split("pc=")[1].split("..")
            fdes.append((int(lo, 16), int(hi, 16), []))
        elif fdes and ln.strip():
            fdes[-1][2].append(ln)
    return fdes


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the ret-less entries are x86_64 only")
@pytest.mark.parametrize("which", ["libsyslet", "compat._exec"])
def test_ret_less_entries_have_unwind_info(which):
    """The exec entries that return without `ret` (decisions D22) are
    assembly: libsyslet's syscall(), async_exec() and sl_dropin_exec_entry
    behind them, and compat._exec's pyexec_entry.  Each carries call-frame
    information, so debuggers, profilers and backtrace() can walk through
    them: with the frame the entry keeps around its system call, and the
    return address in rcx just before its final jmp."""
    import re
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "compat", "csrc", "retless.h")) as f:
        frame = int(re.search(r"subq \$(\d+), %rsp", f.read()).group(1))
    cfa = f"rsp+{frame + 8}"        # the entry's frame and the return address
    if which == "libsyslet":
        lib, entry = preload_path(), "sl_dropin_exec_entry"
        names = ("syscall", "async_exec", entry)
    else:
        import compat._exec
        lib, entry = compat._exec.__file__, "pyexec_entry"
        names = (entry,)
    syms = {}
    for ln in subprocess.run(["nm", lib], capture_output=True, text=True,
                             check=True).stdout.splitlines():
        parts = ln.split()
        if len(parts) == 3 and parts[2] in names:
            syms[parts[2]] = int(parts[0], 16)
    assert set(syms) == set(names)
    fdes = _fdes(lib)
    cover = {n: [f for f in fdes if f[0] <= a < f[1]] for n, a in syms.items()}
    assert all(len(v) == 1 for v in cover.values()), cover
    rows = "\n".join(cover[entry][0][2])
    assert cfa in rows and "r2 (rcx)" in rows, rows


def test_config_flags():
    import compat
    pkg = os.path.dirname(os.path.abspath(compat.__file__))
    inc = os.path.join(pkg, "include")
    assert config("--cflags") == f"-I{inc}"
    assert config("--libs") == f"-L{pkg} -Wl,-rpath,{pkg} -lsyslet"
    assert config("--preload") == os.path.join(pkg, "libsyslet.so")
    assert config("--include-dir") == inc
    assert config("--cflags", "--libs") == f"-I{inc} -L{pkg} -Wl,-rpath,{pkg} -lsyslet"
    assert config("--modversion") == compat.__version__
    for h in ("syslet.h", "syslet-numbers.h"):
        assert os.path.isfile(os.path.join(inc, h))
    assert os.path.isfile(config("--preload"))
    r = subprocess.run([sys.executable, "-m", "compat", "config"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--cflags" in r.stderr


def test_pkg_config(tmp_path):
    pc = shutil.which("pkg-config") or shutil.which("pkgconf")
    if not pc:
        pytest.skip("no pkg-config")
    env = {**os.environ, "PKG_CONFIG_PATH": config("--pc-path")}
    env.pop("PKG_CONFIG_LIBDIR", None)
    q = lambda *a, e=env: subprocess.run([pc, *a, "syslet"], env=e, capture_output=True,  # noqa: E731
                                         text=True, check=True).stdout.split()
    assert q("--cflags") == config("--cflags").split()
    assert q("--libs") == config("--libs").split()
    import compat
    assert q("--modversion") == [compat.__version__]
    # --pc writes an equivalent file with absolute paths.
    (tmp_path / "syslet.pc").write_text(config("--pc") + "\n")
    env2 = {**env, "PKG_CONFIG_PATH": str(tmp_path)}
    assert q("--cflags", e=env2) == config("--cflags").split()
    assert q("--libs", e=env2) == config("--libs").split()


def test_pkg_config_build(builder, tmp_path, backend):
    """A build driven by pkg-config alone."""
    pc = shutil.which("pkg-config") or shutil.which("pkgconf")
    if not pc:
        pytest.skip("no pkg-config")
    env = {**os.environ, "PKG_CONFIG_PATH": config("--pc-path")}
    flags = subprocess.run([pc, "--cflags", "--libs", "syslet"], env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    exe = str(tmp_path / "conv")
    subprocess.run([shutil.which("cc") or "gcc", "-O2", "-DUSE_FUNCTIONS", src("conventions.c"),
                    "-o", exe, *flags], check=True, timeout=120)
    r = run(exe, backend=backend)
    assert (r.returncode, r.stdout) == (0, CONVENTIONS)

