"""`glotta triton start|status|stop`: tritonserver alone on the model repository, for operators."""

from __future__ import annotations

import argparse

from .cmd_serve import ports
from .common import console, fail, handles_errors, subcommands


def _models(a: argparse.Namespace, repo) -> list[str]:
    """The models named by --model (names or folders), else every model of the repository that runs on CPU."""
    from glotta.modeling.model_folder import resolve_model
    from glotta.server.triton.launcher import cpu_models

    return [resolve_model(m).name for m in a.model] if a.model else cpu_models(repo)


@handles_errors(LookupError)
def _start(a: argparse.Namespace) -> int:
    from glotta.core.paths import model_repository
    from glotta.server.triton.launcher import TritonLaunchError, TritonServer, detached_state

    repo = model_repository()
    if detached_state():
        return fail("a tritonserver started by glotta is already running (`glotta triton stop`)")
    try:
        names = _models(a, repo)
        server = TritonServer(repo, names, *ports(a.base_port)).start(detach=True)
    except TritonLaunchError as e:
        return fail(e)
    console.print(f"tritonserver pid {server.proc.pid}: HTTP {server.http_url}, gRPC {server.grpc_url}, "
                  f"models {names}; log {server.log_path}")
    return 0


@handles_errors(LookupError)
def _run(a: argparse.Namespace) -> int:
    """In the foreground, for a container: the same launch as `glotta serve --engine triton` (mpirun for a
    tensor-parallel engine, stubs on this environment's Python); SIGTERM stops it; if tritonserver dies, this exits
    with its code, so the pod restarts."""
    import signal
    import threading

    from glotta.core.paths import model_repository
    from glotta.server.triton.launcher import TritonLaunchError, TritonServer

    repo = model_repository()
    stop, died = threading.Event(), []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        names = _models(a, repo)
        server = TritonServer(repo, names, *ports(a.base_port), host=a.host).start(timeout=a.start_timeout)
    except TritonLaunchError as e:
        return fail(e)
    server.watch(lambda code: (died.append(code), stop.set()))
    console.print(f"tritonserver pid {server.proc.pid}: HTTP {server.http_url}, gRPC {server.grpc_url}, "
                  f"models {names}; log {server.log_path}")
    stop.wait()
    server.stop()
    if died:
        return fail(f"tritonserver exited with {died[0]} (its log: {server.log_path})")
    return 0


def _stop(a: argparse.Namespace) -> int:
    from glotta.server.triton.launcher import stop_detached

    console.print("stopped" if stop_detached() else "no tritonserver started by glotta is running")
    return 0


def _status(a: argparse.Namespace) -> int:
    from glotta.server.triton.launcher import TritonServer, detached_state

    state = detached_state()
    if state is None:
        console.print("no tritonserver started by glotta is running")
        return 1
    server = TritonServer(state["repository"], state["models"], state["http_port"], state["grpc_port"],
                          state["metrics_port"], state["workdir"])
    ok = server.ready()
    console.print(f"pid {state['pid']}: {'ready' if ok else 'NOT ready'} — HTTP {server.http_url}, "
                  f"gRPC {server.grpc_url}, models {state['models']}")
    return 0 if ok else 1


def register(sub) -> None:
    t = sub.add_parser("triton", help="run tritonserver on the model repository, for operators")
    actions = subcommands(t)
    s = actions.add_parser("start", help="start tritonserver in the background (ports 8000/8001/8002)")
    s.add_argument("--model", action="append", help="model to load (default: every model that runs on CPU)")
    s.add_argument("--base-port", type=int, default=8000, help="HTTP port; gRPC and metrics take the next two")
    s.set_defaults(func=_start)
    r = actions.add_parser("run", help="run tritonserver in the foreground until stopped (containers)")
    r.add_argument("--model", action="append", help="model to load (default: every model that runs on CPU)")
    r.add_argument("--base-port", type=int, default=8000, help="HTTP port; gRPC and metrics take the next two")
    r.add_argument("--host", default="127.0.0.1", help="address the ports bind to (0.0.0.0 in a pod)")
    r.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for readiness")
    r.set_defaults(func=_run)
    actions.add_parser("status", help="is the started tritonserver ready").set_defaults(func=_status)
    actions.add_parser("stop", help="stop the started tritonserver").set_defaults(func=_stop)
