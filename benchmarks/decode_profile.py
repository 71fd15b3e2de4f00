"""Where a decode step's time goes in our loop: onnxruntime's profile of one generation, per
operator type, for the models that benchmarks/decode.py made.

    .venv/bin/python benchmarks/decode_profile.py [--variants fp32 matmulnbits amxfp4]
                                                  [--new-tokens 64] [--threads 2]

Per variant: the wall time of a decode step in our loop (amx_export.generation), the part of it
inside onnxruntime's run (its "model_run" events), and that run split by operator type (the
"Node" events' kernel times). Python's share is the step's wall time outside the run. Profiling
adds a little to every node, so read the operator rows as shares of the run, not as the times
of an unprofiled step. Run benchmarks/decode.py --prepare-only first.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "decode-bench"
VARIANTS = ("fp32", "matmulnbits", "amxfp4")
SHOWN = 8  # operator types listed per variant, largest first


def _prompt(tokens: int) -> list[int]:
    from decode import prompt_ids  # the benchmark's own prompt, so the two agree

    return prompt_ids(tokens)


def profile(path: Path, prompt: list[int], new_tokens: int, threads: int) -> dict:
    """One profiled generation: per decode step, the wall time, the run time and the time of
    each operator type (microseconds)."""
    import onnxruntime

    from amx_export.generation import Decoder
    from amx_export.ort import AS_IS, NATIVE, session_options

    options = session_options(threads=threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(WORK / f"profile-{path.stem}")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    domains = {node.name: node.domain for node in _nodes(path)}  # the profile drops domains
    amx = "amx" in domains.values()
    decoder = Decoder(session, NATIVE if amx else AS_IS, path)
    result = decoder.generate(prompt, max_new_tokens=new_tokens)
    trace_file = Path(session.end_profiling())
    trace = json.loads(trace_file.read_text())
    trace_file.unlink()  # tens of MB a run
    runs = [e for e in trace if e.get("cat") == "Session" and e["name"] == "model_run"]
    decode_runs = runs[-(new_tokens - 1) :]  # the warm-up and the prefill come first
    begin = decode_runs[0]["ts"]
    steps = len(decode_runs)
    by_op: collections.Counter = collections.Counter()
    for event in trace:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and event["ts"] >= begin):  # fmt: skip
            op = event["args"]["op_name"]
            domain = domains.get(event["name"].removesuffix("_kernel_time"))
            by_op[f"{domain}.{op}" if domain else op] += event["dur"] / steps
    return {
        "step_wall": result.decode_seconds / (len(result.tokens) - 1) * 1e6,
        "step_run": sum(r["dur"] for r in decode_runs) / steps,
        "ops": by_op,
    }


def _nodes(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help="models under build/decode-bench (decode.py's names)")  # fmt: skip
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = parser.parse_args()
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2 (one decode step)")
    missing = [v for v in args.variants if not (WORK / f"{v}.onnx").exists()]
    if missing:
        parser.error(f"no {', '.join(missing)} under {WORK}: run benchmarks/decode.py "
                     "--prepare-only first")  # fmt: skip
    prompt = _prompt(args.prompt_tokens)
    print(f"Batch 1, {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, "
          f"{args.threads} threads; microseconds per decode step "
          "(onnxruntime profiling)\n")  # fmt: skip
    for variant in args.variants:
        p = profile(WORK / f"{variant}.onnx", prompt, args.new_tokens, args.threads)
        nodes = sum(p["ops"].values())
        print(f"{variant}: step {p['step_wall']:.0f} (Python and bindings "
              f"{p['step_wall'] - p['step_run']:.0f}, onnxruntime run {p['step_run']:.0f}: "
              f"nodes {nodes:.0f}, between nodes {p['step_run'] - nodes:.0f})")  # fmt: skip
        for op, us in p["ops"].most_common(SHOWN):
            print(f"  {op:<28} {us:8.0f}  {us / p['step_run']:6.1%}")
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
