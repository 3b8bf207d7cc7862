"""The human summary of a release: the rows of the terminal table and ``dist/summary.md``, from its index."""

from __future__ import annotations

from typing import Any

from targets.release_index import ReleaseIndex


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


#: an artifact this many times slower than the fastest one measured for the same target is marked
SLOW_SIBLING = 3.0


def _slow_notes(cell) -> dict[str, str]:
    """Artifacts of a cell much slower than its fastest measured sibling (same model, precision and target)."""
    measured = {a.path: a.profile.latency_ms_p50 for a in cell.artifacts
                if a.profile and a.profile.latency_ms_p50 and a.profile.latency_method.startswith("measured")}
    if len(measured) < 2:
        return {}
    fastest = min(measured, key=measured.get)
    backend = next(a.backend for a in cell.artifacts if a.path == fastest)
    return {path: f"{value / measured[fastest]:.0f}x slower than {backend}" for path, value in measured.items()
            if value >= SLOW_SIBLING * measured[fastest]}


def summary_rows(index: ReleaseIndex) -> list[tuple[str, ...]]:
    rows = []
    for cell in index.cells:
        base = (cell.model, cell.precision, cell.target)
        if not cell.artifacts:
            rows.append(base + ("-", cell.status.upper(), "-", "-", "-", "-", cell.message))
            continue
        slow = _slow_notes(cell)
        for backend in cell.failed_backends:
            rows.append(base + (backend, "FAILED", "-", "-", "-", "-", cell.message))
        for a in cell.artifacts:
            p = a.profile
            n = a.numerics
            numerics = n.status + (" (proxy)" if n.proxy else "") + (
                f" cos {n.min_cosine:.6f}" if n.min_cosine is not None else "")
            repro = ""
            for check in cell.reproducible or ():
                if check.artifact == a.path:
                    repro = "; reproducible" if check.ok else f"; NOT REPRODUCIBLE: {check.detail}"
            latency = f"{_fmt(p.latency_ms_p50)} {p.latency_method.split(':')[0]}" if p else "-"
            energy = f"{_fmt(p.energy_mj)} {p.energy_method.split(':')[0]}" if p else "-"
            notes = "; ".join(x for x in (repro.lstrip("; "), slow.get(a.path, "")) if x)
            rows.append(base + (a.backend, cell.status, f"{a.size_bytes / 1e6:.3f}", numerics, latency,
                                energy, notes))
    return rows


SUMMARY_HEADERS = ("model", "precision", "target", "backend", "status", "size MB", "numerics", "latency ms",
                   "energy mJ", "notes")


def summary_markdown(index: ReleaseIndex) -> str:
    s = index.summary
    lines = [f"## chipfit release {index.release}: {s['cells']} cells, {s['artifacts']} artifacts", "",
             f"{s['built']} built, {s['cached']} from the cache, {s.get('partial', 0)} partial, {s['failed']} failed "
             f"verification, {s['error']} could not be built; {index.seconds} s on {index.host['cpu']}.", "",
             "| " + " | ".join(SUMMARY_HEADERS) + " |", "|" + "---|" * len(SUMMARY_HEADERS)]
    for row in summary_rows(index):
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |")
    lines += ["", "latency/energy: `measured` on this host or over RPC, `estimated` from the target's datasheet model."]
    for path, error in index.profile["errors"].items():
        lines.append(f"- profile error: {path}: {error}")
    return "\n".join(lines) + "\n"
