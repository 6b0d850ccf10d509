"""Security: refused calls and the syslet numbers never reach the kernel
(seccomp kills the process if they do; strace shows no fork/exec), the
2007 numbers are plain system calls, the fault guard only catches faults in
its own accesses."""
import errno
import json
import os
import re
import shutil
import signal
import subprocess

import pytest

import compat
from compat._abi import REFUSED
from rel_lib import (ASYNC, SENTINEL, Mem, RawRing, addr, build_c, child_env, describe,
                     last_json, run_exe, run_py)

SPEC_REFUSED = {15, 56, 57, 58, 59, 60, 231, 322, 435} | set(range(1000, 1040)) - {1004, 1012, 1022}
ALIASES = [(1 << 32) + n for n in (57, 59, 60, 231, 1000, 1001, 1004)] + \
          [(1 << 30) + n for n in (57, 60, 231)] + [(1 << 63) + 1000]


def test_refused_list_is_the_spec_list():
    assert set(REFUSED) == SPEC_REFUSED


@pytest.mark.parametrize("executor", ["reference", "engine"])
def test_refused_and_aliased_numbers_results(backend, executor):
    """Refused -> -EINVAL, >= 2**30 (would alias a real call in the low 32
    bits) -> -ENOSYS; synchronously and with SYSLET_ASYNC."""
    m = Mem()
    eng = compat.Reference() if executor == "reference" else compat.Engine(backend)
    try:
        ring = RawRing(eng, 8)
        for nr in sorted(SPEC_REFUSED) + ALIASES:
            for flags in ((0,) if executor == "reference" else (0, ASYNC)):
                a = m.atoms(1)[0]
                r = m.cell(SENTINEL)
                m.set(a, nr, (0, 0, 0, 0, 0, 0), ret=r, flags=flags)
                x = eng.exec(addr(a))
                if x == 0:
                    assert eng.wait(1, timeout=5) and ring.reap() == [addr(a)]
                else:
                    assert x == addr(a)
                want = -errno.EINVAL if nr in SPEC_REFUSED else -errno.ENOSYS
                assert r.value == want, (nr, flags, r.value)
        ring.unregister()
    finally:
        eng.close()


#: seccomp: the syslet numbers kill the process; fork/vfork/execve/execveat
#: fail with an errno nothing else produces (so a leak shows in the results).
def _rules(allow_execve=False):
    from rel_lib import SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS
    marker = SECCOMP_RET_ERRNO | errno.ENOTRECOVERABLE
    return [(1000, 1004, SECCOMP_RET_KILL_PROCESS), (57, 58 if allow_execve else 59, marker),
            (322, 322, marker)]


PY_SECCOMP = r"""
import ctypes, errno, json, os, sys
import rel_lib
from test_rel_security import _rules, SPEC_REFUSED, ALIASES
import compat
from rel_lib import ASYNC, SENTINEL, Mem, RawRing, addr
rel_lib.install_seccomp(_rules())
backend = sys.argv[1]
m = Mem()
bad = []
with compat.Engine(backend) as e:
    ring = RawRing(e, 8)
    for nr in sorted(SPEC_REFUSED - {15, 56, 60, 231, 435}) + ALIASES + [1004]:
        for flags in (0, ASYNC):
            a = m.atoms(1)[0]; r = m.cell(SENTINEL); cnt = m.cell(41)
            m.set(a, nr, (addr(cnt), 1), ret=r, flags=flags)
            if e.exec(addr(a)) == 0:
                e.wait(1, timeout=5); ring.reap()
            want = 42 if nr == 1004 else -errno.EINVAL if nr in SPEC_REFUSED else -errno.ENOSYS
            if r.value != want:
                bad.append([nr, flags, r.value])
    ring.unregister()
# the raw API's umem_add is served in-process too
c = m.cell(1)
print(json.dumps({"bad": bad, "umem_add": compat.umem_add(addr(c), 1)}), flush=True)
# the filter is real: a direct syscall(1000) kills this process
ctypes.CDLL(None).syscall(1000, 0, 0)
print("still alive?!", flush=True)
"""


def test_syslet_numbers_never_reach_the_kernel_python(backend):
    p = run_py(PY_SECCOMP, backend, timeout=60)
    out = last_json(p.stdout)
    assert out == {"bad": [], "umem_add": 2}, out
    assert p.returncode == -signal.SIGSYS and "still alive" not in p.stdout, describe(p)


C_SECURITY = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <syslet.h>

static long raw1000(void)     /* the instruction itself, not libsyslet's syscall() */
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(1000L) : "rcx", "r11", "memory");
    return r;
}

