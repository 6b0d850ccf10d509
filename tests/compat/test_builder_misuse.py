"""Issue 13 item 4: the builder layer never corrupts memory and never hangs.

What the builder knows (buffer sizes, counts given as constants, the ring's
capacity, the types and ranges of arguments, which Context made an object)
is checked when the atom is built or the call is made: ValueError for a bad
value, TypeError for a wrong kind of object.  Nothing is built, written or
run when a check fails.  The raw layer stays raw (umem_add only refuses an
``inc`` that does not fit a C argument, with OverflowError).

Every test here fails on the code before the checks (which accepted, wrapped,
overran or hung); the checks themselves are exercised on every executor.
"""
import array
import ctypes
import errno
import gc
import math
import os
import re
import select
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

import compat
from compat import (AT_FDCWD, ATOM_SIZE, NR, SYSLET_STOP_ON_NEGATIVE, SYSLET_SYNC, Arena, Buffer, Context,
                    Var)
from compat import _core
from compat._argcheck import SIGNATURES, THREAD_STATE
from syslet_testlib import EXECUTORS, SENTINEL, run_chain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def other(executor):
    """A second Context on the same executor."""
    with Context(backend=executor, ring_slots=8) as c:
        yield c


def next_atom_addr(ctx):
    """Where the next atom will be laid out (an atom refused must not take it)."""
    a = ctx._atom_arena
    return a._base + ((a._off + 7) & ~7)


def refused(ctx, ch, exc, build):
    """``build()`` raises ``exc`` and leaves the chain and the atom arena as
    they were."""
    n, at = len(ch.atoms), next_atom_addr(ctx)
    with pytest.raises(exc):
        build()
    assert len(ch.atoms) == n and next_atom_addr(ctx) == at


# ---- counts against buffer sizes --------------------------------------------

def test_read_count_larger_than_the_buffer_is_refused(ctx, rfd, datafile):
    buf, guard = ctx.buffer(64), ctx.buffer(64)
    guard.write(b"\xee" * 64)
    ch = ctx.chain()
    refused(ctx, ch, ValueError, lambda: ch.read(rfd, buf, 65))
    refused(ctx, ch, ValueError, lambda: ch.pread64(rfd, buf, 4096, 0))
    refused(ctx, ch, ValueError, lambda: ch.read(rfd, buf, -1))     # size_t: 2**64 - 1
    # the exact size is fine, and runs
    n = ctx.var(SENTINEL)
    ch.pread64(rfd, buf, 64, 0, ret=n)
    run_chain(ctx, ch)
    assert n.value == 64 and buf.read() == datafile[1][:64] and guard.read() == b"\xee" * 64


@pytest.mark.parametrize("call, args, exc", [
    ("write", lambda b: (1, b, 65), ValueError),
    ("pwrite64", lambda b: (1, b, 100, 0), ValueError),
    ("recvfrom", lambda b: (0, b, 65, 0, 0, 0), ValueError),
    ("sendto", lambda b: (0, b, 65, 0, 0, 0), ValueError),
    ("sendto", lambda b: (0, 0, 0, 0, b, 65), ValueError),          # the address and its length
    ("getdents64", lambda b: (0, b, 1 << 20), ValueError),
    ("getrandom", lambda b: (b, 65, 0), ValueError),
    ("getcwd", lambda b: (b, 4096), ValueError),
    ("readlinkat", lambda b: (AT_FDCWD, b"/proc/self/exe", b, 65), ValueError),
    ("readv", lambda b: (0, b, 5), ValueError),                     # 5 iovecs = 80 bytes
    ("preadv2", lambda b: (0, b, 5, 0, 0, 0), ValueError),
    ("epoll_wait", lambda b: (0, b, 6, 0), ValueError),              # 6 events = 72 bytes
    ("poll", lambda b: (b, 9, 0), ValueError),                      # 9 pollfds = 72 bytes
    ("select", lambda b: (1025, b, 0, 0, 0), ValueError),           # 1025 bits = 136 bytes
    ("fstat", lambda b: (0, b), ValueError),                        # struct stat: 144
    ("statx", lambda b: (AT_FDCWD, b"/", 0, 0xfff, b), ValueError),   # struct statx: 256
    ("uname", lambda b: (b,), ValueError),                          # struct utsname: 390
    ("getgroups", lambda b: (17, b), ValueError),                   # 17 gid_t = 68 bytes
    ("mincore", lambda b: (0, 65 * 4096 + 1, b), ValueError),       # 66 pages, 66 bytes
    ("msgrcv", lambda b: (0, b, 57, 0, 0), ValueError),             # long mtype + 57 bytes
    ("sched_getaffinity", lambda b: (0, 128, b), ValueError),
    ("getxattr", lambda b: (b"/", b"user.x", b, 65), ValueError),
    ("setsockopt", lambda b: (0, 1, 2, b, 65), ValueError),
    ("umem_add", lambda b: (ctx_buffer_of(b, 4), 1), ValueError),   # an 8-byte word on 4 bytes
    ("read", lambda b: (0, b, b), TypeError),                       # memory as the count
    ("read", lambda b: (0, b"x" * 100, 10), TypeError),             # bytes are a copy: refused as output
    ("write", lambda b: (1, b"abc", 5), ValueError),                # 'abc' + NUL is 4 bytes
])
def test_sizes_known_at_build_time_are_checked(ctx, call, args, exc):
    b = ctx.buffer(64)
    ch = ctx.chain()
    refused(ctx, ch, exc, lambda: getattr(ch, call)(*args(b)))


