"""The environment variables of syslet-compat, checked as libsyslet checks
them (``compat/csrc/dropin.c``: ``env_vars``, same order, same values, same
one-line message).

Python checks them at first use: every :class:`compat.Engine` (so every
:class:`compat.Context` and the default context of the raw calls, v1 to v7)
reads and checks all of them when it is made, and raises
:class:`EnvVarError` for the first bad one;
``python -m compat`` checks them before it runs a command and exits with
status 2 and the message.  ``uring_shim`` alone reads only
``URING_SHIM_BACKEND``, at its first ``backend()``.
"""
from typing import Dict, Optional, Tuple

from uring_shim._backend import CHOICES as _BACKENDS
from uring_shim._backend import ENV as _BACKEND_ENV
from uring_shim._env import EnvVarError, choice

#: (name, the values it accepts), in the order they are checked.  Unset: the
#: default (``auto``, ``0``, ``0``, v1's numbers only); the empty string is
#: no value.
VARIABLES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    (_BACKEND_ENV, tuple(_BACKENDS)),
    ("SYSLET_COMPAT_TRACE", ("0", "1")),
    ("SYSLET_COMPAT_DEBUG", ("0", "1")),
    ("SYSLET_COMPAT_ABI", ("v1", "v5", "v6", "v7")),
)


def read() -> Dict[str, Optional[str]]:
    """Every variable of :data:`VARIABLES` by name: its value, or None when
    unset.  Raises :class:`EnvVarError` for the first bad one."""
    return {name: choice(name, values) for name, values in VARIABLES}


__all__ = ["EnvVarError", "VARIABLES", "read"]
