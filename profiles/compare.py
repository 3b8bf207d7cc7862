"""Compare profiles against a baseline: a verdict per model x target x metric, noise-aware.

Measured latency and energy are compared on their raw samples (timed runs; the meter's repeated
loops): a seeded bootstrap gives a 95% interval for the ratio of medians (current / baseline), and a
regression is reported only when the ratio is beyond the threshold *and* the whole interval is
above 1 (beyond the noise). Estimated and deterministic figures (size, estimated latency/energy, peak
memory, accuracy) are compared directly.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from targets.comparison import Verdict
from targets.errors import ChipfitError
from targets.profile import PROFILE_NAME, Profile
from targets.release_index import INDEX_NAME, ReleaseIndex

#: Largest accepted current/baseline ratio per metric (accuracy: largest accepted drop in cosine).
#: Decoder LMs: decode (ms per generated token), ttft (time to first token at the shortest prompt), prefill (time to
#: first token at the longest prompt, where the prefill dominates); their energy is per generated token.
DEFAULT_THRESHOLDS = {"latency": 1.10, "energy": 1.10, "memory": 1.10, "size": 1.05, "accuracy": 0.001,
                      "decode": 1.10, "ttft": 1.10, "prefill": 1.10}
UNITS = {"latency": "ms", "energy": "mJ", "memory": "MB", "size": "MB", "accuracy": "cosine", "int8_vs_float": "ms",
         "decode": "ms/token", "ttft": "ms", "prefill": "ms", "quantized_vs_float": "ms/token"}
BOOTSTRAP_ROUNDS = 2000


class CompareError(ChipfitError):
    """The baseline or current profiles cannot be compared; the message says which and why."""

    exit_code = 2


def load_profiles(root: str | Path) -> dict[str, Profile]:
    root = Path(root)
    if not root.is_dir():
        raise CompareError(f"{root}: no such folder of profiles")
    found: dict[str, Profile] = {}
    for path in sorted(root.rglob(PROFILE_NAME)):
        try:
            profile = Profile.from_dict(json.loads(path.read_text()), str(path))
        except ValueError as exc:
            raise CompareError(f"{path}: not valid JSON ({exc})") from exc
        except ChipfitError as exc:
            raise CompareError(f"{exc}") from exc
        found[profile.key] = profile
    if not found:
        raise CompareError(f"{root}: holds no {PROFILE_NAME}; run `chipfit profile` on it first")
    return found


def _resampled_medians(samples: np.ndarray, groups: Sequence[int] | None, rounds: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Medians of bootstrap resamples; with several groups (runner processes), groups are resampled
    first and samples within them second, so the spread between processes counts as noise."""
    if not groups or len(groups) < 2 or sum(groups) != len(samples):
        return np.median(rng.choice(samples, (rounds, len(samples))), axis=1)
    parts = np.split(samples, np.cumsum(groups)[:-1])
    medians = np.empty(rounds)
    for r in range(rounds):
        chosen = rng.integers(0, len(parts), len(parts))
        medians[r] = np.median(np.concatenate([rng.choice(parts[g], len(parts[g])) for g in chosen]))
    return medians


def bootstrap_ratio(baseline: Sequence[float], current: Sequence[float], rounds: int = BOOTSTRAP_ROUNDS,
                    seed: int = 0, baseline_groups: Sequence[int] | None = None,
                    current_groups: Sequence[int] | None = None) -> tuple[float, tuple[float, float]]:
    """Ratio of medians (current / baseline) and its 95% bootstrap interval (hierarchical with groups)."""
    rng = np.random.default_rng(seed)
    b, c = np.asarray(baseline, float), np.asarray(current, float)
    ratios = _resampled_medians(c, current_groups, rounds, rng) / _resampled_medians(b, baseline_groups, rounds, rng)
    return float(np.median(c) / np.median(b)), (float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5)))


def _direct(key: str, metric: str, base: float | None, cur: float | None, threshold: float, note: str = "",
            method: str = "", shown: tuple[float | None, float | None] | None = None) -> Verdict:
    """``base`` / ``cur`` decide; ``shown`` are the figures reported (the profile's own, where the decision is on
    another form of them, e.g. an estimate at a fixed efficiency), so every report shows one number."""
    shown_base, shown_cur = shown if shown is not None else (base, cur)
    if base is None or cur is None or base <= 0:
        return Verdict(key, metric, "ok", shown_base, shown_cur, None, None, threshold, "direct",
                       note or "not comparable: a figure is missing", UNITS.get(metric, ""), method)
    ratio = cur / base
    status = "regression" if ratio > threshold else "improvement" if ratio < 1 / threshold else "ok"
    return Verdict(key, metric, status, shown_base, shown_cur, ratio, None, threshold, "direct", note,
                   UNITS.get(metric, ""), method)