def ctx_buffer_of(b, n):
    """A Buffer view of the first ``n`` bytes of ``b`` (same owner)."""
    v = Buffer(b.addr, n)
    v._ctx = b._ctx
    return v


def test_what_fits_is_built_and_what_is_not_known_is_left_to_the_kernel(ctx, rfd):
    b = ctx.buffer(64)
    n = ctx.var(4096)           # a count passed by pointer is read when the atom runs
    ch = ctx.chain()
    ch.write(1, b"abc", 4)                   # 'abc' and its NUL
    ch.read(rfd, b, 64)
    ch.readv(rfd, b, 4)                      # 4 iovecs fit 64 bytes
    ch.umem_add(ch.atoms[0], 0)              # an atom is 88 bytes
    ch.read(rfd, 0, 100)                     # a raw address: the kernel's EFAULT
    ch.read(rfd, b, n)                       # not known when built: not checked
    ch.read(rfd, n, 64)                      # a Var as the buffer: its value is the pointer
    assert len(ch.atoms) == 7


def table_cases():
    """For every pointer of the call table with a size, its call, position
    and that size with every size argument set to 5."""
    for name, sig in sorted(SIGNATURES.items()):
        if name in THREAD_STATE:
            continue            # refused whatever the arguments (below)
        for i, p in enumerate(sig):
            if p.dir in ("r", "w", "rw"):
                need = p.need({q.name: 5 for q in sig})
                if need is not None:
                    yield pytest.param(name, i, need, id=f"{name}-{p.name}")


@pytest.mark.parametrize("name, i, need", list(table_cases()))
def test_every_sized_pointer_of_the_call_table(name, i, need, table_ctx):
    ctx = table_ctx
    sig = SIGNATURES[name]
    args = [5 if any(q.name in s.deps for s in sig) else 0 for q in sig]
    ch = ctx.chain()
    if need:
        args[i] = ctx.buffer(need - 1)
        refused(ctx, ch, ValueError, lambda: getattr(ch, name)(*args))
    args[i] = ctx.buffer(need)
    getattr(ch, name)(*args)
    assert len(ch.atoms) == 1


@pytest.fixture(scope="module")
def table_ctx():
    with Context(backend="reference") as c:     # building only: no executor involved
        yield c


@pytest.mark.parametrize("name, pos", [("munmap", 0), ("mprotect", 0), ("madvise", 0), ("mremap", 0),
                                       ("mremap", 4), ("mmap", 0), ("shmat", 1), ("brk", 0),
                                       ("pkey_mprotect", 0), ("remap_file_pages", 0), ("shmdt", 0)])
def test_the_contexts_memory_cannot_be_unmapped_or_remapped(ctx, name, pos):
    args = [0] * len(SIGNATURES[name])
    args[pos] = ctx.buffer(4096, align=4096)
    ch = ctx.chain()
    refused(ctx, ch, ValueError, lambda: getattr(ch, name)(*args))
    args[pos] = ch.getpid(link=False)
    refused(ctx, ch, ValueError, lambda: getattr(ch, name)(*args))
    args[pos] = 1 << 40                 # a raw address is the program's business
    getattr(ch, name)(*args)


