"""A self-contained HTML report of a picture run: headline numbers, the static figures, and an
interactive 3-D InPCA view (drag to rotate, wheel to zoom, hover for task, method, seed, progress,
epoch and accuracy; mean trajectories in bold; P0 and P* marked). No network is needed to open it."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from pathlib import Path

__all__ = ["write_report"]

_JS = r"""
(function () {
  const data = JSON.parse(document.getElementById('tg-data').textContent);
  const canvas = document.getElementById('tg-3d');
  const ctx = canvas.getContext('2d');
  const tip = document.getElementById('tg-tip');
  let yaw = 0.6, pitch = 0.35, zoom = 1.0, drag = null;
  const all = [];
  data.lines.forEach(l => l.points.forEach(p => all.push(p.xyz)));
  data.marks.forEach(m => all.push(m.xyz));
  const center = [0, 1, 2].map(k => all.reduce((s, p) => s + p[k], 0) / all.length);
  const radius = Math.max(1e-12, ...all.map(p => Math.hypot(p[0] - center[0], p[1] - center[1], p[2] - center[2])));
  function project(p) {
    const x = (p[0] - center[0]) / radius, y = (p[1] - center[1]) / radius, z = (p[2] - center[2]) / radius;
    const cx = Math.cos(yaw) * x - Math.sin(yaw) * z, cz = Math.sin(yaw) * x + Math.cos(yaw) * z;
    const cy = Math.cos(pitch) * y - Math.sin(pitch) * cz, dz = Math.sin(pitch) * y + Math.cos(pitch) * cz;
    const s = 0.42 * Math.min(canvas.width, canvas.height) * zoom;
    return [canvas.width / 2 + s * cx, canvas.height / 2 - s * cy, dz];
  }
  let screen = [];
  function draw() {
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    screen = [];
    data.lines.forEach(l => {
      ctx.strokeStyle = l.color;
      ctx.globalAlpha = l.mean ? 1.0 : 0.45;
      ctx.lineWidth = l.mean ? 3.5 : 1.2;
      ctx.beginPath();
      l.points.forEach((p, i) => {
        const q = project(p.xyz);
        if (i === 0) ctx.moveTo(q[0], q[1]); else ctx.lineTo(q[0], q[1]);
        screen.push({x: q[0], y: q[1], line: l, point: p});
      });
      ctx.stroke();
    });
    ctx.globalAlpha = 1.0;
    data.marks.forEach(m => {
      const q = project(m.xyz);
      ctx.fillStyle = '#000000';
      ctx.beginPath(); ctx.arc(q[0], q[1], 6, 0, 2 * Math.PI); ctx.fill();
      ctx.font = '14px sans-serif'; ctx.fillText(m.name, q[0] + 8, q[1] - 8);
      screen.push({x: q[0], y: q[1], mark: m});
    });
    let y = 20;
    data.legend.forEach(e => {
      ctx.fillStyle = e.color; ctx.fillRect(12, y - 10, 14, 4);
      ctx.fillStyle = '#222'; ctx.font = '13px sans-serif'; ctx.fillText(e.name, 32, y - 4); y += 18;
    });
  }
  canvas.addEventListener('mousedown', e => { drag = [e.clientX, e.clientY, yaw, pitch]; });
  window.addEventListener('mouseup', () => { drag = null; });
  canvas.addEventListener('mousemove', e => {
    const r = canvas.getBoundingClientRect();
    const mx = (e.clientX - r.left) * canvas.width / r.width, my = (e.clientY - r.top) * canvas.height / r.height;
    if (drag) {
      yaw = drag[2] + (e.clientX - drag[0]) * 0.01;
      pitch = Math.max(-1.5, Math.min(1.5, drag[3] + (e.clientY - drag[1]) * 0.01));
      draw();
      return;
    }
    let best = null, bd = 64;
    screen.forEach(s => { const d = (s.x - mx) ** 2 + (s.y - my) ** 2; if (d < bd) { bd = d; best = s; } });
    if (!best) { tip.style.display = 'none'; return; }
    tip.style.display = 'block';
    tip.style.left = (e.pageX + 12) + 'px';
    tip.style.top = (e.pageY + 12) + 'px';
    if (best.mark) { tip.textContent = best.mark.name; return; }
    const l = best.line, p = best.point;
    tip.textContent = (l.mean ? 'mean of ' : '') + 'task ' + l.task + ', ' + l.method +
      (l.mean ? '' : ', seed ' + l.seed) + ' | progress ' + p.progress.toFixed(3) +
      (p.epoch === null ? '' : ', epoch ' + p.epoch.toFixed(2)) +
      (p.accuracy === null ? '' : ', accuracy ' + (100 * p.accuracy).toFixed(1) + '%');
  });
  canvas.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  canvas.addEventListener('wheel', e => { e.preventDefault(); zoom *= Math.exp(-e.deltaY * 0.001); draw(); },
                          {passive: false});
  draw();
  document.body.setAttribute('data-rendered', String(screen.length));
})();
"""

_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 8px 0 18px 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; }
#tg-tip { position: absolute; display: none; background: #fffbe6; border: 1px solid #aaa; padding: 4px 8px;
          font-size: 13px; pointer-events: none; }
canvas { border: 1px solid #ddd; cursor: grab; }
"""

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _table(rows, header) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(res, out: Path, title: str = "taskgeom picture") -> Path:
    """Write ``out/report.html`` from a :class:`taskgeom.analysis.PictureResult` (with its figures)."""
    emb = res.embedding
    tasks = list(dict.fromkeys(ln.task for ln in emb.lines))
    colors = {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(tasks)}
    lines = [{**dataclasses.asdict(ln), "color": colors[ln.task]} for ln in emb.lines]
    payload = {"lines": lines, "marks": emb.marks, "legend": [{"name": t, "color": colors[t]} for t in tasks]}
    chi = res.explained_stress
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{res.trajectories} trajectories, {res.checkpoints} checkpoints, evaluated on {res.n} "
        f"samples x {res.c} classes ({html.escape(res.eval_set)}).</p>",
        "<h2>InPCA of the re-indexed trajectories</h2>",
        "<p>Drag to rotate, scroll to zoom, hover for details. Bold: mean over seeds. "
        f"Explained stress of these 3 dimensions: {100 * chi.get('3', float('nan')):.2f}%.</p>",
        "<canvas id='tg-3d' width='900' height='640'></canvas><div id='tg-tip'></div>",
        "<h2>Explained stress (eq. 11)</h2>",
        _table([[k, f"{100 * v:.2f}%"] for k, v in chi.items()], ["dimensions", "explained stress"]),
        "<h2>Progress on the union task and Riemann length</h2>",
        _table(
            [
                [t, f"{res.progress_on_union_task[t]['mean']:.3f}", f"{res.riemann_length[t]['mean']:.3f}"]
                for t in res.progress_on_union_task
            ],
            ["task", "progress (final, mean over seeds)", "Riemann length (eq. 6)"],
        ),
        f"<p>Length of the geodesic P0 &rarr; P*: {res.geodesic_length_P0_Pstar:.4f}.</p>",
    ]
    td = res.task_distances
    if td and len(td["tasks"]) > 1:
        names = td["tasks"]
        parts += [
            "<h2>Distances between tasks (Remark 5)</h2>",
            "<p>Distance between mean trajectories over the mean of their tube radii, averaged over the "
            "progress both tasks reach (1 = the tubes touch).</p>",
            _table([[a] + [f"{v:.2f}" for v in row] for a, row in zip(names, td["normalized"])], ["task"] + names),
        ]
    for fig in res.figures:
        data = base64.b64encode((out / fig).read_bytes()).decode()
        parts.append(
            f"<h2>{html.escape(fig)}</h2><img alt='{html.escape(fig)}' src='data:image/png;base64,{data}' "
            "style='max-width:100%'>"
        )
    parts.append(f"<script type='application/json' id='tg-data'>{json.dumps(payload)}</script>")
    parts.append(f"<script>{_JS}</script></body></html>")
    path = out / "report.html"
    path.write_text("".join(parts))
    return path
