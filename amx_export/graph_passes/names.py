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

    def fresh_group(self, base: str, suffixes: tuple[str, ...]) -> list[str]:
        """``base + s`` for every suffix s, with ``base``, ``base_1``, ... the first base for
        which all of them are free (then taken): ``W.amxfp4_1.codes`` beside ``..._1.scales``."""
        stem, i = base, 1
        while any(stem + s in self.taken for s in suffixes):
            stem, i = f"{base}_{i}", i + 1
        names = [stem + s for s in suffixes]
        self.taken.update(names)
        return names
