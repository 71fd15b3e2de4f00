"""Graph passes that turn a full-precision ONNX model into an AMXFP4 model (onnx_ir)."""
