"""The backend protocol: what a backend must do, and what core code may ask of it.

A backend declares what it can do once (`Capabilities`), lowers a model for a `TargetSpec` from one
`LowerJob` (model, target, precision, its resolved options, the request and the build's data) into files
in the job's work directory and, where its artifacts can run, gives a runner (`plan_run`). Everything
backend-specific that core code needs (per-op timing, thread pinning, which files of its format vary
between builds, its toolchain fingerprint for the build cache) is asked of the backend through this
protocol; core code never names a backend.

What only some backends do is an optional protocol, claimed in `Capabilities` and checked when the
registry loads the backend (a claim without its methods is refused then, by name): decoder LMs
(`DecoderLowering`), kernel tuning (`Tuning`), timing on a remote device (`DeviceTimer`), a PT2E quantizer
of its own for the torch program (`ProgramQuantizing`), build-machine resources (`BuildResourcing`), an
isolated environment for a vendor SDK (`IsolatedEnvironment`).

In-tree backends (``compiler/backends/<name>/``) and third-party plugins implement it the same way and
register through the ``chipfit.backends`` entry point group. `BackendBase` gives the defaults; a plugin
may subclass it or implement every member itself.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from targets.errors import ChipfitError, TargetError
from targets.files import sha256_file
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec

from targets.model import DecoderModel, TracedModel
from targets.request import BuildRequest

#: Version of this protocol; a plugin written for another one is refused, with what changed.
BACKEND_API_VERSION = 3
#: What each version changed, for the message an older plugin gets.
API_CHANGES = {
    1: "version 2 replaced plan_run's manifest with options and signature, and added resolve_options, "
       "time_on_device, normalizers and fingerprint",
    2: "version 3 declares what the backend does in one `capabilities = Capabilities(...)` (consumes, precisions, "
       "graph_precisions, program_precisions, calibrated_precisions, symbolic_dims, accepted_domains, compute_unit, "
       "decoder_precisions, decoder_families, and claims of the optional protocols: tunable, device_timing, "
       "build_resources, isolated) instead of class attributes; `lower(job)` and `lower_decoder(job)` take one "
       "`LowerJob` (model, target, precision, resolved options, request, workdir, host, data, context) instead of "
       "positional arguments and `lower_with_data`; the options schema is `options_schema` (was SCHEMA); a backend "
       "that quantizes the torch program gives its own PT2E quantizer (`program_quantizer(method)`, was the "
       "`program_quantizer` name)",
}

#: How a file of a backend's format is hashed for the content digest: a function giving the bytes to
#: hash (normalised), or None to leave the file out; with the reason recorded in the manifest.
Normalizer = tuple[Callable[[Path], bytes] | None, str]


@dataclass(frozen=True)
class Lowered:
    """What `Backend.lower` wrote into its work directory."""

    files: tuple[str, ...]  # relative paths, primary file first
    signature: Signature  # the I/O signature the artifact takes (symbolic dims where kept)
    options: Mapping[str, Any]  # the backend options actually used, resolved
    passes: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    #: Structure check for artifacts that cannot run here (e.g. op types in a Core ML program).
    structure: Mapping[str, Any] | None = None
    #: Ops the target's accelerator will not take, run by a fallback (e.g. the CPU provider).
    fallbacks: tuple[str, ...] = ()
    #: Decoder LMs: the artifact's form (see `DecoderForm`), and other forms the same artifact carries (e.g. the
    #: static-shape programs an NPU's provider needs beside a dynamic-cache folder), each verified on its own.
    decoder: "DecoderForm | None" = None
    extra_decoder_forms: tuple["DecoderForm", ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared once; core code asks this, never the backend's name."""

    #: "onnx" or "torch" (torch backends fall back to ONNX where `lowers_onnx` says so); "huggingface": a backend
    #: of decoder LMs only, reading the model folder with its runtime's own converter (no graph ``precisions``)
    consumes: str
    precisions: tuple[str, ...]
    #: precisions for which the backend lowers the ONNX graph rewritten by chipfit's precision stage (the others
    #: it produces itself, e.g. Core ML's fp16 compute)
    graph_precisions: tuple[str, ...] = ()
    #: precisions for which it lowers the torch program quantized by the precision stage (PT2E) with the
    #: quantizer it gives (`ProgramQuantizing`)
    program_precisions: tuple[str, ...] = ()
    #: precisions it quantizes with its vendor's own tool (OpenVINO's NNCF, Rockchip's RKNN quantizer) from the
    #: build's calibration samples (`LowerJob.data`); chipfit's precision stage leaves the graph float for them
    calibrated_precisions: tuple[str, ...] = ()
    symbolic_dims: bool = False  # its artifacts keep symbolic dims (e.g. the batch); else they are bound first
    #: op domains besides the standard one it lowers (fusions producing others are skipped)
    accepted_domains: tuple[str, ...] = ()
    #: the kind of compute unit (targets.spec.UNIT_KINDS) its artifacts run on, "" where that depends on the
    #: target's options; a heterogeneous chip's spec may assign it to a unit instead (hardware.units.<n>.backends)
    compute_unit: str = ""
    #: decoder LMs (Hugging Face model folders): the precisions and model types (``config.model_type``) it lowers;
    #: a backend declaring any implements `DecoderLowering`
    decoder_precisions: tuple[str, ...] = ()
    decoder_families: tuple[str, ...] = ()
    #: decoder LMs: per precision, the weight quantization methods it offers (`LowerJob.weight_method`), data-free
    #: first; where there are several the build lowers each and keeps the lowest perplexity
    decoder_weight_methods: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: decoder LMs: the int4 weight methods that can keep a share of the matmuls in int8 (`LowerJob.int8_share`),
    #: the most sensitive first by the backend's own ranking; how a decoder meets ``--accuracy-budget``
    decoder_int8_backup: tuple[str, ...] = ()
    #: decoder LMs: the KV cache element types it can write into the artifact (``--kv-cache``; request.KV_CACHE_TYPES)
    decoder_kv_caches: tuple[str, ...] = ()
    #: vision-language models (``config.model_type``, e.g. "qwen2_5_vl") it lowers, vision part and decoder
    #: together: its `DecoderLowering.lower_decoder` is then given a `VisionLanguageModel` too, and the runner its
    #: ``plan_generate`` returns for such an artifact also takes prompts with images
    #: (`compiler.vlm.verify.VisionRunner`); a backend declaring any implements `DecoderLowering`
    vision_language_families: tuple[str, ...] = ()
    tunable: bool = False  # implements `Tuning`
    device_timing: bool = False  # implements `DeviceTimer`
    build_resources: bool = False  # implements `BuildResourcing`
    isolated: bool = False  # implements `IsolatedEnvironment`

    def __post_init__(self) -> None:
        if self.consumes not in ("onnx", "torch", "huggingface"):
            raise TargetError(f"capabilities.consumes = {self.consumes!r}: choose onnx, torch or huggingface")
        if self.consumes == "huggingface" and (self.precisions or not self.decoder_families):
            raise TargetError("capabilities.consumes = 'huggingface' is for backends of decoder LMs only: "
                              "no graph precisions, some decoder_families")
        for name in ("graph_precisions", "program_precisions", "calibrated_precisions"):
            extra = [p for p in getattr(self, name) if p not in self.precisions]
            if extra:
                raise TargetError(f"capabilities.{name} names {', '.join(extra)}, which are not in precisions "
                                  f"({', '.join(self.precisions)})")

    @property
    def lowers_decoders(self) -> bool:
        return bool(self.decoder_families)

    @property
    def lowers_vision_language(self) -> bool:
        return bool(self.vision_language_families)


