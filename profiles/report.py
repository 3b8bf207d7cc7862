"""Profile reports: the cross-target tables for the terminal and a self-contained HTML page with plots.

The plots are drawn by matplotlib (Agg, offline) as SVG embedded in the page: axes with ticks and units,
legends, measured figures filled and estimated ones hollow, one colour per target. Graph models get the
latency distribution, latency against energy and the slowest ops; decoder LMs get decode rate against
energy per token (the Pareto front), time to first token against prompt length and decode rate against
KV-cache depth.
"""

from __future__ import annotations

import html
import io
from typing import Any, Sequence

from targets.profile import Profile

#: colours some checks look for (and readers learn): the measured distribution, estimated points, op bars
BOX = "#9ecae1"
ESTIMATED = "#1f77b4"
OPS = "#74c476"
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^", "int4": "D"}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _graphs(profiles: Sequence[Profile]) -> list[Profile]:
    return [p for p in profiles if not p.llm]


def _decoders(profiles: Sequence[Profile]) -> list[Profile]:
    return [p for p in profiles if p.llm]


def table_rows(profiles: Sequence[Profile]) -> list[tuple[str, ...]]:
    rows = []
    for p in _graphs(profiles):
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
LLM_HEADERS = ("model", "target", "backend", "prec", "TTFT ms", "prefill tok/s", "decode tok/s", "mJ/token",
               "fits at ctx", "% roofline", "speed", "energy")


def llm_row(p: Profile) -> tuple[str, ...]:
    llm = p.llm
    first = (llm.get("prompts") or [{}])[0]
    roof = llm.get("roofline") or {}
    fits = f"{'yes' if llm.get('fits') else 'NO'} @{llm.get('context')}"
    return (p.model, p.target, p.backend, p.precision, f"{_fmt(first.get('ttft_ms_p50'), 2)} @{first.get('tokens', '-')}",
            _fmt(first.get("prefill_tok_s"), 0), _fmt(first.get("decode_tok_s"), 1),
            _fmt(p.energy_mj, 4), fits,
            f"{_fmt(roof.get('decode_reached_pct'), 0)}" if roof.get("decode_reached_pct") is not None else "-",
            llm.get("method", "-"), p.energy_method.split(" (")[0] or "-")


def llm_rows(profiles: Sequence[Profile]) -> list[tuple[str, ...]]:
    return [llm_row(p) for p in _decoders(profiles)]


# --- plots ----------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    _pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _colours(keys: Sequence[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return {key: cmap(i % 20) for i, key in enumerate(dict.fromkeys(keys))}


def _label(p: Profile) -> str:
    return f"{p.target} {p.backend} {p.precision}"


def plot_latency_distribution(profiles: Sequence[Profile]) -> str:
    measured = [p for p in _graphs(profiles) if p.latency_samples_ms]
    if not measured:
        return "<p>No measured latencies.</p>"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(measured) + 1.2))
    parts = ax.boxplot([list(p.latency_samples_ms) for p in measured], orientation="horizontal", patch_artist=True,
                       tick_labels=[_label(p) for p in measured], showfliers=False)
    for box in parts["boxes"]:
        box.set(facecolor=BOX, edgecolor="#3182bd")
    ax.set_xscale("log")
    ax.set_xlabel("latency per inference (ms, log scale)")
    ax.set_title("Latency distribution, measured (box: quartiles, whiskers: 1.5 IQR)")
    return _svg(fig)


def _scatter(ax, points, colours) -> None:
    """points: (x, y, profile, measured?) -> filled markers measured, hollow estimated; colour by target."""
    for x, y, p, measured in points:
        marker = PRECISION_MARKERS.get(p.precision, "o")
        colour = colours[p.target]
        ax.scatter([x], [y], marker=marker, s=46, facecolors=colour if measured else "none", edgecolors=colour,
                   linewidths=1.6, zorder=3)


