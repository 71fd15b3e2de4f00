"""EmulatePass: lower amx.MatMul / amx.Quantize to standard ONNX ops (stock onnxruntime runs it).

Each amx node (contract.py) becomes plain nodes that replay ``amx_export.formats`` step by
step (FORMAT.md; block.py is the algorithm mirrored here), so the emulated model computes the
same codes and scales bit for bit:

- Quantize: x -> [M, K] rows -> float32 -> zero-padded [M, nb, B] blocks -> block max/min ->
  scale codes (count of the scale format's rounding edges <= s) -> scale values (a Gather on
  the format's 256-entry table) -> E2M1 element codes (count of the E2M1 midpoints <=
  |x / divisor|, with an IEEE Div) -> decode, NaN for blocks holding NaN/Inf -> trim the
  padding -> x's dtype -> x's shape.
- MatMul: the 4-bit weight initializers stay 4-bit in the file and are decoded in the graph
  (nibbles by BitwiseAnd/BitShift, each block's 16 values from the E2M1 and scale tables,
  GatherElements), then ``Gemm(fake_quant(X) rows, W [N, K], transB) (+ bias)`` in float32,
  rounded to X's dtype and reshaped to X's leading shape.

Two choices keep onnxruntime from changing the numbers or running out of memory:

- float16 rounding: every Cast between X's dtype and float32 has a Flatten or Reshape
  between it and the nodes around it (_rows, _from_float), because onnxruntime removes a
  Cast pair such as Cast(fp32 -> fp16) -> Cast(fp16 -> fp32) when one of the two is a Cast
  it inserted itself, and it inserts those around every fp16 node its CPU EP has no fp16
  kernel for (Add, Mul, ...). The rounding the custom ops do would be skipped otherwise.
- The weights are decoded at every run, not once at load (_live_weights). onnxruntime would
  constant-fold the decode when it loads the model and hold the intermediates of all layers
  until it is done: 8.25 GB of peak RSS for 64 layers of 2048 x 2048 (1.07 GB as float32,
  0.15 GB emulated), against 0.09 GB at load and 0.51 GB after a run now
  (benchmarks/emulation_memory.py, 2-core AMD EPYC VM). The price is the decode at every
  call, about 6 ms per 2048 x 2048 weights there: 64 layers at M = 1 take 0.38-0.43 s
  instead of 0.02-0.07 s, at M = 512 2.3-2.5 s instead of 1.9-2.2 s. The emulation is the
  portable, exact form; the custom ops are the fast one.

Every generated node and value is named ``<amx node>/emul/<step>``; the constant tables are
initializers named ``amx_emul/...``, built once per model and shared by all lowered nodes
(nodes inside subgraphs read them from the main graph, as outer-scope values).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from amx_export import formats
from amx_export.formats.backend import FP16_MAX
from amx_export.formats.block import NVFP4_TENSOR_DIVISOR

from . import contract

MIN_OPSET = 18  # BitwiseAnd, ReduceMax/ReduceMin with axes as an input
SHARED = "amx_emul"  # name prefix of the shared constant initializers
FLOAT, FLOAT16, BFLOAT16 = ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16
INT32 = ir.DataType.INT32
FLOAT_TYPES = (FLOAT, FLOAT16, BFLOAT16)
E2M1 = formats.E2M1
E2M1_SIGN = E2M1.sign_bit  # 8: bit 3 of an element code


class _Constants:
    """Constant initializers of the main graph, each created once and shared by every node."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.values: dict[str, ir.Value] = {}

    def get(self, name: str, array: np.ndarray) -> ir.Value:
        """The initializer ``name`` holding ``array`` (reused when it already exists)."""
        if name in self.values:
            return self.values[name]
        unique, i = name, 1
        while unique in self.graph.initializers:
            existing = self.graph.initializers[unique].const_value
            if existing is not None and _same_tensor(existing.numpy(), array):
                self.values[name] = self.graph.initializers[unique]  # from an earlier run
                return self.values[name]
            unique, i = f"{name}_{i}", i + 1
        value = ir.Value(
            name=unique,
            type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
            shape=ir.Shape(array.shape),
            const_value=ir.tensor(array, name=unique),
        )
        self.graph.register_initializer(value)
        self.values[name] = value
        return value