@pytest.mark.parametrize("name", sorted(THREAD_STATE))
def test_calls_that_change_the_engine_thread_are_refused(ctx, name):
    """set_tid_address(0) on a pool worker made Context.close() hang for
    ever; arch_prctl(ARCH_SET_FS) killed the process."""
    ch = ctx.chain()
    refused(ctx, ch, ValueError, lambda: getattr(ch, name)(0, 0))
    refused(ctx, ch, ValueError, lambda: ch.atom(NR[name]))


# ---- the kernel writes no more than the table says --------------------------

def _extent(ctx, build, fill_bytes=4096):
    """Runs the atom ``build(ch, buf, scratch)`` synchronously with a large
    buffer filled with two patterns in turn; returns (results, bytes the
    kernel wrote counted to the last changed one, the buffers' contents)."""
    ext, res, datas = 0, [], []
    for fill in (0xAA, 0x55):
        buf, scratch = ctx.buffer(fill_bytes), ctx.buffer(256)
        buf.write(bytes([fill]) * fill_bytes)
        ch = ctx.chain()
        a = build(ch, buf, scratch)
        a.flags |= SYSLET_SYNC
        if a.ret is None:
            raise AssertionError("give the atom a result cell")
        run_chain(ctx, ch)
        res.append(a.result)
        data = buf.read()
        datas.append(data)
        changed = [k for k in range(fill_bytes) if data[k] != fill]
        ext = max(ext, changed[-1] + 1 if changed else 0)
    return res, ext, datas


@pytest.fixture
def measured(tmp_path):
    """(call, args(buf, scratch)): calls that write a structure whose size
    the table gives, with ``buf`` where that structure goes."""
    f = tmp_path / "f"
    f.write_bytes(b"x" * 5000)
    (tmp_path / "l").symlink_to(f)
    fd = os.open(f, os.O_RDONLY)
    r, w = os.pipe()
    os.write(w, b"!")
    dups = [os.dup(w), os.dup(w)]
    ep = select.epoll()                 # 4 events ready, for 4 slots
    ep.register(r, select.EPOLLIN)
    for x in [w] + dups:
        ep.register(x, select.EPOLLOUT)
    mem = bytearray(4 * 4096)
    page = (ctypes.addressof(ctypes.c_char.from_buffer(mem)) + 4095) & ~4095    # mapped memory
    yield [
        ("fstat", lambda b, s: (fd, b)), ("stat", lambda b, s: (str(f), b)),
        ("lstat", lambda b, s: (str(f), b)), ("newfstatat", lambda b, s: (AT_FDCWD, str(f), b, 0)),
        ("statx", lambda b, s: (AT_FDCWD, str(f), 0, 0xfff, b)), ("statfs", lambda b, s: (str(f), b)),
        ("fstatfs", lambda b, s: (fd, b)), ("uname", lambda b, s: (b,)), ("sysinfo", lambda b, s: (b,)),
        ("times", lambda b, s: (b,)), ("getrusage", lambda b, s: (0, b)), ("getrlimit", lambda b, s: (7, b)),
        ("prlimit64", lambda b, s: (0, 7, 0, b)), ("gettimeofday", lambda b, s: (b, s)),
        ("gettimeofday", lambda b, s: (s, b)), ("clock_gettime", lambda b, s: (1, b)),
        ("clock_getres", lambda b, s: (1, b)), ("time", lambda b, s: (b,)),
        ("getresuid", lambda b, s: (b, s, s)), ("getresuid", lambda b, s: (s, s, b)),
        ("getresgid", lambda b, s: (s, b, s)), ("getitimer", lambda b, s: (0, b)),
        ("sched_getparam", lambda b, s: (0, b)), ("sched_rr_get_interval", lambda b, s: (0, b)),
        ("getcpu", lambda b, s: (b, s, 0)), ("getcpu", lambda b, s: (s, b, 0)),
        ("rt_sigprocmask", lambda b, s: (0, 0, b, 8)), ("rt_sigpending", lambda b, s: (b, 8)),
        ("rt_sigaction", lambda b, s: (10, 0, b, 8)), ("epoll_wait", lambda b, s: (ep.fileno(), b, 4, 0)),
        ("mincore", lambda b, s: (page, 2 * 4096, b)), ("readlink", lambda b, s: (str(tmp_path / "l"), b, 4096)),
        ("getcwd", lambda b, s: (b, 4096)), ("sched_getaffinity", lambda b, s: (0, 128, b)),
        ("getrandom", lambda b, s: (b, 16, 0)), ("get_robust_list", lambda b, s: (0, b, s)),
        ("get_robust_list", lambda b, s: (0, s, b)), ("getgroups", lambda b, s: (64, b)),
        ("pipe2", lambda b, s: (b, os.O_CLOEXEC)),
        ("socketpair", lambda b, s: (socket.AF_UNIX, socket.SOCK_STREAM, 0, b)),
    ]
    ep.close()
    for x in [fd, r, w] + dups:
        os.close(x)
    del mem


