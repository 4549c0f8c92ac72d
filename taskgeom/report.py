"""A self-contained HTML report of a picture run, drawn with plotly (plotly.js embedded once, so it opens
offline): a header with the run's settings and accuracies; the 3-D InPCA view (axes named by component
and the sign of its eigenvalue, P0 and P* marked, thin seeds and bold means, a legend entry per task and
method that toggles it, hover with task, method, seed, epoch, accuracy and true progress); explained
stress by dimension; progress against epochs; normalised distances against progress (Figs. 3b and 7b)
with the seed spread; the task-distance matrix as a heat map; the static PNG figures. Every figure has a
caption."""

from __future__ import annotations

import base64
import dataclasses
import html
import math
from pathlib import Path

from . import figures
from ._configjson import strict_dumps

__all__ = ["write_report"]

_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1150px; }
table { border-collapse: collapse; margin: 8px 0 18px 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; }
figure { margin: 18px 0 30px 0; }
figcaption { color: #444; font-size: 14px; margin-top: 4px; max-width: 1000px; }
"""

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _table(rows, header) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _axis_name(k: int, eigenvalue: float) -> str:
    """Short (a 3-D scene clips long titles): the sign is explained in the caption (+ space-like, − time-like)."""
    return f"InPCA {k + 1} (λ = {eigenvalue:.3g}, {'+' if eigenvalue >= 0 else '−'})"


def _ci(iv, fmt: str = ".3f") -> str:
    """`` [low, high]`` of a bootstrap interval, or nothing."""
    if not iv or iv.get("low") is None:
        return ""
    return f" [{iv['low']:{fmt}}, {iv['high']:{fmt}}]"


def _uncertainty_note(res, unc: dict) -> str:
    """How the intervals were computed, and the explained stress with its intervals."""
    if not unc:
        return "<p>No bootstrap intervals (n_boot = 0).</p>"
    stress = ", ".join(
        f"{k} dims {100 * v:.2f}%" + _ci({"low": 100 * iv["low"], "high": 100 * iv["high"]}, ".2f")
        for k, v in res.explained_stress.items()
        if (iv := unc.get("explained_stress", {}).get(k))
    )
    return (
        f"<p>Brackets: {100 * unc['level']:.0f}% percentile bootstrap intervals, {unc['replicates']} replicates "
        f"over {html.escape(unc['over'])} (seed {unc['seed']}; per-sample terms reweighted, nothing "
        f"recomputed). Explained stress: {html.escape(stress)}.</p>"
    )


def _hover(line, p) -> str:
    who = f"mean of task {line.task}" if line.mean else f"task {line.task}"
    head = f"{who}<br>method {line.method}" + ("" if line.mean else f", seed {line.seed}")
    parts = [head]
    if p.get("epoch") is not None:
        parts.append(f"epoch {p['epoch']:.2f}")
    if p.get("accuracy") is not None:
        parts.append(f"accuracy {100 * p['accuracy']:.1f}%")
    if p.get("reached", True):
        parts.append(f"progress {p['progress']:.3f}")
    elif line.mean:
        parts.append(f"grid progress {p['progress']:.3f}, not reached by every seed")
    else:
        parts.append(
            f"progress {p['true_progress']:.3f} (grid value {p['progress']:.3f} not reached: "
            "a copy of the nearest checkpoint)"
        )
    return "<br>".join(parts)


def _xyz(points) -> dict:
    """``x``, ``y``, ``z`` lists of a curve's points (a 2-D embedding's padded with z = 0)."""
    xyz = figures.curve_xyz(points)
    return {"x": [q[0] for q in xyz], "y": [q[1] for q in xyz], "z": [q[2] for q in xyz]}


def _inpca_figure(res, colors, placed=()):
    import plotly.graph_objects as go

    emb = res.embedding
    ev = list(emb.eigenvalues)[:3]
    fig = go.Figure()
    for ln in placed:  # models placed into the picture out of sample (taskgeom place)
        fig.add_trace(
            go.Scatter3d(
                **_xyz(ln.points),
                mode="lines+markers",
                line=dict(color="black", width=5, dash="dash"),
                marker=dict(size=3, color="black"),
                name=f"{ln.task} (placed)",
                text=[f"{html.escape(ln.task)} (placed)<br>progress {p['progress']:.3f}" for p in ln.points],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    _add_lines(fig, emb.lines, colors)
    _add_marks(fig, emb.marks)
    # framed on the trajectories (P* is usually far away); a button frames P0 and P* too
    pts = [p["xyz"] for ln in emb.lines for p in ln.points]
    tight, wide = _ranges(pts), _ranges(pts + [m["xyz"] for m in emb.marks])
    axes = ("xaxis", "yaxis", "zaxis")

    def scene(rng):
        return {f"scene.{a}.range": r for a, r in zip(axes, rng)}

    fig.update_layout(
        height=680,
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(title="click: toggle a task · method", itemsizing="constant"),
        scene=dict(
            **{
                a: dict(title=_axis_name(k, ev[k]) if k < len(ev) else f"InPCA {k + 1}", range=tight[k])
                for k, a in enumerate(axes)
            },
            aspectmode="cube",
            domain=dict(x=[0.04, 0.96], y=[0.04, 0.96]),  # the axis titles stay inside the figure
        ),
        updatemenus=[
            dict(
                type="buttons",
                direction="right",
                x=0.0,
                y=1.04,
                xanchor="left",
                buttons=[
                    dict(label="frame the trajectories", method="relayout", args=[scene(tight)]),
                    dict(label="frame P0 and P* too", method="relayout", args=[scene(wide)]),
                ],
            )
        ],
    )
    return fig


def _add_lines(fig, lines, colors: dict) -> None:
    """Every seed's curve (thin) and each task's mean (bold; one legend entry per task and method)."""
    import plotly.graph_objects as go

    shown = set()
    for ln in lines:
        group = ln.task if ln.task == ln.method else f"{ln.task} · {ln.method}"  # grouped by method: once
        fig.add_trace(
            go.Scatter3d(
                **_xyz(ln.points),
                mode="lines",
                line=dict(color=colors[ln.task], width=9 if ln.mean else 2.5),
                opacity=1.0 if ln.mean else 0.55,
                name=group + (" (mean)" if ln.mean else f" (seed {ln.seed})"),
                legendgroup=group,
                showlegend=ln.mean and group not in shown,
                text=[_hover(ln, p) for p in ln.points],
                hovertemplate="%{text}<extra></extra>",
            )
        )
        if ln.mean:
            shown.add(group)


def _add_marks(fig, marks) -> None:
    """P0 and P*, as a circle and a diamond."""
    import plotly.graph_objects as go

    for mark, symbol in zip(marks, ("circle", "diamond")):
        q = mark["xyz"] + [0.0] * (3 - len(mark["xyz"]))
        fig.add_trace(
            go.Scatter3d(
                x=[q[0]],
                y=[q[1]],
                z=[q[2]],
                mode="markers+text",
                marker=dict(size=6, color="black", symbol=symbol),
                text=[mark["name"].split(" ")[0]],  # "P0", "P*": the full name in the legend and hover
                textposition="top center",
                name=mark["name"],
                hovertemplate=html.escape(mark["name"]) + "<extra></extra>",
            )
        )


def _ranges(points) -> list:
    """[lo, hi] per axis around ``points``, padded by 8%."""
    out = []
    for k in range(3):
        vals = [p[k] if len(p) > k else 0.0 for p in points]
        lo, hi = min(vals), max(vals)
        pad = 0.08 * (hi - lo) or 1e-3
        out.append([lo - pad, hi + pad])
    return out


def _stress_figure(res):
    import plotly.graph_objects as go

    data = figures.stress(res)
    ks = data["ks"]
    fig = go.Figure(
        go.Scatter(
            x=ks,
            y=data["percent"],
            mode="lines+markers",
            hovertemplate="%{x} dimensions: %{y:.2f}%<extra></extra>",
            name="explained stress",
        )
    )
    if data["interval"]:  # the intervals the text gives, as vertical bars (they need not contain the estimate)
        xs, ys, text = [], [], []
        for k, (lo, hi) in zip(ks, data["interval"]):
            xs += [k, k, None]
            ys += [lo, hi, None]
            text += [f"{k} dimensions: 95% interval [{lo:.1f}, {hi:.1f}]%"] * 2 + [None]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line=dict(width=6, color="rgba(31,119,180,0.35)"),
                text=text,
                hovertemplate="%{text}<extra></extra>",
                name="95% interval",
            )
        )
    fig.update_layout(
        height=340,
        margin=dict(t=44),  # room for the toolbar above the plot (it covered the top values)
        xaxis=dict(title="dimensions k", tickmode="array", tickvals=ks),
        yaxis=dict(title="explained stress χ_k (%)", range=[0, 101]),
    )
    return fig


def _progress_figure(res, colors):
    import plotly.graph_objects as go

    data = figures.progress_curves(res)
    fig = go.Figure()
    shown = set()
    for c in data["curves"]:
        task, seed, ep, prog, acc = c["task"], c["seed"], c["x"], c["progress"], c["accuracy"]
        fig.add_trace(
            go.Scatter(
                x=ep,
                y=prog,
                mode="lines+markers",
                marker=dict(size=4),
                line=dict(color=colors[task], width=1.5),
                name=task,
                legendgroup=task,
                showlegend=task not in shown,
                text=[
                    f"task {task}, seed {seed}<br>{data['x_label']} {e:.2f}<br>progress {p:.3f}"
                    + ("" if a is None else f"<br>accuracy {100 * a:.1f}%")
                    for e, p, a in zip(ep, prog, acc)
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )
        shown.add(task)
    fig.update_layout(
        height=380,
        margin=dict(t=44),  # room for the toolbar above the plot (it covered the top values)
        xaxis=dict(title=data["x_label"]),
        yaxis=dict(title="progress on the union task"),
    )
    return fig


def _band(fig, grid, bounds: dict, fill: str, task: str, name: str) -> None:
    """A filled band between ``bounds["low"]`` and ``bounds["high"]`` over ``grid`` (grouped with the task)."""
    import plotly.graph_objects as go

    lo, hi = figures.finite(bounds["low"]), figures.finite(bounds["high"])
    fig.add_trace(
        go.Scatter(x=grid, y=hi, mode="lines", line=dict(width=0), legendgroup=task, showlegend=False, hoverinfo="skip")
    )
    fig.add_trace(
        go.Scatter(
            x=grid,
            y=lo,
            mode="lines",
            line=dict(width=0),
            fill="tonexty",
            fillcolor=fill,
            legendgroup=task,
            name=name,
            hoverinfo="skip",
        )
    )


def _distance_figure(res, colors):
    import plotly.graph_objects as go

    data = figures.distance_curves(res)
    fig = go.Figure()
    grid = data["grid"]
    for c in data["curves"]:
        task, keep = c["task"], c["reached"]  # only the progress both tasks reached: beyond it runs are padded
        if c["interval"]:
            band = {k: figures.masked(v, keep) for k, v in c["interval"].items()}
            _band(fig, grid, band, colors.get(task, "#888") + "66", task, f"{task}: 95% interval")
        if c["spread"]:
            band = {k: figures.masked(v, keep) for k, v in c["spread"].items()}
            _band(fig, grid, band, colors.get(task, "#888") + "33", task, f"{task}: seed spread")
        iv = c["interval"] or {"low": [None] * len(grid), "high": [None] * len(grid)}
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=figures.masked(c["values"], keep),
                customdata=[[_fmt(lo), _fmt(hi)] for lo, hi in zip(iv["low"], iv["high"])],
                mode="lines+markers",
                marker=dict(size=4),
                line=dict(color=colors.get(task, "#888"), width=2.5),
                name=task,
                legendgroup=task,
                hovertemplate=f"task {task}<br>progress %{{x:.3f}}<br>normalised distance %{{y:.3g}}"
                "<br>95% interval [%{customdata[0]}, %{customdata[1]}]<extra></extra>",
            )
        )
    fig.add_hline(y=1.0, line=dict(color="black", dash="dot", width=1))
    shown = data["shown"]
    pad = 0.03 * (max(shown) - min(shown)) if len(shown) > 1 else 0.01
    fig.update_layout(
        height=380,
        margin=dict(t=44),  # room for the toolbar above the plot (it covered the top values)
        xaxis=dict(title="progress", range=[min(shown) - pad, max(shown) + pad] if shown else None),
        yaxis=dict(
            title=f"distance to '{data['reference']}' / mean tube radius",
            type="log",
            dtick=1,
            range=_log_range([y for tr in fig.data if tr.mode == "lines+markers" for y in tr.y]),
        ),
    )
    return fig


def _fmt(v) -> str:
    return "unbounded" if v is None else f"{v:.3g}"


def _log_range(estimates) -> list | None:
    """A log axis (decades) from the estimates: a decade below the lowest (and 1, the tubes touching) to a
    decade above the highest, so that one unbounded interval (a replicate whose tube has radius 0) does not
    flatten every curve; such a band runs off the top, and the curve's hover gives its bounds."""
    ys = [y for y in estimates if y is not None and math.isfinite(y) and y > 0]
    if not ys:
        return None
    return [math.floor(math.log10(min(min(ys), 1.0))) - 0.3, math.ceil(math.log10(max(ys))) + 1]