def _legend(ax, colours, precisions) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=colour, label=target) for target, colour in colours.items()]
    handles += [Line2D([], [], marker=PRECISION_MARKERS.get(p, "o"), linestyle="", color="#555", label=p,
                       markerfacecolor="#555") for p in precisions]
    handles += [Line2D([], [], marker="o", linestyle="", color="#555", label="measured (filled)"),
                Line2D([], [], marker="o", linestyle="", color="#555", markerfacecolor="none",
                       label="estimated (hollow)")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def plot_latency_energy(profiles: Sequence[Profile]) -> str:
    items = [p for p in _graphs(profiles) if p.latency_ms_p50 and p.energy_mj]
    if not items:
        return "<p>No artifact has both a latency and an energy figure.</p>"
    plt = _pyplot()
    colours = _colours([p.target for p in items])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _scatter(ax, [(p.latency_ms_p50, p.energy_mj, p, p.latency_method.startswith("measured")
                   and p.energy_method.startswith("measured")) for p in items], colours)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency p50 (ms, log scale)")
    ax.set_ylabel("energy per inference (mJ, log scale)")
    ax.set_title("Latency against energy per artifact")
    _legend(ax, colours, sorted({p.precision for p in items}))
    return _svg(fig)


def plot_top_ops(profiles: Sequence[Profile]) -> str:
    blocks = []
    for p in _graphs(profiles):
        ops = list(p.per_op)[:8]
        if not ops:
            continue
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(ops) + 1.0))
        names = [f"{o['node'][:36]} ({o['op']})" for o in ops][::-1]
        ax.barh(names, [o["mean_us"] for o in ops][::-1], color=OPS)
        ax.set_xlabel("mean time per run (µs)")
        ax.set_title(f"Slowest ops: {_label(p)} ({p.per_op_source})")
        blocks.append(f'<div class="plot top-ops">{_svg(fig)}</div>')
    return "".join(blocks) or "<p>No backend reported per-op times.</p>"


def plot_llm_pareto(profiles: Sequence[Profile]) -> str:
    items = [p for p in _decoders(profiles) if p.energy_mj and _decode_rate(p)]
    if not items:
        return "<p>No decoder LM has both a decode rate and an energy per token.</p>"
    plt = _pyplot()
    colours = _colours([p.target for p in items])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _scatter(ax, [(_decode_rate(p), p.energy_mj / 1e3, p, p.llm.get("method", "").startswith("measured")
                   and p.energy_method.startswith("measured")) for p in items], colours)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("decode rate (tokens/s, log scale)")
    ax.set_ylabel("energy per generated token (J, log scale)")
    ax.set_title("Decode rate against energy per token (better: right and down)")
    _legend(ax, colours, sorted({p.precision for p in items}))
    return _svg(fig)


def _decode_rate(p: Profile) -> float | None:
    first = (p.llm.get("prompts") or [{}])[0]
    return first.get("decode_tok_s") or (p.llm.get("estimate") or {}).get("decode_tok_s")


def _lines(profiles: Sequence[Profile], series, xlabel: str, ylabel: str, title: str, logx: bool = False,
           logy: bool = True) -> str:
    items = [(p, series(p)) for p in _decoders(profiles)]
    items = [(p, pts) for p, pts in items if pts]
    if not items:
        return f"<p>No figures for: {html.escape(title)}.</p>"
    plt = _pyplot()
    colours = _colours([p.target for p, _ in items])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for p, pts in items:
        measured = p.llm.get("method", "").startswith("measured")
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker=PRECISION_MARKERS.get(p.precision, "o"), color=colours[p.target],
                linestyle="-" if measured else "--", markerfacecolor=colours[p.target] if measured else "none",
                label=f"{_label(p)} ({'measured' if measured else 'estimated'})")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (solid: measured, dashed: estimated)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _svg(fig)


def plot_ttft(profiles: Sequence[Profile]) -> str:
    return _lines(profiles, lambda p: [(q["tokens"], q["ttft_ms_p50"]) for q in p.llm.get("prompts", [])
                                       if q.get("ttft_ms_p50")],
                  "prompt length (tokens)", "time to first token (ms)", "Time to first token against prompt length",
                  logx=True)


