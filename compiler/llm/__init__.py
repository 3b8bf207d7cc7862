"""Decoder language models: their static-cache form, verification by generation, and a synthetic model for tests.

The model type itself (`targets.model.DecoderModel`) lives in the bottom layer, beside `TracedModel`.
"""