def _heatmap_figure(td):
    import plotly.graph_objects as go

    names = td["tasks"]
    z = [figures.finite(row) for row in td["normalized"]]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            colorscale="Viridis",
            text=[[("" if v is None else f"{v:.2f}") for v in row] for row in z],
            texttemplate="%{text}",
            colorbar=dict(title="normalised<br>distance"),
            customdata=_matrix_ci(td.get("normalized_interval"), len(names)),
            hovertemplate="%{y} ↔ %{x}: %{z:.3f}%{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        height=150 + 70 * len(names),
        width=260 + 90 * len(names),
        margin=dict(t=50),  # the toolbar sits above the cells, not on the top-right one
        yaxis=dict(autorange="reversed"),
    )
    return fig


def _matrix_ci(iv, k: int) -> list:
    """Per cell, `` [low, high]`` of the bootstrap interval of a task-distance matrix (or nothing)."""
    if not iv:
        return [[""] * k for _ in range(k)]
    lo, hi = iv["low"], iv["high"]
    return [
        [_ci({"low": lo[i][j], "high": hi[i][j]}) if math.isfinite(lo[i][j]) else "" for j in range(k)]
        for i in range(k)
    ]


def _figure(fig, div_id: str, caption: str) -> str:
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})
    return f"<figure>{body}<figcaption>{caption}</figcaption></figure>"


