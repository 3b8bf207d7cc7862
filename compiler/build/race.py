"""The backend race: where a target has several backends, each builds a candidate and the fastest verified one
becomes the target's artifact, for every kind of model; and the helpers every speed decision shares.

Candidates run as the target's runtime loads them (the kind gives the timed call): on this host where the
target is this host, else on the stated proxy (the same file on this CPU). A later backend in the target's
order wins only by more than the noise margin, so two backends within the noise give the same choice in every
build. Decisions are remembered per artifact and host (`compiler.speed.remember`).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from compiler.artifact import FAILED_SUFFIX, swap_into
from compiler.build.cell import CANDIDATES, Cell
from compiler.build.kinds import Contender, ModelKind
from compiler.build.manifest import record_choice
from compiler.build.result import CellResult
from compiler.speed import MARGIN, faster, race, remember
from targets.backend import Backend
from targets.files import utc_now
from targets.host import HostInfo
from targets.manifest import BackendChoice, Candidate, FileRecord, Manifest, read_artifact
from targets.request import digest_json


def host_key(host: HostInfo) -> dict[str, Any]:
    # the ISA class too: a choice measured where int8 runs on VNNI is not replayed where it does not
    return {"cpu": host.model_name, "cores": host.cores, "arch": host.arch, "isa": host.isa.label}


def files_key(files: Mapping[str, FileRecord], backend: Backend) -> str:
    """The artifact's identity for a remembered decision: its files, less those whose bytes vary per build
    (e.g. model.ort, which the backend's normalizers leave out of the content digest)."""
    excluded = {name for name, (normalize, _) in backend.normalizers().items() if normalize is None}
    return digest_json({name: f.sha256 for name, f in files.items() if name not in excluded})


def choose_backend(group: Sequence[tuple[Cell, CellResult]], kind: ModelKind, inputs: Any, host: HostInfo,
                   progress: Callable[[str], None]) -> list[CellResult]:
    """The fastest verified candidate becomes the target's artifact; its manifest keeps every candidate's figure."""
    final = group[0][0].chosen_dest
    assert final is not None
    target = group[0][0].target
    verified = [(c, r) for c, r in group if r.status == "verified"]
    eligible = verified or [(c, r) for c, r in group if r.status == "not-run"]
    failed_dirs = {r.backend: Path(r.artifact) for _, r in group if r.status == "failed" and r.artifact}
    for backend, path in failed_dirs.items():  # a failed candidate is kept for inspection beside the artifact
        swap_into(path, final.with_name(f"{target.id}@{backend}{FAILED_SUFFIX}"))
    if not eligible:
        _remove_candidates(final)
        return [replace(r, artifact=str(final.with_name(f"{target.id}@{r.backend}{FAILED_SUFFIX}")))
                if r.backend in failed_dirs else r for _, r in group]
    figures: dict[str, tuple[float | None, str]] = {}
    contenders: dict[str, Contender] = {}
    manifests: dict[str, Manifest] = {}
    for cell, result in eligible:
        name = cell.backend.name
        if result.status != "verified":
            figures[name] = (None, f"not timed: {result.numerics.reason if result.numerics else ''}")
            continue
        manifests[name] = read_artifact(Path(result.artifact)).manifest
        contender = kind.timer(cell, Path(result.artifact), manifests[name], inputs, host)
        where = contender.note.removeprefix("proxy: ")
        if not contender.representative:
            figures[name] = (None, f"not timed: here it would run as a proxy that is not the target's compute unit "
                                   f"({where})")
            continue
        contenders[name] = contender
        figures[name] = (None, "measured on this host" if not contender.proxy else
                         f"measured on this host as a proxy ({where})")
    runners = {name: c.call for name, c in contenders.items()}
    if len(runners) > 1:  # a decision, not a profile: made whatever --no-latency says, and remembered
        def measure() -> dict:
            progress(f"{target.id}: timing {', '.join(runners)} against each other")
            ms = {name: round(timed.median_ms, 4) for name, timed in race(runners).items()}
            extra = {name: dict(c.figures()) for name, c in contenders.items() if c.figures is not None}
            return {"ms": ms, "figures": extra, "when": utc_now()}

        key = {"target": target.digest, **host_key(host),
               "candidates": {c.backend.name: files_key(manifests[c.backend.name].files, c.backend)
                              for c, _ in eligible if c.backend.name in runners}}
        timed, remembered = remember("backend", key, measure)
        kept = f" (on {timed['when']}; the same candidates on this machine keep that decision)" if remembered else ""
        for name, ms in timed["ms"].items():
            figures[name] = (ms, figures[name][1] + ", interleaved rounds" + kept)
        extra_figures = timed.get("figures", {})
    else:
        extra_figures = {}
    winner = eligible[0]
    for cell, result in eligible[1:]:
        ms, best = figures[cell.backend.name][0], figures[winner[0].backend.name][0]
        if ms is not None and best is not None and faster(ms, best):
            winner = (cell, result)
    timed_any = sum(figures[c.backend.name][0] is not None for c, _ in eligible) > 1
    rule = (f"the fastest verified candidate; a later one in the target's order ({', '.join(target.backends)}) "
            f"must be at least {MARGIN:.0%} faster" if timed_any else
            "the first eligible candidate in the target's order (" + ", ".join(target.backends) + "): "
            + ("only one was verified" if len(verified) == 1 else "none could be timed here"))
    if not verified:
        rule += "; no candidate could be verified here, so none was timed"
    candidates = []
    for cell, result in group:
        ms, method = figures.get(cell.backend.name, (None, ""))
        note = "" if result.status in ("verified", "not-run") else result.message
        candidates.append(Candidate(cell.backend.name, result.status, ms, method or f"not eligible: {result.status}",
                                    note, extra_figures.get(cell.backend.name, {})))
    choice = BackendChoice(winner[0].backend.name, rule, tuple(candidates))
    source = Path(winner[1].artifact)
    record_choice(source, choice)
    swap_into(source, final)
    kept = []
    for cell, result in group:  # on a build_all_backends target the others stay beside the chosen one
        if (cell is not winner[0] and cell.kept_dest is not None and result.artifact
                and result.status in ("verified", "not-run")):
            swap_into(Path(result.artifact), cell.kept_dest)
            kept.append(replace(result, artifact=str(cell.kept_dest)))
    _remove_candidates(final)
    for c in candidates:
        progress(f"{target.id}:   {c.backend}: " + (f"{c.latency_ms:.3f} ms" if c.latency_ms is not None else c.status)
                 + "".join(f", {k} {v:g}" for k, v in c.figures.items()))
    others = ", ".join(c.backend for c in candidates if c.backend != choice.chosen)
    ms = figures[choice.chosen][0]
    progress(f"{target.id}: chose {choice.chosen}" + (f" ({ms:.3f} ms)" if ms is not None else "") + f" over {others}")
    return [replace(winner[1], artifact=str(final), choice=choice), *kept]


def _remove_candidates(final: Path) -> None:
    folder = final.parent / CANDIDATES
    for path in folder.glob(f"{final.name}@*"):
        shutil.rmtree(path, ignore_errors=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # another target's candidates are still there
