"""Kernel constants under their kernel names.

Flag words come from the compiled headers (the compiler fills their values);
the opcode table is numeric here because Debian's liburing 2.3 headers only
know opcodes up to 48 while the kernel knows 0 ... 62.
"""
from ._binding import lib

# --- opcodes (include/uapi/linux/io_uring.h, enum io_uring_op) -----------
_OPCODE_NAMES = (
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD",
    "POLL_REMOVE", "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT",
    "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT",
    "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX", "READ", "WRITE",
    "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL", "SPLICE",
    "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT",
    "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR",
    "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC",
    "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT", "FUTEX_WAKE",
    "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN", "RECV_ZC",
    "EPOLL_WAIT", "READV_FIXED", "WRITEV_FIXED", "PIPE",
)

#: opcode name (without the IORING_OP_ prefix) -> number
OPCODES = {name: num for num, name in enumerate(_OPCODE_NAMES)}

for _num, _name in enumerate(_OPCODE_NAMES):
    globals()["IORING_OP_" + _name] = _num
IORING_OP_LAST = len(_OPCODE_NAMES)

# --- flags from the compiled headers ---------------------------------------
_FROM_LIB = (
    "IOSQE_FIXED_FILE", "IOSQE_IO_DRAIN", "IOSQE_IO_LINK", "IOSQE_IO_HARDLINK",
    "IOSQE_ASYNC", "IOSQE_BUFFER_SELECT", "IOSQE_CQE_SKIP_SUCCESS",
    "IORING_SETUP_IOPOLL", "IORING_SETUP_SQPOLL", "IORING_SETUP_CQSIZE",
    "IORING_SETUP_CLAMP", "IORING_SETUP_R_DISABLED", "IORING_SETUP_SUBMIT_ALL",
    "IORING_SETUP_COOP_TASKRUN", "IORING_SETUP_SINGLE_ISSUER",
    "IORING_SETUP_DEFER_TASKRUN",
    "IORING_FEAT_SINGLE_MMAP", "IORING_FEAT_NODROP", "IORING_FEAT_SUBMIT_STABLE",
    "IORING_FEAT_FAST_POLL", "IORING_FEAT_EXT_ARG", "IORING_FEAT_NATIVE_WORKERS",
    "IORING_FEAT_CQE_SKIP", "IORING_FEAT_LINKED_FILE",
    "IORING_FILE_INDEX_ALLOC", "IORING_ASYNC_CANCEL_ALL", "IORING_ASYNC_CANCEL_FD",
    "IORING_ASYNC_CANCEL_ANY", "IORING_FSYNC_DATASYNC", "IORING_TIMEOUT_ABS",
    "IORING_TIMEOUT_ETIME_SUCCESS", "IORING_LINK_TIMEOUT_UPDATE",
    "IORING_POLL_ADD_MULTI",
    "IORING_CQE_F_BUFFER", "IORING_CQE_F_MORE", "IORING_CQE_F_SOCK_NONEMPTY",
    "IORING_CQE_F_NOTIF",
)
for _name in _FROM_LIB:
    globals()[_name] = getattr(lib, _name)

#: install_fd_flags of IORING_OP_FIXED_FD_INSTALL (6.8; not in liburing 2.3)
IORING_FIXED_FD_NO_CLOEXEC = 1

__all__ = (["OPCODES", "IORING_OP_LAST", "IORING_FIXED_FD_NO_CLOEXEC"]
           + ["IORING_OP_" + n for n in _OPCODE_NAMES] + list(_FROM_LIB))
del _num, _name
