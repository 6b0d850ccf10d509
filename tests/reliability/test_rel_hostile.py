"""What the hostile fuzz (issue 13, item 6; test_rel_fuzz.py) found, held by
deterministic tests.  Each runs in a child process under a timeout, so a
hang fails the test instead of the suite; results are compared with the
native call made in the same child (errno values and bytes, never
messages).

* A descriptor number the program closed and reused for another kind of
  file (os.dup2, os.close + open, close_range) while the engine had its old
  kind cached: a read or write of it went to io_uring, which parks a read of
  an epoll fd or of an empty O_NONBLOCK pipe, pty or inotify fd, and a write
  into a full O_NONBLOCK pipe, for ever (a SYSLET_SYNC caller hung).  The
  engine now checks a cached kind once per syslet (docs/decisions.md D39).
* A read of /dev/zero (or /dev/full) longer than a page came back short
  (4096, 8192, ...) when the task was due to reschedule: the kernel ends
  such a read early when it is non-blocking (io_uring's first attempt, the
  RWF_NOWAIT try), read(2) goes on.  They run natively now.

* SQEs behind one the kernel refused at submission (an open whose path
  the program emptied or unmapped after the engine checked it) stayed in
  the submission queue for good when the submit was the one that wakes a
  waiting caller: their syslets never completed (make fuzz-long's hang).

(The fuzz's third finding -- SQEs left in the submission queue when an
enter met the ring's descriptor closed by an atom while another engine
thread had just taken it back (D33), so that their syslets never completed
-- depends on a race between engine threads and is held by the fuzz only:
test_rel_fuzz.py.)
"""
import pytest

from rel_lib import describe, last_json, run_py

CHILD = r"""
import errno, json, os, select, sys
import compat
from rel_lib import Mem, RawRing, SYNC, addr
backend, kind, path = sys.argv[1], sys.argv[2], sys.argv[3]
e = compat.Engine(backend)
ring = RawRing(e, 64)
m = Mem()
fd = os.open(path, os.O_RDWR)
buf = m.buf(4096)

def syslet(call):
    '''[pread64(fd, buf, 16, 0) -> call], SYSLET_SYNC: both results.'''
    a = m.atoms(2); r0 = m.cell(-999); r1 = m.cell(-999)
    m.set(a[0], 17, (fd, addr(buf), 16, 0), ret=r0, flags=SYNC, next=a[1])
    m.set(a[1], call[0], call[1], ret=r1)
    assert e.exec(addr(a[0])) > 0
    return [r0.value, r1.value]

def native(f, *args):
    try:
        r = f(*args)
        return r if isinstance(r, int) else len(r)
    except OSError as ex:
        return -ex.errno

READ, WRITE = (0, (fd, addr(buf), 64)), (1, (fd, addr(buf), 64))
learned = [syslet(READ), syslet(WRITE)]     # the engine now knows fd as a regular file
keep = []
if kind == "pipe_r":
    new, w = os.pipe2(os.O_NONBLOCK); keep.append(w)
elif kind == "pipe_w_full":
    r, new = os.pipe2(os.O_NONBLOCK); keep.append(r)
    while native(os.write, new, b"x" * 65536) > 0:
        pass
elif kind == "epoll":
    ep = select.epoll(); keep.append(ep); new = ep.fileno()
elif kind == "inotify":
    import ctypes
    new = ctypes.CDLL(None).inotify_init1(os.O_NONBLOCK)
elif kind == "pty":
    mfd, new = os.openpty(); keep.append(mfd); os.set_blocking(new, False)
os.dup2(new, fd)                # behind the engine's back
call = WRITE if kind == "pipe_w_full" else READ
got = syslet(call)
want = [native(os.pread, fd, 16, 0),
        native(os.write, fd, b"x" * 64) if call is WRITE else native(os.read, fd, 64)]
print(json.dumps({"learned": learned, "got": got, "want": want}))
e.close()
"""


