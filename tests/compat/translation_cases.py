"""The engine's answer vs the native call's, for every call the engine
translates to io_uring (read, write, pread64, pwrite64, fsync, fdatasync,
close, open, openat) on every kind of descriptor or path of the table in
docs/translation.md, section 9.  Used by test_translation.py, which runs it
as a child process per (kind, executor) under a watchdog:

    python translation_cases.py fds KIND EXECUTOR TMPDIR DISKDIR
    python translation_cases.py opens CASE EXECUTOR TMPDIR DISKDIR

It prints one JSON line when a cell starts and one with its outcome, so a
cell that hangs is named by the parent.  Each cell builds its descriptors
twice, from scratch: once for the engine (a fresh Context, so no kind
cached from another cell), once for the native call.  An outcome is the
result, the bytes a read put into the buffer, and the state of the
descriptors afterwards (position, bytes queued, flags, a file's content).

Where the native call blocks (an empty blocking pipe, ...) the cell says
how to unblock it: the engine must go async (the caller is not blocked),
then the unblock action lets it complete; the native call runs after the
same action on its own descriptors.
"""
import ctypes
import errno
import hashlib
import json
import mmap
import os
import select
import signal
import socket
import stat
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import compat  # noqa: E402
from compat import SYSLET_ASYNC, SYSLET_SYNC  # noqa: E402

N = 4096
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
FIONREAD = 0x541B
WMAX = 4 * N                # the longest write (a kind's wlen)
PAYLOAD = b"probe\n" + bytes(WMAX - 6)

OPS = ("read", "read0", "pread64", "write", "write0", "pwrite64", "fsync", "fdatasync", "close")
VARIANTS = ("plain", "sync", "async", "chained")
NR = {"read": 0, "read0": 0, "pread64": 17, "write": 1, "write0": 1, "pwrite64": 18,
      "fsync": 74, "fdatasync": 75, "close": 3, "open": 2, "openat": 257}


