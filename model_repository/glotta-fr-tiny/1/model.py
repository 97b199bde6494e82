"""Triton entry point: the shared Glotta engine model (see glotta/server/triton/python_model.py)."""

from glotta.server.triton.python_model import TritonPythonModel  # noqa: F401
