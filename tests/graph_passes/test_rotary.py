"""FuseRotaryPass: transformers' rotate-half rotary embedding as com.microsoft.RotaryEmbedding.

Hand-made graphs in the forms exporters write (halves by two Slices or by a Split, either
operand order of the Muls and the Add, scaled and cast tables, per-row positions, batch > 1),
random shapes by hypothesis: the fused graph must give the unfused graph's outputs within one
float32 rounding of each product (onnxruntime's kernel uses FMA), every rotation must go, and
graphs that only look alike (other halves, the other rotation sense, tables whose halves
differ) must stay as they are. The exported tiny Llama and Gemma 3 (two ropes) go through
the whole rewrite.
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
from amx_export.graph_passes.rotary import FuseRotaryPass
from amx_export.graph_passes.shapes import InferShapesPass

F = TensorProto.FLOAT
EPS = np.finfo(np.float32).eps


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _halves(nodes, x, half, form, wrong_cut=False):
    """x1, x2: x[..., :half] and x[..., half:] by two Slices or a Split."""
    cut = half + 1 if wrong_cut else half
    if form == "split":
        nodes.append(helper.make_node("Split", [x, "split_sizes"], [f"{x}1", f"{x}2"], axis=-1))
    else:
        nodes += [
            helper.make_node("Slice", [x, "zero", "cut", "last"], [f"{x}1"]),
            helper.make_node("Slice", [x, "cut", "big", "last"], [f"{x}2"]),
        ]
    return [_init("cut", np.array([cut], np.int64)),
            _init("split_sizes", np.array([cut, 2 * half - cut], np.int64))]  # fmt: skip


def rotary_graph(d=8, heads=2, form="slice", swap_mul=False, swap_add=False, scaled=False,
                 sense="forward", table="concat", wrong_cut=False, dtype=F):  # fmt: skip
    """q, k [b, h, s, d] rotated by the positions [b, s]: transformers' apply_rotary_pos_emb.

    table "concat": cos/sin of Concat(f, f); "other": of Concat(f, 2f) (halves differ).
    sense "backward": Concat(x2, -x1) (not what RotaryEmbedding computes)."""
    half = d // 2
    inv_freq = (1.0 / 10000 ** (np.arange(half) / half)).astype(np.float32)
    inits = [
        _init("inv_freq", inv_freq.reshape(1, 1, half)), _init("zero", np.array([0], np.int64)),
        _init("big", np.array([2**62], np.int64)), _init("last", np.array([-1], np.int64)),
        _init("axis1", np.array([1], np.int64)), _init("axis2", np.array([2], np.int64)),
        _init("scale", np.float32(0.875)), _init("two", np.float32(2.0)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Cast", ["position_ids"], ["pos"], to=F),
        helper.make_node("Unsqueeze", ["pos", "axis2"], ["pos3"]),
        helper.make_node("Mul", ["pos3", "inv_freq"], ["freqs"]),
    ]
    second = "freqs"
    if table == "other":
        nodes.append(helper.make_node("Mul", ["freqs", "two"], ["freqs2"]))
        second = "freqs2"
    nodes.append(helper.make_node("Concat", ["freqs", second], ["emb"], axis=-1))
    for fn in ("Cos", "Sin"):
        name = fn.lower()
        nodes.append(helper.make_node(fn, ["emb"], [f"{name}0"]))
        if scaled:  # attention_scaling, then .to(dtype)
            nodes.append(helper.make_node("Mul", [f"{name}0", "scale"], [f"{name}1"]))
        else:
            nodes.append(helper.make_node("Identity", [f"{name}0"], [f"{name}1"]))
        nodes += [
            helper.make_node("Cast", [f"{name}1"], [f"{name}3d"], to=dtype),
            helper.make_node("Unsqueeze", [f"{name}3d", "axis1"], [f"{name}4d"]),
        ]
    for x in ("q", "k"):
        inits_x = _halves(nodes, x, half, form, wrong_cut)
        if x == "q":
            inits += inits_x
        if sense == "forward":
            nodes += [
                helper.make_node("Neg", [f"{x}2"], [f"{x}n"]),
                helper.make_node("Concat", [f"{x}n", f"{x}1"], [f"{x}rot"], axis=-1),
            ]
        else:
            nodes += [
                helper.make_node("Neg", [f"{x}1"], [f"{x}n"]),
                helper.make_node("Concat", [f"{x}2", f"{x}n"], [f"{x}rot"], axis=-1),
            ]
        cos_in = ["cos4d", x] if swap_mul else [x, "cos4d"]
        sin_in = ["sin4d", f"{x}rot"] if swap_mul else [f"{x}rot", "sin4d"]
        nodes += [
            helper.make_node("Mul", cos_in, [f"{x}c"]),
            helper.make_node("Mul", sin_in, [f"{x}s"]),
            helper.make_node(
                "Add", [f"{x}s", f"{x}c"] if swap_add else [f"{x}c", f"{x}s"], [f"{x}_embed"],
                name=f"{x}_rotary",
            ),  # fmt: skip
        ]
    inputs = [
        helper.make_tensor_value_info("q", dtype, ["batch", heads, "sequence", d]),
        helper.make_tensor_value_info("k", dtype, ["batch", 1, "sequence", d]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]),
    ]
    outputs = [helper.make_tensor_value_info(f"{x}_embed", dtype, None) for x in ("q", "k")]
    graph = helper.make_graph(nodes, "rotary", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _fused(proto):
    model = ir.from_proto(proto)
    InferShapesPass()(model)
    fused = FuseRotaryPass()
    fused(model)
    CleanupPass()(model)
    return ir.to_proto(model), fused.fused


def _feeds(proto, batch, sequence, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in proto.graph.input[:2]:
        dims = [d.dim_value or {"batch": batch, "sequence": sequence}[d.dim_param]
                for d in value.type.tensor_type.shape.dim]  # fmt: skip
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    # every row its own positions, as after left padding or in a batch of different pasts
    starts = rng.integers(0, 300, batch)
    feeds["position_ids"] = (starts[:, None] + np.arange(sequence)).astype(np.int64)
    return feeds


def _run(proto, feeds):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _op_count(proto, op_type):
    return sum(1 for node in proto.graph.node if node.op_type == op_type)


def _rounding_bound(x, position_ids, scaled):
    """Twice float32's epsilon times |x1 cos| + |x2 sin| (and the same for the other half):
    a fused multiply-add against two rounded products and a rounded sum."""
    half = x.shape[-1] // 2
    inv_freq = (1.0 / 10000 ** (np.arange(half) / half)).astype(np.float32)
    angle = position_ids.astype(np.float32)[:, None, :, None] * inv_freq
    scale = 0.875 if scaled else 1.0
    cos, sin = np.abs(np.cos(angle)) * scale, np.abs(np.sin(angle)) * scale
    x1, x2 = np.abs(x[..., :half]), np.abs(x[..., half:])
    bound = x1 * cos + x2 * sin + x2 * cos + x1 * sin
    return 2 * EPS * np.concatenate([bound, bound], axis=-1) + 1e-30


@settings(max_examples=30, deadline=None)
@given(
    d=st.sampled_from([2, 8, 32, 64]), heads=st.integers(1, 4),
    form=st.sampled_from(["slice", "split"]), swap_mul=st.booleans(), swap_add=st.booleans(),
    scaled=st.booleans(), batch=st.integers(1, 3), sequence=st.integers(1, 6),
)  # fmt: skip
def test_fused_rotary_gives_the_same_embedding(
    d, heads, form, swap_mul, swap_add, scaled, batch, sequence
):
    proto = rotary_graph(d, heads, form, swap_mul, swap_add, scaled)
    fused, names = _fused(proto)
    onnx.checker.check_model(fused)
    assert sorted(names) == ["k_rotary", "q_rotary"]
    assert _op_count(fused, "RotaryEmbedding") == 2
    assert _op_count(fused, "Neg") == 0 and _op_count(fused, "Cos") == 1  # one table each
    feeds = _feeds(proto, batch, sequence)
    for expected, actual, x in zip(_run(proto, feeds), _run(fused, feeds), ("q", "k"), strict=True):
        assert actual.shape == expected.shape
        bound = _rounding_bound(feeds[x], feeds["position_ids"], scaled)
        assert (np.abs(actual - expected) <= bound).all(), np.abs(actual - expected).max()


def test_float16_is_fused_too():
    """onnxruntime's kernel takes float16 (an fp16 export): the same rotation, within a
    float16 rounding or two (|x| < 5 here)."""
    proto = rotary_graph(d=16, dtype=TensorProto.FLOAT16)
    fused, names = _fused(proto)
    assert len(names) == 2
    feeds = _feeds(proto, 2, 5)
    feeds = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feeds.items()}
    for expected, actual in zip(_run(proto, feeds), _run(fused, feeds), strict=True):
        assert actual.dtype == np.float16
        np.testing.assert_allclose(actual.astype(np.float32), expected, atol=1e-2)


@pytest.mark.parametrize(
    "change", [{"sense": "backward"}, {"table": "other"}, {"wrong_cut": True},
               {"wrong_cut": True, "form": "split"}, {"dtype": TensorProto.DOUBLE}],  # fmt: skip
    ids=["rotation-backward", "halves-of-the-table-differ", "slices-off-centre", "split-uneven",
         "float64-no-kernel"],
)
def test_lookalikes_are_left_alone(change):
    proto = rotary_graph(d=8, **change)
    fused, names = _fused(proto)
    assert names == []
    assert _op_count(fused, "RotaryEmbedding") == 0
    feeds = _feeds(proto, 2, 3)
    if change.get("dtype") == TensorProto.DOUBLE:
        feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    for expected, actual in zip(_run(proto, feeds), _run(fused, feeds), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_a_table_broadcast_over_the_batch_is_fused_and_one_that_grows_x_is_not():
    """cos / sin of one row of positions serve every sequence of the batch: the ids are
    expanded to x's batch, as the product broadcast the table. A table of two rows against
    an x of one would make the product two rows: not a rotation of x, left alone."""
    proto = rotary_graph(d=8)
    proto.graph.input[2].type.tensor_type.shape.dim[0].dim_value = 1  # positions [1, s]
    fused, names = _fused(proto)
    assert len(names) == 2 and _op_count(fused, "Expand") == 1
    feeds = _feeds(proto, 3, 4)
    feeds["position_ids"] = feeds["position_ids"][:1]
    for expected, actual, x in zip(_run(proto, feeds), _run(fused, feeds), ("q", "k"),
                                   strict=True):  # fmt: skip
        positions = np.broadcast_to(feeds["position_ids"], (3, 4))
        assert (np.abs(actual - expected) <= _rounding_bound(feeds[x], positions, False)).all()
    grows = rotary_graph(d=8)
    grows.graph.input[2].type.tensor_type.shape.dim[0].dim_value = 2
    for value in grows.graph.input[:2]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    assert _fused(grows)[1] == []


@pytest.mark.parametrize("name, layers", [("llama", 2), ("gemma3", 3)])
def test_the_rewrite_fuses_every_rotary_of_an_export(name, layers, tiny_export):
    """Q and K of every layer (Gemma 3: its local and its global rope, two tables each);
    greedy tokens equal to the unfused rewrite's, the TensorRT form left unfused."""
    from amx_export.decoder_io import greedy
    from amx_export.graph_passes.pipeline import Options, rewrite

    path = tiny_export(name)[1]
    protos, outcomes = {}, {}
    for key, options in {
        "fused": Options(emulate=True), "kept": Options(emulate=True, fuse_rotary=False),
        "tensorrt": Options(target="tensorrt"),
    }.items():  # fmt: skip
        model = ir.load(path)
        outcomes[key] = rewrite(model, options)
        protos[key] = ir.to_proto(model)
    assert len(outcomes["fused"].rotary_fused) == 2 * layers
    assert _op_count(protos["fused"], "RotaryEmbedding") == 2 * layers
    rotations = [n for n in protos["fused"].graph.node if n.op_type == "RotaryEmbedding"]
    assert len({n.input[1] for n in rotations}) == 1  # one set of position ids
    assert len({n.input[2] for n in rotations}) == (2 if name == "gemma3" else 1)  # caches
    assert outcomes["kept"].rotary_fused == [] == outcomes["tensorrt"].rotary_fused
    assert _op_count(protos["tensorrt"], "RotaryEmbedding") == 0
    sessions = {key: ort.InferenceSession(protos[key].SerializeToString())
                for key in ("fused", "kept")}  # fmt: skip
    rng = np.random.default_rng(3)
    for length in (1, 7, 20):
        prompt = rng.integers(0, 256, length)
        tokens, logits = greedy(sessions["fused"], prompt, 12)
        want_tokens, want_logits = greedy(sessions["kept"], prompt, 12)
        assert tokens == want_tokens
        np.testing.assert_allclose(np.array(logits), np.array(want_logits), atol=1e-3)