def plot_depth(profiles: Sequence[Profile]) -> str:
    return _lines(profiles, lambda p: [(d["tokens"], d["tok_s"]) for d in p.llm.get("depths", []) if d.get("tok_s")],
                  "KV-cache depth (tokens already in the cache)", "decode rate (tokens/s)",
                  "Decode rate against KV-cache depth")


def fit_text(fit: dict[str, Any] | None) -> str:
    """What the estimate's fitted efficiency is worth: unknown below three measurements, held-out error above."""
    if not fit:
        return "estimate efficiency: default, not fitted (nothing measured here)"
    parts = []
    for backend, f in fit.items():
        error = ("error unknown (fewer than 3 measurements to hold one out)" if f.get("loo_error") is None
                 else f"held-out (leave-one-out) error up to {f['loo_error'] * 100:.1f}%")
        parts.append(f"estimate efficiency for {backend} {f['efficiency']:.3f}, fitted on {f['points']} host "
                     f"measurement(s); {error}")
    return "; ".join(parts)


def unknown_figures(profiles: Sequence[Profile]) -> list[str]:
    """Per target, each figure its spec gives as "unknown" and what the estimate did without it."""
    lines: list[str] = []
    for p in profiles:
        estimate = (p.llm or {}).get("estimate") if p.llm else p.estimate
        for missing in (estimate or {}).get("missing") or []:
            figure, _, effect = missing.partition(":")
            unit = (estimate or {}).get("compute_unit")
            line = (f"{p.target}{f' ({unit} unit)' if unit else ''}: the spec gives {figure} as \"unknown\" or not "
                    f"at all; {effect.strip()}")
            if line not in lines:
                lines.append(line)
    return lines


def html_report(profiles: Sequence[Profile], fit: dict[str, Any] | None, errors: dict[str, str]) -> str:
    def table(headers, rows) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    error_list = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in errors.items())
    unknown = "".join(f"<li>{html.escape(line)}</li>" for line in unknown_figures(profiles))
    graphs, decoders = _graphs(profiles), _decoders(profiles)
    sections = []
    if graphs:
        sections.append(f"""<h2>Models</h2>{table(TABLE_HEADERS, table_rows(profiles))}
<h2>Latency distribution (measured)</h2><div class="plot" id="latency-distribution">{plot_latency_distribution(profiles)}</div>
<h2>Latency against energy</h2><div class="plot" id="latency-vs-energy">{plot_latency_energy(profiles)}</div>
<h2>Slowest ops</h2>{plot_top_ops(profiles)}""")
    if decoders:
        sections.append(f"""<h2>Language models</h2>{table(LLM_HEADERS, llm_rows(profiles))}
<p>TTFT at the first prompt length; decode tok/s at that depth; % roofline: decode rate against the memory-bandwidth
bound of the chip (weights + KV cache read once per token).</p>
<h2>Decode rate against energy per token</h2><div class="plot" id="llm-pareto">{plot_llm_pareto(profiles)}</div>
<h2>Time to first token</h2><div class="plot" id="llm-ttft">{plot_ttft(profiles)}</div>
<h2>Decode rate against KV-cache depth</h2><div class="plot" id="llm-depth">{plot_depth(profiles)}</div>""")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chipfit profile</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1200px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}} .plot svg{{max-width:100%;height:auto}}</style></head>
<body><h1>chipfit profile</h1>
<p>{len(profiles)} artifact(s). Measured figures name their runner and meter; estimated figures say
<code>estimated:&lt;model&gt;</code>. {html.escape(fit_text(fit))}.</p>
{"<h2>Errors</h2><ul>" + error_list + "</ul>" if error_list else ""}
{"".join(sections)}
{"<h2>What the specs do not say</h2><ul>" + unknown + "</ul>" if unknown else ""}
</body></html>
"""
