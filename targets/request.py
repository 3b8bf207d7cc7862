"""`BuildRequest`: everything that decides one build cell's artifact; `ProfileRequest`: how it is measured.

Each option is declared once, here, as a field with its public name, help text and checks
(`option`). The command line's flags (`compiler.options`), a release file's keys
(`compiler.release.config`), the release worker's transport (`to_dict` / `from_dict`) and the build
cache key (`artifact_key_form`) are all derived from these declarations, so an option added here
reaches every one of them with no other edit.

Fields that name files are marked ``path``: the cache key holds their content digest instead of the
path, so the same inputs give the same key on any machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Iterator, Mapping

from targets.errors import UsageError
from targets.schema import check_version, from_json, to_json
from targets.spec import ACTIVATION_DTYPES, PRECISIONS

REQUEST_SCHEMA_VERSION = 1
#: int8 activation calibration methods (their implementations are in `calibration.statistics`)
METHODS = ("minmax", "percentile", "entropy", "mse")


@dataclass(frozen=True)
class Option:
    """How one request field appears to users."""

    name: str  # public name: the release file's key, the Python API's keyword
    help: str
    flag: str | None = None  # command-line flag; None: --name with dashes; "" for none
    choices: tuple[Any, ...] = ()
    minimum: float | None = None  # smallest accepted value (numbers)
    path: bool = False  # names a file or folder: its content enters the cache key
    release: bool = True  # settable in a release file
    invert: bool = False  # a boolean whose flag turns it off (--no-fusion)
    aliases: tuple[str, ...] = ()  # other spellings of the flag

    @property
    def cli_flag(self) -> str | None:
        if self.flag == "":
            return None
        return self.flag or "--" + self.name.replace("_", "-")


def option(default: Any = MISSING, *, name: str, help: str, **meta: Any) -> Any:
    kwargs: dict[str, Any] = {"metadata": {"option": Option(name, help, **meta)}}
    if isinstance(default, (list, dict, set)):
        raise TypeError("defaults must be immutable")
    if default is not MISSING:
        kwargs["default"] = default
    return field(**kwargs)


@dataclass(frozen=True)
class ModelSource:
    path: str = option(name="path", path=True, flag="",
                       help="a .pt2 / .onnx file, a Hugging Face model directory, or 'example'")
    name: str = option(name="name", flag="", help="the folder the artifacts go to: <out>/<name>/<target>")
    inputs: tuple[str, ...] = option((), name="inputs", flag="--input",
                                     help="fix or override an input, NAME=DIMxDIM[:DTYPE] (a name keeps a dim symbolic)")
    trust_remote_code: bool = option(False, name="trust_remote_code",
                                     help="run a Hugging Face model directory's own Python code (its auto_map); "
                                          "recorded in the manifest")
    task: str | None = option(None, name="task",
                              help="a Hugging Face folder other than a decoder LM: the task optimum exports it for, "
                                   "e.g. text-classification, feature-extraction (default: from config.json's "
                                   "architectures)")


@dataclass(frozen=True)
class QuantizationRequest:
    method: str = option("minmax", name="method", choices=METHODS, help="int8 activation calibration method")
    activation_dtype: str | None = option(None, name="activation_dtype", choices=ACTIVATION_DTYPES,
                                          help="int8 activation type (default: the target's first)")
    int8_weights: str = option("auto", name="int8_weights", choices=("auto", "int8", "int8-7bit", "uint8"),
                               help="int8 weight scheme: auto (full-range int8 where the target's ISA computes it "
                                    "exactly, else the most accurate exact one: 7-bit int8 or uint8), or one of them")
    weight_method: str | None = option(
        None, name="weight_method",
        help="decoder LMs: the weight quantization method (e.g. rtn, awq, gptq; default: each the backend offers "
             "is built and the lowest perplexity on held-out text ships)")
    block_size: int | None = option(None, name="block_size", minimum=16,
                                    help="int4 weight block size (default: the target's first)")
    accuracy_budget: float | None = option(
        None, name="accuracy_budget", minimum=0,
        help="keep the most sensitive layers in float until the accuracy loss is within this many points "
             "(top-1 points with labelled eval samples, else %% disagreement with float); int4 decoder LMs: "
             "the held-out perplexity increase over float, in %%, kept by moving matmuls to int8")
    equalize: bool = option(True, name="equalize", flag="--no-equalize", invert=True,
                            help="int8: do not try cross-layer equalization of conv/gemm pairs")
    bias_correction: bool = option(True, name="bias_correction", flag="--no-bias-correction", invert=True,
                                   help="int8: do not try correcting biases for the weights' rounding shift")
    smoothquant: bool = option(True, name="smoothquant", flag="--no-smoothquant", invert=True,
                               help="int8: do not try migrating activation outliers into MatMul weights")


@dataclass(frozen=True)
class FusionRequest:
    enabled: bool = option(True, name="fusion", flag="--no-fusion", invert=True,
                           help="skip the fusion pipeline (for comparisons)")
    explain: bool = option(False, name="explain_fusion", help="record why each fusion that did not fire did not")


@dataclass(frozen=True)
class DataRequest:
    calibration: str | None = option(None, name="calibration", path=True,
                                     help="calibration samples: .npz or folder of .npy/.npz, .txt, or 'random' (decoder LMs: a "
                                          ".txt file of prompts, one per line)")
    samples: str | None = option(None, name="samples", path=True,
                                 help="verification samples (.npz keyed by input name, or a folder)")
    eval: str | None = option(None, name="eval", path=True,
                              help="labelled evaluation samples for the accuracy report (.npz with inputs and 'label')")
    tokenizer: str | None = option(None, name="tokenizer", path=True,
                                   help="tokenizer.json used to tokenize .txt samples (language models)")


#: KV cache element types a decoder build may ask for (``--kv-cache``)
KV_CACHE_TYPES = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class LanguageModelRequest:
    """Settings of a decoder LM build (a model directory); other models ignore them."""

    context: int | None = option(None, name="context", minimum=1,
                                 help="tokens of KV cache (default: the model's maximum, capped to what the "
                                      "target's memory holds)")
    prefill_chunk: int | None = option(None, name="prefill_chunk", minimum=1,
                                       help="static-cache artifacts process the prompt in chunks of this many tokens")
    kv_cache: str | None = option(None, name="kv_cache", choices=KV_CACHE_TYPES,
                                  help="the KV cache's element type, where the decoder runtime offers a choice "
                                       "(OpenVINO: f32 / f16 / u8; llama.cpp: F32 / F16 / Q8_0); default: the "
                                       "runtime's own for the precision")


@dataclass(frozen=True)
class ProfileRequest:
    runs: int = option(200, name="runs", minimum=1, help="most timed runs (default 200)")
    min_runs: int = option(20, name="min_runs", minimum=1, help="fewest timed runs before the median may stop")
    warmup: int = option(10, name="warmup", minimum=0, help="untimed runs first (default 10)")
    budget_s: float = option(10.0, name="budget_s", minimum=0,
                             help="stop timing after this long if the median is not tight (default 10)")
    target_rel: float = option(0.01, name="target_rel", minimum=0, help="median CI half-width wanted, relative")
    threads: int | None = option(None, name="threads", minimum=1, help="threads (and CPUs pinned) for the runner")
    processes: int = option(1, name="processes", minimum=1,
                            help="independent runner processes per artifact (their spread counts as noise in compare)")
    rpc: str | None = option(None, name="rpc", help="TVM RPC tracker HOST:PORT: time artifacts on the device it serves")
    key: str | None = option(None, name="key", help="device key on the tracker (default: the target's rpc_key)")
    meter: str | None = option(None, name="meter",
                               help="energy meter: rapl[:PATH], ina3221:PATH, or cmd:COMMAND printing joules")
    timeout_s: float = option(600.0, name="timeout_s", minimum=1, help="seconds one artifact's runner may take")
    reuse: bool = option(False, name="reuse", flag="", release=False,
                         help="keep measurements already taken of the same artifact on this host and runtimes")
    prompt_lengths: tuple[int, ...] = option((64, 256), name="prompt_lengths",
                                             help="language models: prompt lengths for time to first token")
    new_tokens: int = option(64, name="new_tokens", minimum=1, help="language models: tokens generated per run")
    sustained: int = option(0, name="sustained", minimum=0,
                            help="language models: back-to-back generations, first against steady state")

    def measurement_form(self) -> dict[str, Any]:
        """What decides the measurement (not how long chipfit waits for it): keys the reuse of profiles."""
        data = to_json(self)
        for key in ("timeout_s", "reuse"):
            data.pop(key)
        return data


@dataclass(frozen=True)
class BuildRequest:
    model: ModelSource
    target: str = option(name="target", flag="", help="a registered target id, or the id of the spec file below")
    spec_file: str | None = option(None, name="spec_file", path=True, flag="", release=False,
                                   help="a spec file that is not installed (named in a release file)")
    precision: str | None = option(None, name="precision", flag="--precision", aliases=("--quantize",),
                                   choices=PRECISIONS, release=False,
                                   help="build this precision instead of the target's default")
    backend: str | None = option(None, name="backend",
                                 help="build with this backend of the target instead of its preferred one(s)")
    quantization: QuantizationRequest = QuantizationRequest()
    fusion: FusionRequest = FusionRequest()
    data: DataRequest = DataRequest()
    llm: LanguageModelRequest = LanguageModelRequest()
    #: how the artifact is profiled: keys the profile, not the artifact
    profile: ProfileRequest = ProfileRequest()

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": REQUEST_SCHEMA_VERSION, **to_json(self)}

    @staticmethod
    def from_dict(data: Mapping[str, Any], origin: str = "<request>") -> "BuildRequest":
        check_version(data, REQUEST_SCHEMA_VERSION, "build request", origin)
        body = {k: v for k, v in data.items() if k != "schema_version"}
        return from_json(BuildRequest, body, "", origin)

    def with_options(self, **values: Any) -> "BuildRequest":
        """A copy with options set by their public names (``precision="int8", calibration=...``)."""
        return set_options(self, values)


# --- the declarations, walked ----------------------------------------------------------------------


def options(cls: type = BuildRequest, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Option]]:
    """Every leaf option of ``cls``: (field path, type hint, `Option`), in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from options(hint, prefix + (f.name,))
        else:
            yield prefix + (f.name,), hint, f.metadata["option"]


