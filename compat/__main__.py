"""``python -m compat <command>``: the syslet-compat command line.

Subcommands live in :data:`SUBCOMMANDS`, a dict ``name -> Subcommand``.  To
add one, write a module with ``add_arguments(parser)`` and ``main(args) ->
int`` and add an entry (or replace a stub) there; ``main`` builds one
argparse sub-parser per entry and dispatches to its ``run``.
"""
import argparse
import importlib
import sys
from typing import Callable, NamedTuple, Optional


class Subcommand(NamedTuple):
    help: str
    #: ``run(args) -> exit status``
    run: Callable[[argparse.Namespace], int]
    #: ``configure(parser)`` adds the subcommand's own options (optional)
    configure: Optional[Callable[[argparse.ArgumentParser], None]] = None


def _lazy(module, attr):
    """A callable that imports ``compat.<module>`` only when called (keeps
    ``python -m compat --help`` fast and independent of the engine build)."""

    def call(*a, **kw):
        return getattr(importlib.import_module(f"compat.{module}"), attr)(*a, **kw)

    call.__name__ = attr
    return call


def _config_stub(args):
    print("python -m compat config: not yet implemented", file=sys.stderr)
    return 2


SUBCOMMANDS = {
    "demo": Subcommand(
        help="run the syslet demo (file copy loop, fio-style reads, open/read/close chains)",
        run=_lazy("_demo", "main"),
        configure=_lazy("_demo", "add_arguments"),
    ),
    "config": Subcommand(
        help="show or check the configuration (not yet implemented)",
        run=_lazy("_config", "run"), configure=_lazy("_config", "add_arguments"),
    ),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m compat",
        description="syslet-compat: the 2007 syslet API (ABI v1) on io_uring.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, cmd in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if cmd.configure is not None:
            cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
