"""Angle-conditioned generation: the condition contract shared by training, export and GenerateService
(no torch here — the service runs on ONNX Runtime or Triton)."""
