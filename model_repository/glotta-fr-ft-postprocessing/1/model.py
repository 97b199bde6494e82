"""Triton entry point: Glotta's detokenizing post-processing (see glotta/server/triton/text_processing.py)."""

from glotta.server.triton.text_processing import Postprocessing as TritonPythonModel  # noqa: F401
