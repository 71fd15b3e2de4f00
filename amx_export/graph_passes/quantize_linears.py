"""QuantizeLinearsPass: pack every linear layer's weight offline and call amx.MatMul.

For each layer found by ``linear_layers`` (main graph and If / Loop / Scan bodies): W is
quantized along K with ``amx_export.formats`` into [N, K]-major codes and scales (FORMAT.md
packed layout), which become main-graph initializers (subgraphs read them from the outer
scope); the MatMul / Gemm (and a folded bias Add) is replaced by one
``amx.MatMul(X, Wcodes, Wscales[, bias])`` producing the same output value.

Packed weights are keyed by what is packed: the [N, K] matrix itself (its bytes, shape and
dtype, alpha applied) and the format. Layers that use the same matrix (a tied or shared
projection, both branches of a merged decoder) share one packed copy; one initializer read
in two orientations (``W`` and ``Transpose(W)``) is two matrices and gets two. The original
weight is dropped as soon as nothing else uses it, so at most one layer's float weight is in
memory at a time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from amx_export import formats

from . import contract
from .linear_layers import (
    LinearLayer,
    ModelFacts,
    Skipped,
    fused_weights,
    is_linear_op,
    match_linear,
    where,
)
from .names import ModelNames


@dataclass
class LayerRecord:
    """What happened to one linear layer (for the summary and --report)."""

    name: str
    weight: str
    k: int
    n: int
    status: str  # "quantized" or "skipped"
    reason: str = ""
    bytes_before: int = 0  # the float weight, counted for the first layer that reads it
    bytes_after: int = 0  # the packed weight, counted for the layer that made it
    shares: str = ""  # the layer whose packed weight this one reuses


@dataclass
class _Packed:
    codes: ir.Value
    scales: ir.Value
    tensor_scale: float | None
    layer: str  # the layer it was made for


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(
        name=name,
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        shape=ir.Shape(array.shape),
        const_value=ir.tensor(array, name=name),
    )
    graph.register_initializer(value)
    return value


def _drop_if_unused(nodes: list[ir.Node], source: ir.Value) -> bool:
    """Remove the weight's Transpose/Cast chain and initializer once nothing uses them."""
    for node in reversed(nodes):
        if all(not out.uses() and not out.is_graph_output() for out in node.outputs):
            node.graph.remove(node, safe=True)
    if source.uses() or source.is_graph_output() or not source.is_initializer():
        return False
    tensor = source.const_value
    source.graph.initializers.pop(source.name)
    release = getattr(tensor, "release", None)
    if release is not None:  # unmap external data now, not at garbage collection
        release()
    return True


def _content_key(w: np.ndarray, fmt: str) -> tuple:
    return (hashlib.sha1(w.tobytes()).hexdigest(), w.shape, w.dtype.str, fmt)


