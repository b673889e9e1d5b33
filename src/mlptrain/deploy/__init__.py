"""Models out of mlptrain: export (ONNX, torch.export), the ONNX model run by
onnxruntime without torch, and prediction of image files. Knows no training or CLI."""
