"""TensorRTFormPass: int32 words holding the packed bytes, plugin attributes, target metadata."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import tiny_models

from amx_export import formats
from amx_export.graph_passes import contract
from amx_export.graph_passes.emulate import EmulatePass
from amx_export.graph_passes.pipeline import Options, rewrite
from amx_export.graph_passes.tensorrt_form import TensorRTFormPass, tensorrt_scales


def rewritten(proto, target, **options):
    model = ir.from_proto(proto)
    rewrite(model, Options(target=target, **options))
    return model


def amx_nodes(model):
    return [n for n in model.graph if n.domain == contract.DOMAIN]


def test_words_are_little_endian_and_scales_zero_padded():
    scales = np.arange(1, 8, dtype=np.uint8).reshape(1, 7, 1)  # 7 bytes -> 2 words
    words = tensorrt_scales(scales)
    assert words.dtype == np.int32 and words.shape == (2,)
    assert [int(w) for w in words] == [0x04030201, 0x00070605]


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("k", [64, 70])  # 70: the last block is padded (K % 32, K % 16 != 0)
def test_same_bytes_as_the_onnxruntime_form(fmt, k):
    # n=37, hidden=45: N*nb*S is not a multiple of 4 for every format, so Wscales is padded
    proto = tiny_models.mlp(k=k, hidden=45, n=37)
    uint8_form = rewritten(proto, contract.ONNXRUNTIME, format=fmt)
    trt_form = rewritten(proto, contract.TENSORRT, format=fmt)
    spec = formats.get(fmt)
    for a, b in zip(amx_nodes(uint8_form), amx_nodes(trt_form), strict=True):
        codes, scales = (v.const_value.numpy() for v in a.inputs[1:3])
        words_c, words_s = (v.const_value.numpy() for v in b.inputs[1:3])
        n, k_node = codes.shape[0], a.attributes["in_features"].value
        assert words_c.dtype == words_s.dtype == np.int32
        assert words_c.shape == contract.wcodes_shape(n, k_node, spec.block_size, "tensorrt")
        assert words_s.shape == contract.wscales_shape(
            n, k_node, spec.block_size, spec.scales_per_block, "tensorrt"
        )
        assert np.array_equal(words_c.view(np.uint8), codes)
        padded = words_s.view(np.uint8)
        assert np.array_equal(padded[: scales.size], scales.reshape(-1))
        assert not padded[scales.size :].any() and padded.size - scales.size < 4
        assert b.inputs[1].dtype == ir.DataType.INT32 and list(b.inputs[1].shape) == [
            *words_c.shape
        ]


def test_plugin_attributes_metadata_and_idempotence():
    model = rewritten(tiny_models.attention_block(), "tensorrt", attention=True)
    nodes = amx_nodes(model)
    assert {n.op_type for n in nodes} == {"MatMul", "Quantize"}
    for node in nodes:
        for name, value in contract.PLUGIN_ATTRIBUTES.items():
            assert node.attributes[name].type == ir.AttributeType.STRING
            assert node.attributes[name].value == value
    assert model.metadata_props[contract.TARGET_KEY] == "tensorrt"
    before = ir.to_proto(model).SerializeToString()
    assert not TensorRTFormPass()(model).modified
    assert ir.to_proto(model).SerializeToString() == before
    onnx.checker.check_model(ir.to_proto(model))


def test_onnxruntime_form_has_no_target_entry_and_no_plugin_attributes():
    model = rewritten(tiny_models.mlp(), "onnxruntime")
    assert contract.TARGET_KEY not in model.metadata_props
    assert not any(contract.PLUGIN_NAMESPACE_ATTRIBUTE in n.attributes for n in amx_nodes(model))


def test_a_model_without_amx_nodes_is_left_alone():
    model = ir.from_proto(tiny_models.mlp())
    assert not TensorRTFormPass()(model).modified
    assert contract.TARGET_KEY not in model.metadata_props


def test_external_data(tmp_path):
    """Weights read from memory-mapped external data, written back as int32 words."""
    source = tmp_path / "uint8.onnx"
    ir.save(rewritten(tiny_models.mlp(), "onnxruntime"), source, external_data="uint8.data")
    model = ir.load(source)
    assert isinstance(model.graph.initializers["w1.amxfp4.codes"].const_value, ir.ExternalTensor)
    assert TensorRTFormPass()(model).modified
    ir.save(model, tmp_path / "trt.onnx", external_data="trt.data")
    expected = {v.name: v.const_value.numpy() for v in ir.load(source).graph.initializers.values()}
    for value in ir.load(tmp_path / "trt.onnx").graph.initializers.values():
        data = value.const_value.numpy()
        if value.name.endswith((".codes", ".scales")):
            assert data.dtype == np.int32
            raw = expected[value.name].reshape(-1)
            assert np.array_equal(data.reshape(-1).view(np.uint8)[: raw.size], raw)


def test_emulate_and_tensorrt_refused():
    with pytest.raises(ValueError, match="--emulate and --target tensorrt exclude each other"):
        Options(emulate=True, target="tensorrt")
    with pytest.raises(ValueError, match="unknown target 'tflite'"):
        Options(target="tflite")
    trt = rewritten(tiny_models.mlp(), "tensorrt")
    with pytest.raises(ValueError, match="already in the TensorRT form"):
        rewrite(trt, Options(emulate=True))
    with pytest.raises(ValueError, match="int32 words \\(the TensorRT form\\)"):
        EmulatePass()(trt)


def test_wrong_weight_shape_names_the_node():
    model = rewritten(tiny_models.mlp(), "onnxruntime")
    codes = amx_nodes(model)[0].inputs[1]
    codes.const_value = ir.tensor(codes.const_value.numpy()[:, :-4])
    with pytest.raises(ValueError, match="node 'fc1': Wcodes is uint8 \\[96, 28\\], expected"):
        TensorRTFormPass()(model)