def _sampled(key: str, metric: str, b: Sequence[float], c: Sequence[float], threshold: float,
             b_groups: Sequence[int] | None = None, c_groups: Sequence[int] | None = None) -> Verdict:
    """Raw measurements on both sides: beyond the threshold *and* the bootstrap interval above 1."""
    ratio, (lo, hi) = bootstrap_ratio(b, c, baseline_groups=b_groups, current_groups=c_groups)
    status = "ok"
    if ratio > threshold and lo > 1.0:
        status = "regression"
    elif ratio < 1 / threshold and hi < 1.0:
        status = "improvement"
    note = "beyond the threshold but within the noise" if status == "ok" and ratio > threshold else ""
    return Verdict(key, metric, status, float(np.median(b)), float(np.median(c)), ratio, (lo, hi), threshold,
                   "bootstrap ratio of medians" + (f" ({len(b_groups)} vs {len(c_groups)} runner processes)"
                                                   if b_groups and c_groups and max(len(b_groups), len(c_groups)) > 1
                                                   else ""), note, UNITS.get(metric, ""), "measured")


def _method(method: str) -> str:
    return method.split(":")[0] if method else ""


def _measured_alike(base: Profile, cur: Profile, method: str, samples: str) -> bool:
    return bool(getattr(base, samples) and getattr(cur, samples)) and getattr(base, method).startswith("measured") \
        and getattr(base, method) == getattr(cur, method)


def _latency(key: str, base: Profile, cur: Profile, threshold: float) -> Verdict:
    if _measured_alike(base, cur, "latency_method", "latency_samples_ms"):
        return _sampled(key, "latency", base.latency_samples_ms, cur.latency_samples_ms, threshold,
                        base.latency_groups, cur.latency_groups)
    note = "" if base.latency_method == cur.latency_method else \
        f"methods differ: {base.latency_method} vs {cur.latency_method}"
    if _both_estimated(base, cur, "latency_method"):
        return _direct(key, "latency", _fixed(base, "latency_ms"), _fixed(cur, "latency_ms"), threshold,
                       "estimated; the ratio is at the model's fixed efficiency", "estimated",
                       (base.latency_ms_p50, cur.latency_ms_p50))
    return _direct(key, "latency", base.latency_ms_p50, cur.latency_ms_p50, threshold, note, _method(cur.latency_method))


def _both_estimated(base: Profile, cur: Profile, method: str) -> bool:
    """Both figures come from the datasheet model, and both profiles carry it at a fixed efficiency.

    The reported estimate uses an efficiency fitted on each run's own measurements, which moves
    by several percent between runs; the fixed-efficiency figure moves only with the artifact or spec.
    """
    return all(getattr(p, method).startswith("estimated") and p.estimate_fixed for p in (base, cur))


def _fixed(profile: Profile, figure: str) -> float | None:
    return (profile.estimate_fixed or {}).get(figure)


def _energy(key: str, base: Profile, cur: Profile, threshold: float) -> Verdict:
    if _measured_alike(base, cur, "energy_method", "energy_samples_mj"):
        return _sampled(key, "energy", base.energy_samples_mj, cur.energy_samples_mj, threshold,
                        base.energy_groups, cur.energy_groups)
    if _both_estimated(base, cur, "energy_method"):
        return _direct(key, "energy", _fixed(base, "energy_mj"), _fixed(cur, "energy_mj"), threshold,
                       "estimated; the ratio is at the model's fixed efficiency", "estimated",
                       (base.energy_mj, cur.energy_mj))
    return _direct(key, "energy", base.energy_mj, cur.energy_mj, threshold, cur.energy_method, _method(cur.energy_method))


