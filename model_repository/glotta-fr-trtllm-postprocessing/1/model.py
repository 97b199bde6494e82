"""Triton entry point: Glotta's detokenizing post-processing (server/triton/backend_models/text_processing.py)."""

from glotta.server.triton.backend_models.text_processing import Postprocessing as TritonPythonModel  # noqa: F401
