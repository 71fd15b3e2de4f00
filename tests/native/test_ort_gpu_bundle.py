"""scripts/ort_gpu_bundle.py's fatbin trimming, on our own CUDA library (the GPU machine
runs the trimmed onnxruntime-gpu provider; here the same code is held to what it must keep)."""

import ctypes
import importlib.util
from pathlib import Path

import pytest

from amx_export import plugins

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("ort_gpu_bundle", ROOT / "scripts/ort_gpu_bundle.py")
bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bundle)


@pytest.fixture
def kernels() -> bytes:
    path = plugins.library_path("kernels", required=False)
    if path is None:
        pytest.skip("libamx_kernels.so is not built (python -m amx_export build)")
    return Path(path).read_bytes()


def test_keeps_one_architecture_and_every_byte_offset(kernels, tmp_path):
    before = list(bundle.fatbin_images(kernels))
    sms = {sm for _, sm, _, _ in before}
    assert {80, 90} <= sms  # the build targets sm_80 to sm_90
    data = bytearray(kernels)
    kept, zeroed = bundle.keep_only_sm(data, 90)
    assert len(data) == len(kernels)
    assert kept == sum(sm == 90 for _, sm, _, _ in before)
    assert zeroed == sum(size for _, sm, _, size in before if sm != 90)
    after = list(bundle.fatbin_images(data))
    assert [(k, sm, at, size) for k, sm, at, size in after] == before  # headers untouched
    for _, sm, at, size in after:
        payload = data[at : at + size]
        if sm == 90:
            assert payload == kernels[at : at + size]
        else:
            assert not any(payload)
    # outside the zeroed payloads nothing changed, and the library still loads and runs
    changed = [i for i in range(0, len(data), 4096) if data[i : i + 4096] != kernels[i : i + 4096]]
    section, length = bundle.fatbin_section(kernels)
    assert all(section - 4096 < i < section + length for i in changed)
    trimmed = tmp_path / "libamx_kernels.so"
    trimmed.write_bytes(data)
    library = ctypes.CDLL(str(trimmed))
    library.amx_cpu_isa.restype = ctypes.c_char_p
    assert library.amx_cpu_isa()


def test_refuses_an_architecture_it_would_not_keep(kernels):
    with pytest.raises(SystemExit, match="no kernel image for sm_75"):
        bundle.keep_only_sm(bytearray(kernels), 75)
