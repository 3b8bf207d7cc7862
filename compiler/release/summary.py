"""The human summary of a release: the rows of the terminal table and ``dist/summary.md``, from index.json."""

from __future__ import annotations

from typing import Any, Mapping


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def summary_rows(index: Mapping[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for cell in index["cells"]:
        base = (cell["model"], cell["precision"], cell["target"])
        if not cell["artifacts"]:
            rows.append(base + ("-", cell["status"].upper(), "-", "-", "-", "-", cell["message"][:120]))
            continue
        for a in cell["artifacts"]:
            p = a.get("profile") or {}
            n = a["numerics"]
            numerics = n["status"] + (" (proxy)" if n.get("proxy") else "") + (
                f" cos {n['min_cosine']:.6f}" if n.get("min_cosine") is not None else "")
            repro = ""
            for check in cell.get("reproducible") or []:
                if check["artifact"] == a["path"]:
                    repro = "; reproducible" if check["ok"] else f"; NOT REPRODUCIBLE: {check['detail']}"
            latency = f"{_fmt(p.get('latency_ms_p50'))} {str(p.get('latency_method', '')).split(':')[0]}" if p else "-"
            energy = f"{_fmt(p.get('energy_mj'))} {str(p.get('energy_method', '')).split(':')[0]}" if p else "-"
            rows.append(base + (a["backend"], cell["status"], f"{a['size_bytes'] / 1024:.1f} KB", numerics, latency,
                                energy, repro.lstrip("; ")))
    return rows


SUMMARY_HEADERS = ("model", "precision", "target", "backend", "status", "size", "numerics", "latency ms",
                   "energy mJ", "notes")


def summary_markdown(index: Mapping[str, Any]) -> str:
    s = index["summary"]
    lines = [f"## chipfit release {index['release']}: {s['cells']} cells, {s['artifacts']} artifacts", "",
             f"{s['built']} built, {s['cached']} from the cache, {s['failed']} failed verification, "
             f"{s['error']} could not be built; {index['seconds']} s on {index['host']['cpu']}.", "",
             "| " + " | ".join(SUMMARY_HEADERS) + " |", "|" + "---|" * len(SUMMARY_HEADERS)]
    for row in summary_rows(index):
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    lines += ["", "latency/energy: `measured` on this host or over RPC, `estimated` from the target's datasheet model."]
    for path, error in index["profile"]["errors"].items():
        lines.append(f"- profile error: {path}: {error}")
    return "\n".join(lines) + "\n"
