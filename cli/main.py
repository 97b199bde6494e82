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

GROUPS = (cmd_serve, cmd_triton, cmd_generate, cmd_prompt, cmd_loadtest, cmd_train, cmd_tokenizer, cmd_data, cmd_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glotta", description="Localized GPTs from raw text to production serving.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
