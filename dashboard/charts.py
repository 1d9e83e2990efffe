"""Plotly figures for the dashboard; they draw numbers computed by ``cxr_core``, never compute them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cxr_core.inference.findings import NORMAL_CLASSES, FindingsSummary
from cxr_core.metrics.curve_bands import CurveBand
from cxr_core.metrics.report_types import PrCurve, ReliabilityBins, RocCurve
from dashboard.marks import Mark, grid
from dashboard.viewer import ViewImage

POSITIVE = "#c0392b"
BORDERLINE = "#e67e22"
NORMAL = "#27ae60"
NEGATIVE = "#7f8c8d"
ACCENT = "#1f6fb2"
_MARGIN = dict(l=10, r=10, t=40, b=10)


def _series(curve: object, name: str) -> np.ndarray:
    """One array of a curve: a report's record (``RocCurve``, ``PrCurve``) or a dict of arrays as
    :func:`cxr_core.metrics.curves` returns it, with undefined points as NaN."""
    return _finite(curve[name] if isinstance(curve, Mapping) else getattr(curve, name))


def _finite(values: object) -> np.ndarray:
    """Float array with None/inf as NaN (reports store NaN and inf as JSON null)."""
    array = np.asarray(values, dtype=float)
    return np.where(np.isfinite(array), array, np.nan)


def probability_bars(summary: FindingsSummary, title: str = "") -> go.Figure:
    """Horizontal bars in reading order (most probable on top), coloured by the call.

    Red: called positive; orange: borderline (either side of the threshold); gray: negative;
    green: a class stating normal. Thresholds are black ticks; each bar's value is part of its
    label, so no tick or bar edge can hide it.
    """
    findings = sorted(summary.findings, key=lambda f: -f.probability)[::-1]
    colours = []
    for f in findings:
        if f.name in NORMAL_CLASSES:
            colours.append(NORMAL)
        elif summary.multilabel and f.borderline:
            colours.append(BORDERLINE)
        elif f.positive:
            colours.append(POSITIVE)
        else:
            colours.append(NEGATIVE)
    labels = [f"{f.name}  {f.probability:.2f}" for f in findings]
    fig = go.Figure()
    fig.add_bar(
        x=[f.probability for f in findings],
        y=labels,
        orientation="h",
        marker_color=colours,
        name="probability",
        hovertemplate="%{y}<extra></extra>",
    )
    if summary.multilabel:
        fig.add_scatter(
            x=[f.threshold for f in findings],
            y=labels,
            mode="markers",
            name="threshold",
            marker=dict(symbol="line-ns", size=16, line=dict(width=2.5, color="black")),
            customdata=[f.threshold for f in findings],
            hovertemplate="threshold %{customdata:.3f}<extra></extra>",
        )
    fig.update_layout(
        title=title,
        xaxis=dict(range=[0, 1.0], title="probability", dtick=0.1),
        yaxis=dict(tickfont=dict(size=14)),
        showlegend=False,
        height=max(200, 30 * len(findings) + 90),
        margin=_MARGIN,
        bargap=0.3,
    )
    return fig


MARK_COLOURS = (
    "#00e5ff",
    "#ffd600",
    "#ff4081",
    "#76ff03",
    "#ff9100",
    "#d500f9",
    "#1de9b6",
    "#ffffff",
)
"""Bright colours that stay visible on a grayscale film (one per finding or per reader)."""


@dataclass(frozen=True)
class ShownMark:
    """One mark drawn on the film: ``label`` in the legend and beside it, dashed until it is saved."""

    label: str
    mark: Mark
    colour: str
    saved: bool = True
    hover: str = ""


def film_figure(
    image: ViewImage,
    marks: Sequence[ShownMark] = (),
    *,
    window: tuple[float, float, float, float] | None = None,
    selectable: bool = False,
    drag: str = "pan",
    height: int = 600,
) -> go.Figure:
    """The Review page's film viewer: the image (the film, or the film with a heatmap blended in) and marks.

    ``selectable`` lays the invisible click grid of :mod:`dashboard.marks` over the film (trace
    ``GRID_TRACE``), so a click or a box drag becomes a selection the page turns into a mark;
    marks then ignore the pointer, so a click on a mark still lands on the grid. ``drag`` is
    Plotly's drag mode ("pan", or "select" to drag a box). ``window`` = (x0, x1, y0, y1) pixels
    shown (a zoom); default the whole film.
    """
    height_px, width_px = image.shape
    fig = go.Figure(go.Image(source=image.uri, hoverinfo="skip"))
    if selectable:
        xs, ys = grid(width_px, height_px)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                name="grid",
                showlegend=False,
                hoverinfo="none",
                marker=dict(size=6, opacity=0),
                selected=dict(marker=dict(opacity=0)),
                unselected=dict(marker=dict(opacity=0)),
            )
        )  # trace GRID_TRACE
    for shown in marks:
        style = dict(color=shown.colour, width=3, dash="solid" if shown.saved else "dash")
        hover = (
            dict(hoverinfo="skip")
            if selectable
            else dict(hovertext=shown.hover or shown.label, hoverinfo="text")
        )
        if shown.mark.box is not None:
            x0, y0, x1, y1 = shown.mark.box
            xs = np.array([x0, x1, x1, x0, x0]) * width_px
            ys = np.array([y0, y0, y1, y1, y0]) * height_px
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+text",
                    line=style,
                    name=shown.label,
                    text=[shown.label, "", "", "", ""],
                    textposition="top right",
                    textfont=dict(color=shown.colour, size=13),
                    **hover,
                )
            )
        elif shown.mark.point is not None:
            fig.add_trace(
                go.Scatter(
                    x=[shown.mark.point[0] * width_px],
                    y=[shown.mark.point[1] * height_px],
                    mode="markers+text",
                    name=shown.label,
                    text=[shown.label],
                    textposition="top right",
                    textfont=dict(color=shown.colour, size=13),
                    marker=dict(
                        symbol="circle-open" if shown.saved else "circle-open-dot",
                        size=22,
                        line=style,
                        color=shown.colour,
                    ),
                    **hover,
                )
            )
    x0, x1, y0, y1 = window or (0.0, float(width_px), 0.0, float(height_px))
    fig.update_xaxes(visible=False, range=[x0, x1], constrain="domain")
    fig.update_yaxes(visible=False, range=[y1, y0], scaleanchor="x", constrain="domain")
    fig.update_layout(
        height=height,
        margin=dict(l=0, r=0, t=0, b=0),
        dragmode=drag if selectable else "zoom",
        hovermode="closest",
        showlegend=bool(marks) and not selectable,
        legend=dict(
            x=0.01,
            y=0.99,
            xanchor="left",
            yanchor="top",
            bgcolor="rgba(0,0,0,0.55)",
            font=dict(color="white"),
        ),
    )
    return fig


def _band(fig: go.Figure, band: CurveBand, colour: str, name: str) -> None:
    """The band as a filled area between its upper and lower edge, toggled with its curve's legend."""
    x, low, high = _finite(band.x), _finite(band.low), _finite(band.high)
    fig.add_scatter(
        x=x,
        y=high,
        mode="lines",
        line=dict(width=0),
        legendgroup=name,
        showlegend=False,
        hoverinfo="skip",
    )
    fig.add_scatter(
        x=x,
        y=low,
        mode="lines",
        line=dict(width=0),
        fill="tonexty",
        fillcolor=_translucent(colour),
        legendgroup=name,
        showlegend=False,
        hoverinfo="skip",
    )


