"""Turning the kernel's ``-errno`` convention into ``OSError`` (one place)."""
import errno as _errno
import os
from typing import Optional


def oserror(err: int, what: Optional[str] = None) -> OSError:
    """Return ``OSError(err, strerror(err), what)`` (``what`` names the call)."""
    if what is None:
        return OSError(err, os.strerror(err))
    return OSError(err, os.strerror(err), what)


def check(ret: int, what: str) -> int:
    """Return ``ret`` if it is >= 0, else raise ``OSError(-ret)`` naming ``what``."""
    if ret < 0:
        raise oserror(-ret, what)
    return ret


def closed_error(what: str, forked: bool = False) -> OSError:
    """The ``OSError(EBADF)`` raised by a closed ring or pool, or one inherited by fork."""
    if forked:
        return OSError(_errno.EBADF, "object belongs to the parent process (inherited by fork)", what)
    return OSError(_errno.EBADF, "object is closed", what)
