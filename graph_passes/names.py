"""Fresh value names for what a pass adds to a model.

A name must be new in the whole model, subgraphs included: a subgraph that reads a main-graph
initializer by name would otherwise see its own value of that name instead (ONNX scoping).
"""

from __future__ import annotations

import onnx_ir as ir


class ModelNames:
    """The value names a model uses, and new ones that are clear of them."""

    def __init__(self, model: ir.Model):
        self.taken = set(ir.convenience.create_value_mapping(model.graph))
        for graph in (model.graph, *model.graph.subgraphs()):
            self.taken.update(graph.initializers)

    def fresh(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``, ... whichever is free first (then taken)."""
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name
