"""The environment variables (URING_SHIM_BACKEND, SYSLET_COMPAT_TRACE,
SYSLET_COMPAT_DEBUG, SYSLET_COMPAT_ABI): a bad value is the same one-line
error from Python (an EnvVarError at first use; ``python -m compat`` prints it
and exits 2) and from libsyslet (at load, before main; exit status 2) --
never a traceback, never a silent fallback.  Unset is the default; the empty
string is a bad value."""
import os
import re
import subprocess
import sys

import pytest

import compat
import uring_shim
from compat import _env
from uring_shim import _backend

from dropin_lib import ROOT, preload_path

DROPIN_C = os.path.join(ROOT, "compat", "csrc", "dropin.c")

#: (variable, value, message): the message spelled out, as users see it.
BAD = [
    ("URING_SHIM_BACKEND", b"bogus",
     'syslet-compat: invalid URING_SHIM_BACKEND="bogus"; '
     'expected auto, io_uring or threadpool (or unset)'),
    ("URING_SHIM_BACKEND", b"IO_URING",
     'syslet-compat: invalid URING_SHIM_BACKEND="IO_URING"; '
     'expected auto, io_uring or threadpool (or unset)'),
    ("URING_SHIM_BACKEND", b" threadpool",
     'syslet-compat: invalid URING_SHIM_BACKEND=" threadpool"; '
     'expected auto, io_uring or threadpool (or unset)'),
    ("SYSLET_COMPAT_TRACE", b"yes",
     'syslet-compat: invalid SYSLET_COMPAT_TRACE="yes"; expected 0 or 1 (or unset)'),
    ("SYSLET_COMPAT_TRACE", b"2",
     'syslet-compat: invalid SYSLET_COMPAT_TRACE="2"; expected 0 or 1 (or unset)'),
    ("SYSLET_COMPAT_DEBUG", b"true",
     'syslet-compat: invalid SYSLET_COMPAT_DEBUG="true"; expected 0 or 1 (or unset)'),
    ("SYSLET_COMPAT_ABI", b"v2",
     'syslet-compat: invalid SYSLET_COMPAT_ABI="v2"; expected v1, v5, v6 or v7 (or unset)'),
    ("SYSLET_COMPAT_ABI", b"V5",
     'syslet-compat: invalid SYSLET_COMPAT_ABI="V5"; expected v1, v5, v6 or v7 (or unset)'),
    # the empty string is a value, and not a valid one
    ("SYSLET_COMPAT_ABI", b"",
     'syslet-compat: invalid SYSLET_COMPAT_ABI=""; expected v1, v5, v6 or v7 (or unset)'),
    ("URING_SHIM_BACKEND", b"",
     'syslet-compat: invalid URING_SHIM_BACKEND=""; '
     'expected auto, io_uring or threadpool (or unset)'),
    # quote, backslash, newline, a non-ASCII byte: escaped, still one line
    ("SYSLET_COMPAT_DEBUG", b'1"\\\n\xff',
     'syslet-compat: invalid SYSLET_COMPAT_DEBUG="1\\x22\\x5c\\x0a\\xff"; '
     'expected 0 or 1 (or unset)'),
    # cut after 64 bytes
    ("SYSLET_COMPAT_TRACE", b"x" * 65,
     'syslet-compat: invalid SYSLET_COMPAT_TRACE="' + "x" * 64 + '..."; '
     'expected 0 or 1 (or unset)'),
]
BAD_IDS = [f"{n}={v[:12]!r}" for n, v, _ in BAD]


def _child_env(extra):
    """This process's environment without our variables, plus ``extra``
    (name -> bytes)."""
    env = {k: v for k, v in os.environb.items()
           if not k.startswith((b"SYSLET_", b"URING_SHIM_", b"LD_PRELOAD"))}
    env.update((k.encode(), v) for k, v in extra.items())
    return env


