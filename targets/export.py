"""How a model folder became the graph chipfit built: the exporter, the task and the check against its framework.

A Hugging Face encoder, vision or speech model is exported by optimum in its own environment
(`compiler.frontend.optimum`); its artifacts' manifests carry this record, so a release engineer can see which
exporter and versions made the graph, which inputs the model's processor makes, and how closely the graph matched
transformers on the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class ExportRecord:
    exporter: str  # "optimum-onnx"
    task: str  # optimum's task name, e.g. "text-classification"
    task_from: str  # "config.json architectures: BertForSequenceClassification" or "--task"
    modality: str  # what the processor takes: "text", "image" or "audio"
    environment: Mapping[str, str]  # the exporter environment's reported packages -> versions
    processor: Mapping[str, Any] = field(default_factory=dict)  # processor file name -> its settings
    inputs: tuple[str, ...] = ()  # the graph's input names, as the processor makes them
    fixed_dims: Mapping[str, int] = field(default_factory=dict)  # symbolic dims bound to the processor's sizes
    #: the exported graph against transformers on the reference inputs: per output cosine and max abs difference
    reference_check: Mapping[str, Any] = field(default_factory=dict)
    #: integer inputs (token ids, masks, token types): the smallest and largest value the processor made, for
    #: inputs made up where no sample is at hand (profiling); a random id past the vocabulary crashes the graph
    integer_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
