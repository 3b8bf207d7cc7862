"""``chipfit compare`` and ``chipfit baseline``: regressions against a baseline, for CI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from compiler.errors import UsageError
from compiler.cli.text import table



def _thresholds(items: Sequence[str]) -> dict[str, float]:
    from profiles.compare import DEFAULT_THRESHOLDS

    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in DEFAULT_THRESHOLDS:
            raise UsageError(f"--threshold {item}: unknown metric {name!r}; metrics: {', '.join(DEFAULT_THRESHOLDS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise UsageError(f"--threshold {item}: {value!r} is not a number") from None
    return out



def _release_thresholds(current: Path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Thresholds a release recorded in its index.json (from release.toml); --threshold overrides them."""
    index = current / "index.json"
    if not index.is_file():
        return {}, {}
    try:
        recorded = json.loads(index.read_text()).get("thresholds") or {}
    except ValueError as exc:
        raise UsageError(f"{index}: not valid JSON ({exc})") from None
    return dict(recorded.get("default", {})), {t: dict(v) for t, v in recorded.get("target", {}).items()}



def cmd_compare(args: argparse.Namespace) -> int:
    from profiles.compare import (CompareError, compare, junit, load_profiles, markdown, match_backend_switches,
                                  read_index, release_verdicts)

    try:
        baseline, current = load_profiles(args.baseline), load_profiles(args.current)
        index = read_index(args.current)
    except CompareError as exc:
        raise UsageError(str(exc)) from exc
    thresholds, per_target = _release_thresholds(Path(args.current))
    thresholds.update(_thresholds(args.threshold))
    baseline, switched = match_backend_switches(baseline, current)
    verdicts, added, removed = compare(baseline, current, thresholds, per_target, args.gate_estimated)
    verdicts += switched + release_verdicts(baseline, current, index, args.accept_removed)
    text = markdown(verdicts, added, removed, args.all)
    if args.summary:
        Path(args.summary).write_text(text)
    if args.junit:
        Path(args.junit).write_text(junit(verdicts))
    figure = (lambda x: "-" if x is None else f"{x:.4g}")
    from profiles.compare import ORDER

    rows = [(v.key, v.metric, v.status.upper() if v.status != "ok" else "ok", figure(v.baseline), figure(v.current),
             v.unit or "-", "-" if v.ratio is None else f"{v.ratio:.3f}",
             "-" if v.interval is None else f"{v.interval[0]:.3f}-{v.interval[1]:.3f}", f"{v.threshold:g}",
             f"{v.method or '-'}, {v.test}" + (f"; {v.note}" if v.note else ""))
            for v in sorted(verdicts, key=lambda v: (ORDER.get(v.status, 9), v.key, v.metric))
            if v.status != "ok" or args.all]
    if rows:
        print(table(("cell", "metric", "verdict", "baseline", "current", "unit", "ratio", "95% interval", "threshold",
                      "how"), rows))
    regressions = sum(v.status == "regression" for v in verdicts)
    failed = sum(v.status == "failed" for v in verdicts)
    print(f"\n{regressions} regression(s), {failed} failed cell(s), {sum(v.status == 'alarm' for v in verdicts)} "
          f"alarm(s) in {len(verdicts)} checks; added {len(added)}, removed {len(removed)} cell(s)")
    return 1 if regressions or failed else 0



def cmd_baseline(args: argparse.Namespace) -> int:
    from profiles.compare import CompareError, update_baseline

    try:
        count = update_baseline(args.current, args.baseline)
    except CompareError as exc:
        raise UsageError(str(exc)) from exc
    print(f"baseline {args.baseline}: {count} profile(s) from {args.current}")
    return 0
