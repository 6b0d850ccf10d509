"""Wild pointers everywhere a syslet names user memory (SYSLET_SPEC.md
section 2 steps 1-4, section 5): the process survives and the spec results
hold on every executor."""
import ctypes
import errno
import os
import subprocess
import sys
import textwrap

import pytest

import compat
from compat import NR, SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_STOP_ON_NEGATIVE, async_head_user
from compat import _core
from syslet_testlib import (PAGE, PROT_NONE, SENTINEL, WILD_NAMES, Raw, addr, is_mapped, run_chain,
                            set_atom, wait_until, wild)

NON_NULL_WILD = [n for n in WILD_NAMES if n != "NULL"]


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    os.close(r)
    os.close(w)


def pipe_bytes(r):
    try:
        return os.read(r, 4096)
    except BlockingIOError:
        return b""


def write_atom(raw, atom, wfd, data=b"x", **kw):
    """atom = write(wfd, data, len(data)): a visible side effect."""
    fd = raw.cell(wfd)
    buf = raw.buf(len(data) + 1)
    buf.raw = data + b"\0"
    b = raw.cell(addr(buf))
    n = raw.cell(len(data))
    return set_atom(atom, NR["write"], (fd, b, n), **kw)


def umem_atom(raw, atom, counter, inc=1, **kw):
    a = raw.cell(addr(counter))
    i = raw.cell(inc)
    return set_atom(atom, NR["umem_add"], (a, i), **kw)


# ---- the first atom ---------------------------------------------------------

@pytest.mark.parametrize("where", WILD_NAMES)
def test_wild_first_atom_is_efault_and_nothing_runs(raw, pages, where):
    p = wild(where, pages)
    with pytest.raises(OSError) as ei:
        raw.exec(p)
    assert ei.value.errno == errno.EFAULT
    assert raw.settle()
    assert raw.entries() == []
    # the context is still usable
    a = raw.atoms(1)
    r = raw.cell(SENTINEL)
    set_atom(a[0], NR["getpid"], ret=r)
    assert raw.run(a[0]) == addr(a[0])
    assert r.value == os.getpid()


@pytest.mark.parametrize("where", ["freed", "kernel_half", "non_canonical"])
def test_wild_first_atom_with_async_flag_is_efault(engine_executor, pages, where):
    with Raw(engine_executor) as raw:
        p = wild(where, pages)
        with pytest.raises(OSError) as ei:
            raw.exec(p)
        assert ei.value.errno == errno.EFAULT
        assert raw.engine.inflight() == 0


# ---- next ---------------------------------------------------------------------

@pytest.mark.parametrize("where", NON_NULL_WILD)
def test_wild_next_ends_the_syslet_at_the_last_executed_atom(raw, pages, pipe, where):
    r, w = pipe
    a = raw.atoms(2)
    cnt = raw.cell(0)
    ret0, ret1 = raw.cell(SENTINEL), raw.cell(SENTINEL)
    write_atom(raw, a[0], w, b"A", ret=ret0, next=a[1])
    umem_atom(raw, a[1], cnt, ret=ret1, next=wild(where, pages))
    assert raw.run(a[0]) == addr(a[1])
    assert (ret0.value, ret1.value, cnt.value) == (1, 1, 1)
    assert pipe_bytes(r) == b"A"
    assert raw.entries() == []


@pytest.mark.parametrize("where", ["NULL+8", "freed", "kernel_half"])
def test_wild_next_after_linked_reads(raw, pages, rfd, datafile, where):
    """Reads an engine links into one io_uring segment, then a wild next."""
    data = datafile[1]
    a = raw.atoms(3)
    fd = raw.cell(rfd)
    n = raw.cell(512)
    rets, bufs = [], []
    for i in range(3):
        b = raw.buf(512)
        bufs.append(b)
        rets.append(raw.cell(SENTINEL))
        set_atom(a[i], NR["pread64"], (fd, raw.cell(addr(b)), n, raw.cell(1000 * i)),
                 ret=rets[i], next=a[i + 1] if i < 2 else wild(where, pages))
    assert raw.run(a[0]) == addr(a[2])
    for i in range(3):
        assert rets[i].value == 512
        assert bufs[i].raw == data[1000 * i:1000 * i + 512]


