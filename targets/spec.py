"""The `TargetSpec`: what a chip is, how chipfit builds for it, and where its figures come from.

A spec is a TOML file (see ``targets/specs/`` for the built-in ones). Loading is
strict: an unknown key, a missing required key or a figure without a source is
a `SpecError` that names the file and the key, because a typo in a chip
description must never turn into a silently different build.

This module knows nothing about backends: backend options are kept as plain
tables and checked by the backend that consumes them.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from targets.errors import SpecError, TargetError
from targets.isa import ACCELERATOR_ARCHS, KNOWN_FEATURES, Isa, from_cpuinfo, unknown_features
from targets.schema import check_keys, expect, is_number

SCHEMA_VERSION = 1
UNKNOWN = "unknown"
PRECISIONS = ("fp32", "fp16", "int8", "int4")
ACTIVATION_DTYPES = ("uint8", "int8", "uint16", "int16")
QUANTIZED = ("int8", "int4")
#: Where a target's artifacts run, and what chipfit does with them there.
REACH_KINDS = {
    "local": "this machine runs them (given reach.arch and reach.cpu_flags): built artifacts are verified against the "
             "float reference and profiles are measured",
    "rpc": "a device on a TVM RPC tracker runs them (reach.rpc_key): artifacts are lowered here, verified and timed "
           "on the device by `chipfit profile --rpc HOST:PORT`; here they are estimated",
    "none": "nothing chipfit reaches runs them (reach.reason says why): artifacts are lowered and checked, proxies "
            "run where a backend offers one (labelled so), and latency and energy are estimated from the spec",
}
#: What a compute unit of a heterogeneous chip is; a backend declares the kind it runs on.
UNIT_KINDS = ("cpu", "gpu", "npu", "dsp")
#: How a hardware figure was had: the vendor's datasheet, a public measurement of the chip or board (a benchmark
#: report: bandwidth, power under load), computed from other figures, or a third party's unverified claim.
FIGURE_KINDS = ("datasheet", "measured-elsewhere", "derived", "third-party")
#: Every spec states these hardware figures, as a number or as "unknown";
#: the estimate model (profiles/) uses what is known and says what is not.
HARDWARE_FIGURES = (
    "process_nm",
    "cores",
    "clock_ghz",
    "peak_gops",
    "memory_gb",
    "memory_bandwidth_gbs",
    "power_w",
)
#: Figures a spec may state (else "unknown"): the board's power at rest, the static term of the energy model
OPTIONAL_FIGURES = ("idle_power_w",)


#: decoder LMs judged by teacher-forced next-token agreement: the share a precision must reach unless the spec's
#: ``[verify.<precision>] min_token_agreement`` says otherwise
TOKEN_AGREEMENT = {"fp32": 1.0, "fp16": 0.95, "int8": 0.90, "int4": 0.80}


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's outputs must be to the float reference.

    Decoder LMs: ``min_cosine`` bounds the cosine of each step's logits to the reference's, and
    ``min_token_agreement`` the share of teacher-forced next tokens equal to the reference's."""

    atol: float
    rtol: float
    min_cosine: float
    min_token_agreement: float | None = None

    def token_agreement(self, precision: str) -> float:
        return self.min_token_agreement if self.min_token_agreement is not None else TOKEN_AGREEMENT.get(precision, 1.0)


@dataclass(frozen=True)
class Reach:
    """Where a target's artifacts can run: on this machine, over TVM RPC, or nowhere."""

    kind: str
    arch: str = ""
    cpu_flags: tuple[str, ...] = ()
    rpc_key: str = ""
    reason: str = ""


@dataclass(frozen=True)
class QuantizationSupport:
    """What the target's hardware executes when it runs a quantized model."""

    activation_dtypes: tuple[str, ...]  # int8 activations it runs; the first is the default
    per_channel: bool  # per-channel weight scales (else per-tensor only)
    symmetric_activations: bool  # activations must be symmetric (zero point 0)
    int4_block_sizes: tuple[int, ...] = ()  # block sizes of int4 weight-only matmuls; first is the default