@dataclass(frozen=True)
class BuildData:
    """What a build hands a backend besides the model, in `LowerJob.data`.

    A backend that quantizes with its vendor's own quantizer (its ``calibrated_precisions``) takes chipfit's
    calibration samples here (for no other precision: they are empty then); a backend whose artifacts run only
    where they are built (a vendor simulator that cannot load its own exported file) runs the verification
    inputs right after building. Arrays are in the model's own layout, keyed by input name: calibration one dict
    per sample (each with its batch dim), verification inputs batched along axis 0.
    """

    calibration: tuple[Mapping[str, np.ndarray], ...] = ()
    calibration_origin: str = ""
    calibration_random: bool = False  # the samples are random data (ranges mean little)
    verify_inputs: Mapping[str, np.ndarray] | None = None
    verify_label: str = ""

    def calibration_batched(self) -> dict[str, np.ndarray] | None:
        """The calibration samples concatenated along the batch dim; None where there are none."""
        if not self.calibration:
            return None
        return {name: np.concatenate([s[name] for s in self.calibration]) for name in self.calibration[0]}


@dataclass(frozen=True)
class LowerJob:
    """Everything a backend is given to lower one build cell: the one channel from a build into a backend.

    ``options`` are the backend's options for the target as `Backend.resolve_options` gave them (they are in the
    build cache key); ``request`` is the cell's whole `BuildRequest`, so an option added there reaches the
    backend that reads it with no other edit. ``context`` is set for decoder LMs: the tokens the KV cache holds,
    as the build planned it against the target's memory.
    """

    model: TracedModel | DecoderModel  # a VisionLanguageModel is a DecoderModel with its vision part
    target: TargetSpec
    precision: str
    options: Mapping[str, Any]
    request: BuildRequest
    workdir: Path
    host: HostInfo
    data: BuildData = BuildData()
    context: int | None = None
    #: decoder LMs: which of the backend's ``decoder_weight_methods`` quantizes the weights ("" where it has one);
    #: data-aware ones take their calibration token ids from ``data.calibration`` (``{"input_ids": [1, T]}``)
    weight_method: str = ""
    #: decoder LMs at int4: the share of the matmuls (0..1) the weight method keeps in int8, most sensitive first
    int8_share: float = 0.0


