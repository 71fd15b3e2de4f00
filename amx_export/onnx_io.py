"""Loading and saving models for the CLI: clear errors, and nothing the user owns destroyed.

Models are read with onnx_ir, which memory-maps external data instead of loading it; every
external data file is checked up front (present, long enough), so a missing or truncated one
is named before any work. Outputs are checked before any work too: each must be a regular
file or a new path, none may be the input or one of its data files (compared as resolved
files, so links and ``./`` do not hide them), and an existing ``OUT.data`` is only replaced
when it is the data file of the ``OUT`` being replaced.

Writing goes to a temporary folder beside the destination, is checked with onnx.checker
(when the input passed it), then moved into place with SIGINT/SIGTERM held off for the two
renames; any failure (a full disk, a signal) removes the temporary folder and leaves the old
files as they were. External data is written when the input had it or when the initializers
exceed what one protobuf file can hold (2 GB).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir

from .errors import UserError
from .staging import signals_held, staging_folder

PROTOBUF_LIMIT = 2**31  # bytes in one ModelProto
EXTERNAL_THRESHOLD = int(PROTOBUF_LIMIT * 0.9)
MIN_OPSET = 13  # the oldest default-domain opset the passes take (upgraded where needed)


@dataclass
class Source:
    path: Path
    external_data: bool
    initializer_bytes: int
    data_files: list[Path] = field(default_factory=list)
    checker_error: str | None = None  # what onnx.checker says of the input (None: it passes)


def initializers(model: ir.Model) -> list[ir.Value]:
    """Every initializer of the model, subgraphs' included."""
    graphs = (model.graph, *model.graph.subgraphs())
    return [value for graph in graphs for value in graph.initializers.values()]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"),
    ):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where they would be
        return a.resolve() == b.resolve()


def _referenced_data_files(model_path: Path) -> list[Path]:
    """The external data files an existing ONNX file refers to ([] if it is not one)."""
    try:
        model = ir.load(model_path)  # external data is only memory-mapped when read
    except Exception:  # not an ONNX file: it refers to nothing
        return []
    tensors = [v.const_value for v in initializers(model)]
    return sorted({Path(t.path) for t in tensors if isinstance(t, ir.ExternalTensor)})


@dataclass
class OutputPaths:
    model: Path
    report: Path | None = None
    replaces_data: bool = False  # OUT.data exists and belongs to the OUT being replaced

    @property
    def data(self) -> Path:
        return self.model.with_name(self.model.name + ".data")

    @classmethod
    def check(
        cls, output: Path, report: Path | None = None, inputs: list[Path] | tuple = ()
    ) -> OutputPaths:
        """Fail now, before any work, if an output cannot or must not be written.

        ``inputs``: files that must survive (the input model and its data files).
        """
        paths = cls(Path(output), None if report is None else Path(report))
        targets = {"output": paths.model, "output's data file": paths.data}
        if paths.report is not None:
            targets["--report"] = paths.report
        for label, path in targets.items():  # the input's own files first: the worst case
            for kept in inputs:
                if _same_file(path, Path(kept)):
                    what = "the input model" if kept == inputs[0] else "a data file of the input"
                    raise UserError(
                        f"{path}: the {label} would overwrite {what} ({kept}); choose another path"
                    )
        for label, path in targets.items():
            if path.exists() or path.is_symlink():
                try:
                    mode = path.stat().st_mode
                except OSError as error:
                    raise UserError(f"{path}: cannot use it as the {label}: {error}") from None
                if not stat.S_ISREG(mode):
                    raise UserError(
                        f"{path}: is {_kind(mode)}; the {label} must be a regular file or a "
                        "new path"
                    )
            parent = path.parent if str(path.parent) else Path(".")
            if not parent.is_dir():
                raise UserError(f"{path}: cannot write, folder {parent} does not exist")
            if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                raise UserError(f"{path}: cannot write there (permission denied)")
        labels = list(targets.items())
        for i, (label, path) in enumerate(labels):
            for other_label, other in labels[i + 1 :]:
                if _same_file(path, other):
                    raise UserError(f"{path}: is both the {label} and the {other_label}")
        if paths.data.exists():
            owned = paths.model.exists() and any(
                _same_file(paths.data, f) for f in _referenced_data_files(paths.model)
            )
            if not owned:
                raise UserError(
                    f"{paths.data}: exists and is not the data file of {paths.model}; it would "
                    "be overwritten: move it or choose another output"
                )
            paths.replaces_data = True
        return paths