def _curve(
    fig: go.Figure,
    x: np.ndarray,
    y: np.ndarray,
    thresholds: np.ndarray,
    name: str,
    label: str,
    colour: str,
    axes: tuple[str, str],
) -> None:
    """One clickable curve: each point carries ``[threshold, class]`` (the gallery reads both)."""
    fig.add_scatter(
        x=x,
        y=y,
        mode="lines+markers",
        name=label,
        legendgroup=name,
        line=dict(color=colour),
        marker=dict(size=4, color=colour),
        customdata=[[None if np.isnan(t) else float(t), name] for t in thresholds],
        hovertemplate=f"{name}<br>{axes[0]} %{{x:.3f}} {axes[1]} %{{y:.3f}}<br>threshold "
        "%{customdata[0]:.3f}<br>click: the films this threshold gets wrong<extra></extra>",
    )


def _point(
    fig: go.Figure, xy: tuple[float, float], threshold: float | None, name: str, colour: str
) -> None:
    fig.add_scatter(
        x=[xy[0]],
        y=[xy[1]],
        mode="markers",
        name=f"{name} operating point",
        legendgroup=name,
        showlegend=False,
        marker=dict(size=12, color=colour, line=dict(width=2, color="black")),
        customdata=[[threshold, name]],
        hovertemplate=f"{name} at its threshold<br>%{{x:.3f}}, %{{y:.3f}}<br>click: the films "
        "this threshold gets wrong<extra></extra>",
    )


