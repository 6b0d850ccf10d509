"""asyncio: ``Context.fileno()`` and ``Context.exec_async`` (docs/asyncio.md).

Nothing here is timed.  Each test checks the final atom it gets back, the
result cells and the bytes read, and the engine's counters of the path a
syslet took (``syslets_sync`` / ``syslets_async``).  "The loop did not
block" is shown by other coroutines of the same loop making progress while
a syslet waits for data that only they provide.  A hang fails through
``asyncio.wait_for`` (and pytest-timeout behind it), never by waiting
forever.

Engine tests run on both backends (``engine_executor``); a few also on the
``reference`` executor."""
import asyncio
import ctypes
import errno
import io
import os
import select
import selectors

import pytest

import compat
from compat import SYSLET_NO_COMPLETE, SYSLET_STOP_ON_NEGATIVE, SYSLET_SYNC

T = 20.0        # seconds before a wait counts as a hang


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, T))


@pytest.fixture
def pipes():
    made = []

    def make(n=1):
        ps = [os.pipe() for _ in range(n)]
        made.extend(ps)
        return ps
    yield make
    for r, w in made:
        os.close(r)
        os.close(w)


def read_chain(ctx, fd, size=16, flags=0):
    buf, n = ctx.buffer(size), ctx.var(-1)
    ch = ctx.chain()
    ch.read(fd, buf, size, ret=n, flags=flags)
    return ch, buf, n


# ---- fileno ---------------------------------------------------------------------

def test_fileno_is_an_eventfd_readable_after_a_publish(engine_executor, pipes):
    (r, w), = pipes()
    with compat.Context(backend=engine_executor) as ctx:
        fd = ctx.fileno()
        assert ctx.fileno() == fd
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
        # readable once made (entries from before it would be in the ring)
        assert select.select([fd], [], [], 0)[0] == [fd]
        assert ctx.reap() == []
        assert select.select([fd], [], [], 0)[0] == []
        ch, buf, n = read_chain(ctx, r)
        assert ctx.exec(ch) is None                     # went async: the pipe is empty
        assert select.select([fd], [], [], 0)[0] == []  # nothing published yet
        os.write(w, b"ping")
        assert select.select([fd], [], [], T)[0] == [fd]
        assert ctx.reap() == [ch.tail]
        assert (n.value, buf.read(4)) == (4, b"ping")
        # reap() emptied it
        assert select.select([fd], [], [], 0)[0] == []


def test_fileno_drives_a_selectors_loop(engine_executor, pipes):
    """Any event loop: a plain selectors loop waits on fileno() and reaps."""
    ps = pipes(8)
    with compat.Context(backend=engine_executor, ring_slots=4) as ctx:
        chains = [read_chain(ctx, r) for r, _ in ps]
        for ch, _, _ in chains:
            assert ctx.exec(ch) is None
        for i, (_, w) in enumerate(ps):
            os.write(w, b"msg%d" % i)
        sel = selectors.DefaultSelector()
        sel.register(ctx.fileno(), selectors.EVENT_READ)
        got = []
        while len(got) < len(chains):
            assert sel.select(T), "no completion"
            got += ctx.reap()
        sel.close()
        assert sorted(a.addr for a in got) == sorted(ch.tail.addr for ch, _, _ in chains)
        for i, (_, buf, n) in enumerate(chains):
            assert buf.read(n.value) == b"msg%d" % i


def test_fileno_closed_by_the_program_is_left_alone(engine_executor, pipes):
    """The program closes the eventfd and the number goes to another file:
    the engine writes, reads and closes it no more; fileno() makes another."""
    (r, w), (pr, pw) = pipes(2)
    with compat.Context(backend=engine_executor) as ctx:
        fd = ctx.fileno()
        os.dup2(pw, fd)                         # the number is a pipe's now
        ch, buf, n = read_chain(ctx, r)
        assert ctx.exec(ch) is None
        os.write(w, b"x")
        while n.value < 0:
            select.select([], [], [], 0.001)
        got = []
        while not got:                          # reap() reads no byte of that pipe
            got = ctx.reap()
        assert got == [ch.tail]
        assert select.select([pr], [], [], 0.05)[0] == []   # nothing was written into it
        new = ctx.fileno()
        assert os.readlink(f"/proc/self/fd/{new}") == "anon_inode:[eventfd]"
        os.write(w, b"y")
        assert ctx.exec(ch) in (None, ch.tail)
    os.close(fd)                                # the pipe's copy: the engine left it open
    assert select.select([pr], [], [], 0)[0] == []


