"""backend(): probe, cache, environment override, failure reporting."""
import errno
import os
import platform
import subprocess
import sys
import textwrap

import pytest

import uring_shim as us
from uring_shim import _backend

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(us.__file__)))

# Installs a seccomp filter failing io_uring_setup (425) with EPERM, as
# Docker's default profile does, then runs the test body.
SECCOMP = textwrap.dedent("""
    import ctypes, struct
    libc = ctypes.CDLL(None, use_errno=True)
    def ins(code, jt, jf, k):
        return struct.pack("HBBI", code, jt, jf, k)
    prog = b"".join([
        ins(0x20, 0, 0, 4),                   # ld arch
        ins(0x15, 0, 3, 0xC000003E),          # jeq AUDIT_ARCH_X86_64 else allow
        ins(0x20, 0, 0, 0),                   # ld nr
        ins(0x15, 0, 1, 425),                 # jeq io_uring_setup
        ins(0x06, 0, 0, 0x00050000 | 1),      # ret ERRNO(EPERM)
        ins(0x06, 0, 0, 0x7FFF0000),          # ret ALLOW
    ])
    buf = ctypes.create_string_buffer(prog)
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fp = Fprog(len(prog) // 8, ctypes.addressof(buf))
    assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0       # PR_SET_SECCOMP, FILTER
""")


def run(code, env_value=None, seccomp=False):
    env = dict(os.environ)
    env.pop(_backend.ENV, None)
    if env_value is not None:
        env[_backend.ENV] = env_value
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    src = (SECCOMP if seccomp else "") + textwrap.dedent(code)
    p = subprocess.run([sys.executable, "-W", "error", "-c", src], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


REPORT = """
    import errno, os, uring_shim as us
    print(us.backend(), us.io_uring_available(), bool(us.backend_reason()))
    try:
        us.Ring().close()
        print("ring-ok")
    except OSError as e:
        print(errno.errorcode[e.errno])
    with us.Pool() as p:
        p.submit(110, user_data=1)
        print(p.wait()[0].res == os.getppid())
"""


def test_backend_is_consistent(backend):
    assert backend in ("io_uring", "threadpool")
    assert us.io_uring_available() == (backend == "io_uring")
    assert isinstance(us.backend_reason(), str) and us.backend_reason()
    assert us.backend() is us.backend()


def test_ring_on_threadpool_backend_raises(backend):
    if backend != "threadpool":
        pytest.skip("only meaningful on the threadpool backend")
    with pytest.raises(OSError) as ei:
        us.Ring()
    assert ei.value.errno != 0


def test_env_threadpool_in_subprocess():
    assert run(REPORT, "threadpool") == ["threadpool", "False", "True", "ENOSYS", "True"]


def test_env_io_uring_in_subprocess(backend):
    if not us.io_uring_available() and _backend._probe()[0]:
        pytest.skip("io_uring does not work here")
    assert run(REPORT, "io_uring") == ["io_uring", "True", "True", "ring-ok", "True"]


def test_env_invalid_value_raises_valueerror():
    out = run("""
        import uring_shim as us
        for f in (us.backend, us.backend_reason, us.io_uring_available, us.Ring):
            try:
                f()
                print("no-error")
            except ValueError:
                print("ValueError")
    """, "bogus")
    assert out == ["ValueError"] * 4


needs_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64",
                                  reason="seccomp filter written for x86_64")


@needs_x86_64
def test_seccomp_blocked_setup_falls_back_to_threadpool():
    assert run(REPORT, "auto", seccomp=True) == ["threadpool", "False", "True", "EPERM", "True"]


@needs_x86_64
def test_seccomp_blocked_setup_with_forced_io_uring_raises():
    out = run("""
        import errno, uring_shim as us
        try:
            us.backend()
            print("no-error")
        except OSError as e:
            print(errno.errorcode[e.errno])
        print(us.io_uring_available(), bool(us.backend_reason()))
    """, "io_uring", seccomp=True)
    assert out == ["EPERM", "False", "True"]


@pytest.fixture
def fresh_detection(monkeypatch):
    """Re-run detection under monkeypatches; restore the cache afterwards."""
    _backend._reset()
    yield monkeypatch
    monkeypatch.undo()
    _backend._reset()


@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOSYS, errno.ENOMEM])
def test_probe_failure_selects_threadpool(fresh_detection, err):
    fresh_detection.setenv(_backend.ENV, "auto")
    fresh_detection.setattr(_backend, "_probe", lambda: (err, "simulated", frozenset()))
    assert us.backend() == "threadpool"
    assert not us.io_uring_available()
    with pytest.raises(OSError) as ei:
        us.Ring()
    assert ei.value.errno == err


def test_detection_is_cached(fresh_detection):
    calls = []
    real = _backend._probe
    fresh_detection.delenv(_backend.ENV, raising=False)
    fresh_detection.setattr(_backend, "_probe", lambda: calls.append(1) or real())
    us.backend()
    us.backend_reason()
    us.io_uring_available()
    assert calls == [1]