def _set(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _set(getattr(obj, path[0]), path[1:], value)})


def get_option(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        obj = getattr(obj, part)
    return obj


def set_options(request: Any, values: Mapping[str, Any]) -> Any:
    """``request`` with the options named in ``values`` (public names) replaced; unknown names are errors."""
    by_name = {opt.name: path for path, _, opt in options(type(request))}
    for name, value in values.items():
        if name not in by_name:
            raise UsageError(f"unknown build option {name!r}; options: {', '.join(sorted(by_name))}")
        request = _set(request, by_name[name], tuple(value) if isinstance(value, list) else value)
    return request


def _is_file_option(opt: Option, value: Any) -> bool:
    return opt.path and isinstance(value, str) and value not in ("example", "random")


def paths_of(request: BuildRequest) -> list[str]:
    """The files and folders ``request`` names (its ``path`` options), in declaration order."""
    return [v for p, _, opt in options(type(request)) if _is_file_option(opt, v := get_option(request, p))]


def with_paths(request: BuildRequest, where: Callable[[str], str]) -> BuildRequest:
    """``request`` with every file it names replaced by ``where(path)`` (e.g. a worker's copy of it)."""
    for p, _, opt in options(type(request)):
        value = get_option(request, p)
        if _is_file_option(opt, value):
            request = _set(request, p, where(value))
    return request


def check_request(request: BuildRequest, spelled: Callable[[Option], str] = lambda o: o.name) -> None:
    """Every option within its declared choices and bounds; the error names the option as the user wrote it
    (``spelled`` gives the flag or the release key)."""
    for path, _, opt in options(type(request)):
        value = get_option(request, path)
        if value is None or isinstance(value, bool):
            continue
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if opt.choices and item not in opt.choices:
                raise UsageError(f"{spelled(opt)} {item!r}: choose from {', '.join(map(str, opt.choices))}")
            if opt.minimum is not None and isinstance(item, (int, float)) and item < opt.minimum:
                raise UsageError(f"{spelled(opt)} = {item}: must be at least {opt.minimum:g}")


# --- the cache key ---------------------------------------------------------------------------------


def artifact_key_form(request: BuildRequest, digest: Callable[[str], str]) -> dict[str, Any]:
    """The request as the artifact cache key sees it: every field but ``profile``, path fields replaced by
    ``digest(path)`` (their content), so a field added to the request is in the key with no other edit."""
    return {k: v for k, v in _keyed(request, digest).items() if k != "profile"}


def _keyed(obj: Any, digest: Callable[[str], str]) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            opt = f.metadata.get("option")
            if opt is not None and _is_file_option(opt, value):
                out[f.name] = {"content": digest(value)}
            else:
                out[f.name] = _keyed(value, digest)
        return out
    return to_json(obj)


def digest_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
