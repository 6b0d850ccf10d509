"""libsyslet's personalities v5, v6 and v7 from C (LATER_ABIS.md sections
1, 5 and 6): the calls' conventions and errno, signals in the waits,
async_thread, SYSLET_COMPAT_ABI and the 2007 numbers, and legacy programs
built unmodified with their own 2007 headers.  C sources: tests/dropin/c/."""
import os

import pytest

from dropin_lib import HERE, run

C = os.path.join(HERE, "c")


def src(name):
    return os.path.join(C, name)


HEADS = """\
atom {size} bytes
exec getpid: final atom, result is pid: 1, errno kept: 1, ring empty: 1
exec ASYNC: 0, errno kept: 1
wait 1: 0, errno kept: 1, ring[0] is the atom: 1, kernel_ring_idx 1, result is ppid: 1
wait 0: 0, errno kept: 1
umem_add: 42, word 42, errno kept: 1
exec bad head: -1 EFAULT
exec no new_thread_stack: -1 EINVAL
exec ring 12 bytes: -1 EINVAL
exec bad atom: -1 EFAULT
exec ASYNC|SYNC: -1 EINVAL
wait user_ring_idx 4: -1 EINVAL
wait min 5: -1 EINVAL
wait bad head: -1 EFAULT
umem_add bad pointer: -1 EFAULT
async_thread bad head: -1 EFAULT
"""

V7 = """\
indirect getpid: result is pid: 1, errno kept: 1, no entry: 1
indirect read of an empty pipe: -1, errno ESYSLETPENDING
ring_wait: 0, errno kept: 1, kernel_head 1, status 3, caller_data 77
ring_wait other index: 0, errno kept: 1
indirect lseek 3 GiB: -1073741824, errno kept: 1
indirect eventfd2 O_CLOEXEC|O_NONBLOCK: cloexec 1, nonblock 1, errno kept: 1
indirect flags 1: -1 EINVAL
indirect bad regs: -1 EFAULT
indirect paramslen 33: -1 EINVAL
indirect plain getpid: -1 EINVAL
indirect frame.ip 0: -1 EINVAL
indirect elements 3: -1 EINVAL
indirect nr 1004: -1 EINVAL
ring_wait bad ring: -1 EFAULT
"""

V1 = """\
register: 0, errno kept: 1
exec getpid: final atom, errno kept: 1
exec ASYNC: 0, errno kept: 1
wait 1: 0, errno kept: 1, ring[0] is the atom: 1
umem_add: 42, errno kept: 1
unregister: 0, errno kept: 1
exec after unregister: -1 EINVAL
"""

EXPECTED = {1: V1, 5: HEADS.format(size=88), 6: HEADS.format(size=80), 7: V7}


@pytest.mark.parametrize("pers", [1, 5, 6, 7], ids=["v1", "v5", "v6", "v7"])
@pytest.mark.parametrize("how", ["syscall-preload", "syscall-linked", "functions-linked"])
def test_conventions_and_errno(builder, backend, pers, how):
    """-1/errno for failures; errno exactly as it was after every call that
    succeeds (1234 set before each)."""
    linked = how.endswith("linked")
    extra = [f"-DPERS={pers}"] + (["-DUSE_FUNCTIONS"] if how.startswith("functions") else [])
    exe = builder.build(src("personality.c"), linked=linked, extra=extra)
    r = run(exe, backend=backend, preload=not linked)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == EXPECTED[pers]


# ---- signals in the waits (LATER_ABIS.md 5) ----------------------------------------

@pytest.mark.parametrize("pers", [1, 5, 6, 7], ids=["v1", "v5", "v6", "v7"])
def test_an_sa_restart_handler_restarts_the_wait(builder, backend, pers):
    """SIGALRM with SA_RESTART every 2 ms while async_wait (v1, v5, v6) or
    syslet_ring_wait (v7) waits for a completion that a helper thread causes
    only after 10 signals were handled: the wait returns 0 (the 2007
    -ERESTARTSYS)."""
    exe = builder.build(src("restart.c"), linked=False, extra=[f"-DPERS={pers}"])
    r = run(exe, "restart", backend=backend, preload=True)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == ("wait, SA_RESTART handler: 0 -, 10 signals handled before the completion: 1, "
                        "entry: 1\n")


@pytest.mark.parametrize("pers", [1, 5, 6, 7], ids=["v1", "v5", "v6", "v7"])
def test_a_handler_without_sa_restart_ends_the_wait_with_eintr(builder, backend, pers):
    exe = builder.build(src("restart.c"), linked=False, extra=[f"-DPERS={pers}"])
    r = run(exe, "intr", backend=backend, preload=True)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == ("wait, handler without SA_RESTART: -1 EINTR, handled: 1\n"
                        "wait after the completion: 0 -, entry: 1\n")


@pytest.mark.parametrize("pers", [5, 6], ids=["v5", "v6"])
def test_async_thread_parks_until_a_signal(builder, backend, pers):
    exe = builder.build(src("restart.c"), linked=False, extra=[f"-DPERS={pers}"])
    r = run(exe, "thread", backend=backend, preload=True)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "async_thread: -1 EINTR\nasync_thread (SA_RESTART): -1 EINTR\n"