@dataclass(frozen=True)
class DecoderForm:
    """How a backend laid a decoder LM out in its artifact."""

    cache_form: str  # "dynamic" (symbolic past length) or "static" (fixed-size cache, prompt in chunks)
    programs: tuple[str, ...]  # e.g. ("prefill", "decode"), or ("decoder",)
    runtime: str  # what runs it, e.g. "onnxruntime-genai"
    context: int  # tokens the cache holds
    kv_bytes_per_element: float
    weight_precisions: Mapping[str, str]  # embedding / matmuls / lm_head -> precision written
    tokenizer_files: tuple[str, ...] = ()
    prefill_chunk: int | None = None
    generation: Mapping[str, Any] = field(default_factory=dict)  # generation defaults as the runtime got them
    windowed_cache: bool = True  # sliding-window layers hold only their window (else a full-length cache)
    name: str = "main"  # which form `plan_generate` runs
    #: the files the runtime loads weights from, for the memory plan; empty: every weight-like file (an artifact
    #: that also carries its compiler's input, e.g. QNN's QDQ programs beside the context binary, names them)
    weight_files: tuple[str, ...] = ()
    #: vision-language models: part -> file ("decoder", "vision"), what the vision part's weights were written at,
    #: and what an application must set for the runtime to size images as the model's processor does
    parts: Mapping[str, str] = field(default_factory=dict)
    vision_precision: str = ""
    vision_settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation:
    """Tokens a decoder runner generated, with the time each step took."""

    tokens: tuple[int, ...]
    prefill_s: float  # from the prompt to the first token (time to first token)
    token_s: tuple[float, ...]  # each later token
    encode_s: float = 0.0  # of ``prefill_s``, the time spent encoding the prompt's images (vision-language models)


