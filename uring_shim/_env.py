"""Environment variables with a fixed set of values, and their one-line error.

A variable that is unset means its default; any value outside its set, the
empty string included, is an error, never a silent fallback: :class:`EnvVarError`, whose message
is one line.  The C drop-in prints the same line for the same value
(``compat/csrc/dropin.c``, ``env_message``): keep the two in step.
"""
import os
from typing import Optional, Sequence, Tuple

#: Bytes of a bad value the message quotes; longer values are cut with "...".
SHOWN_MAX = 64


def message(name: str, value: bytes, expected: Sequence[str]) -> str:
    """The one-line message for ``name=value`` when ``expected`` are the values
    it accepts, e.g. ``syslet-compat: invalid URING_SHIM_BACKEND="uring";
    expected auto, io_uring or threadpool (or unset)``.  Bytes outside
    printable ASCII, ``"`` and ``\\`` are written as ``\\xNN``."""
    shown = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}"
                    for b in value[:SHOWN_MAX])
    if len(value) > SHOWN_MAX:
        shown += "..."
    alternatives = expected[0] if len(expected) == 1 else (
        ", ".join(expected[:-1]) + " or " + expected[-1])
    return f'syslet-compat: invalid {name}="{shown}"; expected {alternatives} (or unset)'


class EnvVarError(ValueError):
    """An environment variable of syslet-compat holds a value it does not
    accept.  ``str()`` is the one-line message (the C drop-in prints the same
    one); :attr:`name`, :attr:`value` (bytes) and :attr:`expected` say what
    was wrong."""

    def __init__(self, name: str, value: bytes, expected: Sequence[str]) -> None:
        self.name = name
        self.value = value
        self.expected: Tuple[str, ...] = tuple(expected)
        super().__init__(name, value, self.expected)    # (picklable)

    def __str__(self) -> str:
        return message(self.name, self.value, self.expected)


EnvVarError.__module__ = "uring_shim"     # where users find it (uring_shim.EnvVarError)


def choice(name: str, expected: Sequence[str]) -> Optional[str]:
    """The value of environment variable ``name`` -- one of ``expected``,
    exactly -- or None when it is unset.  Raises :class:`EnvVarError` for any
    other value (the empty string included)."""
    raw = os.environb.get(name.encode())
    if raw is None:
        return None
    for value in expected:
        if raw == value.encode():
            return value
    raise EnvVarError(name, raw, expected)
