"""The paper's central claim, measured: with outlier channels AMXFP4 beats MXFP4 on MSE."""

import time

import numpy as np
import torch

from amx_export import formats as F
from amx_export.commands.formats_table import measure
from amx_export.synthetic import outlier_activations, relative_mse


def test_amxfp4_mse_well_below_mxfp4_with_outliers():
    x = outlier_activations(256, 4096, seed=0)
    amx = relative_mse(x, F.fake_quant(x, "amxfp4"))
    mx = relative_mse(x, F.fake_quant(x, "mxfp4"))
    # measured 0.28 (see docs/NOTES.md); the margin allows for other seeds
    assert amx / mx < 0.4, (amx, mx)


def test_claim_holds_across_seeds_and_on_plain_gaussian():
    for seed in range(3):
        errors = measure(128, 2048, seed)
        assert errors["amxfp4"] < 0.5 * errors["mxfp4"], errors
        assert errors["amxfp4-e8m0"] < errors["mxfp4"], errors
    x = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    # no outliers: the second scale still helps a little (measured 0.73)
    amx, mx = (relative_mse(x, F.fake_quant(x, f)) for f in ("amxfp4", "mxfp4"))
    assert amx < 0.8 * mx


def test_large_matrix_is_vectorised():
    x = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    for data in (x, torch.from_numpy(x)):
        start = time.perf_counter()
        F.quantize(data, "amxfp4")
        # measured ~0.25 s numpy / ~0.2 s torch on the 2-core CI machine; a Python loop over
        # blocks takes minutes, so this only catches that regression, not small slow-downs
        assert time.perf_counter() - start < 5.0
