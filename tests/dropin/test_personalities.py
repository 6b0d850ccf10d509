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

EXPECTED = {5: HEADS.format(size=88), 6: HEADS.format(size=80), 7: V7}


@pytest.mark.parametrize("pers", [5, 6, 7], ids=["v5", "v6", "v7"])
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
