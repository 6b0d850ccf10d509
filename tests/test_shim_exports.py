"""The public surface: names, docstrings, constants, version check."""
import inspect

import pytest

import uring_shim as us
from uring_shim import _binding


def test_all_names_exist_and_public_callables_are_documented():
    for name in us.__all__:
        obj = getattr(us, name)
        if callable(obj):
            assert inspect.getdoc(obj), name
    for cls in (us.Ring, us.Pool):
        for name, member in vars(cls).items():
            if not name.startswith("_") and (callable(member) or isinstance(member, property)):
                assert inspect.getdoc(member), f"{cls.__name__}.{name}"


def test_no_private_leaks_into_all():
    assert all(not n.startswith("_") or n == "__version__" for n in us.__all__)


def test_opcode_table():
    assert us.IORING_OP_NOP == 0 and us.IORING_OP_READ == 22
    assert us.IORING_OP_MSG_RING == 40 and us.IORING_OP_SENDMSG_ZC == 48
    assert us.IORING_OP_FIXED_FD_INSTALL == 54 and us.IORING_OP_PIPE == 62
    assert len(us.OPCODES) == 63 and sorted(us.OPCODES.values()) == list(range(63))
    assert us.IORING_FIXED_FD_NO_CLOEXEC == 1
    assert us.IOSQE_IO_LINK == 4 and us.IOSQE_IO_HARDLINK == 8 and us.IOSQE_FIXED_FILE == 1


def test_version_matches_compiled_module():
    assert us.__version__ == _binding.ffi.string(_binding.lib.us_version()).decode()


def test_stale_build_is_an_import_error():
    with pytest.raises(ImportError):
        _binding.check_version("0.0.0-old")
    _binding.check_version(us.__version__)
