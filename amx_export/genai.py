"""The onnxruntime-genai folder of a rewritten model: its genai_config.json and tokenizer.

onnxruntime-genai runs a folder: ``genai_config.json`` names the decoder's ONNX file and the
session options, the tokenizer files lie beside it. When the input model is the decoder of
such a folder, the main command makes the output's folder one too:

- OUT in another folder without a genai_config.json: the input's config is written there with
  ``model.decoder.filename`` = OUT's name and ``session_options.custom_ops_library`` =
  ``libamx_ort.so``, a copy of our library beside OUT (none for ``--emulate``: stock
  onnxruntime runs it; onnxruntime-genai 0.18 loads a custom-op library only from the model's
  folder or the current one, so an absolute path into the package is refused), and the
  tokenizer/processor files and any other model file the config names are copied beside it
  (never over a different file of the same name: that is an error before any work);
- a genai_config.json already in OUT's folder that runs OUT (a rerun) or names no existing
  file is updated the same way, everything else in it kept;
- a config that runs another model that exists (the input's own folder, when OUT is beside
  the input) is left as it is, and the summary says how to get a runnable folder:
  ``--genai-config update`` updates it anyway (whatever it ran), ``off`` never writes one.

Everything is checked before the rewrite (a config that is not JSON or has no
``model.decoder`` is one line naming it); files are written whole (a temporary file, then a
rename), the config last, after the model.
"""

from __future__ import annotations

import copy
import filecmp
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from amx_export.graph_passes import contract

from .errors import UserError

CONFIG = "genai_config.json"
MODES = ("auto", "update", "off")
# what onnxruntime-genai's tokenizers and processors read from the folder (the builder writes
# them with save_pretrained); matched as shell patterns
TOKENIZER_FILES = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt",
    "merges.txt", "*.tiktoken", "chat_template*", "*processor_config.json",
)  # fmt: skip


@dataclass
class Plan:
    """What the command will do with a genai config (``config`` None: nothing is written)."""

    path: Path  # the genai_config.json concerned
    action: str  # "written", "updated" or "left as is"
    detail: str  # the summary's words
    config: dict | None = None
    copies: list[tuple[Path, Path]] = field(default_factory=list)  # (from, to)

    def summary(self) -> dict:
        return {"path": str(self.path), "action": self.action, "detail": self.detail}


def read_config(path: Path) -> dict:
    """A genai_config.json as a dict, or one line naming the file and what is wrong."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"{path}: cannot read it: {error.strerror or error}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(
            f"{path}: not valid JSON ({error}); --genai-config off ignores it"
        ) from None
    section = config.get("model") if isinstance(config, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("decoder"), dict):
        raise UserError(
            f"{path}: not an onnxruntime-genai config (no model.decoder section); "
            "--genai-config off ignores it"
        )
    return config


def _ours(library: object) -> bool:
    from .plugins import LIBRARIES

    return isinstance(library, str) and Path(library).name == LIBRARIES["ort"]


def _library() -> tuple[Path, bool]:
    """(absolute path of libamx_ort.so, whether it is built)."""
    from .plugins import LIB_DIR, LIBRARIES, library_path

    built = library_path("ort", required=False)
    path = Path(built or Path(os.environ.get("AMX_EXPORT_LIB_DIR") or LIB_DIR) / LIBRARIES["ort"])
    return path.resolve(), built is not None


def _decoder_file(config: dict, folder: Path) -> Path | None:
    name = config["model"]["decoder"].get("filename")
    return folder / name if isinstance(name, str) and name else None


def _with_output(config: dict, path: Path, output: Path, emulated: bool) -> tuple[dict, str]:
    """``config`` running ``output``: its decoder file and custom-op library set."""
    new = copy.deepcopy(config)
    decoder = new["model"]["decoder"]
    decoder["filename"] = output.name
    options = decoder.setdefault("session_options", {})
    if not isinstance(options, dict):
        raise UserError(f"{path}: model.decoder.session_options is not an object")
    current = options.get("custom_ops_library")
    if emulated:
        if _ours(current):  # a config made for the custom-op form before
            del options["custom_ops_library"]
        return new, "standard ONNX ops, no custom-op library"
    if current is not None and not _ours(current):
        raise UserError(
            f"{path}: its decoder already loads the custom-op library {current}; "
            "onnxruntime-genai loads one, and the rewritten model needs libamx_ort.so"
        )
    library, built = _library()
    options["custom_ops_library"] = library.name  # the copy beside OUT (module docstring)
    if not built:
        return new, f"custom ops from {library.name}, not built yet: python -m amx_export build"
    return new, f"custom ops from {library.name} (a copy of {library})"


def _library_copy(output: Path, emulated: bool) -> list[tuple[Path, Path]]:
    """Our library beside ``output``, where the config names it (renamed into place, so an
    older copy that a running generator has loaded stays intact)."""
    library, built = _library()
    if emulated or not built:
        return []
    return [(library, output.parent / library.name)]


def _component_files(config: dict, folder: Path) -> list[Path]:
    """The model files a config names besides the decoder (vision, embedding, speech...),
    with their external data files."""
    from .onnx_io import _referenced_data_files

    files = []
    for key, section in config["model"].items():
        name = section.get("filename") if isinstance(section, dict) else None
        if key == "decoder" or not isinstance(name, str) or not (folder / name).is_file():
            continue
        files.append(folder / name)
        files += _referenced_data_files(folder / name)
    return files


def _copies(source: Path, target: Path, config: dict, fresh: bool) -> list[tuple[Path, Path]]:
    """Files to copy from the input's folder; ``fresh``: the config is new there, so a
    different file of the same name would run with it (an error), not the folder's own."""
    from .onnx_io import _same_file

    found = {p for pattern in TOKENIZER_FILES for p in source.glob(pattern) if p.is_file()}
    found |= set(_component_files(config, source))
    copies = []
    for path in sorted(found):
        destination = target / path.relative_to(source)
        if not destination.exists():
            copies.append((path, destination))
        elif fresh and not (
            _same_file(path, destination) or filecmp.cmp(path, destination, shallow=False)
        ):
            raise UserError(
                f"{destination}: exists and differs from {path}, and the {CONFIG} written "
                "beside it would use it: move it or choose another folder"
            )
    return copies