@runtime_checkable
class DecoderRunner(Protocol):
    description: str

    def generate(self, ids: Sequence[int], new_tokens: int, stop: Sequence[int] = (),
                 on_token: Callable[[int], None] | None = None) -> Generation:
        """Greedy continuation of ``ids``: ``new_tokens`` tokens, fewer if one in ``stop`` comes first;
        ``on_token`` is called with each token as it is made (streaming)."""
        ...

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits at every position of ``ids`` ([len(ids), vocab]), teacher-forced."""
        ...

    def set_threads(self, threads: int) -> bool:
        """Use ``threads`` threads from now on; False if the runtime sizes its pool only at start-up."""
        ...


@dataclass(frozen=True)
class GenerationPlan:
    """How a decoder artifact generates here: on the target's runtime, or a stated proxy."""

    runner: DecoderRunner
    proxy: bool = False
    note: str = ""
    #: False where the proxy swaps the target's accelerator for this host's CPU (an NPU provider's folder run on
    #: the CPU provider, a Metal app's file on llama.cpp's CPU backend): its speed says nothing of the target's
    representative: bool = True
    #: which execution computes the tokens, as `RunPlan.execution` ("simulator": the chip vendor's simulator)
    execution: str = "native"


@runtime_checkable
class Runner(Protocol):
    description: str  # e.g. "onnxruntime CPUExecutionProvider on this host"
    #: where per-op times come from ("onnxruntime profiler"), or why there are none
    per_op_source: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def set_threads(self, threads: int) -> bool:
        """Use ``threads`` threads from now on; False if the runtime sizes its pool only at start-up."""
        ...

    def profile_ops(self, inputs: Mapping[str, np.ndarray], runs: int = 5) -> list[dict[str, Any]] | None:
        """Mean time per graph node, slowest first (``node``, ``op``, ``mean_us``); None if not offered."""
        ...


class RunnerBase:
    """Defaults for a runner's optional hooks: no thread control, no per-op times."""

    description = "runner"
    per_op_source = "not offered by this backend's runtime"

    def set_threads(self, threads: int) -> bool:
        return False

    def profile_ops(self, inputs: Mapping[str, np.ndarray], runs: int = 5) -> list[dict[str, Any]] | None:
        return None


class NotRunnable(Exception):
    """The artifact cannot run on this machine (or device); the message says why and where it can."""


class DeviceError(ChipfitError):
    """A device that was asked for cannot be reached or used (a tracker down, a key nobody serves)."""


@dataclass(frozen=True)
class RunPlan:
    """How an artifact is run here: on the target's own runtime, or on a stated proxy."""

    runner: Runner
    proxy: bool = False
    note: str = ""
    #: which execution computes the outputs (`compiler.arithmetic`): "native", "qdq" (Q/DQ as written) or
    #: "emulated" (the target's int8 arithmetic in numpy) or "simulator" (the vendor's simulator of the chip); said
    #: in the numerics column
    execution: str = "native"
    #: False where timing this run says nothing of the target's speed (a vendor's simulator): never raced or profiled
    representative: bool = True


@dataclass(frozen=True)
class Device:
    """A device reached through its backend's own remote runtime (TVM RPC: a tracker and a key)."""

    address: str  # HOST:PORT
    key: str


@dataclass(frozen=True)
class DeviceTiming:
    samples_ms: tuple[float, ...]
    device: str  # what the remote end says it is
    description: str  # how the times were taken
    per_op: tuple[Mapping[str, Any], ...] = ()
    per_op_source: str = "not offered by this backend's device runner"


