"""Runs our main command on every exporter fixture and reports what happens (no assertion).

    .venv/bin/python tests/exporters/try_amx_export.py [--models build/exporter-models]
        [--out /tmp/amx-exporters] [--python .venv/bin/python] [NAME...]

For each fixture of ``scripts/exporter_models.sh``: ``python -m amx_export MODEL -o OUT``
plain, with ``--emulate``, and with ``--attention`` (both forms) on the Optimum Llama; the exit
code, the command's output, and where it succeeded the largest |difference| of the first
output (logits / last_hidden_state) between the rewritten model (``amx_export.ort.session``:
our custom-op library when built) and the original in onnxruntime, for the prompt and, for
models with past key values, one decode step. Writes OUT/report.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

VARIANTS = {"": [], ".emulate": ["--emulate"]}
ATTENTION = {".attention": ["--attention"], ".attention.emulate": ["--attention", "--emulate"]}
ATTENTION_FOR = {"optimum-llama"}


def outputs(session, has_past: bool):
    """First output for a prompt and (with past key values) for one decode step."""
    import numpy as np
    from make_models import _feeds

    rng = np.random.default_rng(0)
    ids = rng.integers(3, 300, (2, 7))
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(None, _feeds(session, ids, None, False, 16)), strict=True))
    result = [outs[names[0]].astype(np.float32)]
    if has_past:
        past = {
            n.replace("present.", "past_key_values."): v
            for n, v in outs.items()
            if n.startswith("present.")
        }
        step = rng.integers(3, 300, (2, 1))
        result.append(
            session.run(None, _feeds(session, step, past, True, 16))[0].astype(np.float32)
        )
    return result


def compare(original: Path, rewritten: Path) -> dict:
    import numpy as np
    import onnxruntime as ort

    from amx_export.ort import session

    ort.set_default_logger_severity(4)
    base = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    has_past = any(i.name.startswith("past_key_values.") for i in base.get_inputs())
    new, how = session(rewritten)
    result = {"runs_as": how}
    try:
        ref = outputs(base, has_past)
    except Exception as error:  # the decode step of genai's fp16 model, in a default session
        result["note"] = f"original fails with past: {' '.join(str(error).split())[:200]}"
        ref, has_past = outputs(base, False), False
    try:
        got = outputs(new, has_past)
    except Exception as error:
        result["error"] = " ".join(str(error).split())[:600]
        return result
    result["max_abs_diff"] = [float(np.abs(a - b).max()) for a, b in zip(got, ref, strict=True)]
    result["ref_max_abs"] = [float(np.abs(b).max()) for b in ref]
    result["cosine"] = [
        float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        for a, b in zip(got, ref, strict=True)
    ]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--models", type=Path, default=ROOT / "build/exporter-models")
    parser.add_argument("--out", type=Path, default=Path("/tmp/amx-exporters"))
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((args.models / "manifest.json").read_text())
    report = []
    for fixture in manifest:
        name = fixture["name"]
        if args.names and name not in args.names:
            continue
        model = args.models / fixture["model"]
        variants = dict(VARIANTS, **(ATTENTION if name in ATTENTION_FOR else {}))
        for suffix, flags in variants.items():
            out = args.out / f"{name}{suffix}.amx.onnx"
            summary = args.out / f"{name}{suffix}.summary.json"
            for stale in (out, summary):
                stale.unlink(missing_ok=True)
            command = [args.python, "-m", "amx_export", str(model), "-o", str(out), *flags]
            done = subprocess.run(
                [*command, "--report", str(summary)], capture_output=True, text=True, cwd=ROOT
            )
            entry = {
                "fixture": name,
                "flags": flags,
                "command": " ".join(
                    ["python -m amx_export", fixture["model"], "-o", out.name, *flags]
                ),
                "rc": done.returncode,
                "stdout": done.stdout,
                "stderr": done.stderr,
                "output_written": out.is_file(),
            }
            if summary.is_file():
                entry["summary"] = json.loads(summary.read_text())
            if done.returncode == 0 and out.is_file():
                entry["run"] = compare(model, out)
            report.append(entry)
            run = entry.get("run", {})
            print(
                f"{name}{suffix:<20} rc {done.returncode}  "
                f"{(done.stderr.strip().splitlines() or [''])[-1][:160]}"
                f"  {run.get('max_abs_diff', run.get('error', ''))}",
                flush=True,
            )
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"== report: {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