def test_fileno_reference_has_none():
    with compat.Context(backend="reference") as ctx:
        with pytest.raises(io.UnsupportedOperation):
            ctx.fileno()


def test_fileno_after_close_is_ebadf():
    ctx = compat.Context()
    ctx.close()
    with pytest.raises(OSError) as e:
        ctx.fileno()
    assert e.value.errno == errno.EBADF


# ---- exec_async -------------------------------------------------------------------

def test_exec_async_completes_at_once(executor, pipes):
    (r, w), = pipes()
    os.write(w, b"ready")
    with compat.Context(backend=executor) as ctx:
        ch, buf, n = read_chain(ctx, r)
        before = ctx.counters()
        final = run(ctx.exec_async(ch))
        after = ctx.counters()
        assert final is ch.tail
        assert (n.value, buf.read(5)) == (5, b"ready")
        assert after["syslets_sync"] - before["syslets_sync"] == 1
        assert after["syslets_async"] == before["syslets_async"]


def test_exec_async_went_async_and_the_loop_ran_on(engine_executor, pipes):
    (r, w), = pipes()
    with compat.Context(backend=engine_executor) as ctx:
        ch, buf, n = read_chain(ctx, r)

        async def main():
            task = asyncio.ensure_future(ctx.exec_async(ch))
            for _ in range(5):          # the loop is free while the read waits
                await asyncio.sleep(0.001)
            assert not task.done()
            assert ctx.counters()["syslets_async"] == 1
            os.write(w, b"late")        # only this coroutine can provide the data
            return await task
        assert run(main()) is ch.tail
        assert (n.value, buf.read(4)) == (4, b"late")
        c = ctx.counters()
        assert (c["syslets_async"], c["published"]) == (1, 1)


def test_exec_async_returns_the_atom_that_stopped(engine_executor, pipes):
    (r, w), = pipes()
    with compat.Context(backend=engine_executor) as ctx:
        buf, n, m = ctx.buffer(8), ctx.var(), ctx.var()
        ch = ctx.chain()
        first = ch.read(r, buf, 8, ret=n, flags=SYSLET_STOP_ON_NEGATIVE)
        ch.read(-1, buf, 8, ret=m, flags=SYSLET_STOP_ON_NEGATIVE)     # EBADF: stops here
        ch.getpid(ret=True)

        async def main():
            task = asyncio.ensure_future(ctx.exec_async(ch))
            await asyncio.sleep(0.01)
            os.write(w, b"x")
            return await task
        assert run(main()) is ch.atoms[1]
        assert first.result == 1 and m.value == -errno.EBADF
        assert ch.tail.result == 0     # never ran


def test_many_chains_through_a_small_ring(engine_executor, pipes):
    """More chains in flight than ring slots: finished syslets wait in the
    engine for a slot while the loop reaps, and every call gets its atom."""
    ps = pipes(1500)
    with compat.Context(backend=engine_executor, ring_slots=8) as ctx:
        chains = [read_chain(ctx, r, 8) for r, _ in ps]

        async def main():
            tasks = [asyncio.ensure_future(ctx.exec_async(ch)) for ch, _, _ in chains]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert ctx.counters()["syslets_async"] == len(ps)
            for i, (_, w) in enumerate(ps):
                os.write(w, i.to_bytes(8, "little"))
            return await asyncio.gather(*tasks)
        res = run(main())
        for i, ((ch, buf, n), a) in enumerate(zip(chains, res)):
            assert a is ch.tail
            assert (n.value, buf.read(8)) == (8, i.to_bytes(8, "little"))
        c = ctx.counters()
        assert c["published"] == len(ps)
        assert ctx.engine.inflight() == 0 and ctx.reap() == []


def test_sync_chain_runs_beside_the_loop(executor, pipes):
    """SYSLET_SYNC makes the caller wait: exec_async gives it an executor
    thread and the loop keeps running."""
    (r, w), = pipes()
    with compat.Context(backend=executor) as ctx:
        ch, buf, n = read_chain(ctx, r, flags=SYSLET_SYNC)
        ticks = []

        async def main():
            task = asyncio.ensure_future(ctx.exec_async(ch))
            for i in range(5):
                await asyncio.sleep(0.001)
                ticks.append(i)
            assert not task.done()
            os.write(w, b"sync")
            return await task
        assert run(main()) is ch.tail
        assert ticks == list(range(5))
        assert (n.value, buf.read(4)) == (4, b"sync")


