"""Profile artifacts: measured where the chip is reachable, estimated where not, always labelled.

`profile_artifacts` takes every artifact under a folder and, for each one, picks a runner:

* ``rpc``: a TVM artifact and ``--rpc`` given: timed on the device the tracker hands out;
* ``host``: the artifact runs on this machine with its own runtime: timed in a child process
  (`profiles.worker`), with peak memory, per-op times where the backend gives them, and energy
  when a meter is given;
* ``estimate``: everything else, from the target's datasheet model (`profiles.estimate`).

Every artifact also gets the estimate; the measured ones fit the model's efficiency, which is then
used for the estimate-only ones, and the fit's error is reported. ``profile.json`` is written
beside ``manifest.json`` atomically; a failed profile leaves the previous one in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from compiler.artifact import MANIFEST_NAME, Artifact, find_artifacts, utc_now, write_text_atomic
from compiler.passes.cost import GraphCost
from profiles.estimate import DEFAULT_EFFICIENCY, Estimate, estimate, fit_efficiency
from profiles.stats import summarize
from targets.host import detect_host
from targets.registry import target_registry
from targets.spec import TargetError

PROFILE_NAME = "profile.json"
PROFILE_SCHEMA_VERSION = 1


class ProfileError(Exception):
    """A profile cannot be taken; the message names the artifact and the reason."""


@dataclass(frozen=True)
class ProfileOptions:
    runs: int = 200  # most timed runs
    min_runs: int = 20
    warmup: int = 10
    budget_s: float = 10.0  # stop once the median is tight or this much time is spent
    target_rel: float = 0.01  # median CI half-width wanted, relative
    threads: int | None = None
    rpc: str | None = None  # tracker HOST:PORT
    key: str | None = None  # device key; default: the target's reach.rpc_key
    meter: str | None = None
    timeout_s: float = 600.0
    #: independent runner processes per artifact, one after the other: a machine that lands a process in a
    #: slower or faster state (core, frequency, neighbours) for its whole life shows it only across processes,
    #: and `chipfit compare` resamples processes as well as runs when there are several
    processes: int = 1
    #: keep the measurements of a profile.json already beside an artifact when the artifact, the host and
    #: the runtime versions are unchanged (a resumed or repeated release does not re-time what it timed)
    reuse: bool = False


#: the measured part of a profile, the part `reuse` keeps
_MEASURED_KEYS = ("runner", "runner_description", "cpus", "latency", "latency_samples_ms", "latency_ms_p50",
                  "latency_method", "latency_groups", "peak_memory_mb", "runner_baseline_mb", "per_op", "per_op_source", "energy_mj",
                  "energy_samples_mj", "energy_groups", "energy_method", "energy_detail", "energy_error", "not_measured_because")


def artifact_digest(artifact: Artifact) -> str:
    return hashlib.sha256((artifact.path / MANIFEST_NAME).read_bytes()).hexdigest()


def host_facts() -> dict[str, Any]:
    info = detect_host()
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "cpu": info.model_name,
        "arch": info.arch,
        "cores": info.cores,
        "isa": info.isa_features,
        "governor": governor.read_text().strip() if governor.exists() else "unknown (no cpufreq)",
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
    }


def _tool_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("chipfit", "onnxruntime", "apache-tvm", "coremltools", "torch", "onnx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _measure_host(artifact: Artifact, options: ProfileOptions, spec_file: str | None = None) -> dict[str, Any]:
    request = {"artifact": str(artifact.path), "spec_file": spec_file, "runs": options.runs, "min_runs": options.min_runs,
               "max_runs": options.runs, "warmup": options.warmup, "budget_s": options.budget_s,
               "target_rel": options.target_rel, "threads": options.threads, "meter": options.meter}
    env = dict(os.environ)
    if options.threads:
        env.update(TVM_NUM_THREADS=str(options.threads), OMP_NUM_THREADS=str(options.threads))
    try:
        done = subprocess.run([sys.executable, "-m", "profiles.worker"], input=json.dumps(request), capture_output=True,
                              text=True, timeout=options.timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        raise ProfileError(f"{artifact.path}: the runner did not finish in {options.timeout_s:.0f} s") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise ProfileError(f"{artifact.path}: the runner crashed (exit {done.returncode}): {' | '.join(tail)}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise ProfileError(f"{artifact.path}: the runner printed no result ({done.stderr.strip()[-200:]})") from exc


def _measure_host_processes(artifact: Artifact, options: ProfileOptions, spec_file: str | None) -> dict[str, Any]:
    """`_measure_host` in ``options.processes`` processes; samples pooled, with the size of each group."""
    results = []
    for _ in range(max(1, options.processes)):
        result = _measure_host(artifact, options, spec_file)
        if "error" in result or "not_runnable" in result:
            return result
        results.append(result)
    merged = dict(results[0])
    merged["samples_ms"] = [x for r in results for x in r["samples_ms"]]
    merged["sample_groups"] = [len(r["samples_ms"]) for r in results]
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    energies = [r["energy"] for r in results if r.get("energy")]
    if len(energies) > 1:
        merged["energy"] = {**energies[0], "samples_mj": [x for e in energies for x in e["samples_mj"]],
                            "sample_groups": [len(e["samples_mj"]) for e in energies]}
        merged["energy"]["energy_mj"] = statistics.median(merged["energy"]["samples_mj"])
    return merged


def _estimate(artifact: Artifact, figures: Mapping[str, Any], efficiency: float, source: str) -> Estimate | None:
    cost = artifact.manifest.get("cost")
    if not cost:
        return None
    return estimate(GraphCost.from_dict(cost), figures, efficiency, source)


@dataclass
class ProfileRun:
    """The profiles of one `profile_artifacts` call, with the efficiency fit they share."""

    profiles: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    fit: dict[str, Any] | None = None


def profile_artifacts(root: str | Path, options: ProfileOptions = ProfileOptions(),
                      progress: Callable[[str], None] = lambda m: None, registry=None) -> ProfileRun:
    """Profile every artifact under ``root``; ``registry`` resolves target ids (default: the installed targets)."""
    root = Path(root)
    if not root.exists():
        raise ProfileError(f"{root}: no such artifact folder")
    artifacts = find_artifacts(root)
    if not artifacts:
        raise ProfileError(f"{root}: holds no chipfit artifact (no manifest.json at or under it)")
    registry = registry or target_registry()
    facts, tools = host_facts(), _tool_versions()
    run = ProfileRun()
    measured: list[tuple[Artifact, dict[str, Any], Mapping[str, Any]]] = []
    pending: list[tuple[Artifact, dict[str, Any], Mapping[str, Any]]] = []
    for n, artifact in enumerate(artifacts, 1):
        label = f"{artifact.manifest['model']['name']}/{artifact.path.name}"
        progress(f"[{n}/{len(artifacts)}] profiling {label}")
        problems = artifact.file_problems()
        if problems:
            run.errors[str(artifact.path)] = f"refusing to profile a modified artifact: {'; '.join(problems)}"
            continue
        try:
            target = registry.get(artifact.target)
        except TargetError as exc:
            run.errors[str(artifact.path)] = str(exc)
            continue
        profile = {
            "schema_version": PROFILE_SCHEMA_VERSION,
            "artifact": str(artifact.path),
            "artifact_digest": artifact_digest(artifact),
            "model": artifact.manifest["model"]["name"],
            "target": artifact.target,
            "backend": artifact.backend,
            "precision": artifact.manifest["precision"],
            "host": facts,
            "tool_versions": tools,
            "built_with": artifact.manifest.get("toolchain", {}),
            "weight_mb": round((artifact.manifest.get("cost") or {}).get("weight_bytes", artifact.size_bytes) / 1e6, 4),
            "artifact_mb": round(artifact.size_bytes / 1e6, 4),
        }
        previous = _reusable(artifact, profile, options)
        if previous is not None:
            profile.update({k: previous[k] for k in _MEASURED_KEYS if k in previous},
                           measured_at=previous["measured_at"], reused_measurement=True)
            (pending if profile["runner"] == "estimate" else measured).append((artifact, profile, target.hardware.figures))
            # Estimated figures are recomputed below with this run's fit.
            if profile["runner"] == "estimate":
                for key in ("latency_ms_p50", "latency_method"):
                    profile.pop(key, None)
            if str(profile.get("energy_method", "")).startswith("estimated"):
                profile.pop("energy_mj", None)
                profile.pop("energy_method", None)
            _check_memory(profile, target)
            continue
        profile["measured_at"] = utc_now()
        try:
            if options.rpc and artifact.backend == "tvm":
                _profile_rpc(artifact, target, options, profile)
                measured.append((artifact, profile, target.hardware.figures))
            else:
                result = _measure_host_processes(artifact, options, target.source_file)
                if "error" in result:
                    raise ProfileError(f"{artifact.path}: {result['error']}")
                if "not_runnable" in result:
                    profile["runner"] = "estimate"
                    profile["not_measured_because"] = result["not_runnable"]
                    pending.append((artifact, profile, target.hardware.figures))
                else:
                    _fill_measured(profile, result)
                    measured.append((artifact, profile, target.hardware.figures))
        except ProfileError as exc:
            run.errors[str(artifact.path)] = str(exc)
            continue
        _check_memory(profile, target)
    # Fit the estimate's efficiency per backend on what was measured here, then estimate everything.
    pairs: dict[str, list[tuple[float, float]]] = {}
    for artifact, profile, figures in measured:
        at_one = _estimate(artifact, figures, 1.0, "unit")
        if at_one and at_one.latency_ms and profile["runner"] == "host":
            pairs.setdefault(artifact.backend, []).append(
                (at_one.latency_ms - at_one.overhead_ms, at_one.overhead_ms, profile["latency"]["latency_ms_p50"]))
    fits = {backend: fit for backend, points in pairs.items() if (fit := fit_efficiency(points))}
    run.fit = {b: f.__dict__ for b, f in fits.items()} or None
    best = max(fits.items(), key=lambda item: item[1].efficiency, default=None)
    for artifact, profile, figures in measured + pending:
        if artifact.backend in fits:
            fit = fits[artifact.backend]
            efficiency, source = fit.efficiency, f"{artifact.backend}: {fit.source}"
        elif best is not None:
            efficiency, source = best[1].efficiency, (f"{best[0]}'s fit on this host, standing in for {artifact.backend} "
                                                       "(the best-tuned runtime measured here)")
        else:
            efficiency, source = DEFAULT_EFFICIENCY, "default (nothing measured here to fit it)"
        est = _estimate(artifact, figures, efficiency, source)
        profile["estimate"] = est.to_dict() if est else None
        # The same model at a fixed efficiency: it moves only when the artifact or the spec does, not with
        # the fit of this run's measurements, so `chipfit compare` gates estimated figures on it.
        fixed = _estimate(artifact, figures, DEFAULT_EFFICIENCY, "fixed")
        profile["estimate_fixed"] = ({"efficiency": DEFAULT_EFFICIENCY, "latency_ms": fixed.latency_ms,
                                      "energy_mj": fixed.energy_mj} if fixed else None)
        if profile["runner"] == "estimate":
            profile["latency_ms_p50"] = est.latency_ms if est else None
            profile["latency_method"] = est.method if est else "unavailable (no cost in manifest)"
            profile["energy_mj"] = est.energy_mj if est else None
            profile["energy_method"] = est.method if est else "unavailable"
        elif profile.get("energy_mj") is None and est is not None:
            profile["energy_mj"] = est.energy_mj
            profile["energy_method"] = est.method + " (no meter on this host)"
        if est and est.latency_ms and profile.get("latency"):
            profile["estimate_vs_measured"] = round(est.latency_ms / profile["latency"]["latency_ms_p50"], 3)
        if profile.get("memory_error"):
            run.errors[str(artifact.path)] = profile["memory_error"]
        write_text_atomic(artifact.path / PROFILE_NAME, json.dumps(profile, indent=2, sort_keys=True) + "\n")
        run.profiles.append(profile)
    run.profiles.sort(key=lambda p: (p["model"], p["target"], p["backend"]))
    return run


def _reusable(artifact: Artifact, profile: Mapping[str, Any], options: ProfileOptions) -> dict[str, Any] | None:
    """The existing profile.json's measurements, if the same artifact was measured here with the same runtimes."""
    path = artifact.path / PROFILE_NAME
    if not options.reuse or options.rpc or options.meter or not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except ValueError:
        return None
    same_host = all(previous.get("host", {}).get(k) == profile["host"].get(k) for k in ("cpu", "arch", "cores"))
    if (previous.get("schema_version") == PROFILE_SCHEMA_VERSION and previous.get("artifact_digest") ==
            profile["artifact_digest"] and same_host and previous.get("tool_versions") == profile["tool_versions"]
            and previous.get("measured_at") and previous.get("runner") in ("host", "estimate")
            and (previous["runner"] == "estimate" or len(previous.get("latency_groups") or [1]) == max(1, options.processes))):
        return previous
    return None


