"""Triton entry point: Glotta's tokenizing pre-processing (see glotta/server/triton/text_processing.py)."""

from glotta.server.triton.text_processing import Preprocessing as TritonPythonModel  # noqa: F401