def _settings_rows(settings: dict) -> list:
    return [[k, "—" if v is None else v] for k, v in settings.items()]


_PNG_CAPTIONS = {
    "inpca_3d.png": "Static version of the 3-D InPCA view (matplotlib): thin lines are seeds, bold lines the "
    "means over seeds.",
    "summary.png": "Static summary (matplotlib): explained stress by dimension, progress against epochs, "
    "normalised distances to the reference task, and per-class progress (blue: classes the task was trained "
    "on, orange: unseen ones).",
}


def write_report(
    res,
    out: Path,
    title: str = "taskgeom picture",
    settings: dict | None = None,
    placed=(),
    name: str = "report.html",
    figures=(),
) -> Path:
    """Write ``out/<name>`` (``report.html``) from a :class:`taskgeom.analysis.PictureResult` (with its figures).

    ``settings``: what the header shows about the run (e.g. data, architecture, epochs, seeds,
    imprinting head, commit), in order. ``placed``: :class:`taskgeom.analysis.Line` curves of models placed
    into the picture (:func:`taskgeom.analysis.place`), drawn in the 3-D view as their own traces.
    ``figures``: names of static PNGs in ``out`` to inline (:func:`taskgeom.plots.picture_figures`).
    """
    out = Path(out)
    tasks = list(dict.fromkeys(ln.task for ln in res.embedding.lines))
    colors = {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(tasks)}
    # the families are tasks in the main job; taskgeom analyse groups by any field ("groups": "by lr: ...")
    word = "task" if str((settings or {}).get("groups", "by task")).startswith("by task") else "group"
    parts = _header(res, title, settings) + _results_section(res, word) + _main_figures(res, colors, placed)
    parts += _comparison_figures(res, colors, word) + _static_figures(figures, out) + _page_end(res, settings)
    path = out / name
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _header(res, title: str, settings) -> list:
    """The page's head (plotly.js inlined), title, summary line and settings table."""
    from plotly.offline import get_plotlyjs

    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{res.trajectories} trajectories, {res.checkpoints} checkpoints, evaluated on {res.n} "
        f"samples x {res.c} classes ({html.escape(res.eval_set)}).</p>",
    ]
    if settings:
        parts.append("<h2>Settings</h2>" + _table(_settings_rows(settings), ["setting", "value"]))
    return parts


