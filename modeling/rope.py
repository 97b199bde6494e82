"""Rotary position tables for the decoder graph: cos/sin caches with the model's theta and the `rope_scaling` its
config declares (default, linear, llama3), as Hugging Face's `ROPE_INIT_FUNCTIONS` compute them."""

from __future__ import annotations

import math

import numpy as np

from glotta.core.errors import invalid

from .spec import Architecture


def rope_tables(arch: Architecture) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin caches [n_positions, d_head / 2]."""
    d = arch.d_head
    inv_freq = 1.0 / (arch.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    positions = np.arange(arch.n_positions, dtype=np.float64)
    scaling = dict(arch.rope_scaling or {})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        positions = positions / float(scaling["factor"])
    elif kind == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, scaling)
    elif kind != "default":
        raise invalid(f"rope_scaling type {kind!r} is not supported (supported: default, linear, llama3)",
                      "rope_scaling")
    angles = np.outer(positions, inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _llama3_inv_freq(inv_freq: np.ndarray, s: dict) -> np.ndarray:
    factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    smooth = (old / wavelen - low) / (high - low)
    mid = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
    between = (wavelen <= old / low) & (wavelen >= old / high)
    return np.where(between, mid, out)
