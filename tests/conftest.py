import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``tiny_export(name, cache=True)`` -> (the torch model, its ONNX export), made once per
    test session: name "llama" (``tiny_llama()``), "llama1" (one layer) or "gemma3"
    (``tiny_gemma3()``, sliding window 8)."""
    from amx_export.export import export_causal_lm, tiny_gemma3, tiny_llama

    makers = {"llama": tiny_llama, "llama1": lambda: tiny_llama(layers=1), "gemma3": tiny_gemma3}
    made = {}

    def get(name: str, cache: bool = True):
        if (name, cache) not in made:
            model = makers[name]()
            folder = tmp_path_factory.mktemp(name)
            path = folder / f"{name}{'' if cache else '.no-cache'}.onnx"
            made[name, cache] = model, export_causal_lm(model, path, cache=cache)
        return made[name, cache]

    return get


@pytest.fixture(scope="session")
def smollm2_model():
    from amx_export.models import load_smollm2

    return load_smollm2()[0]


@pytest.fixture(scope="session")
def smollm2_onnx(smollm2_model, tmp_path_factory):
    """SmolLM2-135M exported to ONNX (the KV-cache decoder) once per test session."""
    from amx_export.export import export_causal_lm

    return export_causal_lm(smollm2_model, tmp_path_factory.mktemp("smollm2") / "smollm2.onnx")