@pytest.mark.parametrize("where", ["freed", "kernel_half"])
def test_wild_next_in_an_async_syslet(engine_executor, pages, late_pipe, where):
    with Raw(engine_executor) as raw:
        a = raw.atoms(1)
        buf = raw.buf(8)
        ret = raw.cell(SENTINEL)
        set_atom(a[0], NR["read"], (raw.cell(late_pipe.r), raw.cell(addr(buf)), raw.cell(3)),
                 ret=ret, next=wild(where, pages))
        assert raw.exec(a[0]) == 0  # the pipe is empty until now
        late_pipe.later(b"xyz", 0.1)
        assert raw.wait(1, 5)
        assert raw.reap() == [addr(a[0])]
        assert ret.value == 3 and buf.raw[:3] == b"xyz"


# ---- argument pointers ---------------------------------------------------------

@pytest.mark.parametrize("where", NON_NULL_WILD)
@pytest.mark.parametrize("argno", [0, 2])
def test_wild_arg_pointer_atom_not_executed_chain_continues(raw, pages, pipe, where, argno):
    r, w = pipe
    a = raw.atoms(2)
    cnt = raw.cell(0)
    ret0, ret1 = raw.cell(SENTINEL), raw.cell(SENTINEL)
    write_atom(raw, a[0], w, b"B", ret=ret0, next=a[1])
    a[0].arg_ptr[argno] = wild(where, pages)
    umem_atom(raw, a[1], cnt, ret=ret1)
    assert raw.run(a[0]) == addr(a[1])
    assert ret0.value == -errno.EFAULT
    assert pipe_bytes(r) == b""             # the write did not run
    assert (ret1.value, cnt.value) == (1, 1)


@pytest.mark.parametrize("where", NON_NULL_WILD)
def test_wild_arg_pointer_with_stop_on_negative_ends_there(raw, pages, pipe, where):
    r, w = pipe
    a = raw.atoms(2)
    cnt = raw.cell(0)
    ret0, ret1 = raw.cell(SENTINEL), raw.cell(SENTINEL)
    write_atom(raw, a[0], w, b"C", ret=ret0, next=a[1], flags=SYSLET_STOP_ON_NEGATIVE)
    a[0].arg_ptr[1] = wild(where, pages)
    umem_atom(raw, a[1], cnt, ret=ret1)
    assert raw.run(a[0]) == addr(a[0])
    assert ret0.value == -errno.EFAULT
    assert (ret1.value, cnt.value) == (SENTINEL, 0)
    assert pipe_bytes(r) == b""


def test_wild_arg_pointer_with_skip_goes_to_the_linear_next(raw, pages, pipe):
    r, w = pipe
    a = raw.atoms(3)
    c1, c2 = raw.cell(0), raw.cell(0)
    ret0 = raw.cell(SENTINEL)
    write_atom(raw, a[0], w, b"D", ret=ret0, next=a[2],
               flags=SYSLET_STOP_ON_NEGATIVE | SYSLET_SKIP_TO_NEXT_ON_STOP)
    a[0].arg_ptr[0] = pages.freed()
    umem_atom(raw, a[1], c1)
    umem_atom(raw, a[2], c2)
    assert raw.run(a[0]) == addr(a[1])
    assert (ret0.value, c1.value, c2.value) == (-errno.EFAULT, 1, 0)
    assert pipe_bytes(r) == b""


def test_wild_arg_pointer_on_a_uring_op_in_a_chain(raw, pages, rfd, datafile):
    """pread -> pread(bad buffer cell) -> pread: the middle one is -EFAULT
    and not executed, the others read."""
    data = datafile[1]
    a = raw.atoms(3)
    fd, n = raw.cell(rfd), raw.cell(100)
    bufs = [raw.buf(100) for _ in range(3)]
    rets = [raw.cell(SENTINEL) for _ in range(3)]
    for i in range(3):
        set_atom(a[i], NR["pread64"], (fd, raw.cell(addr(bufs[i])), n, raw.cell(100 * i)),
                 ret=rets[i], next=a[i + 1] if i < 2 else None)
    a[1].arg_ptr[3] = pages.freed()
    assert raw.run(a[0]) == addr(a[2])
    assert [r.value for r in rets] == [100, -errno.EFAULT, 100]
    assert bufs[0].raw == data[0:100] and bufs[2].raw == data[200:300]
    assert bufs[1].raw == bytes(100)


# ---- ret_ptr -----------------------------------------------------------------------

