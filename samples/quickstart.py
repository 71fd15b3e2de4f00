"""Quick start: a small Llama -> ONNX -> AMXFP4 ONNX, run in stock onnxruntime.

    .venv/bin/python samples/quickstart.py [--out-dir build/quickstart]

Builds a 2-layer random-weight Llama (SmolLM2's architecture), exports it with
torch.onnx, rewrites it with ``python -m amx_export`` (W4A4 AMXFP4, emulation form so that
stock onnxruntime runs it) and compares its logits with the full-precision model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort

from amx_export.cli import main as amx_export
from amx_export.decoder_io import describe, full_pass_feeds
from amx_export.export import export_causal_lm, tiny_llama


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("build/quickstart"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fp_path, amx_path = args.out_dir / "tiny_llama.onnx", args.out_dir / "tiny_llama.amx.onnx"

    print(f"== exporting a 2-layer random Llama to {fp_path}")
    export_causal_lm(tiny_llama(), fp_path)
    print(f"== python -m amx_export {fp_path} --emulate -o {amx_path}")
    if amx_export([str(fp_path), "--emulate", "-o", str(amx_path)]) != 0:
        return 1

    ids = np.random.default_rng(0).integers(0, 256, (2, 24)).astype(np.int64)
    # the export is a KV-cache decoder: one full pass goes through an empty past
    fp, amx = ort.InferenceSession(fp_path), ort.InferenceSession(amx_path)
    fp = fp.run(["logits"], full_pass_feeds(describe(fp), ids))[0]
    amx = amx.run(["logits"], full_pass_feeds(describe(amx), ids))[0]
    agree = np.mean(fp.argmax(-1) == amx.argmax(-1))
    cosine = np.sum(fp * amx) / np.linalg.norm(fp) / np.linalg.norm(amx)
    print(
        f"== AMXFP4 vs full precision in stock onnxruntime: logits cosine {cosine:.4f}, "
        f"top-1 agreement {agree:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
