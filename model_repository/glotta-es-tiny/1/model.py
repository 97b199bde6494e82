"""Triton entry point: the shared Glotta engine model (glotta/server/triton/backend_models/engine_model.py)."""

from glotta.server.triton.backend_models.engine_model import TritonPythonModel  # noqa: F401