@pytest.mark.parametrize("max_threads", [0, 2])
def test_max_threads_does_not_block_the_loop(engine_executor, pipes, max_threads):
    """max_threads=0 (every syslet synchronous: run in an executor thread)
    and a bounded max_nr_threads (only the driver submits)."""
    (r, w), = pipes()
    with compat.Context(backend=engine_executor, max_threads=max_threads) as ctx:
        ch, buf, n = read_chain(ctx, r)

        async def main():
            task = asyncio.ensure_future(ctx.exec_async(ch))
            for _ in range(5):
                await asyncio.sleep(0.001)
            assert not task.done()
            os.write(w, b"bounded")
            return await task
        assert run(main()) is ch.tail
        assert (n.value, buf.read(7)) == (7, b"bounded")
        c = ctx.counters()
        assert c["syslets_async"] == (0 if max_threads == 0 else 1)


def test_a_chain_cannot_run_twice_at_once(engine_executor, pipes):
    (r, w), = pipes()
    with compat.Context(backend=engine_executor) as ctx:
        ch, buf, n = read_chain(ctx, r)

        async def main():
            task = asyncio.ensure_future(ctx.exec_async(ch))
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError):
                await ctx.exec_async(ch)
            with pytest.raises(RuntimeError):   # an Atom of it, too
                await ctx.exec_async(ch.head)
            os.write(w, b"once")
            await task
            os.write(w, b"again")               # released: it may run again
            return await ctx.exec_async(ch)
        assert run(main()) is ch.tail
        assert buf.read(5) == b"again"


def test_cancelled_call_leaves_the_syslet_running(engine_executor, pipes):
    """Cancelling the await does not stop the syslet: it completes, its
    entry is dropped when reaped, and its atoms are claimed until then."""
    (r, w), = pipes()
    with compat.Context(backend=engine_executor) as ctx:
        ch, buf, n = read_chain(ctx, r)

        async def main():
            task = asyncio.ensure_future(ctx.exec_async(ch))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(RuntimeError):   # still claimed: it still runs
                await ctx.exec_async(ch)
            os.write(w, b"dropped")
            while n.value < 0:                  # the syslet finishes on its own
                await asyncio.sleep(0.001)
            assert buf.read(7) == b"dropped"
            asyncio.get_running_loop().call_later(0.01, os.write, w, b"second")
            while True:                         # released once its entry is reaped
                try:
                    return await ctx.exec_async(ch)
                except RuntimeError:
                    await asyncio.sleep(0.001)
        assert run(main()) is ch.tail
        assert buf.read(6) == b"second"
        assert ctx.reap() == []                 # the dropped entry is gone for good


def test_cancelled_before_it_started_never_runs(engine_executor, pipes):
    (r, w), = pipes()
    os.write(w, b"untouched")
    with compat.Context(backend=engine_executor) as ctx:
        ch, buf, n = read_chain(ctx, r)

        async def main():
            task = asyncio.ensure_future(ctx.exec_async(ch))
            await asyncio.sleep(0)      # the call is queued for this turn's batch
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await ctx.exec_async(ch)     # not claimed any more
        before = ctx.counters()
        assert run(main()) is ch.tail
        after = ctx.counters()
        assert after["syslets_sync"] - before["syslets_sync"] == 1     # only the second
        assert buf.read(9) == b"untouched"


def test_errors_are_raised(engine_executor):
    with compat.Context(backend=engine_executor) as ctx:
        ch = ctx.chain()
        ch.getpid(ret=True)
        flags = ctypes.c_uint64.from_address(ch.head.addr)     # as C code would
        flags.value = 0x100                      # an unknown flag bit
        with pytest.raises(OSError) as e:
            run(ctx.exec_async(ch))
        assert e.value.errno == errno.EINVAL
        ch.head.flags = compat.SYSLET_ASYNC | SYSLET_SYNC   # refused (in the thread)
        with pytest.raises(OSError) as e:
            run(ctx.exec_async(ch))
        assert e.value.errno == errno.EINVAL
        ch.head.flags = 0
        assert run(ctx.exec_async(ch)) is ch.head       # the claims were released
        assert ch.head.result == os.getpid()


