"""Run inside the optimum environment (``python -I child.py exporter.py FOLDER``): standard library, optimum,
transformers, torch, numpy and Pillow only; nothing of chipfit (it is not installed there).

Two requests:

* ``export``: optimum's ``main_export`` writes the folder's ONNX graph for the task into ``export/``; the model's
  own processor turns the reference inputs (``inputs``: sentences, images or WAV files chipfit wrote) into arrays,
  saved as ``samples.npz``, and transformers' model for the task runs on them: its outputs, named as the ONNX
  graph's outputs, are ``reference.npz`` (chipfit checks the graph against them).
* ``samples``: the processor turns a user's files into the graph's inputs, ``samples.npz``.

Hugging Face's hub is never asked for anything (offline); the folder's own Python code runs only where chipfit
passes ``trust_remote_code`` (the user's flag).
"""

import json
import os
import wave
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def main(request, folder):
    import numpy as np

    folder = Path(folder)
    model_dir = request["model_dir"]
    result = {}
    if request["mode"] == "export":
        from optimum.exporters.onnx import main_export

        out = folder / "export"
        main_export(model_dir, output=out, task=request["task"], do_validation=False, no_post_process=True,
                    trust_remote_code=request["trust_remote_code"], opset=request.get("opset"))
        graphs = sorted(p.name for p in out.glob("*.onnx"))
        if len(graphs) != 1:
            raise RuntimeError(f"optimum wrote {len(graphs)} graphs ({', '.join(graphs)}) for {request['task']}; "
                               "chipfit builds this task as one graph")
        result.update(graph=f"export/{graphs[0]}", files=sorted(p.name for p in out.iterdir()))
        import onnx

        graph = onnx.load(str(out / graphs[0]), load_external_data=False).graph
        weights = {t.name for t in graph.initializer}
        request = dict(request, input_names=[i.name for i in graph.input if i.name not in weights],
                       output_names=[o.name for o in graph.output])
    arrays = _process(request, model_dir, np)
    np.savez(folder / "samples.npz", **arrays)
    result.update(samples="samples.npz", shapes={k: list(v.shape) for k, v in arrays.items()},
                  processor=_processor_record(model_dir))
    if request["mode"] == "export":
        np.savez(folder / "reference.npz", **_reference(request, model_dir, arrays, np))
        result.update(reference="reference.npz")
    import optimum.version
    import transformers

    result.update(versions={"transformers": transformers.__version__, "optimum": optimum.version.__version__})
    return result


def _process(request, model_dir, np):
    """The processor's arrays for the files named in the request, keyed by input name (graph inputs only)."""
    kind, path, names = request["modality"], Path(request["inputs"]), set(request["input_names"])
    if kind == "text":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        encoded = _tokenizer(model_dir)(lines, padding="max_length", truncation=True,
                                        max_length=request["sequence_length"], return_tensors="np")
        arrays = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
    elif kind == "image":
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(model_dir)
        arrays = {k: np.asarray(v, dtype=np.float32)
                  for k, v in processor(images=_images(path), return_tensors="np").items()}
    elif kind == "image+text":
        # image i with line i of the folder's text file (lines repeat where there are fewer): one sample each
        from transformers import AutoImageProcessor

        images = _images(path)
        (text_file,) = sorted(path.glob("*.txt"))
        lines = [line.strip() for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = [lines[i % len(lines)] for i in range(len(images))]
        encoded = _tokenizer(model_dir)(texts, padding="max_length", truncation=True,
                                        max_length=request["sequence_length"], return_tensors="np")
        arrays = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
        pixels = AutoImageProcessor.from_pretrained(model_dir)(images=images, return_tensors="np")
        arrays.update({k: np.asarray(v, dtype=np.float32) for k, v in pixels.items()})
    elif kind == "audio":
        from transformers import AutoFeatureExtractor

        extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        rate = int(extractor.sampling_rate)
        clips = [_read_wav(p, rate, np) for p in sorted(path.glob("*.wav"))]
        length = int(request["audio_seconds"] * rate)
        encoded = extractor(clips, sampling_rate=rate, padding="max_length", max_length=length, truncation=True,
                            return_tensors="np", return_attention_mask="attention_mask" in names)
        arrays = {k: np.asarray(v, dtype=np.int64 if k == "attention_mask" else np.float32) for k, v in encoded.items()}
    else:
        raise ValueError(f"unknown modality {kind!r}")
    kept = {k: v for k, v in arrays.items() if k in names}
    missing = sorted(names - set(kept))
    if missing:
        raise RuntimeError(f"the model's processor made {sorted(arrays)}, not the graph's input(s) {missing}")
    return kept


def _images(path):
    from PIL import Image

    images = []
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        with Image.open(file) as image:
            images.append(image.convert("RGB"))
    return images


def _tokenizer(model_dir):
    """The folder's tokenizer; one saved by a newer transformers (a class this one lacks) is read from its
    tokenizer.json with the special tokens its tokenizer_config.json names."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (ValueError, OSError, KeyError):
        file = Path(model_dir) / "tokenizer.json"
        if not file.is_file():
            raise
        config_file = Path(model_dir) / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        special = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
        return PreTrainedTokenizerFast(tokenizer_file=str(file), **special)


def _read_wav(path, rate, np):
    """A PCM WAV file as mono float32 at ``rate`` Hz (linear resampling where the file's rate differs)."""
    with wave.open(str(path), "rb") as w:
        width, channels, source_rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width not in (1, 2, 4):
        raise ValueError(f"{path}: {8 * width}-bit samples; give 8-, 16- or 32-bit PCM WAV files")
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    samples = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    samples = (samples - 128.0) / 128.0 if width == 1 else samples / float(np.iinfo(dtype).max)
    samples = samples.reshape(-1, channels).mean(axis=1)
    if source_rate != rate and len(samples):
        times = np.arange(int(len(samples) * rate / source_rate)) / rate
        samples = np.interp(times, np.arange(len(samples)) / source_rate, samples).astype(np.float32)
    return samples


def _processor_record(model_dir):
    """The processor's settings as the folder holds them (file name -> its JSON), for the manifest."""
    record = {}
    for name in ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json"):
        file = Path(model_dir) / name
        if file.is_file():
            record[name] = json.loads(file.read_text())
    return record


def _reference(request, model_dir, arrays, np):
    """transformers' outputs for the task on ``arrays``, under the ONNX graph's output names it has."""
    import torch
    from optimum.exporters.tasks import TasksManager

    model = TasksManager.get_model_from_task(request["task"], model_dir, framework="pt",
                                             trust_remote_code=request["trust_remote_code"])
    model.eval()
    with torch.no_grad():
        outputs = model(**{k: torch.from_numpy(v) for k, v in arrays.items()})
    wanted = set(request["output_names"])
    return {k: v.detach().numpy() for k, v in outputs.items() if k in wanted and isinstance(v, torch.Tensor)}