def test_the_kernel_writes_no_more_than_the_table_says(ctx, measured):
    """Runs the calls that write fixed- or argument-sized structures with a
    4 KiB buffer where the table's pointer is, and compares the extent the
    kernel wrote with the table's size: a size too small in the table would
    let a Buffer that passes the check overflow."""
    checked, over = [], []
    for name, args in measured:
        sig = SIGNATURES[name]
        res, ext, datas = _extent(ctx, lambda ch, b, s: getattr(ch, name)(*args(b, s), ret=True))
        assert all(r is not None and r >= 0 for r in res), (name, res)
        if name in ("pipe2", "socketpair"):
            for d in datas:
                os.close(int.from_bytes(d[0:4], "little"))
                os.close(int.from_bytes(d[4:8], "little"))
        probe, scratch = ctx.buffer(4096), ctx.buffer(256)
        given = args(probe, scratch)
        pos = [k for k, a in enumerate(given) if a is probe]
        assert len(pos) == 1, name
        p = sig[pos[0]]
        need = p.need({q.name: a & ((1 << 64) - 1) for q, a in zip(sig, given) if isinstance(a, int)})
        if ext > need:
            over.append((name, p.name, ext, need))
        assert ext > 0 or (name == "getgroups" and res == [0, 0]), (name, p.name)
        checked.append(f"{name}.{p.name}")
    assert not over, over       # (call, pointer, bytes written, the table's size)
    assert len(checked) == len(measured)


# ---- ranges and types of values -----------------------------------------------

def test_buffer_size_and_align(ctx):
    with pytest.raises(ValueError):
        ctx.buffer(-5)
    with pytest.raises(TypeError):
        ctx.buffer(1.5)
    with pytest.raises(ValueError):
        ctx.buffer(8, align=3)
    with pytest.raises(ValueError):
        ctx.buffer(8, align=0)
    with pytest.raises(ValueError):
        Buffer(0, -1)
    assert ctx.buffer(0).read() == b""


@pytest.mark.parametrize("v", [1 << 64, 1 << 70, -(1 << 63) - 1])
def test_words_that_do_not_fit_are_refused_not_wrapped(ctx, v):
    with pytest.raises(ValueError):
        ctx.var(v)
    x = ctx.var(7)
    with pytest.raises(ValueError):
        x.value = v
    assert x.value == 7
    ch = ctx.chain()
    refused(ctx, ch, ValueError, lambda: ch.lseek(0, v, 0))
    refused(ctx, ch, ValueError, lambda: ch.atom(v))                 # nr
    refused(ctx, ch, ValueError, lambda: ch.getpid(flags=v))
    a = ch.getpid()
    with pytest.raises(ValueError):
        a.flags = v
    assert a.flags == 0


def test_the_edges_of_a_word_are_accepted(ctx):
    assert ctx.var((1 << 64) - 1).value == -1 and ctx.var(-(1 << 63)).value == -(1 << 63)
    ch = ctx.chain()
    r = ch.lseek(-1, -1, 0, ret=True)       # fd -1: EBADF whatever the offset
    run_chain(ctx, ch)
    assert r.result == -errno.EBADF


def test_negative_numbers_and_other_types(ctx):
    ch = ctx.chain()
    refused(ctx, ch, ValueError, lambda: ch.atom(-1))
    refused(ctx, ch, TypeError, lambda: ch.atom("getpid"))
    refused(ctx, ch, ValueError, lambda: ch.getpid(flags=0x100))
    refused(ctx, ch, TypeError, lambda: ch.getpid(ret=5))
    refused(ctx, ch, TypeError, lambda: ch.getpid(ret=ctx.buffer(8)))
    refused(ctx, ch, TypeError, lambda: ch.write(1, 1.5, 1))
    a = ch.getpid(ret=False)
    assert a.ret is None
    with pytest.raises(ValueError):
        a.flags = 0x100
    with pytest.raises(TypeError):
        a.next = 5
    with pytest.raises(TypeError):
        a.next = ctx.var()


