"""Random-chain fuzzer for the syslet engine (run as a subprocess).

    python fuzz_driver.py --mode engine|raw|c --backend io_uring|threadpool
                          [--abi v1|v5|v6|v7] [--chains N] [--seconds S] [--seed K]
                          [--hostile] [--watchdog S] [--inject-hang BATCH]

Modes (the entry point fed with random input):

* ``engine``: ``compat.Engine(backend)`` built with the backend explicitly,
  ``exec`` and ``exec_batch``;
* ``raw``: the raw API on the default context (``compat.async_register`` /
  ``async_exec`` / ``async_unregister``);
* ``c``: libsyslet's exported C functions through ctypes (``async_register``,
  ``async_exec``, ``async_unregister``, and ``syscall(1001, atom)`` through
  its syscall() interposer); compat is not imported in this mode.

Personalities (``--abi``, LATER_ABIS.md): ``v1`` registers a head per batch
(the default); ``v5`` and ``v6`` name a head in every exec -- up to four
valid heads per batch, each with its ring, and broken ones (unreadable,
ring NULL, ring_size_bytes not a multiple of 8, new_thread_stack 0) --
with their atom layout (v6: 80 bytes, u32 flags and nr), their numbers
(v5: 282 umem_add, 280/281/283 refused; v6: 288, 286/287/289) and SKIP by
their atom size; in mode ``c`` the atoms lose NO_COMPLETE, so every chain
that went async publishes exactly one entry and async_wait_v5/_v6 can wait
for them.  ``v7`` fuzzes indirect(): random calls by value from the same
menu, plain calls with file_flags, and broken registers, params, paramslen,
flags, frames and rings, checked against a model of LATER_ABIS.md section
4 (pending calls through their ring entries).  Modes engine and c.

Each batch lays out up to 48 random chains in one mmap'ed arena whose
regions are separated by PROT_NONE guard pages, runs them, drains the head
(unregister), then checks every chain against a sequential model of
SYSLET_SPEC.md section 2 (see ``check_chain``).  The process must survive;
the last stdout line is a JSON summary with the failures found.

Hostile conditions (``--hostile``, issue 13 item 6; class ``Hostile``):
the chains' descriptor arguments are half the time numbers of a pool of
odd kinds (regular, O_DIRECT, directory, /dev/zero, /dev/null, epoll,
io_uring, inotify, eventfd, timerfd, signalfd, pipe ends, stream and
datagram sockets, pty master and slave, procfs, sysfs -- all non-blocking
or never blocking, so a native call never waits for ever), numbers we
closed, and the engine's own descriptors (every call on an io_uring one,
fstat/lseek/fsync and close on the others).  Between batches, after the
drain: new kinds dup2'ed over pool numbers (the number is reused behind
the engine's back), closes, dup2 over and close of the engine's
descriptors, ``close_range(3, ~0U)`` (and, in v1 runs, sometimes right
after the exec while syslets run), and three far-away pages (getpid atoms,
argument and result cells that chains point into) unmapped, mapped again
(MAP_FIXED) or mapped read-only.  The model asks the native call, after
the batch, for every read/write/pread64/pwrite64/lseek/fstat/fsync/
fdatasync on a kind whose answer depends only on its arguments (and fstat
on any), and checks that no descriptor of ours was closed or replaced by
the engine.  ``FUZZ_HOSTILE_OFF`` (comma list: reuse, engine, engine_atoms,
engine_close, engine_rw, close_range, mid, wild) turns steps off to bisect
a failure.

Watchdog (``--watchdog S``, default 20): a batch that does not end in S
seconds is a hang: the last stdout line is a JSON object with "hang": true,
the seed, the batch's chains (those that went async and published nothing
first) and the last hostile steps; all threads' stacks and where each
waits go to stderr, and the process exits with status 3.  ``--inject-hang
N`` makes batch N start with a chain that waits for ever (the watchdog's
self-test).  The seed is also printed to stderr at start (for a crash).

Safety: atom numbers come from a menu of harmless calls plus refused,
unknown and >= 2**30 numbers.  Every argument of a menu call has a *kind*
whose cells only ever hold harmless values (our own fds, buffers inside the
guarded scratch region, absolute paths in our temp directory); the argument
*pointers* are random (valid cell, NULL where harmless, guard page, below
64 KiB, non-canonical, kernel half, random 64-bit, read-only page).  Reads
land only in the scratch region, umem_add only in counter cells or scratch,
so atoms and argument cells never change while a chain runs (the model can
predict every deterministic result exactly).
"""
import argparse
import collections
import ctypes
import errno
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time

PAGE = 4096
ATOM = 88
M64 = (1 << 64) - 1
SENTINEL = 0x5A5A5A5A5A5A5A5A
NR_LIMIT = 1 << 30

ASYNC, SYNC, NO_COMPLETE = 0x01, 0x02, 0x04
S_NONZERO, S_ZERO, S_NEG, S_NONPOS, SKIP = 0x08, 0x10, 0x20, 0x40, 0x80
STOP_MASK = 0x78

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.syscall.restype = ctypes.c_long

# the project's range 1000-1039 but umem_add's numbers (LATER_ABIS.md 1)
REFUSED = (15, 56, 57, 58, 59, 60, 231, 322, 435) + tuple(
    n for n in range(1000, 1040) if n not in (1004, 1012, 1022))
#: Numbers that run umem_add in an atom (configure() adds the personality's).
UMEM = (1004, 1012, 1022)
ABI = 1                         # the personality fuzzed (configure())
FLAG_BITS = 64                  # width of an atom's flags word
REFUSED_ERR = errno.EINVAL      # what the model expects from them (--mutate: ENOSYS)
#: Numbers that alias dangerous calls if the engine passed them on (the
#: kernel keeps the low 32 bits; bit 30 selects x32): must be -ENOSYS.
ALIASES = ((1 << 32) + 60, (1 << 32) + 231, (1 << 32) + 62, (1 << 32) + 57,
           NR_LIMIT + 60, NR_LIMIT + 231, NR_LIMIT + 62, (1 << 63) + 59, M64, NR_LIMIT)
#: Candidate unknown numbers (checked against the kernel at start-up).
#: (Not 335/336: uretprobe/uprobe on 6.11+ kernels; 335 raises SIGILL when
#: called outside a uprobe trampoline -- also from a plain syscall().)
UNKNOWN_CANDIDATES = (360, 400, 423, 999, 1040, 1041, 1100, 4096, 65535, NR_LIMIT - 1)

# argument kinds
ANY, FD_R, FD_W, FD_PW, FD_ANY, FD_BAD, DIRFD, BUF, SRC, LEN, OFF, POFF, WHENCE, \
    PATH, OFLAGS, MODE, UADDR, INC, CLKID = range(19)

#: nr -> (name, argument kinds, result class)
MENU = {
    39: ("getpid", (), "pid"), 110: ("getppid", (), "ppid"), 186: ("gettid", (), "pos"),
    102: ("getuid", (), "uid"), 104: ("getgid", (), "gid"), 107: ("geteuid", (), "euid"),
    108: ("getegid", (), "egid"), 24: ("sched_yield", (), "zero"), 111: ("getpgrp", (), "pgrp"),
    63: ("uname", (BUF,), "buf0"), 99: ("sysinfo", (BUF,), "buf0"),
    228: ("clock_gettime", (CLKID, BUF), "any"),
    0: ("read", (FD_R, BUF, LEN), "rw"), 1: ("write", (FD_W, SRC, LEN), "rw"),
    17: ("pread64", (FD_R, BUF, LEN, OFF), "rw"), 18: ("pwrite64", (FD_PW, SRC, LEN, POFF), "rw"),
    2: ("open", (PATH, OFLAGS, MODE), "fd"), 257: ("openat", (DIRFD, PATH, OFLAGS, MODE), "fd"),
    3: ("close", (FD_BAD,), "ebadf"), 74: ("fsync", (FD_ANY,), "any"),
    75: ("fdatasync", (FD_ANY,), "any"), 8: ("lseek", (FD_ANY, OFF, WHENCE), "any"),
    5: ("fstat", (FD_ANY, BUF), "any"), 1004: ("umem_add", (UADDR, INC), "umem"),
    1012: ("umem_add", (UADDR, INC), "umem"), 1022: ("umem_add", (UADDR, INC), "umem"),
}
MENU_NRS = sorted(MENU)
FD_KINDS = (FD_R, FD_W, FD_PW, FD_ANY, FD_BAD, DIRFD)
#: Struct sizes the kernel writes for the "buf0" calls.
BUF0_SIZE = {63: 390, 99: 112}


def configure(abi):
    """Personality ``abi`` (1, 5, 6, 7): atom size, numbers, flag width."""
    global ABI, ATOM, REFUSED, UMEM, ALIASES, FLAG_BITS, MENU_NRS
    ABI = abi
    extra_umem = {5: (282,), 6: (288,)}.get(abi, ())
    extra_refused = {5: (280, 281, 283), 6: (286, 287, 289)}.get(abi, ())
    UMEM = (1004, 1012, 1022) + extra_umem
    REFUSED = (15, 56, 57, 58, 59, 60, 231, 322, 435) + tuple(
        n for n in range(1000, 1040) if n not in UMEM) + extra_refused
    for n in extra_umem:
        MENU[n] = ("umem_add", (UADDR, INC), "umem")
    if abi == 7:            # no atoms: umem_add's numbers are refused like the rest
        REFUSED = (15, 56, 57, 58, 59, 60, 231, 322, 435) + tuple(range(1000, 1040))
        UMEM = ()
        for n in (1004, 1012, 1022):
            del MENU[n]
    if abi == 6:            # flags and nr are u32
        ATOM = 80
        FLAG_BITS = 32
        ALIASES = tuple(a for a in ALIASES if a < 1 << 32)
    MENU_NRS = sorted(MENU)


def signed(v):
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def stop_holds(flags, r):
    return bool((flags & S_NONZERO and r != 0) or (flags & S_ZERO and r == 0)
                or (flags & S_NEG and r < 0) or (flags & S_NONPOS and r <= 0))


