"""Vision-language models: tiny Qwen2.5-VL and Gemma 3 built here (random weights) through the one pipeline into
llama.cpp's text + mmproj GGUF pair, verified from drawn images, run by llama.cpp's own multimodal API, and generated
from by ``chipfit generate --image``; bad images and prompts refused before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from compiler.backends.llamacpp import GGUF, MMPROJ, backend
from compiler.build import BuildOptions, build
from compiler.frontend import load_model
from compiler.llm.synthetic import vision_language
from compiler.vlm.families import fit_image, reference_inputs
from compiler.vlm.images import fixed_images
from targets.manifest import read_artifact
from targets.model import VisionLanguageModel


def _chipfit(*args):
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def qwen_vl(tmp_path_factory):
    return vision_language(tmp_path_factory.mktemp("vlm") / "tiny-qwen2.5-vl")


@pytest.fixture(scope="session")
def gemma3_vl(tmp_path_factory):
    return vision_language(tmp_path_factory.mktemp("vlm") / "tiny-gemma3", "gemma3")


def _build_host(folder, out):
    (result,) = build(load_model(folder), BuildOptions(["host"], out, precision="fp32"))
    return result, out / folder.name / "host"


@pytest.fixture(scope="session")
def qwen_vl_host(qwen_vl, tmp_path_factory):
    return _build_host(qwen_vl, tmp_path_factory.mktemp("vlm-build"))


@pytest.fixture(scope="session")
def gemma3_vl_host(gemma3_vl, tmp_path_factory):
    return _build_host(gemma3_vl, tmp_path_factory.mktemp("vlm-build"))


@pytest.fixture(params=["qwen2_5_vl", "gemma3"])
def family_host(request):
    """(family, its folder, its fp32 host build) for each family llama.cpp builds."""
    folder, built = {"qwen2_5_vl": ("qwen_vl", "qwen_vl_host"), "gemma3": ("gemma3_vl", "gemma3_vl_host")}[request.param]
    return request.param, request.getfixturevalue(folder), request.getfixturevalue(built)


def test_a_vlm_folder_is_read_with_its_vision_part(qwen_vl):
    model = load_model(qwen_vl)
    assert isinstance(model, VisionLanguageModel)
    v = model.vision
    assert (v.family, v.layers, v.patch_size, v.merge_size) == ("qwen2_5_vl", 4, 14, 2)
    assert (v.min_image_tokens, v.max_image_tokens) == (4, 64)  # 56x56 .. 224x224 pixels, 28x28 per token
    # the decoder's parameters leave the vision part out; it is counted on its own
    assert v.encoder_parameters > 0 and model.spec.parameters < v.encoder_parameters + model.spec.parameters


def test_a_gemma3_folder_is_read_as_fixed_size_images_of_soft_tokens(gemma3_vl):
    v = load_model(gemma3_vl).vision
    assert (v.family, v.patch_size, v.merge_size, v.min_image_tokens, v.max_image_tokens) == ("gemma3", 14, 4, 16, 16)
    assert v.fixed_size and v.resample == 2  # every image resized to 224x224, bilinear, as Gemma3's processor does


def test_the_build_is_verified_from_images_and_records_its_parts(family_host):
    family, _, (result, path) = family_host
    assert result.status == "verified", result
    m = read_artifact(path).manifest
    assert m.backend.name == "llamacpp" and set(m.files) == {GGUF, MMPROJ}
    vision = m.llm.vision
    assert vision.files == {"decoder": GGUF, "vision": MMPROJ} and vision.encoder_precision == "fp32"
    # Qwen2.5-VL sizes images within the processor's bounds, which mtmd is given; Gemma 3 takes one size
    bounds = {"qwen2_5_vl": (4, 64), "gemma3": (0, 0)}[family]
    assert (vision.runtime_settings["image_min_tokens"], vision.runtime_settings["image_max_tokens"]) == bounds
    images = m.numerics.generation["images"]
    assert images["prompt_tokens_equal"] and images["greedy_equal"] and images["feature_cosine"] > 0.9999
    assert all(case["matched"] == case["tokens"] for case in images["cases"]) and len(images["cases"]) == 5
    assert images["cases"][-1]["images"] == ["disc-7.png", "bars-3.png"]  # two images in one prompt
    # the memory plan counts the mmproj file's weights beside the decoder's
    assert m.llm.memory_plan.weight_bytes >= m.files[MMPROJ].bytes + m.files[GGUF].bytes * 0.9


def test_llama_cpp_s_own_multimodal_api_generates_transformers_tokens(family_host):
    """The pair as an app loads it (llama-cpp-python's mtmd bindings, the helper that evaluates a whole prompt),
    with the settings the manifest names: greedy tokens equal to transformers' on the same weights."""
    _, folder, (_, path) = family_host
    settings = read_artifact(path).manifest.llm.vision.runtime_settings
    model = load_model(folder)
    pixels = fit_image(fixed_images()[0][1], model.vision)
    image = path.parent / "image.npy"
    np.save(image, pixels)
    script = """
import ctypes, json, sys, numpy as np, llama_cpp, llama_cpp.mtmd_cpp as mtmd
text, proj, image, lo, hi, marker = sys.argv[1:7]
llm = llama_cpp.Llama(model_path=text, n_ctx=256, verbose=False)
params = mtmd.mtmd_context_params_default()
params.use_gpu, params.warmup, params.image_min_tokens, params.image_max_tokens = False, False, int(lo), int(hi)
ctx = mtmd.mtmd_init_from_file(proj.encode(), llm.model, params)
px = np.load(image)
bitmap = mtmd.mtmd_bitmap_init(px.shape[1], px.shape[0], (ctypes.c_ubyte * px.size).from_buffer_copy(px.tobytes()))
prompt = mtmd.mtmd_input_text()
raw = (marker.replace("<__media__>", mtmd.mtmd_default_marker().decode()) + " Once upon a time").encode()
prompt.text, prompt.text_len, prompt.add_special, prompt.parse_special = raw, len(raw), False, True
chunks = mtmd.mtmd_input_chunks_init()
assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(prompt), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
past = llama_cpp.llama_pos(0)
assert mtmd.mtmd_helper_eval_chunks(ctx, llm.ctx, chunks, 0, 0, 512, True, ctypes.byref(past)) == 0
tokens = []
for _ in range(8):
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    tokens.append(int(logits.argmax()))
    llama_cpp.llama_decode(llm.ctx, llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(tokens[-1]), 1))
print(json.dumps(tokens))
"""
    done = subprocess.run([str(backend.environment_state().python_exe), "-c", script, str(path / GGUF),
                           str(path / MMPROJ), str(image), str(settings["image_min_tokens"]),
                           str(settings["image_max_tokens"]), settings["image_marker"]], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    produced = json.loads(done.stdout.strip().splitlines()[-1])
    import torch

    inputs, ids = reference_inputs(model, "<image> Once upon a time", [pixels])
    with torch.no_grad():
        out = model.torch_model().generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert produced == out[0, len(ids):].tolist()


def test_int4_decoder_with_fp16_vision_is_judged_by_agreement(qwen_vl, tmp_path):
    (result,) = build(load_model(qwen_vl), BuildOptions(["snapdragon-8gen3"], tmp_path, precision="int4"))
    m = read_artifact(tmp_path / qwen_vl.name / "snapdragon-8gen3").manifest
    assert m.llm.vision.encoder_precision == "fp16" and m.llm.weight_precisions["matmuls"].startswith("int")
    images = m.numerics.generation["images"]
    assert images["prompt_tokens_equal"] and images["feature_cosine"] > 0.999  # the encoder is not quantized
    assert result.status == "verified" and m.numerics.proxy  # a phone's file, run by llama.cpp's CPU backend here
    # the phone cannot be reached: its image figures are the roofline's, labelled
    done = _chipfit("profile", str(tmp_path / qwen_vl.name / "snapdragon-8gen3"), "--json")
    assert done.returncode == 0, done.stderr
    (profile,) = json.loads(done.stdout)["profiles"]
    image = profile["llm"]["image"]
    assert profile["llm"]["method"].startswith("estimated:") and image["tokens"] == 64
    assert image["encode_ms_p50"] > 0 and image["ttft_ms_p50"] > image["encode_ms_p50"] and image["j_per_image"] > 0


def test_generate_streams_from_an_image(qwen_vl_host, tmp_path):
    from PIL import Image

    _, path = qwen_vl_host
    photo = tmp_path / "photo.jpg"  # not at the processor's size: chipfit sizes it as the processor does
    Image.fromarray(fixed_images()[0][1]).resize((301, 170)).save(photo)
    done = _chipfit("generate", str(path), "--image", str(photo), "--prompt", "<image> Once upon a time",
                    "--max-new-tokens", "6", "--ignore-eos")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<image> Once upon a time")
    assert "6 tokens" in done.stderr and "1 image(s), encoded in" in done.stderr


@pytest.mark.parametrize("case, expected", [
    ("not_an_image", "not an image Pillow can read"),
    ("huge", "over chipfit's limit of 40 megapixels"),
    ("missing", "no such file"),
    ("no_placeholder", "it marks 0 image(s) with <image> but 1 image(s) were given"),
    ("two_placeholders", "it marks 2 image(s) with <image> but 1 image(s) were given"),
])
def test_bad_images_and_prompts_are_refused_before_running(qwen_vl_host, tmp_path, case, expected):
    from PIL import Image

    _, path = qwen_vl_host
    image, prompt = tmp_path / "in.png", "<image> Describe it"
    if case == "not_an_image":
        image.write_text("a text file named .png")
    elif case == "huge":
        Image.new("RGB", (8000, 6000)).save(image)  # 48 MP, a few KB as PNG
    elif case == "missing":
        image = tmp_path / "nowhere.png"
    else:
        Image.fromarray(fixed_images()[0][1]).save(image)
        prompt = "Describe it" if case == "no_placeholder" else "<image> and <image>"
    done = _chipfit("generate", str(path), "--image", str(image), "--prompt", prompt)
    assert done.returncode == 2 and expected in done.stderr, done.stderr


def test_a_vlm_folder_without_its_processor_or_room_for_an_image_is_refused(qwen_vl, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(qwen_vl, bare)
    (bare / "preprocessor_config.json").unlink()
    done = _chipfit("build", str(bare), "-t", "host", "-o", str(tmp_path / "out"))
    assert done.returncode == 2 and "no preprocessor_config.json" in done.stderr
    done = _chipfit("build", str(qwen_vl), "-t", "host", "--context", "100", "-o", str(tmp_path / "out"))
    assert done.returncode == 2 and "an image takes up to 64" in done.stderr
    assert not (tmp_path / "out").exists()


def test_profile_measures_image_encode_and_energy_per_image(qwen_vl_host, tmp_path):
    """The real runner, metered by a powercap-format tree whose counter moves by a known amount per image."""
    from profiles.llm import measure_decoder, summarize_measurement
    from profiles.meters import RaplMeter
    from targets.backend import Generation
    from targets.host import detect_host
    from targets.registry import target_registry

    _, path = qwen_vl_host
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("0\n")
    per_image_uj = 30000
    m = read_artifact(path).manifest
    runner = backend.plan_generate(path, m.backend.options, target_registry().get("host"), detect_host()).runner

    class Metered:
        description = "metered"

        def __getattr__(self, name):
            return getattr(runner, name)

        def generate_images(self, prompt, pixels, new_tokens, stop=(), on_token=None) -> Generation:
            g = runner.generate_images(prompt, pixels, new_tokens, stop, on_token)
            (zone / "energy_uj").write_text(f"{int((zone / 'energy_uj').read_text()) + per_image_uj * len(pixels)}\n")
            return g

    summary = summarize_measurement(measure_decoder(Metered(), m.llm, [16], 4, 2, meter=RaplMeter(tmp_path)))
    image = summary["image"]
    assert image["tokens"] == 64 and image["pixels"] == [224, 224]  # the most tokens one image takes
    assert 0 < image["encode_ms_p50"] < image["ttft_ms_p50"]
    assert image["energy"]["j_per_image"] == pytest.approx(per_image_uj / 1e6, rel=1e-9)


def test_plan_counts_the_vision_encoder_and_the_image_tokens(qwen_vl):
    done = _chipfit("plan", str(qwen_vl), "-t", "host", "--precision", "fp32", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["targets"]
    model = load_model(qwen_vl)
    assert row["backend"] == "llamacpp" and row["image_tokens"] == 64
    assert row["vision_encoder_bytes"] == model.vision.encoder_parameters * 4
    assert row["memory_plan"]["weight_bytes"] == model.spec.weight_bytes("fp32") + row["vision_encoder_bytes"]
