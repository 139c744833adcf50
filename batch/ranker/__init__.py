"""The learned re-ranker: training (torch), ONNX export, int8 quantization, batch scoring."""
