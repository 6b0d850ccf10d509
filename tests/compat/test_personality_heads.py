"""Personalities v5 and v6 (LATER_ABIS.md sections 2, 3 and 5): what they
share -- a head named in every call, its ring filled through the head's
kernel_ring_idx -- on every executor (the reference, the C engine on
io_uring and on the pool), each test once per personality.

v5-only and v6-only matters (layouts, numbers, the 80-byte skip) are in
test_personality_v5.py and test_personality_v6.py."""
import ctypes
import errno
import os
import signal
import threading

import pytest

from compat import NR, SYSLET_ASYNC, SYSLET_NO_COMPLETE, SYSLET_SKIP_TO_NEXT_ON_STOP, SYSLET_STOP_ON_ZERO, SYSLET_SYNC
from personality_lib import Head, Pipe, errno_of, set_atom, spawn
from syslet_testlib import PAGE, PROT_NONE, SENTINEL, addr, wait_until, wild

UMEM = {5: 1012, 6: 1022}


def getpid_atom(heads, flags=0):
    a = heads.atoms(1)
    ret = heads.cell(SENTINEL)
    set_atom(a[0], NR["getpid"], ret=ret, flags=flags)
    return a, ret


def page_end(pages, n):
    """An address with exactly ``n`` readable bytes before an unmapped page."""
    a = pages.map(2)
    pages.protect(a + PAGE, 1, PROT_NONE)
    return a + PAGE - n


def copy_prefix(obj, dst, n):
    ctypes.memmove(dst, addr(obj), n)


def untouched(head, ret, kri=0):
    assert ret.value == SENTINEL, "an atom ran"
    assert head.entries() == []
    assert head.ahu.kernel_ring_idx == kri


# ---- async_exec: the 2007 validation order -----------------------------------------

@pytest.mark.parametrize("where", ["NULL", "freed", "kernel_half", "non_canonical", "56 bytes"])
def test_exec_unreadable_head_is_efault_before_everything(heads, pages, where):
    """EFAULT for the head comes first: here the atom has ASYNC|SYNC (EINVAL)."""
    a, ret = getpid_atom(heads, SYSLET_ASYNC | SYSLET_SYNC)
    good = heads.head()
    if where == "56 bytes":     # all of the head but new_thread_eip
        ahu = page_end(pages, 56)
        copy_prefix(good.ahu, ahu, 56)
    else:
        ahu = wild(where, pages)
    assert errno_of(heads.exec, a, ahu) == errno.EFAULT
    untouched(good, ret)


@pytest.mark.parametrize("ring,size", [(None, 64), ("ring", 0), ("ring", 12), ("ring", 4),
                                       ("ring", 7), (None, 0)])
def test_exec_without_a_usable_ring_is_einval_before_the_atom(heads, pages, ring, size):
    """completion_ring NULL or ring_size_bytes not a positive multiple of 8:
    EINVAL, before the (here unreadable) first atom is looked at."""
    h = heads.head()
    h.set_ring(addr(h.ring) if ring else 0, size)
    assert errno_of(heads.exec, wild("freed", pages), h) == errno.EINVAL
    assert errno_of(heads.exec, 0, h) == errno.EINVAL
    assert h.ahu.kernel_ring_idx == 0 and h.entries() == []


def test_exec_without_new_thread_stack_is_einval_before_the_atom(heads, pages):
    """The later kernels refused a head without a stack for the next thread."""
    h = heads.head(stack=0)
    assert errno_of(heads.exec, wild("freed", pages), h) == errno.EINVAL
    a, ret = getpid_atom(heads)
    assert errno_of(heads.exec, a, h) == errno.EINVAL
    untouched(h, ret)
    h.ahu.new_thread_stack = 1          # any non-zero value
    assert heads.exec(a, h) == addr(a)
    assert ret.value == os.getpid()
    assert h.ahu.new_thread_stack == 1