def roc_figure(
    curves: Mapping[str, RocCurve | Mapping[str, np.ndarray]],
    points: Mapping[str, tuple[float, float]] | None = None,
    title: str = "ROC",
    *,
    bands: Mapping[str, CurveBand] | None = None,
    labels: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> go.Figure:
    """ROC curve per class with each class's operating point, its bootstrap band (``bands``) and
    legend text (``labels``, e.g. AUROC with its CI); every point opens a gallery when clicked."""
    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        line=dict(dash="dot", color="#bbbbbb"),
        showlegend=False,
        hoverinfo="skip",
    )
    for i, (name, roc) in enumerate(curves.items()):
        colour = _colour(i)
        if bands and name in bands:
            _band(fig, bands[name].roc, colour, name)
        _curve(
            fig,
            _series(roc, "fpr"),
            _series(roc, "tpr"),
            _series(roc, "thresholds"),
            name,
            (labels or {}).get(name, name),
            colour,
            ("FPR", "TPR"),
        )
        if points and name in points:
            _point(fig, points[name], (thresholds or {}).get(name), name, colour)
    fig.update_layout(
        title=title,
        xaxis=dict(title="1 - specificity (FPR)", range=[0, 1]),
        yaxis=dict(title="sensitivity (TPR)", range=[0, 1.02]),
        margin=_MARGIN,
        height=460,
        legend=dict(orientation="h", y=-0.22, x=0),
        clickmode="event+select",
    )
    return fig


def pr_figure(
    curves: Mapping[str, PrCurve | Mapping[str, np.ndarray]],
    points: Mapping[str, tuple[float, float]] | None = None,
    prevalence: Mapping[str, float] | None = None,
    title: str = "Precision-recall",
    *,
    bands: Mapping[str, CurveBand] | None = None,
    labels: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> go.Figure:
    """PR curve per class (points are (recall, precision)), with bands, legend text and the
    prevalence as the dotted no-skill line; every point opens a gallery when clicked."""
    fig = go.Figure()
    for i, (name, pr) in enumerate(curves.items()):
        colour = _colour(i)
        if bands and name in bands:
            _band(fig, bands[name].pr, colour, name)
        _curve(
            fig,
            _series(pr, "recall"),
            _series(pr, "precision"),
            _series(pr, "thresholds"),
            name,
            (labels or {}).get(name, name),
            colour,
            ("recall", "precision"),
        )
        if prevalence and name in prevalence:
            fig.add_scatter(
                x=[0, 1],
                y=[prevalence[name]] * 2,
                mode="lines",
                showlegend=False,
                legendgroup=name,
                hoverinfo="skip",
                line=dict(dash="dot", color=colour, width=1),
            )
        if points and name in points:
            _point(fig, points[name], (thresholds or {}).get(name), name, colour)
    fig.update_layout(
        title=title,
        xaxis=dict(title="recall (sensitivity)", range=[0, 1]),
        yaxis=dict(title="precision (PPV)", range=[0, 1.02]),
        margin=_MARGIN,
        height=460,
        legend=dict(orientation="h", y=-0.22, x=0),
        clickmode="event+select",
    )
    return fig


def reliability_figure(bins: Mapping[str, ReliabilityBins], ece: Mapping[str, float]) -> go.Figure:
    """Observed fraction positive against mean predicted probability, per class; marker size ~ count."""
    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        line=dict(dash="dot", color="#bbbbbb"),
        name="perfect",
        hoverinfo="skip",
    )
    for i, (name, b) in enumerate(bins.items()):
        count = np.asarray(b.count, dtype=float)
        filled = count > 0
        size = 6 + 14 * np.sqrt(count[filled] / max(count.max(), 1))
        fig.add_scatter(
            x=_finite(b.mean_pred)[filled],
            y=_finite(b.frac_pos)[filled],
            mode="lines+markers",
            name=f"{name} (ECE {ece.get(name, np.nan):.3f})",
            line=dict(color=_colour(i)),
            marker=dict(size=size),
            customdata=count[filled],
            hovertemplate=f"{name}<br>predicted %{{x:.3f}}<br>observed "
            f"%{{y:.3f}}<br>n=%{{customdata:.0f}}<extra></extra>",
        )
    fig.update_layout(
        title="Calibration (reliability)",
        xaxis=dict(title="mean predicted probability", range=[0, 1]),
        yaxis=dict(title="fraction positive", range=[0, 1.02]),
        margin=_MARGIN,
        height=460,
        legend=dict(orientation="h", y=-0.22, x=0),  # below, so the plot keeps its width at 1024 px
    )
    return fig


