"""Proof of linking on io_uring (engine counters): independent atoms become
one linked segment and one io_uring_enter; a link severed by a short read
that is not a syslet stop ("over-stop") resumes and ends exactly as the
reference interpreter does."""
import ctypes
import errno
import os

import pytest

from compat import AT_FDCWD, NR, SYSLET_STOP_ON_NEGATIVE, SYSLET_STOP_ON_NON_POSITIVE, Context
from syslet_testlib import (PAGE, PROT_NONE, SENTINEL, Raw, addr, run_chain, set_atom,
                            wild)


def delta(before, after):
    return {k: after[k] - before[k] for k in after}


@pytest.fixture
def uctx(uring_executor):
    with Context(backend="io_uring", ring_slots=8) as c:
        assert c.backend == "io_uring"
        yield c


@pytest.mark.parametrize("n", [2, 16])
def test_independent_preads_are_one_segment_and_one_enter(uctx, rfd, datafile, n):
    data = datafile[1]
    ch = uctx.chain()
    bufs = [uctx.buffer(4096) for _ in range(n)]
    atoms = [ch.pread64(rfd, b, 4096, 4096 * i, ret=uctx.var(SENTINEL)) for i, b in enumerate(bufs)]
    c0 = uctx.counters()
    assert uctx.exec(ch) is atoms[-1]           # page cache: synchronous
    d = delta(c0, uctx.counters())
    assert d["segments"] == 1
    assert d["enters"] == 1
    assert d["atoms_uring"] == n
    assert d["syslets_sync"] == 1 and d["syslets_async"] == 0
    for i, (a, b) in enumerate(zip(atoms, bufs)):
        assert a.result == 4096 and b.read() == data[4096 * i:4096 * (i + 1)]
    assert uctx.engine.ring_count() == 0


def test_open_read_close_with_the_fd_through_ret_ptr_needs_at_most_two_enters(uctx, datafile):
    path, data = datafile
    fd = uctx.var(SENTINEL)
    buf = uctx.buffer(1000)
    ch = uctx.chain()
    op = ch.openat(AT_FDCWD, path.encode(), os.O_RDONLY, 0, ret=fd, flags=SYSLET_STOP_ON_NEGATIVE)
    rd = ch.read(fd, buf, 1000, ret=True, flags=SYSLET_STOP_ON_NEGATIVE)
    cl = ch.close(fd, ret=uctx.var(SENTINEL))
    c0 = uctx.counters()
    final, _ = run_chain(uctx, ch)
    d = delta(c0, uctx.counters())
    assert final is cl
    assert op.result >= 0 and rd.result == 1000 and cl.result == 0
    assert buf.read() == data[:1000]
    assert d["enters"] <= 2
    assert d["segments"] <= 2


def test_reads_that_feed_the_next_atom_are_not_linked(uctx, rfd, datafile, tmp_path):
    """A read into the next atom's argument cell must complete before that
    atom is read: not linked with it, and the value read is used."""
    data = datafile[1]
    offp = tmp_path / "off.bin"
    offp.write_bytes((777).to_bytes(8, "little"))
    ofd = os.open(offp, os.O_RDONLY)
    try:
        off = uctx.var(0)
        buf = uctx.buffer(64)
        ch = uctx.chain()
        ch.pread64(ofd, off.addr, 8, 0, ret=True)
        rd = ch.pread64(rfd, buf, 64, off, ret=True)
        c0 = uctx.counters()
        final, _ = run_chain(uctx, ch)
        d = delta(c0, uctx.counters())
        assert final is rd and buf.read() == data[777:841]
        # not one segment holding both reads (the second may run inline)
        assert not (d["segments"] == 1 and d["atoms_uring"] == 2)
        assert d["segments"] + d["atoms_nowait"] >= 2
    finally:
        os.close(ofd)