@pytest.mark.parametrize("where", NON_NULL_WILD + ["read_only"])
def test_unwritable_ret_ptr_makes_the_atom_final(raw, pages, where):
    p = pages.read_only() if where == "read_only" else wild(where, pages)
    a = raw.atoms(2)
    c0, c1 = raw.cell(0), raw.cell(0)
    umem_atom(raw, a[0], c0, ret=p, next=a[1])
    umem_atom(raw, a[1], c1)
    assert raw.run(a[0]) == addr(a[0])
    assert (c0.value, c1.value) == (1, 0)
    if where == "read_only":
        assert ctypes.string_at(p, 16) == b"\x11" * 16


@pytest.mark.parametrize("where", ["read_only", "freed", "kernel_half"])
def test_unwritable_ret_ptr_in_linked_reads(raw, pages, rfd, datafile, where):
    p = pages.read_only() if where == "read_only" else wild(where, pages)
    data = datafile[1]
    a = raw.atoms(3)
    fd, n = raw.cell(rfd), raw.cell(64)
    bufs = [raw.buf(64) for _ in range(3)]
    rets = [raw.cell(SENTINEL) for _ in range(3)]
    for i in range(3):
        set_atom(a[i], NR["pread64"], (fd, raw.cell(addr(bufs[i])), n, raw.cell(64 * i)),
                 ret=rets[i], next=a[i + 1] if i < 2 else None)
    a[1].ret_ptr = p
    assert raw.run(a[0]) == addr(a[1])
    assert rets[0].value == 64 and bufs[0].raw == data[:64]
    assert bufs[1].raw == data[64:128]      # it ran; only its store failed
    assert rets[2].value == SENTINEL and bufs[2].raw == bytes(64)


def test_unwritable_ret_ptr_in_an_async_syslet(engine_executor, pages, late_pipe):
    with Raw(engine_executor) as raw:
        a = raw.atoms(2)
        buf = raw.buf(8)
        cnt = raw.cell(0)
        set_atom(a[0], NR["read"], (raw.cell(late_pipe.r), raw.cell(addr(buf)), raw.cell(2)),
                 ret=pages.read_only(), next=a[1])
        umem_atom(raw, a[1], cnt)
        assert raw.exec(a[0]) == 0  # the pipe is empty until now
        late_pipe.later(b"ok", 0.1)
        assert raw.wait(1, 5)
        assert raw.reap() == [addr(a[0])]
        assert buf.raw[:2] == b"ok" and cnt.value == 0


# ---- arguments that are themselves bad pointers (the kernel's EFAULT) ------------

@pytest.mark.parametrize("where", ["NULL", "freed", "kernel_half", "non_canonical"])
def test_wild_buffer_argument_gives_the_kernels_efault(raw, pages, rfd, where):
    a = raw.atoms(2)
    ret0, ret1 = raw.cell(SENTINEL), raw.cell(SENTINEL)
    set_atom(a[0], NR["pread64"], (raw.cell(rfd), raw.cell(wild(where, pages)), raw.cell(16),
                                   raw.cell(0)), ret=ret0, next=a[1])
    set_atom(a[1], NR["read"], (raw.cell(rfd), raw.cell(wild(where, pages)), raw.cell(16)),
             ret=ret1)
    assert raw.run(a[0]) == addr(a[1])
    assert ret0.value == -errno.EFAULT and ret1.value == -errno.EFAULT


@pytest.mark.parametrize("where", ["freed", "kernel_half"])
def test_wild_path_argument(raw, pages, where):
    a = raw.atoms(2)
    ret0, ret1 = raw.cell(SENTINEL), raw.cell(SENTINEL)
    set_atom(a[0], NR["openat"], (raw.cell(compat.AT_FDCWD), raw.cell(wild(where, pages)),
                                  raw.cell(os.O_RDONLY), raw.cell(0)), ret=ret0, next=a[1])
    set_atom(a[1], NR["open"], (raw.cell(wild(where, pages)), raw.cell(os.O_RDONLY)), ret=ret1)
    assert raw.run(a[0]) == addr(a[1])
    assert ret0.value == -errno.EFAULT and ret1.value == -errno.EFAULT


@pytest.mark.parametrize("where", WILD_NAMES + ["read_only"])
def test_umem_add_atom_on_a_bad_address(raw, pages, where):
    p = pages.read_only() if where == "read_only" else wild(where, pages)
    a = raw.atoms(2)
    ret0, ret1 = raw.cell(SENTINEL), raw.cell(SENTINEL)
    cnt = raw.cell(41)
    set_atom(a[0], NR["umem_add"], (raw.cell(p), raw.cell(1)), ret=ret0, next=a[1])
    umem_atom(raw, a[1], cnt, ret=ret1)
    assert raw.run(a[0]) == addr(a[1])
    assert ret0.value == -errno.EFAULT
    assert (ret1.value, cnt.value) == (42, 42)