def _same_tensor(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _content_name(array: np.ndarray) -> str:
    """A readable name that spells a small constant's dtype, rank and values."""
    text = "_".join(repr(v) for v in array.ravel().tolist())
    rank = "" if array.ndim == 0 else "s"  # "s": a 1-D list, not a scalar
    return f"{SHARED}/{array.dtype.name}{rank}_{text}"


class _Emitter:
    """Records the standard-op nodes that replace one amx node, named ``<prefix>/<label>``."""

    def __init__(self, prefix: str, constants: _Constants):
        self.prefix = prefix
        self.constants = constants
        self.tape = ir.tape.Tape()
        self.names: set[str] = set()  # shared with the scopes: a label must not repeat

    @property
    def nodes(self) -> Sequence[ir.Node]:
        return self.tape.nodes

    def scope(self, name: str) -> _Emitter:
        """The same recorder, naming under ``<prefix>/<name>``."""
        child = copy.copy(self)
        child.prefix = f"{self.prefix}/{name}"
        return child

    def op(self, label: str, op_type: str, inputs: Sequence[ir.Value], **attributes) -> ir.Value:
        """One node ``op_type(inputs)``; the node and its output are both named by label."""
        name = f"{self.prefix}/{label}"
        if name in self.names:
            raise AssertionError(f"emulation step {name!r} built twice")
        self.names.add(name)
        output = self.tape.op(op_type, list(inputs), attributes or None, name=name)
        output.name = name
        return output

    def table(self, name: str, array: np.ndarray) -> ir.Value:
        """A shared constant table ``amx_emul/<name>``."""
        return self.constants.get(f"{SHARED}/{name}", array)

    def const(self, value, dtype=np.float32) -> ir.Value:
        """A small shared constant (a scalar or a 1-D list), named by its contents."""
        array = np.asarray(value, dtype=dtype)
        return self.constants.get(_content_name(array), array)

    def ints(self, values: Sequence[int]) -> ir.Value:
        """A shared 1-D int64 constant (shapes, axes, pads)."""
        return self.const(list(values), np.int64)

    def local(self, label: str, array: np.ndarray) -> ir.Value:
        """A constant that belongs to this node alone (e.g. its weight tensor scale)."""
        return self.constants.get(f"{self.prefix}/{label}", array)


# ---- shared pieces of the block algorithm ------------------------------------------------


def _bucket(em: _Emitter, label: str, value: ir.Value, edges: ir.Value) -> ir.Value:
    """int32 count of the sorted ``edges`` that are <= value (searchsorted 'right').

    Every edge is compared on a new last axis, so the count is exact and NaN counts 0.
    """
    expanded = em.op(f"{label}/unsqueeze", "Unsqueeze", [value, em.ints([-1])])
    hits = em.op(f"{label}/ge", "GreaterOrEqual", [expanded, edges])
    hits = em.op(f"{label}/hits", "Cast", [hits], to=INT32)
    return em.op(label, "ReduceSum", [hits, em.ints([-1])], keepdims=0)


def _scale_values(
    em: _Emitter, codes: ir.Value, spec: formats.FormatSpec
) -> tuple[ir.Value, ir.Value | None]:
    """Scale values from int32 codes [.., nb, S]: (Sp, Sn) [.., nb, 1], or (S, None)."""
    table = em.table(f"{spec.scale_format.name}_values", spec.scale_format.values)
    scale = em.op("scale", "Gather", [table, codes])
    if not spec.signed_scales:
        return scale, None
    axis = em.ints([-1])
    positive = em.op("scale_pos", "Slice", [scale, em.ints([0]), em.ints([1]), axis])
    negative = em.op("scale_neg", "Slice", [scale, em.ints([1]), em.ints([2]), axis])
    return positive, negative


def _decode(
    em: _Emitter,
    codes: ir.Value,
    positive: ir.Value,
    negative: ir.Value | None,
    g: ir.Value | None,
) -> ir.Value:
    """FORMAT.md decode of int32 element codes: e2m1(q) * (Sp, or Sn if bit 3 is set), * g.

    Each block's 16 possible values are computed first ([.., nb, 16]: e2m1 * its scale, then
    * g, block.dequantize's order) and GatherElements picks them: the same products, with
    one pass over the elements instead of a Gather, a Where and a Mul (3x faster in a
    profile, which counts since the weights are decoded at every run, see _live_weights).
    """
    values = em.table("e2m1_values", E2M1.values)
    if negative is None:
        table = em.op("block_values", "Mul", [positive, values])
    else:  # codes 0-7 take Sp, codes 8-15 (sign bit set) take Sn
        half, axis = em.ints([E2M1_SIGN]), em.ints([0])
        pos = em.op("e2m1_pos", "Slice", [values, em.ints([0]), half, axis])
        neg = em.op("e2m1_neg", "Slice", [values, half, em.ints([2 * E2M1_SIGN]), axis])
        pos = em.op("block_values_pos", "Mul", [positive, pos])
        neg = em.op("block_values_neg", "Mul", [negative, neg])
        table = em.op("block_values", "Concat", [pos, neg], axis=-1)
    if g is not None:
        table = em.op("block_values_g", "Mul", [table, g])
    return em.op("decoded", "GatherElements", [table, codes], axis=-1)


def _merge_blocks(
    em: _Emitter, blocks: ir.Value, rows_shape: ir.Value, end: ir.Value | None
) -> ir.Value:
    """[M, nb, B] -> [M, nb*B] -> [M, K] (the padding trimmed when there is any)."""
    rows = em.op("rows_padded", "Reshape", [blocks, rows_shape])
    if end is None:
        return rows
    return em.op("rows_trimmed", "Slice", [rows, em.ints([0]), end, em.ints([1])])


# ---- fake quantization of an activation (amx.Quantize, amx.MatMul's act_format) ------------


def _split_blocks(
    em: _Emitter, rows: ir.Value, k: int | None, bs: int
) -> tuple[ir.Value, ir.Value, ir.Value | None]:
    """[M, K] rows -> [M, nb, B] blocks, the tail zero-padded (FORMAT.md).

    Returns the blocks, the [-1, nb*B] shape that flattens them back and the [1] end that
    trims the padding (None when there is none). A static K gives constant shapes; without
    one (e.g. attention's key-sequence axis) they are computed from Shape at run time. The
    row count is left to -1 rather than 0 so that an empty input reshapes too.
    """
    if k is not None:
        nb = -(-k // bs)
        pad = nb * bs - k
        pads = em.ints([0, 0, 0, pad]) if pad else None
        blocks_shape, rows_shape = em.ints([-1, nb, bs]), em.ints([-1, nb * bs])
        end = em.ints([k]) if pad else None
    else:
        end = em.op("k", "Shape", [rows], start=1)
        k_up = em.op("k_round_up", "Add", [end, em.ints([bs - 1])])
        nb = em.op("blocks_per_row", "Div", [k_up, em.ints([bs])])  # int64: floor division
        kp = em.op("k_padded", "Mul", [nb, em.ints([bs])])
        pad = em.op("pad", "Sub", [kp, end])
        pads = em.op("pads", "Concat", [em.ints([0, 0, 0]), pad], axis=0)
        blocks_shape = em.op("blocks_shape", "Concat", [em.ints([-1]), nb, em.ints([bs])], axis=0)
        rows_shape = em.op("rows_shape", "Concat", [em.ints([-1]), kp], axis=0)
    if pads is not None:
        rows = em.op("padded", "Pad", [rows, pads])
    return em.op("blocks", "Reshape", [rows, blocks_shape]), rows_shape, end


def _block_magnitudes(
    em: _Emitter, blocks: ir.Value, spec: formats.FormatSpec
) -> tuple[ir.Value, ir.Value]:
    """Per block (keepdims): [pmax, nmax] (signed scales) or [amax]; 0 in bad blocks.

    Also returns ``bad`` [M, nb, 1]: the block holds a NaN or ±Inf. x * 0 is NaN exactly for
    those and a sum keeps a NaN, while onnxruntime's ReduceMax/ReduceMin may skip a NaN.
    """
    axis = em.ints([-1])
    zero = em.const(0.0)
    probe = em.op("nonfinite_probe", "Mul", [blocks, zero])
    probe = em.op("nonfinite_sum", "ReduceSum", [probe, axis], keepdims=1)
    bad = em.op("bad", "IsNaN", [probe])
    hi = em.op("block_max", "ReduceMax", [blocks, axis], keepdims=1)
    lo = em.op("block_min", "ReduceMin", [blocks, axis], keepdims=1)
    hi = em.op("block_max_ok", "Where", [bad, zero, hi])
    minus_lo = em.op("block_min_neg", "Neg", [em.op("block_min_ok", "Where", [bad, zero, lo])])
    if spec.signed_scales:
        pmax = em.op("pmax", "Max", [hi, zero])
        nmax = em.op("nmax", "Max", [minus_lo, zero])
        return em.op("mags", "Concat", [pmax, nmax], axis=-1), bad
    return em.op("amax", "Max", [hi, minus_lo]), bad


def _tensor_scale(em: _Emitter, mags: ir.Value) -> ir.Value:
    """NVFP4's scalar g = max(block amax) / (448 * 6), and 1 where that is 0."""
    amax = em.op("tensor_amax", "ReduceMax", [mags], keepdims=0)
    amax = em.op("tensor_amax_0", "Max", [amax, em.const(0.0)])  # empty input: -inf -> 0
    g = em.op("tensor_scale_raw", "Div", [amax, em.const(NVFP4_TENSOR_DIVISOR)])
    is_zero = em.op("tensor_scale_is_0", "Equal", [g, em.const(0.0)])
    return em.op("tensor_scale", "Where", [is_zero, em.const(1.0), g])


def _scale_codes(
    em: _Emitter, mags: ir.Value, spec: formats.FormatSpec, g: ir.Value | None
) -> ir.Value:
    """int32 scale codes [M, nb, S]: the count of the spec's edges <= s (block._scale_codes).

    s = m / 6 (rule "minifloat") or m (rule "pot"), then / g for NVFP4; s == 0 takes the
    spec's zero_scale_code.
    """
    s = mags
    if spec.rule == "minifloat":
        s = em.op("s_div6", "Div", [s, em.const(6.0)])
    if g is not None:
        s = em.op("s_div_g", "Div", [s, g])
    edges = em.table(f"{spec.scale_format.name}_{spec.rule}_edges", spec.scale_edges)
    codes = _bucket(em, "scale_code_raw", s, edges)
    is_zero = em.op("s_is_0", "Equal", [s, em.const(0.0)])
    zero_code = em.const(spec.zero_scale_code, np.int32)
    return em.op("scale_code", "Where", [is_zero, zero_code, codes])


def _element_codes(
    em: _Emitter,
    blocks: ir.Value,
    divisor: ir.Value,
    bad: ir.Value,
) -> ir.Value:
    """int32 E2M1 codes (sign in bit 3) of x / divisor; 0 for a zero divisor or a bad block."""
    ratio = em.op("ratio", "Div", [blocks, divisor])  # IEEE division, as FORMAT.md requires
    ratio = em.op("ratio_abs", "Abs", [ratio])
    midpoints = em.table("e2m1_midpoints", E2M1.midpoints)
    magnitude = _bucket(em, "magnitude", ratio, midpoints)
    zero = em.const(0, np.int32)
    is_negative = em.op("x_lt_0", "Less", [blocks, em.const(0.0)])
    nonzero = em.op("magnitude_gt_0", "Greater", [magnitude, zero])
    negative = em.op("negative", "And", [is_negative, nonzero])  # -0.0 and 0 code as 0x0
    signed = em.op("signed_code", "Add", [magnitude, em.const(E2M1_SIGN, np.int32)])
    codes = em.op("code_raw", "Where", [negative, signed, magnitude])
    usable = em.op("divisor_gt_0", "Greater", [divisor, em.const(0.0)])
    keep = em.op("keep", "And", [usable, em.op("good", "Not", [bad])])
    return em.op("code", "Where", [keep, codes, zero])


def _rows(em: _Emitter, x: ir.Value, dtype: ir.DataType | None) -> ir.Value:
    """x as float32 rows [M, K] (any rank; fp16/bf16 upcast exactly).

    The Flatten runs in x's dtype, before the Cast, so that this Cast never reads a Cast:
    onnxruntime drops a Cast pair (fp32 -> fp16 -> fp32 or back) when one of the two is a Cast
    it inserted itself, and it inserts them around every fp16 node its CPU EP has no fp16
    kernel for (Add, Mul, ...: InsertCastTransformer, then RemoveDuplicateCastTransformer
    treats its own casts as lossless; at every optimization level). An fp16 Add feeding this
    Cast would then reach us unrounded, while the custom op reads the rounded fp16 values.
    """
    rows = em.op("rows", "Flatten", [x], axis=-1)
    return rows if dtype == FLOAT else em.op("rows_f32", "Cast", [rows], to=FLOAT)


def _from_float(
    em: _Emitter,
    y: ir.Value,
    like: ir.Value,
    dtype: ir.DataType | None,
    saturate: bool,
    shape: ir.Value | None = None,
    label: str = "y",
) -> ir.Value:
    """float32 y in the dtype of ``like`` (x), statically known or not (then CastLike), then
    reshaped to ``shape`` when given.

    The Reshape comes after the Cast for the reason in _rows, the other way round: a Cast to
    fp16 that feeds an fp16 Add would be dropped together with the Cast to fp32 onnxruntime
    puts before that Add, and the Add would sum the unrounded float32 values.

    ``saturate``: float16 saturates to ±65504 (fake_quant). That Clip is only a guard: for
    |x| <= 65504 the largest decodable value 6 * S stays below it (E5M2 rounds s <= 10917 to
    at most 10240, E4M3 saturates at 448, E8M0 gives at most 2**13, NVFP4's 6 * 448 * g is
    the tensor's amax up to one rounding), so a plain CastLike is exact when the dtype is
    only known at run time.
    """
    if dtype is None:
        y = em.op(f"{label}_to_x_dtype", "CastLike", [y, like])
    elif dtype != FLOAT:
        if saturate and dtype == FLOAT16:
            y = em.op(f"{label}_saturate", "Clip", [y, em.const(-FP16_MAX), em.const(FP16_MAX)])
        y = em.op(f"{label}_to_{dtype.name.lower()}", "Cast", [y], to=dtype)
    if shape is None:
        return y
    return em.op(f"{label}_unflatten", "Reshape", [y, shape], allowzero=1)  # [0, ..] stays 0


def _fake_quant(em: _Emitter, rows: ir.Value, spec: formats.FormatSpec, k: int | None) -> ir.Value:
    """formats.fake_quant of float32 rows [M, K], blocks along K, in float32.

    ``k`` is the static row length, None when only known at run time.
    """
    blocks, rows_shape, end = _split_blocks(em, rows, k, spec.block_size)
    mags, bad = _block_magnitudes(em, blocks, spec)
    g = _tensor_scale(em, mags) if spec.tensor_scale else None
    positive, negative = _scale_values(em, _scale_codes(em, mags, spec, g), spec)
    divisor = positive
    if negative is not None:
        x_gt_0 = em.op("x_gt_0", "Greater", [blocks, em.const(0.0)])
        divisor = em.op("divisor", "Where", [x_gt_0, positive, negative])
    if g is not None:
        divisor = em.op("divisor_g", "Mul", [divisor, g])  # fl(S * g), as block.quantize
    codes = _element_codes(em, blocks, divisor, bad)
    y = _decode(em, codes, positive, negative, g)
    y = em.op("decoded_nan", "Where", [bad, em.const(np.nan), y])  # the NaN scale code
    return _merge_blocks(em, y, rows_shape, end)


# ---- weights of amx.MatMul ---------------------------------------------------------------


def _run_time_zero(em: _Emitter, rows: ir.Value) -> ir.Value:
    """A uint8 0 computed from the layer's input rows: onnxruntime cannot know it at load.

    ``Less(v, v)`` is false for every float, NaN included; v is the first value of the
    float32 rows (the CPU EP has no bfloat16 Less), and ReduceMax makes it a scalar that is
    0 for an empty X too (a max over no values is the type's minimum, ONNX opset 18).
    """
    flat = em.op("flat", "Reshape", [rows, em.ints([-1])])
    first = em.op("first_value", "Slice", [flat, em.ints([0]), em.ints([1])])
    false = em.op("first_lt_itself", "Less", [first, first])
    false = em.op("first_lt_itself_u8", "Cast", [false], to=ir.DataType.UINT8)
    return em.op("zero", "ReduceMax", [false], keepdims=0)


def _live_weights(em: _Emitter, weights: ir.Value, zero: ir.Value, label: str) -> ir.Value:
    """``weights | zero``: the same bytes, but a run-time value for onnxruntime.

    Without it onnxruntime constant-folds the whole decode when it loads the model and keeps
    every intermediate of every layer until its folding pass ends (7.7x the float32 model's
    size, the module docstring's numbers), where a model of a few GB of 4-bit weights no
    longer fits. Made to depend on the layer's own input, the decode runs at every call
    instead, and only once that input exists, so one layer's float32 weights are alive at a
    time (a decode that depended on nothing at run time was scheduled ahead of the matmuls:
    1.1 GB of peak RSS for 0.4 GB of float32 weights).
    """
    return em.op(label, "BitwiseOr", [weights, zero])


def _unpack_nibbles(em: _Emitter, packed: ir.Value, nb: int, bs: int) -> ir.Value:
    """uint8 [N, nb*B/2] -> int32 codes [N, nb, B]; element 2j is the low nibble of byte j."""
    low = em.op("low", "BitwiseAnd", [packed, em.const(0x0F, np.uint8)])
    high = em.op("high", "BitShift", [packed, em.const(4, np.uint8)], direction="RIGHT")
    axis = em.ints([-1])
    pairs = [em.op("low_1", "Unsqueeze", [low, axis]), em.op("high_1", "Unsqueeze", [high, axis])]
    pairs = em.op("pairs", "Concat", pairs, axis=-1)
    codes = em.op("codes_u8", "Reshape", [pairs, em.ints([-1, nb, bs])])
    return em.op("codes", "Cast", [codes], to=INT32)


def _weight_matrix(
    em: _Emitter,
    codes: ir.Value,
    scales: ir.Value,
    zero: ir.Value,
    spec: formats.FormatSpec,
    k: int,
    tensor_scale: float | None,
) -> ir.Value:
    """W [N, K] float32 = dequantize(Wcodes, Wscales), decoded with standard ops."""
    nb = -(-k // spec.block_size)
    codes = _live_weights(em, codes, zero, "codes_live")
    elements = _unpack_nibbles(em, codes, nb, spec.block_size)
    scales = _live_weights(em, scales, zero, "scales_live")
    scale_codes = em.op("scale_codes", "Cast", [scales], to=INT32)
    positive, negative = _scale_values(em, scale_codes, spec)
    g = None
    if spec.tensor_scale:
        g = em.local("tensor_scale", np.asarray(tensor_scale, np.float32))
    w = _decode(em, elements, positive, negative, g)
    end = em.ints([k]) if nb * spec.block_size != k else None
    return _merge_blocks(em, w, em.ints([-1, nb * spec.block_size]), end)


# ---- the two amx ops ---------------------------------------------------------------------


def _attribute(node: ir.Node, name: str):
    attr = node.attributes.get(name)
    return None if attr is None else attr.value


def _x_dtype(node: ir.Node) -> ir.DataType | None:
    """X's dtype, else the output's (the contract makes them the same); None if unknown."""
    return node.inputs[0].dtype or node.outputs[0].dtype


def _static_last_dim(value: ir.Value) -> int | None:
    shape = value.shape
    if shape is None or len(shape) == 0 or not isinstance(shape[-1], int):
        return None
    return shape[-1]


def _lower_quantize(em: _Emitter, node: ir.Node) -> ir.Value:
    """amx.Quantize(X) -> fake_quant(X, format), in X's dtype and shape."""
    spec = formats.get(_attribute(node, "format"))
    x, dtype = node.inputs[0], _x_dtype(node)
    y = _fake_quant(em, _rows(em, x, dtype), spec, _static_last_dim(x))
    shape = em.op("x_shape", "Shape", [x])
    return _from_float(em, y, x, dtype, saturate=True, shape=shape)


def _lower_matmul(em: _Emitter, node: ir.Node) -> ir.Value:
    """amx.MatMul(X, Wcodes, Wscales[, bias]) -> fake_quant(X) @ W (+ bias), float32 inside.

    On rows [M, K]: Gemm(rows, W [N, K], transB) needs no transposed copy of the weights.
    """
    spec = formats.get(_attribute(node, "weight_format"))
    act_format = _attribute(node, "act_format")
    k = _attribute(node, "in_features")
    x, codes, scales, *rest = node.inputs
    bias = rest[0] if rest else None
    dtype = _x_dtype(node)
    rows = _rows(em, x, dtype)
    zero = _run_time_zero(em.scope("w"), rows)
    if act_format != contract.NO_ACT:
        q = em.scope("x_q")
        # in float32, not rounded to X's dtype (contract.py): NVFP4's tensor scale makes
        # values float16/bfloat16 cannot hold, and the kernels multiply them as they are
        rows = _fake_quant(q, rows, formats.get(act_format), k)
    tensor_scale = _attribute(node, "weight_tensor_scale")
    w = _weight_matrix(em.scope("w"), codes, scales, zero, spec, k, tensor_scale)
    y = em.op("matmul", "Gemm", [rows, w], transB=1)
    if bias is not None:
        if bias.dtype != FLOAT:
            bias = em.op("bias_f32", "Cast", [bias], to=FLOAT)
        y = em.op("bias_add", "Add", [y, bias])
    leading = em.op("x_leading_shape", "Shape", [x], end=-1)
    shape = em.op("y_shape", "Concat", [leading, em.op("n", "Shape", [y], start=1)], axis=0)
    return _from_float(em, y, x, dtype, saturate=False, shape=shape)


LOWERINGS = {contract.QUANTIZE: _lower_quantize, contract.MATMUL: _lower_matmul}


# ---- checks ------------------------------------------------------------------------------


def _check_node(node: ir.Node) -> None:
    """Raise a clear error for an amx node this pass cannot lower (before changing anything)."""
    where = f"amx.{node.op_type} node {node.name!r}"
    if node.op_type not in LOWERINGS:
        raise ValueError(f"{where}: no emulation for this op (known: {', '.join(LOWERINGS)})")
    dtype = _x_dtype(node)
    if dtype is not None and dtype not in FLOAT_TYPES:
        raise ValueError(f"{where}: X must be float32, float16 or bfloat16, got {dtype}")
    for attribute in contract.ATTRIBUTES[node.op_type]:
        if attribute.required and attribute.name not in node.attributes:
            raise ValueError(f"{where}: missing attribute {attribute.name!r}")
    if node.op_type == contract.QUANTIZE:
        formats.get(_attribute(node, "format"))
        return
    spec = formats.get(_attribute(node, "weight_format"))
    act_format = _attribute(node, "act_format")
    if act_format != contract.NO_ACT:
        formats.get(act_format)
    k = _attribute(node, "in_features")
    if k < 1:
        raise ValueError(f"{where}: in_features must be positive, got {k}")
    if spec.tensor_scale and _attribute(node, "weight_tensor_scale") is None:
        raise ValueError(f"{where}: {spec.name} weights need the weight_tensor_scale attribute")
    if len(node.inputs) < 3 or node.inputs[1] is None or node.inputs[2] is None:
        raise ValueError(f"{where}: needs inputs X, Wcodes, Wscales")
    if ir.DataType.INT32 in (node.inputs[1].dtype, node.inputs[2].dtype):
        raise ValueError(
            f"{where}: its weights are int32 words (the TensorRT form); the emulation reads "
            "the onnxruntime form's uint8 weights"
        )
    _check_weight_shapes(where, node.inputs[1], node.inputs[2], spec, k)


def _check_weight_shapes(
    where: str, codes: ir.Value, scales: ir.Value, spec: formats.FormatSpec, k: int
) -> None:
    """Wcodes [N, nb*B/2] and Wscales [N, nb, S] must match in_features (when shapes are known)."""
    nb = -(-k // spec.block_size)
    expected = {
        "Wcodes": (codes, (nb * spec.block_size // 2,)),
        "Wscales": (scales, (nb, spec.scales_per_block)),
    }
    for label, (value, tail) in expected.items():
        shape = value.shape
        if shape is None or any(not isinstance(d, int) for d in shape):
            continue
        if len(shape) != len(tail) + 1 or tuple(shape[1:]) != tail:
            raise ValueError(
                f"{where}: {label} has shape {list(shape)}, expected [N, "
                f"{', '.join(map(str, tail))}] for {spec.name} with in_features={k}"
            )


def _check_opset(model: ir.Model) -> None:
    version = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if version is None or version < MIN_OPSET:
        raise ValueError(
            f"the emulation needs default-domain opset >= {MIN_OPSET} (BitwiseAnd), the model "
            f"imports opset {version}; convert it first (onnx.version_converter)"
        )


def _amx_nodes(graph_like: ir.Graph | ir.Function) -> list[ir.Node]:
    nodes = ir.traversal.RecursiveGraphIterator(graph_like)
    return [node for node in nodes if node.domain == contract.DOMAIN]


class _Prefixes:
    """Unique ``<node>/emul`` name prefixes, clear of every name already in the model.

    Two amx nodes may share a name (or have none), and a graph may already hold an earlier
    emulation's names.
    """

    def __init__(self, graph: ir.Graph):
        self.taken: set[str] = set()
        for name in ir.convenience.create_value_mapping(graph):
            self._take(name)
        for node in ir.traversal.RecursiveGraphIterator(graph):
            self._take(node.name or "")

    def _take(self, name: str) -> None:
        parts = name.split("/")
        self.taken.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))

    def new(self, node: ir.Node, index: int) -> str:
        base = f"{node.name or f'amx_{node.op_type.lower()}_{index}'}/emul"
        prefix, i = base, 1
        while prefix in self.taken:
            prefix, i = f"{base}_{i}", i + 1
        self._take(prefix)
        return prefix


class EmulatePass(ir.passes.InPlacePass):
    """Lower every amx.MatMul / amx.Quantize (main graph and subgraphs) to standard ONNX ops.

    The model must import the default domain at opset >= 18. Afterwards no amx node is left
    and the "amx" opset import is removed. ``lowered`` lists the names of the nodes replaced
    by the last call.
    """

    def __init__(self):
        super().__init__()
        self.lowered: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.lowered = []
        for function in model.functions.values():
            if _amx_nodes(function):
                raise NotImplementedError(
                    f"amx nodes inside the model function {function.name!r} are not emulated"
                )
        nodes = _amx_nodes(model.graph)
        if not nodes:
            stale = model.opset_imports.pop(contract.DOMAIN, None) is not None
            return ir.passes.PassResult(model, modified=stale)
        _check_opset(model)
        for node in nodes:
            _check_node(node)
        constants, prefixes = _Constants(model.graph), _Prefixes(model.graph)
        for index, node in enumerate(nodes):
            self._lower(node, _Emitter(prefixes.new(node, index), constants))
        model.opset_imports.pop(contract.DOMAIN, None)
        return ir.passes.PassResult(model, modified=True)

    def _lower(self, node: ir.Node, em: _Emitter) -> None:
        """Put the emulation of ``node`` in its place; its output keeps name, type and users."""
        output = LOWERINGS[node.op_type](em, node)
        dtype = _x_dtype(node)
        if dtype is not None:  # typed outputs let the next amx node skip run-time casts
            output.dtype = dtype
        ir.convenience.replace_nodes_and_values(
            node.graph, node, [node], list(em.nodes), [node.outputs[0]], [output]
        )
        self.lowered.append(node.name)
