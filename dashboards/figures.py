"""Plotly figures of the dashboard, built in Python and drawn by plotly.js in the page.

Text that came from users (run names, config values, prompt texts) is HTML-escaped before it enters a
figure: plotly.js reads a subset of HTML in names and hover text, and the escape makes it show the
characters instead (e.g. a run named ``<script>...`` shows as text).
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from .budget import Reference, Spread
from .compare import Curve

X_TITLES = {
    "step": "step",
    "rollouts_consumed": "rollouts consumed (probe included)",
    "tokens_generated": "tokens generated",
    "wall_seconds": "wall time (s)",
    "updates": "optimizer updates",
}
P_BINS = np.linspace(0.0, 1.0, 11)  # p̂ deciles of the allocation heatmap
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "height": 460}


def text(value: Any, limit: int = 120) -> str:
    """A user string, shortened and escaped for plotly's HTML-like labels."""
    shown = str(value)
    return html.escape(shown if len(shown) <= limit else shown[: limit - 1] + "…")


def curves_figure(curves: Sequence[Curve], metric: str, x: str) -> go.Figure:
    """One line per curve, and a shaded 95% band under each pooled one."""
    fig = go.Figure()
    palette = qualitative.Plotly
    for i, curve in enumerate(curves):
        color = palette[i % len(palette)]
        if curve.lower is not None and curve.upper is not None:
            band_x = curve.x + curve.x[::-1]
            band_y = curve.upper + curve.lower[::-1]
            fig.add_trace(go.Scatter(
                x=band_x, y=band_y, mode="lines", fill="toself", fillcolor=_alpha(color, 0.18),
                line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=str(i),
                name=text(curve.label) + " CI",
            ))  # fmt: skip
        fig.add_trace(go.Scatter(
            x=curve.x, y=curve.y, mode="lines+markers", marker={"size": 4}, line={"color": color},
            name=text(curve.label), legendgroup=str(i),
        ))  # fmt: skip
    fig.update_layout(
        **LAYOUT, xaxis_title=X_TITLES[x], yaxis_title=text(metric),
        legend={"orientation": "h", "y": -0.2}, meta={"x": x, "metric": text(metric)},
    )  # fmt: skip
    return fig


def budget_scatter(rows: Sequence[Mapping[str, Any]], step: int) -> go.Figure:
    """Where one step's rollouts went: n_i against p̂_i, one point per prompt (probed ones filled)."""
    fig = go.Figure()
    for probed, symbol in ((True, "circle"), (False, "circle-open")):
        picked = [r for r in rows if r["step"] == step and bool(r["probed"]) == probed]
        if not picked:
            continue
        fig.add_trace(go.Scatter(
            x=[r["p_hat"] for r in picked], y=[r["n_alloc"] for r in picked], mode="markers",
            marker={"symbol": symbol, "size": 8}, name="probed" if probed else "carried / measured",
            text=[f"{text(r['prompt_id'], 60)}<br>accepted {r['accepted']}/{r['n_alloc']}" for r in picked],
            hovertemplate="p̂=%{x:.3f} n=%{y}<br>%{text}<extra></extra>",
        ))  # fmt: skip
    fig.update_layout(
        **LAYOUT,
        title=f"step {step}",
        xaxis_title="p̂_i (estimated accept rate)",
        yaxis_title="n_i (training rollouts)",
        xaxis_range=[-0.02, 1.02],
    )
    return fig


