"""``release.toml``: which models, at which precisions, for which targets, gated by which thresholds.

    name = "digits-release"                    # optional; recorded in dist/index.json
    targets = ["host", "arm64-cortex-a76", "specs/my-npu.toml"]   # ids, or spec files (relative paths)

    [[model]]
    name = "digits"                            # optional; default: the file's stem ("example" for the bundled one)
    path = "example"                           # a .pt2 / .onnx file (relative to this file) or "example"
    inputs = ["image=1x1x8x8"]                 # optional shape overrides, as `chipfit build --input`
    precision = ["fp32", "int8"]               # optional; a string, a list, or "default" (each target's own)
    calibration = "calib/"                     # .npz, a folder, or "random"; needed for int8 (not for "example")
    targets = ["host"]                         # optional; default: the top-level list
    # also: samples, eval, tokenizer, method, activation_dtype, block_size, accuracy_budget, fusion

    [thresholds]                               # largest accepted current/baseline ratio; accuracy: cosine drop
    latency = 1.10
    [thresholds.target.arm64-cortex-a76]
    latency = 1.25

    [profile]                                  # optional; profiling after the build
    enabled = true
    runs = 200
    budget_s = 10.0

Every key is checked: an unknown or misspelt key is an error naming the file and the key, and so is
a path that does not exist or a precision a target does not build, all before any work starts.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from calibration.statistics import METHODS
from compiler.errors import UsageError
from compiler.signature import parse_input_override
from profiles.compare import DEFAULT_THRESHOLDS

PRECISIONS = ("fp32", "fp16", "int8", "int4")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: str  # absolute path, or "example"
    inputs: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("default",)
    targets: tuple[str, ...] = ()
    calibration: str | None = None
    samples: str | None = None
    eval: str | None = None
    tokenizer: str | None = None
    method: str = "minmax"
    activation_dtype: str | None = None
    block_size: int | None = None
    accuracy_budget: float | None = None
    fusion: bool = True


@dataclass(frozen=True)
class ProfileSettings:
    enabled: bool = True
    runs: int = 200
    warmup: int = 10
    budget_s: float = 10.0
    threads: int | None = None
    processes: int = 1
    rpc: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class ReleaseConfig:
    file: Path
    name: str
    models: tuple[ModelEntry, ...]
    #: target ids and spec file paths (absolute), as written; resolved by the driver
    targets: tuple[str, ...]
    thresholds: Mapping[str, float] = field(default_factory=dict)
    target_thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    profile: ProfileSettings = ProfileSettings()

    def thresholds_dict(self) -> dict[str, Any]:
        return {"default": {**DEFAULT_THRESHOLDS, **self.thresholds},
                "target": {t: dict(v) for t, v in self.target_thresholds.items()}}


_TOP = {"name", "targets", "model", "thresholds", "profile"}
_MODEL = {"name", "path", "inputs", "precision", "targets", "calibration", "samples", "eval", "tokenizer",
          "method", "activation_dtype", "block_size", "accuracy_budget", "fusion"}
_PROFILE = {"enabled", "runs", "warmup", "budget_s", "threads", "processes", "rpc", "key"}


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str, file: Path) -> None:
    for key in table:
        if key not in allowed:
            raise UsageError(f"{file}: unknown key {where}{key!r}; allowed here: {', '.join(sorted(allowed))}")


def _typed(value: Any, kind: type | tuple[type, ...], where: str, file: Path) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # bool is an int to isinstance
        raise UsageError(f"{file}: {where} must be a number, not a boolean")
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise UsageError(f"{file}: {where} must be {names}, got {type(value).__name__} {value!r}")
    return value


def _strings(value: Any, where: str, file: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    _typed(value, list, where, file)
    for item in value:
        _typed(item, str, f"{where} item", file)
    return tuple(value)


def _path(value: Any, where: str, file: Path, allow: tuple[str, ...] = ()) -> str:
    _typed(value, str, where, file)
    if value in allow:
        return value
    path = (file.parent / value).resolve()
    if not path.exists():
        raise UsageError(f"{file}: {where} = {value!r}: no such file or folder ({path})")
    return str(path)


def _thresholds(table: Mapping[str, Any], where: str, file: Path) -> dict[str, float]:
    out = {}
    for metric, value in table.items():
        if metric not in DEFAULT_THRESHOLDS:
            raise UsageError(f"{file}: unknown metric {where}{metric!r}; metrics: {', '.join(DEFAULT_THRESHOLDS)}")
        out[metric] = float(_typed(value, (int, float), f"{where}{metric}", file))
        if out[metric] <= 0:
            raise UsageError(f"{file}: {where}{metric} = {value} must be positive")
    return out


def _model(table: Any, n: int, file: Path) -> ModelEntry:
    where = f"model[{n}]."
    _typed(table, dict, f"model[{n}]", file)
    _unknown(table, _MODEL, where, file)
    if "path" not in table:
        raise UsageError(f"{file}: model[{n}] has no 'path' (a .pt2 / .onnx file, or \"example\")")
    path = _path(table["path"], where + "path", file, allow=("example",))
    if path != "example" and Path(path).suffix.lower() not in (".pt2", ".onnx"):
        raise UsageError(f"{file}: {where}path = {table['path']!r}: chipfit reads .pt2 and .onnx files")
    default_name = "example" if path == "example" else Path(path).stem
    name = _typed(table.get("name", default_name), str, where + "name", file)
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"{file}: {where}name = {name!r}: use letters, digits, '-', '_' or '.' (it names a folder)")
    inputs = _strings(table.get("inputs", []), where + "inputs", file)
    for text in inputs:
        try:
            parse_input_override(text)
        except UsageError as exc:
            raise UsageError(f"{file}: {where}inputs: {exc}") from None
    precisions = _strings(table.get("precision", "default"), where + "precision", file)
    for p in precisions:
        if p not in PRECISIONS + ("default",):
            raise UsageError(f"{file}: {where}precision {p!r}: choose from {', '.join(PRECISIONS)} or \"default\"")
    if len(set(precisions)) != len(precisions):
        raise UsageError(f"{file}: {where}precision lists a precision twice: {list(precisions)}")
    method = _typed(table.get("method", "minmax"), str, where + "method", file)
    if method not in METHODS:
        raise UsageError(f"{file}: {where}method {method!r}: choose from {', '.join(METHODS)}")
    opt = {k: _path(table[k], where + k, file, allow=("random",) if k == "calibration" else ())
           for k in ("calibration", "samples", "eval", "tokenizer") if k in table}
    block = table.get("block_size")
    budget = table.get("accuracy_budget")
    return ModelEntry(
        name=name, path=path, inputs=inputs, precisions=precisions,
        targets=tuple(_target_ref(t, file) for t in _strings(table.get("targets", []), where + "targets", file)),
        method=method,
        activation_dtype=_typed(table["activation_dtype"], str, where + "activation_dtype", file)
        if "activation_dtype" in table else None,
        block_size=_typed(block, int, where + "block_size", file) if block is not None else None,
        accuracy_budget=float(_typed(budget, (int, float), where + "accuracy_budget", file)) if budget is not None else None,
        fusion=_typed(table.get("fusion", True), bool, where + "fusion", file),
        **opt,
    )


def _target_ref(text: str, file: Path) -> str:
    """A target id stays as written; a spec file (``*.toml``) becomes an absolute path."""
    if text.endswith(".toml"):
        return _path(text, "targets", file)
    return text


def load_release(path: str | Path) -> ReleaseConfig:
    file = Path(path).resolve()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such release file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    _unknown(data, _TOP, "", file)
    models_raw = data.get("model")
    if not models_raw:
        raise UsageError(f"{file}: no [[model]] tables: list at least one model to release")
    models = tuple(_model(m, n, file) for n, m in enumerate(_typed(models_raw, list, "model", file)))
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"{file}: model name(s) {', '.join(duplicates)} used twice; give each [[model]] a distinct name")
    targets = tuple(_target_ref(t, file) for t in _strings(data.get("targets", []), "targets", file))
    for n, m in enumerate(models):
        if not (m.targets or targets):
            raise UsageError(f"{file}: model[{n}] ({m.name}) has no targets: add `targets = [...]` at the top or to the model")
    raw_thresholds = _typed(data.get("thresholds", {}), dict, "thresholds", file)
    per_target = _typed(raw_thresholds.get("target", {}), dict, "thresholds.target", file)
    thresholds = _thresholds({k: v for k, v in raw_thresholds.items() if k != "target"}, "thresholds.", file)
    target_thresholds = {t: _thresholds(_typed(v, dict, f"thresholds.target.{t}", file), f"thresholds.target.{t}.", file)
                         for t, v in per_target.items()}
    profile_raw = _typed(data.get("profile", {}), dict, "profile", file)
    _unknown(profile_raw, _PROFILE, "profile.", file)
    defaults = ProfileSettings()
    profile = ProfileSettings(
        enabled=_typed(profile_raw.get("enabled", defaults.enabled), bool, "profile.enabled", file),
        runs=_typed(profile_raw.get("runs", defaults.runs), int, "profile.runs", file),
        warmup=_typed(profile_raw.get("warmup", defaults.warmup), int, "profile.warmup", file),
        budget_s=float(_typed(profile_raw.get("budget_s", defaults.budget_s), (int, float), "profile.budget_s", file)),
        threads=_typed(profile_raw["threads"], int, "profile.threads", file) if "threads" in profile_raw else None,
        processes=_typed(profile_raw.get("processes", defaults.processes), int, "profile.processes", file),
        rpc=_typed(profile_raw["rpc"], str, "profile.rpc", file) if "rpc" in profile_raw else None,
        key=_typed(profile_raw["key"], str, "profile.key", file) if "key" in profile_raw else None,
    )
    name = _typed(data.get("name", file.stem), str, "name", file)
    return ReleaseConfig(file, name, models, targets, thresholds, target_thresholds, profile)
