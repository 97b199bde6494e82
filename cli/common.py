"""What every command group shares: the consoles, and one way to turn an error into a message and an exit code."""

from __future__ import annotations

import argparse
import functools
from typing import Callable

from rich.console import Console
from rich.markup import escape

from glotta.core.errors import GlottaError

console = Console(soft_wrap=True)  # messages whole: no wrapping in the middle of a path
err = Console(stderr=True, soft_wrap=True)
USAGE_ERROR = 2


def fail(message: object) -> int:
    err.print(f"[red]error:[/] {escape(str(message))}", highlight=False)
    return USAGE_ERROR


def handles_errors(*kinds: type[BaseException]) -> Callable:
    """A command function that prints `GlottaError`, `OSError`, `ValueError` (and `kinds`) as `error: …`, exit 2."""
    caught = (GlottaError, OSError, ValueError, *kinds)

    def wrap(fn: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(fn)
        def run(*args) -> int:  # (namespace) or (self, namespace)
            try:
                return fn(*args)
            except caught as e:
                return fail(e)

        return run

    return wrap


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already says what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default in (None, False, True, argparse.SUPPRESS) or default == []
                or not action.option_strings):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def url_option(parser: argparse.ArgumentParser, *names: str, **kwargs) -> None:
    """`--url`: the gateway, as `host:port` or a URL (the same on every command that talks to one)."""
    from glotta.clients.client import DEFAULT_URL, gateway_url

    def parse(text: str) -> str:
        try:
            return gateway_url(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    kwargs.setdefault("default", DEFAULT_URL)
    kwargs.setdefault("help", "the gateway: host:port or http(s)://host:port")
    parser.add_argument(*(names or ("--url",)), type=parse, metavar="URL", **kwargs)


def subcommands(parser: argparse.ArgumentParser, dest: str = "action"):
    """Nested subcommands: `glotta GROUP ACTION --help` shows that action's options only."""
    return parser.add_subparsers(dest=dest, required=True, metavar="ACTION")


def refuse_old_spellings(p: argparse.ArgumentParser, flags: tuple[str, ...]) -> None:
    """Flags of an earlier Glotta (glotta.core.precision.OLD_SPELLINGS): accepted by the parser only to be refused by
    `check_old_spellings` with the one to use instead."""
    for flag in flags:
        p.add_argument(flag, nargs="?", const=True, default=None, help=argparse.SUPPRESS, dest=f"old_{flag[2:]}")


def check_old_spellings(a: argparse.Namespace) -> None:
    from glotta.core.precision import OLD_SPELLINGS

    for key, value in vars(a).items():
        if key.startswith("old_") and value is not None:
            flag = "--" + key[4:].replace("_", "-")
            raise ValueError(f"{flag} is gone: use {OLD_SPELLINGS[flag]}")