@pytest.mark.parametrize("where", ["NULL", "NULL+8", "freed", "kernel_half", "vsyscall"])
def test_exec_unreadable_first_atom_is_efault(heads, pages, where):
    h = heads.head()
    assert errno_of(heads.exec, wild(where, pages), h) == errno.EFAULT
    assert h.entries() == [] and h.ahu.kernel_ring_idx == 0


def test_exec_partly_readable_first_atom_is_efault_before_its_flags(heads, pages):
    """The whole first atom (header and arg_ptr[] up to its first NULL) must
    be readable; only then are its flags (here ASYNC|SYNC: EINVAL) checked."""
    h = heads.head()
    full = heads.atoms(1)
    cells = [heads.cell(1) for _ in range(3)]
    set_atom(full[0], NR["getpid"], cells, flags=SYSLET_ASYNC | SYSLET_SYNC)
    header = heads.atom_size - 56          # flags, nr, ret_ptr, next
    at = page_end(pages, header + 8)       # arg_ptr[1] lies beyond the page
    copy_prefix(full[0], at, header + 8)
    assert errno_of(heads.exec, at, h) == errno.EFAULT
    assert h.entries() == []


@pytest.mark.parametrize("flags", [SYSLET_ASYNC | SYSLET_SYNC, 0x100, 0x8000_0000,
                                   SYSLET_ASYNC | SYSLET_SYNC | SYSLET_NO_COMPLETE])
def test_exec_first_atom_flags_are_einval(heads, flags):
    h = heads.head()
    a, ret = getpid_atom(heads, flags)
    assert errno_of(heads.exec, a, h) == errno.EINVAL
    untouched(h, ret)


def test_exec_needs_no_registration(heads):
    """No async_register: a fresh context runs a syslet with its head."""
    h = heads.head()
    a, ret = getpid_atom(heads)
    assert heads.exec(a, h) == addr(a)
    assert ret.value == os.getpid()
    assert h.entries() == [] and h.ahu.kernel_ring_idx == 0     # synchronous: nothing published


# ---- async_wait: validation and what it counts ---------------------------------------

def test_wait_validation(heads, pages):
    h = heads.head(slots=4)
    ahu = heads.engine.wait_head
    ab = heads.abi
    for where in ("NULL", "freed", "kernel_half"):
        assert errno_of(ahu, ab, 1, 0, wild(where, pages), timeout=1) == errno.EFAULT
    part = page_end(pages, 56)
    copy_prefix(h.ahu, part, 56)
    assert errno_of(ahu, ab, 0, 0, part, timeout=1) == errno.EFAULT
    assert errno_of(ahu, ab, 1, 4, h.addr, timeout=1) == errno.EINVAL     # user_ring_idx >= N
    assert errno_of(ahu, ab, 1, 1 << 40, h.addr, timeout=1) == errno.EINVAL
    assert errno_of(ahu, ab, 5, 0, h.addr, timeout=1) == errno.EINVAL     # min > N
    assert errno_of(ahu, ab, 0, 4, h.addr, timeout=1) == errno.EINVAL     # even for min 0
    assert heads.wait(h, 0, 3) is True      # min 0: at once, with an empty ring
    for ring, size in ((0, 32), (addr(h.ring), 0), (addr(h.ring), 12)):
        h.set_ring(ring, size)
        assert errno_of(ahu, ab, 1, 0, h.addr, timeout=1) == errno.EINVAL


