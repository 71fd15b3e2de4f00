"""libamx_trt.so held to the TensorRT plugin contract (plugins/tensorrt/README.md), through
tests/tensorrt/harness.cc: creators and fields, shapes, types, format combinations,
serialization, refused fields and shapes, and registration into libnvinfer's registry."""

import onnx_ir as ir
import pytest
import tiny_models
from onnx_ir.passes.common import ShapeInferencePass

from amx_export import formats
from amx_export.graph_passes import contract
from amx_export.graph_passes.quantize_attention import QuantizeAttentionPass
from amx_export.graph_passes.quantize_linears import QuantizeLinearsPass
from amx_export.graph_passes.tensorrt_form import TensorRTFormPass

FORMATS = formats.names()
FLOAT_TYPES = ("kFLOAT", "kHALF", "kBF16")
# nvinfer1::PluginFieldType values (NvInferPluginBase.h) of the attribute types the ONNX
# parser turns into fields: STRING -> kCHAR, INT -> kINT32, FLOAT -> kFLOAT32
FIELD_TYPE = {str: 6, int: 5, float: 1}
CHECKS = {
    "creators", "matmul", "quantize", "formats", "roundtrip", "good_fields", "bad_fields",
    "shape_errors", "no_nvinfer",
}  # fmt: skip
K, N = 100, 96  # what harness.cc's matmul and roundtrip checks use
NVFP4_SCALE = 0.5  # the weight_tensor_scale harness.cc gives nvfp4 weights


def plugin_fields(op_type: str) -> dict[str, int]:
    return {a.name: FIELD_TYPE[a.type] for a in contract.ATTRIBUTES[op_type]}


def test_harness_builds(binaries):
    assert binaries.harness.exists() and binaries.fake_nvinfer.exists()


def test_every_check_ran_without_crashing(harness):
    assert harness.returncode == 0, f"harness exited with {harness.returncode}: {harness.stderr}"
    assert {check for check, _ in harness.results} == CHECKS
    failed = [line for line in harness.results.values() if "crashed" in line["detail"]]
    assert not failed


def test_loads_quietly_without_libnvinfer(harness):
    """No libnvinfer in the process: nothing to register into, nothing printed at load
    (the library's logger is set only after loading, so a message would reach stderr)."""
    line = harness.get("no_nvinfer")
    assert line["ok"], line
    assert not line["detail"]["nvinfer_loaded"]
    assert harness.stderr == ""


def test_creators(harness):
    line = harness.get("creators")
    assert line["ok"], line
    creators = {c["name"]: c for c in line["detail"]["creators"]}
    assert set(creators) == {contract.MATMUL, contract.QUANTIZE}
    for name, creator in creators.items():
        assert creator["kind"] == "PLUGIN CREATOR_V3ONE"
        assert (creator["version"], creator["namespace"]) == ("1", "amx")
        assert {f["name"]: f["type"] for f in creator["fields"]} == plugin_fields(name)
        assert len(creator["fields"]) == len(plugin_fields(name))  # no name twice


def emitted_attributes(model: ir.Model) -> dict[str, dict[str, object]]:
    """{op_type: {attribute name: value}} over the model's amx nodes."""
    found: dict[str, dict[str, object]] = {}
    for node in model.graph:
        if node.domain == contract.DOMAIN:
            found.setdefault(node.op_type, {}).update(
                {name: attr.value for name, attr in node.attributes.items()}
            )
    return found


def test_fields_are_the_attributes_the_passes_emit(harness):
    """The parser maps only attributes named by getFieldNames() to fields: an attribute
    the plugin does not list would be dropped silently, a field no pass emits never set."""
    emitted: dict[str, dict[str, object]] = {}
    for weight_format, act_format in (("nvfp4", "nvfp4"), ("amxfp4", contract.NO_ACT)):
        model = ir.from_proto(tiny_models.mlp())
        QuantizeLinearsPass(weight_format, act_format)(model)
        TensorRTFormPass()(model)
        for op_type, attributes in emitted_attributes(model).items():
            emitted.setdefault(op_type, {}).update(attributes)
    model = ir.from_proto(tiny_models.attention_block())
    ShapeInferencePass()(model)
    QuantizeAttentionPass("mxfp4")(model)
    TensorRTFormPass()(model)
    emitted.update(emitted_attributes(model))

    creators = {c["name"]: c for c in harness.get("creators")["detail"]["creators"]}
    assert set(emitted) == set(creators)
    for op_type, attributes in emitted.items():
        creator = creators[op_type]
        fields = {f["name"] for f in creator["fields"]}
        assert set(attributes) - set(contract.PLUGIN_ATTRIBUTES) == fields, op_type
        # what TensorRT >= 10.15 looks the creator up by
        assert attributes[contract.PLUGIN_NAMESPACE_ATTRIBUTE] == creator["namespace"]
        assert attributes[contract.PLUGIN_VERSION_ATTRIBUTE] == creator["version"]


