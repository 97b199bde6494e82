"""`glotta`: the root command. Each command group lives in its own module and registers its subcommands here."""

from __future__ import annotations

import argparse
import sys

from . import (
    cmd_data,
    cmd_export,
    cmd_generate,
    cmd_loadtest,
    cmd_prompt,
    cmd_serve,
    cmd_tokenizer,
    cmd_train,
    cmd_triton,
)
from .common import HelpFormatter

GROUPS = (cmd_serve, cmd_triton, cmd_generate, cmd_prompt, cmd_loadtest, cmd_train, cmd_tokenizer, cmd_data, cmd_export)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _every_parser(parser: argparse.ArgumentParser):
    yield parser
    sub = _subparsers(parser)
    for child in (sub.choices.values() if sub else ()):
        yield from _every_parser(child)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glotta", description="Localized GPTs from raw text to production serving.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    for parser in _every_parser(p):
        parser.formatter_class = HelpFormatter
    return p


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The subcommand's own parser: its usage is the one that helps after a wrong flag."""
    while (sub := _subparsers(parser)) is not None and getattr(args, sub.dest, None) in sub.choices:
        parser = sub.choices[getattr(args, sub.dest)]
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    # argparse lets the root report a subcommand's unknown flags, with the root's usage: report them where they belong
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