@pytest.mark.parametrize("kw, exc", [
    ({"ring_slots": 0}, ValueError), ({"ring_slots": -1}, ValueError), ({"ring_slots": 1.5}, TypeError),
    ({"ring_slots": 1 << 62}, ValueError), ({"max_threads": -2}, ValueError),
    ({"max_threads": 1 << 64}, ValueError), ({"arena_size": 0}, ValueError), ({"arena_size": -1}, ValueError),
])
def test_context_arguments(executor, kw, exc, recwarn):
    with pytest.raises(exc):
        Context(backend=executor, **kw)
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]     # no engine left open


def test_arena_alloc():
    ar = Arena(64)
    a = ar.alloc(8)
    with pytest.raises(ValueError):
        ar.alloc(-100)                  # moved the bump pointer backwards: the next block overlapped
    with pytest.raises(ValueError):
        ar.alloc(8, align=3)
    assert ar.alloc(8) == a + 8
    with pytest.raises(ValueError):
        Arena(0)


def test_buffer_write_and_read_stay_inside(ctx):
    b = ctx.buffer(8)
    after = ctx.buffer(8, align=1)
    after.write(b"\xee" * 8)
    with pytest.raises(ValueError):
        b.write(b"x", -4)               # before the buffer
    with pytest.raises(ValueError):
        b.write(array.array("Q", [1, 2]))   # 2 items, 16 bytes
    with pytest.raises(TypeError):
        b.write("text")
    with pytest.raises(ValueError):
        b.read(-9)                      # a failed read's -EBADF
    with pytest.raises(TypeError):
        b.read(1.5)
    b.write(array.array("I", [1, 2]))
    assert b.read() == bytes([1, 0, 0, 0, 2, 0, 0, 0]) and b.read(100) == b.read()
    assert after.read() == b"\xee" * 8


def test_sizes_and_addresses_are_read_only(ctx):
    """A Buffer grown by assignment passed the size check; a larger
    ring_slots made reap() clear words past the ring."""
    b, v, a = ctx.buffer(8), ctx.var(), ctx.chain().getpid()
    for obj, attr in ((b, "size"), (b, "addr"), (v, "addr"), (a, "addr"), (ctx, "ring_slots"),
                      (ctx, "ring_addr")):
        before = getattr(obj, attr)
        with pytest.raises(AttributeError):
            setattr(obj, attr, 1 << 20)
        assert getattr(obj, attr) == before
    ch = ctx.chain()
    refused(ctx, ch, ValueError, lambda: ch.read(0, b, 9))


def test_cstring_allocates_what_it_writes(ctx):
    data = array.array("Q", [1, 2, 3])
    addr = ctx.cstring(data)
    nxt = ctx.buffer(1, align=1)
    assert nxt.addr >= addr + 25
    assert _core.peek(addr, 25) == data.tobytes() + b"\0"


def test_raw_umem_add_refuses_an_increment_that_does_not_fit(executor):
    with Context(backend=executor) as ctx:
        v = ctx.var(5)
        for inc in (1 << 64, 1 << 70, -(1 << 63) - 1):
            with pytest.raises(OverflowError):
                compat.umem_add(v.addr, inc)
            assert v.value == 5
        assert compat.umem_add(v.addr, -1) == 4
        assert compat.umem_add(v.addr, (1 << 64) - 1) == 3
        assert compat.umem_add(v.addr, -(1 << 63)) == (3 - (1 << 63)) & ((1 << 64) - 1)


# ---- the ring's capacity and waits ----------------------------------------------

def test_wait_for_more_entries_than_the_ring_holds(executor):
    with Context(backend=executor, ring_slots=8) as ctx:
        with pytest.raises(ValueError):
            ctx.wait(20, timeout=0.01)     # without a timeout: blocked for ever
        with pytest.raises(ValueError):
            ctx.wait(9, timeout=0.01)
        with pytest.raises(ValueError):
            ctx.wait(-1, timeout=0.01)
        with pytest.raises(TypeError):
            ctx.wait(1.5, timeout=0.01)
        assert ctx.wait(8, timeout=0) == []


@pytest.mark.parametrize("timeout, exc", [(math.nan, ValueError), (-1, ValueError), ("1", TypeError)])
def test_wait_timeouts(ctx, timeout, exc):
    with pytest.raises(exc):
        ctx.wait(0, timeout=timeout)