def test_no_complete_is_refused(engine_executor):
    with compat.Context(backend=engine_executor) as ctx:
        ch = ctx.chain()
        ch.getpid(ret=True)
        ch.getppid(ret=True, flags=SYSLET_NO_COMPLETE)
        with pytest.raises(ValueError):
            run(ctx.exec_async(ch))
        assert ch.head.result is not None and ch.head.result == 0      # nothing ran


def test_plain_exec_entries_stay_for_reap(engine_executor, pipes):
    """Entries that end no exec_async call (a plain exec that went async)
    are kept for Context.reap()."""
    (r1, w1), (r2, w2) = pipes(2)
    with compat.Context(backend=engine_executor) as ctx:
        plain, pbuf, pn = read_chain(ctx, r1)
        ch, buf, n = read_chain(ctx, r2)

        async def main():
            assert ctx.exec(plain) is None
            task = asyncio.ensure_future(ctx.exec_async(ch))
            await asyncio.sleep(0.01)
            os.write(w1, b"plain")
            while pn.value < 0:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.01)
            os.write(w2, b"async")
            return await task
        assert run(main()) is ch.tail
        # the loop has (most likely) taken it out of the ring for nobody:
        # wait() and reap() still return it
        assert ctx.wait(1, timeout=T) == [plain.tail] and pbuf.read(5) == b"plain"


def test_one_context_many_loops(engine_executor, pipes):
    (r, w), = pipes()
    with compat.Context(backend=engine_executor) as ctx:
        ch, buf, n = read_chain(ctx, r)
        for i in range(3):
            async def main():
                task = asyncio.ensure_future(ctx.exec_async(ch))
                await asyncio.sleep(0.005)
                os.write(w, b"loop%d" % i)
                return await task
            assert run(main()) is ch.tail
            assert buf.read(5) == b"loop%d" % i


def test_close_ends_waiting_calls(engine_executor, pipes):
    (r, w), = pipes()
    ctx = compat.Context(backend=engine_executor)
    ch, buf, n = read_chain(ctx, r)

    async def main():
        task = asyncio.ensure_future(ctx.exec_async(ch))
        await asyncio.sleep(0.01)
        ctx.close()             # cancels the read: the call ends, with its atom or EBADF
        try:
            return await task
        except OSError as e:
            return e
    res = run(main())
    if isinstance(res, OSError):
        assert res.errno == errno.EBADF
    else:
        assert res is ch.tail and n.value < 0
    with pytest.raises(OSError) as e:
        run(ctx.exec_async(ch))
    assert e.value.errno == errno.EBADF


def test_what_exec_refuses_exec_async_refuses(engine_executor):
    with compat.Context(backend=engine_executor) as ctx, \
            compat.Context(backend=engine_executor) as other:
        ch = other.chain()
        ch.getpid(ret=True)
        with pytest.raises(ValueError):         # another Context's chain
            run(ctx.exec_async(ch))
        with pytest.raises(ValueError):         # an empty chain
            run(ctx.exec_async(ctx.chain()))
        with pytest.raises(TypeError):
            run(ctx.exec_async(12345))
        assert ch.head.result == 0 and ctx.counters()["syslets_sync"] == 0


def test_a_loop_closed_under_a_call(engine_executor, pipes):
    """A loop closed while a call waits (its task neither finished nor
    cancelled): the entry is dropped, and the next loop is served."""
    (r, w), = pipes()
    with compat.Context(backend=engine_executor) as ctx:
        ch, buf, n = read_chain(ctx, r)
        other, obuf, on = read_chain(ctx, r)
        loop = asyncio.new_event_loop()
        task = loop.create_task(ctx.exec_async(ch))
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not task.done()
        loop.close()                    # the task is left pending
        os.write(w, b"first")
        while n.value < 0:              # the syslet completes on its own
            select.select([], [], [], 0.001)

        async def main():
            asyncio.get_running_loop().call_later(0.01, os.write, w, b"second")
            return await ctx.exec_async(other)
        assert run(main()) is other.tail
        assert obuf.read(6) == b"second" and buf.read(5) == b"first"


# ---- the call object: a future that is also a coroutine --------------------------

