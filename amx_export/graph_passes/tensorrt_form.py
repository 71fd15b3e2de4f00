"""TensorRTFormPass: write a model's amx nodes in the TensorRT form (contract.py).

TensorRT takes no uint8 plugin inputs or constants: its ONNX parser widens every uint8
initializer to int32 element by element, four times the memory. So the packed weights travel
as int32 initializers holding the same bytes (Wcodes [N, nb*B/8], Wscales flattened and
zero-padded to [ceil(N*nb*S/4)]), and every amx node gets plugin_namespace="amx" and
plugin_version="1", which makes TensorRT >= 10.15 import it as our plugin before its built-in
MatMul importer. libamx_ort.so runs either form, so the converted model still runs in
onnxruntime with the same results.

External data: each weight is read (memory-mapped), copied into int32 words and released
before the next, as QuantizeLinearsPass does; the caller writes the model out again.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from amx_export import formats

from . import contract

_WORD = np.dtype("<i4")  # contract.WORD_BYTES little-endian bytes, whatever the host order


def tensorrt_codes(codes: np.ndarray) -> np.ndarray:
    """uint8 Wcodes [N, nb*B/2] -> int32 [N, nb*B/8], the same bytes."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2 or codes.shape[1] % contract.WORD_BYTES:
        raise ValueError(f"Wcodes must be [N, a multiple of 4] bytes, got {list(codes.shape)}")
    return codes.view(_WORD)


def tensorrt_scales(scales: np.ndarray) -> np.ndarray:
    """uint8 Wscales [N, nb, S] -> int32 [ceil(N*nb*S/4)], the same bytes then zero bytes."""
    flat = np.ascontiguousarray(scales, dtype=np.uint8).reshape(-1)
    words = np.zeros(-(-flat.size // contract.WORD_BYTES), _WORD)
    words.view(np.uint8)[: flat.size] = flat
    return words


WEIGHT_INPUTS = {"Wcodes": 1, "Wscales": 2}  # amx.MatMul input index of each
CONVERT = {"Wcodes": tensorrt_codes, "Wscales": tensorrt_scales}


def _amx_nodes(model: ir.Model) -> list[ir.Node]:
    nodes = ir.traversal.RecursiveGraphIterator(model.graph)
    return [node for node in nodes if node.domain == contract.DOMAIN]


class TensorRTFormPass(ir.passes.InPlacePass):
    """Int32-packed weights, plugin attributes and the target metadata on every amx node.

    Idempotent: weights already in int32 words (shapes checked) and attributes already set are
    left alone, so a model in the TensorRT form comes back unmodified. A model without amx
    nodes is not touched either.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        nodes = _amx_nodes(model)
        modified = False
        for node in nodes:
            for name, value in contract.PLUGIN_ATTRIBUTES.items():
                attribute = node.attributes.get(name)
                if attribute is None or attribute.value != value:
                    node.attributes[name] = ir.AttrString(name, value)
                    modified = True
            if node.op_type == contract.MATMUL:
                modified |= self._convert_weights(node)
        if nodes and model.metadata_props.get(contract.TARGET_KEY) != contract.TENSORRT:
            model.metadata_props[contract.TARGET_KEY] = contract.TENSORRT
            modified = True
        return ir.passes.PassResult(model, modified)

    def _convert_weights(self, node: ir.Node) -> bool:
        where = f"amx.MatMul node {node.name!r}"
        if len(node.inputs) < 3 or node.inputs[1] is None or node.inputs[2] is None:
            raise ValueError(f"{where}: needs inputs X, Wcodes, Wscales")
        spec = formats.get(node.attributes["weight_format"].value)
        k = node.attributes["in_features"].value
        n = _tensor(where, "Wcodes", node.inputs[1]).shape[0]
        changed = False
        for label, forms in _weight_forms(n, k, spec).items():
            value = node.inputs[WEIGHT_INPUTS[label]]
            tensor = _tensor(where, label, value)
            found = (tensor.dtype.numpy().name, tuple(tensor.shape))
            if found == forms[contract.TENSORRT]:
                continue  # already converted (or shared with a node converted before)
            if found != forms[contract.ONNXRUNTIME]:
                raise ValueError(
                    f"{where}: {label} is {found[0]} {list(found[1])}, expected "
                    + " or ".join(f"{d} {list(s)}" for d, s in forms.values())
                    + f" for {spec.name} with in_features={k}"
                )
            _only_weight_uses(where, label, value)
            # a copy: the words must outlive the memory-mapped external data released below
            _replace(value, CONVERT[label](np.array(tensor.numpy())))
            changed = True
        return changed


def _weight_forms(n: int, k: int, spec: formats.FormatSpec) -> dict[str, dict[str, tuple]]:
    """{"Wcodes" / "Wscales": {target: (numpy dtype name, shape)}} for an [N, K] weight."""
    b, s = spec.block_size, spec.scales_per_block
    return {
        "Wcodes": {
            t: (contract.WEIGHT_DTYPE[t], contract.wcodes_shape(n, k, b, t))
            for t in contract.TARGETS
        },
        "Wscales": {
            t: (contract.WEIGHT_DTYPE[t], contract.wscales_shape(n, k, b, s, t))
            for t in contract.TARGETS
        },
    }


def _tensor(where: str, label: str, value: ir.Value) -> ir.TensorProtocol:
    if value.const_value is None or not value.is_initializer():
        raise ValueError(f"{where}: {label} ({value.name}) is not an initializer")
    return value.const_value


def _only_weight_uses(where: str, label: str, value: ir.Value) -> None:
    """The initializer changes in place, so every user must be an amx.MatMul weight input."""
    for user, i in value.uses():
        if (user.domain, user.op_type, i) != (
            contract.DOMAIN,
            contract.MATMUL,
            WEIGHT_INPUTS[label],
        ):
            raise ValueError(
                f"{where}: {label} ({value.name}) also feeds {user.op_type} node {user.name!r}, "
                "which would not read int32 words"
            )


def _replace(value: ir.Value, words: np.ndarray) -> None:
    old = value.const_value
    value.const_value = ir.tensor(words, name=value.name)
    value.type = ir.TensorType(ir.DataType.INT32)
    value.shape = ir.Shape(words.shape)
    release = getattr(old, "release", None)
    if release is not None:  # unmap external data now, not at garbage collection
        release()
