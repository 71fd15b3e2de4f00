"""Optimum's text-generation-with-past decoders after the rewrite: a prefill, then 4 decode
steps fed the presents as past, give the logits of one full-sequence run of the same rewritten
model (custom ops), so the amx nodes are right at every sequence length the cache makes."""

import numpy as np
import onnx_ir as ir
import pytest
from make_models import _feeds
from test_exporter_models import fixture_path, quantize

from amx_export.ort import model_session

PROMPT = [5, 17, 42, 9, 100, 3, 77]
STEPS = 4


def _step(session, names, ids, past):
    feeds = _feeds(session, np.array([ids]), past, use_cache=past is not None)
    return dict(zip(names, session.run(None, feeds), strict=True))


@pytest.mark.parametrize(
    "name, flags",
    [("optimum-llama", []), ("optimum-llama", ["--weights-only"]),
     ("optimum-llama-opset14", []), ("optimum-llama-merged", [])],
)  # fmt: skip
def test_decode_with_past_equals_full_recompute(name, flags, tmp_path):
    out = tmp_path / "model.onnx"
    code, _, stderr = quantize(fixture_path(name), out, *flags)
    assert code == 0, stderr
    session, _ = model_session(ir.load(out), str(out), native=True)
    names = [o.name for o in session.get_outputs()]
    outputs = _step(session, names, PROMPT, None)
    sequence, logits = list(PROMPT), [outputs["logits"][0, -1]]
    for _ in range(STEPS):
        sequence.append(int(np.argmax(logits[-1])))
        past = {n.replace("present.", "past_key_values."): v for n, v in outputs.items()
                if n.startswith("present.")}  # fmt: skip
        assert next(iter(past.values())).shape[2] == len(sequence) - 1
        outputs = _step(session, names, sequence[-1:], past)
        logits.append(outputs["logits"][0, -1])
    full = _step(session, names, sequence, None)["logits"][0, len(PROMPT) - 1 :]
    scale = float(np.abs(full).max())
    error = np.abs(np.array(logits) - full).max()
    # float32 order only; W4A4 could move a block across a rounding edge (none here)
    assert error <= (1e-2 if not flags else 1e-5) * scale, error
    assert list(np.argmax(logits, -1)) == list(full.argmax(-1))
    alone = _step(session, names, sequence[-1:], None)["logits"][0, -1]  # the past matters
    assert np.abs(alone - full[-1]).max() > 0.1 * scale