def test_a_call_in_a_loop_is_a_future_gather_takes_as_it_is(engine_executor, pipes):
    """Called with a loop running, exec_async gives a future (no task and
    no coroutine frame per call: gather uses it as it is) that asyncio also
    takes as a coroutine."""
    ps = pipes(3)
    with compat.Context(backend=engine_executor) as ctx:
        cells = [read_chain(ctx, r) for r, _ in ps]

        async def main():
            calls = [ctx.exec_async(ch) for ch, _, _ in cells]
            assert all(asyncio.isfuture(c) and asyncio.iscoroutine(c) for c in calls)
            tasks = len(asyncio.all_tasks())
            both = asyncio.gather(*calls)
            assert len(asyncio.all_tasks()) == tasks       # gather made no task
            await asyncio.sleep(0.01)
            for i, (_, w) in enumerate(ps):
                os.write(w, b"call%d" % i)
            return await both
        finals = run(main())
        for i, ((ch, buf, n), final) in enumerate(zip(cells, finals)):
            assert final is ch.tail and buf.read(n.value) == b"call%d" % i
        assert ctx.counters()["syslets_async"] == 3


def test_a_call_runs_as_a_task(engine_executor, pipes):
    """create_task and TaskGroup take the call as a coroutine; cancelling
    such a task before the call's turn keeps the chain from running."""
    (r, w), (r2, w2) = pipes(2)
    os.write(w2, b"untouched")
    with compat.Context(backend=engine_executor) as ctx:
        ch, buf, n = read_chain(ctx, r)
        other, obuf, on = read_chain(ctx, r2)

        async def main():
            task = asyncio.get_running_loop().create_task(ctx.exec_async(ch))
            never = asyncio.get_running_loop().create_task(ctx.exec_async(other))
            never.cancel()
            await asyncio.sleep(0.01)
            assert not task.done()
            os.write(w, b"task")
            final = await task
            with pytest.raises(asyncio.CancelledError):
                await never
            if hasattr(asyncio, "TaskGroup"):       # 3.11
                async with asyncio.TaskGroup() as tg:
                    t = tg.create_task(ctx.exec_async(ch))
                    asyncio.get_running_loop().call_later(0.01, os.write, w, b"group")
                assert t.result() is ch.tail and buf.read(5) == b"group"
            return final
        before = ctx.counters()["syslets_sync"] + ctx.counters()["syslets_async"]
        assert run(main()) is ch.tail
        assert n.value == 5
        ran = ctx.counters()["syslets_sync"] + ctx.counters()["syslets_async"] - before
        assert ran == (2 if hasattr(asyncio, "TaskGroup") else 1)   # never `other`
        assert on.value == -1 and obuf.read(9) == bytes(9)


def test_errors_are_raised_by_the_await_in_a_loop(engine_executor):
    """In a running loop too, what exec refuses is raised by the await,
    not by the call."""
    with compat.Context(backend=engine_executor) as ctx:
        ch = ctx.chain()
        ch.getpid(ret=True)
        flags = ctypes.c_uint64.from_address(ch.head.addr)
        flags.value = 0x100                      # an unknown flag bit

        async def main():
            bad_type = ctx.exec_async(12345)    # raises nothing yet
            with pytest.raises(TypeError):
                await bad_type
            call = ctx.exec_async(ch)
            with pytest.raises(OSError) as e:
                await call
            assert e.value.errno == errno.EINVAL
            flags.value = 0
            return await ctx.exec_async(ch)     # its claim was released
        assert run(main()) is ch.head and ch.head.result == os.getpid()


def test_the_eventfd_is_written_once_per_reap(engine_executor, pipes):
    """Completions published between two reaps write the eventfd once (its
    count is 1, not one per entry); the reap re-arms it."""
    ps = pipes(3)
    with compat.Context(backend=engine_executor) as ctx:
        fd = ctx.fileno()
        assert ctx.reap() == []
        cells = [read_chain(ctx, r) for r, _ in ps]
        for ch, _, _ in cells:
            assert ctx.exec(ch) is None
        for i, (_, w) in enumerate(ps):
            os.write(w, b"one")
            for _ in range(int(T / 0.001)):     # published one by one
                if ctx.engine.ring_count() == i + 1:
                    break
                select.select([], [], [], 0.001)
        assert ctx.engine.ring_count() == 3
        assert select.select([fd], [], [], T)[0] == [fd]
        assert int.from_bytes(os.read(fd, 8), "little") == 1
        assert select.select([fd], [], [], 0.05)[0] == []
        assert sorted(a.addr for a in ctx.reap()) == sorted(ch.tail.addr for ch, _, _ in cells)
        ch, _, _ = cells[0]
        assert ctx.exec(ch) is None
        os.write(ps[0][1], b"two")               # after the reap: written again
        assert select.select([fd], [], [], T)[0] == [fd]
        assert ctx.wait(1, timeout=T) == [ch.tail]