def build_short_read_chain(ctx, fd, first):
    """[first] -> pread(0) -> pread(4096: short) -> pread(8192: EOF) ->
    pread(0), reads with STOP_ON_NEGATIVE (links that a short read severs
    although the syslet does not stop)."""
    ch = ctx.chain()
    if first == "pread_nostop":
        ch.pread64(fd, ctx.buffer(16), 16, 100, ret=ctx.var(SENTINEL))
    elif first == "fsync":
        ch.fsync(fd, ret=ctx.var(SENTINEL), flags=SYSLET_STOP_ON_NEGATIVE)
    bufs = []
    for off in (0, 4096, 8192, 0):
        b = ctx.buffer(4096)
        bufs.append(b)
        ch.pread64(fd, b, 4096, off, ret=ctx.var(SENTINEL), flags=SYSLET_STOP_ON_NEGATIVE)
    ch.umem_add(ctx.var(0).addr, 1, ret=ctx.var(SENTINEL), flags=SYSLET_STOP_ON_NON_POSITIVE)
    return ch, bufs


def outcome(ctx, ch, bufs):
    final, _ = run_chain(ctx, ch)
    return (ch.atoms.index(final), [a.result for a in ch.atoms], [b.read() for b in bufs])


@pytest.mark.parametrize("first", ["pread_nostop", "fsync"])
def test_overstop_resumes_and_matches_the_reference(uctx, tmp_path, first):
    data = os.urandom(6144)                     # 4096 + 2048: the second read is short
    p = tmp_path / "short.bin"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        with Context(backend="reference") as ref:
            want = outcome(ref, *build_short_read_chain(ref, fd, first))
        ch, bufs = build_short_read_chain(uctx, fd, first)
        c0 = uctx.counters()
        got = outcome(uctx, ch, bufs)
        d = delta(c0, uctx.counters())
    finally:
        os.close(fd)
    assert got == want
    final, results, contents = got
    assert final == len(ch.atoms) - 1
    assert results[-5:-1] == [4096, 2048, 0, 4096]
    assert contents[0] == data[:4096] and contents[1][:2048] == data[4096:]
    assert d["overstops"] >= 1
    assert d["segments"] >= 1


def test_short_read_with_stop_on_non_positive_is_not_an_overstop_when_it_stops(uctx, tmp_path):
    """EOF (0) with STOP_ON_NON_POSITIVE: a real stop; the chain ends there,
    as in the reference."""
    p = tmp_path / "tiny.bin"
    p.write_bytes(b"0123456789")
    fd = os.open(p, os.O_RDONLY)
    try:
        results = []
        for ctx in (Context(backend="reference"), uctx):
            with ctx:
                ch = ctx.chain()
                bufs = [ctx.buffer(8) for _ in range(4)]
                for i, b in enumerate(bufs):
                    ch.pread64(fd, b, 8, 8 * i, ret=ctx.var(SENTINEL), flags=SYSLET_STOP_ON_NON_POSITIVE)
                final, _ = run_chain(ctx, ch)
                results.append((ch.atoms.index(final), [a.result for a in ch.atoms],
                                [b.read() for b in bufs]))
        assert results[0] == results[1]
        assert results[0][0] == 2 and results[0][1] == [8, 2, 0, SENTINEL]
    finally:
        os.close(fd)


@pytest.mark.parametrize("flags", [0, SYSLET_STOP_ON_NEGATIVE])
def test_a_lone_cached_read_is_one_inline_nowait_call(engine_executor, rfd, datafile, flags):
    """One pread64 atom (no next) on cached pages: settled in the caller by
    one RWF_NOWAIT read (the exec fast path), counted as a synchronous
    syslet with one inline atom, no segment and no io_uring_enter."""
    data = datafile[1]
    with Context(backend=engine_executor, ring_slots=8) as c:
        buf = c.buffer(4096)
        buf.write(b"\xee" * 4096)
        ch = c.chain()
        rd = ch.pread64(rfd, buf, 4096, 8192, ret=c.var(SENTINEL), flags=flags)
        c0 = c.counters()
        assert c.exec(ch) is rd
        d = delta(c0, c.counters())
        assert rd.result == 4096 and buf.read() == data[8192:12288]
        assert d["syslets_sync"] == 1 and d["syslets_async"] == 0
        assert d["atoms_nowait"] == 1 and d["atoms_inline"] == 1
        assert d["segments"] == 0 and d["enters"] == 0 and d["atoms_pool"] == 0
        assert c.engine.ring_count() == 0


