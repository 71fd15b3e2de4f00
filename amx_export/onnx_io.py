"""Loading and saving models for the CLI: clear errors, and never a half-written output.

Models are read with onnx_ir, which memory-maps external data instead of loading it, and
written to a temporary folder beside the destination, checked with onnx.checker, then moved
into place; a failure leaves nothing behind. External data is written when the input had it
or when the initializers exceed what one protobuf file can hold (2 GB).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from .errors import UserError

PROTOBUF_LIMIT = 2**31  # bytes in one ModelProto
EXTERNAL_THRESHOLD = int(PROTOBUF_LIMIT * 0.9)


@dataclass
class Source:
    path: Path
    external_data: bool
    initializer_bytes: int


@dataclass
class OutputPaths:
    model: Path
    report: Path | None = None

    @property
    def data(self) -> Path:
        return self.model.with_name(self.model.name + ".data")

    @classmethod
    def check(cls, output: Path, source: Path, report: Path | None = None) -> OutputPaths:
        """Fail now, before any work, if an output cannot be written."""
        for path in (output, report):
            if path is None:
                continue
            if path.is_dir():
                raise UserError(f"{path}: is a directory, expected a file path")
            parent = path.parent if str(path.parent) else Path(".")
            if not parent.is_dir():
                raise UserError(f"{path}: cannot write, folder {parent} does not exist")
            if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                raise UserError(f"{path}: cannot write there (permission denied)")
        return cls(output, report)


def load_model(path: Path, min_opset: int = 17) -> tuple[ir.Model, Source]:
    """Load an ONNX model with onnx_ir, turning every way it can fail into one clear line."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected an .onnx file")
    try:
        model = ir.load(path)
    except Exception as error:  # protobuf's DecodeError and friends
        raise UserError(f"{path}: not an ONNX model ({type(error).__name__}: {error})") from None
    if model.ir_version is None or model.ir_version < 3 or len(model.graph) == 0:
        raise UserError(f"{path}: not an ONNX model (no graph nodes / no IR version)")
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if opset is None or opset < min_opset:
        raise UserError(
            f"{path}: ONNX opset {opset} is too old, amx-export needs opset >= {min_opset} "
            f"(re-export with opset_version={min_opset} or newer)"
        )
    tensors = [v.const_value for v in model.graph.initializers.values() if v.const_value]
    external = any(isinstance(t, ir.ExternalTensor) for t in tensors)
    size = sum(t.nbytes for t in tensors)
    return model, Source(path, external, size)


def save_model(model: ir.Model, paths: OutputPaths, source: Source | None = None) -> None:
    """Write, check, then move into place; external data when the input had it or when large."""
    tensors = [v.const_value for v in model.graph.initializers.values() if v.const_value]
    size = sum(t.nbytes for t in tensors)
    external = (source is not None and source.external_data) or size > EXTERNAL_THRESHOLD
    parent = paths.model.parent if str(paths.model.parent) else Path(".")
    staging = Path(tempfile.mkdtemp(prefix=".amx-export-", dir=parent))
    try:
        staged = staging / paths.model.name
        ir.save(model, staged, external_data=paths.data.name if external else None)
        onnx.checker.check_model(str(staged))
        os.replace(staged, paths.model)
        if external:
            os.replace(staging / paths.data.name, paths.data)
    except onnx.checker.ValidationError as error:
        raise RuntimeError(
            f"internal error: the rewritten model fails onnx.checker: {error}"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