int main(int argc, char **argv)
{
    static struct syslet_uatom *ring[8];
    struct async_head_user ahu = {ring, sizeof ring, -1UL};
    /* the syslet calls through syscall(): served by libsyslet */
    if (syscall(__NR_async_register, &ahu, sizeof ahu)) { perror("register"); return 2; }
    unsigned long v = 41;
    printf("umem_add=%ld\n", syscall(__NR_umem_add, &v, 1UL));
    printf("wait0=%ld\n", syscall(__NR_async_wait, 0UL));
    /* atoms with the syslet numbers and the dangerous ones */
    static const unsigned long nrs[] = {1000, 1001, 1002, 1003, 1004, 57, 58, 59, 322,
                                        (1UL << 32) + 1000, (1UL << 32) + 57, (1UL << 30) + 59};
    int bad = 0;
    for (unsigned i = 0; i < sizeof nrs / sizeof nrs[0]; i++)
        for (int async = 0; async < 2; async++) {
            struct syslet_uatom a;
            long ret = -999;
            unsigned long cnt = 41, inc = 1, p = (unsigned long)&cnt;
            memset(&a, 0, sizeof a);
            a.nr = nrs[i]; a.ret_ptr = &ret; a.flags = async ? SYSLET_ASYNC : 0;
            a.arg_ptr[0] = &p; a.arg_ptr[1] = &inc;
            struct syslet_uatom *r = (struct syslet_uatom *)syscall(__NR_async_exec, &a);
            if (r == NULL) {
                syscall(__NR_async_wait, 1UL);
                memset(ring, 0, sizeof ring);
            }
            long want = nrs[i] == 1004 ? 42 : nrs[i] < (1UL << 30) ? -EINVAL : -ENOSYS;
            if (ret != want) {
                printf("atom nr=%lu async=%d ret=%ld want=%ld\n", nrs[i], async, ret, want);
                bad++;
            }
        }
    printf("bad=%d\n", bad);
    /* the 2007 x86_64 numbers are plain system calls today: passed through */
    long tfd = syscall(283, CLOCK_MONOTONIC, 0);                 /* timerfd_create */
    long mb = syscall(324, 0, 0);                                /* membarrier QUERY */
    long ut = syscall(280, AT_FDCWD, argv[1], NULL, 0);          /* utimensat */
    printf("timerfd=%d membarrier=%d utimensat=%ld\n", tfd >= 0, mb >= 0, ut);
    if (syscall(__NR_async_unregister, &ahu, sizeof ahu)) { perror("unregister"); return 3; }
    fflush(stdout);
    if (argc > 2)
        raw1000();            /* the filter is real: this kills the process */
    printf("still alive\n");
    return 0;
}
"""

WRAP = r"""
import sys, rel_lib
from test_rel_security import _rules
rel_lib.exec_under_seccomp(_rules(allow_execve=True), sys.argv[1:])     # the exec itself
"""


@pytest.mark.parametrize("mode", ["linked", "preload"])
def test_syslet_numbers_never_reach_the_kernel_c(backend, tmp_path, mode):
    exe = build_c(C_SECURITY, str(tmp_path), "security", linked=mode == "linked")
    target = tmp_path / "stamp"
    target.write_text("x")
    env = child_env(backend)
    if mode == "preload":
        from rel_lib import libsyslet_path
        env["LD_PRELOAD"] = libsyslet_path()
    for kill in (False, True):
        args = [exe, str(target)] + (["kill"] if kill else [])
        p = subprocess.run([__import__("sys").executable, "-c", WRAP, *args], env=env,
                           capture_output=True, text=True, timeout=60)
        assert "umem_add=42" in p.stdout and "wait0=0" in p.stdout and "bad=0" in p.stdout, describe(p)
        assert "timerfd=1 membarrier=1 utimensat=0" in p.stdout, describe(p)
        if kill:
            assert p.returncode == -signal.SIGSYS and "still alive" not in p.stdout, describe(p)
        else:
            assert p.returncode == 0 and "still alive" in p.stdout, describe(p)


@pytest.mark.skipif(not shutil.which("strace"), reason="strace not installed")
def test_strace_sees_no_fork_or_exec_from_refused_atoms(backend, tmp_path):
    """Belt and braces: under strace, the refused atoms (fork, vfork, clone,
    execve, execveat, exit_group) cause no such system call; threads the
    engine starts are clone(CLONE_THREAD) / clone3 with CLONE_THREAD."""
    code = r"""
import sys
import compat
from rel_lib import ASYNC, Mem, RawRing, addr
m = Mem()
with compat.Engine(sys.argv[1]) as e:
    ring = RawRing(e, 8)
    for nr in (56, 57, 58, 59, 60, 231, 322, 435):
        for flags in (0, ASYNC):
            a = m.atoms(1)[0]
            m.set(a, nr, (0, 0, 0, 0, 0, 0), flags=flags)
            if e.exec(addr(a)) == 0:
                e.wait(1, timeout=5); ring.reap()
    ring.unregister()
