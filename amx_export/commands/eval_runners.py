"""The logits functions ``eval`` compares: the PyTorch reference and onnxruntime, per format.

ONNX models are built once and kept in the cache folder: the exported full-precision model,
and per format its rewrite (amx nodes). onnxruntime runs those with our custom-op library
when it is built (faster: 10.6 s vs 15.5 s per 2048-token SmolLM2 window here), otherwise
with the emulation (standard ONNX ops); ``modes`` records which, per format.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

from ..defaults import FULL_PRECISION
from ..evaluation import EvalSettings
from ..reference import logits, quantized_model


class Runners:
    """``runners(runtime, fmt)`` -> a function from int64 ids [1, T] to float32 logits."""

    def __init__(
        self,
        model,
        settings: EvalSettings,
        cache_dir: Path,
        onnx: Path | None = None,
        native: bool | None = None,
    ):
        self.model, self.settings, self.cache_dir = model, settings, cache_dir
        self.onnx, self.native = onnx, native
        self.modes: dict[str, str] = {}

    def __call__(self, runtime: str, fmt: str):
        if runtime == "pytorch":
            model = self.model
            if fmt != FULL_PRECISION:
                model = quantized_model(self.model, self.settings.quant_config(fmt))
            return lambda ids: logits(model, ids).numpy()
        from ..decoder_io import describe, full_pass_feeds
        from ..ort import session

        sess, self.modes[fmt] = session(self.onnx_model(fmt), native=self.native)
        io = describe(sess)  # a KV-cache graph runs each window through an empty past
        return lambda ids: sess.run([io.logits], full_pass_feeds(io, ids))[0]

    def full_precision_onnx(self) -> Path:
        if self.onnx is not None:
            return self.onnx
        path = self.cache_dir / "model.onnx"
        if not path.exists():
            from ..export import export_causal_lm
            from ..progress import Steps

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            print(f"exporting {self.settings.model} to {path} (--onnx skips this)")
            with Steps() as step:
                export_causal_lm(self.model, path, on_step=step)
        return path

    def onnx_model(self, fmt: str) -> Path:
        source = self.full_precision_onnx()
        if fmt == FULL_PRECISION:
            return source
        s = self.settings
        tag = fmt + (".w4a16" if s.weights_only else "") + (".attn" if s.attention else "")
        origin = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:8]  # one per source
        path = self.cache_dir / f"{source.name.removesuffix('.onnx')}-{origin}.{tag}.amx.onnx"
        if not path.exists() or path.stat().st_mtime < source.stat().st_mtime:
            from ..cli import main

            args = [str(source), "-o", str(path), "--format", fmt]
            args += ["--weights-only"] * s.weights_only + ["--attention"] * s.attention
            with contextlib.redirect_stdout(io.StringIO()) as out:
                if main(args) != 0:
                    raise RuntimeError(f"quantize failed for {fmt}: {out.getvalue()}")
        return path
