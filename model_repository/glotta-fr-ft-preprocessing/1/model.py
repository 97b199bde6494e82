"""Triton entry point: Glotta's tokenizing pre-processing (server/triton/backend_models/text_processing.py)."""

from glotta.server.triton.backend_models.text_processing import Preprocessing as TritonPythonModel  # noqa: F401
