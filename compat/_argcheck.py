"""What the builder knows about the memory a system call touches.

For each x86_64 call that reads or writes user memory through a pointer
argument whose extent the call's other arguments (or a fixed structure size)
determine, the table below names the pointer, the direction of the access
and its size in bytes.  :meth:`compat.Context` uses it when an atom is built:
a :class:`~compat.Buffer`, an :class:`~compat.Atom` (88 bytes) or bytes (the
copy, its NUL included) passed as such a pointer must hold the size, computed
from the arguments given as constants; sizes that depend on a :class:`~compat.Var`
(read when the atom runs) are not known and not checked.

Syntax, one call a line: ``name  param, param, ...`` where a param is a plain
name, or ``name:DIR[SIZE]`` for a pointer (DIR ``r``: the kernel reads it,
``w``: writes it, ``rw``: both; SIZE a Python expression over the other
params' names, ``bits(n)`` = bytes of an ``fd_set`` of n bits, ``pages(n)`` =
pages covering n bytes), or ``name:map`` for an address whose mapping the
call changes (munmap, mprotect, ...): memory a context owns may not be
passed there.

Not in the table (their extents depend on a command word, on memory
contents or on the kernel's configuration): ioctl, fcntl, prctl, arch_prctl,
ptrace, keyctl, quotactl, shmctl, msgctl, semctl, mount, the data of
capget/capset, the mempolicy calls (mbind, get_mempolicy, set_mempolicy,
migrate_pages), perf_event_open, io_uring_enter/_register, seccomp, kexec_*,
and the iovec/msghdr *targets* of readv-style calls (only the arrays
themselves are checked).  Path and name strings are read up to their NUL.
"""
from typing import Callable, Dict, FrozenSet, Iterable, Mapping, Optional, Tuple


