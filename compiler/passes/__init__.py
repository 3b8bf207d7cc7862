"""Graph passes on the ONNX form of a `TracedModel`: precision changes today, fusion next."""
