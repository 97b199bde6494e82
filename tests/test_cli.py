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


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from glotta.cli.main import main

    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_subcommand_helps_with_its_defaults_and_refuses_a_wrong_flag_with_its_own_usage(capsys):
    from glotta.cli.common import HelpFormatter

    leaves = list(_leaves(build_parser()))
    for path, parser in leaves:
        name = "glotta " + " ".join(path)
        code, out, _ = _run_cli([*path, "--help"], capsys)
        assert code == 0 and out.startswith(f"usage: {name} "), name
        for action in parser._actions:
            shown = HelpFormatter(name)._get_help_string(action)
            if action.option_strings and action.default not in (None, False, True, [], argparse.SUPPRESS):
                assert "default" in shown.lower(), f"{name} {action.option_strings[0]}: {shown!r}"
        code, out, err = _run_cli([*path, "--no-such-flag"], capsys)
        assert code == 2 and err.startswith(f"usage: {name} "), (name, err[:200])
        assert "--no-such-flag" in err or "required" in err, (name, err)
    code, out, _ = _run_cli(["serve", "--help"], capsys)
    assert "(default: 5000)" in " ".join(out.split())


def test_url_options_take_host_port_and_urls(capsys):
    from glotta.clients.client import gateway_url

    assert gateway_url("localhost:5000") == "http://localhost:5000"
    assert gateway_url("http://10.0.0.5:5000/") == "http://10.0.0.5:5000"
    assert gateway_url("https://glotta.example.org") == "https://glotta.example.org"
    assert gateway_url(":5001") == "http://localhost:5001"
    for bad in ("localhost:port", "ftp://x:1", "http://", "a b:1?x=1"):
        code, _, err = _run_cli(["generate", "Bonjour", "--url", bad], capsys)
        assert code == 2 and "usage: glotta generate" in err and "--url" in err, (bad, err)
    args = build_parser().parse_args(["loadtest", "--target", "127.0.0.1:5000", "--url", "localhost:5001"])
    assert args.url == ["http://127.0.0.1:5000", "http://localhost:5001"]


def _on_a_terminal(args: list[str], env: dict) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on a pseudo-terminal, as in a person's shell; returns what it drew."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a terminal has a size: 100 × 30
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(120), b"".join(chunks).decode(errors="replace")


def test_long_commands_draw_progress_on_a_terminal_and_stay_quiet_in_logs(tmp_path):
    import json
    import os

    from .conftest import REPO

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Le paquet {i} est installé dans le système. " * 20}) + "\n"
                            for i in range(400)))
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    commands = {
        "convert (input bytes)": ["data", "convert", "--input", str(docs), "--tokenizer-json",
                                  str(REPO / "glotta-fr-tiny" / "tokenizer.json"), "--workers", "1", "--output"],
        "Pre-processing sequences": ["tokenizer", "train", "--input", str(docs), "--vocab-size", "400", "--output"],
    }
    for drawn, args in commands.items():
        code, screen = _on_a_terminal([sys.executable, "-m", "glotta.cli", *args, str(tmp_path / "tty")], env)
        assert code == 0 and drawn in screen and "\r" in screen, (args[:2], screen[-600:])
        r = subprocess.run([sys.executable, "-m", "glotta.cli", *args, str(tmp_path / "log")], capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        assert drawn not in r.stdout + r.stderr and "\r" not in r.stdout + r.stderr, (args[:2], r.stderr[-600:])


def test_a_port_clash_is_one_line_naming_the_port_and_the_flag():
    """HTTP held by a plain socket; gRPC held by another gRPC server, which binds with SO_REUSEPORT as gRPC does by
    default (so a careless second server would share the port instead of failing)."""
    import socket
    from concurrent import futures

    import grpc

    from glotta.core.net import free_port

    from .conftest import FR, REPO

    env = {**__import__("os").environ, "GLOTTA_MODEL_REPOSITORY": str(REPO)}
    http_holder = socket.socket()
    http_holder.bind(("127.0.0.1", 0))
    http_holder.listen()
    other = grpc.server(futures.ThreadPoolExecutor(1))
    grpc_port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        for args, port, flag in (
            (["--port", str(http_holder.getsockname()[1]), "--grpc-port", str(free_port())],
             http_holder.getsockname()[1], "--port"),
            (["--port", str(free_port()), "--grpc-port", str(grpc_port)], grpc_port, "--grpc-port"),
        ):
            r = subprocess.run([sys.executable, "-m", "glotta.cli", "serve", "--model", FR, *args],
                               capture_output=True, text=True, timeout=120, env=env)
            lines = [line for line in r.stderr.splitlines() if line.strip()]
            assert r.returncode == 2 and len(lines) == 1, r.stderr
            assert f"127.0.0.1:{port} is already in use" in lines[0] and flag in lines[0], lines
    finally:
        other.stop(0)
        http_holder.close()