def test_wait_counts_consecutive_slots_from_user_ring_idx(heads):
    """min consecutive non-NULL slots starting at user_ring_idx, wrapping
    around the ring; a NULL slot ends the count.  (Slots filled by hand: the
    condition holds, or can never hold, so the short timeout decides nothing.)"""
    h = heads.head(slots=4)
    h.ring[0], h.ring[2], h.ring[3] = 0x1000, 0x3000, 0x4000     # slot 1 NULL
    assert heads.wait(h, 2, 3) is True          # slots 3, 0
    assert heads.wait(h, 3, 2) is True          # 2, 3, 0
    assert heads.wait(h, 3, 3, timeout=0.05) is False     # 3, 0, then the NULL slot 1
    assert heads.wait(h, 1, 1, timeout=0.05) is False     # starts at the NULL slot
    h.ring[1] = 0x2000
    assert heads.wait(h, 4, 0) is True          # min == N: the whole ring
    assert heads.wait(h, 4, 2) is True


# ---- atoms: numbers of every atom personality ------------------------------------------

@pytest.mark.parametrize("nr", [1004, 1012, 1022])
def test_the_projects_umem_numbers_add(heads, nr):
    h = heads.head()
    a = heads.atoms(1)
    ret = heads.cell(SENTINEL)
    word = heads.cell(40)
    set_atom(a[0], nr, (heads.cell(addr(word)), heads.cell(2)), ret=ret)
    assert heads.exec(a, h) == addr(a)
    assert (word.value, ret.value) == (42, 42)


@pytest.mark.parametrize("nr", [n for n in range(1000, 1040) if n not in (1004, 1012, 1022)])
def test_the_rest_of_the_projects_range_is_refused(heads, nr):
    """-EINVAL stored, nothing reaches the kernel, the chain goes on."""
    h = heads.head()
    a = heads.atoms(2)
    ret = heads.cell(SENTINEL)
    cnt = heads.cell(0)
    set_atom(a[0], nr, (heads.cell(3),), ret=ret, next=a[1])
    set_atom(a[1], UMEM[heads.abi], (heads.cell(addr(cnt)), heads.cell(1)))
    assert heads.exec(a, h) == addr(a[1])
    assert ret.value == -errno.EINVAL
    assert cnt.value == 1


@pytest.mark.parametrize("name", ["fork", "vfork", "clone", "clone3", "execve", "execveat", "exit",
                                  "exit_group", "rt_sigreturn"])
def test_calls_that_need_the_callers_thread_are_refused(heads, name):
    h = heads.head()
    a, ret = getpid_atom(heads)
    a[0].nr = NR[name]
    assert heads.exec(a, h) == addr(a)
    assert ret.value == -errno.EINVAL


def test_numbers_beyond_the_kernels_word_are_enosys(heads):
    """0x40000000 and up (x32, or the low 32 bits of a larger word) would
    alias another call: unknown."""
    nrs = [0x40000000 + 39, 0x40000000 + 60, 0xFFFFFFFF]
    if heads.abi == 5:
        nrs += [(1 << 32) + 60, (1 << 32) + 231, (1 << 63) + 39]
    for nr in nrs:
        h = heads.head()
        a, ret = getpid_atom(heads)
        a[0].nr = nr
        assert heads.exec(a, h) == addr(a)
        assert ret.value == -errno.ENOSYS, hex(nr)


def test_arguments_are_read_when_the_atom_runs(heads):
    """umem_add changes the word a later atom passes by pointer; results are
    stored before the stop test; SKIP_TO_NEXT_ON_STOP goes to the linearly
    next atom (atom + the personality's size)."""
    h = heads.head()
    a = heads.atoms(4)
    word = heads.cell(-1)
    r = [heads.cell(SENTINEL) for _ in range(4)]
    # 0: word += 1 (0) -> STOP_ON_ZERO with SKIP: goes to a[1], not a[3]
    set_atom(a[0], UMEM[heads.abi], (heads.cell(addr(word)), heads.cell(1)), ret=r[0],
             flags=SYSLET_STOP_ON_ZERO | SYSLET_SKIP_TO_NEXT_ON_STOP, next=a[3])
    # 1: word += 5 (5), next a[2]
    set_atom(a[1], UMEM[heads.abi], (heads.cell(addr(word)), heads.cell(5)), ret=r[1], next=a[2])
    # 2: lseek(-1, word, 0): the offset cell is read now (EBADF either way), then stop
    set_atom(a[2], NR["lseek"], (heads.cell(-1), word, heads.cell(0)), ret=r[2],
             flags=SYSLET_STOP_ON_ZERO, next=a[3])
    set_atom(a[3], NR["getpid"], ret=r[3])
    assert heads.exec(a, h) == addr(a[3])
    assert [c.value for c in r] == [0, 5, -errno.EBADF, os.getpid()]
    assert word.value == 5