class QuantizeLinearsPass(ir.passes.InPlacePass):
    """Replace linear layers by amx.MatMul with offline-packed weights.

    Args:
        weight_format: format of the packed weights (an ``amx_export.formats`` name).
        act_format: format the activations are fake-quantized to, or "none" (weight-only).
        exclude: regular expressions; a layer whose node or weight name matches is skipped.
        include_head: also quantize the language-model head (skipped by default).
        progress: wraps the iterable of candidate nodes (e.g. a progress bar).
    """

    def __init__(
        self,
        weight_format: str = formats.DEFAULT,
        act_format: str = formats.DEFAULT,
        exclude: Iterable[str] = (),
        include_head: bool = False,
        progress: Callable[[list[ir.Node]], Iterable[ir.Node]] | None = None,
    ):
        super().__init__()
        self.spec = formats.get(weight_format)
        self.act_format = (
            act_format if act_format == contract.NO_ACT else formats.get(act_format).name
        )
        self.exclude = [re.compile(p) for p in exclude]
        self.include_head = include_head
        self.progress = progress or (lambda nodes: nodes)
        self.records: list[LayerRecord] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        facts, self.names = ModelFacts(model), ModelNames(model)
        self.main = model.graph
        self.packed: dict[tuple, _Packed] = {}
        self.sources_seen: set[int] = set()
        self.records = self._in_functions(model)
        candidates = []
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if is_linear_op(node):
                candidates.append(node)
            elif (fused := fused_weights(node)) is not None:
                self.records.append(self._skipped(where(node, facts), fused.reason, fused.weight))
        quantized = 0
        for node in self.progress(candidates):
            # matched now, not up front: an earlier replacement may have changed its inputs
            match = match_linear(node)
            if match is None:
                continue
            label = where(node, facts)
            if isinstance(match, Skipped):
                self.records.append(self._skipped(label, match.reason, match.weight))
                continue
            reason = self._reason_to_skip(match, facts)
            if reason is not None:
                self.records.append(self._skipped(label, reason, match.weight_name))
                continue
            self.records.append(self._replace(match, label))
            quantized += 1
        if quantized:
            model.opset_imports[contract.DOMAIN] = contract.VERSION
        return ir.passes.PassResult(model, modified=bool(quantized))

    def _reason_to_skip(self, layer: LinearLayer, facts: ModelFacts) -> str | None:
        names = (layer.name, layer.weight_name)
        hit = next((p.pattern for p in self.exclude if any(p.search(s) for s in names)), None)
        if hit is not None:
            return f"excluded by --exclude {hit!r}"
        return None if self.include_head else facts.head_reason(layer)

    @staticmethod
    def _skipped(name: str, reason: str, weight: str = "") -> LayerRecord:
        return LayerRecord(name, weight, 0, 0, "skipped", reason)

    def _in_functions(self, model: ir.Model) -> list[LayerRecord]:
        """Linears inside model-local functions are reported: their weights are function
        inputs or constants of every call site, which this pass does not specialize."""
        return [
            self._skipped(
                f"{function.name}: {node.name or node.op_type}",
                f"inside the model-local function {function.name!r} (not rewritten)",
            )
            for function in model.functions.values()
            for node in ir.traversal.RecursiveGraphIterator(function)
            if is_linear_op(node)
        ]

    def _pack(self, layer: LinearLayer, label: str) -> tuple[_Packed, bool]:
        """The packed weight of ``layer`` and whether it was made now (else shared)."""
        w = layer.weight_nk()
        key = _content_key(w, self.spec.name)
        if key in self.packed:
            return self.packed[key], False
        q = formats.quantize(w, self.spec)
        del w
        base = f"{layer.weight_name}.{self.spec.name}"
        codes_name, scales_name = self.names.fresh_group(base, (".codes", ".scales"))
        codes = _initializer(self.main, codes_name, q.codes)
        scales = _initializer(self.main, scales_name, q.scales)
        tensor_scale = None if q.tensor_scale is None else float(q.tensor_scale)
        self.packed[key] = _Packed(codes, scales, tensor_scale, label)
        return self.packed[key], True

    def _bias(self, layer: LinearLayer) -> ir.Value:
        if layer.bias_value is not None:
            return layer.bias_value
        name = self.names.fresh(f"{layer.name}.bias")
        return _initializer(self.main, name, np.ascontiguousarray(layer.bias))

    def _addend(self, layer: LinearLayer, y: ir.Value, new_nodes: list[ir.Node]) -> ir.Value:
        """Gemm's beta * C where C is not one value per column: an Add after the layer."""
        c = layer.addend
        if layer.addend_scale != 1.0:
            found = c.const_value if c.is_initializer() else None
            if found is not None:
                scaled = found.numpy() * found.numpy().dtype.type(layer.addend_scale)
                c = _initializer(self.main, self.names.fresh(f"{layer.name}.beta_C"), scaled)
            else:
                beta = np.asarray(layer.addend_scale, dtype=(c.dtype or ir.DataType.FLOAT).numpy())
                beta = _initializer(self.main, self.names.fresh(f"{layer.name}.beta"), beta)
                mul = ir.node("Mul", [c, beta], name=f"{layer.name}/beta_C")
                new_nodes.append(mul)
                c = mul.outputs[0]
        add = ir.node("Add", [y, c], name=f"{layer.name}/C")
        new_nodes.append(add)
        return add.outputs[0]

    def _replace(self, layer: LinearLayer, label: str) -> LayerRecord:
        graph = layer.node.graph
        packed, made = self._pack(layer, label)
        inputs = [layer.x, packed.codes, packed.scales]
        new_nodes: list[ir.Node] = []
        if layer.transpose_x:
            rank = len(layer.x.shape) if layer.x.shape is not None else 2
            perm = [*range(rank - 2), rank - 1, rank - 2]
            transpose = ir.node("Transpose", [layer.x], {"perm": perm}, name=f"{layer.name}/x_T")
            new_nodes.append(transpose)
            inputs[0] = transpose.outputs[0]
        if layer.bias is not None:
            inputs.append(self._bias(layer))
        attributes = {
            "weight_format": self.spec.name,
            "act_format": self.act_format,
            "in_features": layer.k,
        }
        if packed.tensor_scale is not None:
            attributes["weight_tensor_scale"] = packed.tensor_scale
        matmul = ir.node(
            contract.MATMUL, inputs, attributes, domain=contract.DOMAIN, name=layer.name
        )
        new_nodes.append(matmul)
        output = matmul.outputs[0]
        if layer.addend is not None:
            output.type = layer.output.type
            output = self._addend(layer, output, new_nodes)
        output.type, output.shape = layer.output.type, layer.output.shape
        old_nodes = [layer.node] + ([layer.bias_add] if layer.bias_add is not None else [])
        ir.convenience.replace_nodes_and_values(
            graph, layer.node, old_nodes, new_nodes, [layer.output], [output]
        )
        first_read = id(layer.weight_source) not in self.sources_seen
        self.sources_seen.add(id(layer.weight_source))
        stored = layer.stored_bytes if first_read else 0
        _drop_if_unused(layer.weight_chain, layer.weight_source)
        if layer.bias_add is not None:
            for value in layer.bias_add.inputs:  # a bias initializer copied into a new one
                if value is not None and value.is_initializer() and not value.uses():
                    value.graph.initializers.pop(value.name)
        return LayerRecord(
            label, layer.weight_name, layer.k, layer.n, "quantized",
            bytes_before=stored,
            bytes_after=(packed.codes.const_value.nbytes + packed.scales.const_value.nbytes)
            if made else 0,
            shares="" if made else packed.layer,
        )  # fmt: skip
