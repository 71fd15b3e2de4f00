#!/usr/bin/env bash
# Makes small ONNX fixture models with the exporters users run (Optimum, onnxruntime-genai's
# model builder, torch.onnx's TorchScript exporter), from tiny random-weight transformers
# models built from configs (fixed seeds, nothing fetched from a hub).
#
#   ./scripts/exporter_models.sh                 make what is missing, print the table
#   ./scripts/exporter_models.sh --force         remake every fixture
#   ./scripts/exporter_models.sh NAME...         only these fixtures (and the sources they need)
#   EXPORTER_MODELS=DIR ./scripts/exporter_models.sh   another output folder
#
# Output: build/exporter-models/<name>/ (git-ignored), each with the model, the files its
# exporter writes beside it (config, tokenizer, genai_config.json) and fixture.json (opset,
# size, node and linear counts, onnx.checker and onnxruntime results); build/exporter-models/
# manifest.json lists them all. A fixture is remade only when this script, the helper
# (tests/exporters/make_models.py) or the pinned requirements change.
#
# Two virtualenvs, because the exporters disagree about transformers: .venv-exporters
# (optimum-onnx 0.1.0 needs transformers < 4.58; also the TorchScript export), reinstalled
# only when its requirements file or TORCH_SPEC changes, and the project's own .venv
# (onnxruntime-genai 0.18's builder imports transformers 5 classes; scripts/setup.sh makes it).
# TORCH_SPEC overrides the torch requirement (default: the 2.13.0 CPU wheel these machines
# carry on disk). Exits non-zero as soon as an install, an exporter or a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
OUT=${EXPORTER_MODELS:-build/exporter-models}
HELPER=tests/exporters/make_models.py
start=$(date +%s)

pip() {  # pip DIR ARGS...: quiet, without this machine's notes on missing local index folders
  local dir=$1
  shift
  "$dir/bin/python" -m pip "$@" 2>&1 | { grep -v '^WARNING: Location .* is ignored' || true; }
}

venv() {  # venv DIR REQUIREMENTS: create DIR and install torch + REQUIREMENTS unless stamped
  local dir=$1 req=$2 stamp wanted
  stamp=$dir/.installed
  wanted="$( (echo "$TORCH_SPEC"; cat "$req") | sha1sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && [ -x "$dir/bin/python" ]; then
    return
  fi
  echo "== installing $dir ($req)"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  pip "$dir" install -q --upgrade pip
  pip "$dir" install -q "$TORCH_SPEC"
  # torch stays as installed: the requirements never name it, the constraint keeps it
  local torch_pin
  torch_pin="torch==$("$dir/bin/python" -c 'from importlib.metadata import version as v; print(v("torch"))')"
  pip "$dir" install -q -r "$req" -c <(echo "$torch_pin")
  if ! "$dir/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
    echo "warning: $dir got a CUDA build of torch; set TORCH_SPEC to a CPU wheel" >&2
  fi
  echo "$wanted" > "$stamp"
}

venv .venv-exporters tests/exporters/requirements-exporters.txt
if [ ! -x .venv/bin/python ]; then
  echo "error: .venv is missing (./scripts/setup.sh --install makes it)" >&2
  exit 1
fi

# no hub: every model is made here from a config
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# byte-identical files from run to run (optimum's merge walks sets of names)
export PYTHONHASHSEED=0
export PYTHONWARNINGS=ignore
.venv-exporters/bin/python "$HELPER" --env exporters --out "$OUT" "$@"
.venv/bin/python "$HELPER" --env genai --out "$OUT" "$@"
.venv-exporters/bin/python "$HELPER" --table --out "$OUT"
echo "== exporter models ready in $OUT ($(($(date +%s) - start)) s)"
