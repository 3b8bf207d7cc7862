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
    # also every build option by its name (targets/request.py): samples, eval, tokenizer, method,
    # activation_dtype, block_size, accuracy_budget, fusion, explain_fusion, backend, context, ...

    [thresholds]                               # largest accepted current/baseline ratio; accuracy: cosine drop
    latency = 1.10
    [thresholds.target.arm64-cortex-a76]
    latency = 1.25

    [target.arm64-cortex-a76]                  # optional; per target, for every model: the backend to build with
    backend = "onnxruntime"                    # (a model's own `backend` key wins)

    [profile]                                  # optional; profiling after the build
    enabled = true
    runs = 200                                 # and every profile option by its name (ProfileRequest)
    budget_s = 10.0

Every key is checked: an unknown or misspelt key is an error naming the file and the key, and so is
a path that does not exist or a precision a target does not build, all before any work starts.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from compiler.errors import UsageError
from compiler.options import read_table, release_keys
from profiles.compare import DEFAULT_THRESHOLDS
from targets.request import PRECISIONS, BuildRequest, ModelSource, ProfileRequest, check_request, set_options
from targets.schema import check_keys, expect
from targets.signature import parse_input_override


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: str  # absolute path, or "example"
    precisions: tuple[str, ...] = ("default",)
    targets: tuple[str, ...] = ()
    #: the options of this model's cells; each cell fills in its target and precision
    request: BuildRequest | None = None

    @property
    def options(self) -> BuildRequest:
        return self.request or BuildRequest(ModelSource(self.path, self.name), "")


@dataclass(frozen=True)
class ReleaseConfig:
    file: Path
    name: str
    models: tuple[ModelEntry, ...]
    #: target ids and spec file paths (absolute), as written; resolved by the driver
    targets: tuple[str, ...]
    thresholds: Mapping[str, float] = field(default_factory=dict)
    target_thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    profile: ProfileRequest = ProfileRequest()
    profile_enabled: bool = True
    #: per target id: options that apply to every model's cells for it (``[target.<id>] backend = "tvm"``)
    target_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def thresholds_dict(self) -> dict[str, Any]:
        return {"default": {**DEFAULT_THRESHOLDS, **self.thresholds},
                "target": {t: dict(v) for t, v in self.target_thresholds.items()}}


_TOP = {"name", "targets", "model", "thresholds", "profile", "target"}
#: options a release may set per target in ``[target.<id>]``
_TARGET_OPTIONS = {"backend"}
#: the model table's own keys; every other key is a build option (see targets.request)
_MODEL_OWN = {"name", "path", "precision", "targets"}
_PATH_OPTIONS = ("calibration", "samples", "eval", "tokenizer")


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str, file: Path) -> None:
    check_keys(table, allowed, where, str(file), UsageError)


def _typed(value: Any, kind: type | tuple[type, ...], where: str, file: Path) -> Any:
    return expect(value, kind, where, str(file), UsageError)


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
    _unknown(table, _MODEL_OWN | (release_keys(BuildRequest) - {"name", "path", "target"}), where, file)
    if "path" not in table:
        raise UsageError(f"{file}: model[{n}] has no 'path' (a .pt2 / .onnx file, a Hugging Face model folder, "
                         "or \"example\")")
    path = _path(table["path"], where + "path", file, allow=("example",))
    if path != "example" and not Path(path).is_dir() and Path(path).suffix.lower() not in (".pt2", ".onnx"):
        raise UsageError(f"{file}: {where}path = {table['path']!r}: chipfit reads .pt2 and .onnx files and "
                         "Hugging Face model folders")
    default_name = "example" if path == "example" else Path(path).stem
    name = _typed(table.get("name", default_name), str, where + "name", file)
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"{file}: {where}name = {name!r}: use letters, digits, '-', '_' or '.' (it names a folder)")
    precisions = _strings(table.get("precision", "default"), where + "precision", file)
    for p in precisions:
        if p not in PRECISIONS + ("default",):
            raise UsageError(f"{file}: {where}precision {p!r}: choose from {', '.join(PRECISIONS)} or \"default\"")
    if len(set(precisions)) != len(precisions):
        raise UsageError(f"{file}: {where}precision lists a precision twice: {list(precisions)}")
    values = read_table({k: v for k, v in table.items() if k not in _MODEL_OWN}, BuildRequest, where, str(file))
    for text in values.get("inputs", ()):
        try:
            parse_input_override(text)
        except UsageError as exc:
            raise UsageError(f"{file}: {where}inputs: {exc}") from None
    for key in _PATH_OPTIONS:
        if key in values:
            values[key] = _path(values[key], where + key, file, allow=("random",) if key == "calibration" else ())
    request = BuildRequest(ModelSource(path, name), "").with_options(**values)
    check_request(request, lambda o: f"{file}: {where}{o.name}")
    return ModelEntry(
        name=name, path=path, precisions=precisions,
        targets=tuple(_target_ref(t, file) for t in _strings(table.get("targets", []), where + "targets", file)),
        request=request,
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
    _unknown(profile_raw, release_keys(ProfileRequest) | {"enabled"}, "profile.", file)
    profile = set_options(ProfileRequest(), read_table(profile_raw, ProfileRequest, "profile.", str(file)))
    check_request(BuildRequest(ModelSource("example", "x"), "", profile=profile), lambda o: f"{file}: profile.{o.name}")
    enabled = _typed(profile_raw.get("enabled", True), bool, "profile.enabled", file)
    target_options = {}
    for target_id, table in _typed(data.get("target", {}), dict, "target", file).items():
        where = f"target.{target_id}."
        _unknown(_typed(table, dict, f"target.{target_id}", file), _TARGET_OPTIONS, where, file)
        target_options[target_id] = read_table(table, BuildRequest, where, str(file), only=_TARGET_OPTIONS)
    name = _typed(data.get("name", file.stem), str, "name", file)
    return ReleaseConfig(file, name, models, targets, thresholds, target_thresholds, profile, enabled, target_options)
