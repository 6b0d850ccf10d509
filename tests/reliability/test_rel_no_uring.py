"""io_uring unavailable for real: a seccomp filter (installed with ctypes
before anything is imported) makes io_uring_setup / _enter / _register fail;
everything still works on the pool, and the reason names the errno."""
import errno
import os

import pytest

from rel_lib import build_c, describe, last_json, run_py

#: (io_uring calls refused, errno, what the probe reports)
CASES = {
    "all-EPERM": (425, 427, errno.EPERM, "io_uring_setup failed with EPERM"),
    "all-ENOSYS": (425, 427, errno.ENOSYS, "io_uring_setup failed with ENOSYS"),
    # some sandboxes allow setup but not enter (io-uring notes 6.7)
    "enter-EPERM": (426, 426, errno.EPERM, "io_uring_enter (NOP submit) failed with EPERM"),
}

CHILD = r"""
import sys, errno, json, os, time, ctypes
import rel_lib
lo, hi, err = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rel_lib.install_seccomp([(lo, hi, rel_lib.SECCOMP_RET_ERRNO | err)])
import uring_shim, compat
from rel_lib import ASYNC, Mem, RawRing, addr
out = {}
try:
    out["backend"] = uring_shim.backend()
except OSError as e:
    out["backend_error"] = e.errno
out["reason"] = uring_shim.backend_reason()
out["probe_errno"] = uring_shim._backend._get()["errno"]
if "backend_error" in out:
    print(json.dumps(out)); sys.exit(0)
out["engines"] = {}
for want in (None, "io_uring", "threadpool"):
    with compat.Engine(want) as e:
        m = Mem()
        ring = RawRing(e, 8)
        res = {"backend": e.backend}
        # a syslet that completes at once
        a = m.atoms(1)[0]; r = m.cell(-999)
        m.set(a, 39, (), ret=r)
        res["getpid_sync"] = e.exec(addr(a)) == addr(a) and r.value == os.getpid()
        # a blocking pipe read goes async; data written later completes it
        rp, wp = os.pipe()
        buf = m.buf(8); b = m.atoms(1)[0]; r2 = m.cell(-999)
        m.set(b, 0, (rp, addr(buf), 4), ret=r2)
        x = e.exec(addr(b))
        res["read_went_async"] = x == 0
        time.sleep(0.05)
        os.write(wp, b"abcd")
        res["read_published"] = e.wait(1, timeout=5) and ring.reap() == [addr(b)]
        res["read_result"] = [r2.value, buf.raw[:4].decode()]
        # getdents64 (no io_uring opcode anyway) on this directory
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        dbuf = m.buf(4096); c = m.atoms(1)[0]; r3 = m.cell(-999)
        m.set(c, 217, (fd, addr(dbuf), 4096), ret=r3)
        x = e.exec(addr(c))         # a pool call: sync or async
        res["getdents64"] = (x == addr(c) or (x == 0 and e.wait(1, timeout=5)
                             and ring.reap() == [addr(c)])) and r3.value > 0
        os.close(fd)
        # an ASYNC one: published once
        d = m.atoms(1)[0]; r4 = m.cell(-999)
        m.set(d, 39, (), ret=r4, flags=ASYNC)
        res["async_flag"] = e.exec(addr(d)) == 0 and e.wait(1, timeout=5) and ring.reap() == [addr(d)]
        ring.unregister()
        res["threads"] = e.threads()
        os.close(rp); os.close(wp)
    out["engines"][str(want)] = res
# the builder and the raw API on the default context
with compat.Context() as ctx:
    ch = ctx.chain(); n = ctx.var()
    ch.getpid(ret=n)
    out["context"] = [ctx.backend, ctx.exec(ch) is not None and n.value == os.getpid()]
out["raw_umem_add"] = compat.umem_add(addr(m.cell(41)), 1)
print(json.dumps(out))
"""


@pytest.mark.parametrize("case", sorted(CASES))
def test_python_falls_back_to_the_pool(case):
    lo, hi, err, words = CASES[case]
    p = run_py(CHILD, lo, hi, err, backend="auto", timeout=60)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out["backend"] == "threadpool", out
    assert out["probe_errno"] == err, out                    # the structured errno
    assert words in out["reason"], out["reason"]
    assert errno.errorcode[err] in out["reason"]
    for want, res in out["engines"].items():
        assert res["backend"] == "threadpool", (want, res)
        assert res["getpid_sync"] and res["read_went_async"] and res["read_published"], res
        assert res["read_result"] == [4, "abcd"] and res["getdents64"] and res["async_flag"], res
    assert out["context"] == ["threadpool", True]
    assert out["raw_umem_add"] == 42