def test_an_infinite_timeout_waits_like_none(ctx):
    a = ctx.chain().getpid(ret=True)
    a.flags = compat.SYSLET_ASYNC if ctx.backend != "reference" else 0
    r = ctx.exec(a)
    got = ctx.wait(1 if r is None else 0, timeout=math.inf)
    assert (got == [a]) if r is None else (r is a)
    assert a.result == os.getpid()


def test_engine_wait_refuses_a_nan_timeout(engine_executor):
    with compat.Engine(engine_executor) as e:
        with pytest.raises(ValueError):
            e.wait(0, timeout=math.nan)


# ---- what runs: chains and atoms of this context --------------------------------

def test_exec_an_empty_chain_or_something_else(ctx):
    before = ctx.counters()
    with pytest.raises(ValueError):
        ctx.exec(ctx.chain())
    for bad in (ctx.var(), ctx.buffer(88), 0, None, ctx.chain().getpid().addr):
        with pytest.raises(TypeError):
            ctx.exec(bad)
    with pytest.raises(ValueError):
        ctx.exec_many([ctx.chain()])
    with pytest.raises(TypeError):
        ctx.exec_many([ctx.var()])
    with pytest.raises(ValueError):
        ctx.batch([ctx.chain()])
    assert ctx.counters() == before         # nothing ran


def test_chains_atoms_and_memory_of_another_context(ctx, other):
    ch2 = other.chain()
    r2 = other.var(SENTINEL)
    a2 = ch2.getpid(ret=r2)
    for run in (lambda: ctx.exec(ch2), lambda: ctx.exec(a2), lambda: ctx.exec_many([ch2]),
                lambda: ctx.batch([ch2])):
        with pytest.raises(ValueError):
            run()
    assert r2.value == SENTINEL             # nothing ran
    ch = ctx.chain()
    a = ch.getpid()
    refused(ctx, ch, ValueError, lambda: ch.read(0, other.buffer(8), 8))
    refused(ctx, ch, ValueError, lambda: ch.close(other.var(0)))
    refused(ctx, ch, ValueError, lambda: ch.umem_add(a2, 1))
    refused(ctx, ch, ValueError, lambda: ch.getpid(ret=other.var()))
    with pytest.raises(ValueError):
        a.next = a2
    with pytest.raises(ValueError):
        ch.loop_to(a2)
    assert a.next is None


def test_an_atom_view_of_foreign_memory_does_not_run(ctx):
    view = ctx.atom_or_wrap(ctx.chain().getpid().addr + ATOM_SIZE)   # not an atom built here
    with pytest.raises(ValueError):
        ctx.exec(view)


# ---- lifetimes ------------------------------------------------------------------

def test_vars_and_buffers_keep_their_memory_alive(executor):
    ctx = Context(backend=executor)
    arena = weakref.ref(ctx.arena)
    v, b = ctx.var(3), ctx.buffer(32)
    b.write(b"k" * 32)
    ctx.close()
    del ctx
    gc.collect()
    assert arena() is not None
    junk = [_core.ffi.new("char[]", 1 << 16) for _ in range(8)]    # would reuse freed memory
    v.value += 1
    b.write(b"z", 31)
    assert v.value == 4 and b.read() == b"k" * 31 + b"z"
    del v, b, junk
    gc.collect()
    assert arena() is None                  # and it is freed after all


def test_the_engine_keeps_the_memory_its_syslets_use(engine_executor):
    ctx = Context(backend=engine_executor)
    e = ctx.engine
    arena, atoms = weakref.ref(ctx.arena), weakref.ref(ctx._atom_arena)
    del ctx
    gc.collect()
    assert arena() is not None and atoms() is not None
    e.close()
    del e
    gc.collect()
    assert arena() is None and atoms() is None


# ---- the README example -----------------------------------------------------------

def readme_example():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## Python: an open→read→close chain\s+```python\n(.*?)```", text, re.S)
    assert m, "README's Python example not found"
    return m.group(1)


@pytest.mark.parametrize("backend", EXECUTORS)
def test_readme_chain_on_a_missing_file(tmp_path, backend):
    code = readme_example()
    assert "/etc/hostname" in code
    missing = tmp_path / "missing"
    code = code.replace("/etc/hostname", str(missing)).replace("compat.Context()",
                                                               f"compat.Context(backend={backend!r})")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.rstrip().splitlines()[-1].startswith("FileNotFoundError"), p.stderr
    present = tmp_path / "present"
    present.write_bytes(b"hello\n")
    code = code.replace(str(missing), str(present))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "b'hello\\n'\n", (p.stdout, p.stderr)
