"""The command line: nested subcommands, one module per group, every option documented, each target's help its own."""

from __future__ import annotations

import argparse
import subprocess
import sys

from glotta.cli.main import build_parser


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaves(child, (*path, name))


def test_every_option_of_every_command_has_help():
    leaves = list(_leaves(build_parser()))
    assert len(leaves) > 25  # serve, triton ×3, prompt ×4, train ×3, data ×10, export ×8, ...
    missing = [f"glotta {' '.join(path)} {a.option_strings or a.dest}" for path, p in leaves for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, "\n".join(missing)


def test_export_target_help_lists_only_its_options():
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "fastertransformer", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--infer-gpus" in r.stdout and "--tokenizer" in r.stdout
    for other in ("--quant", "--calib-dataset", "--fp16-storage", "--params", "--max-seq"):
        assert other not in r.stdout, other
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "export", "trtllm", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert "--smoothquant" in r.stdout and "--infer-gpus" not in r.stdout


def test_missing_required_option_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", "convert", "--input", "x.jsonl"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--output-prefix" in r.stderr and "Traceback" not in r.stderr


def test_every_group_and_action_dispatches_to_a_function():
    for path, p in _leaves(build_parser()):
        assert callable(p.get_default("func")), path
