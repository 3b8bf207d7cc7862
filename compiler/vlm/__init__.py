"""Vision-language models: the families chipfit reads, the images it verifies on, and verification from images.

The model type itself (`targets.model.VisionLanguageModel`) lives in the bottom layer, beside `DecoderModel`.
"""