# Sizes of x86_64 structures used below: stat 144, statx 256, statfs 120,
# utsname 390, sysinfo 112, tms 32, rusage 144, rlimit 16, timeval 16,
# timezone 8, timespec 16, itimerval/itimerspec 32, epoll_event 12 (packed),
# pollfd 8, iovec 16, msghdr 56, mmsghdr 64, siginfo 128, stack_t 24,
# ustat 32, timex 208, sched_param 4, sigevent 64, io_event 32, iocb 64,
# mq_attr 64, sembuf 6, futex_waitv 24, kernel sigaction 24 + sigset,
# sched_attr (version 0) 48, file_handle header 8, open_how 24.
_TABLE = """
read              fd, buf:w[count], count
write             fd, buf:r[count], count
stat              path, st:w[144]
fstat             fd, st:w[144]
lstat             path, st:w[144]
poll              fds:rw[8*nfds], nfds, timeout
mmap              addr:map, length, prot, flags, fd, offset
mprotect          addr:map, length, prot
munmap            addr:map, length
brk               addr:map
rt_sigaction      sig, act:r[24+sigsetsize], oact:w[24+sigsetsize], sigsetsize
rt_sigprocmask    how, set:r[sigsetsize], oset:w[sigsetsize], sigsetsize
pread64           fd, buf:w[count], count, offset
pwrite64          fd, buf:r[count], count, offset
readv             fd, iov:r[16*iovcnt], iovcnt
writev            fd, iov:r[16*iovcnt], iovcnt
pipe              fds:w[8]
select            nfds, readfds:rw[bits(nfds)], writefds:rw[bits(nfds)], exceptfds:rw[bits(nfds)], timeout:rw[16]
mremap            old_address:map, old_size, new_size, flags, new_address:map
mincore           addr, length, vec:w[pages(length)]
madvise           addr:map, length, advice
shmat             shmid, shmaddr:map, shmflg
nanosleep         req:r[16], rem:w[16]
getitimer         which, value:w[32]
setitimer         which, value:r[32], ovalue:w[32]
sendfile          out_fd, in_fd, offset:rw[8], count
connect           fd, addr:r[addrlen], addrlen
accept            fd, addr, addrlen:rw[4]
sendto            fd, buf:r[len], len, flags, addr:r[addrlen], addrlen
recvfrom          fd, buf:w[len], len, flags, addr, addrlen:rw[4]
sendmsg           fd, msg:r[56], flags
recvmsg           fd, msg:rw[56], flags
bind              fd, addr:r[addrlen], addrlen
getsockname       fd, addr, addrlen:rw[4]
getpeername       fd, addr, addrlen:rw[4]
socketpair        domain, type, protocol, sv:w[8]
setsockopt        fd, level, optname, optval:r[optlen], optlen
getsockopt        fd, level, optname, optval, optlen:rw[4]
wait4             pid, wstatus:w[4], options, rusage:w[144]
uname             buf:w[390]
semop             semid, sops:r[6*nsops], nsops
shmdt             shmaddr:map
msgsnd            msqid, msgp:r[8+msgsz], msgsz, msgflg
msgrcv            msqid, msgp:w[8+msgsz], msgsz, msgtyp, msgflg
getdents          fd, dirp:w[count], count
getcwd            buf:w[size], size
readlink          path, buf:w[bufsiz], bufsiz
gettimeofday      tv:w[16], tz:w[8]
getrlimit         resource, rlim:w[16]
getrusage         who, usage:w[144]
sysinfo           info:w[112]
times             buf:w[32]
syslog            type, buf:w[len], len
getgroups         size, list:w[4*size]
setgroups         size, list:r[4*size]
getresuid         ruid:w[4], euid:w[4], suid:w[4]
getresgid         rgid:w[4], egid:w[4], sgid:w[4]
capget            hdrp:rw[8], datap
capset            hdrp:r[8], datap
rt_sigpending     set:w[sigsetsize], sigsetsize
rt_sigtimedwait   set:r[sigsetsize], info:w[128], timeout:r[16], sigsetsize
rt_sigqueueinfo   tgid, sig, info:r[128]
rt_sigsuspend     set:r[sigsetsize], sigsetsize
sigaltstack       ss:r[24], old_ss:w[24]
utime             path, times:r[16]
ustat             dev, ubuf:w[32]
statfs            path, buf:w[120]
fstatfs           fd, buf:w[120]
sched_setparam    pid, param:r[4]
sched_getparam    pid, param:w[4]
sched_setscheduler pid, policy, param:r[4]
sched_rr_get_interval pid, tp:w[16]
adjtimex          buf:rw[208]
setrlimit         resource, rlim:r[16]
settimeofday      tv:r[16], tz:r[8]
sethostname       name:r[len], len
setdomainname     name:r[len], len
setxattr          path, name, value:r[size], size, flags
lsetxattr         path, name, value:r[size], size, flags
fsetxattr         fd, name, value:r[size], size, flags
getxattr          path, name, value:w[size], size
lgetxattr         path, name, value:w[size], size
fgetxattr         fd, name, value:w[size], size
listxattr         path, list:w[size], size
llistxattr        path, list:w[size], size
flistxattr        fd, list:w[size], size
time              tloc:w[8]
futex             uaddr:rw[4], futex_op, val, timeout, uaddr2, val3
sched_setaffinity pid, cpusetsize, mask:r[cpusetsize]
sched_getaffinity pid, cpusetsize, mask:w[cpusetsize]
io_setup          nr_events, ctxp:rw[8]
io_getevents      ctx_id, min_nr, nr, events:w[32*nr], timeout:r[16]
io_submit         ctx_id, nr, iocbpp:r[8*nr]
io_cancel         ctx_id, iocb:r[64], result:w[32]
lookup_dcookie    cookie, buf:w[len], len
remap_file_pages  addr:map, size, prot, pgoff, flags
getdents64        fd, dirp:w[count], count
set_tid_address   tidptr:w[4]
semtimedop        semid, sops:r[6*nsops], nsops, timeout:r[16]
timer_create      clockid, sevp:r[64], timerid:w[4]
timer_settime     timerid, flags, new_value:r[32], old_value:w[32]
timer_gettime     timerid, curr_value:w[32]
clock_settime     clockid, tp:r[16]
clock_gettime     clockid, tp:w[16]
clock_getres      clockid, res:w[16]
clock_nanosleep   clockid, flags, req:r[16], rem:w[16]
epoll_wait        epfd, events:w[12*maxevents], maxevents, timeout
epoll_ctl         epfd, op, fd, event:r[12]
utimes            path, times:r[32]
mq_open           name, oflag, mode, attr:r[64]
mq_timedsend      mqdes, msg:r[msg_len], msg_len, msg_prio, timeout:r[16]
mq_timedreceive   mqdes, msg:w[msg_len], msg_len, msg_prio:w[4], timeout:r[16]
mq_notify         mqdes, sevp:r[64]
mq_getsetattr     mqdes, newattr:r[64], oldattr:w[64]
waitid            idtype, id, infop:w[128], options, rusage:w[144]
add_key           type, description, payload:r[plen], plen, keyring
futimesat         dirfd, path, times:r[32]
newfstatat        dirfd, path, st:w[144], flags
readlinkat        dirfd, path, buf:w[bufsiz], bufsiz
pselect6          nfds, readfds:rw[bits(nfds)], writefds:rw[bits(nfds)], exceptfds:rw[bits(nfds)], timeout:rw[16], sigmask:r[16]
ppoll             fds:rw[8*nfds], nfds, tsp:rw[16], sigmask:r[sigsetsize], sigsetsize
set_robust_list   head:r[len], len
get_robust_list   pid, head_ptr:w[8], len_ptr:w[8]
splice            fd_in, off_in:rw[8], fd_out, off_out:rw[8], len, flags
vmsplice          fd, iov:r[16*nr_segs], nr_segs, flags
move_pages        pid, count, pages:r[8*count], nodes:r[4*count], status:w[4*count], flags
utimensat         dirfd, path, times:r[32], flags
epoll_pwait       epfd, events:w[12*maxevents], maxevents, timeout, sigmask:r[sigsetsize], sigsetsize
signalfd          fd, mask:r[sizemask], sizemask
timerfd_settime   fd, flags, new_value:r[32], old_value:w[32]
timerfd_gettime   fd, curr_value:w[32]
accept4           fd, addr, addrlen:rw[4], flags
signalfd4         fd, mask:r[sizemask], sizemask, flags
pipe2             fds:w[8], flags
preadv            fd, iov:r[16*iovcnt], iovcnt, pos_l, pos_h
pwritev           fd, iov:r[16*iovcnt], iovcnt, pos_l, pos_h
rt_tgsigqueueinfo tgid, tid, sig, info:r[128]
recvmmsg          fd, msgvec:rw[64*vlen], vlen, flags, timeout:rw[16]
prlimit64         pid, resource, new_limit:r[16], old_limit:w[16]
name_to_handle_at dirfd, path, handle:rw[8], mount_id:w[4], flags
open_by_handle_at mount_fd, handle:r[8], flags
clock_adjtime     clockid, buf:rw[208]
sendmmsg          fd, msgvec:rw[64*vlen], vlen, flags
getcpu            cpu:w[4], node:w[4], tcache
process_vm_readv  pid, local_iov:r[16*liovcnt], liovcnt, remote_iov:r[16*riovcnt], riovcnt, flags
process_vm_writev pid, local_iov:r[16*liovcnt], liovcnt, remote_iov:r[16*riovcnt], riovcnt, flags
sched_setattr     pid, attr:r[48], flags
sched_getattr     pid, attr:w[size], size, flags
getrandom         buf:w[buflen], buflen, flags
bpf               cmd, attr:rw[size], size
copy_file_range   fd_in, off_in:rw[8], fd_out, off_out:rw[8], len, flags
preadv2           fd, iov:r[16*iovcnt], iovcnt, pos_l, pos_h, flags
pwritev2          fd, iov:r[16*iovcnt], iovcnt, pos_l, pos_h, flags
pkey_mprotect     addr:map, length, prot, pkey
statx             dirfd, path, flags, mask, statxbuf:w[256]
io_pgetevents     ctx_id, min_nr, nr, events:w[32*nr], timeout:r[16], usig:r[16]
rseq              rseq:rw[rseq_len], rseq_len, flags, sig
pidfd_send_signal pidfd, sig, info:r[128], flags
openat2           dirfd, path, how:r[size], size
epoll_pwait2      epfd, events:w[12*maxevents], maxevents, timeout:r[16], sigmask:r[sigsetsize], sigsetsize
process_madvise   pidfd, iovec:r[16*vlen], vlen, advice, flags
futex_waitv       waiters:r[24*nr_futexes], nr_futexes, flags, timeout:r[16], clockid
init_module       image:r[len], len, param_values
landlock_create_ruleset attr:r[size], size, flags
umem_add          uptr:rw[8], inc
"""


