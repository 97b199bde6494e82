"""Progress of long commands: drawn on a terminal, silent where stderr is a log file or a CI pipe (one rule, here)."""

from __future__ import annotations

import os
import sys

from rich.progress import Progress


def interactive() -> bool:
    """Whether a person watches stderr: a terminal that can redraw a line."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def bar(enabled: bool | None = None, **tqdm_args):
    """A tqdm bar on stderr (counts, bytes, rates); `enabled` None means: on a terminal only."""
    from tqdm import tqdm

    return tqdm(disable=not (interactive() if enabled is None else enabled), dynamic_ncols=True, **tqdm_args)


def rich_progress(*columns, **kwargs) -> Progress:
    """A rich Progress (several tasks, spinners) on stderr, drawn on a terminal only."""
    from rich.console import Console

    return Progress(*columns, console=Console(stderr=True), disable=not interactive(), **kwargs)
