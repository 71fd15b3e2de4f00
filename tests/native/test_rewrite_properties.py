"""The main command's rewrite on generated graphs (tests/graph_passes/random_graphs.py).

For every graph, format and form: the rewrite never fails and rewrites every layer; each
layer's output, on the activation the runtime itself fed it, equals
fake_quant(X) @ dequant(quantize(W))ᵀ (+ bias or beta * C) computed from the ORIGINAL weights
(so a weight packed in the wrong orientation or shared with the wrong layer fails); the custom
ops and the emulation both do; and a second rewrite changes nothing.

CI runs AMX_PROPERTY_EXAMPLES (default 300) examples from a fixed seed; run thousands by hand
with e.g. ``AMX_PROPERTY_EXAMPLES=3000 AMX_PROPERTY_RANDOM=1 ./scripts/test.sh -k properties``.
"""

import os
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amx_export import formats
from amx_export.graph_passes import contract
from amx_export.graph_passes.pipeline import Options, rewrite

sys.path.insert(0, str(Path(__file__).parents[1] / "graph_passes"))
from random_graphs import DTYPES, random_graph  # noqa: E402

EXAMPLES = int(os.environ.get("AMX_PROPERTY_EXAMPLES", "300"))
# of the layer's largest |output|: float32 summation order, or the output dtype's rounding
TOLERANCE = {"float32": 1e-4, "float16": 2e-3, "bfloat16": 1.6e-2}


def _expose(model: ir.Model, names: list[str]) -> list[str]:
    """Each named value as a float32 graph output (onnxruntime returns no bfloat16 arrays)."""
    values = ir.convenience.create_value_mapping(model.graph)
    outputs = []
    for name in dict.fromkeys(names):
        cast = ir.node("Cast", [values[name]], {"to": ir.DataType.FLOAT}, name=f"{name}/expose")
        cast.outputs[0].name = f"{name}/f32"
        cast.outputs[0].dtype = ir.DataType.FLOAT
        model.graph.append(cast)
        model.graph.outputs.append(cast.outputs[0])
        outputs.append(name)
    return outputs


def _run(model: ir.Model, x: np.ndarray, library) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    if library is not None:
        options.register_custom_ops_library(str(library))
    data = ir.to_proto(model).SerializeToString()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x}), strict=True))


def _expected(layer, x: np.ndarray, fmt: str, act: str) -> np.ndarray:
    w = layer.w_nk.astype(np.float32)
    w = formats.dequantize(formats.quantize(w, fmt), fmt, k=w.shape[1]).astype(np.float64)
    xq = x if act == contract.NO_ACT else formats.fake_quant(x, act)
    y = xq.astype(np.float64) @ w.T
    return y if layer.addend is None else y + layer.addend


def _check_layers(graph, results, fmt, act, form):
    for i, layer in enumerate(graph.layers):
        x, y = results[f"{layer.x}/f32"], results[f"{layer.y}/f32"]
        expected = _expected(layer, x, fmt, act)
        assert y.shape == expected.shape, (form, i)
        scale = max(float(np.abs(expected).max()), 1e-30)
        error = float(np.abs(y - expected).max()) / scale
        assert error <= TOLERANCE[graph.dtype], (form, i, error)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("AMX_PROPERTY_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_rewrite_is_exact_on_generated_graphs(data, ort_library):
    dtype = data.draw(st.sampled_from(sorted(DTYPES)), label="dtype")
    graph = random_graph(lambda label, lo, hi: data.draw(st.integers(lo, hi), label=label), dtype)
    fmt = data.draw(st.sampled_from(formats.names()), label="format")
    weights_only = data.draw(st.booleans(), label="weights only")
    act = contract.NO_ACT if weights_only else fmt
    x = np.random.default_rng(len(graph.layers)).standard_normal(graph.input_shape)
    x = x.astype(DTYPES[dtype][0]).astype(np.float32)
    final = {}
    for form, emulate in (("custom ops", False), ("emulation", True)):
        model = ir.from_proto(graph.model)
        options = Options(format=fmt, weights_only=weights_only, emulate=emulate)
        outcome = rewrite(model, options)
        assert len(outcome.quantized) == len(graph.layers), [vars(r) for r in outcome.layers]
        again = ir.from_proto(ir.to_proto(model))
        before = ir.to_proto(again).SerializeToString()
        assert not rewrite(again, options).modified
        assert ir.to_proto(again).SerializeToString() == before
        names = _expose(model, [n for layer in graph.layers for n in (layer.x, layer.y)])
        results = _run(model, x, None if emulate else ort_library)
        assert names and all(f"{n}/f32" in results for n in names)
        _check_layers(graph, results, fmt, act, form)
        final[form] = results[ir.to_proto(model).graph.output[0].name]
    if weights_only:  # no activation rounding to amplify float32 order: outputs agree too
        scale = max(float(np.abs(final["emulation"]).max()), 1e-30)
        error = float(np.abs(final["custom ops"] - final["emulation"]).max()) / scale
        assert error <= 4 * TOLERANCE[dtype]