#: Calls that tie memory or state to the thread that runs them, which for a
#: syslet is an engine thread (a pool worker, the driver) whose life the
#: program does not control: set_tid_address makes the worker's exit clear
#: the given word instead of its pthread id, so joining it (Context.close)
#: hangs for ever (measured on both backends); set_robust_list and rseq make
#: the kernel write into the given memory at the worker's exit or at every
#: preemption, after the atom is long done; sigaltstack delivers that
#: thread's signals onto the given stack; arch_prctl and set_thread_area
#: replace its TLS (ARCH_SET_FS crashes it).  The builder refuses them; the
#: raw API runs them, as the specification requires.
THREAD_STATE = frozenset({"set_tid_address", "set_robust_list", "rseq", "sigaltstack",
                          "arch_prctl", "set_thread_area"})


def _bits(n: int) -> int:
    return (n + 63) // 64 * 8


def _pages(n: int) -> int:
    return (n + 4095) // 4096


class Param:
    """One argument of a call: its name, and for a pointer its direction
    (``'r'``, ``'w'``, ``'rw'`` or ``'map'``) and size expression."""

    __slots__ = ("name", "dir", "size", "fn", "deps")

    def __init__(self, spec: str) -> None:
        name, _, rest = spec.partition(":")
        self.name = name.strip()
        self.dir: Optional[str] = None
        self.size: Optional[str] = None
        self.fn: Optional[Callable[..., int]] = None
        self.deps: Tuple[str, ...] = ()
        rest = rest.strip()
        if rest == "map":
            self.dir = "map"
        elif rest:
            d, _, size = rest.partition("[")
            self.dir = d
            self.size = size = size.rstrip("]")
            code = compile(size, size, "eval")
            self.deps = tuple(n for n in code.co_names if n not in ("bits", "pages"))
            # compiled once: lambda <deps>: <size>, over this table's own text
            self.fn = eval(f"lambda {', '.join(self.deps)}: {size}",
                           {"__builtins__": {}, "bits": _bits, "pages": _pages})

    def need(self, consts: Mapping[str, int]) -> Optional[int]:
        """Bytes this pointer must hold, given the constant arguments
        (name -> unsigned value), or None when a size argument is not a
        constant."""
        if self.fn is None:
            return None
        try:
            return self.fn(*[consts[d] for d in self.deps])
        except KeyError:
            return None


class Signature(Tuple[Param, ...]):
    """The :class:`Param` of a call, in argument order; ``sizes`` names
    the arguments that are sizes of a pointer."""

    sizes: FrozenSet[str]

    def __new__(cls, params: Iterable[Param]) -> "Signature":
        self = super().__new__(cls, params)
        self.sizes = frozenset(d for p in self for d in p.deps)
        return self


def _parse(text: str) -> Dict[str, Signature]:
    out = {}
    for line in text.strip().splitlines():
        name, _, params = line.strip().partition(" ")
        out[name] = Signature(Param(p) for p in params.split(","))
    return out


#: call name -> :class:`Signature` (its :class:`Param`, in argument order).
SIGNATURES = _parse(_TABLE)