def plan(model: Path, output: Path, mode: str, emulated: bool, target: str) -> Plan | None:
    """What to do with the genai config of ``model``'s folder; None: it has none (or off).

    Raises UserError for a config that cannot be read or updated, before any work.
    """
    from .onnx_io import _same_file

    source_config = model.parent / CONFIG
    if mode == "off" or not source_config.is_file():
        return None
    config = read_config(source_config)
    decoder = _decoder_file(config, model.parent)
    if mode != "update" and (decoder is None or not _same_file(decoder, model)):
        runs = decoder.name if decoder is not None else "no single decoder file"
        return Plan(source_config, "left as is", f"its decoder is {runs}, not {model.name}")
    if target == contract.TENSORRT:
        return Plan(source_config, "not written", "--target tensorrt is for TensorRT")
    path = output.parent / CONFIG
    fresh = not (path.exists() or path.is_symlink())
    if not fresh:
        if not path.is_file():
            raise UserError(f"{path}: is not a regular file; cannot update it")
        if not _same_file(path, source_config):
            config = read_config(path)
        runs = _decoder_file(config, output.parent)
        others = runs is not None and runs.exists() and not _same_file(runs, output)
        if others and mode != "update":
            return Plan(
                path, "left as is",
                f"it runs {runs.name}; write the output to another folder for a config that "
                "runs it, or pass --genai-config update",
            )  # fmt: skip
    new, how = _with_output(config, path, output, emulated)
    copies = [] if _same_file(path, source_config) else _copies(
        model.parent, output.parent, config, fresh
    )  # fmt: skip
    copies += _library_copy(output, emulated)
    action = "written" if fresh else "updated"
    extra = "; copied " + ", ".join(to.name for _, to in copies) if copies else ""
    return Plan(path, action, f"runs {output.name} ({how}){extra}", new, copies)


def apply(plan: Plan | None) -> None:
    """Copy the files, then write the config (each whole or not at all)."""
    from .onnx_io import write_text

    if plan is None or plan.config is None:
        return
    for source, destination in plan.copies:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staged = None
        try:
            with tempfile.NamedTemporaryFile(
                dir=destination.parent, prefix=f".{destination.name}.", delete=False
            ) as handle:
                staged = Path(handle.name)
            shutil.copyfile(source, staged)
            os.replace(staged, destination)
        except OSError as error:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise UserError(f"{destination}: cannot write it: {error.strerror or error}") from None
    write_text(plan.path, json.dumps(plan.config, indent=4) + "\n")
