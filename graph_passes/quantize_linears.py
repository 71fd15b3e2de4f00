"""QuantizeLinearsPass: pack every linear layer's weight offline and call amx.MatMul.

For each layer found by ``linear_layers``: W is quantized along K with
``amx_export.formats`` into [N, K]-major codes and scales (FORMAT.md packed layout), which
become initializers; the MatMul / Gemm (and a folded bias Add) is replaced by one
``amx.MatMul(X, Wcodes, Wscales[, bias])`` producing the same output value. The original
weight is dropped as soon as nothing else uses it, so at most one layer's float weight is in
memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from amx_export import formats

from . import contract
from .linear_layers import LinearLayer, Skipped, find_linear_layers


@dataclass
class LayerRecord:
    """What happened to one linear layer (for the summary and --report)."""

    name: str
    weight: str
    k: int
    n: int
    status: str  # "quantized" or "skipped"
    reason: str = ""
    bytes_before: int = 0
    bytes_after: int = 0


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def _unique_name(graph: ir.Graph, base: str) -> str:
    name, i = base, 1
    while name in graph.initializers:
        name, i = f"{base}_{i}", i + 1
    return name


def _drop_if_unused(graph: ir.Graph, nodes: list[ir.Node], source: ir.Value) -> None:
    """Remove the weight's Transpose/Cast chain and initializer once nothing uses them."""
    for node in reversed(nodes):
        if all(not out.uses() and not out.is_graph_output() for out in node.outputs):
            graph.remove(node, safe=True)
    if not source.uses() and not source.is_graph_output() and source.is_initializer():
        tensor = source.const_value
        graph.initializers.pop(source.name)
        release = getattr(tensor, "release", None)
        if release is not None:  # unmap external data now, not at garbage collection
            release()


class QuantizeLinearsPass(ir.passes.InPlacePass):
    """Replace linear layers by amx.MatMul with offline-packed weights.

    Args:
        weight_format: format of the packed weights (an ``amx_export.formats`` name).
        act_format: format the activations are fake-quantized to, or "none" (weight-only).
        exclude: regular expressions; a layer whose node or weight name matches is skipped.
        include_head: also quantize the language-model head (skipped by default).
        progress: wraps the iterable of layers (e.g. a progress bar); identity by default.
    """

    def __init__(
        self,
        weight_format: str = formats.DEFAULT,
        act_format: str = formats.DEFAULT,
        exclude: Iterable[str] = (),
        include_head: bool = False,
        progress: Callable[[list[LinearLayer]], Iterable[LinearLayer]] | None = None,
    ):
        super().__init__()
        self.spec = formats.get(weight_format)
        self.act_format = (
            act_format if act_format == contract.NO_ACT else formats.get(act_format).name
        )
        self.exclude = list(exclude)
        self.include_head = include_head
        self.progress = progress or (lambda layers: layers)
        self.records: list[LayerRecord] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        layers, skipped = find_linear_layers(graph, self.exclude, self.include_head)
        self.records = [self._skipped_record(s) for s in skipped]
        for layer in self.progress(layers):
            self.records.append(self._replace(graph, layer))
        if layers:
            model.opset_imports[contract.DOMAIN] = contract.VERSION
        return ir.passes.PassResult(model, modified=bool(layers))

    @staticmethod
    def _skipped_record(skipped: Skipped) -> LayerRecord:
        return LayerRecord(skipped.name, "", 0, 0, "skipped", skipped.reason)

    def _pack(self, graph: ir.Graph, layer: LinearLayer):
        """Codes and scales initializers (shared when two layers use one weight)."""
        base = f"{layer.weight_name}.{self.spec.name}"
        codes_name, scales_name = f"{base}.codes", f"{base}.scales"
        if codes_name in graph.initializers and layer.alpha == 1.0:
            codes, scales = graph.initializers[codes_name], graph.initializers[scales_name]
            return codes, scales, codes.meta.get("amx_tensor_scale")
        q = formats.quantize(layer.weight_nk(), self.spec)
        codes = _initializer(graph, _unique_name(graph, codes_name), q.codes)
        scales = _initializer(graph, _unique_name(graph, scales_name), q.scales)
        tensor_scale = None if q.tensor_scale is None else float(q.tensor_scale)
        codes.meta["amx_tensor_scale"] = tensor_scale
        return codes, scales, tensor_scale

    def _replace(self, graph: ir.Graph, layer: LinearLayer) -> LayerRecord:
        codes, scales, tensor_scale = self._pack(graph, layer)
        inputs = [layer.x, codes, scales]
        new_nodes: list[ir.Node] = []
        if layer.transpose_x:
            transpose = ir.node("Transpose", [layer.x], {"perm": [1, 0]}, name=f"{layer.name}/x_T")
            new_nodes.append(transpose)
            inputs[0] = transpose.outputs[0]
        if layer.bias is not None:
            bias = layer.bias_value
            if bias is None:
                name = _unique_name(graph, f"{layer.name}.bias")
                bias = _initializer(graph, name, np.ascontiguousarray(layer.bias))
            inputs.append(bias)
        attributes = {
            "weight_format": self.spec.name,
            "act_format": self.act_format,
            "in_features": layer.k,
        }
        if tensor_scale is not None:
            attributes["weight_tensor_scale"] = tensor_scale
        matmul = ir.node(
            contract.MATMUL, inputs, attributes, domain=contract.DOMAIN, name=layer.name
        )
        new_nodes.append(matmul)
        output = matmul.outputs[0]
        output.type, output.shape = layer.output.type, layer.output.shape
        old_nodes = [layer.node] + ([layer.bias_add] if layer.bias_add is not None else [])
        ir.convenience.replace_nodes_and_values(
            graph, layer.node, old_nodes, new_nodes, [layer.output], [output]
        )
        _drop_if_unused(graph, layer.weight_chain, layer.weight_source)
        if layer.bias_add is not None:
            for value in layer.bias_add.inputs:  # a bias initializer copied into a new one
                if value is not None and value.is_initializer() and not value.uses():
                    graph.initializers.pop(value.name)
        return LayerRecord(
            layer.name, layer.weight_name, layer.k, layer.n, "quantized",
            bytes_before=layer.stored_bytes,
            bytes_after=codes.const_value.nbytes + scales.const_value.nbytes,
        )  # fmt: skip
