"""DivideByRootPass: RMSNorm in the form onnxruntime fuses.

torch exports ``x * torch.rsqrt(mean(x^2) + eps)`` as ``Mul(x, Reciprocal(Sqrt(...)))``;
onnxruntime's session-time fusion to ``SimplifiedLayerNormalization`` only matches
``Div(x, Sqrt(...))``, so our exports ran each RMSNorm as seven small nodes (two per layer,
~120 of the ~1,900 nodes of a SmolLM2 decode step). The rewrite is standard ONNX, so every
runtime still reads it; ``x / s`` rounds once where ``x * (1 / s)`` rounds twice, and neither
is bit-equal to torch's rsqrt, so the reference comparison is unchanged in kind.
"""

from __future__ import annotations

import onnx_ir as ir


def _is_onnx(node: ir.Node, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in ("", "ai.onnx")


class DivideByRootPass(ir.passes.InPlacePass):
    """``Mul(a, Reciprocal(Sqrt(b)))`` -> ``Div(a, Sqrt(b))``, where the Reciprocal feeds
    only such Muls (either input order)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(model.graph):
            if not _is_onnx(node, "Reciprocal"):
                continue
            root = node.inputs[0]
            if root is None or root.producer() is None or not _is_onnx(root.producer(), "Sqrt"):
                continue
            inverse = node.outputs[0]
            if inverse.is_graph_output():
                continue
            users = [user for user, _ in inverse.uses()]
            if not users or any(user.op_type != "Mul" or len(user.inputs) != 2 for user in users):
                continue
            for mul in users:
                other = mul.inputs[1] if mul.inputs[0] is inverse else mul.inputs[0]
                product = mul.outputs[0]
                div = ir.node("Div", [other, root], name=f"{mul.name}_div" if mul.name else None)
                model.graph.insert_before(mul, div)
                quotient = div.outputs[0]
                quotient.shape, quotient.type = product.shape, product.type
                ir.convenience.replace_all_uses_with(product, quotient, replace_graph_outputs=True)
                name, product.name = product.name, None
                model.graph.remove(mul, safe=True)
                quotient.name = name
            model.graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
