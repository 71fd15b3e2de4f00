"""GroupedAttentionPass: GQA's repeat of the keys and values replaced by grouped rows.

Hand-made attention graphs in the forms exporters write (transformers' eager repeat_kv,
Optimum's scaled Kᵀ with a Shape of the repeated keys, a repeat that also broadcasts the
batch), random shapes by hypothesis: the outputs must equal the ungrouped graph's within
float32 summation order, every repeat that can go must go, and nothing else may change.
"""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from amx_export.graph_passes.cleanup import CleanupPass
from amx_export.graph_passes.grouped_attention import GroupedAttentionPass
from amx_export.graph_passes.pipeline import Options, rewrite
from amx_export.graph_passes.shapes import InferShapesPass

F = TensorProto.FLOAT


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _repeat(nodes, source, out, groups, heads, batch_from="source"):
    """transformers' repeat_kv as torch.onnx writes it: Unsqueeze, Expand to a computed
    [b, kvh, groups, t, d], Reshape to a computed [b, h, t, d]. ``batch_from="q"`` takes b
    from Q instead (a source of batch 1 then broadcasts: not a pure repeat)."""
    s = f"{out}_"
    nodes += [
        helper.make_node("Unsqueeze", [source, "axis2"], [s + "u"]),
        helper.make_node("Shape", [source], [s + "shape"]),
        helper.make_node("Shape", ["q"], [s + "qshape"]),
        helper.make_node(
            "Slice", [s + ("qshape" if batch_from == "q" else "shape"), "zero", "one"], [s + "b"]
        ),  # fmt: skip
        helper.make_node("Slice", [s + "shape", "one", "two"], [s + "kvh"]),
        helper.make_node("Slice", [s + "shape", "two", "four"], [s + "td"]),
        helper.make_node(
            "Concat", [s + "b", s + "kvh", "groups", s + "td"], [s + "target"], axis=0
        ),  # fmt: skip
        helper.make_node("Expand", [s + "u", s + "target"], [s + "e"]),
        helper.make_node("Concat", [s + "b", "heads", s + "td"], [s + "heads_shape"], axis=0),
        helper.make_node("Reshape", [s + "e", s + "heads_shape"], [out]),
    ]


