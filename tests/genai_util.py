"""onnxruntime-genai on a model folder, and the same model's logits in plain onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def og_greedy(folder: Path, prompt_ids: list[int], n: int) -> list[int]:
    """The ``n`` tokens onnxruntime-genai generates greedily after ``prompt_ids`` (its own
    KV cache, the folder's genai_config.json as written)."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + n, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens([prompt_ids])
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def full_logits(folder: Path, ids: list[int], native: bool = True) -> np.ndarray:
    """Logits [T, vocab] of the folder's decoder on ``ids`` in one call with an empty past
    (no KV cache), in plain onnxruntime: custom ops, or the emulation when ``native`` is False."""
    import onnx_ir as ir

    from amx_export.ort import model_session

    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    path = folder / decoder["filename"]
    session, _ = model_session(ir.load(path), str(path), native=native)
    feeds = {}
    for value in session.get_inputs():
        if value.name == "input_ids":
            feeds[value.name] = np.array([ids], np.int64)
        elif value.name == "attention_mask":
            feeds[value.name] = np.ones((1, len(ids)), np.int64)
        else:  # past_key_values.*: [batch, kv heads, 0, head size]
            shape = (1, decoder["num_key_value_heads"], 0, decoder["head_size"])
            feeds[value.name] = np.zeros(shape, np.float32)
    return session.run(["logits"], feeds)[0][0]