def sysc(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if r == -1 else r


def call_args(op, fd, buf, wbuf, wlen=N):
    """The argument words of op on fd (buf: read buffer, wbuf: write buffer)."""
    return {"read": (fd, buf, N), "read0": (fd, buf, 0), "pread64": (fd, buf, N, 0),
            "write": (fd, wbuf, wlen), "write0": (fd, wbuf, 0), "pwrite64": (fd, wbuf, wlen, 0),
            "fsync": (fd,), "fdatasync": (fd,), "close": (fd,)}[op]


# ---- kinds of descriptor ------------------------------------------------------

class Kind:
    """Descriptors of one kind, made fresh: ``fd`` the one the call uses,
    ``peers`` the others whose state is compared, ``blocks`` {op: unblock
    action} for the calls that wait natively, ``path`` a file whose content
    is compared, ``noisy`` when read data differs by chance, ``fionread``
    False when the bytes queued change on their own (a tty's echo), ``wlen``
    the count of a write."""

    def __init__(self, fd, peers=(), keep=(), blocks=None, path=None, noisy=False,
                 fionread=True, wlen=N):
        self.fd, self.peers, self.keep, self.wlen = fd, list(peers), list(keep), wlen
        self.blocks = blocks or {}
        self.path, self.noisy, self.fionread = path, noisy, fionread
        self.closed = set()

    def close(self):
        for fd in [self.fd] + self.peers + self.keep:
            if fd >= 0 and fd not in self.closed and fd < 100000:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.closed.update([self.fd] + self.peers + self.keep)


def fdstate(fd, fionread=True):
    """What can be seen of fd from outside: position, bytes queued, flags."""
    out = []
    out.append(sysc(8, fd, 0, 1))                   # lseek(fd, 0, SEEK_CUR)
    n = ctypes.c_int(-1)
    r = libc.ioctl(fd, FIONREAD, ctypes.byref(n))
    if fionread:
        out.append(n.value if r == 0 else -ctypes.get_errno())
    out.append(sysc(72, fd, 3))                     # fcntl(F_GETFL)
    return out


def state(k):
    s = [fdstate(k.fd, k.fionread)] + [fdstate(p) for p in k.peers]
    if k.path:
        with open(k.path, "rb") as f:
            s.append(hashlib.sha1(f.read()).hexdigest()[:12])
    return s


def fill_file(path, n=2 * N):
    with open(path, "wb") as f:
        f.write(bytes((i * 7 + 1) & 0xFF for i in range(n)))
    return path


def k_reg(d, flags=os.O_RDWR, name="reg"):
    p = fill_file(os.path.join(d, name))
    return Kind(os.open(p, flags), path=p)


def k_uncached(d):
    k = k_reg(d)
    os.fsync(k.fd)
    os.posix_fadvise(k.fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return k


def k_memfd(d):
    fd = os.memfd_create("tr")
    os.write(fd, bytes(range(256)) * 32)
    os.lseek(fd, 0, os.SEEK_SET)
    return Kind(fd)


def k_opath(d):
    p = fill_file(os.path.join(d, "reg"))
    return Kind(os.open(p, os.O_PATH))


def pipe_kind(which, nonblock=False, data=False, close_other=False, full=False, room=0):
    def make(d):
        r, w = os.pipe2(os.O_NONBLOCK if (nonblock or full) else 0)
        if data:
            os.write(w, b"d" * 100)
        size = 0
        if full:
            try:
                while True:
                    size += os.write(w, bytes(N))
            except BlockingIOError:
                pass
            try:
                while True:
                    size += os.write(w, b"x")
            except BlockingIOError:
                pass
            got = 0
            while got < room:               # room for `room` bytes only
                got += len(os.read(r, room - got))
            size -= room
            if not nonblock:
                os.set_blocking(w, True)
        os.set_blocking(r, not nonblock)
        fd, other = (r, w) if which == "r" else (w, r)
        if close_other:
            os.close(other)
            return Kind(fd)
        blocks = {}
        if which == "r" and not nonblock and not data:
            blocks["read"] = lambda: os.write(other, b"u" * 100)
        if full and not nonblock:
            def drain(other=other, size=size):
                os.set_blocking(other, True)
                got = 0
                while got < size:
                    got += len(os.read(other, size - got))
            blocks["write"] = drain
        # A write longer than PIPE_BUF is not atomic: with room for part
        # of it, the native call writes that part and waits for the rest.
        return Kind(fd, peers=[other], blocks=blocks, wlen=2 * N if room else N)
    return make


def sock_kind(type_, nonblock=False, data=False, peer_closed=False):
    def make(d):
        a, b = socket.socketpair(socket.AF_UNIX, type_)
        fa, fb = a.detach(), b.detach()
        os.set_blocking(fa, not nonblock)
        if data:
            os.write(fb, b"d" * 100)
        if peer_closed:
            os.close(fb)
            return Kind(fa)
        blocks = {}
        if not nonblock and not data:
            blocks["read"] = lambda: os.write(fb, b"u" * 100)
        return Kind(fa, peers=[fb], blocks=blocks)
    return make


def k_tcp(listening):
    def make(d):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if listening:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
        return Kind(s.detach())
    return make


def k_udp(d):
    fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()

    def unblock():
        s = socket.socket(fileno=fd)
        try:
            s.bind(("127.0.0.1", 0))
            addr = s.getsockname()
        finally:
            s.detach()
        t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t.sendto(b"u" * 100, addr)
        t.close()
    return Kind(fd, blocks={"read": unblock})


def pty_kind(slave, nonblock=False, data=False):
    """A pty end.  The tty layer moves bytes (and echoes) in a work queue:
    only the slave's own input queue is compared, once it holds its line."""
    def make(d):
        m, s = os.openpty()
        if data:
            os.write(m, b"line\n")
            select.select([s], [], [])      # the line reached the slave
        fd, other = (s, m) if slave else (m, s)
        os.set_blocking(fd, not nonblock)
        blocks = {}
        if not nonblock and not data:
            blocks["read"] = (lambda: os.write(m, b"line\n")) if slave else \
                             (lambda: os.write(s, b"x\n"))
        # A tty write goes through the line discipline in 2048-byte chunks
        # and may return after one (even a blocking one, measured): only a
        # single chunk has one answer.
        return Kind(fd, keep=[other], blocks=blocks, fionread=slave, wlen=N // 2)
    return make


def eventfd_kind(value=0, nonblock=False):
    def make(d):
        fd = os.eventfd(value, os.EFD_NONBLOCK if nonblock else 0)
        blocks = {}
        if not value and not nonblock:
            blocks["read"] = lambda: os.eventfd_write(fd, 1)
        return Kind(fd, blocks=blocks)
    return make


class itimerspec(ctypes.Structure):
    _fields_ = [("interval", ctypes.c_long * 2), ("value", ctypes.c_long * 2)]


def arm(fd):
    it = itimerspec((0, 0), (0, 1))
    assert libc.timerfd_settime(fd, 0, ctypes.byref(it), None) == 0


def timerfd_kind(nonblock=False, expired=False):
    def make(d):
        fd = libc.timerfd_create(1, os.O_NONBLOCK if nonblock else 0)     # CLOCK_MONOTONIC
        assert fd >= 0
        if expired:
            arm(fd)
            select.select([fd], [], [])     # until it has expired
        blocks = {} if (nonblock or expired) else {"read": lambda: arm(fd)}
        return Kind(fd, blocks=blocks)
    return make


SIGSET = (ctypes.c_ulong * 16)()
SIGSET[0] = 1 << (signal.SIGUSR1 - 1)


def signalfd_kind(nonblock=False, pending=False):
    def make(d):
        fd = libc.signalfd(-1, ctypes.byref(SIGSET), os.O_NONBLOCK if nonblock else 0)
        assert fd >= 0
        if pending:
            os.kill(os.getpid(), signal.SIGUSR1)
        blocks = {} if (nonblock or pending) else \
            {"read": lambda: os.kill(os.getpid(), signal.SIGUSR1)}
        return Kind(fd, blocks=blocks)
    return make


def epoll_kind(nonblock=False, ready=False):
    def make(d):
        fd = libc.epoll_create1(0)
        assert fd >= 0
        keep = []
        if ready:
            r, w = os.pipe()
            os.write(w, b"x")
            ev = (ctypes.c_uint32 * 3)(1, 0, 0)     # EPOLLIN
            assert libc.epoll_ctl(fd, 1, r, ctypes.byref(ev)) == 0
            keep = [r, w]
        os.set_blocking(fd, not nonblock)
        return Kind(fd, keep=keep)
    return make


def inotify_kind(nonblock=False, event=False):
    def make(d):
        fd = libc.inotify_init1(os.O_NONBLOCK if nonblock else 0)
        assert fd >= 0
        assert libc.inotify_add_watch(fd, d.encode(), 0x100) >= 0     # IN_CREATE

        def ev():
            os.close(os.open(os.path.join(d, "ev"), os.O_CREAT | os.O_RDWR, 0o600))
        if event:
            ev()
        blocks = {} if (nonblock or event) else {"read": ev, "read0": ev}
        return Kind(fd, blocks=blocks)
    return make


def uring_kind(nonblock=False):
    def make(d):
        params = ctypes.create_string_buffer(120)
        fd = sysc(425, 4, ctypes.addressof(params))
        assert fd >= 0, fd
        os.set_blocking(fd, not nonblock)
        return Kind(fd)
    return make


def path_kind(path, flags, noisy=False, seek_end=False):
    def make(d):
        fd = os.open(path, flags)
        if seek_end:
            os.lseek(fd, 0, os.SEEK_END)
        return Kind(fd, noisy=noisy)
    return make


def k_pidfd(d):
    return Kind(os.pidfd_open(os.getpid()))


def k_fanotify(d):
    fd = libc.fanotify_init(0x2, os.O_RDONLY)      # FAN_NONBLOCK, FAN_CLASS_NOTIF
    if fd < 0:
        raise Unavailable("fanotify_init needs CAP_SYS_ADMIN")
    return Kind(fd)


def k_userfaultfd(d):
    fd = sysc(323, os.O_NONBLOCK | 1)               # UFFD_USER_MODE_ONLY
    if fd < 0:
        raise Unavailable(f"userfaultfd: {os.strerror(-fd)}")
    return Kind(fd)


def k_bad(d):
    fd = 900
    while sysc(72, fd, 1) != -errno.EBADF:
        fd += 1
    return Kind(fd)


class Unavailable(Exception):
    """The kind cannot be made here (privileges, missing device)."""


def k_direct(d, disk):
    p = fill_file(os.path.join(disk, "direct"))
    return Kind(os.open(p, os.O_RDWR | os.O_DIRECT), path=p)


KINDS = {
    "reg": k_reg,
    "reg_uncached": k_uncached,
    "reg_append": lambda d: k_reg(d, os.O_RDWR | os.O_APPEND),
    "reg_direct": None,                             # needs the disk directory
    "reg_nonblock": lambda d: k_reg(d, os.O_RDWR | os.O_NONBLOCK),
    "memfd": k_memfd,
    "directory": lambda d: Kind(os.open(d, os.O_RDONLY | os.O_DIRECTORY)),
    "opath": k_opath,
    "pipe_r_empty": pipe_kind("r"),
    "pipe_r_empty_nb": pipe_kind("r", nonblock=True),
    "pipe_r_data": pipe_kind("r", data=True),
    "pipe_r_eof": pipe_kind("r", close_other=True),
    "pipe_w": pipe_kind("w"),
    "pipe_w_full": pipe_kind("w", full=True),
    "pipe_w_full_nb": pipe_kind("w", nonblock=True, full=True),
    "pipe_w_room_4k": pipe_kind("w", full=True, room=N),
    "pipe_w_noreader": pipe_kind("w", close_other=True),
    "stream_empty": sock_kind(socket.SOCK_STREAM),
    "stream_empty_nb": sock_kind(socket.SOCK_STREAM, nonblock=True),
    "stream_data": sock_kind(socket.SOCK_STREAM, data=True),
    "stream_peer_closed": sock_kind(socket.SOCK_STREAM, peer_closed=True),
    "dgram_empty": sock_kind(socket.SOCK_DGRAM),
    "dgram_empty_nb": sock_kind(socket.SOCK_DGRAM, nonblock=True),
    "dgram_data": sock_kind(socket.SOCK_DGRAM, data=True),
    "tcp_unconnected": k_tcp(False),
    "tcp_listening": k_tcp(True),
    "udp_unbound": k_udp,
    "pty_master": pty_kind(False),
    "pty_master_nb": pty_kind(False, nonblock=True),
    "pty_slave": pty_kind(True),
    "pty_slave_nb": pty_kind(True, nonblock=True),
    "pty_slave_data": pty_kind(True, data=True),
    "eventfd_zero": eventfd_kind(),
    "eventfd_zero_nb": eventfd_kind(nonblock=True),
    "eventfd_set": eventfd_kind(3),
    "timerfd_unarmed": timerfd_kind(),
    "timerfd_unarmed_nb": timerfd_kind(nonblock=True),
    "timerfd_expired": timerfd_kind(expired=True),
    "signalfd_empty": signalfd_kind(),
    "signalfd_empty_nb": signalfd_kind(nonblock=True),
    "signalfd_pending": signalfd_kind(pending=True),
    "epoll": epoll_kind(),
    "epoll_nb": epoll_kind(nonblock=True),
    "epoll_ready": epoll_kind(ready=True),
    "inotify_empty": inotify_kind(),
    "inotify_empty_nb": inotify_kind(nonblock=True),
    "inotify_event": inotify_kind(event=True),
    "io_uring": uring_kind(),
    "io_uring_nb": uring_kind(nonblock=True),
    "dev_null": path_kind("/dev/null", os.O_RDWR),
    "dev_zero": path_kind("/dev/zero", os.O_RDWR),
    "dev_full": path_kind("/dev/full", os.O_RDWR),
    "dev_urandom": path_kind("/dev/urandom", os.O_RDONLY, noisy=True),
    "dev_kmsg_nb": path_kind("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK, seek_end=True),
    "procfs_ostype": path_kind("/proc/sys/kernel/ostype", os.O_RDONLY),
    "procfs_comm": path_kind("/proc/self/comm", os.O_RDWR),
    "procfs_mounts": path_kind("/proc/self/mounts", os.O_RDONLY),
    "sysfs": path_kind("/sys/devices/system/cpu/online", os.O_RDONLY),
    "nsfs": path_kind("/proc/self/ns/net", os.O_RDONLY),
    "pidfd": k_pidfd,
    "fanotify_nb": k_fanotify,
    "userfaultfd_nb": k_userfaultfd,
    "bad_fd": k_bad,
}


def make_kind(name, d, disk):
    if name == "reg_direct":
        return k_direct(d, disk)
    try:
        return KINDS[name](d)
    except (PermissionError, FileNotFoundError) as e:
        raise Unavailable(str(e))


# ---- one cell -------------------------------------------------------------------

class Bufs:
    """A read buffer (0xAA) and a write buffer (PAYLOAD), page aligned."""

    def __init__(self):
        self.m = mmap.mmap(-1, N + WMAX)
        self.m[:N] = b"\xaa" * N
        self.m[N:] = PAYLOAD
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.m))
        self.buf, self.wbuf = base, base + N

    def data(self):
        return self.m[:N]


def outcome(k, op, res, data):
    out = {"res": res, "state": state(k)}
    if op in ("read", "pread64") and res > 0 and not k.noisy:
        out["data"] = hashlib.sha1(data).hexdigest()[:12]
    return out


def run_native(name, op, d, disk):
    k = make_kind(name, d, disk)
    try:
        if op in k.blocks:
            k.blocks[op]()
        b = Bufs()
        res = sysc(NR[op], *call_args(op, k.fd, b.buf, b.wbuf, k.wlen))
        if op == "close" and res == 0:
            k.closed.add(k.fd)
        return outcome(k, op, res, b.data())
    finally:
        k.close()


def run_engine(name, op, variant, executor, d, disk):
    """The op as a syslet (variant: plain, sync = SYSLET_SYNC on the atom,
    async = SYSLET_ASYNC, chained = after a pread64 of a regular file)."""
    ctx = compat.Context(backend=executor, ring_slots=8)
    other = None
    try:
        k = make_kind(name, d, disk)
        try:
            buf = ctx.buffer(N, align=N)
            buf.write(b"\xaa" * N)
            wbuf = ctx.buffer(WMAX, align=N)
            wbuf.write(PAYLOAD)
            ch = ctx.chain()
            if variant == "chained":
                other = os.open(fill_file(os.path.join(disk, "first")), os.O_RDONLY)
                ch.atom(NR["pread64"], other, ctx.buffer(16), 16, 0, ret=True)
            flags = {"sync": SYSLET_SYNC, "async": SYSLET_ASYNC}.get(variant, 0)
            a = ch.atom(NR[op], *call_args(op, k.fd, buf, wbuf, k.wlen), ret=True, flags=flags)
            final = ctx.exec(ch)
            went_async = final is None
            if op in k.blocks:
                k.blocks[op]()
            if final is None:
                got = []
                while not got:
                    got = ctx.wait(1, None)
                final = got[0]
            assert final.addr == a.addr, "the syslet ended before the call"
            res = a.result
            if res >= 1 << 63:
                res -= 1 << 64
            if op == "close" and res == 0:
                k.closed.add(k.fd)
            out = outcome(k, op, res, buf.read())
            out["async"] = went_async
            return out
        finally:
            k.close()
    finally:
        ctx.close()
        if other is not None:
            os.close(other)


def cells(name):
    for op in OPS:
        for variant in VARIANTS:
            yield op, variant


def fresh_dir(base, tag):
    d = os.path.join(base, tag)
    os.makedirs(d)
    return d


def main_fds(name, executor, tmp, disk):
    # SIGUSR1 stays pending for the signalfd kinds (every engine thread
    # blocks it too: they start from this thread's mask).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    n = 0
    try:
        make_kind(name, fresh_dir(tmp, "probe"), fresh_dir(disk, "probe")).close()
    except Unavailable as e:
        print(json.dumps({"unavailable": str(e)}), flush=True)
        return
    probe_blocks = set(KINDS[name](fresh_dir(tmp, "p2")).blocks) if name != "reg_direct" else set()
    for op, variant in cells(name):
        blocking = op in probe_blocks
        if blocking and variant in ("sync", "chained"):
            continue        # SYNC would wait in the caller by definition
        cell = [op, variant]
        print(json.dumps({"start": cell}), flush=True)
        n += 1
        nat = run_native(name, op, fresh_dir(tmp, f"n{n}"), fresh_dir(disk, f"n{n}"))
        eng = run_engine(name, op, variant, executor, fresh_dir(tmp, f"e{n}"),
                         fresh_dir(disk, f"e{n}"))
        print(json.dumps({"cell": cell, "native": nat, "engine": eng, "blocks": blocking}),
              flush=True)


# ---- open / openat ------------------------------------------------------------------

#: (name, path (@ = under the cell's directory), flags, mode, blocks: partner
#: action that unblocks the native open, or None)
OPEN_CASES = {
    "regular": ("@reg", os.O_RDONLY, 0),
    "regular_rdwr_append_cloexec": ("@reg", os.O_RDWR | os.O_APPEND | os.O_CLOEXEC, 0),
    "regular_direct": ("@disk/reg", os.O_RDONLY | os.O_DIRECT, 0),
    "regular_trunc": ("@reg", os.O_RDWR | os.O_TRUNC, 0),
    "create": ("@new", os.O_RDWR | os.O_CREAT, 0o640),
    "create_junk_mode": ("@new", os.O_RDWR | os.O_CREAT, 0xFFFFF1FF),
    "create_excl_existing": ("@reg", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600),
    "tmpfile": ("@", os.O_RDWR | os.O_TMPFILE, 0o600),
    "opath": ("@reg", os.O_PATH, 0),
    "directory_flag_on_file": ("@reg", os.O_RDONLY | os.O_DIRECTORY, 0),
    "symlink_nofollow": ("@link", os.O_RDONLY | os.O_NOFOLLOW, 0),
    "directory": ("@sub", os.O_RDONLY, 0),
    "directory_wronly": ("@sub", os.O_WRONLY, 0),
    "missing": ("@missing", os.O_RDONLY, 0),
    "missing_component": ("@missing/x", os.O_RDONLY, 0),
    "long_component": ("@" + "x" * 300, os.O_RDONLY, 0),
    "unknown_flag_bits": ("@reg", os.O_RDONLY | 0x40000000, 0),
    "fifo_rdonly_nonblock": ("@fifo", os.O_RDONLY | os.O_NONBLOCK, 0),
    "fifo_wronly_nonblock_no_reader": ("@fifo", os.O_WRONLY | os.O_NONBLOCK, 0),
    "fifo_rdonly_no_writer": ("@fifo", os.O_RDONLY, 0),
    "fifo_wronly_no_reader": ("@fifo", os.O_WRONLY, 0),
    "fifo_rdwr": ("@fifo", os.O_RDWR, 0),
    "fifo_through_symlink": ("@fifolink", os.O_RDONLY, 0),
    "unix_socket": ("@sock", os.O_RDWR, 0),
    "dev_null": ("/dev/null", os.O_RDWR, 0),
    "dev_ptmx": ("/dev/ptmx", os.O_RDWR | os.O_NOCTTY, 0),
    "dev_tty_no_ctty": ("/dev/tty", os.O_RDWR, 0),
    "procfs": ("/proc/self/stat", os.O_RDONLY, 0),
    "sysfs": ("/sys/devices/system/cpu/online", os.O_RDONLY, 0),
    "nsfs": ("/proc/self/ns/net", os.O_RDONLY, 0),
}
OPEN_VARIANTS = ("open", "openat", "sync", "chained")


def open_setup(d, disk):
    fill_file(os.path.join(d, "reg"))
    fill_file(os.path.join(disk, "reg"))
    os.symlink(disk, os.path.join(d, "disk"))
    os.mkdir(os.path.join(d, "sub"))
    os.mkfifo(os.path.join(d, "fifo"), 0o600)
    os.symlink(os.path.join(d, "fifo"), os.path.join(d, "fifolink"))
    os.symlink(os.path.join(d, "reg"), os.path.join(d, "link"))
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(d, "sock"))
    return s


def open_path(d, p):
    return os.path.join(d, p[1:]) if p.startswith("@") else p


def open_unblock(case, d):
    """How a FIFO open that waits natively is let go: (action, fds it
    opened), or None.  A reader waits for a writer: the action opens the
    write side (blocking: it waits for that reader in turn); a writer waits
    for a reader: the action opens a reader (non-blocking)."""
    if case in ("fifo_rdonly_no_writer", "fifo_through_symlink"):
        mode = os.O_WRONLY
    elif case == "fifo_wronly_no_reader":
        mode = os.O_RDONLY | os.O_NONBLOCK
    else:
        return None
    fds = []
    return (lambda: fds.append(os.open(os.path.join(d, "fifo"), mode))), fds


def open_outcome(res, d, disk):
    out = {"res": res if res < 0 else "fd"}
    if res >= 0:
        link = os.readlink(f"/proc/self/fd/{res}")
        out["link"] = link.replace(d, "$D").replace(disk, "$K").split(" (deleted)")[0].split("#")[0]
        if "/proc/" in link:
            out["link"] = "procfs"
        out["fl"] = sysc(72, res, 3)
        out["fdfl"] = sysc(72, res, 1)
        out["mode"] = stat.S_IFMT(os.fstat(res).st_mode)
        os.close(res)
    new = os.path.join(d, "new")
    if os.path.exists(new):
        out["created"] = oct(os.stat(new).st_mode)
    return out


def run_native_open(case, d, disk):
    s = open_setup(d, disk)
    os.umask(0o022)
    p, flags, mode = OPEN_CASES[case]
    ub = open_unblock(case, d)
    t = None
    try:
        if ub and flags & os.O_ACCMODE == os.O_WRONLY:
            ub[0]()                     # a reader first: the writer's open returns
        elif ub:
            t = threading.Thread(target=ub[0])  # the writer waits for this reader
            t.start()
        path = ctypes.create_string_buffer(open_path(d, p).encode())
        res = sysc(NR["open"], ctypes.addressof(path), flags, mode)
        if t:
            t.join()
        return open_outcome(res, d, disk)
    finally:
        s.close()
        for fd in (ub[1] if ub else []):
            os.close(fd)


def run_engine_open(case, variant, executor, d, disk):
    s = open_setup(d, disk)
    os.umask(0o022)
    p, flags, mode = OPEN_CASES[case]
    ub = open_unblock(case, d)
    ctx = compat.Context(backend=executor, ring_slots=8)
    other = None
    try:
        ch = ctx.chain()
        if variant == "chained":
            other = os.open(os.path.join(d, "reg"), os.O_RDONLY)
            ch.atom(NR["pread64"], other, ctx.buffer(16), 16, 0, ret=True)
        fl = SYSLET_SYNC if variant == "sync" else 0
        path = open_path(d, p).encode()
        if variant == "openat":
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            rel = p[1:] if p.startswith("@") else p
            a = ch.atom(NR["openat"], dfd, rel.encode() if rel else b".", flags, mode, ret=True,
                        flags=fl)
        else:
            dfd = None
            a = ch.atom(NR["open"], path, flags, mode, ret=True, flags=fl)
        final = ctx.exec(ch)
        went_async = final is None
        if ub:
            ub[0]()
        if final is None:
            got = []
            while not got:
                got = ctx.wait(1, None)
            final = got[0]
        assert final.addr == a.addr
        res = a.result
        if res >= 1 << 63:
            res -= 1 << 64
        out = open_outcome(res, d, disk)
        out["async"] = went_async
        if dfd is not None:
            os.close(dfd)
        return out
    finally:
        ctx.close()
        s.close()
        if other is not None:
            os.close(other)
        for fd in (ub[1] if ub else []):
            os.close(fd)


def main_opens(case, executor, tmp, disk):
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    blocking = open_unblock(case, "/") is not None
    n = 0
    for variant in OPEN_VARIANTS:
        if blocking and variant in ("sync", "chained"):
            continue
        cell = ["open", variant]
        print(json.dumps({"start": cell}), flush=True)
        n += 1
        nat = run_native_open(case, fresh_dir(tmp, f"n{n}"), fresh_dir(disk, f"n{n}"))
        eng = run_engine_open(case, variant, executor, fresh_dir(tmp, f"e{n}"),
                              fresh_dir(disk, f"e{n}"))
        print(json.dumps({"cell": cell, "native": nat, "engine": eng, "blocks": blocking}),
              flush=True)


if __name__ == "__main__":
    what, name, executor, tmp, disk = sys.argv[1:6]
    if what == "fds":
        main_fds(name, executor, tmp, disk)
    else:
        main_opens(name, executor, tmp, disk)
    sys.stdout.flush()
    os._exit(0)