@pytest.mark.parametrize("bias", [False, True], ids=["", "bias"])
@pytest.mark.parametrize("dtype", FLOAT_TYPES)
@pytest.mark.parametrize("act", ["same", "none"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_matmul_types_and_shapes(harness, fmt, act, dtype, bias):
    line = harness.get("matmul", f"{fmt}/{act}/{dtype}" + ("/bias" if bias else ""))
    assert line["ok"], line
    d = line["detail"]
    assert (d["name"], d["version"], d["namespace"]) == (contract.MATMUL, "1", "amx")
    assert (d["nb_outputs"], d["output_type"]) == (1, dtype)
    spec = formats.get(fmt)
    b, s = spec.block_size, spec.scales_per_block
    for case in d["shapes"]:  # the harness's weights have the TensorRT form's shapes
        assert case["inputs"][1][1] == contract.wcodes_shape(N, K, b, contract.TENSORRT)[1]
        assert case["inputs"][2] == list(contract.wscales_shape(N, K, b, s, contract.TENSORRT))
        assert len(case["inputs"]) == (4 if bias else 3)
    outputs = [case["output"] for case in d["shapes"]]
    assert outputs == [["batch", "seq", N], [2, 5, N], [N], ["rows", "N"]]  # N from Wcodes
    assert d["configure_rc"] == 0 and d["errors"] == []
    if act == "same":  # the quantized activations need scratch
        assert d["workspace"] > 0


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_types_and_shapes(harness, fmt, dtype):
    line = harness.get("quantize", f"{fmt}/{dtype}")
    assert line["ok"], line
    d = line["detail"]
    assert (d["name"], d["version"], d["namespace"]) == (contract.QUANTIZE, "1", "amx")
    assert (d["nb_outputs"], d["output_type"]) == (1, dtype)
    assert all(case["output"] == case["inputs"][0] for case in d["shapes"])
    assert d["configure_rc"] == 0 and d["errors"] == []


def intended_prefixes(tensors_after_x: list[str]) -> set[tuple[str, ...]]:
    """Every prefix TensorRT may see accepted: X float, then the given types ("X": X's)."""
    accepted = set()
    for x in FLOAT_TYPES:
        row = [x] + [x if t == "X" else t for t in tensors_after_x]
        formats_ = [f"{t}:kLINEAR" for t in row]
        accepted |= {tuple(formats_[:i]) for i in range(1, len(row) + 1)}
    return accepted


@pytest.mark.parametrize(
    ("case", "after_x"),
    [
        ("MatMul/amxfp4/3", ["kINT32", "kINT32", "X"]),
        ("MatMul/amxfp4/4", ["kINT32", "kINT32", "X", "X"]),
        ("MatMul/nvfp4-none/4", ["kINT32", "kINT32", "X", "X"]),
        ("Quantize/mxfp4/1", ["X"]),
    ],
)
def test_format_combinations(harness, case, after_x):
    """Asked position by position over 7 types x {kLINEAR, kCHW32}, the plugin accepts
    exactly the intended prefixes: nothing else, and nothing that depends on later slots."""
    line = harness.get("formats", case)
    assert line["ok"], line
    accepted = {tuple(prefix) for prefix in line["detail"]["accepted"]}
    assert accepted == intended_prefixes(after_x)


def serialized(fields: list[dict]) -> dict[str, tuple[int, object]]:
    for field in fields:  # strings with or without their NUL, as the parser's are
        if field["type"] == FIELD_TYPE[str]:
            assert field["length"] in (len(field["value"]), len(field["value"]) + 1), field
        else:
            assert field["length"] == 1, field
    return {f["name"]: (f["type"], f["value"]) for f in fields}


def matmul_fields(weight: str, act: str, k: int, scale: float) -> dict:
    return {
        "weight_format": (6, weight),
        "act_format": (6, act),
        "in_features": (5, k),
        "weight_tensor_scale": (1, scale),
    }


ROUND_TRIPS = [f"MatMul/{f}/{a}" for f in FORMATS for a in ("same", "none")]
ROUND_TRIPS += [f"Quantize/{f}" for f in FORMATS]


@pytest.mark.parametrize("case", ROUND_TRIPS)
def test_serialization_round_trip(harness, case):
    """getFieldsToSerialize -> createPlugin(kRUNTIME) (from a copy, scribbled over after) ->
    getFieldsToSerialize gives the same fields byte for byte; clone and attachToContext too."""
    line = harness.get("roundtrip", case)
    assert line["ok"], line
    d = line["detail"]
    equal = ("build_clone_equal", "runtime_equal", "runtime_clone_equal", "attached_equal")
    assert all(d[key] for key in equal), {key: d[key] for key in equal}
    op_type, fmt, *act = case.split("/")
    if op_type == contract.MATMUL:
        scale = NVFP4_SCALE if formats.get(fmt).tensor_scale else 1.0
        act_format = fmt if act == ["same"] else contract.NO_ACT
        expected = matmul_fields(fmt, act_format, K, scale)
    else:
        expected = {"format": (6, fmt)}
    assert serialized(d["serialized"]) == expected
    assert serialized(d["runtime_fields"]) == expected


GOOD_FIELDS = {
    "no_nul": matmul_fields("mxfp4", "none", 64, 1.0),
    "reordered": matmul_fields("amxfp4", "amxfp4", 64, 1.0),
    "nvfp4_scale": matmul_fields("nvfp4", "nvfp4", 64, 0.25),
    "default_scale": matmul_fields("amxfp4-e8m0", "none", 64, 1.0),
    "quantize_no_nul": {"format": (6, "nvfp4")},
}


@pytest.mark.parametrize("case", GOOD_FIELDS)
def test_accepted_fields(harness, case):
    """Strings without their NUL, fields in another order, the optional scale absent."""
    line = harness.get("good_fields", case)
    assert line["ok"], line
    assert serialized(line["detail"]["serialized"]) == GOOD_FIELDS[case]
    assert line["detail"]["errors"] == []


BAD_FIELDS = [
    "missing_weight_format", "unknown_weight_format", "weight_format_as_int32",
    "missing_act_format", "unknown_act_format", "missing_in_features", "in_features_as_float32",
    "in_features_zero", "in_features_negative", "nvfp4_without_scale", "scale_as_float64",
    "quantize_missing_format", "quantize_unknown_format",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_FIELDS)
def test_refused_fields(harness, case):
    """createPlugin returns nullptr and logs a kERROR "amx_trt: ..." naming the field."""
    line = harness.get("bad_fields", case)
    d = line["detail"]
    assert not d["created"], line
    assert d["logged"], f"no kERROR starting 'amx_trt: ' mentions {d['field']}: {d['errors']}"


SHAPE_CASES = [
    "x_last_dim", "wcodes_dim1", "two_inputs", "five_inputs", "symbolic_k",
    "configure_wscales", "configure_x_last_dim", "configure_wcodes_dim1",
    "configure_unknown_dims", "configure_valid",
]  # fmt: skip


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_shape_checks(harness, case):
    """Constant dims that contradict in_features or the weights are refused and logged;
    unknown (symbolic, -1) dims are not errors."""
    line = harness.get("shape_errors", case)
    assert line["ok"], line


def test_self_registration(registration_run):
    """Loaded after a libnvinfer.so.10, the library registers both creators with namespace
    "amx" through the IPluginCreatorInterface& overload (what trtexec --staticPlugins and
    polygraphy --plugins rely on)."""
    run = registration_run
    assert run.returncode == 0, f"harness exited with {run.returncode}: {run.stderr}"
    assert run.stderr == ""
    line = run.get("self_registration")
    assert line["ok"], line
    registered = sorted(line["detail"]["registered"], key=lambda r: r["name"])
    assert [(r["name"], r["version"], r["namespace"]) for r in registered] == [
        (contract.MATMUL, "1", "amx"),
        (contract.QUANTIZE, "1", "amx"),
    ]
    assert all(r["same_as_getCreators"] and r["v3_overload"] for r in registered)