@dataclass(frozen=True)
class ComputeUnit:
    """One compute unit of a heterogeneous chip (CPU cores, GPU, NPU): its own peaks and power; the memory
    bandwidth is the chip's, shared by all units."""

    name: str
    kind: str  # one of UNIT_KINDS
    compute: str
    peak_gops: Mapping[str, Any]
    power_w: Any  # a number or "unknown"
    backends: tuple[str, ...]  # backends of the target that run on it
    sources: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Hardware:
    """Datasheet figures. A value is a number, a table of numbers, or "unknown"."""

    chip: str
    compute: str
    figures: Mapping[str, Any]
    sources: Mapping[str, tuple[str, ...]]
    notes: str = ""
    units: Mapping[str, ComputeUnit] = field(default_factory=dict)
    #: how each figure with a value was had (`FIGURE_KINDS`); a figure not listed: "unstated"
    kinds: Mapping[str, str] = field(default_factory=dict)

    def kind_of(self, figure: str) -> str:
        return self.kinds.get(figure, "unstated")

    @property
    def memory_bytes(self) -> int | None:
        """Memory capacity in bytes, or None if unknown. RAM is sold in binary units: 8 GB = 8 x 2**30 bytes.

        The one place capacity is turned into bytes: fit checks at build and at profile time use it."""
        value = self.figures.get("memory_gb")
        return int(value * 2**30) if is_number(value) else None