@runtime_checkable
class Backend(Protocol):
    name: str
    api_version: int
    capabilities: Capabilities
    #: the keys its ``[backend_options.<name>]`` table takes (None: any, unchecked)
    options_schema: "OptionSchema | None"

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        """Whether it lowers ``model``'s ONNX graph at ``precision`` (else its torch program)."""
        ...

    def versions(self) -> dict[str, str]: ...

    def check_options(self, target: TargetSpec) -> None: ...

    def check_toolchain(self, target: TargetSpec) -> tuple[str, ...]:
        """What this machine lacks to build for ``target`` (a compiler not on PATH, a CPU name the code
        generator does not know), each said so a vendor can act on it; empty where all is there."""
        ...

    def resolve_options(self, target: TargetSpec, host: HostInfo) -> dict[str, Any]:
        """The options `lower` will use for ``target`` on ``host`` (detected values filled in); they enter
        the build cache key and reach `lower` as `LowerJob.options`."""
        ...

    def lower(self, job: LowerJob) -> Lowered:
        """Write the artifact for ``job`` (a `TracedModel`) into ``job.workdir``."""
        ...

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        """How to run the artifact here; raises `NotRunnable` saying why not."""
        ...

    def normalizers(self) -> Mapping[str, Normalizer]:
        """File name -> how the content digest treats that file of this backend's format (see `Normalizer`)."""
        ...

    def fingerprint(self) -> dict[str, str]:
        """What identifies this backend's code for the build cache: its package version and its files' digest."""
        ...


# --- optional protocols: claimed in Capabilities, checked when the registry loads the backend -----------------


@runtime_checkable
class DecoderLowering(Protocol):
    """Decoder LMs (claimed by ``capabilities.decoder_families``), and vision-language models with them
    (``capabilities.vision_language_families``)."""

    def lower_decoder(self, job: LowerJob) -> Lowered:
        """Write a decoder LM artifact for ``job`` (a `DecoderModel`, ``job.context`` set) into ``job.workdir``;
        its `Lowered.decoder` says the form."""
        ...

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        """How to generate with a decoder artifact (its ``form``) here; raises `NotRunnable` saying why not."""
        ...


@runtime_checkable
class Tuning(Protocol):
    """Kernel tuning whose records later builds use (claimed by ``capabilities.tunable``)."""

    def tune(self, model: TracedModel, target: TargetSpec, trials: int, device: "Device | None" = None,
             progress: Callable[[str], None] = lambda m: None) -> Any:
        """Search schedules for ``model``'s kernels on ``target`` (on ``device`` where given); returns a summary
        with ``kernels``, ``records`` and ``database``."""
        ...


@runtime_checkable
class DeviceTimer(Protocol):
    """Timing on a device the backend reaches with its own remote runtime (claimed by ``capabilities.device_timing``)."""

    def time_on_device(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature,
                       device: "Device", runs: int) -> "DeviceTiming": ...


@dataclass(frozen=True)
class ProgramQuantizer:
    """A backend's PT2E quantizer for the torch program, and how the manifest names it."""

    quantizer: Any  # a torchao ``Quantizer`` annotating the exported program
    tool: str  # e.g. "torchao PT2E (ExecuTorch XNNPACKQuantizer)"
    weights: str = "int8 symmetric per-channel"
    activations: str = "int8 per-tensor"


@runtime_checkable
class ProgramQuantizing(Protocol):
    """The quantizer for the torch program (claimed by ``capabilities.program_precisions``): the backend's own, so
    every int8 op it is handed is one its kernels take."""

    def program_quantizer(self, method: str) -> ProgramQuantizer:
        """The quantizer with activation observers for ``method`` ("minmax" or "mse")."""
        ...


@runtime_checkable
class BuildResourcing(Protocol):
    """Build machines it needs (claimed by ``capabilities.build_resources``)."""

    def build_resources(self, target: TargetSpec) -> dict[str, float]:
        """What a build machine must offer to lower for ``target`` (Dask worker resources, e.g. ``{"coreml": 1}``
        for a backend whose packaging runs only on macOS, ``{"vendor-sdk": 1}`` for a licensed SDK)."""
        ...