# ---- the ring: kernel_ring_idx, one entry per async syslet ----------------------------------

def test_an_async_syslet_publishes_its_final_atom_into_its_heads_ring(engine_heads):
    heads = engine_heads
    h = heads.head(slots=4)
    a = heads.atoms(3)
    rets = [heads.cell(SENTINEL) for _ in range(3)]
    set_atom(a[0], NR["getpid"], ret=rets[0], flags=SYSLET_ASYNC, next=a[1])
    set_atom(a[1], NR["getppid"], ret=rets[1], next=a[2])
    set_atom(a[2], NR["getpid"], ret=rets[2])
    assert heads.exec(a, h) == 0
    assert heads.wait(h, 1, 0)
    assert heads.settle()
    assert list(h.ring) == [addr(a[2]), 0, 0, 0]       # only the final atom
    assert h.ahu.kernel_ring_idx == 1
    assert [c.value for c in rets] == [os.getpid(), os.getppid(), os.getpid()]
    assert h.ahu.new_thread_stack != 0          # never consumed
    assert heads.counters()["published"] == 1


@pytest.mark.parametrize("kri,slot", [(0, 0), (3, 3), (4, 0), (22, 2), ((1 << 64) - 1, 3)])
def test_kernel_ring_idx_is_read_from_the_head_and_written_back_wrapped(engine_heads, kri, slot):
    """The producer index is the head's word: that slot is filled and the next
    wrapped index (0 ... N-1) stored back; one >= N counts modulo N."""
    heads = engine_heads
    h = heads.head(slots=4)
    h.ahu.kernel_ring_idx = kri
    h.ahu.user_ring_idx = slot
    a, ret = getpid_atom(heads, SYSLET_ASYNC)
    assert heads.exec(a, h) == 0
    assert heads.wait(h, 1, slot)
    assert heads.settle()
    assert h.ring[slot] == addr(a) and len(h.entries()) == 1
    assert h.ahu.kernel_ring_idx == (slot + 1) % 4


def test_a_program_that_rezeroes_its_ring_and_indices_starts_cleanly(engine_heads):
    heads = engine_heads
    h = heads.head(slots=4)
    atoms = [getpid_atom(heads, SYSLET_ASYNC)[0] for _ in range(3)]
    for a in atoms:
        heads.run(a, h)
    assert h.ahu.kernel_ring_idx == 3 and h.ahu.user_ring_idx == 3
    ctypes.memset(addr(h.ring), 0, 32)
    h.ahu.kernel_ring_idx = h.ahu.user_ring_idx = 0
    assert heads.exec(atoms[0], h) == 0
    assert heads.wait(h, 1, 0)
    assert list(h.ring) == [addr(atoms[0]), 0, 0, 0]
    assert h.ahu.kernel_ring_idx == 1


def test_synchronous_and_no_complete_syslets_publish_nothing(engine_heads):
    heads = engine_heads
    h = heads.head(slots=4)
    a, ret = getpid_atom(heads)
    assert heads.exec(a, h) == addr(a)
    b, ret_b = getpid_atom(heads, SYSLET_ASYNC | SYSLET_NO_COMPLETE)
    assert heads.exec(b, h) == 0
    assert wait_until(lambda: ret_b.value == os.getpid())
    assert heads.settle()
    c, _ = getpid_atom(heads, SYSLET_ASYNC)     # a later entry lands in slot 0
    assert heads.exec(c, h) == 0
    assert heads.wait(h, 1, 0)
    assert list(h.ring) == [addr(c), 0, 0, 0] and h.ahu.kernel_ring_idx == 1
    assert heads.counters()["published"] == 1