@pytest.mark.parametrize("where", WILD_NAMES + ["read_only"])
def test_raw_umem_add_on_a_bad_address(pages, where):
    p = pages.read_only() if where == "read_only" else wild(where, pages)
    with pytest.raises(OSError) as ei:
        compat.umem_add(p, 1)
    assert ei.value.errno == errno.EFAULT


# ---- tightly packed atoms at the end of a mapping ------------------------------------

@pytest.fixture
def edge(pages):
    """Two pages; the second is PROT_NONE.  Returns the guard page address."""
    base = pages.map(2)
    pages.protect(base + PAGE, 1, PROT_NONE)
    return base + PAGE


def packed_atom(at, nr, arg_addrs, ret=0, flags=0, next=0):
    """Writes an atom's header and its arg_ptr words up to the first NULL,
    and nothing else (spec 4.1: the tail need not exist)."""
    words = [flags, nr, ret, next] + list(arg_addrs) + ([0] if len(arg_addrs) < 6 else [])
    _core.poke(at, b"".join((w & ((1 << 64) - 1)).to_bytes(8, "little") for w in words))
    return at


@pytest.mark.parametrize("nargs", [0, 2, 5, 6])
def test_tightly_packed_atom_against_an_unmapped_page(raw, edge, nargs):
    """The arg_ptr tail after the first NULL and ``private`` are never read."""
    cnt = raw.cell(0)
    ret = raw.cell(SENTINEL)
    inc = raw.cell(5)
    filler = raw.cell(0)
    args = [addr(raw.cell(addr(cnt))), addr(inc)] + [addr(filler)] * 4
    args = args[:nargs]
    nr = NR["umem_add"] if nargs >= 2 else NR["getpid"]
    size = 32 + 8 * (len(args) + (1 if len(args) < 6 else 0))
    at = packed_atom(edge - size, nr, args, ret=addr(ret))
    assert raw.run(at) == at
    if nargs >= 2:
        assert (ret.value, cnt.value) == (5, 5)
    else:
        assert ret.value == os.getpid()


def test_packed_atoms_chain_to_the_edge(raw, edge):
    """A later atom packed against the guard page runs too."""
    cnt = raw.cell(0)
    ret = raw.cell(SENTINEL)
    first = raw.atoms(1)
    at = packed_atom(edge - 56, NR["umem_add"], [addr(raw.cell(addr(cnt))), addr(raw.cell(2))],
                     ret=addr(ret))
    set_atom(first[0], NR["getpid"], next=at)
    assert raw.run(first[0]) == at
    assert (ret.value, cnt.value) == (2, 2)


def test_arg_ptr_array_running_into_the_unmapped_page(raw, edge):
    """Header readable, but a non-NULL arg_ptr entry continues onto the
    unmapped page: the atom is unreadable.  First atom: EFAULT, nothing
    runs.  Later atom: the syslet ends at the last executed one."""
    cnt = raw.cell(0)
    at = edge - 40          # header + arg_ptr[0]; arg_ptr[1] is unmapped
    _core.poke(at, b"".join(w.to_bytes(8, "little") for w in
                            [0, NR["umem_add"], 0, 0, addr(raw.cell(addr(cnt)))]))
    with pytest.raises(OSError) as ei:
        raw.exec(at)
    assert ei.value.errno == errno.EFAULT
    assert cnt.value == 0
    first = raw.atoms(1)
    r0 = raw.cell(SENTINEL)
    set_atom(first[0], NR["getpid"], ret=r0, next=at)
    assert raw.run(first[0]) == addr(first[0])
    assert r0.value == os.getpid() and cnt.value == 0


def test_first_atom_header_straddling_into_the_unmapped_page(raw, edge):
    at = edge - 16          # flags and nr readable, ret_ptr/next are not
    _core.poke(at, (0).to_bytes(8, "little") + NR["getpid"].to_bytes(8, "little"))
    with pytest.raises(OSError) as ei:
        raw.exec(at)
    assert ei.value.errno == errno.EFAULT


# ---- the head and the ring ------------------------------------------------------------