def test_a_lone_read_with_an_unwritable_ret_ptr_ends_there(engine_executor, rfd, datafile):
    """The fast path stores through ret_ptr with the fault guard: the read
    ran (the buffer is filled), the atom is final, one fault is counted."""
    data = datafile[1]
    with Raw(engine_executor) as r:
        a = r.atoms(1)
        buf = r.buf(4096)
        cells = [r.cell(rfd), r.cell(addr(buf)), r.cell(4096), r.cell(4096)]
        set_atom(a[0], NR["pread64"], cells, ret=8)     # NULL page + 8: unwritable
        c0 = r.engine.counters()
        assert r.exec(a[0]) == addr(a[0])
        d = delta(c0, r.engine.counters())
        assert d["faults"] == 1 and d["syslets_sync"] == 1
        assert buf.raw[:4096] == data[4096:8192]
        assert r.entries() == []


# ---- the exec fast path's own memory accesses (fault fixups) -------------------------
# A lone read atom is read and its result stored by the fast path's fault-fixup
# accessors; whatever they meet, every executor must end the same way.

FAST_WILD = ["NULL+8", "freed", "kernel_half", "vsyscall", "non_canonical"]


@pytest.mark.parametrize("where", [0, 1, 2, 3])
@pytest.mark.parametrize("kind", FAST_WILD)
def test_a_lone_read_with_a_wild_argument_pointer(executor, pages, rfd, kind, where):
    """arg_ptr[where] of a lone pread64 points nowhere: EFAULT through
    ret_ptr, nothing read, the atom is final."""
    with Raw(executor) as r:
        a = r.atoms(1)
        buf = r.buf(64)
        ctypes.memset(buf, 0xAB, 64)
        cells = [r.cell(rfd), r.cell(addr(buf)), r.cell(64), r.cell(0)]
        cells[where] = wild(kind, pages)
        ret = r.cell(SENTINEL)
        set_atom(a[0], NR["pread64"], cells, ret=ret)
        assert r.exec(a[0]) == addr(a[0])
        assert ret.value == -errno.EFAULT
        assert buf.raw == b"\xab" * 64
        assert r.entries() == []


@pytest.mark.parametrize("kind", FAST_WILD + ["read_only"])
def test_a_lone_read_with_a_wild_ret_ptr(executor, pages, rfd, datafile, kind):
    """The read runs, its result has nowhere to go: the atom is final and
    a read-only ret page is left as it was."""
    data = datafile[1]
    ret = pages.read_only() if kind == "read_only" else wild(kind, pages)
    with Raw(executor) as r:
        a = r.atoms(1)
        buf = r.buf(4096)
        cells = [r.cell(rfd), r.cell(addr(buf)), r.cell(4096), r.cell(8192)]
        set_atom(a[0], NR["pread64"], cells, ret=ret)
        assert r.exec(a[0]) == addr(a[0])
        assert buf.raw[:4096] == data[8192:12288]
        if kind == "read_only":
            assert ctypes.string_at(ret, PAGE) == b"\x11" * PAGE
        assert r.entries() == []


@pytest.mark.parametrize("kind", FAST_WILD + ["tail_unmapped"])
def test_a_lone_read_atom_that_is_not_all_there(executor, pages, rfd, kind):
    """The atom itself is wild, or its last words (from arg_ptr[3] on) lie
    on an unmapped page: async_exec fails with EFAULT, nothing runs."""
    with Raw(executor) as r:
        buf = r.buf(64)
        ctypes.memset(buf, 0xAB, 64)
        if kind == "tail_unmapped":
            p = pages.map(2)
            pages.protect(p + PAGE, 1, PROT_NONE)
            at = p + PAGE - 56                  # flags .. arg_ptr[2] mapped
            cells = [r.cell(rfd), r.cell(addr(buf)), r.cell(64)]
            words = [0, NR["read"], addr(r.cell(SENTINEL)), 0] + [addr(c) for c in cells]
            for i, w in enumerate(words):
                ctypes.c_uint64.from_address(at + 8 * i).value = w
        else:
            at = wild(kind, pages)
        with pytest.raises(OSError) as ei:
            r.engine.exec(at)
        assert ei.value.errno == errno.EFAULT
        assert buf.raw == b"\xab" * 64