def test_the_head_is_read_when_the_syslet_ends_not_copied(engine_heads):
    """An async syslet remembers the head's address and reads its ring and
    index when it ends: here they changed meanwhile."""
    heads = engine_heads
    h = heads.head(slots=4)
    other = heads.keep((ctypes.c_uint64 * 8)())
    p = Pipe()
    try:
        a = heads.atoms(1)
        buf = heads.keep(ctypes.create_string_buffer(8))
        ret = heads.cell(SENTINEL)
        set_atom(a[0], NR["read"], (heads.cell(p.r), heads.cell(addr(buf)), heads.cell(8)), ret=ret)
        assert heads.exec(a, h) == 0            # the pipe is empty: it went async
        h.set_ring(addr(other), 64)
        h.ahu.kernel_ring_idx = 5
        os.write(p.w, b"abc")
        assert heads.wait(h, 1, 5)
        assert heads.settle()
        assert list(other) == [0, 0, 0, 0, 0, addr(a), 0, 0]
        assert h.entries() == []                # the first ring got nothing
        assert h.ahu.kernel_ring_idx == 6
        assert (ret.value, buf.raw[:3]) == (3, b"abc")
    finally:
        p.close()


# ---- backpressure ---------------------------------------------------------------------

def test_a_full_ring_makes_the_producer_wait_never_overwrite(engine_heads):
    """The slot at kernel_ring_idx is taken: the entry waits (counted once),
    no slot is overwritten and no other free slot is used, kernel_ring_idx
    stays; when the consumer NULLs that slot the entry lands there."""
    heads = engine_heads
    h = heads.head(slots=4)
    h.ring[0] = 0x1111          # unconsumed entries of the program's
    h.ring[2] = 0x2222
    a, ret = getpid_atom(heads, SYSLET_ASYNC)
    before = heads.counters()["ring_full_waits"]
    assert heads.exec(a, h) == 0
    assert wait_until(lambda: heads.counters()["ring_full_waits"] == before + 1, 10)
    assert ret.value == os.getpid()             # it ran; only the entry waits
    assert list(h.ring) == [0x1111, 0, 0x2222, 0]
    assert h.ahu.kernel_ring_idx == 0
    assert heads.engine.inflight() == 0
    h.ring[0] = 0                               # the consumer takes its entry
    assert heads.wait(h, 1, 0)
    assert list(h.ring) == [addr(a), 0, 0x2222, 0]
    assert h.ahu.kernel_ring_idx == 1
    assert heads.counters()["ring_full_waits"] == before + 1


def test_several_entries_wait_for_a_full_ring_and_none_is_lost(engine_heads):
    heads = engine_heads
    h = heads.head(slots=2)
    h.ring[0] = 0x1111          # the program has not consumed slot 0
    atoms = []
    for _ in range(3):
        a, _ = getpid_atom(heads, SYSLET_ASYNC)
        assert heads.exec(a, h) == 0
        atoms.append(a)
    assert heads.settle()       # all ran; their entries wait
    assert list(h.ring) == [0x1111, 0] and h.ahu.kernel_ring_idx == 0
    h.ring[0] = 0               # consumed
    got = []
    while len(got) < 3:
        assert heads.wait(h, 1, timeout=10)
        got += h.reap()
    assert sorted(got) == sorted(addr(a) for a in atoms)
    assert h.ahu.kernel_ring_idx == 1 and h.entries() == []


