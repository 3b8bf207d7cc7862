"""llama.cpp backend: a GGUF file written by llama.cpp's own converter and quantizer, run by llama.cpp.

Decoder LMs (``consumes = "huggingface"``), and vision-language models: their decoder as any decoder's, plus the
vision encoder and projector in an ``mmproj`` GGUF (the converter's ``--mmproj``) that llama.cpp's ``mtmd`` library
runs. The toolchain is llama-cpp-python compiled from its source on this machine (`ENVIRONMENT`: ``chipfit
toolchain install llamacpp``, a few minutes once; the wheel is kept for later installs), with llama.cpp's source
tree kept for its converter. Lowering: ``convert_hf_to_gguf.py`` writes F32 or F16 (chipfit's Python, `convert`),
``llama_model_quantize`` makes Q8_0 / Q4_0 / Q4_K_M / ... from the F32 file (`runtime`, the environment's Python),
the GGUF header says what each tensor became, and llama.cpp's tokenizer must split text as transformers does.
Verification and timing generate through `LlamaCppRunner`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, DecoderForm, GenerationPlan, Lowered,
                               LowerJob, NotRunnable, RunPlan, code_fingerprint, host_mismatch, run_threads)
from compiler.backends.llamacpp.options import FIXED_TYPES, SCHEMA
from compiler.errors import LowerError
from compiler.isolated.environment import Environment, EnvironmentState, SourceBuild, clean_env, inspect_environment
from targets.host import HostInfo
from targets.model import TracedModel, VisionLanguageModel
from targets.signature import Signature, TensorSpec
from targets.spec import TargetSpec

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
ENVIRONMENT = Environment(
    name="llamacpp",
    source_builds=(SourceBuild(
        LLAMA_CPP_PYTHON, unpack=True,
        # the CPU backend for this machine's ISA, the library only (llama.cpp's tools and server are not needed)
        build_env=(("CMAKE_ARGS", "-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
                                  "-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"),)),),
    check="import llama_cpp",
    reported=("llama-cpp-python", "numpy"),
)
GGUF = "model.gguf"
MMPROJ = "mmproj.gguf"
#: the attention window (pixels) llama.cpp's Qwen2.5-VL vision graph is written for
QWEN25VL_WINDOW = 112
#: per family, what stands for one image in a prompt handed to mtmd: its media marker, with the text the model's
#: processor writes around an image that mtmd does not add itself (it adds Qwen's vision start/end and Gemma 3's
#: begin/end-of-image tokens, not the blank lines Gemma3Processor puts around them)
MTMD_MARKERS = {"qwen2_5_vl": "<__media__>", "gemma3": "\n\n<__media__>\n\n"}
#: ``--kv-cache`` -> llama.cpp's cache type (both K and V), and its bytes per element (Q8_0: 34 per 32)
CACHE_TYPES = {"fp32": "F32", "fp16": "F16", "int8": "Q8_0"}
CACHE_BYTES = {"F32": 4, "F16": 2, "Q8_0": 34 / 32}
CONVERT_TIMEOUT_S = 3600.0
#: texts llama.cpp's tokenizer must split as transformers does (spaces, digits, punctuation, non-ASCII)
TOKENIZER_CHECKS = ("Once upon a time", "The quick brown fox jumps over the lazy dog.",
                    "  two spaces, 3 digits 123 and\nnew lines\t\ttabs", "naïve café, déjà vu!")


class LlamaCppBackend(BackendBase):
    name = "llamacpp"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    environment = ENVIRONMENT
    capabilities = Capabilities(
        consumes="huggingface", precisions=(), compute_unit="cpu", isolated=True,
        decoder_precisions=("fp32", "fp16", "int8", "int4"),
        # the families whose GGUF generates token for token as transformers does (tests/compiler/backends/
        # test_llamacpp.py); phi3, gemma2 and minicpm3 convert only with a SentencePiece tokenizer.model, and a
        # gemma3_text GGUF parted from transformers' tokens: not claimed until verified
        decoder_families=("llama", "qwen2", "qwen3", "mistral"),
        decoder_kv_caches=tuple(CACHE_TYPES),
        # llama.cpp's Qwen2.5-VL graph assumes the released window of 112 pixels (the mmproj GGUF has no key for
        # it): a checkpoint with another is refused (`_check_vision`)
        vision_language_families=tuple(MTMD_MARKERS))

    def environment_state(self) -> EnvironmentState:
        return inspect_environment(self.environment)

    def _not_ready(self, state: EnvironmentState) -> str:
        return (f"backend {self.name}'s toolchain at {state.path} is not ready ({'; '.join(state.problems)}): run "
                f"`chipfit toolchain install {self.name}` (compiles llama.cpp for this machine, a few minutes once)")

    def check_toolchain(self, target: TargetSpec) -> tuple[str, ...]:
        state = self.environment_state()
        return () if state.complete else (self._not_ready(state),)

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return False

    def versions(self) -> dict[str, str]:
        state = self.environment_state()
        if not state.complete:
            return {"llama-cpp-python": f"not ready: {self._not_ready(state)}"}
        return {"llama-cpp-python": state.packages.get("llama-cpp-python", "missing"),
                "env:llamacpp:python": state.python}

    def fingerprint(self) -> dict[str, str]:
        state = self.environment_state()  # a rebuilt llama.cpp is another toolchain
        return {**code_fingerprint(self),
                "env:llamacpp:packages": state.packages_digest() if state.exists else "not installed"}

    def lower(self, job: LowerJob) -> Lowered:
        raise LowerError("llama.cpp builds decoder LMs (Hugging Face model folders) only, not graphs")

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        raise NotRunnable("a GGUF artifact generates text; it has no graph to run (chipfit generate / profile)")

    def gguf_type(self, precision: str, options: Mapping[str, Any]) -> str:
        return FIXED_TYPES.get(precision) or options["int4_type"]

    def lower_decoder(self, job: LowerJob) -> Lowered:
        state = self.environment_state()
        if not state.complete:
            raise LowerError(self._not_ready(state))
        model, options = job.model, dict(job.options)
        kind = self.gguf_type(job.precision, options)
        threads = _threads(options, job.target, job.host)
        source = state.source("llama-cpp-python") / "vendor" / "llama.cpp"
        out = job.workdir / GGUF
        with tempfile.TemporaryDirectory(prefix="chipfit-gguf-") as scratch:
            floating = kind in ("F32", "F16")
            converted = out if floating else Path(scratch) / "model-f32.gguf"
            notes = _child_chipfit(source, {"op": "convert", "model": str(model.directory), "outfile": str(converted),
                                            "outtype": kind.lower() if floating else "f32"}, scratch)["notes"]
            if not floating:
                done = subprocess.run([str(state.python_exe), str(Path(__file__).with_name("runtime.py")), "quantize",
                                       str(converted), str(out), kind, str(threads)],
                                      capture_output=True, text=True, env=clean_env(), timeout=CONVERT_TIMEOUT_S)
                if done.returncode != 0 or not out.is_file():
                    tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
                    raise LowerError(f"llama.cpp's quantizer could not write {kind}: {' | '.join(tail) or done.returncode}")
            header = _child_chipfit(source, {"op": "describe", "gguf": str(out)}, scratch)
            vision = _lower_vision(model, job, source, scratch) if isinstance(model, VisionLanguageModel) else {}
        precisions = _weight_precisions(header["types"])
        cache_type = CACHE_TYPES[job.request.llm.kv_cache or "fp16"]
        runner = _runner(state, out, min(job.context, 512), threads, cache_type)
        try:
            _check_tokenizer(model, runner)
        finally:
            runner.close()
        files = (GGUF,) + ((MMPROJ,) if vision else ())
        form = DecoderForm(
            cache_form="static", programs=("decoder",), runtime="llama.cpp" + (" (mtmd)" if vision else ""),
            context=job.context,
            kv_bytes_per_element=CACHE_BYTES[cache_type],  # F16 unless --kv-cache asked otherwise
            weight_precisions=precisions, tokenizer_files=(GGUF,), prefill_chunk=512,
            generation={"eos_token_id": list(model.eos_token_ids)}, weight_files=files,
            parts={"decoder": GGUF, "vision": MMPROJ} if vision else {},
            vision_precision=vision.get("precision", ""), vision_settings=vision.get("settings", {}))
        return Lowered(
            files=files, signature=Signature(
                inputs=(TensorSpec("tokens", ("sequence",), "int32"),),
                outputs=(TensorSpec("logits", ("sequence", model.spec.vocab_size), "float32"),)),
            options={**options, "gguf_type": kind, "n_ctx": job.context, "n_batch": 512, "cache_type": cache_type,
                     "tensor_types": header["types"], **({"mmproj": MMPROJ, **vision["settings"]} if vision else {})},
            passes=({"name": "llama.cpp convert_hf_to_gguf", "outtype": "f16" if kind == "F16" else "f32"},)
                   + (() if kind in ("F32", "F16") else ({"name": "llama.cpp llama_model_quantize", "type": kind,
                                                          "tensor_types": header["types"]},))
                   + (({"name": "llama.cpp convert_hf_to_gguf --mmproj", "outtype": vision["outtype"],
                        "file": MMPROJ},) if vision else ()),
            notes=tuple(notes) + (f"the tokenizer is in {GGUF}; llama.cpp split {len(TOKENIZER_CHECKS)} test texts as "
                                  "transformers does",) + tuple(vision.get("notes", ())),
            decoder=form)

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        state = self.environment_state()
        if not state.complete:
            raise NotRunnable(self._not_ready(state))
        threads = _threads(options, target, host)
        vision = None
        if options.get("mmproj"):
            from compiler.backends.llamacpp.runner import VisionPart

            vision = VisionPart(artifact_dir / options["mmproj"], int(options["image_min_tokens"]),
                                int(options["image_max_tokens"]), int(options["image_token_id"]),
                                str(options["image_marker"]), bool(options["add_special"]))
        runner = _runner(state, artifact_dir / GGUF, int(options["n_ctx"]), threads, options.get("cache_type", "F16"),
                         vision)
        mismatch = host_mismatch(target, host)
        if mismatch is None and options.get("device", "cpu") == "cpu":
            return GenerationPlan(runner)
        why = mismatch or f"the target runs it on llama.cpp's {options['device']} backend"
        return GenerationPlan(runner, proxy=True, representative=options.get("device", "cpu") == "cpu",
                              note=f"proxy: the same {GGUF} run by llama.cpp's CPU backend on this host ({why})")


def _threads(options: Mapping[str, Any], target: TargetSpec, host: HostInfo) -> int:
    return run_threads(target, host, int(options.get("threads") or 0))


def _runner(state: EnvironmentState, gguf: Path, context: int, threads: int, cache_type: str = "F16", vision=None):
    from compiler.backends.llamacpp.runner import LlamaCppRunner

    return LlamaCppRunner(state.python_exe, gguf, context, threads, cache_type, vision)


def _check_vision(model: VisionLanguageModel) -> None:
    vision = model.config.get("vision_config") or {}
    window = vision.get("window_size", QWEN25VL_WINDOW)
    if model.vision.family == "qwen2_5_vl" and int(window) != QWEN25VL_WINDOW:
        raise LowerError(f"{model.source}/config.json: vision_config.window_size {window}: llama.cpp's Qwen2.5-VL "
                         f"vision encoder attends in windows of {QWEN25VL_WINDOW} pixels (its mmproj file has no "
                         "setting for another), so its image features would not be this model's; build it with a "
                         "backend that reads the window from the checkpoint")


def _lower_vision(model: VisionLanguageModel, job: LowerJob, source: Path, scratch: str) -> dict[str, Any]:
    """The vision encoder and projector as llama.cpp's converter writes them (``--mmproj``): fp32 for an fp32
    build, else fp16 (vision encoders are not quantized with the decoder: image features lose more than text)."""
    _check_vision(model)
    outtype = "f32" if job.precision == "fp32" else "f16"
    _child_chipfit(source, {"op": "convert", "model": str(model.directory), "outfile": str(job.workdir / MMPROJ),
                            "outtype": outtype, "mmproj": True}, scratch)
    spec = model.vision
    # where the model's processor sizes images within bounds, mtmd is given them (its defaults differ); a
    # fixed-size family's images take one size in both
    bounds = (0, 0) if spec.fixed_size else (spec.min_image_tokens, spec.max_image_tokens)
    # transformers' tokenizer adds its specials (a BOS) to a prompt where it adds them to any text
    adds = list(model.encode("a")) != list(model.tokenizer().encode("a", add_special_tokens=False).ids)
    settings = {"image_min_tokens": bounds[0], "image_max_tokens": bounds[1], "image_token_id": spec.image_token_id,
                "image_marker": MTMD_MARKERS[spec.family], "add_special": adds}
    return {"outtype": outtype, "precision": {"f32": "fp32", "f16": "fp16"}[outtype], "settings": settings,
            "notes": (f"{MMPROJ}: the vision encoder and projector for llama.cpp's mtmd; an application loads it "
                      f"beside {GGUF} (llama-mtmd-cli -m {GGUF} --mmproj {MMPROJ})"
                      + (f" and sets image_min_tokens {bounds[0]} and image_max_tokens {bounds[1]}, the model's "
                         "processor's bounds (llama.cpp's own defaults for the family differ), so images are sized "
                         "as in training" if bounds[0] else "")
                      + f"; a prompt marks an image as {MTMD_MARKERS[spec.family]!r}",
                      "give llama.cpp images already at the size the model's processor gives them, with its filter "
                      "(`chipfit generate --image` resizes them so): "
                      + ("its own resize rounds an image side halfway between two multiples of "
                         f"{spec.patch_size * spec.merge_size} pixels up where transformers rounds to even"
                         if not spec.fixed_size else "its own resize filter is not the processor's"))}


def _child_chipfit(source: Path, request: dict, scratch: str) -> dict:
    """Run `convert` (llama.cpp's converter, or the GGUF reader) in a child of chipfit's own Python."""
    path = Path(scratch) / f"{request['op']}.json"
    result = Path(scratch) / f"{request['op']}-result.json"
    path.write_text(json.dumps({**request, "source": str(source), "result": str(result)}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "NO_LOCAL_GGUF": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "compiler.backends.llamacpp.convert", str(path)],
                              capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env, cwd=scratch)
    except subprocess.TimeoutExpired as exc:
        raise LowerError(f"llama.cpp's converter ran past {CONVERT_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0 or not result.is_file():
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        raise LowerError(f"llama.cpp's converter ({request['op']}) failed: {lines[-1] if lines else done.returncode}")
    return json.loads(result.read_text())


def _weight_precisions(types: Mapping[str, Mapping[str, int]]) -> dict[str, str]:
    from compiler.backends.llamacpp.convert import PRECISION

    def name(part: str) -> str:
        kinds = types.get(part) or {}
        if not kinds:
            return "none"
        main = max(kinds, key=kinds.get)
        label = f"{PRECISION.get(main, main.lower())} ({main})"
        others = [k for k in kinds if k != main]
        return label + (f" + {', '.join(others)} in {sum(kinds[k] for k in others)} tensor(s)" if others else "")

    return {part: name(part) for part in ("embedding", "matmuls", "lm_head")}


def _check_tokenizer(model, runner) -> None:
    """The GGUF carries its own tokenizer, which an app uses: it must give transformers' ids."""
    for text in TOKENIZER_CHECKS:
        ours, theirs = runner.tokenize(text), model.encode(text)
        if ours != theirs:
            raise LowerError(f"llama.cpp's tokenizer in {GGUF} splits {text!r} into {ours[:12]}..., transformers "
                             f"into {theirs[:12]}... ({model.tokenizer_file}); its pre-tokenizer is not the model's")


backend = LlamaCppBackend()
