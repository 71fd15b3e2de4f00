"""A rewritten decoder on onnxruntime's CUDA execution provider (libamx_ort.so's CUDA
kernels) against the same model on the CPU ops: the GPU half of `generate --provider cuda`.
Runs where onnxruntime-gpu and a GPU are (scripts/gpu_check.sh brings the provider to the GPU
machine with scripts/ort_gpu_bundle.py); skips elsewhere with the reason."""

import contextlib
import io
import os

import numpy as np
import onnxruntime as ort
import pytest

from amx_export.cli import main
from amx_export.generation import open_decoder

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="this onnxruntime has no CUDA execution provider (onnxruntime-gpu and a GPU run this)",
)
PROMPTS = [[1, 17, 99, 4], [5, 5, 5, 5, 5, 5, 200], [250]]


@pytest.mark.parametrize("fmt", ["amxfp4", "mxfp4", "nvfp4"])
@pytest.mark.parametrize("extra", [[], ["--weights-only"]], ids=["w4a4", "w4a16"])
def test_cuda_decoder_equals_the_cpu_ops(tiny_export, tmp_path, fmt, extra):
    # the GPU machine has no transformers: scripts/gpu_wheels.sh exports the model here
    path = os.environ.get("AMX_TINY_LLAMA_ONNX")
    if not path:
        pytest.importorskip("transformers", reason="the tiny Llama is built with transformers")
        path = tiny_export("llama")[1]
    out = tmp_path / f"llama.{fmt}.amx.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([str(path), "--format", fmt, *extra, "-o", str(out)]) == 0
    try:
        gpu = open_decoder(out, provider="cuda")
    except Exception as error:  # a provider without a device: say so, do not pass silently
        pytest.skip(f"the CUDA execution provider did not start: {error}")
    cpu = open_decoder(out, provider="cpu")
    for prompt in PROMPTS:
        on_gpu = gpu.generate(prompt, max_new_tokens=16, keep_logits=True)
        on_cpu = cpu.generate(prompt, max_new_tokens=16, keep_logits=True)
        assert on_gpu.tokens == on_cpu.tokens
        for a, b in zip(on_gpu.step_logits, on_cpu.step_logits, strict=True):
            # float32 sums in another order; NVFP4 W4A4's tensor scale is per call (as on CPU)
            np.testing.assert_allclose(a, b, atol=1e-4 * float(np.abs(b).max()), rtol=0)
