"""Angle models: locator + hip keypoint/classifier model (heatmaps with soft-argmax), the published
direct-regression baseline, screening, evaluation and ONNX export."""
