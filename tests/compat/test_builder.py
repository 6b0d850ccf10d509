"""The builder layer (Context / Chain / Atom / Var / Buffer) on every
executor: memory layout, argument kinds, results, exec_many, reap, close."""
import errno
import gc
import os
import time

import pytest

import compat
from compat import (ATOM_SIZE, NR, SYSLET_ASYNC, SYSLET_STOP_ON_NEGATIVE, SYSLET_SYNC, Atom, Buffer,
                    Context, Var)
from compat import _core
from syslet_testlib import SENTINEL, run_chain, wait_until


def words(addr, n):
    return [int.from_bytes(_core.peek(addr + 8 * i, 8), "little") for i in range(n)]


def test_atoms_are_contiguous_and_laid_out_as_v1(ctx):
    ch = ctx.chain()
    r = ctx.var()
    a0 = ch.pread64(3, ctx.buffer(8), 8, 0, ret=r, flags=SYSLET_STOP_ON_NEGATIVE)
    a1 = ch.getpid(ret=True)
    a2 = ch.write(1, b"xyz", 3)
    assert [a1.addr - a0.addr, a2.addr - a1.addr] == [ATOM_SIZE, ATOM_SIZE]
    w = words(a0.addr, 11)
    assert w[0] == SYSLET_STOP_ON_NEGATIVE and w[1] == NR["pread64"]
    assert w[2] == r.addr and w[3] == a1.addr
    assert all(w[4:8]) and w[8:11] == [0, 0, 0]        # 4 argument pointers, then NULLs
    assert words(w[4], 1) == [3] and words(w[6], 1) == [8] and words(w[7], 1) == [0]
    w2 = words(a2.addr, 11)
    assert w2[3] == 0 and w2[2] == 0                   # tail: next NULL, no ret_ptr
    assert _core.peek(words(w2[5], 1)[0], 4) == b"xyz\0"


def test_atom_properties(ctx):
    ch = ctx.chain()
    a = ch.getpid(ret=True)
    b = ch.getppid(link=False)
    assert a.nr == NR["getpid"] and a.flags == 0 and a.next is None
    a.flags = SYSLET_SYNC
    assert a.flags == SYSLET_SYNC
    a.next = b
    assert a.next is b and ctx.atom_at(b.addr) is b
    a.next = None
    assert a.next is None
    assert b.result is None and b.ret is None
    assert isinstance(a.ret, Var) and isinstance(a, Atom)


def test_argument_kinds(ctx, tmp_path):
    p = tmp_path / "k.txt"
    p.write_bytes(b"kinds!")
    buf = ctx.buffer(16)
    fd = ctx.var(SENTINEL)
    ch = ctx.chain()
    ch.open(str(p), os.O_RDONLY, ret=fd, flags=SYSLET_STOP_ON_NEGATIVE)      # str path
    rd = ch.read(fd, buf, 6, ret=True)                                        # Var, Buffer, int
    ch.close(fd)
    final, _ = run_chain(ctx, ch)
    assert final is ch.tail and rd.result == 6 and buf.read(6) == b"kinds!"
    ch2 = ctx.chain()
    ch2.open(bytes(p), os.O_RDONLY, ret=fd)                                   # bytes path
    ch2.close(fd, ret=True)
    final, _ = run_chain(ctx, ch2)
    assert final.result == 0


def test_atom_as_an_argument_passes_its_address(ctx):
    """umem_add on an atom's flags word: an Atom argument is its address."""
    ch = ctx.chain()
    target = ch.getpid(link=False)
    ch2 = ctx.chain()
    add = ch2.umem_add(target, SYSLET_SYNC, ret=True)
    final, _ = run_chain(ctx, ch2)
    assert final is add and target.flags == SYSLET_SYNC and add.result == SYSLET_SYNC


@pytest.mark.parametrize("bad", [1.5, None, object(), [1]])
def test_bad_argument_types(ctx, bad):
    with pytest.raises(TypeError):
        ctx.chain().write(1, bad, 1)


