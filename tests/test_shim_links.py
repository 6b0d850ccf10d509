"""Link semantics measured in spec/io_uring-notes.md §3.1, with raw opcodes."""
import errno
import os

import pytest

import uring_shim as us
from uring_shim import IOSQE_IO_HARDLINK, IOSQE_IO_LINK

pytestmark = pytest.mark.usefixtures("needs_io_uring")
ECANCELED = -errno.ECANCELED


@pytest.fixture
def hundred(tmp_path):
    """A 100-byte file, opened read-only."""
    p = tmp_path / "hundred"
    p.write_bytes(bytes(range(100)))
    fd = os.open(p, os.O_RDONLY)
    yield fd
    os.close(fd)


def results(ring, n):
    comps = ring.wait(n, timeout=5)
    assert len(comps) == n
    return {c.user_data: c.res for c in comps}


def openat_enoent(path, flags, ud):
    return dict(opcode=us.IORING_OP_OPENAT, fd=-100, addr=os.fsencode(path), flags=flags,
                user_data=ud)


def nop(flags, ud):
    return dict(opcode=us.IORING_OP_NOP, flags=flags, user_data=ud)


def test_link_severs_on_negative_result(ring, tmp_path):
    ring.prep_many([openat_enoent(tmp_path / "missing", IOSQE_IO_LINK, 1),
                    nop(IOSQE_IO_LINK, 2), nop(0, 3)])
    assert results(ring, 3) == {1: -errno.ENOENT, 2: ECANCELED, 3: ECANCELED}


def test_hardlink_continues_after_failure(ring, tmp_path):
    ring.prep_many([openat_enoent(tmp_path / "missing", IOSQE_IO_HARDLINK, 1),
                    nop(IOSQE_IO_LINK, 2), nop(0, 3)])
    assert results(ring, 3) == {1: -errno.ENOENT, 2: 0, 3: 0}


def test_severed_chain_cancels_every_later_member_even_hardlinked(ring, tmp_path):
    ring.prep_many([openat_enoent(tmp_path / "missing", IOSQE_IO_LINK, 1),
                    nop(IOSQE_IO_HARDLINK, 2), nop(IOSQE_IO_HARDLINK, 3), nop(0, 4)])
    assert results(ring, 4) == {1: -errno.ENOENT, 2: ECANCELED, 3: ECANCELED, 4: ECANCELED}


def test_link_severs_on_short_read(ring, hundred):
    buf = bytearray(4096)
    ring.prep(us.IORING_OP_READ, fd=hundred, addr=buf, len=4096, off=0,
              flags=IOSQE_IO_LINK, user_data=1)
    ring.prep_nop(user_data=2)
    assert results(ring, 2) == {1: 100, 2: ECANCELED}
    assert bytes(buf[:100]) == bytes(range(100))


def test_link_severs_on_read_at_eof(ring, hundred):
    buf = bytearray(16)
    ring.prep_read(hundred, buf, off=100, flags=IOSQE_IO_LINK, user_data=1)
    ring.prep_nop(user_data=2)
    assert results(ring, 2) == {1: 0, 2: ECANCELED}


def test_exact_read_keeps_the_link(ring, hundred):
    buf = bytearray(100)
    ring.prep_read(hundred, buf, off=0, flags=IOSQE_IO_LINK, user_data=1)
    ring.prep_nop(user_data=2)
    assert results(ring, 2) == {1: 100, 2: 0}


def test_chains_end_at_each_submit(ring, tmp_path):
    ring.prep_many([openat_enoent(tmp_path / "missing", IOSQE_IO_LINK, 1)])
    ring.submit()
    ring.prep_nop(user_data=2)
    assert results(ring, 2) == {1: -errno.ENOENT, 2: 0}


def test_submission_failure_fails_whole_hardlinked_chain(ring):
    # an unknown opcode is rejected at prep: earlier members never run (§3.1 o)
    ring.prep_many([nop(IOSQE_IO_HARDLINK, 1),
                    dict(opcode=200, flags=IOSQE_IO_HARDLINK, user_data=2), nop(0, 3)])
    assert results(ring, 3) == {1: ECANCELED, 2: -errno.EINVAL, 3: ECANCELED}