def gqa_graph(kv_heads=2, groups=2, d=8, form="eager", batch_from="source", key_length=False):
    """softmax(Q Kᵀ * scale + mask) V with K and V repeated for the query heads.

    form "eager": MatMul(Q, Transpose(repeat(K))) * scale; "scaled": Q and Kᵀ each times
    sqrt(scale) (scaled dot-product attention, Optimum's graphs). ``key_length`` adds the
    key length read as Gather(Shape(repeat(K)), 2) to the output (Optimum reads it so)."""
    heads = kv_heads * groups
    root = float(d) ** -0.25
    inits = [
        _init("axis2", np.array([2], np.int64)), _init("zero", np.array([0], np.int64)),
        _init("one", np.array([1], np.int64)), _init("two", np.array([2], np.int64)),
        _init("four", np.array([4], np.int64)), _init("groups", np.array([groups], np.int64)),
        _init("heads", np.array([heads], np.int64)),
    ]  # fmt: skip
    inits.append(_init("scale", np.float32(root * root)) if form == "eager" else
                 _init("root", np.float32(root)))  # fmt: skip
    if key_length:
        inits.append(_init("axis_t", np.array(2, np.int64)))
    nodes = []
    _repeat(nodes, "k", "k_rep", groups, heads, batch_from)
    _repeat(nodes, "v", "v_rep", groups, heads, batch_from)
    nodes.append(helper.make_node("Transpose", ["k_rep"], ["kT"], perm=[0, 1, 3, 2]))
    if form == "eager":
        nodes += [
            helper.make_node("MatMul", ["q", "kT"], ["s0"], name="qk"),
            helper.make_node("Mul", ["s0", "scale"], ["s1"]),
        ]
    else:
        nodes += [
            helper.make_node("Mul", ["q", "root"], ["q_scaled"]),
            helper.make_node("Mul", ["kT", "root"], ["kT_scaled"]),
            helper.make_node("MatMul", ["q_scaled", "kT_scaled"], ["s1"], name="qk"),
        ]
    nodes += [
        helper.make_node("Add", ["s1", "mask"], ["s2"]),
        helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v_rep"], ["attn0"], name="pv"),
    ]
    if key_length:
        nodes += [
            helper.make_node("Shape", ["k_rep"], ["key_length_shape"]),
            helper.make_node("Gather", ["key_length_shape", "axis_t"], ["t_len"], axis=0),
            helper.make_node("Cast", ["t_len"], ["t_float"], to=F),
            helper.make_node("Add", ["attn0", "t_float"], ["attn"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["attn0"], ["attn"]))
    inputs = [
        helper.make_tensor_value_info("q", F, ["batch", heads, "sequence", d]),
        helper.make_tensor_value_info(
            "k", F, [1 if batch_from == "q" else "batch", kv_heads, "total", d]),
        helper.make_tensor_value_info(
            "v", F, [1 if batch_from == "q" else "batch", kv_heads, "total", d]),
        helper.make_tensor_value_info("mask", F, ["batch", 1, "sequence", "total"]),
    ]  # fmt: skip
    output = helper.make_tensor_value_info("attn", F, ["batch", heads, "sequence", d])
    graph = helper.make_graph(nodes, "gqa", inputs, [output], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _grouped(proto):
    model = ir.from_proto(proto)
    InferShapesPass()(model)
    grouped = GroupedAttentionPass()
    grouped(model)
    CleanupPass()(model)
    return ir.to_proto(model), grouped.grouped


def _feeds(proto, batch, sequence, total, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {}
    for value in proto.graph.input:
        dims = [d.dim_value or {"batch": batch, "sequence": sequence, "total": total}[d.dim_param]
                for d in value.type.tensor_type.shape.dim]  # fmt: skip
        shapes[value.name] = dims
    feeds = {name: rng.standard_normal(dims).astype(np.float32) for name, dims in shapes.items()}
    feeds["mask"] = np.where(rng.random(shapes["mask"]) < 0.2, -1e9, 0).astype(np.float32)
    return feeds


def _run(proto, feeds):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _op_count(proto, op_type):
    return sum(1 for node in proto.graph.node if node.op_type == op_type)


@settings(max_examples=25, deadline=None)
@given(
    kv_heads=st.integers(1, 3), groups=st.integers(2, 4), d=st.sampled_from([4, 8, 32]),
    form=st.sampled_from(["eager", "scaled"]), key_length=st.booleans(),
    batch=st.integers(1, 3), sequence=st.integers(1, 5), past=st.integers(0, 9),
)  # fmt: skip
def test_grouped_graph_gives_the_same_attention(
    kv_heads, groups, d, form, key_length, batch, sequence, past
):
    proto = gqa_graph(kv_heads, groups, d, form, key_length=key_length)
    grouped, names = _grouped(proto)
    onnx.checker.check_model(grouped, full_check=True)
    assert sorted(names) == ["pv", "qk"]
    assert _op_count(grouped, "Expand") == 0  # both copies gone, the key length read from K
    feeds = _feeds(proto, batch, sequence, past + sequence)
    expected, actual = _run(proto, feeds), _run(grouped, feeds)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 + key_length * 1e-5)


def test_a_repeat_that_also_broadcasts_the_batch_is_left_alone():
    proto = gqa_graph(batch_from="q")  # K and V of batch 1 serve every sequence
    grouped, names = _grouped(proto)
    assert names == []
    assert _op_count(grouped, "Expand") == 2
    feeds = _feeds(proto, 3, 2, 4)
    np.testing.assert_array_equal(_run(grouped, feeds), _run(proto, feeds))


def test_graphs_without_grouped_heads_are_unchanged():
    from tiny_models import attention_block  # multi-head attention: no repeat to remove

    model = ir.from_proto(attention_block())
    InferShapesPass()(model)
    before = ir.to_proto(model).SerializeToString()
    result = GroupedAttentionPass()(model)
    assert not result.modified
    assert ir.to_proto(model).SerializeToString() == before


class _NoGrouping(GroupedAttentionPass):
    def call(self, model):
        return ir.passes.PassResult(model, modified=False)


@pytest.mark.parametrize("form", ["eager", "scaled"])
def test_attention_quantization_is_the_same_on_the_grouped_graph(form, monkeypatch):
    """The rewrite groups the heads before --attention quantizes: the same blocks of Q, K, P
    and V as without the grouping (Q before its sqrt(scale), K along head_dim, P and V
    along the keys), so the outputs agree within float32 summation order."""
    from amx_export.graph_passes import pipeline

    proto = gqa_graph(2, 3, 32, form)
    results = []
    for grouping in (_NoGrouping, GroupedAttentionPass):
        monkeypatch.setattr(pipeline, "GroupedAttentionPass", grouping)
        model = ir.from_proto(proto)
        outcome = rewrite(model, Options(attention=True, emulate=True))
        assert len(outcome.attention_matmuls) == 2
        assert sorted(outcome.attention_grouped) == (
            [] if grouping is _NoGrouping else ["pv", "qk"]
        )
        quantized = sorted(v for values in outcome.attention_matmuls.values() for v in values)
        results.append((quantized, ir.to_proto(model)))
    (names_before, before), (names_after, after) = results
    assert names_before == ["kT", "p", "q", "v_rep"]
    assert names_after == ["kT", "p", "q", "v"]  # q itself, not its scaled or regrouped form
    assert _op_count(after, "Expand") == 0 and _op_count(before, "Expand") == 2
    feeds = _feeds(proto, 2, 3, 40)
    np.testing.assert_allclose(_run(after, feeds), _run(before, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_our_exports_read_the_kv_heads_unrepeated(tiny_export, name):
    """The export runs the pass: no Expand of a present (the repeat of the past), every
    attention product grouped, and the rewrite finds nothing left to group."""
    _, path = tiny_export(name)
    model = ir.load(path)
    presents = {v.name for v in model.graph.outputs if v.name.startswith("present.")}
    expands = [n for n in model.graph if n.op_type == "Expand"]
    assert not [n for n in expands if (n.inputs[0].producer() is not None and
                n.inputs[0].producer().inputs[0].name in presents)]  # fmt: skip
    layers = len(presents) // 2
    matmuls = [n for n in model.graph if n.op_type == "MatMul" and "amx_group_rows" in
               (n.inputs[0].producer().name if n.inputs[0].producer() else "")]  # fmt: skip
    assert len(matmuls) == 2 * layers
    outcome = rewrite(model, Options(attention=True))
    assert outcome.attention_grouped == [] and len(outcome.attention_matmuls) == 2 * layers
