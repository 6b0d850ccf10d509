"""``syslet-compat <command>`` (also ``python -m compat <command>``): the
syslet-compat command line.

Subcommands live in :data:`SUBCOMMANDS`, a dict ``name -> Subcommand``.  To
add one, write a module with ``add_arguments(parser)`` and ``main(args) ->
int`` and add an entry there; ``main`` builds one argparse sub-parser per
entry and dispatches to its ``run``.

A bad option never gives a traceback or argparse's multi-line usage: one
line on stderr (the error, then the subcommand's usage squeezed onto the
same line) and exit status 2.
"""
import argparse
import importlib
import os
import sys
from typing import Any, Callable, NamedTuple, NoReturn, Optional, Sequence

DIST = "syslet-compat"


class Subcommand(NamedTuple):
    help: str
    #: ``run(args) -> exit status``
    run: Callable[[argparse.Namespace], int]
    #: ``configure(parser)`` adds the subcommand's own options (optional)
    configure: Optional[Callable[[argparse.ArgumentParser], None]] = None


def _lazy(module: str, attr: str) -> Callable[..., Any]:
    """A callable that imports ``compat.<module>`` only when called."""

    def call(*a: Any, **kw: Any) -> Any:
        return getattr(importlib.import_module(f"compat.{module}"), attr)(*a, **kw)

    call.__name__ = attr
    return call


SUBCOMMANDS = {
    "demo": Subcommand(
        help="run the syslet demo (copy loop, fio-style reads, open/read/close chains, "
             "cached reads that stay synchronous beside O_DIRECT reads that go async)",
        run=_lazy("_demo", "main"),
        configure=_lazy("_demo", "add_arguments"),
    ),
    "config": Subcommand(
        help="print what a C build needs to use libsyslet (--cflags, --libs, --preload, ...)",
        run=_lazy("_config", "run"), configure=_lazy("_config", "add_arguments"),
    ),
    "conformance": Subcommand(
        help="check an implementation of the syslet C ABI (this project's, or --preload PATH) "
             "against every item of the v1 specification",
        run=_lazy("_conformance", "main"),
        configure=_lazy("_conformance", "add_arguments"),
    ),
    "run": Subcommand(
        help="run a program under libsyslet and write a migration report at its exit",
        run=_lazy("_run", "main"),
        configure=_lazy("_run", "add_arguments"),
    ),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())
        if usage.startswith("usage: "):
            usage = usage[len("usage: "):]
        self.exit(2, f"{self.prog}: {message} (usage: {usage})\n")


def prog_name() -> str:
    """``syslet-compat`` for the console script, ``python -m compat`` for -m."""
    base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if base in ("", "__main__.py", "-c", "-m"):
        return "python -m compat"
    return base


def version() -> str:
    from . import __version__
    return __version__


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog or prog_name(),
        description="syslet-compat: the 2007 syslet API (ABI v1) on io_uring.")
    parser.add_argument("--version", action="version", version=f"{DIST} {version()}")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, cmd in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if cmd.configure is not None:
            cmd.configure(p)
        p.set_defaults(_run=cmd.run, _parser=p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # reported by the subcommand's parser: its usage, not the top level's
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    # The environment is checked before any command, as libsyslet does at
    # load: a bad value is one line on stderr and status 2 (compat._env).
    from ._env import EnvVarError, read
    try:
        read()
    except EnvVarError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except BrokenPipeError:     # `syslet-compat conformance --list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
