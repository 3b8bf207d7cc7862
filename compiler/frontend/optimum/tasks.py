"""Which export task a Hugging Face folder is, read from its ``config.json`` in chipfit's own environment.

optimum cannot infer a task from a local folder ("Cannot infer the task from a local directory yet"), so chipfit
reads it from the architecture class the config names, through transformers' own auto mappings (one table per
task), and checks it before anything runs in the exporter's environment. A class the tables do not place (a base
``BertModel`` is feature extraction; a config with no ``architectures``) is resolved by ``--task``, and the error
names the tasks the model type has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from compiler.errors import UsageError

TEXT, IMAGE, AUDIO = "text", "image", "audio"
IMAGE_TEXT = "image+text"  # a dual encoder's: images and the sentences paired with them


@dataclass(frozen=True)
class Task:
    """An export task chipfit builds as one graph: optimum's name for it and the inputs a person has for it."""

    name: str  # optimum's task name
    mapping: str  # transformers' auto mapping that places an architecture in this task
    modality: str = ""  # what the model's processor takes; "" where it follows the model type
    #: why the task is not built yet (several graphs: the multi-part kind); "" where it is
    refused: str = ""


TASKS = (
    Task("text-classification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", TEXT),
    Task("token-classification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", TEXT),
    Task("question-answering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", TEXT),
    Task("fill-mask", "MODEL_FOR_MASKED_LM_MAPPING_NAMES", TEXT),
    Task("image-classification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", IMAGE),
    Task("object-detection", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES", IMAGE),
    Task("semantic-segmentation", "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES", IMAGE),
    Task("depth-estimation", "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES", IMAGE),
    Task("audio-classification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", AUDIO),
    # CTC speech recognisers (wav2vec2, HuBERT) are one graph: audio in, per-frame logits out
    Task("automatic-speech-recognition", "MODEL_FOR_CTC_MAPPING_NAMES", AUDIO),
    Task("feature-extraction", "MODEL_MAPPING_NAMES"),
    Task("automatic-speech-recognition", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", AUDIO,
         refused="an encoder-decoder speech model (Whisper-style) exports as an encoder and a decoder with its cache, "
                 "which chipfit builds as a multi-part model: not yet"),
    # a dual encoder (CLIP-style): one graph taking images and texts, each sample an image and its sentence
    Task("zero-shot-image-classification", "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES", IMAGE_TEXT),
    Task("text2text-generation", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", TEXT,
         refused="an encoder-decoder text model exports as several graphs with a cache: not built yet"),
)
#: model types whose processor takes images or audio, for the tasks (feature extraction) that do not say
_MODALITY_MAPPINGS = ((IMAGE, ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_IMAGE_MAPPING_NAMES")),
                      (AUDIO, ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_CTC_MAPPING_NAMES")))


@dataclass(frozen=True)
class ResolvedTask:
    name: str
    modality: str
    how: str  # "config.json architectures: BertForSequenceClassification" or "--task"


def _mapping(name: str) -> Mapping[str, Any]:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, name, {})


def _classes(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _modality(task: Task, model_type: str) -> str:
    if task.modality:
        return task.modality
    for modality, mappings in _MODALITY_MAPPINGS:
        if any(model_type in _mapping(m) for m in mappings):
            return modality
    return TEXT


def tasks_of(model_type: str) -> list[Task]:
    """The tasks transformers has a class for, for this model type."""
    return [t for t in TASKS if model_type in _mapping(t.mapping)]


def resolve_task(config: Mapping[str, Any], folder: Path, asked: str | None) -> ResolvedTask:
    """The task to export ``folder`` for: ``asked`` (``--task``) if given, else the one its architecture names."""
    model_type = config.get("model_type", "")
    archs = list(config.get("architectures") or [])
    candidates = tasks_of(model_type)
    names = sorted({t.name for t in TASKS})
    if asked:
        chosen = [t for t in TASKS if t.name == asked]
        if not chosen:
            raise UsageError(f"--task {asked}: not a task chipfit exports; tasks: {', '.join(names)}")
        fitting = [t for t in chosen if model_type in _mapping(t.mapping)] or chosen
        task, how = fitting[0], "--task"
        if candidates and not any(t.name == asked for t in candidates):
            raise UsageError(f"--task {asked}: transformers has no {asked} class for model_type {model_type!r}; "
                             f"its tasks: {', '.join(sorted({t.name for t in candidates}))}")
    else:
        placed = [t for t in TASKS if archs and any(archs[0] in _classes(c) for c in _mapping(t.mapping).values())]
        if len(placed) > 1:  # a class that is also its type's base class (CLIPModel) is its specific task
            placed = [t for t in placed if t.name != "feature-extraction"]
        if len({t.name for t in placed}) != 1:
            found = (f"its architectures {archs} place it in {sorted({t.name for t in placed})}" if placed else
                     f"its architectures {archs or '(none in config.json)'} name no task chipfit knows")
            listed = ", ".join(sorted({t.name for t in candidates})) or ", ".join(names)
            raise UsageError(f"{folder}/config.json: cannot tell which task to export model_type {model_type!r} for: "
                             f"{found}. Pass --task, one of: {listed}")
        task, how = placed[0], f"config.json architectures: {archs[0]}"
    if task.refused:
        raise UsageError(f"{folder}: {task.name} ({archs[0] if archs else model_type}): {task.refused}. chipfit "
                         "exports single-graph tasks: " + ", ".join(sorted({t.name for t in TASKS if not t.refused})))
    return ResolvedTask(task.name, _modality(task, model_type), how)