@pytest.mark.parametrize("kind", ["pipe_r", "pipe_w_full", "epoll", "inotify", "pty"])
def test_a_reused_number_gets_the_native_answer(backend, kind, tmp_path):
    """Old code, io_uring: the child hung (killed after 60 s) for every
    kind; pool-only agreed with native already."""
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 64)
    p = run_py(CHILD, backend, kind, str(path), backend=backend, timeout=60)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out["learned"] == [[16, 64], [16, 64]], out
    assert out["got"] == out["want"], out
    assert out["want"][1] in (-11, -22), out      # EAGAIN / EINVAL: the call does not wait


ZERO = r"""
import json, os, signal, sys, time
import compat
from rel_lib import Mem, RawRing, SYNC, addr
backend, how = sys.argv[1], sys.argv[2]
cpu = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})
spinner = os.fork()             # a busy process on the same CPU: reads get told to reschedule
if spinner == 0:
    while True:
        pass
e = compat.Engine(backend)
ring = RawRing(e, 64)
m = Mem()
n = 8 << 20
buf = m.buf(n)
zero = os.open("/dev/zero", os.O_RDONLY)
full = os.open("/dev/full", os.O_RDONLY)
got = []
try:
    for i in range(24):
        fd = zero if i % 2 else full
        a = m.atoms(2); r0 = m.cell(-999); r1 = m.cell(-999)
        if how == "lone":       # one read: tried in place first
            m.set(a[0], 0, (fd, addr(buf), n), ret=r1, flags=SYNC)
        else:                   # chained after a pread64: one io_uring segment
            m.set(a[0], 17, (zero, addr(buf), 16, 0), ret=r0, flags=SYNC, next=a[1])
            m.set(a[1], 0, (fd, addr(buf), n), ret=r1)
        assert e.exec(addr(a[0])) > 0
        got.append(r1.value)
finally:
    os.kill(spinner, signal.SIGKILL)
    os.waitpid(spinner, 0)
print(json.dumps({"got": got, "n": n}))
e.close()
"""


@pytest.mark.parametrize("how", ["lone", "chained"])
def test_dev_zero_reads_are_whole(backend, how):
    """Old code: io_uring, both kinds came back short (e.g. 888832 or
    2932736 of 8 MiB); pool-only, the chained ones (the lone ones mostly
    not: the race is the scheduler's)."""
    p = run_py(ZERO, backend, how, backend=backend, timeout=120)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out["got"] == [out["n"]] * len(out["got"]), out