def _results_section(res, word: str = "task") -> list:
    """The per-task table (progress with its interval, accuracy, Riemann length) and the interval note."""
    accs: dict = {}
    for task, _seed, _prog, acc in res.embedding.keys:
        if acc and acc[-1] is not None:
            accs.setdefault(task, []).append(acc[-1])
    unc = getattr(res, "uncertainty", None) or {}
    return [
        f"<h2>Results per {word}</h2>",
        _table(
            [
                [
                    t,
                    f"{res.progress_on_union_task[t]['mean']:.3f}" + _ci(unc.get("progress_on_union_task", {}).get(t)),
                    f"{100 * sum(accs[t]) / len(accs[t]):.1f}%" if accs.get(t) else "—",
                    f"{res.riemann_length[t]['mean']:.3f}",
                ]
                for t in res.progress_on_union_task
            ],
            [
                word,
                "final progress on the union task (mean over seeds)",
                "final accuracy on all classes, imprinted (mean over seeds)",
                "Riemann length (eq. 6)",
            ],
        ),
        f"<p>Length of the geodesic P0 &rarr; P*: {res.geodesic_length_P0_Pstar:.4f}.</p>",
        _uncertainty_note(res, unc),
    ]


def _main_figures(res, colors: dict, placed) -> list:
    """Figures 1-3: the 3-D InPCA view, explained stress, progress against epochs."""
    chi = res.explained_stress
    return [
        "<h2>InPCA of the re-indexed trajectories</h2>",
        _figure(
            _inpca_figure(res, colors, placed),
            "tg-inpca",
            "Figure 1. InPCA embedding (eqs. 9-11) of every trajectory re-indexed by progress (Remark 4): "
            "thin lines are seeds, bold lines the means over seeds (placed into the embedding out of sample), "
            "P0 (ignorance, uniform predictions) and P* (truth) marked. Axes are the top components, named by "
            "the sign of their eigenvalue (+: space-like, −: time-like); "
            f"these 3 dimensions explain {100 * chi.get('3', float('nan')):.2f}% of the stress. "
            "Drag to rotate, scroll to zoom, click a legend entry to toggle a task and method. Hover gives the "
            "epoch and accuracy (interpolated between checkpoints) and the true progress. The progress grid spans "
            "only the progress the runs reach (never extrapolated), and each run is drawn and embedded only over the "
            "progress it reached (no copies of a first or last checkpoint); a task's mean only where every seed reached.",
        ),
        "<h2>Explained stress</h2>",
        _figure(
            _stress_figure(res),
            "tg-stress",
            "Figure 2. Explained stress χ_k (eq. 11) of the top k InPCA dimensions, by dimension.",
        ),
        "<h2>Progress against epochs</h2>",
        _figure(
            _progress_figure(res, colors),
            "tg-progress",
            "Figure 3. Progress (eq. 4) on the union task of every recorded checkpoint against its epoch, one "
            "line per seed; click a task in the legend to toggle it.",
        ),
    ]