def compare(baseline: Mapping[str, Profile], current: Mapping[str, Profile], thresholds: Mapping[str, float] | None = None,
            target_thresholds: Mapping[str, Mapping[str, float]] | None = None, gate_estimated: bool = False
            ) -> tuple[list[Verdict], list[str], list[str]]:
    """Verdicts for every cell in both, plus the keys added and removed.

    ``thresholds`` override the defaults; ``target_thresholds`` (target id -> metric -> value) override
    both for that target's cells. On a cell whose speed was measured, a figure that is only estimated
    (energy without a meter) is reported but not gated, unless ``gate_estimated``.
    """
    verdicts: list[Verdict] = []
    for key in sorted(set(baseline) & set(current)):
        start = len(verdicts)
        b, c = baseline[key], current[key]
        limits = {**DEFAULT_THRESHOLDS, **(thresholds or {}), **(target_thresholds or {}).get(c.target, {})}
        if b.llm and c.llm:
            verdicts += _decoder(key, b, c, limits)
        else:
            verdicts.append(_latency(key, b, c, limits["latency"]))
        verdicts.append(_energy(key, b, c, limits["energy"]))
        verdicts.append(_direct(key, "memory", b.peak_memory_mb, c.peak_memory_mb, limits["memory"], method="measured"))
        verdicts.append(_direct(key, "size", b.artifact_mb, c.artifact_mb, limits["size"]))
        bc, cc = b.min_cosine, c.min_cosine
        if bc is not None and cc is not None:
            drop = bc - cc
            status = "regression" if drop > limits["accuracy"] else "ok"
            verdicts.append(Verdict(key, "accuracy", status, bc, cc, cc / bc if bc else None, None, limits["accuracy"],
                                    "direct (cosine to float reference)", f"cosine drop {drop:.6f}", "cosine",
                                    "measured"))
        if c.measured and b.measured and not gate_estimated:
            for n in range(start, len(verdicts)):
                v = verdicts[n]
                if v.method == "estimated" and v.status == "regression":
                    verdicts[n] = replace(v, status="info", note=(v.note + "; " if v.note else "") +
                                          "an estimated figure of a measured cell: reported, not gated "
                                          "(--gate-estimated gates it)")
    verdicts += _int8_alarms(current)
    return verdicts, sorted(set(current) - set(baseline)), sorted(set(baseline) - set(current))


def _decoder(key: str, b: Profile, c: Profile, limits: Mapping[str, float]) -> list[Verdict]:
    """Decode time per token, time to first token and prefill, on the raw samples where both are measured."""
    verdicts = []
    if _measured_alike(b, c, "latency_method", "latency_samples_ms"):
        verdicts.append(_sampled(key, "decode", b.latency_samples_ms, c.latency_samples_ms, limits["decode"]))
    elif _both_estimated(b, c, "latency_method"):
        verdicts.append(_direct(key, "decode", _fixed(b, "latency_ms"), _fixed(c, "latency_ms"), limits["decode"],
                                "estimated; the ratio is at the model's fixed efficiencies", "estimated",
                                (b.latency_ms_p50, c.latency_ms_p50)))
    else:
        verdicts.append(_direct(key, "decode", b.latency_ms_p50, c.latency_ms_p50, limits["decode"],
                                f"methods differ: {b.latency_method} vs {c.latency_method}", _method(c.latency_method)))
    prompts_b, prompts_c = b.llm.get("prompts") or [], c.llm.get("prompts") or []
    for metric, index in (("ttft", 0), ("prefill", -1)):
        if not prompts_b or not prompts_c or prompts_b[index]["tokens"] != prompts_c[index]["tokens"]:
            continue
        pb, pc = prompts_b[index], prompts_c[index]
        if pb.get("ttft_ms_samples") and pc.get("ttft_ms_samples"):
            verdict = _sampled(key, metric, pb["ttft_ms_samples"], pc["ttft_ms_samples"], limits[metric])
        else:
            verdict = _direct(key, metric, pb.get("ttft_ms_p50"), pc.get("ttft_ms_p50"), limits[metric],
                              "estimated", "estimated")
        verdicts.append(replace(verdict, note=(verdict.note + "; " if verdict.note else "") + f"{pc['tokens']}-token prompt"))
    return verdicts


def _int8_alarms(current: Mapping[str, Profile]) -> list[Verdict]:
    """A quantized artifact that is no faster than its float sibling (same model, target and backend)."""
    alarms = []
    for key, profile in current.items():
        if profile.precision not in ("int8", "int4") or not profile.latency_ms_p50:
            continue
        for float_precision in ("fp32", "fp16"):
            sibling = current.get(key.rsplit("/", 1)[0] + f"/{float_precision}")
            if sibling and sibling.latency_ms_p50 and profile.latency_ms_p50 >= sibling.latency_ms_p50:
                decoder = bool(profile.llm)
                what = "decodes" if decoder else "is"
                alarms.append(Verdict(key, "quantized_vs_float" if decoder else "int8_vs_float", "alarm",
                                      sibling.latency_ms_p50, profile.latency_ms_p50,
                                      profile.latency_ms_p50 / sibling.latency_ms_p50, None, 1.0, "direct",
                                      f"{profile.precision} {what} no faster than its {float_precision} sibling",
                                      "ms/token" if decoder else "ms", _method(profile.latency_method)))
                break
    return alarms