def confusion_figure(matrix: Sequence[Sequence[float]], classes: Sequence[str]) -> go.Figure:
    """Rows: true class; columns: predicted class; cell text shows count and row share."""
    m = np.asarray(matrix, dtype=float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    text = [
        [f"{int(m[i, j])}<br>{share[i, j]:.0%}" for j in range(m.shape[1])]
        for i in range(m.shape[0])
    ]
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=list(classes),
            y=list(classes),
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            showscale=False,
            hoverinfo="skip",
        )
    )
    # Plotly does not report clicks on heatmap cells as selections; an invisible marker at each
    # cell's centre does, so a click opens that cell's films.
    cells = [(t, p) for t in classes for p in classes]
    fig.add_scatter(
        x=[p for _, p in cells],
        y=[t for t, _ in cells],
        mode="markers",
        marker=dict(size=40, opacity=0),
        showlegend=False,
        customdata=[text[i][j] for i in range(len(classes)) for j in range(len(classes))],
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata}<br>click: these films"
        "<extra></extra>",
    )
    fig.update_layout(
        title="Confusion matrix",
        xaxis=dict(title="predicted", side="bottom"),
        yaxis=dict(title="true", autorange="reversed"),
        margin=_MARGIN,
        height=120 + 60 * len(classes),
        clickmode="event+select",
    )
    return fig


def training_figure(log: pd.DataFrame, columns: Sequence[str], title: str) -> go.Figure:
    """Chosen numeric columns of the training log against the epoch."""
    x = log["epoch"] if "epoch" in log else pd.Series(range(1, len(log) + 1))
    fig = go.Figure()
    for i, col in enumerate(columns):
        fig.add_scatter(
            x=x, y=log[col], mode="lines+markers", name=col, line=dict(color=_colour(i))
        )
    fig.update_layout(
        title=title,
        xaxis=dict(
            title="epoch",
            tickmode="linear",
            tick0=int(x.min()) if len(x) else 0,
            dtick=max(1, int(np.ceil(len(x) / 12))),
            tickformat="d",
        ),
        margin=_MARGIN,
        height=340,
    )
    return fig


def auroc_comparison(
    classes: Sequence[str],
    series: Mapping[str, Sequence[float]],
    errors: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> go.Figure:
    """Grouped bars: per-class AUROC of several checkpoints, with CI whiskers when given."""
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float)
        error_y = None
        if errors and name in errors:
            low, high = (np.asarray(v, dtype=float) for v in errors[name])
            error_y = dict(
                type="data", symmetric=False, array=high - values, arrayminus=values - low
            )
        fig.add_bar(
            x=list(classes),
            y=values,
            name=name,
            marker_color=_colour(i),
            error_y=error_y,
            hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}}<extra></extra>",
        )
    fig.update_layout(
        barmode="group",
        title="Per-class AUROC",
        yaxis=dict(title="AUROC", range=[0, 1]),
        margin=_MARGIN,
        height=420,
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def delta_figure(forest: Mapping[str, Sequence[float]], title: str, axis: str) -> go.Figure:
    """Forest plot: per finding the difference (first minus second) with its 95% interval, and
    the line of no difference; a finding whose interval crosses the line may differ by chance."""
    names = list(forest["names"])[::-1]
    delta = np.asarray(forest["delta"], dtype=float)[::-1]
    low = np.asarray(forest["low"], dtype=float)[::-1]
    high = np.asarray(forest["high"], dtype=float)[::-1]
    crosses = (low <= 0) & (high >= 0)
    fig = go.Figure()
    fig.add_scatter(
        x=delta,
        y=names,
        mode="markers",
        marker=dict(size=10, color=[NEGATIVE if c else ACCENT for c in crosses]),
        error_x=dict(type="data", symmetric=False, array=high - delta, arrayminus=delta - low),
        customdata=np.stack([low, high], axis=1) if len(names) else None,
        hovertemplate="%{y}<br>difference %{x:+.3f}<br>95% CI %{customdata[0]:+.3f} to "
        "%{customdata[1]:+.3f}<extra></extra>",
        showlegend=False,
    )
    fig.add_vline(x=0, line=dict(color="#999999", dash="dot"))
    fig.update_layout(
        title=title,
        xaxis=dict(title=axis, zeroline=False),
        margin=_MARGIN,
        height=max(220, 28 * len(names) + 110),
    )
    return fig


_PALETTE = (
    "#1f6fb2",
    "#e67e22",
    "#27ae60",
    "#c0392b",
    "#8e44ad",
    "#16a085",
    "#d35400",
    "#2c3e50",
    "#f1c40f",
    "#7f8c8d",
    "#e84393",
    "#00cec9",
    "#6c5ce7",
    "#a0522d",
)


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _translucent(colour: str, alpha: float = 0.18) -> str:
    """``#rrggbb`` as ``rgba(r, g, b, alpha)``: a band under its curve's colour."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"
