"""Hugging Face folders other than decoder LMs (encoders, vision and speech models), exported by optimum.

optimum's exporters (``optimum-onnx``) pin transformers < 4.58 and cannot share chipfit's environment
(transformers 5), so they run in an environment of their own (`ENVIRONMENT`, made by ``chipfit toolchain install
optimum``), across the same file boundary as isolated backends (`compiler.isolated.handoff`): the folder's path
and the task go in, the ONNX graph, the processor's arrays and transformers' reference outputs come back as
files; nothing is pickled either way.

Before anything runs there, chipfit checks the folder here: config, safetensors weights (pickles refused), the
task (`tasks.resolve_task`), the processor files the task needs. The graph it gets back is checked against
transformers' outputs on the same inputs and weights (`reference_check`), its non-batch dims fixed to what the
processor makes (text: a sequence length, images: the processor's size, audio: a clip length), and it enters the
pipeline as any ONNX graph does. The user's samples (a text file of sentences, a folder of images or of WAV files)
are turned into the model's inputs by the same processor (`ExportedInputs`). Exports are cached by the folder's
digest, the task, the fixed sizes and the environment's packages.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx

from compiler.cache_dir import default_cache_dir
from compiler.errors import LoadError, UsageError
from compiler.frontend.optimum.tasks import AUDIO, IMAGE, IMAGE_TEXT, TEXT, ResolvedTask, resolve_task
from compiler.isolated.environment import Environment, EnvironmentState, inspect_environment
from compiler.isolated.handoff import run_isolated, write_request
from targets.files import digest_path, sha256_file
from targets.model import ExportRecord, TracedModel
from targets.signature import TensorSpec, apply_overrides, dim_bindings

ENVIRONMENT = Environment(
    name="optimum",
    torch="2.13.0",
    # the resolver's choices for optimum-onnx 0.1.0 (which pins optimum~=2.1.0, transformers<4.58), pinned; its
    # exporter needs onnxruntime to fix dynamic axes, Pillow for image processors
    requirements=("optimum-onnx==0.1.0", "optimum==2.1.0", "transformers==4.57.6", "tokenizers==0.22.2",
                  "safetensors==0.8.0", "huggingface-hub==0.36.2", "onnx==1.23.2", "onnxruntime==1.32.0",
                  "numpy==2.4.6", "pillow==13.0.0"),
    check="from optimum.exporters.onnx import main_export",
    reported=("optimum-onnx", "optimum", "transformers", "torch", "onnx"),
)
EXPORTER = Path(__file__).resolve().parent / "exporter.py"
EXPORT_TIMEOUT_S = 1800.0
DEFAULT_SEQUENCE_LENGTH = 128
AUDIO_SECONDS = 1.0
#: what the graph must match transformers to, on the reference inputs (fp32 both: only op order differs)
REFERENCE_COSINE = 0.9999
#: the inputs chipfit hands the processor when the user gives none (verification; int8 calibration without
#: --calibration says it used them)
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A chip runs the model within its energy budget.",
    "Calibration samples should look like the data the model sees in use.",
    "Tokenizers split text into pieces the model has a vector for.",
    "Release engineers gate every build on its measured accuracy.",
    "The board reads sixteen gigabytes per second from its memory.",
    "Hello world!",
    "Python's standard library ships with every interpreter.",
)
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
              "sentencepiece.bpe.model")
#: per modality, the processor files a folder needs: one of each group
PROCESSOR_FILES = {TEXT: (_TOKENIZER,), IMAGE: (("preprocessor_config.json",),),
                   AUDIO: (("preprocessor_config.json",),), IMAGE_TEXT: (("preprocessor_config.json",), _TOKENIZER)}
SAMPLE_KINDS = {TEXT: "a .txt file, one sentence per line", IMAGE: "a folder of PNG/JPEG images",
                AUDIO: "a folder of PCM .wav files",
                IMAGE_TEXT: "a folder of PNG/JPEG images and one .txt file, line i the text paired with image i"}


class ExportError(LoadError):
    """optimum could not export the folder, or its graph does not compute what transformers does."""


def optimum_state() -> EnvironmentState:
    """The optimum environment as installed, or a `UsageError` saying how to make it."""
    state = inspect_environment(ENVIRONMENT)
    if not state.complete:
        raise UsageError(f"exporting a Hugging Face model other than a decoder LM runs optimum in its own environment, "
                         f"which is not ready at {state.path} ({'; '.join(state.problems)}): run `chipfit toolchain "
                         "install optimum` (about a minute, registry wheels only)")
    return state


def _check_processor(folder: Path, task: ResolvedTask) -> None:
    for names in PROCESSOR_FILES[task.modality]:
        if any((folder / n).is_file() for n in names):
            continue
        raise UsageError(f"{folder}: no {' or '.join(names[:2])}: a {task.name} model's {task.modality} inputs are made "
                         "by its processor, saved beside it (`AutoProcessor.from_pretrained(...).save_pretrained(DIR)`, "
                         "or the tokenizer / image processor / feature extractor alone)")


def _sequence_length(config: Mapping, overrides: Iterable[TensorSpec]) -> int:
    for spec in overrides:
        if spec.name in ("input_ids", "attention_mask", "token_type_ids") and isinstance(spec.shape[-1], int):
            return int(spec.shape[-1])
    limit = int(config.get("max_position_embeddings") or (config.get("text_config") or {}).get(
        "max_position_embeddings") or DEFAULT_SEQUENCE_LENGTH)
    return min(DEFAULT_SEQUENCE_LENGTH, limit)


def write_reference_inputs(folder: Path, modality: str) -> Path:
    """The sentences, images or clips chipfit verifies an exported model on when the user gives no samples."""
    folder.mkdir(parents=True, exist_ok=True)
    if modality == TEXT:
        path = folder / "sentences.txt"
        path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
        return path
    if modality == IMAGE_TEXT:
        write_reference_inputs(folder, IMAGE)
        (folder / "texts.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
        return folder
    if modality == IMAGE:
        from PIL import Image

        from compiler.vlm.images import fixed_images

        images = [array for _, array in fixed_images()]
        rng = np.random.default_rng(0)
        grid = np.linspace(0, 255, 64, dtype=np.float32)
        images += [np.stack([np.add.outer(grid, grid * k) % 256] * 3, -1).astype(np.uint8) for k in (0.5, 1.0, 2.0)]
        images += [rng.integers(0, 256, (48 + 16 * i, 64, 3), dtype=np.uint8) for i in range(3)]
        for i, array in enumerate(images):
            Image.fromarray(array).save(folder / f"{i:02d}.png")
        return folder
    import wave

    rate = 16000
    t = np.arange(int(rate * AUDIO_SECONDS)) / rate
    clips = [np.sin(2 * np.pi * f * t) * 0.5 for f in (220.0, 440.0, 880.0)]
    clips.append(np.sin(2 * np.pi * (200 + 1800 * t) * t) * 0.4)  # a chirp
    clips.append(np.random.default_rng(0).normal(0, 0.2, len(t)))
    for i, clip in enumerate(clips):
        with wave.open(str(folder / f"{i:02d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes((np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes())
    return folder


@dataclass(frozen=True)
class ExportedInputs:
    """Turns a user's sample files into an exported model's inputs with the model's own processor (in the optimum
    environment): the `preprocess` hook of the `TracedModel` (`calibration.readers.load_samples` calls it)."""

    folder: str
    task: str
    modality: str
    trust_remote_code: bool
    sequence_length: int
    input_names: tuple[str, ...]

    def __call__(self, path: Path) -> tuple[dict[str, np.ndarray], str]:
        path = Path(path)
        self._check_kind(path)
        state = optimum_state()
        with tempfile.TemporaryDirectory(prefix="chipfit-processor-") as scratch:
            work = Path(scratch)
            write_request(work, self._request("samples", path))
            run_isolated(state, EXPORTER, work, EXPORT_TIMEOUT_S, f"{self.folder}'s processor on {path}", ExportError)
            with np.load(work / "samples.npz", allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        return arrays, f"{path} (the model's {self.modality} processor)"

    def _check_kind(self, path: Path) -> None:
        from calibration.images import IMAGE_SUFFIXES

        suffixes = [p.suffix.lower() for p in path.iterdir()] if path.is_dir() else []
        images = bool(set(suffixes) & set(IMAGE_SUFFIXES))
        kind = (TEXT if path.is_file() and path.suffix == ".txt" else
                IMAGE_TEXT if images and self.modality == IMAGE_TEXT and ".txt" in suffixes else IMAGE if images else
                AUDIO if ".wav" in suffixes else "")
        if kind == IMAGE_TEXT and suffixes.count(".txt") != 1:
            raise UsageError(f"{path}: holds {suffixes.count('.txt')} .txt files; a {self.task} model's samples are "
                             "images and one text file, line i the text paired with image i")
        if kind != self.modality:
            given = {TEXT: "a text file", IMAGE: "a folder of images", AUDIO: "a folder of WAV files",
                     IMAGE_TEXT: "a folder of images with a text file"}.get(kind, "neither")
            raise UsageError(f"{path}: a {self.task} model takes {self.modality} ({SAMPLE_KINDS[self.modality]}, or a "
                             f".npz of its inputs {', '.join(self.input_names)}); this is {given}")

    def _request(self, mode: str, inputs: Path) -> dict:
        return {"mode": mode, "model_dir": self.folder, "task": self.task, "modality": self.modality,
                "trust_remote_code": self.trust_remote_code, "sequence_length": self.sequence_length,
                "audio_seconds": AUDIO_SECONDS, "inputs": str(inputs), "input_names": list(self.input_names)}


def load_exported(folder: Path, task: str | None = None, overrides: Iterable[TensorSpec] = (),
                  trust_remote_code: bool = False) -> TracedModel:
    """The folder exported by optimum for its task, as a `TracedModel` checked against transformers."""
    from compiler.frontend.huggingface import read_config, safetensors_files

    folder = folder.resolve()
    overrides = list(overrides)
    config = read_config(folder)
    if "auto_map" in config and not trust_remote_code:
        raise UsageError(f"{folder}/config.json: the model ships its own Python code (auto_map), which runs only if "
                         "you pass --trust-remote-code (recorded in the manifest); read that code first")
    safetensors_files(folder)
    resolved = resolve_task(config, folder, task)
    _check_processor(folder, resolved)
    state = optimum_state()
    inputs = ExportedInputs(str(folder), resolved.name, resolved.modality, trust_remote_code,
                            _sequence_length(config, overrides), ())
    digest = digest_path(folder)
    key = hashlib.sha256(json.dumps({
        "folder": digest, "task": resolved.name, "sequence_length": inputs.sequence_length,
        "audio_seconds": AUDIO_SECONDS, "remote": trust_remote_code, "packages": state.packages_digest(),
        "exporter": sha256_file(EXPORTER)}, sort_keys=True).encode()).hexdigest()
    work = _export(state, inputs, key)
    status = json.loads((work / "status.json").read_text())
    graph = onnx.load(str(work / status["graph"]))
    graph = onnx.shape_inference.infer_shapes(graph)
    with np.load(work / status["samples"], allow_pickle=False) as data:
        samples = {k: data[k] for k in data.files}
    with np.load(work / status["reference"], allow_pickle=False) as data:
        expected = {k: data[k] for k in data.files}
    from compiler.frontend.onnx_file import fix_dims, onnx_reference, signature_from_onnx

    exported = signature_from_onnx(graph)
    fixed = _fixed_dims(exported, samples)
    fix_dims(graph, fixed)
    signature = apply_overrides(signature_from_onnx(graph), overrides, str(folder))
    fix_dims(graph, dim_bindings(signature_from_onnx(graph), signature))
    graph = onnx.shape_inference.infer_shapes(graph)
    reference = onnx_reference(graph)
    check = reference_check(reference({k: samples[k] for k in samples}), expected, str(folder))
    record = ExportRecord(
        exporter="optimum-onnx", task=resolved.name, task_from=resolved.how, modality=resolved.modality,
        environment={p: state.packages.get(p, "missing") for p in ENVIRONMENT.reported},
        processor=status["processor"], inputs=tuple(t.name for t in signature.inputs),
        fixed_dims=dict(fixed), reference_check=check,
        integer_ranges={k: (int(v.min()), int(v.max())) for k, v in samples.items() if v.dtype.kind in "iu"})
    return TracedModel(
        name=folder.name, source=str(folder), source_kind="huggingface", source_digest=key,
        signature=signature, onnx_model=graph, reference=reference,
        samples={k: samples[k] for k in (t.name for t in signature.inputs)},
        export=record, preprocess=replace(inputs, input_names=record.inputs))


def _export_folder(key: str) -> Path:
    return default_cache_dir() / "exports" / key[:32]


def exported_graph(model: TracedModel) -> Path:
    """optimum's graph for ``model`` (loaded by `load_exported`) as optimum wrote it, in the export cache: what a
    benchmark's peers start from."""
    folder = _export_folder(model.source_digest)
    return folder / json.loads((folder / "status.json").read_text())["graph"]