def probe_enosys(nr):
    """True if system call ``nr`` fails with ENOSYS here (tried in a forked
    child, so a number the kernel does know cannot hurt this process)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if raw_sys(nr) == -errno.ENOSYS else 1)
    _, st = os.waitpid(pid, 0)
    return os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0


def raw_sys(nr, *args):
    a = [ctypes.c_long(signed(x)) for x in args] + [ctypes.c_long(0)] * (6 - len(args))
    r = libc.syscall(ctypes.c_long(signed(nr)), *a)
    return -ctypes.get_errno() if r == -1 else r


# ---------------------------------------------------------------------------
# memory

class Arena:
    """One mapping: each region is followed by a PROT_NONE guard page."""

    def __init__(self):
        # atoms: pages that hold a whole number of atoms (88: 11 pages, 80: 10)
        self.REGIONS = (("atoms", 11 if ATOM == 88 else 10), ("ro", 2), ("cells", 8), ("rets", 1),
                        ("paths", 3), ("scratch", 4), ("ring", 1), ("ahu", 1))
        total = 1 + sum(n + 1 for _, n in self.REGIONS)
        base = libc.mmap(None, total * PAGE, 0, 0x22, -1, 0)     # PROT_NONE, private anon
        assert base not in (None, ctypes.c_void_p(-1).value)
        self.base = base
        self.guards = [base]
        off = base + PAGE
        for name, n in self.REGIONS:
            setattr(self, name, off)
            assert libc.mprotect(off, n * PAGE, 3) == 0
            setattr(self, name + "_size", n * PAGE)
            off += n * PAGE
            self.guards.append(off)
            off += PAGE
        self.slots = self.atoms_size // ATOM                      # 512, ends at the guard
        assert self.slots * ATOM == self.atoms_size

    def write(self, addr, data):
        ctypes.memmove(addr, bytes(data), len(data))

    def read(self, addr, n):
        return ctypes.string_at(addr, n)

    def protect_ro(self, addr, size):
        assert libc.mprotect(addr, size, 1) == 0


def pack_atom(flags, nr, ret, nxt, argp):
    argp = list(argp) + [0] * (6 - len(argp))
    if ATOM == 80:          # v6: flags and nr u32, then u64s
        return struct.pack("<IIQQ6QQ", flags & 0xFFFFFFFF, nr & 0xFFFFFFFF, ret & M64, nxt & M64,
                           *(a & M64 for a in argp), 0)
    return struct.pack("<11Q", flags & M64, nr & M64, ret & M64, nxt & M64,
                       *(a & M64 for a in argp), 0)


class World:
    """Arena, fds, paths and the address classes the generator draws from."""

    def __init__(self, rng):
        self.rng = rng
        self.ar = Arena()
        self.tmp = tempfile.mkdtemp(prefix="syslet-fuzz-")
        self.file = os.path.join(self.tmp, "data")
        with open(self.file, "wb") as f:
            f.write(os.urandom(20000))
        self.hostile = None         # a Hostile (--hostile), set once the entry point exists
        self.open_own()
        self.baseline_fds = set(int(x) for x in os.listdir("/proc/self/fd"))
        self.bad_fds = (-1, 1 << 20, 0x7FFFFFFF, -2)
        ar = self.ar
        # read-only atoms: getpid, no ret, no next (chain i's "ro" successor is ro atom i)
        self.ro_atoms = [ar.ro + i * ATOM for i in range(ar.ro_size // ATOM)]
        ar.write(ar.ro, pack_atom(0, 39, 0, 0, ()) * len(self.ro_atoms))
        ar.protect_ro(ar.ro, ar.ro_size)
        # paths: absolute, inside our temp dir; the last one runs into the guard
        paths = [self.file, self.tmp, os.path.join(self.tmp, "new0"),
                 os.path.join(self.tmp, "new1"), os.path.join(self.tmp, "nope", "x"), "",
                 self.tmp + "/" + "n" * 300, self.tmp + "/" + "/".join(["d"] * 1000),
                 self.tmp + "/" + "/".join(["d"] * 2100)]           # > PATH_MAX
        self.path_addrs = []
        blob = b""
        for p in paths:
            self.path_addrs.append(ar.paths + len(blob))
            blob += p.encode() + b"\0"
        tail = b"/" + b"x" * 40                                     # unterminated
        ar.write(ar.paths, blob)
        ar.write(ar.paths + ar.paths_size - len(tail), tail)
        self.path_addrs.append(ar.paths + ar.paths_size - len(tail))
        assert len(blob) + len(tail) < ar.paths_size
        ar.protect_ro(ar.paths, ar.paths_size)

    def open_own(self):
        """The world's own descriptors (again after a close_range)."""
        self.fd_zero = os.open("/dev/zero", os.O_RDONLY)
        self.fd_null = os.open("/dev/null", os.O_WRONLY)
        self.fd_ro = os.open(self.file, os.O_RDONLY)
        self.fd_rw = os.open(self.file, os.O_RDWR)
        self.fd_dir = os.open(self.tmp, os.O_RDONLY | os.O_DIRECTORY)

    def own_fds(self):
        return {self.fd_zero: "zero", self.fd_null: "null", self.fd_ro: "reg", self.fd_rw: "reg",
                self.fd_dir: "dir"}

    # -- pointer classes -----------------------------------------------------
    def bad_ptr(self):
        """An address no access can succeed at (never NULL)."""
        r = self.rng
        h = self.hostile
        if h is not None and h.wild.state == "none" and r.random() < 0.1:
            return h.wild.any_addr(r)                               # unmapped now
        c = r.randrange(9)
        if c == 0:
            return r.choice(self.ar.guards) + 8 * r.randrange(PAGE // 8)
        if c == 1:
            return r.choice((8, 16, 0x1000, 0xFFF8, 0x8000))         # below mmap_min_addr
        if c == 2:
            return r.choice((0x0000800000000000, 0x00007FFFFFFFFFF8 + 8, 0x1234567890ABCDE8))
        if c == 3:
            return 0xFFFF800000000000 + 8 * r.randrange(1 << 20)    # kernel half
        if c == 4:
            return 0xFFFFFFFFFF600000                               # vsyscall
        if c == 5:
            return r.getrandbits(64) | (1 << 63)
        if c == 6:
            return r.getrandbits(64) & ~7 | (1 << 62)
        if c == 7:
            return M64 - 7
        return r.choice(self.ar.guards) + r.randrange(PAGE)          # unaligned in a guard

    def unwritable(self):
        """Unwritable but maybe readable (read-only pages included)."""
        if self.rng.random() < 0.3:
            return self.ar.ro + 8 * self.rng.randrange(self.ar.ro_size // 8)
        h = self.hostile
        if h is not None and h.wild.state == "ro" and self.rng.random() < 0.2:
            return h.wild.any_addr(self.rng)                        # mapped read-only now
        return self.bad_ptr()

    def value(self, kind, chain):
        """A harmless value for an argument of this kind."""
        r = self.rng
        w = self
        if kind in FD_KINDS and w.hostile is not None and r.random() < 0.5:
            v = w.hostile.fd_value(kind)
            if v is not None:
                return v
        if kind == ANY:
            return r.choice((0, 1, 7, M64, r.getrandbits(64), r.randrange(1 << 16)))
        if kind == FD_R:
            return r.choice((w.fd_zero, w.fd_zero, w.fd_ro, w.fd_rw, w.fd_dir, w.fd_null) + w.bad_fds)
        if kind == FD_W:
            return r.choice((w.fd_null, w.fd_null, w.fd_ro, w.fd_dir) + w.bad_fds)
        if kind == FD_PW:
            return r.choice((w.fd_rw, w.fd_null, w.fd_ro) + w.bad_fds)
        if kind == FD_ANY:
            return r.choice((w.fd_zero, w.fd_null, w.fd_ro, w.fd_rw, w.fd_dir) + w.bad_fds)
        if kind == FD_BAD:
            return r.choice(w.bad_fds)
        if kind == DIRFD:
            return r.choice((-100, w.fd_dir, w.fd_ro) + w.bad_fds)
        if kind in (BUF, SRC):
            c = r.randrange(10)
            if c < 6:
                return w.ar.scratch + 8 * r.randrange(w.ar.scratch_size // 8)
            if c == 6 and kind == SRC:
                return w.ar.ro + r.randrange(64)
            if c == 7:
                return 0
            return w.unwritable() if kind == BUF else w.bad_ptr()
        if kind == LEN:
            return r.choice((0, 1, r.randrange(1, 4096), r.randrange(4096, 20000),
                             1 << 31, (1 << 32) + 5, M64, 0x7FFFF000 + 1))
        if kind == OFF:
            return r.choice((0, r.randrange(30000), M64, 1 << 62, -5 & M64))
        if kind == POFF:
            return r.choice((0, r.randrange(60000), -5 & M64))
        if kind == WHENCE:
            return r.choice((0, 1, 2, 3, 4, 99))
        if kind == PATH:
            return r.choice(w.path_addrs + [0, w.bad_ptr()])
        if kind == OFLAGS:
            return r.choice((os.O_RDONLY, os.O_RDONLY | os.O_CLOEXEC, os.O_RDWR,
                             os.O_WRONLY | os.O_CREAT, os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                             os.O_DIRECTORY, os.O_PATH, r.getrandbits(32),
                             os.O_RDWR | 0o20000000 | os.O_DIRECTORY))   # O_TMPFILE
        if kind == MODE:
            return r.choice((0, 0o600, r.getrandbits(32)))
        if kind == UADDR:
            c = r.randrange(6)
            if c < 3:
                return chain.counters[1]
            if c == 3:
                return w.ar.scratch + 8 * r.randrange(w.ar.scratch_size // 8)
            if c == 4:
                return w.unwritable()
            return 0
        if kind == INC:
            return r.choice((1, M64, 0, r.getrandbits(64), r.randrange(100)))
        if kind == CLKID:
            return r.choice((0, 1, 4, 7, 99, M64))
        raise AssertionError(kind)

    def cleanup(self):
        """Closes the world's descriptors and removes its directory."""
        for fd in (self.fd_zero, self.fd_null, self.fd_ro, self.fd_rw, self.fd_dir):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def close_chain_fds(self):
        """Closes what open/openat atoms opened (only files under our temp dir)."""
        n = 0
        mine = set(self.own_fds()) | (self.hostile.mine() if self.hostile else set())
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in mine or (fd in self.baseline_fds and not self.hostile):
                continue
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(self.tmp):
                os.close(fd)
                n += 1
        return n


# ---------------------------------------------------------------------------
# hostile conditions (--hostile)

#: Kinds whose every answer to the menu's calls depends only on the arguments
#: (no data, no position that the calls change): the model asks the native
#: call for those (a differential check, made after the batch).
#: (Not a hole, a number we closed, not even for fstat: the engine's own
#: short-lived descriptors -- pidfd_open and pidfd_getfd while it takes a
#: lost one back -- may land there for a moment.  Found by make fuzz-long.)
STATELESS = frozenset(("zero", "null", "epoll", "uring", "inotify", "timerfd", "signalfd", "bad"))
ODD_KINDS = ("reg", "direct", "dir", "zero", "null", "epoll", "uring", "inotify", "eventfd",
             "timerfd", "signalfd", "pipe_r", "pipe_w", "stream", "dgram", "pty_m", "pty_s",
             "procfs", "sysfs")
O_DIRECT = 0o40000
MAP_FIXED, MAP_FIXED_NOREPLACE = 0x10, 0x100000


class Wild:
    """Three pages far from anything mmap hands out (so the hole stays a
    hole while unmapped): two of getpid atoms (chain i's is atom i), one of
    argument and result cells.  Between batches they are unmapped, mapped
    again read-write (MAP_FIXED) or mapped read-only: pointers into them
    are wild, then valid, then wild again."""

    PAGES = 3

    def __init__(self, rng):
        for _ in range(64):
            addr = 0x3F0000000000 + PAGE * rng.randrange(1 << 24)
            got = libc.mmap(addr, self.PAGES * PAGE, 3, 0x22 | MAP_FIXED_NOREPLACE, -1, 0)
            if got == addr:
                break
            if got not in (None, ctypes.c_void_p(-1).value):
                libc.munmap(ctypes.c_void_p(got), self.PAGES * PAGE)
        else:
            raise OSError("no room for the wild pages")
        self.addr = addr
        self.cells = addr + 2 * PAGE
        self.nslots = 2 * PAGE // ATOM
        self.state = "rw"
        self.fill()

    def atom(self, i):
        return self.addr + (i % self.nslots) * ATOM

    def any_addr(self, rng):
        return self.addr + 8 * rng.randrange(self.PAGES * PAGE // 8)

    def fill(self, words=None):
        ctypes.memmove(self.addr, pack_atom(0, 39, 0, 0, ()) * self.nslots, self.nslots * ATOM)
        if words:
            for a, v in words.items():
                ctypes.memmove(a, struct.pack("<Q", v & M64), 8)

    def flip(self, rng, stats):
        new = rng.choice([x for x in ("rw", "ro", "none") if x != self.state])
        if new == "none":
            assert libc.munmap(ctypes.c_void_p(self.addr), self.PAGES * PAGE) == 0
        else:
            if self.state == "none":
                got = libc.mmap(self.addr, self.PAGES * PAGE, 3, 0x22 | MAP_FIXED, -1, 0)
                assert got == self.addr
            else:
                assert libc.mprotect(self.addr, self.PAGES * PAGE, 3) == 0
            self.fill()
            if new == "ro":
                assert libc.mprotect(self.addr, self.PAGES * PAGE, 1) == 0
        stats["wild_" + new] += 1
        self.state = new

    def set_words(self, words):
        """The batch's cells (and SENTINEL result cells) in the wild page."""
        if self.state == "none" or not words:
            return
        if self.state == "ro":
            assert libc.mprotect(self.addr, self.PAGES * PAGE, 3) == 0
        for a, v in words.items():
            ctypes.memmove(a, struct.pack("<Q", v & M64), 8)
        if self.state == "ro":
            assert libc.mprotect(self.addr, self.PAGES * PAGE, 1) == 0


def fd_ident(fd):
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_rdev)


class Hostile:
    """What a hostile or careless program does to the engine between (and
    sometimes during) batches: descriptors of odd kinds on numbers that held
    other kinds before (dup2 over them, so the engine's per-descriptor cache
    sees a number reused behind its back), random closes, dup2 over and
    close of the engine's own descriptors, close_range(3, ~0U), and the wild
    pages unmapped and mapped again.  Chains use these numbers (and the
    engine's own, for harmless calls); for kinds whose answers depend only
    on the arguments the model asks the native call (``expect``)."""

    def __init__(self, world, rng, stats):
        self.w = world
        self.rng = rng
        self.stats = stats
        own = set(world.own_fds())
        self.foreign = {fd for fd in world.baseline_fds if fd > 2 and fd not in own}
        soft = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[0]
        self.limit = min(256, soft // 2 - 8)   # chains' numbers stay below the engine's
        self.pool = {}          # number -> kind (None: a hole, closed by us)
        self.keep = []          # the other ends of pipes, sockets, ptys (not used by chains)
        self.squat = set()      # numbers we dup2'ed over the engine's (not used by chains)
        self.engine = {}        # the engine's descriptors at batch start: number -> "uring"/"other"
        self.snap = {}          # number -> (kind, ident) at batch start
        self.log = collections.deque(maxlen=16)
        self.fails = []         # our descriptors closed or replaced by someone else
        self.ours = {}          # number -> identity of every descriptor of ours at batch start
        self.diff = True
        self.closed = False
        self.wild = Wild(rng)
        self.build()

    # -- descriptors ---------------------------------------------------------
    def make(self, kind):
        """A new descriptor of ``kind`` (and its peer, kept), or None."""
        w = self.w
        peer = None
        try:
            if kind == "reg":
                fd = os.open(w.file, os.O_RDWR)
            elif kind == "direct":
                fd = os.open(w.file, os.O_RDWR | O_DIRECT)
            elif kind == "dir":
                fd = os.open(w.tmp, os.O_RDONLY | os.O_DIRECTORY)
            elif kind == "zero":
                fd = os.open("/dev/zero", os.O_RDWR)
            elif kind == "null":
                fd = os.open("/dev/null", os.O_RDWR)
            elif kind == "epoll":
                fd = raw_sys(291, 0)                        # epoll_create1
            elif kind == "uring":
                params = ctypes.create_string_buffer(120)
                fd = raw_sys(425, 2, ctypes.addressof(params))
            elif kind == "inotify":
                fd = raw_sys(294, os.O_NONBLOCK)            # inotify_init1, no watches
            elif kind == "eventfd":
                fd = raw_sys(290, 0, os.O_NONBLOCK)         # eventfd2
            elif kind == "timerfd":
                fd = raw_sys(283, 1, os.O_NONBLOCK)         # timerfd_create, never armed
            elif kind == "signalfd":
                mask = ctypes.c_uint64(1 << (12 - 1))       # SIGUSR2, never sent
                fd = raw_sys(289, M64, ctypes.addressof(mask), 8, os.O_NONBLOCK)
            elif kind in ("pipe_r", "pipe_w"):
                r, wr = os.pipe2(os.O_NONBLOCK)
                fd, peer = (r, wr) if kind == "pipe_r" else (wr, r)
            elif kind in ("stream", "dgram"):
                import socket
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM if kind == "stream"
                                         else socket.SOCK_DGRAM)
                a.setblocking(False)
                b.setblocking(False)
                fd, peer = a.detach(), b.detach()
            elif kind in ("pty_m", "pty_s"):
                m, sl = os.openpty()
                os.set_blocking(m, False)
                os.set_blocking(sl, False)
                fd, peer = (m, sl) if kind == "pty_m" else (sl, m)
            elif kind == "procfs":
                fd = os.open("/proc/self/stat", os.O_RDONLY)
            elif kind == "sysfs":
                fd = os.open("/sys/devices/system/cpu/online", os.O_RDONLY)
            else:
                raise AssertionError(kind)
        except OSError:
            return None
        if fd < 0:
            return None
        if peer is not None:
            self.keep.append(peer)
            if len(self.keep) > 24:
                os.close(self.keep.pop(0))
        return fd

    def check_ours(self):
        """After a batch: every descriptor of ours is still what it was --
        the engine never closes or replaces a program's descriptor (only
        our own close_range while chains ran may have)."""
        if self.closed:
            return
        for n, ident in self.ours.items():
            now = fd_ident(n)
            if now != ident:
                self.fails.append(f"our descriptor {n} ({ident}) is {now} after the batch; "
                                  f"hostile steps before: {'; '.join(self.log)}")
                self.pool.pop(n, None)
                if n in self.keep:
                    self.keep.remove(n)
                self.squat.discard(n)

    def put(self, num, kind):
        """Puts a new descriptor of ``kind`` on number ``num`` (dup2 over
        what was there).  Returns False if the kind cannot be made here."""
        if self.pool.get(num, 0) is None:
            if fd_ident(num) is not None:       # a hole a peer of ours took since: not ours to use
                del self.pool[num]
                return False
            os.dup2(self.w.fd_null, num)        # a hole: held, so no new descriptor lands there
        fd = self.make(kind)
        if fd is None:
            if self.pool.get(num, 0) is None:
                os.close(num)
            return False
        if fd != num:
            os.dup2(fd, num)
            os.close(fd)
        self.pool[num] = kind
        return True

    def build(self):
        """One descriptor of every kind, on numbers of their own."""
        self.pool = {}
        for kind in ODD_KINDS:
            fd = self.make(kind)
            if fd is not None:
                self.pool[fd] = kind
        self.closed = False

    def mine(self):
        return ({n for n, k in self.pool.items() if k is not None} | set(self.keep) | self.squat
                | self.foreign)

    def scan_engine(self):
        """The descriptors neither ours nor inherited: the engine's."""
        mine = self.mine() | set(self.w.own_fds())
        eng = {}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd <= 2 or fd in mine:
                continue
            try:
                t = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            eng[fd] = "uring" if t == "anon_inode:[io_uring]" else "other"
        return eng

    def close_range(self, mid=False):
        """close_range(3, ~0U): every descriptor above 2 -- ours, the
        engine's, inherited ones."""
        r = raw_sys(436, 3, 0xFFFFFFFF, 0)
        assert r == 0, r
        self.pool = {}
        self.keep = []
        self.squat = set()
        self.foreign = set()
        self.closed = True
        self.stats["close_range_mid" if mid else "close_range"] += 1
        self.log.append("close_range(3, ~0U)" + (" while chains ran" if mid else ""))
        if mid:
            self.diff = False

    def between(self):
        """Between two batches (the head drained): random hostile steps,
        then what the next batch may use."""
        r = self.rng
        st = self.stats
        off = os.environ.get("FUZZ_HOSTILE_OFF", "").split(",")     # (bisecting a failure)
        self.check_ours()
        if self.closed:
            self.w.open_own()
            self.build()
        elif r.random() < 0.02 and "close_range" not in off:
            self.close_range()
            self.w.open_own()
            self.build()
        if r.random() < 0.5 and "reuse" not in off:
            nums = [n for n in self.pool if n < self.limit]
            for _ in range(r.randrange(1, 4)):
                if not nums:
                    break
                n = r.choice(nums)
                kind = r.choice(ODD_KINDS)
                if self.put(n, kind):
                    st["reused"] += 1
                    self.log.append(f"dup2 a new {kind} over {n}")
        if r.random() < 0.15:
            live = [n for n, k in self.pool.items() if k is not None]
            if live:
                n = r.choice(live)
                os.close(n)
                self.pool[n] = None
                st["closed"] += 1
                self.log.append(f"close({n})")
        eng = self.scan_engine()
        if "engine" in off:
            pass
        elif eng and r.random() < 0.08:
            n = r.choice(sorted(eng))
            fd = self.make(r.choice(("reg", "pipe_r", "eventfd", "epoll", "null")))
            if fd is not None:
                os.dup2(fd, n)
                os.close(fd)
                self.squat.add(n)
                st["dup2_engine"] += 1
                self.log.append(f"dup2 over the engine's {n}")
        elif eng and r.random() < 0.04:
            n = r.choice(sorted(eng))
            os.close(n)
            st["close_engine"] += 1
            self.log.append(f"close the engine's {n}")
        if len(self.squat) > 4:
            n = self.squat.pop()
            os.close(n)
        if r.random() < 0.25 and "wild" not in off:
            self.wild.flip(r, st)
            self.log.append(f"wild pages now {self.wild.state}")
        self.begin()

    def begin(self):
        """Snapshot at batch start: the engine's descriptors, and kind and
        identity of every number the chains may use."""
        for n in [n for n, k in self.pool.items() if k is None and fd_ident(n) is not None]:
            del self.pool[n]        # a hole a new descriptor took since (a peer we keep)
        self.engine = self.scan_engine()
        self.diff = True
        self.ours = {}
        for n in (self.mine() - self.foreign) | set(self.w.own_fds()):
            ident = fd_ident(n)
            if ident is not None:               # (open ones: a closed number is no one's)
                self.ours[n] = ident
        snap = {}
        for n, k in list(self.pool.items()) + list(self.w.own_fds().items()):
            snap[n] = (k or "hole", fd_ident(n))
        for b in self.w.bad_fds:
            snap[b & 0xFFFFFFFF] = ("bad", None)
        self.snap = snap

    def fd_value(self, kind):
        r = self.rng
        # (v7: not the holes -- its plain calls make eventfds, sockets and
        # timerfds, blocking ones too, which land there; reading one would
        # wait for ever, natively as well)
        nums = [n for n, k in self.pool.items() if n < self.limit and (k is not None or ABI != 7)]
        if "engine_atoms" in os.environ.get("FUZZ_HOSTILE_OFF", ""):
            return r.choice(nums) if nums and kind != FD_BAD else None
        rw_off = "engine_rw" in os.environ.get("FUZZ_HOSTILE_OFF", "")
        if kind in (FD_R, FD_W, FD_PW):
            cand = nums + ([] if rw_off else [n for n, t in self.engine.items() if t == "uring"])
        elif kind == FD_ANY:
            cand = nums + ([] if rw_off else list(self.engine))
        elif kind == FD_BAD:
            # close of the engine's own (it must survive); else a bad number
            cand = list(self.engine) if r.random() < 0.2 and "engine_close" not in \
                os.environ.get("FUZZ_HOSTILE_OFF", "") else []
        else:
            cand = nums
        return r.choice(cand) if cand else None

    def is_engine(self, fd):
        return (fd & 0xFFFFFFFF) in self.engine

    def expect(self, a):
        """The native answer of atom ``a`` (run now, after the batch), for a
        call on a number whose kind answers by the arguments alone and
        which still holds what it held at batch start; else None."""
        if not self.diff or a.nr not in (0, 1, 17, 18, 8, 5, 74, 75):
            return None
        kinds = MENU[a.nr][1]
        vals = []
        for p, v in zip(a.argp, a.argv):
            if p == 0:
                break
            if v is None or isinstance(v, str):
                return None
            vals.append(v)
        vals = (vals + [0] * len(kinds))[:len(kinds)]
        fd = vals[0] & 0xFFFFFFFF
        got = self.snap.get(fd)
        if got is None:
            return None
        kind, ident = got
        if kind == "hole" or (a.nr != 5 and kind not in STATELESS):
            return None                         # (a hole: see STATELESS)
        if kind == "zero" and a.nr in (0, 17) and vals[2] > PAGE:
            # read(2) of /dev/zero returns what it has written when a signal
            # is pending -- io_uring's task work in a thread that uses it
            # counts -- so beyond a page the native answer itself varies
            # (make fuzz-long: 4096 of 16352 once in 800k chains);
            # test_rel_hostile.py holds whole reads where it does not
            return None
        if kind != "bad" and fd_ident(fd) != ident:
            return None                         # an atom opened it since (a hole) or it moved
        self.stats["diff"] += 1
        return raw_sys(a.nr, *vals)

    def report(self):
        return list(self.log)


class Watchdog:
    """A batch that does not finish in ``seconds`` is a hang: prints the
    seed, the batch's chains and the last hostile steps as the last stdout
    line (JSON, "hang": true), all threads' stacks to stderr, and exits 3."""

    def __init__(self, seconds, seed, info, cleanup=None):
        import threading
        self.cleanup = cleanup
        self.seconds = seconds
        self.seed = seed
        self.info = info
        self.t0 = None
        self.what = None
        self.batch = 0
        threading.Thread(target=self._run, daemon=True).start()

    def arm(self, batch, what):
        self.batch, self.what = batch, what
        self.t0 = time.monotonic()

    def disarm(self):
        self.t0 = None

    def _run(self):
        import faulthandler
        while True:
            time.sleep(0.2)
            t0 = self.t0
            if t0 is None or time.monotonic() - t0 < self.seconds:
                continue
            try:
                chains = self.what() if self.what else []
            except Exception as ex:             # (the report must come out)
                chains = [f"cannot describe the batch: {ex!r}"]
            out = dict(self.info, hang=True, seed=self.seed, batch=self.batch,
                       seconds=self.seconds, chains=chains)
            sys.stdout.write("\n" + json.dumps(out) + "\n")
            sys.stdout.flush()
            faulthandler.dump_traceback(all_threads=True)
            for tid in sorted(os.listdir("/proc/self/task")):      # where each thread waits
                try:
                    with open(f"/proc/self/task/{tid}/comm") as f:
                        comm = f.read().strip()
                    with open(f"/proc/self/task/{tid}/syscall") as f:
                        sc = f.read().split()
                    sys.stderr.write(f"thread {tid} {comm}: syscall {sc[:4]}\n")
                except OSError:
                    pass
            for name in sorted(os.listdir("/proc/self/fd"), key=int):
                try:
                    sys.stderr.write(f"fd {name} -> {os.readlink('/proc/self/fd/' + name)}\n")
                except OSError:
                    pass
            sys.stderr.flush()
            if self.cleanup is not None:
                self.cleanup()                  # (TMPDIR stays clean)
            os._exit(3)


def describe_chain(ch):
    return (f"chain {ch.idx} head {ch.head:#x}: "
            + "; ".join(f"{a.addr:#x}:nr={a.nr} fl={a.flags:#x} ret={a.ret:#x} next={a.next:#x} "
                        f"args={a.argv}" for a in ch.atoms))


# ---------------------------------------------------------------------------
# chains

class Atom:
    __slots__ = ("addr", "flags", "nr", "ret", "ret_ok", "next", "argp", "argv", "readable", "native")


class Chain:
    def __init__(self, idx):
        self.idx = idx
        self.atoms = []
        self.by_addr = {}
        self.head = 0


def gen_batch(world, nchains, loops, rng, strip=0):
    """Lays out ``nchains`` random chains; returns (chains, atoms blob, cells blob,
    counters inits, head list)."""
    ar = world.ar
    atoms_blob = bytearray(pack_atom(0, 39, 0, 0, ()) * ar.slots)
    cells = bytearray(ar.cells_size)
    cell_next = [0]
    rets_used = [0]
    h = world.hostile
    wild = h.wild if h is not None else None
    world.wild_words = {}       # address -> word, written into the wild page before the run
    world.wild_rets = []

    def wild_word(v):
        a = wild.cells + 8 * len(world.wild_words)
        world.wild_words[a] = v
        return a

    def new_cell(v, wild_ok=True):
        if wild_ok and wild is not None and wild.state != "none" and rng.random() < 0.04 \
                and len(world.wild_words) < PAGE // 8:
            return wild_word(v)                 # readable: mapped read-write or read-only
        i = cell_next[0]
        cell_next[0] += 1
        struct.pack_into("<Q", cells, 8 * i, v & M64)
        return ar.cells + 8 * i

    def new_ret():
        if wild is not None and wild.state == "rw" and rng.random() < 0.04 \
                and len(world.wild_words) < PAGE // 8:
            a = wild_word(SENTINEL)
            world.wild_rets.append(a)
            return a
        i = rets_used[0]
        rets_used[0] += 1
        return ar.rets + 8 * i

    chains = []
    slot = 0
    for ci in range(nchains):
        ch = Chain(ci)
        k = rng.randrange(1, 9)
        base = ar.atoms + slot * ATOM
        addrs = [base + i * ATOM for i in range(k + 1)]          # + pad
        slot += k + 1
        ch.counters = [new_cell(0, False), new_cell(0, False)]
        ch.counter_init = [(-rng.randrange(1, 12)) & M64, rng.getrandbits(8)]
        ch.ro_atom = world.ro_atoms[ci]
        # the wild page's getpid atom of this chain, while it is mapped
        ch.wild_atom = wild.atom(ci) if wild is not None and wild.state != "none" else None
        guard = not loops and k >= 2 and rng.random() < 0.4
        ch.guard = guard
        open_rets = []
        for i in range(k + 1):
            a = Atom()
            a.addr = addrs[i]
            a.readable = True
            pad = i == k
            if pad:
                nr, kinds = 39, ()
                flags = 0
            elif guard and i == 0:
                nr, kinds = 1004, None
                flags = S_ZERO if rng.random() < 0.7 else S_ZERO | S_NEG
            else:
                c = rng.random()
                if c < 0.70:
                    nr = rng.choice(MENU_NRS)
                    kinds = MENU[nr][1]
                elif c < 0.80:
                    nr, kinds = rng.choice(REFUSED), ()
                elif c < 0.88:
                    nr, kinds = rng.choice(world.unknown), ()
                else:
                    nr, kinds = rng.choice(ALIASES), ()
                fc = rng.random()
                if fc < 0.35:
                    flags = 0
                elif fc < 0.93:
                    flags = rng.getrandbits(8) & ~(ASYNC | SYNC)
                    if i == 0:
                        flags |= rng.choice((0, 0, ASYNC, ASYNC, SYNC))
                    else:
                        flags |= rng.getrandbits(2) if rng.random() < 0.2 else 0
                elif fc < 0.97 and i == 0:
                    flags = ASYNC | SYNC
                else:
                    flags = rng.getrandbits(8) | (1 << rng.randrange(8, FLAG_BITS))   # unknown bits
            a.flags, a.nr = flags, nr
            # ret_ptr: a unique cell mostly; NULL only where the result is not needed
            rc = rng.random()
            det = pad or nr not in MENU or MENU[nr][2] not in ("rw", "fd", "any", "pos")
            if rc < 0.85 or (not det and flags & STOP_MASK):
                a.ret, a.ret_ok = new_ret(), True
            elif rc < 0.93:
                a.ret, a.ret_ok = 0, False
            else:
                a.ret, a.ret_ok = world.unwritable(), False
            if nr == 2 or nr == 257:
                if a.ret_ok:
                    open_rets.append(a.ret)
            # argument pointers
            argp, argv = [], []
            if guard and i == 0:
                argp = [new_cell(ch.counters[0]), new_cell(1)]
                argv = [ch.counters[0], 1]
            elif kinds is None or not kinds:
                n = rng.choice((0, 0, 1, 2, 6))
                for j in range(n):
                    pc = rng.random()
                    if pc < 0.75:
                        v = world.value(ANY, ch)
                        argp.append(new_cell(v))
                        argv.append(v)
                    elif pc < 0.85:
                        argp.append(ar.ro + 8 * rng.randrange(ar.ro_size // 8))
                        argv.append("ro")           # readable; the value is not used
                    else:
                        argp.append(world.bad_ptr())
                        argv.append(None)
            else:
                for j, kind in enumerate(kinds):
                    pc = rng.random()
                    if pc < 0.06:
                        argp.append(world.bad_ptr())
                        argv.append(None)
                        if rng.random() < 0.5:
                            break
                        continue
                    if pc < 0.09 and not any(kd in FD_KINDS for kd in kinds[j:]):
                        argp.append(0)                 # NULL: this and the rest are 0
                        argv.append(0)
                        break
                    if kind == FD_R and open_rets and rng.random() < 0.3:
                        p = rng.choice(open_rets)      # fd passed from an earlier open
                        argp.append(p)
                        argv.append("dyn")
                        continue
                    v = world.value(kind, ch)
                    argp.append(new_cell(v))
                    argv.append(v)
                if len(argp) < 6 and rng.random() < 0.2:
                    # words past the argument list (after a NULL they must be ignored)
                    extra = rng.randrange(1, 7 - len(argp))
                    for _ in range(extra):
                        v = world.value(ANY, ch)
                        argp.append(new_cell(v))
                        argv.append(v)
            a.argp, a.argv = argp, argv
            ch.atoms.append(a)
            ch.by_addr[a.addr] = a
        # next pointers
        for i, a in enumerate(ch.atoms):
            if i == k:
                a.next = 0
                continue
            c = rng.random()
            if c < 0.62:
                a.next = addrs[i + 1]
            elif c < 0.70:
                a.next = 0
            elif c < 0.82:
                if loops:
                    a.next = rng.choice(addrs)
                elif guard and rng.random() < 0.5:
                    a.next = addrs[0]              # back to the loop guard
                else:
                    a.next = rng.choice(addrs[i + 1:])
            elif c < 0.88:
                a.next = ch.wild_atom if ch.wild_atom and rng.random() < 0.3 else ch.ro_atom
            elif c < 0.91:
                a.next = addrs[k]
            else:
                a.next = world.bad_ptr()
        # the guard's own loop: the last real atom goes back to it
        if guard and rng.random() < 0.7:
            ch.atoms[k - 1].next = addrs[0]
            if ch.atoms[k - 1].flags & SKIP:
                pass                               # SKIP lands on the pad: fine
        for a in ch.atoms:
            a.flags &= ~strip
            off = (a.addr - ar.atoms)
            atoms_blob[off:off + ATOM] = pack_atom(a.flags, a.nr, a.ret, a.next, a.argp)
        # head
        hc = rng.random()
        if hc < 0.92:
            ch.head = addrs[0]
        elif hc < 0.94:
            ch.head = ch.wild_atom if ch.wild_atom and rng.random() < 0.3 else ch.ro_atom
        elif hc < 0.96:
            ch.head = 0
        else:
            ch.head = world.bad_ptr()
        chains.append(ch)
    return chains, atoms_blob, cells, rets_used[0]


# ---------------------------------------------------------------------------
# the model

class Ctx:
    def __init__(self, world, budget, sync_only, rets, counters_now):
        self.world = world
        self.budget = budget
        self.sync_only = sync_only
        self.rets = rets                 # addr -> value after the run
        self.counters_now = counters_now
        ids = os.getpid(), os.getppid(), os.getuid(), os.getgid(), os.geteuid(), os.getegid()
        self.det = {"pid": ids[0], "ppid": ids[1], "uid": ids[2], "gid": ids[3],
                    "euid": ids[4], "egid": ids[5], "pgrp": os.getpgrp(), "zero": 0}


def first_errno(ch):
    """What async_exec must fail with for this chain's head (0 = runs):
    v5/v6's head checks come first."""
    if getattr(ch, "head_err", 0):
        return ch.head_err
    h = ch.head
    if h == ch.ro_atom or (h and h == getattr(ch, "wild_atom", None)):
        return 0
    a = ch.by_addr.get(h)
    if a is None:
        return errno.EFAULT
    if a.flags & ASYNC and a.flags & SYNC:
        return errno.EINVAL
    if a.flags & ~0xFF:
        return errno.EINVAL
    return 0


def atom_at(ch, u, world):
    a = ch.by_addr.get(u)
    if a is not None:
        return a
    if u == ch.ro_atom or (u and u == getattr(ch, "wild_atom", None)):
        a = Atom()
        a.addr, a.flags, a.nr, a.ret, a.ret_ok, a.next = u, 0, 39, 0, False, 0
        a.argp, a.argv, a.readable = [], [], True
        return a
    return None


def check_chain(ch, ctx, exec_res, ring_entries, fails):
    """Checks one chain.  ``exec_res``: final atom address, 0 (async) or
    -errno.  ``ring_entries``: the ring entries that belong to this chain.
    Returns True when the whole path was predicted (verified)."""
    def fail(msg):
        fails.append(f"chain {ch.idx} head {ch.head:#x}: {msg} | "
                     + "; ".join(f"{a.addr:#x}:nr={a.nr} fl={a.flags:#x} ret={a.ret:#x}/{a.ret_ok} "
                                 f"next={a.next:#x} argp={[hex(p) for p in a.argp]}"
                                 for a in ch.atoms))
    exp_err = first_errno(ch)
    if exp_err:
        if exec_res != -exp_err:
            fail(f"async_exec gave {exec_res}, expected -{errno.errorcode[exp_err]}")
        if ring_entries:
            fail(f"failed exec published {ring_entries}")
        for a in ch.atoms:
            if a.ret_ok and ctx.rets[a.ret] != SENTINEL:
                fail(f"atom {a.addr:#x} ran although async_exec failed")
        return True
    if exec_res < 0:
        fail(f"async_exec gave -{errno.errorcode.get(-exec_res, -exec_res)}, expected success")
        return False
    world = ctx.world
    counters = list(ch.counter_init)
    visits = collections.Counter()
    last_det = {}                  # atom addr -> expected value of the last visit
    executed = 0
    final = 0
    verified = True
    u = ch.head
    while u:
        a = atom_at(ch, u, world)
        if a is None:
            break                                  # unreadable: last executed is final
        if ctx.budget and executed >= ctx.budget:
            if a.ret_ok:
                last_det[a.addr] = -errno.ELOOP
            final = u
            break
        # result
        r = None
        det = True
        ok = True
        for p, v in zip(a.argp, a.argv):
            if p == 0:
                break
            if v is None:
                r = -errno.EFAULT
                break
        if r is None:
            if a.flags & ~0xFF:
                r = -errno.EINVAL
            elif a.nr in UMEM:
                addr_v = a.argv[0] if a.argp and a.argp[0] else 0
                inc = a.argv[1] if addr_v and len(a.argp) > 1 and a.argp[1] else 0
                if addr_v in ch.counters:
                    k = ch.counters.index(addr_v)
                    counters[k] = (counters[k] + inc) & M64
                    r = signed(counters[k])
                elif addr_v == 0 or not (world.ar.scratch <= addr_v < world.ar.scratch + world.ar.scratch_size):
                    r = -errno.EFAULT
                else:
                    det = False
            elif a.nr in REFUSED:
                r = -REFUSED_ERR
            elif a.nr >= NR_LIMIT or a.nr in world.unknown:
                r = -errno.ENOSYS
            else:
                cls = MENU[a.nr][2]
                h = world.hostile
                nat = None
                if h is not None:
                    # differential: the native call on the same descriptor (once per atom)
                    try:
                        nat = a.native
                    except AttributeError:
                        nat = a.native = h.expect(a)
                if nat is not None:
                    r = nat
                elif cls in ctx.det:
                    r = ctx.det[cls]
                elif cls == "ebadf" and h is not None and h.is_engine(a.argv[0]):
                    det = False                    # close of the engine's own: 0 (it survives)
                elif cls == "ebadf":
                    r = -errno.EBADF
                elif cls == "buf0":
                    buf = a.argv[0] if a.argp and a.argp[0] else 0
                    sc = world.ar.scratch
                    if sc <= buf and buf + BUF0_SIZE[a.nr] <= sc + world.ar.scratch_size:
                        r = 0
                    elif sc <= buf < sc + world.ar.scratch_size:
                        det = False
                    else:
                        r = -errno.EFAULT
                else:
                    det = False
        executed += 1
        final = u
        visits[u] += 1
        if not det:
            if a.ret_ok:
                r = signed(ctx.rets[a.ret])
                if r == signed(SENTINEL):
                    fail(f"atom {u:#x} ran but its ret cell was never written")
                    return False
                if a.flags & STOP_MASK and on_cycle(ch, a):
                    verified = False               # the cell holds the last visit's result
                    break
                ok = check_range(a, r, ctx)
                if not ok:
                    fail(f"atom {u:#x} nr={a.nr} gave {r}: out of range")
                    return False
            elif a.flags & STOP_MASK:
                verified = False
                break
            else:
                r = 0                              # no stop bits: the value does not matter
        else:
            if a.ret_ok:
                last_det[a.addr] = r
        # store, then stop test
        if a.ret and not a.ret_ok:
            break                                   # unwritable ret_ptr (NULL is ret 0)
        if stop_holds(a.flags, r):
            if a.flags & SKIP:
                u = (u + ATOM) & M64
                continue
            break
        u = a.next
    # results of deterministic atoms that ran, untouched cells of those that did not
    visited_rets = {ch.by_addr[x].ret for x in visits if x in ch.by_addr and ch.by_addr[x].ret_ok}
    for a in ch.atoms:
        if not a.ret_ok:
            continue
        got = signed(ctx.rets[a.ret])
        if a.addr in last_det:
            if verified and got != last_det[a.addr]:
                fail(f"atom {a.addr:#x} nr={a.nr}: ret {got}, expected {last_det[a.addr]}"
                     + (f" (the native call, args {a.argv}, fd kind "
                        f"{world.hostile.snap.get(a.argv[0] & 0xFFFFFFFF, ('?',))[0]})"
                        if getattr(a, "native", None) is not None else ""))
        elif verified and a.ret not in visited_rets and got != signed(SENTINEL):
            fail(f"atom {a.addr:#x} nr={a.nr} should not have run; ret {got}")
        elif not verified and got != signed(SENTINEL):
            # path unknown: still, a deterministic call can only give its value
            if a.nr in REFUSED and got not in (-errno.EINVAL, -errno.EFAULT, -errno.ELOOP):
                fail(f"refused nr={a.nr} stored {got}")
            if (a.nr >= NR_LIMIT or a.nr in world.unknown) and got not in (
                    -errno.ENOSYS, -errno.EFAULT, -errno.EINVAL, -errno.ELOOP):
                fail(f"unknown nr={a.nr} stored {got}")
    # the syslet's outcome
    fin_atom = atom_at(ch, final, world)
    if exec_res > 0:
        if ring_entries:
            fail(f"synchronous syslet also published {ring_entries}")
        if verified and exec_res != final:
            fail(f"async_exec returned {exec_res:#x}, model final {final:#x}")
        elif not verified and exec_res not in ch.by_addr and exec_res != ch.ro_atom and \
                exec_res != getattr(ch, "wild_atom", None):
            fail(f"async_exec returned foreign atom {exec_res:#x}")
    else:
        if ctx.sync_only:
            fail("went async although max_nr_threads == 0")
        if len(ring_entries) > 1:
            fail(f"published {len(ring_entries)} entries")
        if verified:
            want = [] if (fin_atom is not None and fin_atom.flags & NO_COMPLETE) else [final]
            if final == 0:
                want = []
            if ring_entries != want:
                fail(f"ring entries {[hex(x) for x in ring_entries]}, expected {[hex(x) for x in want]}")
        else:
            for e in ring_entries:
                ea = atom_at(ch, e, world)
                if ea is None or ea.flags & NO_COMPLETE:
                    fail(f"bad ring entry {e:#x}")
    return verified


def on_cycle(ch, a):
    """Can atom ``a`` run again after itself (next / skip edges)?"""
    seen = set()
    todo = [a.next, a.addr + ATOM]
    while todo:
        u = todo.pop()
        if u == a.addr:
            return True
        b = ch.by_addr.get(u)
        if b is None or u in seen:
            continue
        seen.add(u)
        todo += [b.next, b.addr + ATOM]
    return False


def check_range(a, r, ctx):
    cls = MENU[a.nr][2] if a.nr in MENU else "any"
    if r < -4095:
        return cls == "umem"
    if r == -errno.ELOOP and ctx.budget:
        return True         # the budget stopped a later visit of this atom here
    if cls == "rw":
        return r <= 0x7FFFFFFF
    if cls == "fd":
        return r < 1 << 20
    if cls == "pos":
        return r > 0
    return True


# ---------------------------------------------------------------------------
# entry points

class EngineAPI:
    name = "engine"

    def __init__(self, backend):
        import compat
        self.errors = []
        self.e = compat.Engine(backend)
        self.backend = self.e.backend

    def register(self, ring, nbytes, maxthr, ahu=None):
        try:
            return self.e.register(ring, nbytes, maxthr)
        except OSError as ex:
            return -ex.errno

    def unregister(self, ring, nbytes, ahu=None):
        try:
            return self.e.unregister(ring, nbytes, timeout=120)
        except OSError as ex:
            return -ex.errno

    def set_budget(self, n):
        self.e.set_budget(n)

    def exec_many(self, heads, rng):
        if rng.random() < 0.5:
            return self.e.exec_batch(heads)
        out = []
        for i, h in enumerate(heads):
            self.cur = i
            try:
                out.append(self.e.exec(h))
            except OSError as ex:
                out.append(-ex.errno)
        self.cur = None
        return out

    def wait0(self):
        try:
            return 0 if self.e.wait(0, timeout=0) else -errno.ETIME
        except OSError as ex:
            return -ex.errno

    # v5/v6
    def exec_heads(self, pairs):
        out = []
        for atom, ahu in pairs:
            try:
                out.append(self.e.exec_head(ABI, atom, ahu))
            except OSError as ex:
                out.append(-ex.errno)
        return out

    def drain(self, heads, waits, seconds=120):
        end = time.monotonic() + seconds
        while self.e.inflight():
            if time.monotonic() > end:
                return False
            time.sleep(0.0005)
        return True

    # v7
    def indirect(self, regs, params, paramslen, flags):
        try:
            return self.e.indirect(regs, params, paramslen, flags)
        except OSError as ex:
            return -ex.errno

    def ring_wait(self, ring, idx):
        try:
            return 0 if self.e.ring_wait(ring, idx, timeout=120) else -errno.ETIME
        except OSError as ex:
            return -ex.errno

    def close(self):
        self.e.close()


class RawAPI(EngineAPI):
    name = "raw"

    def __init__(self, backend):
        import compat
        self.c = compat
        compat.reset_default()
        compat._default = compat.Engine(backend)
        self.e = compat.default_engine()
        self.backend = self.e.backend

    def _call(self, f, *a):
        try:
            return f(*a)
        except OSError as ex:
            return -ex.errno

    def register_ahu(self, ahu, size):
        return self._call(self.c.async_register, ahu, size)

    def unregister_ahu(self, ahu, size):
        return self._call(self.c.async_unregister, ahu, size)

    def exec_many(self, heads, rng):
        out = []
        for i, h in enumerate(heads):
            self.cur = i
            out.append(self._call(self.c.async_exec, h))
        self.cur = None
        return out

    def wait0(self):
        return self._call(self.c.async_wait, 0)

    def close(self):
        self.c.reset_default()


class CAPI:
    name = "c"

    def __init__(self, backend, lib_path):
        self.lib = ctypes.CDLL(lib_path, use_errno=True)
        L = self.lib
        L.async_register.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        L.async_register.restype = ctypes.c_long
        L.async_unregister.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        L.async_unregister.restype = ctypes.c_long
        L.async_exec.argtypes = [ctypes.c_void_p]
        L.async_exec.restype = ctypes.c_void_p
        L.async_wait.argtypes = [ctypes.c_ulong]
        L.async_wait.restype = ctypes.c_long
        L.syscall.restype = ctypes.c_long
        L.syslet_compat_backend.restype = ctypes.c_int
        for f in ("async_exec_v5", "async_exec_v6", "async_thread_v5", "async_thread_v6"):
            getattr(L, f).argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            getattr(L, f).restype = ctypes.c_long
        for f in ("async_wait_v5", "async_wait_v6"):
            getattr(L, f).argtypes = [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p]
            getattr(L, f).restype = ctypes.c_long
        L.syslet_indirect.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        L.syslet_indirect.restype = ctypes.c_long
        L.syslet_ring_wait.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        L.syslet_ring_wait.restype = ctypes.c_long
        self.backend = "io_uring" if L.syslet_compat_backend() == 1 else "threadpool"

    def _r(self, v):
        return -ctypes.get_errno() if v == -1 else v

    def register_ahu(self, ahu, size):
        ctypes.set_errno(0)
        return self._r(self.lib.async_register(ahu, size))

    def unregister_ahu(self, ahu, size):
        ctypes.set_errno(0)
        return self._r(self.lib.async_unregister(ahu, size))

    def set_budget(self, n):
        pass

    def exec_many(self, heads, rng):
        out = []
        via_syscall = rng.random() < 0.3
        for i, h in enumerate(heads):
            self.cur = i
            ctypes.set_errno(0)
            if via_syscall:
                v = self.lib.syscall(ctypes.c_long(1001), ctypes.c_void_p(h or None))
                out.append(-ctypes.get_errno() if v == -1 else v & M64)
            else:
                v = self.lib.async_exec(h or None)
                if v is None:
                    out.append(0)
                elif v == M64:
                    out.append(-ctypes.get_errno())
                else:
                    out.append(v)
        self.cur = None
        return out

    def wait0(self):
        ctypes.set_errno(0)
        v = self.lib.async_wait(0)
        return -ctypes.get_errno() if v == -1 else v

    # v5/v6: the functions, or syscall() with the project's numbers
    def exec_heads(self, pairs):
        out = []
        via_syscall = self.rng.random() < 0.3
        fn = getattr(self.lib, f"async_exec_v{ABI}")
        for atom, ahu in pairs:
            ctypes.set_errno(0)
            if via_syscall:
                v = self.lib.syscall(ctypes.c_long(1000 + 10 * (ABI - 4)), ctypes.c_void_p(atom or None),
                                     ctypes.c_void_p(ahu or None))
            else:
                v = fn(atom or None, ahu or None)
            out.append(-ctypes.get_errno() if v == -1 else v & M64)
        return out

    def drain(self, heads, waits):
        """Every chain that went async publishes one entry (NO_COMPLETE is
        stripped in this mode): async_wait for them."""
        fn = getattr(self.lib, f"async_wait_v{ABI}")
        return all(fn(n, 0, h) == 0 for h, n in zip(heads, waits) if n)

    # v7
    def indirect(self, regs, params, paramslen, flags):
        ctypes.set_errno(0)
        if self.rng.random() < 0.3:
            v = self.lib.syscall(ctypes.c_long(1030), ctypes.c_void_p(regs or None),
                                 ctypes.c_void_p(params or None), ctypes.c_ulong(paramslen),
                                 ctypes.c_ulong(flags))
        else:
            v = self.lib.syslet_indirect(regs or None, params or None, paramslen, flags)
        return -ctypes.get_errno() if v == -1 else v

    def ring_wait(self, ring, idx):
        ctypes.set_errno(0)
        v = self.lib.syslet_ring_wait(ring, idx)
        return -ctypes.get_errno() if v == -1 else v

    def close(self):
        pass


# ---------------------------------------------------------------------------
# heads

def fuzz_heads(api, world, rng, n, fails, stats):
    """Random registrations: (ring, size, max_threads) and the ahu pointer."""
    ar = world.ar
    ahu = ar.ahu
    for _ in range(n):
        c = rng.random()
        if c < 0.45:
            ring = ar.ring + 8 * rng.randrange(64)
        elif c < 0.55:
            ring = ar.ring + rng.randrange(1, 8)
        elif c < 0.65:
            ring = ar.ro
        else:
            ring = world.bad_ptr()
        nbytes = rng.choice((8, 64, 1024, ar.ring_size, ar.ring_size + 8, 0, 12, 7,
                             rng.getrandbits(64), 1 << 40, ar.ring_size - 8))
        maxthr = rng.choice((M64, 0, 1, 3, 1 << 40, rng.getrandbits(64)))
        exp = expected_register(world, ring, nbytes)
        size = 24 if rng.random() < 0.85 else rng.choice((0, 16, 25, 23, M64))
        ahu_ptr = ahu if rng.random() < 0.85 else rng.choice((0, world.bad_ptr(), ar.ro))
        if isinstance(api, EngineAPI) and not isinstance(api, RawAPI):
            got = api.register(ring, nbytes, maxthr)
            exp2 = exp
        else:
            world.ar.write(ahu, struct.pack("<3Q", ring & M64, nbytes & M64, maxthr & M64))
            if size != 24:
                exp2 = -errno.EINVAL
            elif ahu_ptr == ar.ro:
                exp2 = expected_register(world, 0, 39)      # the ro page's first words
            elif ahu_ptr != ahu:
                exp2 = -errno.EFAULT
            else:
                exp2 = exp
            got = api.register_ahu(ahu_ptr, size)
        stats["heads"] += 1
        if got != exp2:
            fails.append(f"register(ring={ring:#x}, bytes={nbytes:#x}, ahu={ahu_ptr:#x}, size={size}) "
                         f"gave {got}, expected {exp2}")
        if got == 0:
            # registered: a second one is EBUSY; wrong identity EINVAL; right one 0
            if isinstance(api, (RawAPI, CAPI)):
                world.ar.write(ahu, struct.pack("<3Q", ring, nbytes, M64))
                b = api.register_ahu(ahu, 24)
                world.ar.write(ahu, struct.pack("<3Q", ring, nbytes + 8, M64))
                w = api.unregister_ahu(ahu, 24)
                world.ar.write(ahu, struct.pack("<3Q", ring, nbytes, M64))
                u = api.unregister_ahu(ahu, 24)
            else:
                b = api.register(ring, nbytes, M64)
                w = api.unregister(ring + 8, nbytes)
                u = api.unregister(ring, nbytes)
            if (b, w, u) != (-errno.EBUSY, -errno.EINVAL, 0):
                fails.append(f"after register: EBUSY/EINVAL/0 expected, got {(b, w, u)}")


def expected_register(world, ring, nbytes):
    ar = world.ar
    if nbytes == 0 or nbytes % 8 or ring % 8:
        return -errno.EINVAL
    if not (ring >= 4096 and ring < 0x800000000000 and nbytes <= 0x800000000000 - ring):
        return -errno.EFAULT
    if ar.ring <= ring and ring + nbytes <= ar.ring + ar.ring_size:
        return 0
    return -errno.EFAULT


# ---------------------------------------------------------------------------
# main loop

def dump_hang(api, chains, res, world):
    e = getattr(api, "e", None)
    if e is not None:
        print("inflight", e.inflight(), e.counters(), file=sys.stderr)
    ring = set(v for v in struct.unpack("<128Q", world.ar.read(world.ar.ring, 1024)) if v)
    for ch, r in zip(chains, res):
        if r == 0:
            done = [hex(a.addr) for a in ch.atoms if a.addr in ring] + (["ro"] if ch.ro_atom in ring else [])
            print(f"async chain {ch.idx} head {ch.head:#x} published {done}", file=sys.stderr)
            for a in ch.atoms:
                v = struct.unpack("<q", world.ar.read(a.ret, 8))[0] if a.ret_ok else None
                print(f"   {a.addr:#x} nr={a.nr} fl={a.flags:#x} next={a.next:#x} argv={a.argv} ret={v}",
                      file=sys.stderr)
    os.system(f"ls -l /proc/{os.getpid()}/task; cat /proc/{os.getpid()}/task/*/stack 2>/dev/null | head -50 >&2")


def check_batch(chains, res, per_chain, ctx, rets, stats, fails):
    """Every chain against the model, and the statistics."""
    for ch, r in zip(chains, res):
        stats["chains"] += 1
        if r < 0:
            stats["err_" + errno.errorcode.get(-r, str(-r))] += 1
        elif r == 0:
            stats["async"] += 1
        else:
            stats["sync"] += 1
        before = len(fails)
        v = check_chain(ch, ctx, r, per_chain.get(ch.idx, []), fails)
        stats["verified"] += bool(v)
        stats["atoms"] += len(ch.atoms)
        if len(fails) > before:
            stats["failed_chains"] += 1
    for ch in chains:
        for a in ch.atoms:
            if a.ret_ok:
                val = signed(rets[a.ret])
                if val == -errno.ELOOP:
                    stats["eloop"] += 1
                elif val == -errno.ENOSYS:
                    stats["enosys"] += 1
                elif val == -errno.EFAULT:
                    stats["efault"] += 1
                elif val == -errno.EINVAL and a.nr in REFUSED:
                    stats["refused"] += 1


# ---------------------------------------------------------------------------
# v7: indirect

O_CLOEXEC, O_NONBLOCK = 0o2000000, 0o4000
#: plain calls: nr -> (arguments, whose flags file_flags ends up in)
PLAIN7 = {290: (0, 0), 284: (0,), 41: (1, 1, 0), 283: (1, 0)}    # eventfd2, eventfd, socket, timerfd_create
ESYSLETPENDING = 132


def sext32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


class Call7:
    __slots__ = ("idx", "nr", "vals", "kinds", "how", "bad", "ff", "paramslen", "flags", "regs",
                 "params", "expect", "det", "res", "status")


def gen_v7_batch(world, n, rng, ring):
    """n random indirect calls laid out in the cells region: registers and
    params per call.  Returns the calls, with the model's verdict where it
    can tell (expect: a result, -errno; det: whether it is exact)."""
    ar = world.ar
    calls = []
    blob = bytearray(ar.cells_size)
    menu = [nr for nr in MENU_NRS if nr not in (2, 257)]         # (opens: see the c/ fuzz)
    for i in range(n):
        c = Call7()
        c.idx = i
        c.regs, c.params = ar.cells + 96 * i, ar.cells + 96 * i + 56
        x = rng.random()
        c.how = "syslet"
        if x < 0.62:
            c.nr = rng.choice(menu)
            c.kinds = MENU[c.nr][1]
            c.vals = [world.value(k, None) for k in c.kinds]
        elif x < 0.66:
            c.nr, c.vals, c.kinds = 35, [world.ts, 0], ()             # nanosleep(100 us): pending
        elif x < 0.74:
            c.nr, c.vals, c.kinds = rng.choice(REFUSED), [rng.getrandbits(64) for _ in range(6)], ()
        elif x < 0.80:
            c.nr, c.vals, c.kinds = rng.choice(world.unknown + ALIASES), [0] * 6, ()
        else:
            c.how = "plain"
            c.nr = rng.choice(sorted(PLAIN7) + [39, 0, 8])            # the last three: not allowed
            c.vals, c.kinds = list(PLAIN7.get(c.nr, (0, 0, 0))), ()
        c.vals = (list(c.vals) + [0] * 6)[:6]
        c.ff = rng.choice((0, 0, O_CLOEXEC, O_NONBLOCK, O_CLOEXEC | O_NONBLOCK, os.O_APPEND))
        c.paramslen = 32 if c.how == "syslet" else rng.choice((0, 4, 4, 7, 32))
        c.flags = 0
        c.bad = None
        if rng.random() < 0.10:
            c.bad = rng.choice(("flags", "regs", "paramslen", "params", "frame", "ring", "elements"))
        regs_addr, params_addr = c.regs, c.params
        ring_ptr, frame = ring, (0x401000, 0x7ffc0000)
        if c.bad == "flags":
            c.flags = rng.choice((1, 1 << 63, rng.getrandbits(64) | 1))
        elif c.bad == "regs":
            c.regs = world.bad_ptr()
        elif c.bad == "paramslen":
            c.paramslen = rng.choice((33, 64, 1 << 40, M64))
        elif c.bad == "params" and c.paramslen:
            c.params = world.bad_ptr()
        elif c.bad == "frame":
            frame = rng.choice(((0, 1), (1, 0), (0, 0)))
        elif c.bad == "ring":       # (elements, at +8, unreadable too: not at a guard's end)
            ring_ptr = rng.choice((rng.choice(ar.guards) + 8 * rng.randrange(PAGE // 8 - 2), 0x10,
                                   0xFFFF800000000000 + 8 * rng.randrange(1 << 20), 1 << 47))
        elif c.bad == "elements":
            ring_ptr = ar.ring + 2048       # a header there says 3 elements
        struct.pack_into("<7Q", blob, regs_addr - ar.cells, c.nr & M64, *(v & M64 for v in c.vals))
        if c.how == "plain":
            # file_flags overlays ring_ptr's low half: with paramslen >= 8 a
            # non-zero one is a ring pointer (the 2007 clash), 0 a plain call
            if c.paramslen == 32 and rng.random() < 0.5:
                c.ff = 0
            pbytes = struct.pack("<I", c.ff) + bytes(28)
        else:
            pbytes = struct.pack("<4Q", ring_ptr, 1000 + i, *frame)
        blob[params_addr - ar.cells:params_addr - ar.cells + 32] = pbytes
        model_v7(c, world, pbytes)
        calls.append(c)
    return calls, blob


def model_v7(c, world, pbytes):
    """LATER_ABIS.md 4, steps 1-3: expect -errno or a value; det False when
    only the range can be known.  pbytes: the 32 bytes of params written."""
    c.det = True
    seen = pbytes[:min(c.paramslen, 32)] + bytes(32)
    ring_ptr, _, ip, sp = struct.unpack("<4Q", seen[:32])
    c.ff = struct.unpack("<I", seen[:4])[0]
    if c.flags:
        c.expect = -errno.EINVAL
    elif c.regs != world.ar.cells + 96 * c.idx:
        c.expect = -errno.EFAULT
    elif c.paramslen > 32:
        c.expect = -errno.EINVAL
    elif c.paramslen and c.params != world.ar.cells + 96 * c.idx + 56:
        c.expect = -errno.EFAULT
    elif c.paramslen < 8 or not ring_ptr:      # a plain call
        if c.ff & ~(O_CLOEXEC | O_NONBLOCK) or c.nr not in PLAIN7:
            c.expect = -errno.EINVAL
        else:
            c.expect, c.det = "fd", False
    elif not ip or not sp:
        c.expect = -errno.EINVAL
    elif ring_ptr != world.v7ring:
        c.expect = -errno.EINVAL if ring_ptr == world.ar.ring + 2048 else -errno.EFAULT
    elif c.nr in REFUSED:
        c.expect = -REFUSED_ERR
    elif c.nr >= NR_LIMIT or c.nr in world.unknown:
        c.expect = -errno.ENOSYS
    elif c.nr == 35:
        c.expect = 0
    else:
        cls = MENU[c.nr][2]
        ids = {"pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(), "gid": os.getgid(),
               "euid": os.geteuid(), "egid": os.getegid(), "pgrp": os.getpgrp(), "zero": 0}
        if cls in ids:
            c.expect = ids[cls]
        elif cls == "ebadf" and world.hostile is not None and world.hostile.is_engine(c.vals[0]):
            c.expect, c.det = "any", False      # close of the engine's own: 0 (it survives)
        elif cls == "ebadf":
            c.expect = -errno.EBADF
        else:
            c.expect, c.det = cls, False


def run_v7(args, api, world, rng, stats, fails, t0, deadline):
    """Batches of random indirect calls; pending ones are collected from the
    ring by caller_data and checked like the synchronous ones."""
    ar = world.ar
    ts = ar.rets                # nanosleep's timespec (100 us): no call writes there
    world.ts = ts
    world.v7ring = ar.ring
    batch_no = 0
    while stats["chains"] < args.chains and time.monotonic() < deadline and len(fails) < 50:
        batch_no += 1
        elements = rng.choice((64, 128))
        kh = rng.choice((0, 5, 0xFFFFFFF0))
        ring = bytearray(ar.ring_size)
        struct.pack_into("<4I", ring, 0, kh, kh, elements, rng.getrandbits(32))
        struct.pack_into("<4I", ring, 2048, 0, 0, 3, 0)                 # elements 3
        ar.write(ar.ring, ring)
        ar.write(ts, struct.pack("<qq", 0, 100_000))
        calls, blob = gen_v7_batch(world, rng.randrange(8, 49), rng, ar.ring)
        ar.write(ar.cells, blob)
        if world.watchdog is not None:
            world.watchdog.arm(batch_no, lambda: [
                f"call {c.idx} nr={c.nr} vals={[hex(v) for v in c.vals]} how={c.how} bad={c.bad} "
                f"paramslen={c.paramslen} ff={c.ff:#x}" for c in calls]
                + [f"executing call {getattr(api, 'cur7', None)}"] + hostile_log(world))
        pending = {}
        fds = []
        for c in calls:
            api.cur7 = c.idx
            r = api.indirect(c.regs, c.params, c.paramslen, c.flags)
            stats["chains"] += 1
            if r == -ESYSLETPENDING:
                stats["async"] += 1
                pending[1000 + c.idx] = c
                continue
            stats["sync"] += 1
            stats["err_" + errno.errorcode.get(-r, str(-r)) if -4096 < r < 0 else "ok"] += 1
            c.res = r
            check_v7(c, r, fails, stats, fds, "returned")
        # collect the pending ones: one entry each, by caller_data
        got = {}
        tail = kh
        while len(got) < len(pending) and time.monotonic() < deadline + 30:
            head = struct.unpack("<I", ar.read(ar.ring, 4))[0]
            while tail != head:
                st, cd = struct.unpack("<QQ", ar.read(ar.ring + 16 + 16 * (tail & (elements - 1)), 16))
                if cd in got or cd not in pending:
                    fails.append(f"v7: ring entry with caller_data {cd} (twice, or no pending call's)")
                got[cd] = st
                tail = (tail + 1) & 0xFFFFFFFF
                ar.write(ar.ring + 4, struct.pack("<I", tail))
            if len(got) < len(pending):
                w = api.ring_wait(ar.ring, tail)
                if w not in (0, -errno.ETIME):
                    fails.append(f"v7: syslet_ring_wait gave {w}")
                    break
        if len(got) != len(pending):
            fails.append(f"v7: {len(got)} entries for {len(pending)} pending calls")
            break
        for cd, c in pending.items():
            st = signed(got[cd])
            if st != sext32(st):
                fails.append(f"v7 call {c.nr}: status {st:#x} is not a sign-extended 32-bit value")
            check_v7(c, st, fails, stats, fds, "status")
        if struct.unpack("<I", ar.read(ar.ring, 4))[0] != (kh + len(pending)) & 0xFFFFFFFF:
            fails.append("v7: kernel_head is not advanced once per pending call")
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                fails.append(f"v7: fd {fd} a plain call returned is not open")
        stats["fds_closed"] += world.close_chain_fds()
        end_batch(world, fails)
    stats["batches"] = batch_no
    stats["seconds"] = round(time.monotonic() - t0, 2)
    api.close()
    return {"mode": args.mode, "abi": args.abi, "backend_asked": args.backend, "backend": api.backend,
            "stats": dict(stats), "fails": fails[:20], "nfails": len(fails)}


def check_v7(c, r, fails, stats, fds, how):
    def fail(msg):
        fails.append(f"v7 call nr={c.nr} vals={[hex(v) for v in c.vals]} how={c.how} bad={c.bad} "
                     f"paramslen={c.paramslen} ff={c.ff:#x}: {msg} ({how} {r})")
    if c.expect == "fd":
        if r < 0:
            fail("a plain call failed")
            return
        fds.append(r)
        import fcntl
        cloexec = bool(fcntl.fcntl(r, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        nonblock = bool(fcntl.fcntl(r, fcntl.F_GETFL) & os.O_NONBLOCK)
        if (cloexec, nonblock) != (bool(c.ff & O_CLOEXEC), bool(c.ff & O_NONBLOCK)):
            fail(f"file_flags not applied: cloexec {cloexec} nonblock {nonblock}")
        stats["plain"] += 1
        return
    if r != sext32(r):
        fail("not a sign-extended 32-bit result")
    if c.det:
        if r != c.expect:
            fail(f"expected {c.expect}")
        if r == -errno.EINVAL and c.nr in REFUSED and c.how == "syslet" and not c.bad:
            stats["refused"] += 1
        elif r == -errno.ENOSYS:
            stats["enosys"] += 1
        elif r == -errno.EFAULT:
            stats["efault"] += 1
        elif c.bad:
            stats["heads"] += 1         # (a broken call: the 'heads' check of the summary)
        stats["verified"] += 1
        return
    if c.expect == "rw" and r > 0x7FFFFFFF:
        fail("a transfer beyond 0x7fffffff")
    if c.expect == "fd" and r >= 1 << 20:
        fail("not an fd")
    if c.nr in (2, 257) and r >= 0:
        fds.append(r)
    stats["verified"] += 1


HEAD_SLOTS = 128                # per valid head: 4 heads' rings in the ring page


def run_heads(api, world, rng, chains, stats, fails):
    """v5/v6: up to four valid heads (each with its ring of 128 slots,
    kernel_ring_idx 0) and broken ones; every chain names one.  Runs the
    chains, waits until every one that went async is published, checks the
    rings (entries from slot 0 on, kernel_ring_idx written back).  Returns
    (result cells, exec results, ring entries per chain), or (.., None, ..)
    when a drain failed."""
    ar = world.ar
    k = rng.randrange(1, 5)
    heads = [ar.ahu + 64 * i for i in range(k)]
    blob = bytearray(ar.ahu_size)
    for i in range(k):
        struct.pack_into("<8Q", blob, 64 * i, 0, 0, ar.ring + 8 * HEAD_SLOTS * i, 8 * HEAD_SLOTS,
                         0, 0, 0x10000, 0)
    broken = {                  # address -> what exec must fail with
        ar.ahu + 64 * 8: errno.EINVAL, ar.ahu + 64 * 9: errno.EINVAL, ar.ahu + 64 * 10: errno.EINVAL,
        ar.ahu + 64 * 11: errno.EINVAL, ar.ahu + ar.ahu_size - 56: errno.EFAULT, ar.ro: errno.EINVAL,
    }
    struct.pack_into("<8Q", blob, 64 * 8, 0, 0, 0, 1024, 0, 0, 0x10000, 0)          # no ring
    struct.pack_into("<8Q", blob, 64 * 9, 0, 0, ar.ring, 12, 0, 0, 0x10000, 0)      # 12 bytes
    struct.pack_into("<8Q", blob, 64 * 10, 0, 0, ar.ring, 1024, 0, 0, 0, 0)         # no stack
    struct.pack_into("<8Q", blob, 64 * 11, 0, 0, ar.ring, 0, 0, 0, 0x10000, 0)      # 0 bytes
    struct.pack_into("<7Q", blob, ar.ahu_size - 56, 0, 0, ar.ring, 1024, 0, 0, 0x10000)
    ar.write(ar.ahu, blob)
    pairs = []
    for ch in chains:
        c = rng.random()
        if c < 0.88:
            ch.ahu, ch.head_err = rng.choice(heads), 0
        elif c < 0.96:
            ch.ahu = rng.choice(sorted(broken))
            ch.head_err = broken[ch.ahu]
            stats["heads"] += 1
        else:
            ch.ahu, ch.head_err = world.bad_ptr(), errno.EFAULT
            stats["heads"] += 1
        pairs.append((ch.head, ch.ahu))
    res = api.exec_heads(pairs)
    waits = [sum(1 for ch, r in zip(chains, res) if r == 0 and ch.ahu == h) for h in heads]
    if not api.drain(heads, waits):
        fails.append(f"v{ABI}: syslets still in flight after the drain")
        return None, None, None
    rets_raw = struct.unpack("<%dQ" % (ar.rets_size // 8), ar.read(ar.rets, ar.rets_size))
    rets = {ar.rets + 8 * i: v for i, v in enumerate(rets_raw)}
    rets.update(wild_rets(world))
    owner = {}
    for ch in chains:
        for a in ch.atoms:
            owner[a.addr] = ch.idx
        owner[ch.ro_atom] = ch.idx
        if getattr(ch, "wild_atom", None):
            owner[ch.wild_atom] = ch.idx
    per_chain = collections.defaultdict(list)
    for i, h in enumerate(heads):
        vals = struct.unpack("<%dQ" % HEAD_SLOTS, ar.read(ar.ring + 8 * HEAD_SLOTS * i, 8 * HEAD_SLOTS))
        entries = [v for v in vals if v]
        if any(vals[len(entries):]):
            fails.append(f"head {i}: ring entries are not contiguous from slot 0")
        kri = struct.unpack("<Q", ar.read(h, 8))[0]
        if kri != len(entries) % HEAD_SLOTS:
            fails.append(f"head {i}: kernel_ring_idx {kri} after {len(entries)} entries")
        for e in entries:
            who = owner.get(e)
            if who is None or chains[who].ahu != h:
                fails.append(f"head {i}: ring entry {e:#x} is no atom of a chain of this head")
                continue
            per_chain[who].append(e)
        if struct.unpack("<Q", ar.read(h + 48, 8))[0] != 0x10000:
            fails.append(f"head {i}: new_thread_stack changed")
    return rets, res, per_chain


def wild_rets(world):
    """Result cells in the wild page (mapped read-write during the batch)."""
    return {a: struct.unpack("<Q", ctypes.string_at(a, 8))[0] for a in getattr(world, "wild_rets", ())}


def hostile_log(world):
    h = world.hostile
    return ["hostile steps before: " + "; ".join(h.report())] if h is not None else []


def arm(world, api, batch_no, chains):
    """The watchdog over this batch: a hang prints its chains (those that
    went async and published nothing first)."""
    world.last_res = None
    if world.watchdog is None:
        return

    def what():
        res = world.last_res
        first = []
        if res is not None:
            ar = world.ar
            ring = set(v for v in struct.unpack("<128Q", ar.read(ar.ring, 1024)) if v)
            for ch, r in zip(chains, res):
                mine = {a.addr for a in ch.atoms} | {ch.ro_atom, getattr(ch, "wild_atom", None)}
                if r == 0 and not (mine & ring):
                    first.append("IN FLIGHT (async, nothing published): " + describe_chain(ch))
        return (first + [f"executing chain {getattr(api, 'cur', None)} (None: exec_batch or the "
                         f"drain)"] + hostile_log(world) + [describe_chain(ch) for ch in chains])
    world.watchdog.arm(batch_no, what)


def end_batch(world, fails):
    if world.watchdog is not None:
        world.watchdog.disarm()
    if world.hostile is not None:
        world.hostile.between()
        fails.extend(world.hostile.fails)
        world.hostile.fails = []


def inject_hang(world, chains, atoms_blob, cells):
    """--inject-hang: chain 0 becomes a SYSLET_SYNC read of an empty pipe
    whose writer stays open -- the native call waits for ever, so must the
    syslet: the watchdog's self-test."""
    r, w = os.pipe()
    world.hang_pipe = (r, w)
    ch = chains[0]
    a = ch.atoms[0]
    ar = world.ar
    base = ar.cells_size - 24
    struct.pack_into("<3Q", cells, base, r, ar.scratch, 16)
    a.flags, a.nr, a.next = SYNC, 0, 0
    a.argp = [ar.cells + base, ar.cells + base + 8, ar.cells + base + 16]
    a.argv = [r, ar.scratch, 16]
    off = a.addr - ar.atoms
    atoms_blob[off:off + ATOM] = pack_atom(a.flags, a.nr, a.ret, a.next, a.argp)
    ch.head = a.addr


def run(args):
    configure(int(args.abi[1]))
    rng = random.Random(args.seed)
    if args.mutate:
        global REFUSED_ERR
        REFUSED_ERR = errno.ENOSYS
    world = World(rng)
    try:
        return run_in(args, rng, world)
    finally:
        world.cleanup()


def run_in(args, rng, world):
    world.unknown = tuple(n for n in UNKNOWN_CANDIDATES if probe_enosys(n))
    assert len(world.unknown) >= 4, world.unknown
    if args.mode == "engine":
        api = EngineAPI(args.backend)
    elif args.mode == "raw":
        api = RawAPI(args.backend)
    else:
        api = CAPI(args.backend, args.lib)
    api.rng = rng
    stats = collections.Counter()
    fails = []
    ar = world.ar
    loops = args.mode != "c"
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    if args.hostile:
        world.hostile = Hostile(world, rng, stats)
        world.hostile.begin()
    world.watchdog = None
    if args.watchdog > 0:
        world.watchdog = Watchdog(args.watchdog, args.seed, {
            "mode": args.mode, "abi": args.abi, "backend_asked": args.backend,
            "backend": api.backend}, cleanup=lambda: shutil.rmtree(world.tmp, ignore_errors=True))

    if ABI == 7:
        return run_v7(args, api, world, rng, stats, fails, t0, deadline)
    if ABI == 1:
        # exec and wait without a head: EINVAL
        for h in (world.ro_atoms[0], 0, world.bad_ptr()):
            got = api.exec_many([h], rng)[0]
            if got != -errno.EINVAL:
                fails.append(f"exec without a head gave {got}")
        if api.wait0() != -errno.EINVAL:
            fails.append("async_wait without a head is not EINVAL")
        fuzz_heads(api, world, rng, args.heads, fails, stats)

    ring_slots = 128
    batch_no = 0
    while stats["chains"] < args.chains and time.monotonic() < deadline and len(fails) < 50:
        batch_no += 1
        n = rng.randrange(8, 49)
        budget = rng.choice((16, 64, 300)) if loops else 0
        api.set_budget(budget)
        # (mode c, v5/v6: no NO_COMPLETE, so that every async chain publishes once)
        strip = NO_COMPLETE if ABI in (5, 6) and args.mode == "c" else 0
        chains, atoms_blob, cells, nrets = gen_batch(world, n, loops, rng, strip)
        if batch_no == args.inject_hang:
            inject_hang(world, chains, atoms_blob, cells)
        ar.write(ar.atoms, atoms_blob)
        ar.write(ar.cells, cells)
        H = world.hostile
        if H is not None:
            H.wild.set_words(world.wild_words)
        arm(world, api, batch_no, chains)
        ar.write(ar.rets, struct.pack("<Q", SENTINEL) * (ar.rets_size // 8))
        for ch in chains:
            for p, v in zip(ch.counters, ch.counter_init):
                ar.write(p, struct.pack("<Q", v))
        ar.write(ar.ring, bytes(ar.ring_size))
        if ABI in (5, 6):
            rets, res, per_chain = run_heads(api, world, rng, chains, stats, fails)
            if res is None:
                break
            ctx = Ctx(world, budget, False, rets, None)
            check_batch(chains, res, per_chain, ctx, rets, stats, fails)
            stats["fds_closed"] += world.close_chain_fds()
            end_batch(world, fails)
            continue
        mt = rng.random()
        maxthr = M64 if mt < 0.85 else (0 if mt < 0.93 else rng.randrange(1, 6))
        if isinstance(api, EngineAPI) and not isinstance(api, RawAPI):
            r = api.register(ar.ring, ring_slots * 8, maxthr)
        else:
            ar.write(ar.ahu, struct.pack("<3Q", ar.ring, ring_slots * 8, maxthr))
            r = api.register_ahu(ar.ahu, 24)
        if r != 0:
            fails.append(f"batch register failed: {r}")
            break
        if api.wait0() != 0:
            fails.append("async_wait(0) with a head is not 0")
        heads = [ch.head for ch in chains]
        res = api.exec_many(heads, rng)
        world.last_res = res
        if H is not None and rng.random() < 0.03 and "mid" not in os.environ.get("FUZZ_HOSTILE_OFF", ""):
            H.close_range(mid=True)         # while what went async still runs
        if isinstance(api, EngineAPI) and not isinstance(api, RawAPI):
            u = api.unregister(ar.ring, ring_slots * 8)
        else:
            u = api.unregister_ahu(ar.ahu, 24)
        if u != 0:
            fails.append(f"unregister (drain) failed: {u}")
            if os.environ.get("FUZZ_DEBUG"):
                dump_hang(api, chains, res, world)
            break
        ring_vals = struct.unpack("<%dQ" % ring_slots, ar.read(ar.ring, ring_slots * 8))
        rets_raw = struct.unpack("<%dQ" % (ar.rets_size // 8), ar.read(ar.rets, ar.rets_size))
        rets = {ar.rets + 8 * i: v for i, v in enumerate(rets_raw)}
        rets.update(wild_rets(world))
        ctx = Ctx(world, budget, maxthr == 0, rets, None)
        # ring entries in slot order; the producer starts at slot 0, no gaps
        entries = [v for v in ring_vals if v]
        if any(ring_vals[len(entries):]):
            fails.append("ring entries are not contiguous from slot 0")
        owner = {}
        for ch in chains:
            for a in ch.atoms:
                owner[a.addr] = ch.idx
            owner[ch.ro_atom] = ch.idx
            if getattr(ch, "wild_atom", None):
                owner[ch.wild_atom] = ch.idx
        per_chain = collections.defaultdict(list)
        for e in entries:
            if e not in owner:
                fails.append(f"ring entry {e:#x} is no atom of this batch")
                continue
            per_chain[owner[e]].append(e)
        check_batch(chains, res, per_chain, ctx, rets, stats, fails)
        stats["fds_closed"] += world.close_chain_fds()
        end_batch(world, fails)
    stats["batches"] = batch_no
    stats["seconds"] = round(time.monotonic() - t0, 2)
    # after the run: nothing registered, exec EINVAL again
    if ABI == 1 and api.exec_many([world.ro_atoms[0]], rng)[0] != -errno.EINVAL:
        fails.append("exec after the last unregister is not EINVAL")
    api.close()
    out = {"mode": args.mode, "abi": args.abi, "backend_asked": args.backend, "backend": api.backend,
           "stats": dict(stats), "fails": fails[:20], "nfails": len(fails)}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("engine", "raw", "c"), required=True)
    p.add_argument("--abi", choices=("v1", "v5", "v6", "v7"), default="v1")
    p.add_argument("--backend", choices=("io_uring", "threadpool"), required=True)
    p.add_argument("--chains", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--heads", type=int, default=300)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lib", default=None)
    p.add_argument("--hostile", action="store_true",
                   help="odd descriptors, closes, dup2 over the engine's, close_range, wild pages")
    p.add_argument("--watchdog", type=float, default=20.0,
                   help="seconds a batch may take before it is reported as a hang (0: none)")
    p.add_argument("--inject-hang", type=int, default=0,
                   help="self-test: batch N starts with a chain that waits for ever")
    p.add_argument("--mutate", action="store_true",
                   help="self-test: the model expects -ENOSYS from refused numbers (must fail)")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    import faulthandler
    faulthandler.dump_traceback_later(args.seconds + 60, exit=True)     # a hang: traceback, exit 1
    print(f"fuzz_driver: seed {args.seed}", file=sys.stderr, flush=True)   # (for a crash)
    out = run(args)
    out["seed"] = args.seed
    sys.stdout.flush()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