def _fill_measured(profile: dict[str, Any], result: Mapping[str, Any]) -> None:
    summary = summarize(result["samples_ms"])
    profile.update(
        runner="host",
        runner_description=result["runner_description"],
        cpus=result["cpus"],
        latency=summary.to_dict(),
        latency_samples_ms=result["samples_ms"],
        latency_groups=result.get("sample_groups") or [len(result["samples_ms"])],
        latency_ms_p50=summary.latency_ms_p50,
        latency_method="measured:host",
        peak_memory_mb=round(result["peak_rss_mb"], 2),
        runner_baseline_mb=round(result["baseline_rss_mb"], 2),
        per_op=(result.get("per_op") or [])[:20],
        per_op_source="onnxruntime profiler" if result.get("per_op") else "not offered by this backend's runtime",
    )
    if result.get("energy"):
        profile["energy_mj"] = result["energy"]["energy_mj"]
        profile["energy_samples_mj"] = list(result["energy"].get("samples_mj") or [])
        profile["energy_groups"] = list(result["energy"].get("sample_groups") or [len(profile["energy_samples_mj"])])
        profile["energy_method"] = result["energy"]["method"]
        profile["energy_detail"] = result["energy"]
    elif result.get("energy_error"):
        profile["energy_error"] = result["energy_error"]


