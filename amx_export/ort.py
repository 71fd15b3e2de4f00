"""onnxruntime sessions for AMXFP4 models, whatever form they are in.

A model with amx-domain nodes runs on our custom-op library when it is built; until then (or
without it) it is lowered to standard ONNX ops in memory (``graph_passes.emulate``), which
gives the same numbers, slower. So it does where the library's kernels would run on their
portable tier (no AVX2): there its scalar loop is slower than onnxruntime's own kernels
running the emulation (a 2048 x 2048 MLP, 2-core AMD EPYC, loaded, the tier capped by
AMX_CPU_ISA=portable: at M = 1 86 ms against 72 ms emulated, at M = 64 349 ms against
121 ms). Either fallback says so, once per call site, as an ``EmulationWarning`` (the CLI
prints it as one ``warning:`` line); ``native=False`` asks for the emulation and says nothing.
An emulated or unquantized model runs as it is.
"""

from __future__ import annotations

import ctypes
import functools
import warnings
from pathlib import Path

import onnx_ir as ir
import onnxruntime

from .errors import EmulationWarning, UserError
from .onnx_io import initializers, load_model

EMULATED = "emulation (standard ONNX ops)"
AS_IS = "as is (no amx nodes)"
NATIVE = "amx custom ops (libamx_ort.so)"
PORTABLE = "portable"  # the kernels' tier without AVX2 (plugins/cpu/amx_cpu.h)


@functools.cache
def kernel_tier(library: str) -> str:
    """The CPU tier the library's kernels dispatch to here (amx_cpu_isa: AMX_CPU_ISA caps it)."""
    isa = ctypes.CDLL(library).amx_cpu_isa
    isa.restype = ctypes.c_char_p
    return isa().decode()


def custom_op_library(native: bool | None, providers: list | None = None) -> str | None:
    """The custom-op library to run amx nodes on, or None for the emulation. ``native``: True
    requires the library (a UserError when it is not built), False always emulates, None
    takes the library unless it is missing or (on CPU providers alone) would run on its
    portable tier, and then warns (EmulationWarning) that the emulation runs instead."""
    from .plugins import build_hint, library_path

    if native is False:
        return None
    library = library_path("ort", required=bool(native))
    if native:
        return library
    if library is None:
        reason = f"libamx_ort.so is not built; {build_hint()}"
    elif _cpu_only(providers) and kernel_tier(library) == PORTABLE:
        reason = (
            "its CPU kernels would run on their portable tier here (no AVX2, or "
            "AMX_CPU_ISA=portable), slower; native=True forces them"
        )
    else:
        return library
    warnings.warn(
        f"amx nodes run on the emulation (standard ONNX ops, same numbers): {reason}",
        EmulationWarning,
        stacklevel=3,
    )
    return None


def _cpu_only(providers: list | None) -> bool:
    names = [p if isinstance(p, str) else p[0] for p in providers or []]
    return all(name == "CPUExecutionProvider" for name in names)


def _has_amx_nodes(model: ir.Model) -> bool:
    from amx_export.graph_passes.pipeline import count_amx_nodes

    return count_amx_nodes(model) > 0


def _external_data_folder(model: ir.Model) -> Path | None:
    tensors = [v.const_value for v in initializers(model)]
    return next((Path(t.base_dir) for t in tensors if isinstance(t, ir.ExternalTensor)), None)


def session_options(
    native: bool | None = None, threads: int | None = None
) -> onnxruntime.SessionOptions:
    """SessionOptions with our custom-op library registered (as ``custom_op_library``
    chooses it); ``threads``: onnxruntime's intra-op threads (None: its default)."""
    return _options(custom_op_library(native), threads)


def _options(library: str | None, threads: int | None) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if library is not None:
        options.register_custom_ops_library(library)
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

    ``native``: None uses the custom-op library when it is built and faster than the
    emulation here, and emulates otherwise, with an EmulationWarning; True requires the
    library; False always emulates.
    """
    model, _ = load_model(Path(path))
    amx = _has_amx_nodes(model)
    library = custom_op_library(native, providers) if amx else None
    if amx and library is None:
        return model_session(model, str(path), providers, native=False, threads=threads)
    # from the file itself: external data stays memory-mapped, no 2 GB protobuf limit
    how = NATIVE if amx else AS_IS
    options = _options(library, threads) if amx or threads is not None else None
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
    providers = providers or ["CPUExecutionProvider"]
    options, how = None, AS_IS
    if threads is not None:
        options = _options(None, threads)
    if _has_amx_nodes(model):
        library = custom_op_library(native, providers)
        if library is not None:
            options, how = _options(library, threads), NATIVE
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