def _comparison_figures(res, colors: dict, word: str = "task") -> list:
    """Figures 4 and 5: normalised distances to the reference against progress, and between every pair."""
    parts = []
    if res.normalized_distance:
        parts += [
            "<h2>Normalised distances against progress</h2>",
            _figure(
                _distance_figure(res, colors),
                "tg-distance",
                f"Figure 4 (the paper's Figs. 3b and 7b). Distance between each task's mean trajectory and "
                f"that of '{html.escape(res.reference_task)}', over the mean of their tube radii (Remark 5), "
                "against progress, over the progress every seed of both tasks reached (elsewhere a run would be "
                "padded with its first or last model, so nothing is drawn); below the dotted line at 1 the tubes intersect. Darker band: the 95% bootstrap "
                "interval (over evaluation samples, and seeds where a task has two or more, mean trajectories and "
                "tube radii recomputed in each replicate; see above); a band that runs off the top has a larger "
                "or unbounded upper bound (a replicate that draws one seed in place of all has a tube of radius "
                "0): hover a curve for its interval. Lighter band: "
                "the seed spread, min to max over the task's seeds of the same ratio with one seed in place "
                "of the mean (not a confidence interval).",
            ),
        ]
    td = res.task_distances
    if td and len(td["tasks"]) > 1:
        parts += [
            f"<h2>Distances between {word}s (Remark 5)</h2>",
            _figure(
                _heatmap_figure(td),
                "tg-tasks",
                f"Figure 5. Normalised distance between every pair of {word}s: the distance between their mean "
                "trajectories over the mean of their tube radii at each progress, averaged over one range for "
                f"every pair, the progress every seed of every {word} reaches{_range_note(res, word)} (re-indexed "
                f"on it, so that a {word} reaching little progress is not close to all by construction; 1 = the "
                "tubes touch); hover for the bootstrap interval.",
            ),
        ]
    return parts


