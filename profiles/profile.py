"""Profile artifacts: measured where the chip is reachable, estimated where not, always labelled.

`profile_artifacts` takes every artifact under a folder and, for each one, picks a runner:

* ``device``: a device address is given and the artifact's backend has a device runner (TVM RPC):
  timed on the device the backend reaches;
* ``host``: the artifact runs on this machine with its own runtime: timed in a child process
  (`profiles.worker`), with peak memory, per-op times where the backend gives them, and energy
  when a meter is given;
* ``estimate``: everything else, from the target's datasheet model (`profiles.estimate`).

Every artifact also gets the estimate; the measured ones fit the model's efficiency, which is then
used for the estimate-only ones, and the fit's error is reported. ``profile.json`` is written
beside ``manifest.json`` atomically; a failed profile leaves the previous one in place.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from profiles.estimate import DEFAULT_EFFICIENCY, OVERHEAD_US_PER_OP, Estimate, estimate, fit_efficiency
from profiles.llm import check_lengths
from profiles.stats import summarize
from targets.backend import Device, DeviceError, NotRunnable
from targets.errors import ChipfitError, TargetError
from targets.files import utc_now, write_text_atomic
from targets.host import detect_host
from targets.manifest import Artifact, find_artifacts
from targets.profile import MEASURED_FIELDS, PROFILE_NAME, PROFILE_SCHEMA_VERSION, Profile
from targets.registry import backend_registry, compute_unit, target_registry
from targets.request import ProfileRequest
from targets.spec import TargetSpec

#: The Python API's name for profile settings (the same type a build request carries).
ProfileOptions = ProfileRequest


class ProfileError(ChipfitError):
    """A profile cannot be taken; the message names the artifact and the reason."""


def host_facts() -> dict[str, Any]:
    info = detect_host()
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "cpu": info.model_name,
        "vendor": info.vendor,
        "arch": info.arch,
        "cores": info.cores,
        "memory_gb": info.memory_gb,
        "isa": info.isa_features,
        "int8_arithmetic": info.isa.int8_arithmetic,
        "governor": governor.read_text().strip() if governor.exists() else "unknown (no cpufreq)",
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
    }


def _tool_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("chipfit", "onnxruntime", "onnxruntime-genai", "apache-tvm", "coremltools", "torch", "onnx",
                 "executorch", "openvino"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _measure_host(artifact: Artifact, options: ProfileRequest, spec_file: str | None = None) -> dict[str, Any]:
    request = {"artifact": str(artifact.path), "spec_file": spec_file, "runs": options.runs, "min_runs": options.min_runs,
               "max_runs": options.runs, "warmup": options.warmup, "budget_s": options.budget_s,
               "target_rel": options.target_rel, "threads": options.threads, "meter": options.meter,
               "prompt_lengths": list(options.prompt_lengths), "new_tokens": options.new_tokens,
               "sustained": options.sustained}
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


def _measure_host_processes(artifact: Artifact, options: ProfileRequest, spec_file: str | None) -> dict[str, Any]:
    """`_measure_host` in ``options.processes`` processes; samples pooled, with the size of each group."""
    results = []
    for _ in range(max(1, options.processes)):
        result = _measure_host(artifact, options, spec_file)
        if "error" in result or "not_runnable" in result or "llm" in result:
            return result  # a decoder's whole generations are timed in one process (each is many steps)
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


def _estimate(artifact: Artifact, target: TargetSpec, kind: str, efficiency: float, source: str,
              overhead_scale: float = 1.0) -> Estimate | None:
    """The roofline estimate on the compute unit the artifact's backend runs on (``kind``: what the backend
    declares; the spec may assign it to a unit instead)."""
    cost = artifact.manifest.cost
    if cost is None:
        return None
    figures, unit = target.figures_for(artifact.backend, kind)
    return replace(estimate(cost, figures, efficiency, source, overhead_us=OVERHEAD_US_PER_OP * overhead_scale),
                   compute_unit=unit)


@dataclass
class ProfileRun:
    """The profiles of one `profile_artifacts` call, with the efficiency fit they share."""

    profiles: list[Profile] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    fit: dict[str, Any] | None = None


def _unmeasured(artifact: Artifact, facts: Mapping[str, Any], tools: Mapping[str, str],
                options: ProfileRequest) -> dict[str, Any]:
    """A profile's fields before anything is measured: provenance, sizes, and empty measurements."""
    m = artifact.manifest
    return {
        "schema_version": PROFILE_SCHEMA_VERSION, "artifact": str(artifact.path), "artifact_digest": artifact.digest,
        "model": m.model.name, "target": artifact.target, "backend": artifact.backend, "precision": m.precision,
        "host": dict(facts), "tool_versions": dict(tools), "built_with": dict(m.toolchain),
        "settings": options.measurement_form(),
        "weight_mb": round((m.cost.weight_bytes if m.cost else artifact.size_bytes) / 1e6, 4),
        "artifact_mb": round(artifact.size_bytes / 1e6, 4),
        "numerics_status": m.numerics.status, "min_cosine": m.numerics.min_cosine,
        "measured_at": utc_now(), "runner": "estimate", "runner_description": "", "cpus": (), "latency": None,
        "latency_samples_ms": (), "latency_groups": (), "peak_memory_mb": None, "runner_baseline_mb": None,
        "per_op": (), "per_op_source": "", "energy_samples_mj": (), "energy_groups": (), "energy_detail": None,
        "energy_error": "", "not_measured_because": "", "llm": None, "reused_measurement": False,
        "latency_ms_p50": None, "latency_method": "", "energy_mj": None, "energy_method": "", "estimate": None,
        "estimate_fixed": None, "estimate_vs_measured": None, "memory_capacity_mb": None, "memory_error": "",
    }


