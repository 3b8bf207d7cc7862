"""The optimum front end: tiny BERT, ViT and wav2vec2 folders made here (random weights, transformers 5) exported by
optimum in its own environment (transformers 4.57), checked against transformers, and built through the one
pipeline for host and x86-64-avx2, int8 calibrated from sentences / images / WAV files through the model's own
processor; bad folders, tasks and samples refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.build import BuildOptions, build
from compiler.errors import UsageError
from compiler.frontend import load_model
from compiler.frontend.optimum import write_reference_inputs
from compiler.frontend.optimum.synthetic import hf_folder
from compiler.frontend.optimum.tasks import resolve_task
from targets.manifest import read_artifact
from targets.model import TracedModel


def _chipfit(*args):
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: hf_folder(root / f"tiny-{kind}", kind) for kind in ("bert", "vit", "wav2vec2", "clip")}


@pytest.fixture(scope="session")
def user_inputs(tmp_path_factory):
    """Sentences, images and clips as a user has them (not arrays)."""
    root = tmp_path_factory.mktemp("inputs")
    sentences = root / "sentences.txt"
    sentences.write_text("\n".join(f"line {i}: the model reads this sentence about chips and boards." for i in range(12)))
    return {"text": sentences, "image": write_reference_inputs(root / "images", "image"),
            "audio": write_reference_inputs(root / "clips", "audio"),
            "image+text": write_reference_inputs(root / "captioned", "image+text")}


def test_bert_builds_for_two_targets_int8_from_sentences(folders, user_inputs, tmp_path):
    model = load_model(folders["bert"])
    assert isinstance(model, TracedModel) and model.export.task == "text-classification"
    assert model.export.task_from == "config.json architectures: BertForSequenceClassification"
    # dims fixed to what the tokenizer pads to; the batch stays the runtime's
    assert [t.shape for t in model.signature.inputs] == [("batch_size", 128)] * 3
    assert model.export.reference_check["outputs"]["logits"]["cosine"] >= 0.9999
    # one backend: racing them is the pipeline's, tested elsewhere
    results = build(model, BuildOptions(["host", "x86-64-avx2"], tmp_path, precision="int8", backend="onnxruntime",
                                        calibration=str(user_inputs["text"])))
    assert results and all(r.ok for r in results), [(r.target, r.backend, r.message) for r in results]
    manifest = read_artifact(tmp_path / "tiny-bert" / "x86-64-avx2").manifest
    assert manifest.export.environment["transformers"].startswith("4.57")
    assert manifest.export.environment["optimum-onnx"] == "0.1.0"
    assert manifest.export.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert "tokenizer_config.json" in manifest.export.processor
    assert manifest.calibration.origin.endswith("(the model's text processor)") and manifest.calibration.samples == 12
    assert manifest.numerics.status == "verified"


def test_vit_int8_from_an_image_folder_and_fp32_on_another_target(folders, user_inputs, tmp_path):
    out = tmp_path / "out"
    done = _chipfit("build", str(folders["vit"]), "-t", "host", "-t", "x86-64-avx2", "--precision", "int8",
                    "--calibration", str(user_inputs["image"]), "-o", str(out), "--backend", "onnxruntime", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    assert {r["target"] for r in results} == {"host", "x86-64-avx2"} and all(r["numerics"]["status"] == "verified"
                                                                              for r in results)
    manifest = read_artifact(out / "tiny-vit" / "host").manifest
    assert manifest.export.task == "image-classification" and manifest.export.fixed_dims == {
        "num_channels": 3, "height": 32, "width": 32}
    assert manifest.export.processor["preprocessor_config.json"]["size"] == {"height": 32, "width": 32}
    shown = _chipfit("inspect", str(out / "tiny-vit" / "host")).stdout
    assert "export:    optimum-onnx for image-classification (config.json architectures: ViTForImageClassification)" \
        in shown and "checked against transformers on 8 reference inputs: logits cos 1.000000" in shown
    fp32 = build(load_model(folders["vit"]), BuildOptions(["x86-64-avx2"], tmp_path / "fp32", precision="fp32",
                                                          backend="onnxruntime"))
    assert fp32[0].ok and fp32[0].numerics.status == "verified"


def test_speech_ctc_model_verified_from_wav_files(folders, user_inputs, tmp_path):
    model = load_model(folders["wav2vec2"])
    assert model.export.task == "automatic-speech-recognition" and model.export.modality == "audio"
    (result,) = build(model, BuildOptions(["host"], tmp_path, precision="fp32", backend="onnxruntime",
                                          samples=str(user_inputs["audio"])))
    assert result.ok and result.numerics.status == "verified"
    assert result.numerics.inputs == f"5 samples from {user_inputs['audio']}"


def test_dual_encoder_from_images_paired_with_sentences(folders, user_inputs, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = load_model(folders["clip"])
    assert model.export.task == "zero-shot-image-classification" and model.export.modality == "image+text"
    checked = model.export.reference_check["outputs"]
    assert {"logits_per_image", "text_embeds", "image_embeds"} <= set(checked)
    results = build(model, BuildOptions(["host", "x86-64-avx2"], tmp_path / "fp32", precision="fp32",
                                        backend="onnxruntime", samples=str(user_inputs["image+text"])))
    assert all(r.ok for r in results) and len(results) == 2
    # int8: the text tower's attention masks (finfo.min added to scores, and sums of two) stay float; quantized,
    # their infinite scale wiped out the text embeddings (cosine -0.2 against float)
    (int8,) = build(model, BuildOptions(["host"], tmp_path / "int8", precision="int8", backend="onnxruntime",
                                        calibration=str(user_inputs["image+text"])))
    graph = onnx.load(str(next((tmp_path / "int8" / "tiny-clip").glob("host*")) / "model.onnx"))
    scales = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    assert all(np.isfinite(scales[n.input[1]]).all() and scales[n.input[1]].max() < 1e4
               for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[1] in scales)
    cosines = {o.output: o.cosine for o in int8.numerics.outputs}
    assert cosines["text_embeds"] > 0.99 and cosines["image_embeds"] > 0.99, cosines


def test_a_second_load_reuses_the_export(folders, monkeypatch):
    import compiler.frontend.optimum as optimum

    load_model(folders["bert"])

    def no_run(*args, **kwargs):
        raise AssertionError("the optimum environment ran again for an export in the cache")

    monkeypatch.setattr(optimum, "run_isolated", no_run)
    assert load_model(folders["bert"]).export.task == "text-classification"


def test_task_refusals_name_the_candidates_and_the_flag(folders, tmp_path):
    config = json.loads((folders["bert"] / "config.json").read_text())
    base = {k: v for k, v in config.items() if k != "architectures"}
    with pytest.raises(UsageError, match=r"cannot tell which task.*Pass --task, one of: .*feature-extraction.*"
                                         r"text-classification"):
        resolve_task(base, tmp_path, None)
    assert resolve_task(base, tmp_path, "feature-extraction").modality == "text"
    with pytest.raises(UsageError, match="--task image-classification: transformers has no image-classification "
                                         "class for model_type 'bert'"):
        resolve_task(base, tmp_path, "image-classification")
    whisper = {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"]}
    with pytest.raises(UsageError, match="encoder-decoder speech model .* multi-part model: not yet"):
        resolve_task(whisper, tmp_path, None)


def test_bad_folders_and_samples_exit_2_before_work(folders, user_inputs, tmp_path):
    import shutil

    no_processor = tmp_path / "vit-no-processor"
    shutil.copytree(folders["vit"], no_processor)
    (no_processor / "preprocessor_config.json").unlink()
    done = _chipfit("build", str(no_processor), "-t", "host", "-o", str(tmp_path / "out"))
    assert done.returncode == 2 and "no preprocessor_config.json" in done.stderr, done.stderr[-2000:]
    # an image folder for a text model: named, with what the model takes
    done = _chipfit("build", str(folders["bert"]), "-t", "host", "--precision", "int8", "--calibration",
                    str(user_inputs["image"]), "-o", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "a text-classification model takes text (a .txt file, one sentence per line" in done.stderr
    assert "this is a folder of images" in done.stderr
    assert not (tmp_path / "out" / "tiny-bert").exists()
    done = _chipfit("build", str(folders["bert"]), "-t", "host", "--task", "fill-mask-typo", "-o", str(tmp_path / "o"))
    assert done.returncode == 2 and "--task fill-mask-typo: not a task chipfit exports" in done.stderr


def test_a_release_builds_and_profiles_an_exported_folder(folders, user_inputs, tmp_path):
    release = tmp_path / "release.toml"
    release.write_text(f'''name = "encoders"
targets = ["x86-64-avx2"]

[[model]]
name = "bert"
path = "{folders['bert']}"
backend = "onnxruntime"
precision = "int8"
calibration = "{user_inputs['text']}"

[profile]
runs = 20
budget_s = 1.0
''')
    done = _chipfit("release", str(release), "-o", str(tmp_path / "dist"))
    assert done.returncode == 0, done.stderr[-3000:]
    index = json.loads((tmp_path / "dist" / "index.json").read_text())
    (cell,) = index["cells"]
    assert cell["status"] == "built"
    # the profile timed made-up inputs inside the processor's ranges (a token type past 1 crashed the graph)
    profile = json.loads((tmp_path / "dist" / "bert" / "int8" / "x86-64-avx2" / "profile.json").read_text())
    assert profile["latency_method"].startswith("measured") and profile["latency_ms_p50"] > 0
