"""InferShapesPass: ONNX shape inference merged back graph by graph.

onnx_ir's ShapeInferencePass (1.1) matches inferred values to the model's by name over the
whole model, subgraphs included, so when two subgraphs use the same names (both branches of
Optimum's merged decoder do) one branch gets the other's shapes: the no-past branch of
decoder_model_merged.onnx was given a rank-5 shape for its o_proj input. The passes read
ranks from these shapes (bias folding, attention), so this pass matches each graph with its
own inferred twin only. onnx's data propagation (which turns computed shape tensors into
static dimensions) mixes such subgraphs up as well, even in onnx 1.23, so it only runs on
models without subgraphs. Inference is non-strict: it passes over custom-domain nodes.
"""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils  # strips initializer data for large models

logger = logging.getLogger(__name__)


class InferShapesPass(ir.passes.InPlacePass):
    """Fill in value shapes and dtypes from onnx.shape_inference (model left as is if it fails)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        data_prop = next(iter(model.graph.subgraphs()), None) is None

        def infer(proto: onnx.ModelProto) -> onnx.ModelProto:
            return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=data_prop)

        try:
            inferred = ir.serde.deserialize_model(_c_api_utils.call_onnx_api(infer, model))
        except Exception as error:  # inference is a help, not a requirement
            logger.info("shape inference failed (%s); shapes left as they were", error)
            return ir.passes.PassResult(model, modified=False)
        modified = False
        for graph, twin in zip(model.graphs(), inferred.graphs(), strict=True):
            found = ir.convenience.create_value_mapping(twin, include_subgraphs=False)
            for name, value in ir.convenience.create_value_mapping(
                graph, include_subgraphs=False
            ).items():
                other = found.get(name)
                if other is None:
                    continue
                if other.shape is not None and value.shape != other.shape:
                    value.shape, modified = other.shape, True
                if other.dtype is not None and value.dtype != other.dtype:
                    value.dtype, modified = other.dtype, True
        return ir.passes.PassResult(model, modified=modified)
