"""Profile reports: the cross-target table for the terminal and a self-contained HTML page with plots.

The plots are inline SVG (no plotting library, no network): latency distribution per artifact,
latency against energy per artifact (measured and estimated marked apart), and the slowest ops.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

from targets.profile import Profile


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(profiles: Sequence[Profile]) -> list[tuple[str, ...]]:
    rows = []
    for p in profiles:
        lat = p.latency
        noisy = " NOISY" if lat and lat.noisy else ""
        rows.append((
            p.model, p.target, p.backend, p.precision,
            _fmt(p.latency_ms_p50), _fmt(lat.latency_ms_p90 if lat else None), _fmt(lat.cv if lat else None, 3) + noisy,
            p.latency_method or "-",
            _fmt(p.peak_memory_mb, 1), _fmt(p.energy_mj, 4), p.energy_method or "-",
            _fmt(p.estimate_vs_measured, 2),
        ))
    return rows


TABLE_HEADERS = ("model", "target", "backend", "prec", "p50 ms", "p90 ms", "cv", "latency", "peak MB", "energy mJ",
                 "energy", "est/meas")


def _svg_box(profiles: Sequence[Profile]) -> str:
    measured = [p for p in profiles if p.latency_samples_ms]
    if not measured:
        return "<p>No measured latencies.</p>"
    width, row_h, left = 760, 34, 230
    top = max(max(p.latency_samples_ms) for p in measured)
    scale = (width - left - 20) / top if top > 0 else 1
    parts = [f'<svg class="plot" id="latency-distribution" width="{width}" height="{row_h * len(measured) + 40}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="latency distribution">']
    for i, p in enumerate(measured):
        y = 20 + i * row_h
        s = sorted(p.latency_samples_ms)
        q1, q2, q3 = s[len(s) // 4], s[len(s) // 2], s[(3 * len(s)) // 4]
        label = html.escape(f"{p.target} {p.backend} {p.precision}")
        parts.append(f'<text x="4" y="{y + 14}" font-size="12">{label}</text>')
        parts.append(f'<line x1="{left + s[0] * scale:.1f}" x2="{left + s[-1] * scale:.1f}" y1="{y + 10}" y2="{y + 10}" stroke="#888"/>')
        parts.append(f'<rect x="{left + q1 * scale:.1f}" y="{y + 2}" width="{max((q3 - q1) * scale, 1):.1f}" height="16" '
                     f'fill="#9ecae1" stroke="#3182bd"><title>{label}: p50 {q2:.3f} ms</title></rect>')
        parts.append(f'<line x1="{left + q2 * scale:.1f}" x2="{left + q2 * scale:.1f}" y1="{y + 2}" y2="{y + 18}" stroke="#08519c" stroke-width="2"/>')
    parts.append(f'<text x="{left}" y="{row_h * len(measured) + 34}" font-size="11">0 ms</text>'
                 f'<text x="{width - 80}" y="{row_h * len(measured) + 34}" font-size="11">{top:.3f} ms</text></svg>')
    return "".join(parts)


def _svg_scatter(profiles: Sequence[Profile]) -> str:
    points = [p for p in profiles if p.latency_ms_p50 and p.energy_mj]
    if not points:
        return "<p>No artifact has both a latency and an energy figure.</p>"
    width, height, pad = 760, 360, 60
    lx = [math.log10(p.latency_ms_p50) for p in points]
    ly = [math.log10(p.energy_mj) for p in points]
    x0, x1 = min(lx) - 0.3, max(lx) + 0.3
    y0, y1 = min(ly) - 0.3, max(ly) + 0.3
    parts = [f'<svg class="plot" id="latency-vs-energy" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
             'role="img" aria-label="latency against energy">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" stroke="#333"/>',
             f'<line x1="{pad}" y1="10" x2="{pad}" y2="{height - pad}" stroke="#333"/>',
             f'<text x="{width / 2 - 60}" y="{height - 20}" font-size="12">latency p50 (ms, log)</text>',
             f'<text x="4" y="{height / 2}" font-size="12" transform="rotate(-90 12 {height / 2})">energy per inference (mJ, log)</text>']
    for p, x, y in zip(points, lx, ly):
        cx = pad + (x - x0) / (x1 - x0) * (width - pad - 20)
        cy = height - pad - (y - y0) / (y1 - y0) * (height - pad - 20)
        measured = p.energy_method.startswith("measured") and p.latency_method.startswith("measured")
        colour = "#d62728" if measured else "#1f77b4"
        label = html.escape(f"{p.target} {p.backend} {p.precision}")
        shape = (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{colour}">' if measured else
                 f'<rect x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10" fill="{colour}">')
        close = "</circle>" if measured else "</rect>"
        parts.append(f'{shape}<title>{label}: {p.latency_ms_p50:.3f} ms ({p.latency_method}), '
                     f'{p.energy_mj:.4f} mJ ({p.energy_method})</title>{close}')
        parts.append(f'<text x="{cx + 8:.1f}" y="{cy - 6:.1f}" font-size="10">{label}</text>')
    parts.append("</svg>")
    return "".join(parts) + '<p class="legend">circles: measured; squares: estimated (one or both figures)</p>'


def _svg_ops(profiles: Sequence[Profile]) -> str:
    blocks = []
    for p in profiles:
        ops = list(p.per_op)[:8]
        if not ops:
            continue
        width, row_h, left = 760, 20, 260
        top = max(o["mean_us"] for o in ops) or 1
        parts = [f'<h3>{html.escape(p.target)} {html.escape(p.backend)} {html.escape(p.precision)}</h3>'
                 f'<svg class="plot top-ops" width="{width}" height="{row_h * len(ops) + 10}" xmlns="http://www.w3.org/2000/svg">']
        for i, o in enumerate(ops):
            y = 4 + i * row_h
            w = (width - left - 80) * o["mean_us"] / top
            parts.append(f'<text x="4" y="{y + 13}" font-size="11">{html.escape(o["node"][:36])} ({html.escape(o["op"])})</text>'
                         f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="14" fill="#74c476"/>'
                         f'<text x="{left + w + 4:.1f}" y="{y + 13}" font-size="11">{o["mean_us"]:.1f} us</text>')
        parts.append("</svg>")
        blocks.append("".join(parts))
    return "".join(blocks) or "<p>No backend reported per-op times.</p>"


def html_report(profiles: Sequence[Profile], fit: dict[str, Any] | None, errors: dict[str, str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(profiles))
    fit_text = "; ".join(f"estimate efficiency for {b} {f['efficiency']:.3f}, fitted on {f['points']} host "
                         f"measurement(s), worst error {f['max_rel_error'] * 100:.1f}%" for b, f in (fit or {}).items()
                         ) or "estimate efficiency: default, not fitted"
    error_list = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in errors.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chipfit profile</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1100px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}} .legend{{font-size:12px;color:#555}}</style></head>
<body><h1>chipfit profile</h1>
<p>{len(profiles)} artifact(s). Measured figures name their runner and meter; estimated figures say
<code>estimated:&lt;model&gt;</code>. {html.escape(fit_text)}.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{"<h2>Errors</h2><ul>" + error_list + "</ul>" if error_list else ""}
<h2>Latency distribution (measured)</h2>{_svg_box(profiles)}
<h2>Latency against energy</h2>{_svg_scatter(profiles)}
<h2>Slowest ops</h2>{_svg_ops(profiles)}
</body></html>
"""
