import numpy as np
import pytest


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