# ---- SYSLET_COMPAT_ABI: which 2007 numbers are syslet calls --------------------------

PROBES = [(280, "v5 async_exec"), (281, "v5 async_wait"), (282, "v5 umem_add"), (283, "v5 async_thread"),
          (286, "v6 async_exec"), (287, "v6 async_wait"), (288, "v6 umem_add"), (289, "v6 async_thread"),
          (286, "v7 indirect"), (287, "v7 syslet_ring_wait")]


@pytest.mark.parametrize("linked", [False, True], ids=["preload", "linked"])
@pytest.mark.parametrize("abi", [None, "v1", "v5", "v6", "v7"])
def test_historical_numbers_are_served_only_under_the_matching_abi(builder, backend, abi, linked):
    """Unset or v1: 280-289 all reach the kernel as today's calls (280 is
    utimensat, ...); v5: 280-283 are v5's calls; v6: 286-289 v6's; v7: 286
    and 287 are indirect and syslet_ring_wait (288, 289 stay accept4 and
    signalfd4).  The project's numbers are served under every value."""
    exe = builder.build(src("abi_env.c"), linked=linked)
    r = run(exe, backend=backend, preload=not linked, env={"SYSLET_COMPAT_ABI": abi} if abi else None)
    assert (r.returncode, r.stderr) == (0, "")
    want = "".join(f"{nr} {what}: {int(abi is not None and what.startswith(abi))}\n" for nr, what in PROBES)
    want += "1012 umem_add: 1\n1030 indirect: 1\n1020 async_exec: 1\n"
    assert r.stdout == want


HELLO = """\
#include <stdio.h>
int main(void) { printf("main ran\\n"); return 0; }
"""


@pytest.mark.parametrize("linked", [False, True], ids=["preload", "linked"])
@pytest.mark.parametrize("value", ["v2", "v8", "5", "V5", "v5 ", " v5", "", "v5,v6", "v1v5", "none"])
def test_an_invalid_syslet_compat_abi_stops_the_program_at_load(builder, backend, value, linked):
    """Never a guess: one line on stderr naming the valid values, a non-zero
    exit, and main() never runs."""
    exe = builder.build(HELLO, linked=linked, name="hello")
    if linked:
        exe = builder.build(HELLO.replace("int main", "void umem_add(void);\nvoid *keep = umem_add;\nint main"),
                            linked=True, name="hello_linked")
    r = run(exe, backend=backend, preload=not linked, env={"SYSLET_COMPAT_ABI": value})
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n"), r.stderr
    assert "SYSLET_COMPAT_ABI" in lines[0]
    for v in ("v1", "v5", "v6", "v7"):
        assert v in lines[0]


@pytest.mark.parametrize("value", ["v1", "v5", "v6", "v7"])
def test_the_valid_values_start_the_program(builder, backend, value):
    exe = builder.build(HELLO, linked=False, name="hello")
    r = run(exe, backend=backend, preload=True, env={"SYSLET_COMPAT_ABI": value})
    assert (r.returncode, r.stdout, r.stderr) == (0, "main ran\n", "")


# ---- legacy programs, built unmodified with their own 2007 headers ------------------------

LEGACY = {
    "v5": ("fio_v5.c", "batches 16 of 8 pread64 atoms: verified 128, errors 0\n"
                       "pipe batch: async 1, data 0123456789abcdef, errors 0\n"
                       "umem_add: 42\n"
                       "new_thread_stack kept: 1 (stacks allocated 2)\n"),
    "v7": ("fio_v7.c", "16 x 6 pread64 through indirect: verified 96, errors 0\n"
                       "pipe reads: pending 3, the three pieces: 1, errors 0 0 0\n"
                       "short read: resid 2, error (from errno) 132\n"),
}
LEGACY["v6"] = ("fio_v6.c", LEGACY["v5"][1])


@pytest.mark.parametrize("abi", ["v5", "v6", "v7"])
def test_a_legacy_program_runs_under_ld_preload_with_its_abi(builder, backend, tmp_path, abi):
    """fio's syslet-rw engine of that kernel in miniature, with the 2007
    x86_64 numbers compiled in (its own #define __NR_async_exec 280 ...)."""
    source, want = LEGACY[abi]
    exe = builder.build(src(os.path.join("legacy", source)), linked=False)
    r = run(exe, tmp_path / "data", backend=backend, preload=True, env={"SYSLET_COMPAT_ABI": abi})
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == want


@pytest.mark.parametrize("abi", ["v5", "v6", "v7"])
@pytest.mark.parametrize("env", [None, "v1", "other"])
def test_a_legacy_program_without_its_abi_only_sees_todays_calls(builder, backend, tmp_path, abi, env):
    """Without SYSLET_COMPAT_ABI (or with another personality) its numbers
    reach the kernel as today's calls: the start-up probe fails cleanly."""
    source, _ = LEGACY[abi]
    exe = builder.build(src(os.path.join("legacy", source)), linked=False)
    value = {"v5": "v7", "v6": "v5", "v7": "v6"}[abi] if env == "other" else env
    r = run(exe, tmp_path / "data", backend=backend, preload=True,
            env={"SYSLET_COMPAT_ABI": value} if value else None)
    assert (r.returncode, r.stdout, r.stderr) == (1, "fio: syslets do not appear to work\n", "")