def _run(cmd, extra, **kw):
    return subprocess.run(cmd, env=_child_env(extra), capture_output=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def hello(builder):
    """A program that prints 'main' (linked with -lsyslet when asked: it
    names async_wait, so that the link keeps the library)."""
    src = ('#include <stdio.h>\n#include <syslet.h>\n'
           'int main(int argc, char **argv)\n'
           '{ (void)argv; if (LINKED && argc > 99) async_wait(0); puts("main"); return 0; }\n')
    return {linked: builder.build(src, linked=linked, name="hello",
                                  extra=[f"-DLINKED={int(linked)}"]) for linked in (False, True)}


def test_the_c_table_is_python_s():
    """dropin.c's env_vars rows, in order, with their values: compat._env.VARIABLES."""
    with open(DROPIN_C) as f:
        text = f.read()
    arrays = {name: tuple(re.findall(r'"([^"]*)"', body)) for name, body in
              re.findall(r"static const char \*const (\w+)\[\] = \{([^}]*)\};", text)}
    table = re.search(r"static const struct env_var env_vars\[\] = \{(.*?)\n\};", text, re.S)
    rows = re.findall(r'\{"(\w+)", (\w+), &\w+\}', table.group(1))
    assert tuple((name, arrays[values]) for name, values in rows) == _env.VARIABLES


@pytest.mark.parametrize("name,value,msg", BAD, ids=BAD_IDS)
def test_python_raises_the_message(monkeypatch, name, value, msg):
    monkeypatch.setenv(name, os.fsdecode(value))
    with pytest.raises(compat.EnvVarError) as ei:
        compat.Engine("threadpool")
    assert str(ei.value) == msg
    assert isinstance(ei.value, ValueError) and compat.EnvVarError is uring_shim.EnvVarError
    assert (ei.value.name, ei.value.value) == (name, value)
    with pytest.raises(compat.EnvVarError):
        compat.Context()


@pytest.mark.parametrize("name,value,msg", [b for b in BAD if b[0] == "URING_SHIM_BACKEND"],
                         ids=[i for b, i in zip(BAD, BAD_IDS) if b[0] == "URING_SHIM_BACKEND"])
def test_uring_shim_raises_the_message(monkeypatch, name, value, msg):
    _backend._reset()
    try:
        monkeypatch.setenv(name, os.fsdecode(value))
        for f in (uring_shim.backend, uring_shim.backend_reason, uring_shim.io_uring_available):
            with pytest.raises(uring_shim.EnvVarError) as ei:
                f()
            assert str(ei.value) == msg
    finally:
        monkeypatch.undo()
        _backend._reset()


@pytest.mark.parametrize("name,value,msg", BAD, ids=BAD_IDS)
def test_cli_prints_the_message(name, value, msg):
    r = _run([sys.executable, "-m", "compat", "config", "--cflags"], {name: value})
    assert (r.returncode, r.stdout, r.stderr) == (2, b"", msg.encode() + b"\n")


@pytest.mark.parametrize("name,value,msg", BAD, ids=BAD_IDS)
@pytest.mark.parametrize("linked", [False, True], ids=["preload", "linked"])
def test_dropin_exits_at_load(hello, name, value, msg, linked):
    """Before main: nothing printed but the message, exit status 2."""
    extra = {name: value}
    if not linked:
        extra["LD_PRELOAD"] = preload_path().encode()
    r = _run([hello[linked]], extra)
    assert (r.returncode, r.stdout, r.stderr) == (2, b"", msg.encode() + b"\n")


def test_dropin_exits_in_dlopen():
    """Loaded with dlopen (ctypes): the same, from inside dlopen()."""
    code = "import ctypes, sys; ctypes.CDLL(sys.argv[1]); print('loaded')"
    r = _run([sys.executable, "-c", code, preload_path()], {"SYSLET_COMPAT_TRACE": b"on"})
    assert (r.returncode, r.stdout, r.stderr) == (
        2, b"", b'syslet-compat: invalid SYSLET_COMPAT_TRACE="on"; expected 0 or 1 (or unset)\n')


def test_the_first_bad_variable_is_reported(hello):
    """Several bad values: the first in table order, in C and in Python."""
    extra = {"SYSLET_COMPAT_ABI": b"z", "SYSLET_COMPAT_DEBUG": b"x", "SYSLET_COMPAT_TRACE": b"y"}
    want = b'syslet-compat: invalid SYSLET_COMPAT_TRACE="y"; expected 0 or 1 (or unset)\n'
    c = _run([hello[False]], dict(extra, LD_PRELOAD=preload_path().encode()))
    py = _run([sys.executable, "-m", "compat", "config", "--cflags"], extra)
    assert (c.returncode, c.stderr) == (py.returncode, py.stderr) == (2, want)


GOOD = [(n, v) for n, values in _env.VARIABLES for v in values]


@pytest.mark.parametrize("name,value", GOOD, ids=[f"{n}={v!r}" for n, v in GOOD])
def test_valid_values_are_accepted(hello, monkeypatch, name, value):
    extra = {name: value.encode()}
    r = _run([hello[False]], dict(extra, LD_PRELOAD=preload_path().encode()))
    assert (r.returncode, r.stdout, r.stderr) == (0, b"main\n", b"")
    r = _run([sys.executable, "-m", "compat", "config", "--modversion"], extra)
    assert (r.returncode, r.stderr) == (0, b"")
    monkeypatch.setenv(name, value)
    compat.Engine("threadpool").close()
