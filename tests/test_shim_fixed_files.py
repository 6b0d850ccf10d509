"""Registered files and buffers: open -> read -> FIXED_FD_INSTALL -> close
through a fixed-file slot (§3.3), READ_FIXED into a registered buffer."""
import errno
import fcntl
import os

import pytest

import uring_shim as us
from uring_shim import IOSQE_FIXED_FILE, IOSQE_IO_LINK

pytestmark = pytest.mark.usefixtures("needs_io_uring")
SLOT = 3
DATA = b"syslet!" * 14 + b"xx"        # 100 bytes


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "data"
    p.write_bytes(DATA)
    return p


@pytest.fixture
def fring(ring):
    if not ring.supports(us.IORING_OP_FIXED_FD_INSTALL):
        pytest.skip("kernel lacks IORING_OP_FIXED_FD_INSTALL (6.8+)")
    ring.register_files_sparse(8)
    return ring


def chain(ring, path, buf, nbytes, install_flags=0):
    ring.prep_many([
        dict(opcode=us.IORING_OP_OPENAT, fd=-100, addr=os.fsencode(path),
             op_flags=os.O_RDONLY, file_index=SLOT + 1, flags=IOSQE_IO_LINK, user_data=1),
        dict(opcode=us.IORING_OP_READ, fd=SLOT, addr=buf, len=nbytes, off=0,
             flags=IOSQE_FIXED_FILE | IOSQE_IO_LINK, user_data=2),
        dict(opcode=us.IORING_OP_FIXED_FD_INSTALL, fd=SLOT, op_flags=install_flags,
             flags=IOSQE_FIXED_FILE | IOSQE_IO_LINK, user_data=3),
        dict(opcode=us.IORING_OP_CLOSE, fd=0, file_index=SLOT + 1, user_data=4),
    ])
    comps = ring.wait(4, timeout=5)
    assert len(comps) == 4
    return {c.user_data: c.res for c in comps}


def test_open_read_install_close_chain(fring, path):
    buf = bytearray(100)
    res = chain(fring, path, buf, 100)
    assert res[1] == 0 and res[2] == 100 and res[4] == 0
    fd = res[3]
    assert fd >= 0
    try:
        assert bytes(buf) == DATA
        assert os.fstat(fd).st_size == len(DATA)
        assert os.pread(fd, 200, 0) == DATA
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC     # default O_CLOEXEC
    finally:
        os.close(fd)
    # the slot was closed by the chain: a fixed read on it fails with EBADF
    fring.prep(us.IORING_OP_READ, fd=SLOT, addr=buf, len=1, flags=IOSQE_FIXED_FILE, user_data=5)
    assert fring.wait(1, timeout=5)[0].res == -errno.EBADF


def test_install_no_cloexec(fring, path):
    res = chain(fring, path, bytearray(100), 100, us.IORING_FIXED_FD_NO_CLOEXEC)
    fd = res[3]
    try:
        assert not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)


def test_short_read_severs_cleanup_and_slot_is_reclaimed(fring, path):
    res = chain(fring, path, bytearray(4096), 4096)
    assert res == {1: 0, 2: 100, 3: -errno.ECANCELED, 4: -errno.ECANCELED}
    assert fring.register_files_update(SLOT, [-1]) == 1     # reclaim from user space


def test_register_files_update_with_real_fd(fring, path):
    fd = os.open(path, os.O_RDONLY)
    try:
        assert fring.register_files_update(0, [fd]) == 1
    finally:
        os.close(fd)                          # the table holds its own reference
    buf = bytearray(7)
    fring.prep_read(0, buf, off=0, flags=IOSQE_FIXED_FILE, user_data=9)
    assert fring.wait(1, timeout=5)[0].res == 7
    assert bytes(buf) == DATA[:7]


def test_unregister_files(fring):
    fring.unregister_files()
    with pytest.raises(OSError) as ei:
        fring.unregister_files()
    assert ei.value.errno == errno.ENXIO


def test_read_fixed_into_registered_buffer(ring, path):
    bufs = [bytearray(64), bytearray(64)]
    ring.register_buffers(bufs)
    with pytest.raises(BufferError):
        bufs[1].extend(b"x")                  # pinned while registered
    fd = os.open(path, os.O_RDONLY)
    try:
        import cffi
        ffi = cffi.FFI()
        addr = int(ffi.cast("uintptr_t", ffi.from_buffer(bufs[1])))
        ring.prep(us.IORING_OP_READ_FIXED, fd=fd, addr=addr, len=10, off=0, buf_index=1,
                  user_data=1)
        assert ring.wait() == [(1, 10, 0)]
        assert bytes(bufs[1][:10]) == DATA[:10]
    finally:
        os.close(fd)
    ring.unregister_buffers()
    bufs[1].extend(b"x")                      # released
    with pytest.raises(OSError) as ei:
        ring.unregister_buffers()
    assert ei.value.errno == errno.ENXIO
