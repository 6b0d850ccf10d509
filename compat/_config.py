"""``syslet-compat config`` (``python -m compat config``): what a C build
needs to use the drop-in.

pkg-config style; several flags print on one line in the order given::

    cc $(python -m compat config --cflags) prog.c $(python -m compat config --libs)
    cc $(python -m compat config --legacy-cflags) old2007.c $(python -m compat config --libs)
    LD_PRELOAD=$(python -m compat config --preload) ./prog
    PKG_CONFIG_PATH=$(python -m compat config --pc-path) pkg-config --cflags --libs syslet

``--pc`` prints a ``syslet.pc`` with absolute paths; the one installed in the
package (``--pc-path``) is relocatable (``${pcfiledir}``).  Nothing here
imports the engine.
"""
import argparse
import os
import shlex
import sys
from typing import Any, Callable, Optional, Sequence, Tuple

PKG_DIR = os.path.dirname(os.path.abspath(__file__))
INCLUDE_DIR = os.path.join(PKG_DIR, "include")
LIB_DIR = PKG_DIR
LIBRARY = os.path.join(LIB_DIR, "libsyslet.so")
PC_FILE = os.path.join(PKG_DIR, "syslet.pc")

def _q(p: str) -> str:
    return shlex.quote(p)


def _cflags() -> str:
    return f"-I{_q(INCLUDE_DIR)}"


def _legacy_cflags() -> str:
    return f"-I{_q(INCLUDE_DIR)} -include syslet-numbers.h -D__user="


def _libs() -> str:
    return f"-L{_q(LIB_DIR)} -Wl,-rpath,{_q(LIB_DIR)} -lsyslet"


def _read_version() -> str:
    from . import __version__
    return __version__


def pc_text() -> str:
    """A syslet.pc with absolute paths."""
    return (f"prefix={PKG_DIR}\n"
            f"includedir={INCLUDE_DIR}\n"
            f"libdir={LIB_DIR}\n\n"
            "Name: syslet\n"
            "Description: The 2007 Linux syslet API (ABI v1) on io_uring (syslet-compat drop-in)\n"
            f"Version: {_read_version()}\n"
            "Cflags: -I${includedir}\n"
            "Libs: -L${libdir} -Wl,-rpath,${libdir} -lsyslet\n")


#: (flag, help, value function); several flags print in the order given.
_FLAGS: Tuple[Tuple[str, str, Callable[[], str]], ...] = (
    ("cflags", "compiler flags: -I<include dir> (syslet.h, syslet-numbers.h)", _cflags),
    ("legacy-cflags", "--cflags plus -include syslet-numbers.h -D__user= for 2007 code "
                      "that carries its own copy of the old header", _legacy_cflags),
    ("libs", "linker flags: -L<dir> -Wl,-rpath,<dir> -lsyslet", _libs),
    ("preload", "absolute path of libsyslet.so, for LD_PRELOAD", lambda: LIBRARY),
    ("include-dir", "the include directory", lambda: INCLUDE_DIR),
    ("lib-dir", "the directory holding libsyslet.so", lambda: LIB_DIR),
    ("pc-path", "the directory of the installed syslet.pc, for PKG_CONFIG_PATH",
     lambda: PKG_DIR),
    ("modversion", "the version", _read_version),
)
_NEEDS_LIB = {"libs", "preload", "lib-dir"}


class _Ordered(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> None:
        ns.order = (ns.order or []) + [self.dest]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, help_, _ in _FLAGS:
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"), nargs=0,
                            action=_Ordered, help=help_)
    parser.add_argument("--pc", dest="pc", nargs=0, action=_Ordered,
                        help="print a syslet.pc with absolute paths (to stdout)")
    parser.set_defaults(order=None)


def run(args: argparse.Namespace) -> int:
    prog = getattr(getattr(args, "_parser", None), "prog", "python -m compat config")
    order: list[str] = args.order or []
    if not order:
        print(f"{prog}: give at least one of "
              + ", ".join(f"--{n}" for n, _, _ in _FLAGS) + ", --pc", file=sys.stderr)
        return 2
    table = {n.replace("-", "_"): f for n, _, f in _FLAGS}
    if any(o.replace("_", "-") in _NEEDS_LIB for o in order) and not os.path.exists(LIBRARY):
        print(f"{prog}: {LIBRARY} is missing; rebuild with "
              "`make venv` or `pip install -e .`", file=sys.stderr)
        return 1
    if "pc" in order:
        if len(order) != 1:
            print(f"{prog}: --pc cannot be combined", file=sys.stderr)
            return 2
        sys.stdout.write(pc_text())
        return 0
    print(" ".join(table[o]() for o in order))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compat config",
                                     description="What a C build needs to use libsyslet.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