def _range_note(res, word: str) -> str:
    """The compared range, and where it is narrow, that it is."""
    window = figures.compared_range(res)
    if window is None:
        return ""
    note = f" ({window['low']:.3f}-{window['high']:.3f}"
    if window["narrow"]:
        note += (
            f": a narrow range, {100 * window['share']:.1f}% of the progress the runs reach, from the highest start "
            "to the lowest end of any run, so every pair is compared near one value of progress; Figure 4 compares each "
            f"{word} with '{res.reference_task}' over the progress both reach"
        )
    return html.escape(note + ")")


def _static_figures(figures, out: Path) -> list:
    """The static PNGs ``figures`` (names in ``out``), inlined."""
    parts = []
    for k, fig in enumerate(figures):
        data = base64.b64encode((out / fig).read_bytes()).decode()
        caption = _PNG_CAPTIONS.get(fig, "Static figure.")
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}' style='max-width:100%'>"
            f"<figcaption>Figure {6 + k}. {html.escape(caption)} ({html.escape(fig)} in the report folder)"
            "</figcaption></figure>"
        )
    return parts


def _page_end(res, settings) -> list:
    """The data behind the 3-D view (JSON, for scripts reading the page) and the end of the page."""
    emb = res.embedding
    parts = []
    payload = {
        "lines": [dataclasses.asdict(ln) for ln in emb.lines],
        "marks": emb.marks,
        "settings": settings or {},
    }
    data_json = strict_dumps(payload).replace("</", "<\\/")  # never closes the script element early
    parts.append(f"<script type='application/json' id='tg-data'>{data_json}</script>")
    parts.append(
        "<script>window.addEventListener('load', function () { document.body.setAttribute('data-rendered', "
        "String(document.querySelectorAll('.js-plotly-plot .main-svg').length)); });</script></body></html>"
    )
    return parts


def write_comparison(res, path: Path, a: str, b: str) -> Path:
    """A self-contained page of a :class:`taskgeom.comparison.Comparison`: the normalised distance between the
    two groups along the progress compared, its bootstrap band, the permutation test's p-value."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    fig = go.Figure()
    if res.interval:
        _band(fig, res.grid, res.interval, "#1f77b466", "a", f"{100 * res.level:.0f}% interval ({res.over})")
    fig.add_trace(
        go.Scatter(
            x=res.grid,
            y=figures.finite(res.normalized_distance),
            mode="lines+markers",
            line=dict(color="#1f77b4", width=2.5),
            name="normalised distance",
            hovertemplate="progress %{x:.3f}<br>normalised distance %{y:.3g}<extra></extra>",
        )
    )
    fig.add_hline(y=1.0, line=dict(color="black", dash="dot", width=1))
    fig.update_layout(
        height=420,
        margin=dict(t=44),
        xaxis=dict(title="progress"),
        yaxis=dict(title="normalised distance", type="log", exponentformat="power"),
    )
    head = (
        f"{html.escape(a)} ({res.seeds[0]} seeds) against {html.escape(b)} ({res.seeds[1]} seeds): mean normalised "
        f"distance {res.mean:.3f}{_ci(res.mean_interval)}; permutation test of exchangeable groups p = "
        f"{res.p_value:.3g} ({'all' if res.exhaustive else 'random'} {res.permutations} splits of the seeds)"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>taskgeom compare</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body><h1>taskgeom compare</h1>"
        f"<p>{head}</p>"
        + _figure(
            fig,
            "tg-compare",
            "Distance between the two groups' mean trajectories over the mean of their tube radii (Remark 5), at "
            "each progress every run of both reaches; below 1 (dotted) the tubes overlap.",
        )
        + "</body></html>"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def publish(res, out, settings: dict | None = None, title: str = "taskgeom picture") -> Path:
    """Figures, ``report.html`` and ``results.json`` of an analysis (:func:`taskgeom.analyse`) in the folder
    ``out`` (the main job's outputs; ``settings``: what the report's header lists). Returns the report's path."""
    from .plots import picture_figures

    out, settings = Path(out), settings or {}
    out.mkdir(parents=True, exist_ok=True)
    figures = picture_figures(res, out)
    page = write_report(res, out, title=title, settings=settings, figures=figures)
    results = {**res.to_json(), **({"figures": figures} if figures else {}), "report": page.name, "settings": settings}
    (out / "results.json").write_text(strict_dumps(results, indent=2))
    return page