@pytest.mark.parametrize("where", WILD_NAMES)
def test_register_with_an_unreadable_ahu(raw_api, pages, where):
    with pytest.raises(OSError) as ei:
        compat.async_register(wild(where, pages), 24)
    assert ei.value.errno == errno.EFAULT
    # nothing got registered: a good head still registers
    ring = (ctypes.c_uint64 * 4)()
    ahu = async_head_user(addr(ring), 32, (1 << 64) - 1)
    assert compat.async_register(addr(ahu), 24) == 0
    with pytest.raises(OSError) as ei:
        compat.async_unregister(wild(where, pages), 24)
    assert ei.value.errno == errno.EFAULT
    assert compat.async_unregister(addr(ahu), 24) == 0


@pytest.mark.parametrize("where", WILD_NAMES + ["read_only"])
def test_register_with_a_bad_ring(executor, pages, where):
    p = pages.read_only() if where == "read_only" else wild(where, pages)
    from syslet_testlib import new_executor
    with new_executor(executor) as e:
        with pytest.raises(OSError) as ei:
            e.register(p, 64, -1)
        assert ei.value.errno == errno.EFAULT
        ring = (ctypes.c_uint64 * 8)()
        assert e.register(addr(ring), 64, -1) == 0
        assert e.unregister(addr(ring), 64) == 0


def test_ring_unmapped_while_registered_survives(engine_executor, pages):
    """A user error the spec forbids (the ring must stay valid): the engine
    must not crash; the entry is lost and counted as a fault."""
    ring = pages.map(1)
    with compat.Engine(engine_executor) as e:
        e.register(ring, 64, -1)
        from syslet_testlib import libc
        assert libc.munmap(ctypes.c_void_p(ring), PAGE) == 0
        assert not is_mapped(ring)
        a = (compat.syslet_uatom * 1)()
        r = ctypes.c_int64(SENTINEL)
        set_atom(a[0], NR["getpid"], ret=r, flags=compat.SYSLET_ASYNC)
        assert e.exec(addr(a[0])) == 0
        assert wait_until(lambda: e.inflight() == 0 and e.counters()["faults"] >= 1)
        assert r.value == os.getpid()
        e.unregister(ring, 64, timeout=5)
    # the mapping slot may be reused by now; keep Pages from unmapping it
    pages._maps = [(m, n) for m, n in pages._maps if m != ring]


# ---- faults the guard must not swallow ------------------------------------------------

def test_unguarded_segfault_still_kills_the_process():
    """The SIGSEGV trap only covers the engine's own accesses: a real crash
    elsewhere is passed on (the process dies of SIGSEGV, it does not hang)."""
    code = textwrap.dedent("""
        import ctypes, compat
        e = compat.Engine('threadpool')
        e.register(ctypes.addressof((ctypes.c_uint64 * 4)()), 32)
        try:
            compat.umem_add(8, 1)
        except OSError:
            pass
        ctypes.string_at(16, 8)
        print("survived")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONFAULTHANDLER": ""})
    assert p.returncode == -11, (p.returncode, p.stdout, p.stderr[-500:])
    assert "survived" not in p.stdout


# ---- the same through the builder (wild pointers poked into built atoms) -------------

def test_builder_atoms_with_wild_pointers_poked_in(ctx, pages):
    freed, ro = pages.freed(), pages.read_only()
    c = [ctx.var(0) for _ in range(4)]
    ch = ctx.chain()
    a0 = ch.umem_add(c[0].addr, 1, ret=True)
    a1 = ch.umem_add(c[1].addr, 1, ret=True)       # arg_ptr[1] -> freed: -EFAULT, not run
    a2 = ch.umem_add(c[2].addr, 1)                 # ret_ptr -> read-only: final
    ch.umem_add(c[3].addr, 1)
    _core.poke(a1.addr + 40, freed.to_bytes(8, "little"))
    _core.poke(a2.addr + 16, ro.to_bytes(8, "little"))
    final, _ = run_chain(ctx, ch)
    assert final is a2
    assert [v.value for v in c] == [1, 0, 1, 0]
    assert a0.result == 1 and a1.result == -errno.EFAULT
    # next -> kernel half: the syslet ends at a0
    for v in c:
        v.value = 0
    _core.poke(a0.addr + 24, (0xFFFF800000000000).to_bytes(8, "little"))
    final, _ = run_chain(ctx, ch)
    assert final is a0 and [v.value for v in c] == [1, 0, 0, 0]
