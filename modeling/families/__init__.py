"""One module per family; importing this package registers them all (registry.py). Adding a family is one module
here, its import below, and its tests."""

from . import gpt2, llama, qwen2  # noqa: F401 - registration
