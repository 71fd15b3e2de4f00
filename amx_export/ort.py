"""onnxruntime sessions for AMXFP4 models, whatever form they are in.

A model with amx-domain nodes runs on our custom-op library when it is built; until then (or
without it) it is lowered to standard ONNX ops in memory (``graph_passes.emulate``), which
gives the same numbers, slower. An emulated or unquantized model runs as it is.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir
import onnxruntime

from .errors import UserError
from .onnx_io import load_model

EMULATED = "emulation (standard ONNX ops)"
AS_IS = "as is (no amx nodes)"


def _has_amx_nodes(model: ir.Model) -> bool:
    from graph_passes import contract

    return any(node.domain == contract.DOMAIN for node in model.graph.all_nodes())


def session(
    path: Path, providers: list[str] | None = None
) -> tuple[onnxruntime.InferenceSession, str]:
    """(an InferenceSession for ``path``, how it runs the amx nodes)."""
    providers = providers or ["CPUExecutionProvider"]
    model, _ = load_model(Path(path))
    try:
        if not _has_amx_nodes(model):
            return onnxruntime.InferenceSession(str(path), providers=providers), AS_IS
        from graph_passes.cleanup import CleanupPass
        from graph_passes.emulate import EmulatePass

        EmulatePass()(model)
        CleanupPass()(model)
        proto = ir.to_proto(model)
        return onnxruntime.InferenceSession(
            proto.SerializeToString(), providers=providers
        ), EMULATED
    except onnxruntime.capi.onnxruntime_pybind11_state.Fail as error:
        raise UserError(f"{path}: onnxruntime cannot load it: {error}") from None
