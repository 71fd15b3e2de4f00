"""Synthetic data with the structure that motivates AMXFP4: LLM-like activations.

Real transformer activations are roughly Gaussian except for a few channels whose
magnitude is tens of times larger. A block of 32 that holds such an outlier forces a
coarse shared scale on its 31 neighbours; AMXFP4's second scale spares the neighbours of
the opposite sign.
"""

from __future__ import annotations

import numpy as np


def outlier_activations(
    rows: int = 256,
    cols: int = 4096,
    outlier_channels: int = 16,
    outlier_gain: float = 50.0,
    seed: int = 0,
) -> np.ndarray:
    """float32 [rows, cols]: N(0, 1), ``outlier_channels`` columns scaled by ``outlier_gain``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    channels = rng.choice(cols, size=min(outlier_channels, cols), replace=False)
    x[:, channels] *= np.float32(outlier_gain)
    return x


def relative_mse(x: np.ndarray, y: np.ndarray) -> float:
    """mean((y - x)^2) / mean(x^2), in float64."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    return float(np.mean((y64 - x64) ** 2) / np.mean(x64**2))