def test_too_many_arguments_and_unknown_flags(ctx):
    with pytest.raises(ValueError):
        ctx.chain().atom(NR["getpid"], 1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(ValueError):
        ctx.chain().getpid(flags=0x100)
    with pytest.raises(AttributeError):
        ctx.chain().no_such_syscall
    with pytest.raises(AttributeError):
        ctx.chain()._private


def test_var_and_buffer(ctx):
    v = ctx.var(-5)
    assert v.value == -5
    v.value = (1 << 64) - 2
    assert v.value == -2
    v.value = 7
    assert v.value == 7
    b = ctx.buffer(8)
    assert len(b) == 8 and b.read() == bytes(8)
    b.write(b"abc", 2)
    assert b.read() == b"\0\0abc\0\0\0" and b.read(3) == b"\0\0a"
    with pytest.raises(ValueError):
        b.write(b"123456789")
    assert isinstance(b, Buffer)
    big = ctx.buffer(1 << 17)           # larger than an arena block
    big.write(b"end", (1 << 17) - 3)
    assert big.read()[-3:] == b"end"


def test_ret_cells(ctx):
    ch = ctx.chain()
    shared = ctx.var(SENTINEL)
    a = ch.getpid(ret=shared)
    b = ch.getppid(ret=True)
    c = ch.getpid()
    final, _ = run_chain(ctx, ch)
    assert final is c
    assert a.ret is shared and a.result == os.getpid()
    assert b.result == os.getppid() and c.result is None


def test_exec_an_atom_directly(ctx):
    a = ctx.chain().getpid(ret=True)
    assert ctx.exec(a) is a and a.result == os.getpid()


def test_exec_many(ctx, executor, rfd, datafile, late_pipe):
    data = datafile[1]
    chains, bufs = [], []
    for i in range(5):
        ch = ctx.chain()
        b = ctx.buffer(64)
        bufs.append(b)
        ch.pread64(rfd, b, 64, 64 * i, ret=True)
        ch.getpid(ret=True)
        chains.append(ch)
    bad = ctx.chain()
    bad.getpid(flags=SYSLET_ASYNC | SYSLET_SYNC)
    blocking = ctx.chain()
    pb = ctx.buffer(4)
    blocking.read(late_pipe.r, pb, 2, ret=True)
    if executor == "reference":
        os.write(late_pipe.w, b"ok")
    out = ctx.exec_many(chains + [bad, blocking])
    if executor != "reference":
        os.write(late_pipe.w, b"ok")            # the pipe was empty until now
    for ch, r in zip(chains, out[:5]):
        assert r is ch.tail
    assert isinstance(out[5], OSError) and out[5].errno == errno.EINVAL
    if executor == "reference":
        assert out[6] is blocking.tail
    else:
        assert out[6] is None
        assert ctx.wait(1, timeout=5) == [blocking.tail]
    for i, b in enumerate(bufs):
        assert b.read() == data[64 * i:64 * (i + 1)]
    assert pb.read(2) == b"ok"


def test_exec_many_shares_one_enter_on_io_uring(uring_executor, rfd):
    with Context(backend="io_uring") as ctx:
        chains = []
        for i in range(6):
            ch = ctx.chain()
            ch.pread64(rfd, ctx.buffer(32), 32, 32 * i, ret=True)
            ch.pread64(rfd, ctx.buffer(32), 32, 32 * i + 1, ret=True)
            chains.append(ch)
        c0 = ctx.counters()
        out = ctx.exec_many(chains)
        c1 = ctx.counters()
        assert out == [ch.tail for ch in chains]
        assert c1["segments"] - c0["segments"] == 6
        assert c1["enters"] - c0["enters"] == 1


def test_reap_is_oldest_first_and_wraps(engine_executor):
    with Context(backend=engine_executor, ring_slots=3) as ctx:
        order = []
        for rnd in range(3):
            batch = []
            for i in range(3):
                ch = ctx.chain()
                batch.append(ch.getpid(flags=SYSLET_ASYNC))
                assert ctx.exec(ch) is None
                assert ctx.engine.wait(i + 1, timeout=5)       # published in order
            got = ctx.reap()
            assert got == batch
            order += got
        assert len(set(a.addr for a in order)) == 9
        assert ctx.reap() == []


def test_wait_timeout_returns_an_empty_list(ctx):
    assert ctx.wait(1, timeout=0.05) == []


def test_backend_selection():
    import uring_shim
    with Context() as c:
        assert c.backend == uring_shim.backend()
    with Context(backend="reference") as c:
        assert c.backend == "reference" and isinstance(c.engine, compat.Reference)
    with pytest.raises(ValueError):
        Context(backend="bogus")


def test_close_is_idempotent_and_results_stay_readable(executor):
    ctx = Context(backend=executor)
    a = ctx.chain().getpid(ret=True)
    ctx.exec(a)
    ctx.close()
    ctx.close()
    assert a.result == os.getpid()
    with pytest.raises(OSError) as ei:
        ctx.exec(a)
    assert ei.value.errno in (errno.EBADF, errno.EINVAL)


def test_close_without_cancel_drains_whole_chains(engine_executor, late_pipe):
    ctx = Context(backend=engine_executor)
    buf = ctx.buffer(4)
    cnt = ctx.var(0)
    ch = ctx.chain()
    ch.read(late_pipe.r, buf, 2, ret=True)
    for _ in range(5):
        ch.umem_add(cnt.addr, 1)
    assert ctx.exec(ch) is None  # the pipe is empty until now
    late_pipe.later(b"go", 0.15)
    ctx.close(cancel=False)
    assert buf.read(2) == b"go" and cnt.value == 5


def test_close_with_cancel_lets_the_running_atom_finish(engine_executor, late_pipe):
    """Default close: the blocked read completes (or is cancelled by the
    kernel), later atoms do not run; close returns in bounded time."""
    ctx = Context(backend=engine_executor)
    buf = ctx.buffer(4)
    cnt = ctx.var(0)
    ch = ctx.chain()
    rd = ch.read(late_pipe.r, buf, 2, ret=ctx.var(SENTINEL))
    nxt = ch.umem_add(cnt.addr, 1, ret=ctx.var(SENTINEL))
    assert ctx.exec(ch) is None  # the pipe is empty until now
    late_pipe.later(b"go", 0.15)
    ctx.close()
    assert cnt.value in (0, 1)
    if cnt.value == 0:
        assert nxt.result in (SENTINEL, -errno.ECANCELED)
    assert rd.result in (2, SENTINEL, -errno.ECANCELED, -errno.EINTR)


def test_unclosed_engine_warns(engine_executor):
    with pytest.warns(ResourceWarning):
        e = compat.Engine(engine_executor)
        del e
        gc.collect()


def test_runaway_loop_does_not_starve_the_context(engine_executor):
    """An async loop without a budget keeps running on the driver, yet the
    context stays responsive to other calls, and close() stops it."""
    ctx = Context(backend=engine_executor, ring_slots=4)
    try:
        spins = ctx.var(0)
        ch = ctx.chain()
        a = ch.umem_add(spins.addr, 1, ret=True, flags=SYSLET_ASYNC)
        ch.loop_to(a)
        assert ctx.exec(ch) is None
        assert wait_until(lambda: spins.value > 1000)
        t0 = time.monotonic()
        for _ in range(20):
            g = ctx.chain().getpid(ret=True)
            assert ctx.exec(g) is g
            ctx.counters()
        assert time.monotonic() - t0 < 5
    finally:
        ctx.close()
    v = spins.value
    assert a.result == -errno.ECANCELED
    time.sleep(0.02)
    assert spins.value == v             # stopped for good


def test_a_batch_runs_the_same_chains_again_and_again(ctx, executor, rfd, datafile):
    """Context.batch: per syslet its final atom, None when it went async, an
    OSError when it was refused; edits between runs (argument cells, flags)
    take effect; the list returned is the caller's own."""
    data = datafile[1]
    fdv = ctx.var(rfd)
    chains, bufs = [], []
    for i in range(4):
        ch = ctx.chain()
        buf = ctx.buffer(16)
        ch.pread64(fdv, buf, 16, 16 * i, ret=True, flags=SYSLET_STOP_ON_NEGATIVE)
        ch.getpid(ret=True)
        chains.append(ch)
        bufs.append(buf)
    b = ctx.batch(chains)
    assert len(b) == 4
    tails = [ch.atoms[-1] for ch in chains]
    for _ in range(3):
        out = b.run()
        assert len(out) == 4 and all(o is t for o, t in zip(out, tails))
        assert [buf.read() for buf in bufs] == [data[16 * i:16 * i + 16] for i in range(4)]
        assert [t.result for t in tails] == [os.getpid()] * 4
        out[0] = "mine"                     # the caller's list: no effect on the next run
    fdv.value = -1                          # every pread64 now fails and stops its syslet
    heads = [ch.atoms[0] for ch in chains]
    out = b.run()
    assert all(o is h for o, h in zip(out, heads))
    assert [h.result for h in heads] == [-errno.EBADF] * 4
    heads[2].flags = SYSLET_ASYNC | SYSLET_SYNC   # refused: nothing of it runs
    out = b.run()
    assert isinstance(out[2], OSError) and out[2].errno == errno.EINVAL
    assert [out[i] is heads[i] for i in (0, 1, 3)] == [True] * 3
    heads[2].flags = SYSLET_STOP_ON_NEGATIVE
    fdv.value = rfd
    assert all(o is t for o, t in zip(b.run(), tails))
    if executor != "reference":             # the reference interpreter never goes async
        r, w = os.pipe()
        try:
            pv = ctx.var(r)
            pch = ctx.chain()
            pch.read(pv, ctx.buffer(4), 4, ret=True)
            pb = ctx.batch([chains[0], pch])
            out = pb.run()
            assert out[0] is tails[0] and out[1] is None
            os.write(w, b"late")
            assert ctx.wait(1, timeout=5) == [pch.tail]
        finally:
            os.close(r)
            os.close(w)
    assert len(ctx.batch([])) == 0 and ctx.batch([]).run() == []