@dataclass(frozen=True)
class TargetSpec:
    id: str
    name: str
    vendor: str
    description: str
    backends: tuple[str, ...]
    build_all_backends: bool
    default_precision: str
    precisions: tuple[str, ...]
    reach: Reach
    backend_options: Mapping[str, Mapping[str, Any]]
    tolerances: Mapping[str, Tolerance]
    hardware: Hardware
    quantization: QuantizationSupport | None = None
    #: Fusions the hardware executes (names of compiler.passes.fusion rules), in order.
    fusions: tuple[str, ...] = ()
    #: The chip's instruction set: the int8 scheme and the verifying execution follow it, never the build host's.
    isa: Isa = Isa("unknown")
    source_file: str = ""

    def options_for(self, backend: str) -> Mapping[str, Any]:
        return self.backend_options.get(backend, {})

    def unit_for(self, backend: str, kind: str = "") -> ComputeUnit | None:
        """The compute unit ``backend`` runs on: the unit that lists it, else the only unit of the ``kind`` the
        backend declares; None where the chip declares no units (its figures are the chip's)."""
        units = self.hardware.units.values()
        listed = [u for u in units if backend in u.backends]
        if listed:
            return listed[0]
        of_kind = [u for u in units if kind and u.kind == kind]
        return of_kind[0] if len(of_kind) == 1 else None

    def figures_for(self, backend: str, kind: str = "") -> tuple[Mapping[str, Any], str]:
        """(hardware figures, unit name) the estimate uses for ``backend``'s artifacts: the chip's, with the peak
        throughput and power of the unit it runs on; the unit name is "" where it runs on the chip as a whole."""
        unit = self.unit_for(backend, kind)
        if unit is None:
            return self.hardware.figures, ""
        return {**self.hardware.figures, "peak_gops": dict(unit.peak_gops), "power_w": unit.power_w}, unit.name

    def tolerance(self, precision: str) -> Tolerance:
        try:
            return self.tolerances[precision]
        except KeyError:
            raise TargetError(
                f"target {self.id!r} ({self.source_file}) declares no [verify.{precision}] tolerance"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source_file")
        if not data["hardware"]["units"]:
            del data["hardware"]["units"]  # a chip without units keeps the digest it had before units existed
        return data

    @property
    def digest(self) -> str:
        """sha256 of the spec's content (not of its file's formatting or path)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()


# --- loading -----------------------------------------------------------------------------

#: value types of spec keys besides Python's own: a datasheet figure (a positive number, or "unknown": figures are
#: never guessed), a table of figures per compute type, and a table of tables (one per backend, precision, unit)
FIGURE, FIGURES, TABLES = "figure", "figures", "tables"
_KINDS = {str: "string", bool: "boolean", int: "integer", float: "number", dict: "table",
          FIGURE: 'number or "unknown"', FIGURES: 'table of number or "unknown"', TABLES: "table of tables"}
_PLURAL = {str: "strings", int: "integers"}


@dataclass(frozen=True)
class Key:
    """One key of a spec table, declared once: what the loader accepts (its type, whether it is required, its
    default) and what docs/targets.md says of it."""

    name: str
    required: bool
    type: Any  # str, bool, int, float, dict, list (of ``items``), or FIGURE, FIGURES, TABLES
    meaning: str
    unit: str = ""
    default: Any = None  # taken where an optional key is absent
    items: type | None = None  # a list's element type
    bounds: tuple[float, float] | None = None  # a number's inclusive range

    @property
    def kind(self) -> str:
        """The type as docs/targets.md writes it."""
        if self.type is list:
            return f"list of {_PLURAL[self.items]}"
        if self.bounds is not None:
            return f"number {self.bounds[0]:g}..{self.bounds[1]:g}"
        return _KINDS[self.type]


#: Every table of a spec file and its keys, in the order docs/targets.md lists them. The loader's allowed and
#: required keys come from here, and the reference's tables are generated from it (a test compares them).
SPEC_TABLES: dict[str, tuple[Key, ...]] = {
    "": (
        Key("schema_version", True, int, f"the spec format; this chipfit reads {SCHEMA_VERSION}"),
        Key("id", True, str, "the target's name on the command line (`-t ID`): no spaces, '/', '\\' or '@'"),
        Key("name", True, str, "the chip's marketing name, for tables and reports"),
        Key("vendor", True, str, "who makes the chip"),
        Key("description", False, str, default="", meaning= "one line on what the artifact is and where it runs"),
        Key("backends", True, list, items=str, meaning=
            "registered backends that lower for this chip, preferred first (`chipfit targets validate` checks they "
            "are installed); with several, the build measures them and ships the fastest verified one"),
        Key("build_all_backends", False, bool, default=False, meaning=
            "build one artifact per backend (the first in `<target>/`, the others in `<target>@<backend>/`) instead "
            "of shipping the fastest (default false)"),
        Key("default_precision", True, str, "the precision built when none is asked for; one of supports.precisions"),
        Key("supports", True, dict, "what the chip executes: see [supports]"),
        Key("reach", True, dict, "where its artifacts run: see [reach]"),
        Key("backend_options", False, TABLES, default={}, meaning=
            "`[backend_options.<backend>]`: options each backend reads (see the backends' tables below)"),
        Key("verify", True, TABLES, "`[verify.<precision>]`: tolerances, one table per supported precision"),
        Key("quantization", False, dict, "required when a quantized precision is supported: see [quantization]"),
        Key("fusion", False, dict, "fusion rules the hardware executes: see [fusion]"),
        Key("hardware", True, dict, "datasheet figures with their sources: see [hardware]"),
        Key("isa", False, dict,
            "the chip's instruction set: see [isa] (default: reach.arch with the known features among "
            "reach.cpu_flags)"),
    ),
    "isa": (
        Key("arch", True, str,
            f"{', '.join(KNOWN_FEATURES)}, or an accelerator ({', '.join(ACCELERATOR_ARCHS)}: int8 accumulates in "
            "int32)"),
        Key("features", False, list, items=str, default=(), meaning=
            "ISA features of the chip; the int8 scheme and the execution that verifies it follow them. "
            + "; ".join(f"{arch}: {', '.join(names)}" for arch, names in KNOWN_FEATURES.items())),
    ),
    "supports": (
        Key("precisions", True, list, items=str, meaning=f"precisions the chip runs, of {', '.join(PRECISIONS)}"),
    ),
    "reach": (
        Key("kind", True, str, f"one of {', '.join(REACH_KINDS)} (see the reach kinds below)"),
        Key("arch", False, str, default="", meaning= "machine architecture the artifact runs on (`uname -m`), for `local`"),
        Key("cpu_flags", False, list, items=str, default=(), meaning="CPU flags (/proc/cpuinfo) a local host needs to run the artifact"),
        Key("rpc_key", False, str, default="", meaning= "the device's key on the TVM RPC tracker; required for `rpc`"),
        Key("reason", False, str, default="", meaning= "why the artifacts cannot run here, said wherever they are not run"),
    ),
    "verify.<precision>": (
        Key("atol", True, float, "absolute tolerance of each output element against the float reference"),
        Key("rtol", True, float, "relative tolerance (element passes if |err| <= atol + rtol x |reference|)"),
        Key("min_cosine", True, float, "lowest cosine similarity of each output (of each step's logits for LMs)"),
        Key("min_token_agreement", False, float, bounds=(0, 1), meaning=
            "decoder LMs: share of teacher-forced next tokens equal to the reference's (default by precision: "
            + ", ".join(f"{p} {v}" for p, v in TOKEN_AGREEMENT.items()) + ")"),
    ),
    "quantization": (
        Key("activation_dtypes", True, list, items=str, meaning=
            f"activation types of quantized models the chip runs, of {', '.join(ACTIVATION_DTYPES)}; the first is the default"),
        Key("per_channel", True, bool, "per-channel weight scales (else per-tensor only)"),
        Key("symmetric_activations", True, bool, "activations must be symmetric (zero point 0)"),
        Key("int4_block_sizes", False, list, items=int, default=(), meaning=
            "block sizes of int4 weight-only matmuls (powers of two >= 16); the first is the default; required with int4"),
    ),
    "fusion": (
        Key("rules", True, list, items=str, meaning="fusion rules (`compiler/passes/fusion.py`) to apply, in order; each is "
            "kept only where the artifact measures faster with it"),
    ),
    "hardware": (
        Key("chip", True, str, "the chip's key in ../shared/data/chips.toml style (a stable identifier)"),
        Key("compute", True, str, "the compute units in words (cores, GPU, NPU)"),
        Key("process_nm", True, FIGURE, "manufacturing process; scales per-op energy from 45 nm", "nm"),
        Key("cores", True, FIGURE, "CPU cores", "count"),
        Key("clock_ghz", True, FIGURE, "highest CPU clock", "GHz"),
        Key("peak_gops", True, FIGURES,
            "peak throughput per compute type (`{ int8 = 45000.0, fp16 = ... }`) of the whole chip", "GOPS (MAC = 2 ops)"),
        Key("memory_gb", True, FIGURE, "memory the model can use (RAM is counted in GiB: 8 = 8 x 2^30 bytes)", "GB"),
        Key("memory_bandwidth_gbs", True, FIGURE, "DRAM bandwidth, shared by every compute unit", "GB/s"),
        Key("power_w", True, FIGURE, "the chip's (or board's) power while it runs a model, all of it: the decoder "
            "estimate's energy is this power x the estimated time", "W"),
        Key("idle_power_w", False, FIGURE, default=UNKNOWN, meaning="power at rest: the static term of the energy "
            "estimate (idle x time + energy per op and per byte moved); with power_w, its share of the energy", unit="W"),
        Key("sources", True, dict, "`figure = \"source\"` (or a list) for every figure that has a value"),
        Key("notes", False, str, default="", meaning= "caveats on the figures"),
        Key("kinds", False, dict, default={}, meaning=
            f"`figure = \"kind\"`: how a figure with a value was had, one of {', '.join(FIGURE_KINDS)} (the estimate "
            "says which kinds it used; a figure not listed is \"unstated\")"),
        Key("units", False, TABLES, default={}, meaning= "`[hardware.units.<name>]`: compute units of a heterogeneous chip"),
    ),
    "hardware.units.<name>": (
        Key("kind", True, str, f"one of {', '.join(UNIT_KINDS)}"),
        Key("compute", False, str, default="", meaning= "the unit in words"),
        Key("peak_gops", True, FIGURES, "the unit's peak throughput per compute type", "GOPS"),
        Key("power_w", True, FIGURE, "the unit's power while it runs a model", "W"),
        Key("backends", False, list, items=str, default=(), meaning=
            "backends of this target that run on this unit (else a backend runs on the unit of the kind it declares)"),
        Key("sources", False, dict, default={}, meaning= "`figure = \"source\"` for peak_gops and power_w where they have values"),
    ),
}


_UNIT_FIGURES = ("peak_gops", "power_w")


def _read(table: Any, name: str, file: str, where: str | None = None) -> dict[str, Any]:
    """The keys of spec table ``name`` (`SPEC_TABLES`) from ``table``: unknown and missing keys refused, each value
    of the type its `Key` declares (figures are checked by `_load_figures`), absent optional keys at their default."""
    where = (f"{name}." if name else "") if where is None else where
    if name:
        _expect(table, dict, where[:-1], file)
    keys = SPEC_TABLES[name]
    _check_keys(table, {key.name: key.required for key in keys}, where, file)
    values: dict[str, Any] = {}
    for key in keys:
        if key.name not in table:
            values[key.name] = key.default
            continue
        value = table[key.name]
        if key.type in (FIGURE, FIGURES):
            values[key.name] = value
            continue
        kind = {TABLES: dict, float: (int, float)}.get(key.type, key.type)
        _expect(value, kind, f"{where}{key.name}", file)
        if key.type is TABLES:
            for sub, inner in value.items():
                _expect(inner, dict, f"{where}{key.name}.{sub}", file)
        if key.bounds is not None and not key.bounds[0] <= value <= key.bounds[1]:
            raise SpecError(f"{file}: {where}{key.name} must be between {key.bounds[0]:g} and {key.bounds[1]:g}, "
                            f"got {value}")
        values[key.name] = value
    return values


def _check_keys(table: Mapping[str, Any], allowed: Mapping[str, bool], where: str, file: str) -> None:
    check_keys(table, allowed, where, file, SpecError)


def _expect(value: Any, kind: type | tuple[type, ...], key: str, file: str) -> Any:
    return expect(value, kind, key, file, SpecError)


_is_figure = is_number


def _missing_figures(table: Mapping[str, Any], figures: tuple[str, ...], where: str, file: str) -> None:
    for key in figures:
        if key not in table:
            raise SpecError(f"{file}: missing required key {where}{key!r}: give the figure and its source in "
                            f"{where}sources, or write {key} = \"unknown\" if the datasheet does not say")


def _load_sources(table: Any, figures: tuple[str, ...], where: str, file: str) -> dict[str, tuple[str, ...]]:
    _expect(table, dict, f"{where}sources", file)
    sources: dict[str, tuple[str, ...]] = {}
    for key, value in table.items():
        if key not in figures:
            raise SpecError(f"{file}: {where}sources.{key} names no figure; figures: {', '.join(figures)}")
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
            raise SpecError(f"{file}: {where}sources.{key} must be a source string or a list of them")
        sources[key] = tuple(items)
    return sources


def _load_figures(table: Mapping[str, Any], keys: tuple[str, ...], sources: Mapping[str, Any], where: str,
                  file: str) -> dict[str, Any]:
    """Each figure a positive number, a table of them (peak_gops) or "unknown"; a known one has a source."""
    figures: dict[str, Any] = {}
    for key in keys:
        value = table[key]
        if key == "peak_gops":
            _expect(value, dict, f"{where}peak_gops", file)
            for dtype, gops in value.items():
                if not (_is_figure(gops) or gops == UNKNOWN):
                    raise SpecError(f"{file}: {where}peak_gops.{dtype} must be a number or \"unknown\"")
            known = any(_is_figure(v) for v in value.values())
        else:
            if not (_is_figure(value) or value == UNKNOWN):
                raise SpecError(
                    f"{file}: {where}{key} must be a number or \"unknown\" (figures are never guessed), got {value!r}"
                )
            known = _is_figure(value)
        numbers = list(value.values()) if isinstance(value, dict) else [value]
        for number in numbers:
            if _is_figure(number) and number <= 0:
                raise SpecError(f"{file}: {where}{key} must be positive, got {number} (write \"unknown\" if not known)")
        if known and key not in sources:
            raise SpecError(f"{file}: {where}{key} has a value but no {where}sources.{key}: say where it comes from")
        figures[key] = dict(value) if isinstance(value, dict) else value
    return figures


def _load_unit(name: str, table: Any, backends: list[str], file: str) -> ComputeUnit:
    where = f"hardware.units.{name}."
    _expect(table, dict, where[:-1], file)
    _missing_figures(table, _UNIT_FIGURES, where, file)
    values = _read(table, "hardware.units.<name>", file, where)
    if values["kind"] not in UNIT_KINDS:
        raise SpecError(f"{file}: {where}kind must be one of {', '.join(UNIT_KINDS)}, got {values['kind']!r}")
    for backend in values["backends"]:
        if backend not in backends:
            raise SpecError(f"{file}: {where}backends names {backend!r}, which is not in backends {backends}")
    sources = _load_sources(values["sources"], _UNIT_FIGURES, where, file)
    figures = _load_figures(table, _UNIT_FIGURES, sources, where, file)
    return ComputeUnit(name=name, kind=values["kind"], compute=values["compute"], peak_gops=figures["peak_gops"],
                       power_w=figures["power_w"], backends=tuple(values["backends"]), sources=sources)


def _load_hardware(table: Mapping[str, Any], backends: list[str], file: str) -> Hardware:
    _missing_figures(table, HARDWARE_FIGURES, "hardware.", file)
    values = _read(table, "hardware", file)
    sources = _load_sources(values["sources"], HARDWARE_FIGURES + OPTIONAL_FIGURES, "hardware.", file)
    figures = _load_figures({**{k: UNKNOWN for k in OPTIONAL_FIGURES}, **table}, HARDWARE_FIGURES + OPTIONAL_FIGURES,
                            sources, "hardware.", file)
    units = {name: _load_unit(name, unit, backends, file) for name, unit in values["units"].items()}
    claimed: dict[str, str] = {}
    for unit in units.values():
        for backend in unit.backends:
            if backend in claimed:
                raise SpecError(f"{file}: backend {backend!r} is listed by hardware.units.{claimed[backend]} and "
                                f"hardware.units.{unit.name}: a backend runs on one unit")
            claimed[backend] = unit.name
    kinds = dict(values["kinds"])
    for figure, kind in kinds.items():
        value = figures.get(figure)
        if figure not in HARDWARE_FIGURES + OPTIONAL_FIGURES or not (is_number(value) or isinstance(value, Mapping)
                                                  and any(is_number(v) for v in value.values())):
            raise SpecError(f"{file}: hardware.kinds.{figure} names no figure with a value; figures: "
                            f"{', '.join(HARDWARE_FIGURES)}")
        if kind not in FIGURE_KINDS:
            raise SpecError(f"{file}: hardware.kinds.{figure} = {kind!r}: choose one of {', '.join(FIGURE_KINDS)}")
    return Hardware(chip=values["chip"], compute=values["compute"], figures=figures, sources=sources,
                    notes=values["notes"], units=units, kinds=kinds)


def _load_quantization(table: Mapping[str, Any], precisions: list[str], file: str) -> QuantizationSupport:
    values = _read(table, "quantization", file)
    activations = values["activation_dtypes"]
    if not activations or any(a not in ACTIVATION_DTYPES for a in activations):
        raise SpecError(
            f"{file}: quantization.activation_dtypes must list some of {', '.join(ACTIVATION_DTYPES)}, got {activations}"
        )
    blocks = values["int4_block_sizes"]
    if any(not isinstance(b, int) or isinstance(b, bool) or b < 16 or b & (b - 1) for b in blocks):
        raise SpecError(f"{file}: quantization.int4_block_sizes must be powers of two >= 16, got {blocks}")
    if "int4" in precisions and not blocks:
        raise SpecError(f"{file}: supports.precisions has int4, so quantization.int4_block_sizes is required")
    return QuantizationSupport(activation_dtypes=tuple(activations), per_channel=values["per_channel"],
                               symmetric_activations=values["symmetric_activations"], int4_block_sizes=tuple(blocks))


def _load_isa(table: Any, reach: Reach, file: str) -> Isa:
    """The declared ISA (or the one reach implies), checked against reach.arch and reach.cpu_flags."""
    if table is None:
        if reach.arch in KNOWN_FEATURES:
            present = from_cpuinfo(reach.arch, reach.cpu_flags)
            return Isa(reach.arch, tuple(f for f in KNOWN_FEATURES[reach.arch] if f in present))
        return Isa(reach.arch or "unknown")
    values = _read(table, "isa", file)
    arch, features = values["arch"], list(values["features"])
    archs = list(KNOWN_FEATURES) + list(ACCELERATOR_ARCHS)
    if arch not in archs:
        raise SpecError(f"{file}: isa.arch {arch!r} is not one chipfit knows; known: {', '.join(archs)}")
    unknown = unknown_features(arch, features)
    if unknown:
        known = ", ".join(KNOWN_FEATURES.get(arch, {})) or f"none (an {arch} declares no CPU features)"
        raise SpecError(f"{file}: isa.features names {', '.join(map(repr, unknown))}, unknown for {arch}; "
                        f"known: {known}")
    if reach.arch and arch in KNOWN_FEATURES and reach.arch != arch:
        raise SpecError(f"{file}: isa.arch = {arch!r} contradicts reach.arch = {reach.arch!r}")
    implied = sorted(from_cpuinfo(arch, reach.cpu_flags) - set(features))
    if implied:
        raise SpecError(f"{file}: reach.cpu_flags require {', '.join(implied)}, which isa.features does not declare "
                        f"({', '.join(features) or 'none'}): add them to isa.features or drop them from reach.cpu_flags")
    return Isa(arch, tuple(f for f in KNOWN_FEATURES.get(arch, {}) if f in features))


def spec_from_dict(data: Mapping[str, Any], file: str = "<spec>") -> TargetSpec:
    """Validate a parsed spec table and build the `TargetSpec`."""
    top = _read(data, "", file)
    if top["schema_version"] != SCHEMA_VERSION:
        raise SpecError(
            f"{file}: schema_version {top['schema_version']!r} is not supported; this chipfit reads {SCHEMA_VERSION}"
        )
    target_id = top["id"]
    if not target_id or any(c.isspace() or c in "/@\\" for c in target_id):
        raise SpecError(f"{file}: id {target_id!r} must be non-empty, without spaces, '/', '\\' or '@'")

    backends = top["backends"]
    if not backends or not all(isinstance(b, str) and b for b in backends):
        raise SpecError(f"{file}: backends must list at least one backend name, in order of preference")

    precisions = _read(top["supports"], "supports", file)["precisions"]
    for p in precisions:
        if p not in PRECISIONS:
            raise SpecError(f"{file}: supports.precisions has {p!r}; known precisions: {', '.join(PRECISIONS)}")
    default_precision = top["default_precision"]
    if default_precision not in precisions:
        raise SpecError(f"{file}: default_precision {default_precision!r} is not in supports.precisions {precisions}")

    reach_table = _read(top["reach"], "reach", file)
    if reach_table["kind"] not in REACH_KINDS:
        raise SpecError(f"{file}: reach.kind must be one of {', '.join(REACH_KINDS)}, got {reach_table['kind']!r}")
    if reach_table["kind"] == "rpc" and not reach_table["rpc_key"]:
        raise SpecError(f"{file}: reach.kind = \"rpc\" needs reach.rpc_key (the device key on the TVM RPC tracker)")
    reach = Reach(kind=reach_table["kind"], arch=reach_table["arch"], cpu_flags=tuple(reach_table["cpu_flags"]),
                  rpc_key=reach_table["rpc_key"], reason=reach_table["reason"])

    options = top["backend_options"]
    for name in options:
        if name not in backends:
            raise SpecError(f"{file}: backend_options.{name} is for a backend not listed in backends {backends}")

    tolerances: dict[str, Tolerance] = {}
    for precision, table in top["verify"].items():
        if precision not in precisions:
            raise SpecError(f"{file}: verify.{precision} is for a precision not in supports.precisions")
        values = _read(table, "verify.<precision>", file, f"verify.{precision}.")
        agreement = values["min_token_agreement"]
        tolerances[precision] = Tolerance(float(values["atol"]), float(values["rtol"]), float(values["min_cosine"]),
                                          float(agreement) if agreement is not None else None)
    for precision in precisions:
        if precision not in tolerances:
            raise SpecError(f"{file}: missing required key verify.{precision} (tolerance for a supported precision)")

    quantization = None
    if top["quantization"] is not None:
        quantization = _load_quantization(top["quantization"], precisions, file)
    elif any(p in QUANTIZED for p in precisions):
        raise SpecError(f"{file}: missing required key 'quantization' (supports.precisions lists a quantized precision)")

    fusions: tuple[str, ...] = ()
    if top["fusion"] is not None:
        rules = _read(top["fusion"], "fusion", file)["rules"]
        if not all(isinstance(r, str) and r for r in rules) or len(set(rules)) != len(rules):
            raise SpecError(f"{file}: fusion.rules must list distinct fusion names")
        fusions = tuple(rules)

    return TargetSpec(
        id=target_id,
        name=top["name"],
        vendor=top["vendor"],
        description=top["description"],
        backends=tuple(backends),
        build_all_backends=top["build_all_backends"],
        default_precision=default_precision,
        precisions=tuple(precisions),
        reach=reach,
        backend_options={k: dict(v) for k, v in options.items()},
        tolerances=tolerances,
        hardware=_load_hardware(top["hardware"], backends, file),
        quantization=quantization,
        fusions=fusions,
        isa=_load_isa(top["isa"], reach, file),
        source_file=file,
    )


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TargetSpec:
    """Read and validate one spec file. ``overrides`` merge into the parsed table first."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read target spec: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    if overrides:
        data = _merge(data, overrides)
    return spec_from_dict(data, str(path))


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


__all__ = [
    "ComputeUnit",
    "HARDWARE_FIGURES",
    "Key",
    "SPEC_TABLES",
    "UNIT_KINDS",
    "Hardware",
    "Isa",
    "PRECISIONS",
    "QuantizationSupport",
    "Reach",
    "SpecError",
    "TargetError",
    "TargetSpec",
    "Tolerance",
    "UNKNOWN",
    "load_spec",
    "spec_from_dict",
]