def test_a_full_ring_holds_back_only_its_own_heads_entries(engine_heads):
    """Head A's ring is full; syslets of head B, from other threads, are
    published meanwhile; A's entry comes when its slot is freed."""
    heads = engine_heads
    ha = heads.head(slots=1)
    ha.ring[0] = 0x1111
    a, _ = getpid_atom(heads, SYSLET_ASYNC)
    before = heads.counters()["ring_full_waits"]
    assert spawn(heads.exec, a, ha).result() == 0
    assert wait_until(lambda: heads.counters()["ring_full_waits"] > before, 10)
    hb = heads.head(slots=8)

    def run_b(n):
        out = []
        for _ in range(n):
            b, _ = getpid_atom(heads, SYSLET_ASYNC)
            out.append(heads.run(b, hb)[0] == addr(b))
        return out

    assert spawn(run_b, 20).result(20) == [True] * 20
    assert list(ha.ring) == [0x1111]
    ha.ring[0] = 0
    assert heads.wait(ha, 1, 0)
    assert list(ha.ring) == [addr(a)]


def test_several_heads_from_several_threads(engine_heads):
    """Four threads, each with its own head and ring of 4 slots, each running
    60 async syslets and reaping its ring fio's way (slot at user_ring_idx,
    NULL it, advance; async_wait(1, user_ring_idx) when empty)."""
    heads = engine_heads

    def worker(k):
        h = heads.head(slots=4)
        atoms = heads.atoms(60)
        rets = [heads.cell(SENTINEL) for _ in range(60)]
        seen = []
        for i in range(60):
            set_atom(atoms[i], NR["gettid"], ret=rets[i], flags=SYSLET_ASYNC)
            assert heads.exec(atoms[i], h) == 0
            seen += h.reap()
        while len(seen) < 60:
            assert heads.wait(h, 1, timeout=10)
            seen += h.reap()
        return h, seen, [addr(a) for a in atoms]

    ws = [spawn(worker, k) for k in range(4)]
    results = [w.result(60) for w in ws]
    for h, seen, mine in results:
        assert sorted(seen) == sorted(mine)     # exactly its own, each once
        assert h.entries() == []
    assert heads.settle()


def test_wait_returns_once_a_completion_arrives(engine_heads):
    heads = engine_heads
    h = heads.head(slots=4)
    p = Pipe()
    try:
        a = heads.atoms(1)
        buf = heads.keep(ctypes.create_string_buffer(8))
        set_atom(a[0], NR["read"], (heads.cell(p.r), heads.cell(addr(buf)), heads.cell(8)))
        assert heads.exec(a, h) == 0
        w = spawn(heads.wait, h, 1, 0, 20.0)
        os.write(p.w, b"x")
        assert w.result(30) is True
        assert h.ring[0] == addr(a)
    finally:
        p.close()


# ---- async_thread ---------------------------------------------------------------------

def test_async_thread_parks_until_a_signal(engine_heads):
    """The calling thread sleeps like an idle cachemiss thread; a handled
    signal ends it with EINTR.  new_thread_stack is never consumed."""
    heads = engine_heads
    h = heads.head()
    old = signal.signal(signal.SIGUSR1, lambda *a: None)
    try:
        tid = []

        def park():
            tid.append(threading.get_native_id())
            return errno_of(heads.engine.async_thread, 0, h.addr)

        w = spawn(park)
        assert wait_until(lambda: tid, 5)
        # Signals until it returns (one sent before it sleeps is just handled).
        for _ in range(500):
            signal.pthread_kill(w.ident, signal.SIGUSR1)
            w.join(0.02)
            if not w.is_alive():
                break
        assert w.result() == errno.EINTR
        assert h.ahu.new_thread_stack != 0
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_async_thread_unreadable_head_is_efault(heads, pages):
    for where in ("NULL", "freed", "kernel_half"):
        assert errno_of(heads.engine.async_thread, 0, wild(where, pages)) == errno.EFAULT