@pytest.mark.parametrize("case", ["all-EPERM", "enter-EPERM"])
def test_forcing_io_uring_reports_the_errno(case):
    """URING_SHIM_BACKEND=io_uring where it cannot work: backend() raises
    OSError with the probe's errno (a structured error, not a string)."""
    lo, hi, err, words = CASES[case]
    p = run_py(CHILD, lo, hi, err, backend="io_uring", timeout=60)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out.get("backend_error") == err, out
    assert "forced" in out["reason"] and words in out["reason"], out


C_PROG = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <syslet.h>

static int pfd[2];
static void *later(void *a)
{
    (void)a;
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
    if (write(pfd[1], "wxyz", 4) != 4)
        return NULL;
    return NULL;
}

int main(void)
{
    static struct syslet_uatom *ring[8];
    struct async_head_user ahu = {ring, sizeof ring, -1UL};
    if (async_register(&ahu, sizeof ahu)) { perror("register"); return 2; }
    printf("backend=%d\n", syslet_compat_backend());
    if (pipe(pfd)) return 2;
    unsigned long fd = pfd[0], len = 4, nr;
    char buf[8] = {0};
    unsigned long bufa = (unsigned long)buf;
    long ret = -999;
    struct syslet_uatom a;
    memset(&a, 0, sizeof a);
    a.nr = __NR_read; a.ret_ptr = &ret;
    a.arg_ptr[0] = &fd; a.arg_ptr[1] = &bufa; a.arg_ptr[2] = &len;
    pthread_t t;
    pthread_create(&t, NULL, later, NULL);
    struct syslet_uatom *r = async_exec(&a);
    printf("read: %s\n", r == NULL ? "async" : "sync");
    if (async_wait(1)) { perror("wait"); return 2; }
    printf("entry=%d ret=%ld buf=%s\n", ring[0] == &a, ret, buf);
    ring[0] = NULL;
    /* getdents64 and a syslet-number call through syscall() */
    int dfd = open(".", O_RDONLY | O_DIRECTORY);
    unsigned long dfdw = dfd, dbuf[512], dbufa = (unsigned long)dbuf, dlen = sizeof dbuf;
    long dret = -999;
    memset(&a, 0, sizeof a);
    a.nr = __NR_getdents64; a.ret_ptr = &dret;
    a.arg_ptr[0] = &dfdw; a.arg_ptr[1] = &dbufa; a.arg_ptr[2] = &dlen;
    r = (struct syslet_uatom *)syscall(__NR_async_exec, &a);
    if (r == NULL) {            /* a pool call: it may go async */
        if (async_wait(1)) { perror("wait"); return 2; }
        r = ring[1];
        ring[1] = NULL;
    }
    printf("getdents64=%d\n", r == &a && dret > 0);
    nr = 41;
    printf("umem_add=%lu\n", (unsigned long)syscall(__NR_umem_add, &nr, 1UL));
    pthread_join(t, NULL);
    return async_unregister(&ahu, sizeof ahu) ? 3 : 0;
}
"""

WRAP = r"""
import sys, errno, rel_lib
lo, hi, err = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rel_lib.exec_under_seccomp([(lo, hi, rel_lib.SECCOMP_RET_ERRNO | err)], sys.argv[4:])
"""


@pytest.mark.parametrize("case", ["all-EPERM", "enter-EPERM"])
def test_c_dropin_falls_back_to_the_pool(case, tmp_path):
    lo, hi, err, _ = CASES[case]
    exe = build_c(C_PROG, str(tmp_path), "nouring")
    env = {"SYSLET_COMPAT_DEBUG": "1"}
    p = run_py(WRAP, lo, hi, err, exe, backend="auto", timeout=60, env=env)
    assert p.returncode == 0, describe(p)
    assert "backend=0" in p.stdout, describe(p)
    assert "read: async" in p.stdout and "entry=1 ret=4 buf=wxyz" in p.stdout, describe(p)
    assert "getdents64=1" in p.stdout and "umem_add=42" in p.stdout, describe(p)
    assert "context: backend=threadpool (asked io_uring)" in p.stderr, describe(p)


def test_filter_really_blocks_io_uring():
    """The filter is real: io_uring_setup itself fails with the errno."""
    code = r"""
import ctypes, sys, rel_lib, errno
rel_lib.install_seccomp([(425, 427, rel_lib.SECCOMP_RET_ERRNO | errno.EPERM)])
libc = ctypes.CDLL(None, use_errno=True)
params = (ctypes.c_char * 120)()
r = libc.syscall(425, 8, params)
print(r, ctypes.get_errno())
"""
    p = run_py(code)
    assert p.stdout.split() == ["-1", str(errno.EPERM)], describe(p)
    assert os.path.exists("/proc/self/status")