def profile_artifacts(root: str | Path, options: ProfileRequest = ProfileRequest(),
                      progress: Callable[[str], None] = lambda m: None, registry=None, backends=None) -> ProfileRun:
    """Profile every artifact under ``root``; ``registry`` resolves target ids and ``backends`` backend names
    (default: the installed ones)."""
    root = Path(root)
    if not root.exists():
        raise ProfileError(f"{root}: no such artifact folder")
    artifacts = find_artifacts(root)
    if not artifacts:
        raise ProfileError(f"{root}: holds no chipfit artifact (no manifest.json at or under it)")
    for artifact in artifacts:
        if artifact.manifest.llm is not None:
            check_lengths(options.prompt_lengths, options.new_tokens, artifact.manifest.llm.context, str(artifact.path))
    registry = registry or target_registry()
    backends = backends or backend_registry()
    facts, tools = host_facts(), _tool_versions()
    run = ProfileRun()
    measured: list[tuple[Artifact, dict[str, Any], TargetSpec]] = []
    pending: list[tuple[Artifact, dict[str, Any], TargetSpec]] = []
    reused = 0
    for n, artifact in enumerate(artifacts, 1):
        label = f"{artifact.manifest.model.name}/{artifact.path.name}"
        problems = artifact.file_problems()
        if problems:
            run.errors[str(artifact.path)] = f"refusing to profile a modified artifact: {'; '.join(problems)}"
            continue
        try:
            target = registry.get(artifact.target)
        except TargetError as exc:
            run.errors[str(artifact.path)] = str(exc)
            continue
        profile = _unmeasured(artifact, facts, tools, options)
        previous = _reusable(artifact, profile, options)
        if previous is not None:
            profile.update({k: previous[k] for k in MEASURED_FIELDS}, reused_measurement=True)
            (pending if profile["runner"] == "estimate" else measured).append((artifact, profile, target))
            for key in ("latency_ms_p50", "latency_method", "energy_mj", "energy_method"):
                if previous["runner"] != "estimate" and not str(previous[key] or "").startswith("estimated"):
                    profile[key] = previous[key]  # measured figures are kept; estimated ones are recomputed below
            _check_memory(profile, target)
            reused += 1
            continue
        progress(f"[{n}/{len(artifacts)}] profiling {label}")  # only what is measured now (reuse is silent)
        try:
            if options.rpc:
                _profile_device(artifact, target, backends.get(artifact.backend), options, profile)
            if profile["runner"] == "estimate":
                result = _measure_host_processes(artifact, options, target.source_file)
                if "error" in result:
                    raise ProfileError(f"{artifact.path}: {result['error']}")
                if "not_runnable" in result:
                    profile["not_measured_because"] = (profile["not_measured_because"] + "; " if
                                                       profile["not_measured_because"] else "") + result["not_runnable"]
                else:
                    _fill_measured(profile, result)
            (pending if profile["runner"] == "estimate" else measured).append((artifact, profile, target))
        except (ProfileError, DeviceError) as exc:
            run.errors[str(artifact.path)] = str(exc)
            continue
        _check_memory(profile, target)
    if reused:
        progress(f"kept the measurements of {reused} unchanged artifact(s) on this host")
    decoders = [m for m in measured + pending if m[0].manifest.llm is not None]
    _estimate_decoders(decoders, options, facts, backends)
    measured = [m for m in measured if m[0].manifest.llm is None]
    pending = [m for m in pending if m[0].manifest.llm is None]
    # Fit the estimate's efficiency per backend on what was measured here, then estimate everything.
    pairs: dict[str, list[tuple[float, float, float]]] = {}
    for artifact, profile, target in measured:
        at_one = _estimate(artifact, target, compute_unit(backends, artifact.backend), 1.0, "unit")
        if at_one and at_one.latency_ms and profile["runner"] == "host":
            pairs.setdefault(artifact.backend, []).append(
                (at_one.latency_ms - at_one.overhead_ms, at_one.overhead_ms, profile["latency"].latency_ms_p50))
    fits = {backend: fit for backend, points in pairs.items() if (fit := fit_efficiency(points))}
    run.fit = {b: f.__dict__ for b, f in fits.items()} or None
    best = max(fits.items(), key=lambda item: item[1].efficiency, default=None)
    for artifact, profile, target in measured + pending:
        kind = compute_unit(backends, artifact.backend)
        scale = 1.0
        if artifact.backend in fits:
            fit = fits[artifact.backend]
            efficiency, source, scale = fit.efficiency, f"{artifact.backend}: {fit.source}", fit.overhead_scale
        elif best is not None:
            efficiency, source = best[1].efficiency, (f"{best[0]}'s fit on this host, standing in for {artifact.backend} "
                                                       "(the best-tuned runtime measured here)")
            scale = best[1].overhead_scale
        else:
            efficiency, source = DEFAULT_EFFICIENCY, "default (nothing measured here to fit it)"
        est = _estimate(artifact, target, kind, efficiency, source, scale)
        profile["estimate"] = est.to_dict() if est else None
        # The same model at a fixed efficiency: it moves only when the artifact or the spec does, not with
        # the fit of this run's measurements, so `chipfit compare` gates estimated figures on it.
        fixed = _estimate(artifact, target, kind, DEFAULT_EFFICIENCY, "fixed")
        profile["estimate_fixed"] = ({"efficiency": DEFAULT_EFFICIENCY, "latency_ms": fixed.latency_ms,
                                      "energy_mj": fixed.energy_mj} if fixed else None)
        if profile["runner"] == "estimate":
            profile["latency_ms_p50"] = est.latency_ms if est else None
            profile["latency_method"] = est.method if est else "unavailable (no cost in manifest)"
            profile["energy_mj"] = est.energy_mj if est else None
            profile["energy_method"] = est.method if est else "unavailable"
        elif profile["energy_mj"] is None and est is not None:
            profile["energy_mj"] = est.energy_mj
            profile["energy_method"] = est.method + " (no meter on this host)"
        if est and est.latency_ms and profile["latency"] is not None:
            profile["estimate_vs_measured"] = round(est.latency_ms / profile["latency"].latency_ms_p50, 3)
        _finish(artifact, profile, run)
    for artifact, profile, _ in decoders:
        _finish(artifact, profile, run)
    run.profiles.sort(key=lambda p: (p.model, p.target, p.backend))
    return run