print("done")
"""
    log = tmp_path / "strace.log"
    env = child_env(backend)
    p = subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e",
                        "trace=fork,vfork,clone,clone3,execve,execveat,exit_group",
                        __import__("sys").executable, "-c", code, backend],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "done" in p.stdout, describe(p)
    lines = log.read_text().splitlines()
    calls = [re.search(r"\b(fork|vfork|clone3?|execveat|execve|exit_group)\(", ln) for ln in lines]
    names = [c.group(1) for c in calls if c]
    assert names.count("execve") == 1 and names.count("exit_group") == 1, lines
    assert "fork" not in names and "vfork" not in names and "execveat" not in names, lines
    for ln in lines:
        if re.search(r"\bclone3?\(", ln):
            assert "CLONE_THREAD" in ln, ln


def test_unguarded_segfault_still_kills():
    """The guard only catches faults in its own accesses: a program's own
    wild access still dies with SIGSEGV (after syslets faulted safely)."""
    code = r"""
import ctypes, compat, json
from rel_lib import Mem, RawRing, addr
m = Mem()
e = compat.Engine()
ring = RawRing(e, 8)
a = m.atoms(1)[0]; r = m.cell(0)
a.nr = 0; a.ret_ptr = addr(r); a.arg_ptr[0] = 0xFFFF800000000000     # guarded: EFAULT
print(json.dumps({"efault": e.exec(addr(a)) == addr(a) and r.value == -14}), flush=True)
ctypes.string_at(16, 8)                                             # not guarded
print("survived?!", flush=True)
"""
    p = run_py(code, env={"PYTHONFAULTHANDLER": ""})
    assert last_json(p.stdout) == {"efault": True}
    assert p.returncode == -signal.SIGSEGV and "survived" not in p.stdout, describe(p)


C_OWN_HANDLER = r"""
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <syslet.h>

static sigjmp_buf jb;
static volatile int mine, expecting;
static struct sigaction prev;
static void on_segv(int s, siginfo_t *si, void *uc)
{
    if (expecting) {                        /* the program's own fault */
        mine++;
        siglongjmp(jb, 1);
    }
    /* not ours: chain to the handler that was there before (a late handler
     * must do this for libsyslet's guarded accesses to keep working) */
    if (prev.sa_flags & SA_SIGINFO)
        prev.sa_sigaction(s, si, uc);
    else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN)
        prev.sa_handler(s);
    else
        signal(s, SIG_DFL);
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, &prev);
}

int main(int argc, char **argv)
{
    int late = argc > 1 && !strcmp(argv[1], "late");
    if (!late)
        install();                          /* the program's handler first */
    static struct syslet_uatom *ring[4];
    struct async_head_user ahu = {ring, sizeof ring, -1UL};
    if (async_register(&ahu, sizeof ahu)) return 2;
    if (late)
        install();                          /* after libsyslet's: chains to it */
    void *hole = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct syslet_uatom a;
    long ret = 0;
    memset(&a, 0, sizeof a);
    a.nr = __NR_read; a.ret_ptr = &ret;
    a.arg_ptr[0] = hole;                        /* a real fault, turned into -EFAULT */
    struct syslet_uatom *r = async_exec(&a);
    int guarded = r == &a && ret == -14 && mine == 0;
    expecting = 1;
    if (sigsetjmp(jb, 1) == 0) {
        volatile long *p = hole;
        (void)*p;                                /* the program's own fault */
    }
    expecting = 0;
    ret = 0;
    a.flags = SYSLET_ASYNC;                      /* the driver thread faults this time */
    r = async_exec(&a);
    async_wait(1);
    printf("guarded=%d own_handler_calls=%d guarded_again=%d\n", guarded, mine,
           r == NULL && ring[0] == &a && ret == -14);
    ring[0] = NULL;
    return async_unregister(&ahu, sizeof ahu) ? 3 : 0;
}
"""


@pytest.mark.parametrize("order", ["before", "late"])
def test_program_sigsegv_handler_keeps_working_c(backend, tmp_path, order):
    """The program's own SIGSEGV handler gets the program's own faults;
    libsyslet's guarded faults never reach it -- installed before the
    first async_register, or later if it chains to the previous handler
    (a late handler that does not chain would receive them: documented)."""
    exe = build_c(C_OWN_HANDLER, str(tmp_path), "ownsegv")
    p = run_exe(exe, order, backend=backend, timeout=30)
    assert p.returncode == 0, describe(p)
    assert "guarded=1 own_handler_calls=1 guarded_again=1" in p.stdout, describe(p)