@pytest.mark.parametrize("nr,extra", [("read", 3), ("pread64", 4), ("pread64", 5)])
@pytest.mark.parametrize("kind", ["freed", "kernel_half", "readable"])
def test_a_lone_read_reads_every_argument_pointer(executor, pages, rfd, datafile, nr, extra, kind):
    """Spec 2.2 reads arg_ptr[] up to the first NULL, also beyond the
    call's own arguments: a wild one there is EFAULT (nothing read), a
    readable one changes nothing."""
    data = datafile[1]
    with Raw(executor) as r:
        a = r.atoms(1)
        buf = r.buf(64)
        ctypes.memset(buf, 0xAB, 64)
        cells = [r.cell(rfd), r.cell(addr(buf)), r.cell(64), r.cell(128)][:3 if nr == "read" else 4]
        cells += [r.cell(7)] * (extra - len(cells))
        cells.append(r.cell(9) if kind == "readable" else wild(kind, pages))
        ret = r.cell(SENTINEL)
        set_atom(a[0], NR[nr], cells, ret=ret)
        if nr == "read":
            os.lseek(rfd, 128, os.SEEK_SET)
        assert r.exec(a[0]) == addr(a[0])
        if kind == "readable":
            assert ret.value == 64 and buf.raw == data[128:192]
        else:
            assert ret.value == -errno.EFAULT and buf.raw == b"\xab" * 64


@pytest.mark.parametrize("ncells", [0, 1, 2])
def test_an_atom_ends_at_its_first_null_arg_ptr(executor, pages, ncells):
    """Spec 4.1: an atom's words end at its first NULL arg_ptr. Placed so
    that exactly that word is the last mapped one, it runs; the next page
    is never touched."""
    with Raw(executor) as r:
        p = pages.map(2)
        pages.protect(p + PAGE, 1, PROT_NONE)
        at = p + PAGE - 8 * (5 + ncells)       # header, ncells cells, the NULL
        ret = r.cell(SENTINEL)
        cells = [r.cell(0), r.cell(0)][:ncells]
        words = [0, NR["getpid"], addr(ret), 0] + [addr(c) for c in cells] + [0]
        for i, w in enumerate(words):
            ctypes.c_uint64.from_address(at + 8 * i).value = w
        assert r.engine.exec(at) == at
        assert ret.value == os.getpid()


@pytest.mark.parametrize("bad_ret", [0x10, 0x8, 0xFF8, 0x1000, 0xFFFF800000000000],
                         ids=["0x10", "0x8", "0xff8", "0x1000", "kernel"])
@pytest.mark.parametrize("first", [True, False], ids=["first", "second"])
def test_an_unwritable_ret_ptr_ends_a_linked_segment_there(executor, bad_ret, first):
    """SYSLET_SPEC 2.4: the atom whose result cannot be stored is final --
    the atoms after it must not run, also when they would have been linked
    behind it in one io_uring segment (writes to pipes).  Page 0 too, also
    as the segment's first atom (found by the differential test)."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    try:
        with Raw(executor) as raw:
            a = raw.atoms(3)
            buf = raw.buf(4)
            buf.raw = b"abcd"
            fd, fd2, b, n = raw.cell(w), raw.cell(w2), raw.cell(addr(buf)), raw.cell(4)
            ret0, ret2 = raw.cell(SENTINEL), raw.cell(SENTINEL)
            chain = a[1:] if first else a
            if not first:
                set_atom(a[0], NR["write"], (fd, b, n), ret=ret0, next=a[1])
            set_atom(a[1], NR["write"], (fd, b, n), ret=bad_ret, next=a[2])
            set_atom(a[2], NR["write"], (fd2, b, n), ret=ret2)
            assert raw.run(chain[0]) == addr(a[1])
            assert ret2.value == SENTINEL
            assert os.read(r, 100) == (b"abcd" if first else b"abcdabcd")
            os.set_blocking(r2, False)
            with pytest.raises(BlockingIOError):
                os.read(r2, 100)                # the last never ran
    finally:
        for f in (r, w, r2, w2):
            os.close(f)