@runtime_checkable
class IsolatedEnvironment(Protocol):
    """A vendor SDK run in an environment of its own (claimed by ``capabilities.isolated``; see
    `compiler.isolated`)."""

    environment: Any  # compiler.isolated.environment.Environment

    def environment_state(self) -> Any: ...


#: capability -> (optional protocol, whether a capabilities object claims it)
OPTIONAL_PROTOCOLS: dict[str, tuple[type, Callable[[Capabilities], bool]]] = {
    "decoder_families": (DecoderLowering, lambda c: bool(c.decoder_families)),
    "vision_language_families": (DecoderLowering, lambda c: bool(c.vision_language_families)),
    "tunable": (Tuning, lambda c: c.tunable),
    "device_timing": (DeviceTimer, lambda c: c.device_timing),
    "program_precisions": (ProgramQuantizing, lambda c: bool(c.program_precisions)),
    "build_resources": (BuildResourcing, lambda c: c.build_resources),
    "isolated": (IsolatedEnvironment, lambda c: c.isolated),
}


class BackendBase:
    """Defaults for the protocol's members that most backends share."""

    name = "base"
    options_schema: "OptionSchema | None" = None

    def check_toolchain(self, target: TargetSpec) -> tuple[str, ...]:
        return ()

    def resolve_options(self, target: TargetSpec, host: HostInfo) -> dict[str, Any]:
        schema = self.options_schema
        return schema.resolve(target) if schema is not None else dict(target.options_for(self.name))

    def check_options(self, target: TargetSpec) -> None:
        if self.options_schema is not None:
            self.options_schema.resolve(target)

    def normalizers(self) -> Mapping[str, Normalizer]:
        return {}

    def fingerprint(self) -> dict[str, str]:
        return code_fingerprint(self)


