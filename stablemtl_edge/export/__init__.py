"""torch -> ONNX components, parity verification, fp16, manifest, TensorRT engine building."""
