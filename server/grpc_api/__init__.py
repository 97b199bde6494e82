"""gRPC API of the gateway. Python stubs are generated from `glotta.proto` by grpcio-tools at first use (cached by the
proto's hash), never committed: the .proto is the only source."""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from glotta.core.paths import cache_dir

PROTO = Path(__file__).with_name("glotta.proto")


def load_stubs() -> tuple[ModuleType, ModuleType]:
    """`(glotta_pb2, glotta_pb2_grpc)`, compiling the proto if this version was never compiled."""
    digest = hashlib.sha256(PROTO.read_bytes()).hexdigest()[:12]
    out = cache_dir() / "grpc" / digest
    if not (out / "glotta_pb2_grpc.py").exists():
        from grpc_tools import protoc

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent))
        args = ["protoc", f"-I{PROTO.parent}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", str(PROTO)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        try:
            os.replace(tmp, out)  # atomic: a concurrent first use sees all of it or none
        except OSError:  # another process compiled the same proto first: use its stubs
            shutil.rmtree(tmp, ignore_errors=True)
            if not (out / "glotta_pb2_grpc.py").exists():
                raise
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("glotta_pb2"), importlib.import_module("glotta_pb2_grpc")