def code_fingerprint(backend: object) -> dict[str, str]:
    """The distribution that ships ``backend`` (name and version) and a digest of the folder of its module.

    A vendor who edits its `lower()` changes the digest, so the build cache never serves an artifact
    built by the old code.
    """
    module = inspect.getmodule(type(backend)) or inspect.getmodule(backend)
    path = Path(inspect.getfile(module)).resolve() if module is not None else None
    h = hashlib.sha256()
    if path is not None:
        folder = path.parent
        for file in sorted(folder.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix in (".py", ".toml", ".json", ".txt"):
                h.update(f"{file.relative_to(folder).as_posix()}\0{sha256_file(file)}\n".encode())
    top = (module.__name__ if module is not None else "").split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    version = "not installed"
    for dist in dists:
        try:
            version = f"{dist} {metadata.version(dist)}"
            break
        except metadata.PackageNotFoundError:
            continue
    return {f"backend:{getattr(backend, 'name', top)}:package": version,
            f"backend:{getattr(backend, 'name', top)}:code": h.hexdigest()}


def build_resources(backends: Sequence[object], target: TargetSpec) -> dict[str, float]:
    """What a machine must offer to build ``target`` with all of ``backends``: each backend's `build_resources`
    (`BuildResourcing`: a backend that claims none needs nothing), the largest amount of each."""
    needed: dict[str, float] = {}
    for backend in backends:
        claimed = backend.capabilities.build_resources  # type: ignore[attr-defined]
        for name, amount in (backend.build_resources(target) if claimed else {}).items():  # type: ignore[attr-defined]
            needed[name] = max(needed.get(name, 0.0), float(amount))
    return dict(sorted(needed.items()))


def check_backend(obj: object, name: str) -> "Backend":
    """The entry point's object, if it is a `Backend` of this API version named ``name`` that implements every
    optional protocol its capabilities claim."""
    version = getattr(obj, "api_version", None)
    if version != BACKEND_API_VERSION:
        changes = "; ".join(API_CHANGES[v] for v in sorted(API_CHANGES) if isinstance(version, int) and v >= version)
        raise TargetError(f"written for backend API version {version}, this chipfit speaks version "
                          f"{BACKEND_API_VERSION}" + (f" ({changes}: see targets/backend.py)" if changes else ""))
    if not isinstance(obj, Backend):
        missing = [m for m in _members(Backend) if not hasattr(obj, m)]
        raise TargetError(f"entry point must give a Backend object (see targets/backend.py); {obj!r} lacks "
                          f"{', '.join(missing) or 'required members'} (subclass targets.backend.BackendBase for defaults)")
    if not isinstance(obj.capabilities, Capabilities):
        raise TargetError(f"backend {name}: capabilities must be a targets.backend.Capabilities, got "
                          f"{type(obj.capabilities).__name__}")
    if obj.name != name:
        raise TargetError(f"entry point name {name!r} differs from the backend's name {obj.name!r}")
    for claim, (protocol, claimed) in OPTIONAL_PROTOCOLS.items():
        if claimed(obj.capabilities) and not isinstance(obj, protocol):
            missing = [m for m in _members(protocol) if not hasattr(obj, m)]
            raise TargetError(f"backend {name} claims capabilities.{claim} but lacks {', '.join(missing)} "
                              f"({protocol.__name__} in targets/backend.py); implement it or drop the claim")
    return obj


def _members(protocol: type) -> list[str]:
    own = {m for m in vars(protocol) if not m.startswith("_")} | set(getattr(protocol, "__annotations__", {}))
    return sorted(own)


@dataclass(frozen=True)
class OptionField:
    """One allowed key in a backend's options table."""

    kind: type | tuple[type, ...]
    required: bool = False
    choices: tuple[Any, ...] = ()
    default: Any = None
    help: str = ""  # what it does, for `docs/targets.md` (generated from the schemas)


@dataclass(frozen=True)
class OptionSchema:
    backend: str
    fields: Mapping[str, OptionField] = field(default_factory=dict)

    def resolve(self, target: TargetSpec) -> dict[str, Any]:
        """The target's options for this backend, checked and with defaults filled in."""
        from targets.schema import check_keys, expect

        given = dict(target.options_for(self.backend))
        where = f"backend_options.{self.backend}."
        for key in given:
            if key not in self.fields:
                raise TargetError(f"{target.source_file}: {where[:-1]}: unknown option {key!r}; allowed: "
                                  f"{', '.join(sorted(self.fields))}")
        check_keys(given, {k: f.required for k, f in self.fields.items()}, where, target.source_file, TargetError)
        resolved: dict[str, Any] = {}
        for key, spec in self.fields.items():
            if key not in given:
                resolved[key] = spec.default
                continue
            value = expect(given[key], spec.kind, f"{where}{key}", target.source_file, TargetError)
            if spec.choices and value not in spec.choices:
                raise TargetError(f"{target.source_file}: {where}{key} = {value!r}; choose one of "
                                  f"{', '.join(map(str, spec.choices))}")
            resolved[key] = value
        return resolved


def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def host_mismatch(target: TargetSpec, host: HostInfo) -> str | None:
    """Why this host cannot run the target's native artifacts, or None if it can."""
    reach = target.reach
    if reach.kind != "local":
        return reach.reason or f"target {target.id} is reached by {reach.kind!r}, not on this machine"
    if reach.arch and reach.arch != host.arch:
        return f"target {target.id} is {reach.arch}; this host is {host.arch}"
    missing = [f for f in reach.cpu_flags if f not in host.flags]
    if missing:
        return f"this host's CPU lacks {', '.join(missing)}, which target {target.id} requires"
    return None



def run_threads(target: TargetSpec, host: HostInfo, asked: int = 0) -> int:
    """Threads a CPU runtime uses here for ``target``: ``asked`` if set, else the target's cores
    (``hardware.cores``), never more than this host has."""
    cores = target.hardware.figures.get("cores")
    cores = int(cores) if isinstance(cores, (int, float)) and cores >= 1 else host.cores
    return max(1, min(asked or cores, host.cores))