def _export(state: EnvironmentState, inputs: ExportedInputs, key: str) -> Path:
    """The export's folder in the cache (graph, processor arrays, reference outputs), made now if missing;
    whole or not at all."""
    cache = _export_folder(key)
    if (cache / "status.json").is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
    try:
        references = write_reference_inputs(scratch / "reference-inputs", inputs.modality)
        write_request(scratch, inputs._request("export", references))
        run_isolated(state, EXPORTER, scratch, EXPORT_TIMEOUT_S, f"optimum's export of {inputs.folder} for "
                     f"{inputs.task}", ExportError)
        shutil.rmtree(cache, ignore_errors=True)
        scratch.replace(cache)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cache


def _fixed_dims(signature, samples: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Every symbolic dim but the batch bound to the size the processor made (a sequence length, an image size)."""
    fixed: dict[str, int] = {}
    for spec in signature.inputs:
        if spec.name not in samples:
            continue
        for dim, size in zip(spec.shape, samples[spec.name].shape):
            if isinstance(dim, str) and "batch" not in dim:
                fixed[dim] = int(size)
    return fixed


def reference_check(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], where: str) -> dict:
    """The exported graph's outputs against transformers' on the same inputs; an `ExportError` where they differ."""
    outputs = {}
    for name, want in expected.items():
        have = np.asarray(got[name], dtype=np.float64).ravel()
        want = np.asarray(want, dtype=np.float64).ravel()
        if have.shape != want.shape:
            raise ExportError(f"{where}: the exported graph's {name} has {have.size} values, transformers' "
                              f"{want.size}")
        norm = float(np.linalg.norm(have) * np.linalg.norm(want))
        cosine = float(have @ want / norm) if norm else 1.0
        outputs[name] = {"cosine": round(cosine, 7), "max_abs_diff": float(np.max(np.abs(have - want)))}
        if not math.isfinite(cosine) or cosine < REFERENCE_COSINE:
            raise ExportError(f"{where}: the exported graph's {name} differs from transformers' on the same inputs "
                              f"(cosine {cosine:.6f} < {REFERENCE_COSINE}): optimum's export is wrong for this model")
    if not outputs:
        raise ExportError(f"{where}: transformers' outputs share no name with the exported graph's "
                          f"({', '.join(got)}): nothing to check the export against")
    return {"against": "transformers", "samples": len(next(iter(expected.values()))), "outputs": outputs}


__all__ = ["ENVIRONMENT", "ExportError", "ExportedInputs", "exported_graph", "load_exported", "optimum_state",
           "write_reference_inputs"]
