"""CleanupPass: what every rewrite ends with.

Drops nodes and initializers nothing uses any more (the original float weights, their
Transpose/Cast chains), opset imports no node needs (the "amx" domain after emulation),
sorts the graph topologically and re-runs ONNX shape inference (non-strict: it passes over
our custom nodes, whose output types the passes set themselves).
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import (
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
    TopologicalSortPass,
)

from .shapes import InferShapesPass


class CleanupPass(ir.passes.InPlacePass):
    """Dead code and opset removal, topological sort, shape inference."""

    def __init__(self, infer_shapes: bool = True):
        super().__init__()
        passes = [RemoveUnusedNodesPass(), RemoveUnusedOpsetsPass(), TopologicalSortPass()]
        if infer_shapes:
            passes.append(InferShapesPass())
        self.manager = ir.passes.PassManager(passes)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return self.manager(model)
