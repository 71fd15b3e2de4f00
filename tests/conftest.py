import numpy as np
import pytest


def unpack_codes(codes: np.ndarray) -> np.ndarray:
    """Element codes from packed bytes (element 2j low nibble, 2j+1 high nibble)."""
    codes = np.asarray(codes)
    return np.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(*codes.shape[:-1], -1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def smollm2_onnx(tmp_path_factory):
    """SmolLM2-135M exported to ONNX once per test session (about a minute)."""
    from amx_export.export import export_causal_lm
    from amx_export.models import load_smollm2

    model, _ = load_smollm2()
    return export_causal_lm(model, tmp_path_factory.mktemp("smollm2") / "smollm2.onnx")
