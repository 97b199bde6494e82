"""Glotta's bottom layer: what every other package may import, and which imports none of them.

It holds the things two or more components share as data: the served model folder (glotta.json, tokenizer files,
special tokens), Megatron's file formats (checkpoints and their tracker, `.bin/.idx`, the GPT shape), paths and the
cache, atomic files and the one error type.
"""
