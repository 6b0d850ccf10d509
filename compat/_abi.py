"""Syslet ABI v1, x86_64 native layout (docs/spec.md section 1).

``struct syslet_uatom`` is 88 bytes, ``struct async_head_user`` 24 bytes;
the ctypes structures below are checked against the C compiler's offsets by
the layout tests.
"""
import ctypes

SYSLET_ASYNC = 0x01
SYSLET_SYNC = 0x02
SYSLET_NO_COMPLETE = 0x04
SYSLET_STOP_ON_NONZERO = 0x08
SYSLET_STOP_ON_ZERO = 0x10
SYSLET_STOP_ON_NEGATIVE = 0x20
SYSLET_STOP_ON_NON_POSITIVE = 0x40
SYSLET_STOP_MASK = 0x78
SYSLET_SKIP_TO_NEXT_ON_STOP = 0x80

#: Every flag bit the v1 ABI defines; other bits are refused with EINVAL.
SYSLET_FLAGS_ALL = 0xFF

__NR_async_register = 1000
__NR_async_exec = 1001
__NR_async_wait = 1002
__NR_async_unregister = 1003
__NR_umem_add = 1004


class syslet_uatom(ctypes.Structure):
    """``struct syslet_uatom`` (v1): one system call whose arguments are
    passed by pointer."""

    _fields_ = [
        ("flags", ctypes.c_ulong),
        ("nr", ctypes.c_ulong),
        ("ret_ptr", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("arg_ptr", ctypes.c_void_p * 6),
        ("private", ctypes.c_void_p),
    ]


class async_head_user(ctypes.Structure):
    """``struct async_head_user`` (v1): the completion ring registration."""

    _fields_ = [
        ("completion_ring", ctypes.c_void_p),
        ("ring_size_bytes", ctypes.c_ulong),
        ("max_nr_threads", ctypes.c_ulong),
    ]


ATOM_SIZE = ctypes.sizeof(syslet_uatom)
AHU_SIZE = ctypes.sizeof(async_head_user)
assert ATOM_SIZE == 88 and AHU_SIZE == 24

#: Numbers that run umem_add inside an atom of every atom personality: the
#: project's own umem_add of v1, v5 and v6 (docs/spec.md section 8).
UMEM_NUMBERS = frozenset({1004, 1012, 1022})

#: System calls an atom may not make (they need the caller's own thread or
#: registers, or would recurse into the syslet layer: the rest of the
#: project's range 1000-1039): result -EINVAL.
REFUSED = frozenset({15, 56, 57, 58, 59, 60, 231, 322, 435}
                    | set(range(1000, 1040)) - UMEM_NUMBERS)