def _finish(artifact: Artifact, profile: dict[str, Any], run: ProfileRun) -> None:
    """Write the profile beside the artifact, atomically, and keep it for the report."""
    if profile["memory_error"]:
        run.errors[str(artifact.path)] = profile["memory_error"]
    record = Profile(**profile)
    write_text_atomic(artifact.path / PROFILE_NAME, json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n")
    run.profiles.append(record)


def _estimate_decoders(decoders: list[tuple[Artifact, dict[str, Any], TargetSpec]], options: ProfileRequest,
                       facts: Mapping[str, Any], backends) -> None:
    """The roofline for every decoder LM; for measured ones also the bound they reached and the estimate's error."""
    from profiles.llm import (DEFAULT_BANDWIDTH_EFFICIENCY, DEFAULT_COMPUTE_EFFICIENCY, MIN_FIT_SECONDS, MODEL_NAME,
                              estimate_decoder, fit_efficiencies, host_bandwidth_gbs, roofline)

    if not decoders:
        return
    local_bandwidth: dict[str, Any] = {}

    def bandwidth_for(target: TargetSpec) -> tuple[float | None, str]:
        known = target.hardware.figures.get("memory_bandwidth_gbs")
        if isinstance(known, (int, float)):
            return float(known), f"{target.source_file}: hardware.memory_bandwidth_gbs"
        if target.reach.kind == "local":  # this machine: measure what the spec cannot say
            if "gbs" not in local_bandwidth:
                local_bandwidth["gbs"] = host_bandwidth_gbs()
            return local_bandwidth["gbs"], "measured on this machine (best of 5 read-only sweeps of 256 MiB on every core)"
        return None, "unknown"

    points: dict[str, list] = {}
    for artifact, profile, target in decoders:
        llm = profile["llm"] or {}
        if profile["runner"] == "host" and llm.get("prompts"):
            bandwidth, source = bandwidth_for(target)
            figures, _ = target.figures_for(artifact.backend, compute_unit(backends, artifact.backend))
            bound = roofline(artifact.manifest.llm, figures, llm, bandwidth, source)
            llm["roofline"] = bound
            first = llm["prompts"][0]
            # Below a millisecond per token the runtime's fixed cost per step, not the memory, sets the pace
            # (and the weights sit in the caches): such models tell nothing of the efficiency at scale.
            if (bound["decode_bound_tok_s"] and bound["prefill_bound_tok_s"] and first["decode_tok_s"]
                    and 1 / bound["decode_bound_tok_s"] >= MIN_FIT_SECONDS):
                points.setdefault(artifact.backend, []).append(
                    (1 / bound["decode_bound_tok_s"], 1 / first["decode_tok_s"], 1 / bound["prefill_bound_tok_s"],
                     1 / first["prefill_tok_s"]))
    fits = {backend: fit for backend, p in points.items() if (fit := fit_efficiencies(p))}
    for artifact, profile, target in decoders:
        bw_eff, comp_eff, eff_source = fits.get(artifact.backend) or (
            DEFAULT_BANDWIDTH_EFFICIENCY, DEFAULT_COMPUTE_EFFICIENCY,
            "default (no LLM of this backend measured here at a size that is memory-bound)")
        record = artifact.manifest.llm
        bandwidth, source = bandwidth_for(target)
        lengths = list(options.prompt_lengths)
        figures, unit = target.figures_for(artifact.backend, compute_unit(backends, artifact.backend))
        estimate = estimate_decoder(record, figures, lengths, bw_eff, comp_eff, eff_source,
                                    bandwidth, source)
        estimate["compute_unit"] = unit
        fixed = estimate_decoder(record, figures, lengths, DEFAULT_BANDWIDTH_EFFICIENCY,
                                 DEFAULT_COMPUTE_EFFICIENCY, "fixed", bandwidth, source)
        llm = dict(profile["llm"] or {})
        plan = record.memory_plan
        llm.update(kind="decoder", context=record.context, fits=plan.fits, memory_plan_bytes=plan.total_bytes,
                   max_context_that_fits=plan.max_context_that_fits, estimate=estimate)
        profile["estimate_fixed"] = {"efficiency": DEFAULT_BANDWIDTH_EFFICIENCY, "latency_ms": fixed["ms_per_token"],
                                     "energy_mj": fixed["j_per_generated_token"] * 1e3
                                     if fixed["j_per_generated_token"] else None}
        if profile["runner"] == "estimate":
            llm.update(method=estimate["method"], prompts=estimate["prompts"], depths=estimate["depths"],
                       **({"image": {**estimate["image"], "pixels": None}} if estimate.get("image") else {}))
            profile["latency_ms_p50"] = estimate["ms_per_token"]
            profile["latency_method"] = estimate["method"] if estimate["ms_per_token"] else \
                f"unavailable ({'; '.join(estimate['missing'])})"
            profile["energy_mj"] = estimate["j_per_generated_token"] * 1e3
            profile["energy_method"] = estimate["method"]
        else:
            first, guess = llm["prompts"][0], estimate["prompts"][0]
            llm["estimate_error_pct"] = {
                "decode_tok_s": _error(estimate["decode_tok_s"], first["decode_tok_s"]),
                "ttft_ms": _error(guess["ttft_ms_p50"], first["ttft_ms_p50"])}
            if profile["energy_mj"] is None:
                profile["energy_mj"] = estimate["j_per_generated_token"] * 1e3
                profile["energy_method"] = f"estimated:{MODEL_NAME} (no meter on this host)"
            if estimate["ms_per_token"] and profile["latency_ms_p50"]:
                profile["estimate_vs_measured"] = round(estimate["ms_per_token"] / profile["latency_ms_p50"], 3)
        profile["llm"] = llm


def _error(estimate: float | None, measured: float | None) -> float | None:
    return round((estimate / measured - 1) * 100, 1) if estimate and measured else None


def read_profile(path: Path) -> Profile:
    return Profile.from_dict(json.loads(Path(path).read_text()), str(path))


def _reusable(artifact: Artifact, profile: Mapping[str, Any], options: ProfileRequest) -> dict[str, Any] | None:
    """The existing profile's fields, if the same artifact was measured here the same way with the same runtimes."""
    path = artifact.path / PROFILE_NAME
    if not options.reuse or options.rpc or options.meter or not path.is_file():
        return None
    try:
        previous = read_profile(path)
    except (ValueError, ChipfitError):
        return None
    same_host = all(previous.host.get(k) == profile["host"].get(k) for k in ("cpu", "arch", "cores", "isa"))
    if (previous.artifact_digest == profile["artifact_digest"] and same_host
            and previous.tool_versions == profile["tool_versions"] and previous.settings == profile["settings"]
            and previous.runner in ("host", "estimate")):
        return {k: getattr(previous, k) for k in MEASURED_FIELDS + ("latency_ms_p50", "latency_method", "energy_mj",
                                                                   "energy_method")}
    return None


def _fill_measured(profile: dict[str, Any], result: Mapping[str, Any]) -> None:
    if "llm" in result:
        return _fill_decoder(profile, result)
    summary = summarize(result["samples_ms"])
    per_op = result.get("per_op")
    profile.update(
        runner="host",
        runner_description=result["runner_description"],
        cpus=tuple(result["cpus"]),
        latency=summary,
        latency_samples_ms=tuple(result["samples_ms"]),
        latency_groups=tuple(result.get("sample_groups") or [len(result["samples_ms"])]),
        latency_ms_p50=summary.latency_ms_p50,
        latency_method="measured:host",
        peak_memory_mb=round(result["peak_rss_mb"], 2),
        runner_baseline_mb=round(result["baseline_rss_mb"], 2),
        per_op=tuple((per_op or [])[:20]),
        per_op_source=result.get("per_op_source", ""),
    )
    if result.get("energy"):
        energy = result["energy"]
        profile["energy_mj"] = energy["energy_mj"]
        profile["energy_samples_mj"] = tuple(energy.get("samples_mj") or ())
        profile["energy_groups"] = tuple(energy.get("sample_groups") or [len(profile["energy_samples_mj"])])
        profile["energy_method"] = energy["method"]
        profile["energy_detail"] = energy
    elif result.get("energy_error"):
        profile["energy_error"] = result["energy_error"]


def _fill_decoder(profile: dict[str, Any], result: Mapping[str, Any]) -> None:
    """A decoder's measurement: the per-token decode time of the first prompt length is its latency (ms/token),
    its energy per generated token its energy (mJ/token); the rest (TTFT, rates, depths) under ``llm``."""
    from profiles.llm import summarize_measurement

    llm = summarize_measurement(result["llm"])
    first = llm["prompts"][0]
    samples = first["decode_ms_samples"]
    summary = summarize(samples)
    profile.update(runner="host", runner_description=result["runner_description"], cpus=tuple(result["cpus"]),
                   latency=summary, latency_samples_ms=tuple(samples), latency_groups=(len(samples),),
                   latency_ms_p50=summary.latency_ms_p50, latency_method="measured:host",
                   peak_memory_mb=round(result["peak_rss_mb"], 2), runner_baseline_mb=round(result["baseline_rss_mb"], 2),
                   per_op_source="not offered for decoder generations",
                   llm={"method": "measured:host", "load_s": result["load_s"], **llm})
    energy = llm.get("energy")
    if energy:
        profile["energy_mj"] = energy["j_per_generated_token"] * 1e3
        profile["energy_samples_mj"] = tuple(j * 1e3 for j in energy["j_per_generated_token_samples"])
        profile["energy_groups"] = (len(profile["energy_samples_mj"]),)
        profile["energy_method"] = energy["method"]
        profile["energy_detail"] = energy
        profile["llm"]["method"] = f"measured:host:{energy['method'].split(':', 1)[1]}"
    elif result.get("energy_error"):
        profile["energy_error"] = result["energy_error"]


def _profile_device(artifact: Artifact, target: TargetSpec, backend, options: ProfileRequest,
                    profile: dict[str, Any]) -> None:
    """Time the artifact on the device its backend reaches (``--rpc``), if the backend has a device runner."""
    key = options.key or target.reach.rpc_key
    if not key:
        raise ProfileError(f"{artifact.path}: --rpc given but no --key, and target {target.id} names no rpc_key")
    m = artifact.manifest
    if not backend.capabilities.device_timing:
        profile["not_measured_because"] = (f"not timed on {key}: backend {backend.name} has no device runner; its "
                                           "artifacts are timed here or estimated")
        return
    try:
        timing = backend.time_on_device(artifact.path, m.backend.options, m.signature, Device(options.rpc, key),
                                        options.runs)
    except NotRunnable as exc:
        profile["not_measured_because"] = f"not timed on {key}: {exc}"
        return
    summary = summarize(timing.samples_ms)
    profile.update(runner=f"rpc:{key}", runner_description=timing.description, latency=summary,
                   latency_samples_ms=tuple(timing.samples_ms), latency_groups=(len(timing.samples_ms),),
                   latency_ms_p50=summary.latency_ms_p50, latency_method=f"measured:rpc:{key}",
                   per_op=tuple(timing.per_op), per_op_source=timing.per_op_source)


def _check_memory(profile: dict[str, Any], target: TargetSpec) -> None:
    capacity = target.hardware.memory_bytes
    if capacity is None:
        return
    capacity_mb = capacity / 1e6
    need_mb = max(profile["peak_memory_mb"] or 0.0, profile["weight_mb"])
    profile["memory_capacity_mb"] = round(capacity_mb, 1)
    if need_mb > capacity_mb:
        profile["memory_error"] = (f"{profile['artifact']}: needs {need_mb:.0f} MB, target {target.id} has "
                                   f"{target.hardware.figures['memory_gb']} GB ({target.source_file}: hardware.memory_gb)")