STRAND = r"""
import ctypes, json, os, sys, threading, time
import compat
from rel_lib import Mem, RawRing, ASYNC, addr
backend = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
U64 = ctypes.c_uint64
class Api(ctypes.Structure): _fields_ = [("api", U64), ("features", U64), ("ioctls", U64)]
class Reg(ctypes.Structure): _fields_ = [("start", U64), ("len", U64), ("mode", U64), ("ioctls", U64)]
class Copy(ctypes.Structure): _fields_ = [("dst", U64), ("src", U64), ("len", U64), ("mode", U64), ("copy", ctypes.c_int64)]
UFFDIO_API, UFFDIO_REGISTER, UFFDIO_COPY = 0xc018aa3f, 0xc020aa00, 0xc028aa03

def slow_page():
    '''An anonymous page whose first touch waits (userfaultfd) until fill().'''
    uffd = libc.syscall(323, os.O_CLOEXEC)
    assert uffd >= 0, ctypes.get_errno()
    assert libc.ioctl(uffd, UFFDIO_API, ctypes.byref(Api(0xAA, 0, 0))) == 0
    pg = libc.mmap(None, 4096, 3, 0x22, -1, 0)
    assert libc.ioctl(uffd, UFFDIO_REGISTER, ctypes.byref(Reg(pg, 4096, 1, 0))) == 0
    def fill(content):
        src = ctypes.create_string_buffer(bytes(content).ljust(4096, b"\0"), 4096)
        assert libc.ioctl(uffd, UFFDIO_COPY, ctypes.byref(Copy(pg, ctypes.addressof(src), 4096, 0, 0))) == 0
        os.close(uffd)
    return pg, fill

e = compat.Engine(backend)
ring = RawRing(e, 64)
m = Mem()
r, w = os.pipe()
path = m.cell(ord("."))     # the path "." -- until C's read result (0) lands on it
buf = m.buf(16)
ffd = os.open("/etc/hostname", os.O_RDONLY)
ts = (ctypes.c_int64 * 2)(0, 200000000)
res = {}
# Three chains parked on one pipe (submitted C, B, A: the pipe wakes its
# readers last first, so the CQEs come A, B, C).  The second atoms take an
# argument from the first's result, so each is planned -- its path checked --
# only once that result is in.
for name in "CBA":
    a = m.atoms(3); rs = [m.cell(-999) for _ in range(3)]
    res[name] = rs
    m.set(a[0], 0, (r, addr(buf), 1), ret=path if name == "C" else rs[0], flags=ASYNC,
          next=None if name == "C" else a[1])
    if name == "A":         # open(".", O_RDONLY = *rs[0]); then a nanosleep in the pool
        m.set(a[1], 2, (addr(path), rs[0], 0), ret=rs[1], flags=ASYNC, next=a[2])
        m.set(a[2], 35, (addr(ts), 0), ret=rs[2])
    elif name == "B":       # pread64(file, buf, *rs[0] = 0, 0)
        m.set(a[1], 17, (ffd, addr(buf), rs[0], 0), ret=rs[1], flags=ASYNC)
    assert e.exec(addr(a[0])) == 0
waiter = threading.Thread(target=e.wait, args=(1, 5.0))
waiter.start()
# A getpid atom on a page that is not there yet: exec_batch holds the
# engine while it reads it, so the three completions pile up and whoever
# takes the engine next reaps them in one go: A plans open("."), B its
# pread, C's result turns the path into "" and C's entry wakes the waiter
# with a submit -- at which the kernel refuses the open (ENOENT) and stops.
pg, fill = slow_page()
tmpl = m.atoms(1); rg = m.cell(-999)
m.set(tmpl[0], 39, (), ret=rg)
holder = threading.Thread(target=e.exec_batch, args=([pg],))
time.sleep(0.05)
holder.start()
time.sleep(0.1)
os.close(w)
time.sleep(0.1)
fill(ctypes.string_at(addr(tmpl), ctypes.sizeof(tmpl)))
holder.join()
waiter.join()
deadline = time.monotonic() + 10
while time.monotonic() < deadline and (res["B"][1].value == -999 or res["A"][2].value == -999):
    time.sleep(0.01)
got = {k: [c.value for c in v] for k, v in res.items()}
entries = []
while len(entries) < 3 and time.monotonic() < deadline + 1:
    entries += ring.reap()
print(json.dumps({"got": got, "path": path.value, "getpid": rg.value, "pid": os.getpid(),
                  "entries": len(entries)}))
e.close()
"""


def test_sqes_behind_one_the_kernel_refuses_are_submitted(backend):
    """An SQE whose preparation fails at submission (here: an open whose
    path the program emptied after the engine checked it) stops the kernel
    there; the SQEs after it stay in the SQ.  Old code, io_uring: the submit
    that wakes a waiting caller forgot them, B's pread never ran and the
    child waited out its deadline (make fuzz-long's hang: a close behind a
    refused open).  Pool-only agreed already."""
    p = run_py(STRAND, backend, backend=backend, timeout=60)
    assert p.returncode == 0, describe(p)
    out = last_json(p.stdout)
    assert out["path"] == 0, out
    assert out["got"] == {"A": [0, -2, 0], "B": [0, 0, -999], "C": [-999, -999, -999]}, out
    assert out["getpid"] == out["pid"], out
    assert out["entries"] == 3, out