def spread_figure(ref: Reference, spreads: Sequence[Spread]) -> go.Figure:
    """Where each setting's budget went: a point per (run, prompt), rollouts per visit against the
    reference pass rate, and a line through the mean of each pass-rate bin (a gap at an empty bin)."""
    fig = go.Figure()
    palette = qualitative.Plotly
    for i, sp in enumerate(spreads):
        color = palette[i % len(palette)]
        fig.add_trace(go.Scatter(
            x=[p.rate for p in sp.points], y=[p.per_visit for p in sp.points], mode="markers",
            marker={"color": color, "size": 5, "opacity": 0.35}, name=text(sp.label) + " (prompts)",
            legendgroup=str(i), text=[f"{text(p.prompt, 60)}<br>{text(p.run)}: {p.rollouts} rollouts in "
                                      f"{p.visits} visits" for p in sp.points],
            hovertemplate="pass rate %{x:.3f}, %{y:.2f} per visit<br>%{text}<extra></extra>",
        ))  # fmt: skip
        fig.add_trace(go.Scatter(
            x=[(b.low + b.high) / 2 for b in sp.bins], y=[b.mean for b in sp.bins], mode="lines+markers",
            line={"color": color, "width": 3}, marker={"size": 8}, name=text(sp.label) + _bins_note(sp),
            legendgroup=str(i), customdata=[b.points for b in sp.bins],
            hovertemplate="bin mean %{y:.2f} per visit (%{customdata} points)<extra></extra>",
        ))  # fmt: skip
    skipped = sum(sp.unreferenced for sp in spreads)
    which = "pre-pass" if ref.kind == "prepass" else "pooled training"
    note = f" · {skipped} prompt(s) without a reference left off" if skipped else ""
    fig.update_layout(
        **LAYOUT, title={"text": text("reference: " + ref.label, 200) + note, "font": {"size": 13}},
        xaxis_title=f"reference pass rate ({which})",
        yaxis_title="training rollouts per visit (mean n_i)", xaxis_range=[-0.02, 1.02],
        legend={"orientation": "h", "y": -0.2}, meta={"reference": ref.kind, "label": text(ref.label, 200)},
    )  # fmt: skip
    return fig


def _bins_note(sp: Spread) -> str:
    """What a setting's line is, or why it has nothing to draw."""
    if sp.points:
        return " (mean per bin)"
    return " (no prompt with a reference)" if sp.unreferenced else " (no per-prompt rows)"


def allocation_heatmap(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """How the allocation moved over training: the share of each step's training rollouts that went to
    prompts in each p̂ decile (a row for prompts without an estimate)."""
    steps = sorted({int(r["step"]) for r in rows})
    labels = [f"{lo:.1f}-{hi:.1f}" for lo, hi in itertools.pairwise(P_BINS)] + ["no p̂"]
    z = np.zeros((len(labels), len(steps)))
    column = {step: j for j, step in enumerate(steps)}
    for r in rows:
        p = r["p_hat"]
        i = len(labels) - 1 if p is None else min(int(np.searchsorted(P_BINS, p, side="right")) - 1, 9)
        z[max(i, 0), column[int(r["step"])]] += r["n_alloc"]
    totals = z.sum(axis=0)
    share = np.divide(z, totals, out=np.zeros_like(z), where=totals > 0)
    fig = go.Figure(
        go.Heatmap(
            x=steps,
            y=labels,
            z=share,
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar={"title": "share"},
            hovertemplate="step %{x}<br>p̂ %{y}: %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(**LAYOUT, xaxis_title="step", yaxis_title="p̂_i decile")
    return fig


def parcoords_figure(trials: Sequence[Mapping[str, Any]], objective: str) -> go.Figure:
    """One line per trial with an objective: its parameters, then the objective (also the colour).
    Text and boolean parameters become ordinal axes labelled with their values."""
    done = [t for t in trials if t["objective"] is not None]
    names = sorted({k for t in done for k in t["params"]})
    dimensions = [_dimension(name, [t["params"].get(name) for t in done]) for name in names]
    values = [t["objective"] for t in done]
    dimensions.append({"label": text(objective, 40), "values": values})
    line = {"color": values, "colorscale": "Viridis", "showscale": True} if values else {}
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    fig.update_layout(**LAYOUT)
    return fig


def _dimension(name: str, values: list[Any]) -> dict[str, Any]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        return {"label": text(name, 40), "values": values}
    categories = sorted({str(v) for v in values})
    index = {c: i for i, c in enumerate(categories)}
    return {
        "label": text(name, 40), "values": [index[str(v)] for v in values],
        "tickvals": list(range(len(categories))), "ticktext": [text(c, 30) for c in categories],
    }  # fmt: skip


def importance_figure(importances: Mapping[str, float]) -> go.Figure:
    """Horizontal bars, most important parameter on top."""
    ordered = sorted(importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in ordered], y=[text(k, 40) for k, _ in ordered], orientation="h"))
    fig.update_layout(**{**LAYOUT, "height": max(200, 60 + 30 * len(ordered))}, xaxis_title="importance")
    return fig


def _alpha(color: str, alpha: float) -> str:
    """'#636efa' -> 'rgba(99,110,250,0.18)'."""
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"