def test_v1_unregister_drains_only_the_v1_heads_syslets(engine_heads):
    """A context serves all personalities at once (the drop-in has one per
    process).  async_unregister waits for the syslets of its own head
    (SYSLET_SPEC 5), not for an entry of another head's full ring nor for a
    v7 call that is still pending."""
    import compat.v7
    from personality_lib import Ring7
    heads = engine_heads
    e = heads.engine
    v1ring = heads.keep((ctypes.c_uint64 * 4)())
    e.register(addr(v1ring), 32)
    h = heads.head(slots=1)
    h.ring[0] = 0x1111                          # full, not consumed yet
    a, _ = getpid_atom(heads, SYSLET_ASYNC)
    before = heads.counters()["ring_full_waits"]
    assert heads.exec(a, h) == 0
    assert wait_until(lambda: heads.counters()["ring_full_waits"] > before, 10)
    p = Pipe()
    try:
        ring7 = heads.keep(Ring7(2))
        regs = compat.v7.indirect_registers(0, p.r, addr(heads.keep(ctypes.create_string_buffer(4))), 4)
        params = compat.v7.indirect_params()
        params.syslet = compat.v7.syslet_args(ring7.addr, 1, compat.v7.syslet_frame(1, 1))
        assert errno_of(e.indirect, addr(regs), addr(params), 32, 0) == compat.v7.ESYSLETPENDING
        from compat import syslet_uatom
        v1atom = heads.keep(syslet_uatom())
        set_atom(v1atom, NR["getpid"], flags=SYSLET_ASYNC)
        assert e.exec(addr(v1atom)) == 0
        assert e.unregister(addr(v1ring), 32, timeout=10) == 0
        assert list(v1ring) == [addr(v1atom), 0, 0, 0]
        assert list(h.ring) == [0x1111] and ring7.mem.kernel_head == 0     # still waiting
    finally:
        os.write(p.w, b"done")
        h.ring[0] = 0
        assert heads.wait(h, 1, 0)
        assert wait_until(lambda: ring7.mem.kernel_head == 1, 10)
        p.close()


def test_a_v1_heads_thread_limit_ends_with_its_unregistration(engine_heads):
    """max_nr_threads is an argument of v1's async_register: once that head
    is unregistered, syslets of the per-call heads run as in a context that
    never registered (D36).  Eight syslets each block on a read of its own
    empty pipe; only the last pipe is written: under a limit of one thread
    the last read waits behind the first, which never ends."""
    heads = engine_heads
    ring = (ctypes.c_uint64 * 4)()
    heads.engine.register(addr(ring), ctypes.sizeof(ring), 1)
    heads.engine.unregister(addr(ring), ctypes.sizeof(ring), timeout=10)
    h = heads.head(slots=16)
    pipes = [Pipe() for _ in range(8)]
    try:
        bufs = [heads.keep(ctypes.create_string_buffer(8)) for _ in pipes]
        rets = [heads.cell(SENTINEL) for _ in pipes]
        atoms = []
        for p, b, r in zip(pipes, bufs, rets):
            a = heads.atoms(1)
            set_atom(a[0], NR["read"], [heads.cell(p.r), heads.cell(addr(b)), heads.cell(8)],
                     ret=r, flags=SYSLET_ASYNC)
            assert heads.exec(a, h) == 0
            atoms.append(a)
        os.write(pipes[-1].w, b"last one")
        assert heads.wait(h, 1, 0, timeout=10), "the last read waited behind the others"
        assert h.reap() == [addr(atoms[-1])]
        assert rets[-1].value == 8 and bufs[-1].raw == b"last one"
        assert [r.value for r in rets[:-1]] == [SENTINEL] * 7
        for p in pipes[:-1]:
            os.write(p.w, b"x")
        assert wait_until(lambda: len(h.entries()) == 7, 10)
        assert sorted(h.reap()) == sorted(addr(a) for a in atoms[:-1])
        assert [r.value for r in rets[:-1]] == [1] * 7
        assert heads.settle()
    finally:
        for p in pipes:
            p.close()
