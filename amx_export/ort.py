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
from .onnx_io import initializers, load_model

EMULATED = "emulation (standard ONNX ops)"
AS_IS = "as is (no amx nodes)"
NATIVE = "amx custom ops (libamx_ort.so)"


def _has_amx_nodes(model: ir.Model) -> bool:
    from amx_export.graph_passes.pipeline import count_amx_nodes

    return count_amx_nodes(model) > 0


def _external_data_folder(model: ir.Model) -> Path | None:
    tensors = [v.const_value for v in initializers(model)]
    return next((Path(t.base_dir) for t in tensors if isinstance(t, ir.ExternalTensor)), None)


def session_options(
    native: bool | None = None, threads: int | None = None
) -> onnxruntime.SessionOptions:
    """SessionOptions with our custom-op library registered (when built, or required);
    ``threads``: onnxruntime's intra-op threads (None: its default)."""
    from .plugins import library_path

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    library = library_path("ort", required=bool(native))
    if library is not None and native is not False:
        options.register_custom_ops_library(str(library))
        # Our kernels run on onnxruntime's intra-op pool, so the session's thread settings
        # (intra_op_num_threads, session.intra_op.allow_spinning) govern them as they govern
        # onnxruntime's own kernels; we leave onnxruntime's defaults. Measured (SmolLM2 decode,
        # 2 cores, quiet): spinning on 106 tokens/s, off 95; under load spinning costs more
        # (README, "Generating text"), for onnxruntime's kernels and ours alike.
    return options


def session(
    path: Path,
    providers: list[str] | None = None,
    native: bool | None = None,
    threads: int | None = None,
) -> tuple[onnxruntime.InferenceSession, str]:
    """(an InferenceSession for ``path``, how it runs the amx nodes).

    ``native``: None uses the custom-op library when it is built and emulates otherwise;
    True requires the library; False always emulates.
    """
    from .plugins import library_path

    model, _ = load_model(Path(path))
    amx = _has_amx_nodes(model)
    if amx and (native is False or library_path("ort", required=bool(native)) is None):
        return model_session(model, str(path), providers, native=False, threads=threads)
    # from the file itself: external data stays memory-mapped, no 2 GB protobuf limit
    how = NATIVE if amx else AS_IS
    options = None
    if amx or threads is not None:
        options = session_options(native=amx, threads=threads)
    try:
        sess = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except onnxruntime.capi.onnxruntime_pybind11_state.Fail as error:
        raise UserError(f"{path}: onnxruntime cannot load it: {error}") from None
    return sess, how


def model_session(
    model: ir.Model,
    where: str,
    providers: list[str] | None = None,
    native: bool | None = None,
    threads: int | None = None,
) -> tuple[onnxruntime.InferenceSession, str]:
    """As ``session``, for a model in memory (which an emulation changes); ``where`` names it
    in errors."""
    from .plugins import library_path

    providers = providers or ["CPUExecutionProvider"]
    options, how = None, AS_IS
    if threads is not None:
        options = session_options(native=False, threads=threads)
    if _has_amx_nodes(model):
        if native is not False and library_path("ort", required=bool(native)) is not None:
            options, how = session_options(native=True, threads=threads), NATIVE
        else:
            from amx_export.graph_passes.pipeline import emulate

            try:
                emulate(model)
            except ValueError as error:  # an opset the converter cannot take
                raise UserError(f"{where}: {error}") from None
            how = EMULATED
    folder = _external_data_folder(model)
    if folder is not None:  # the bytes below name external data relative to this folder
        options = options or onnxruntime.SessionOptions()
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(folder)
        )
    try:
        data = ir.to_proto(model).SerializeToString()
        return onnxruntime.InferenceSession(data, options, providers=providers), how
    except onnxruntime.capi.onnxruntime_pybind11_state.Fail as error:
        raise UserError(f"{where}: onnxruntime cannot load it: {error}") from None
