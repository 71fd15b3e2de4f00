#!/usr/bin/env bash
# Runs the whole test suite (installing into ./.venv first if needed). Extra arguments go
# to pytest, e.g. ./scripts/test.sh -k formats
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --install
# small models made by the exporters users have (Optimum, onnxruntime-genai, TorchScript):
# tests/exporters/ rewrites them (cached; about 2 min the first time)
mkdir -p build
./scripts/exporter_models.sh > build/exporter-models.log 2>&1 || {
  cat build/exporter-models.log; exit 1; }
# the native libraries are built by setup: their tests must run, not skip
AMX_REQUIRE_NATIVE=1 exec .venv/bin/python -m pytest "$@"