def _profile_rpc(artifact: Artifact, target, options: ProfileOptions, profile: dict[str, Any]) -> None:
    from profiles.rpc import RpcError, time_remote

    key = options.key or target.reach.rpc_key
    if not key:
        raise ProfileError(f"{artifact.path}: --rpc given but no --key, and target {target.id} names no rpc_key")
    try:
        timing = time_remote(artifact.path, artifact.manifest, options.rpc, key)
    except RpcError as exc:
        raise ProfileError(f"{artifact.path}: {exc}") from exc
    summary = summarize(timing.samples_ms)
    profile.update(runner=f"rpc:{key}", runner_description=f"TVM RPC time evaluator on {timing.device}",
                   latency=summary.to_dict(), latency_samples_ms=list(timing.samples_ms),
                   latency_ms_p50=summary.latency_ms_p50, latency_method=f"measured:rpc:{key}",
                   per_op=[], per_op_source="not offered over TVM RPC")


def _check_memory(profile: dict[str, Any], target) -> None:
    capacity = target.hardware.figures.get("memory_gb")
    if isinstance(capacity, (int, float)) and not isinstance(capacity, bool):
        need_mb = max(profile.get("peak_memory_mb") or 0.0, profile["weight_mb"])
        profile["memory_capacity_mb"] = capacity * 1024
        if need_mb > capacity * 1024:
            profile["memory_error"] = (f"{profile['artifact']}: needs {need_mb:.0f} MB, target {target.id} has "
                                       f"{capacity} GB ({target.source_file}: hardware.memory_gb)")