def _check_external_data(path: Path, model: ir.Model) -> list[Path]:
    """Every external data file the model names: present and long enough for its tensors."""
    files: dict[Path, int] = {}
    for value in initializers(model):
        tensor = value.const_value
        if not isinstance(tensor, ir.ExternalTensor):
            continue
        file = Path(tensor.path)
        if file not in files:
            if not file.is_file():
                raise UserError(
                    f"{path}: its external data file {file} is missing (tensor {value.name!r})"
                )
            files[file] = file.stat().st_size
        end = (tensor.offset or 0) + (tensor.length or tensor.nbytes)
        if end > files[file]:
            raise UserError(
                f"{path}: its external data file {file} is truncated: tensor {value.name!r} "
                f"needs bytes up to {end}, the file has {files[file]}"
            )
    return sorted(files)


def checker_error(path: Path) -> str | None:
    """onnx.checker's verdict on a model file: None if it passes, else its first line."""
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        lines = str(error).strip().splitlines()
        return lines[0] if lines else type(error).__name__
    return None


def load_model(
    path: Path, min_opset: int = MIN_OPSET, check: bool = False
) -> tuple[ir.Model, Source]:
    """Load an ONNX model with onnx_ir, turning every way it can fail into one clear line.

    ``check``: also run onnx.checker on the input (Source.checker_error says what it found).
    """
    path = Path(path)
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
    data_files = _check_external_data(path, model)
    tensors = [v.const_value for v in initializers(model) if v.const_value is not None]
    external = any(isinstance(t, ir.ExternalTensor) for t in tensors)
    size = sum(t.nbytes for t in tensors)
    return model, Source(path, external, size, data_files)


def save_model(model: ir.Model, paths: OutputPaths, source: Source | None = None) -> None:
    """Write, check, then move into place; external data when the input had it or when large.

    onnx.checker holds the output to what the input passed: an input that fails it (a
    com.microsoft op in the default domain, say) cannot give an output that passes.
    """
    size = sum(v.const_value.nbytes for v in initializers(model) if v.const_value is not None)
    external = (source is not None and source.external_data) or size > EXTERNAL_THRESHOLD
    parent = paths.model.parent if str(paths.model.parent) else Path(".")
    with contextlib.ExitStack() as stack:
        try:
            staging = stack.enter_context(staging_folder(parent, ".amx-export-"))
        except OSError as error:
            raise UserError(f"{paths.model}: cannot write there: {error.strerror}") from None
        try:
            staged = staging / paths.model.name
            ir.save(model, staged, external_data=paths.data.name if external else None)
            if source is None or source.checker_error is None:
                error = checker_error(staged)
                if error is not None:
                    raise RuntimeError(
                        f"internal error: the rewritten model fails onnx.checker: {error}"
                    )
            with signals_held():
                os.replace(staged, paths.model)
                if external:
                    os.replace(staging / paths.data.name, paths.data)
                elif paths.replaces_data:
                    paths.data.unlink()  # the old output's data: the new output holds its own
        except OSError as error:
            reason = error.strerror or str(error)
            raise UserError(f"{paths.model}: cannot write the output: {reason}") from None


def write_text(path: Path, text: str) -> None:
    """Write a small text file whole or not at all (a temporary file, then a rename)."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=parent, prefix=f".{path.name}.", delete=False
        ) as staged:
            staged.write(text)
        os.replace(staged.name, path)
    except OSError as error:
        with contextlib.suppress(OSError, NameError):
            os.unlink(staged.name)
        raise UserError(f"{path}: cannot write it: {error.strerror or error}") from None