ORDER = {"failed": 0, "regression": 1, "alarm": 2, "info": 3, "improvement": 4, "ok": 5}


def _figure(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def markdown(verdicts: Sequence[Verdict], added: Sequence[str], removed: Sequence[str], every: bool = False) -> str:
    """A CI job summary: the failing and alarming rows first, and by default only the rows that are not ok."""
    failing = [v for v in verdicts if v.status in ("regression", "failed")]
    alarms = [v for v in verdicts if v.status == "alarm"]
    lines = [f"## chipfit compare: {sum(v.status == 'regression' for v in verdicts)} regression(s), "
             f"{sum(v.status == 'failed' for v in verdicts)} failed cell(s), {len(alarms)} alarm(s) in {len(verdicts)} "
             "checks", ""]
    shown = [v for v in verdicts if every or v.status != "ok"]
    if shown:
        lines += ["| cell | metric | verdict | baseline | current | unit | ratio | 95% interval | threshold | how | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for v in sorted(shown, key=lambda v: (ORDER.get(v.status, 9), v.key, v.metric)):
            interval = "-" if v.interval is None else f"{v.interval[0]:.3f}-{v.interval[1]:.3f}"
            how = f"{v.method or '-'}, {v.test}"
            lines.append(f"| {v.key} | {v.metric} | **{v.status}** | {_figure(v.baseline)} | {_figure(v.current)} | "
                         f"{v.unit or '-'} | {_figure(v.ratio)} | {interval} | {v.threshold:g} | {how} | "
                         f"{v.note.replace('|', '/') or '-'} |")
    if not failing and not every:
        lines.append(f"No regression and no failed cell; {sum(v.status == 'ok' for v in verdicts)} checks ok "
                     "(`--all` lists them).")
    if added or removed:
        lines += ["", f"Added: {', '.join(added) or 'none'}. Removed: {', '.join(removed) or 'none'}."]
    return "\n".join(lines) + "\n"


def junit(verdicts: Sequence[Verdict]) -> str:
    failures = sum(v.status in ("regression", "failed") for v in verdicts)
    cases = []
    for v in verdicts:
        name = quoteattr(f"{v.key}:{v.metric}")
        body = ""
        parts = [f"{v.metric}{f' ({v.method})' if v.method else ''}: baseline {_figure(v.baseline)}"
                 f"{' ' + v.unit if v.unit else ''}, current {_figure(v.current)}{' ' + v.unit if v.unit else ''}"]
        if v.ratio is not None:
            parts.append(f"ratio {v.ratio:.3f}")
        if v.interval is not None:
            parts.append(f"95% interval {v.interval[0]:.3f}-{v.interval[1]:.3f}")
        parts.append(f"threshold {v.threshold:g}, {v.test}")
        text = ", ".join(parts) + (f". {v.note}" if v.note else "")
        if v.status in ("regression", "failed"):
            body = f"<failure message={quoteattr(text)} type=\"{v.status}\">{escape(text)}</failure>"
        elif v.status in ("alarm", "info"):
            body = f"<system-out>{escape(v.status.upper() + ': ' + text)}</system-out>"
        cases.append(f'  <testcase classname={quoteattr(v.key)} name={name} time="0">{body}</testcase>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="chipfit.compare" tests="{len(verdicts)}" '
            f'failures="{failures}" errors="0" skipped="0">\n' + "\n".join(cases) + "\n</testsuite>\n")


def match_backend_switches(baseline: Mapping[str, Profile], current: Mapping[str, Profile]
                           ) -> tuple[dict[str, Profile], list[Verdict]]:
    """A target that chooses its backend by measurement may ship another backend than the baseline's (another
    machine, a new candidate): its one artifact is still the cell's. The baseline's profile is re-keyed to the
    current key and compared; an alarm says the backend changed."""
    def slot(key: str) -> tuple[str, str, str]:
        model, target, _, precision = key.split("/")
        return model, target, precision

    gone = {}
    for key in set(baseline) - set(current):
        gone.setdefault(slot(key), []).append(key)
    new = {}
    for key in set(current) - set(baseline):
        new.setdefault(slot(key), []).append(key)
    matched, verdicts = dict(baseline), []
    for where, keys in gone.items():
        if len(keys) == 1 and len(new.get(where, ())) == 1:
            old_key, new_key = keys[0], new[where][0]
            matched[new_key] = matched.pop(old_key)
            verdicts.append(Verdict(new_key, "backend", "alarm", None, None, None, None, 0.0, "release index",
                                    f"the target's chosen backend changed: {old_key.split('/')[2]} -> "
                                    f"{new_key.split('/')[2]}; its figures are compared with the baseline's"))
    return matched, verdicts


def release_verdicts(baseline: Mapping[str, Profile], current: Mapping[str, Profile], index: ReleaseIndex | None,
                     accept_removed: bool = False) -> list[Verdict]:
    """What a release's index says beyond its profiles: a cell that errored or failed verification fails the gate;
    a backend of a partial cell that the baseline had fails it; a baseline cell gone from the release fails it
    unless the removal is accepted (``--accept-removed``); a cell still in the release whose artifact or profile
    vanished always does."""
    if index is None:
        return []
    verdicts = []
    listed = {(c.model, c.precision, c.target): c for c in index.cells}
    for cell in index.cells:
        if cell.status in ("error", "failed"):
            verdicts.append(Verdict(cell.label, "build", "failed", None, None, None, None, 0.0, "release index",
                                    f"{cell.status}" + (f" at {cell.stage}" if cell.stage else "") + f": {cell.message}"))
        for backend in cell.failed_backends:
            key = f"{cell.model}/{cell.target}/{backend}/{cell.precision}"
            had = key in baseline
            verdicts.append(Verdict(key, "build", "failed" if had else "info", None, None, None, None, 0.0,
                                    "release index", f"partial cell: {backend} did not build"
                                    + ("" if had else " (nor in the baseline)")))
    failed_labels = {c.label for c in index.cells if c.status in ("error", "failed")}
    for key in sorted(set(baseline) - set(current)):
        model, target, backend, precision = key.split("/")
        label = f"{model}/{precision}/{target}"
        if label in failed_labels:
            continue  # already failed above
        if (model, precision, target) in listed:
            verdicts.append(Verdict(key, "present", "failed", None, None, None, None, 0.0, "release index",
                                    "the cell is in the release but this artifact or its profile is missing"))
        else:
            verdicts.append(Verdict(key, "present", "info" if accept_removed else "failed", None, None, None, None, 0.0,
                                    "release index", "removed from the release (accepted)" if accept_removed else
                                    "removed from the release; pass --accept-removed if that was intended"))
    return verdicts


def read_index(root: str | Path) -> ReleaseIndex | None:
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        return None
    try:
        return ReleaseIndex.from_dict(json.loads(path.read_text()), str(path))
    except ValueError as exc:
        raise CompareError(f"{path}: not valid JSON ({exc})") from exc
    except ChipfitError as exc:
        raise CompareError(str(exc)) from exc


def update_baseline(current_root: str | Path, baseline_root: str | Path) -> int:
    """Copy every profile (with its manifest, not the artifact files) into ``baseline_root``, atomically."""
    current_root, baseline_root = Path(current_root), Path(baseline_root)
    profiles = sorted(current_root.rglob(PROFILE_NAME))
    if not profiles:
        raise CompareError(f"{current_root}: holds no {PROFILE_NAME}; run `chipfit profile` first")
    staging = baseline_root.with_name(f".{baseline_root.name}.staging-{uuid.uuid4().hex[:8]}")
    for path in profiles:
        dest = staging / path.parent.relative_to(current_root)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / PROFILE_NAME)
        if (path.parent / "manifest.json").exists():
            shutil.copy2(path.parent / "manifest.json", dest / "manifest.json")
    for name in ("index.json", "summary.md"):  # a release's record of what was built, kept with its profiles
        if (current_root / name).is_file():
            shutil.copy2(current_root / name, staging / name)
    old = None
    if baseline_root.exists():
        old = baseline_root.with_name(f".{baseline_root.name}.old-{uuid.uuid4().hex[:8]}")
        baseline_root.replace(old)
    staging.replace(baseline_root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return len(profiles)
