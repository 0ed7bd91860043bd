"""The one `hedgerow` command. Each role registers its own subcommands from its module.

Modules here are thin: they parse arguments, call into the packages, print results.
A role's module exposes ``register(subparsers)``; the parsed namespace carries ``func``,
a callable returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from hedgerow import __version__

#: (module under hedgerow.cli, subcommand) pairs; each module registers its subcommand.
ROLES = ("broker", "cloud", "core", "thing", "demo")


class CLIError(Exception):
    """A user error: printed as one line (what is wrong, what to do), exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser that reports unknown arguments itself.

    argparse hands arguments a subcommand does not know up to the top-level parser, which
    then prints *its* usage; every subcommand's parser is of this class (``add_subparsers``
    uses the parent's class), so ``hedgerow cloud thing revoke --bogus x`` prints the usage
    of ``thing revoke``, the command that was meant.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _role_of(argv: Sequence[str]) -> str | None:
    """The role a command line asks for (its first word), if it names one."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in ROLES else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` naming a role, only that role's module is imported.

    Importing every role costs each long-running process memory it never uses (the core
    does not need the cloud's HTTP client; the broker needs neither), so a command line
    that names its role loads just that one. ``hedgerow --help`` loads them all.
    """
    parser = Parser(
        prog="hedgerow",
        description="Self-hosted IoT edge platform: cloud, core (gateway) and things (devices).",
    )
    parser.add_argument("--version", action="version", version=f"hedgerow {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _role_of(argv) if argv is not None else None
    for role in (wanted,) if wanted else ROLES:
        try:
            module = importlib.import_module(f"hedgerow.cli.{role}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hedgerow.cli.{role}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"hedgerow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
