"""Dependency-free PNG line charts in panels (the shape of the paper's Figure 2).

`line_panels_png(path, title, x_labels, panels)` draws one panel per metric (e.g. BLiMP,
LAMBADA, validation loss) side by side; every panel has the same categorical x axis
(e.g. causal:masked ratios) and one line per series (e.g. per evaluation mode), with
optional error bars (standard deviation over seeds) and a dashed reference line
(e.g. chance). It uses the canvas and 5x7 font of png.py; a series keeps its colour
in every panel, and a fixed colour for the scoring modes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_save
from .png import BLACK, GREY, LIGHT, PALETTE, Canvas, text_width

# One colour per scoring mode in every chart (val-loss lines are named after the matching mode).
MODE_COLORS = {"causal": PALETTE[0], "mntp": PALETTE[1], "fused": PALETTE[2], "prefix": PALETTE[3]}


@dataclass
class Panel:
    title: str
    series: dict[str, Sequence[float | None]]  # name -> one value per x label (None = no point)
    errors: dict[str, Sequence[float | None]] = field(default_factory=dict)  # same shape: +-error bars
    reference: float | None = None  # a dashed horizontal line, drawn when inside the range
    fmt: str = "{:.1f}"  # y tick labels
    limits: tuple[float, float] | None = None  # the y range never goes beyond these (e.g. 0-100 for accuracies)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    out, spare = {}, [c for c in PALETTE if c not in MODE_COLORS.values()] + list(PALETTE)
    for name in names:
        out[name] = MODE_COLORS.get(name) or spare[len([n for n in out if n not in MODE_COLORS]) % len(spare)]
    return out


def _line(c: Canvas, x0: int, y0: int, x1: int, y1: int, color, width: int) -> None:
    n = max(abs(x1 - x0), abs(y1 - y0), 1)
    h = width // 2
    for i in range(n + 1):
        x = round(x0 + (x1 - x0) * i / n)
        y = round(y0 + (y1 - y0) * i / n)
        c.rect(x - h, y - h, x - h + width, y - h + width, color)


def _panel(c: Canvas, left: int, top: int, w: int, h: int, panel: Panel, x_labels: Sequence[str],
           colors: dict[str, tuple], scale: int) -> None:
    room = max(1, (w - 4 * scale) // text_width("x", scale))
    c.text(left, top, panel.title if len(panel.title) <= room else panel.title[: room - 2] + "..", BLACK, scale)
    vals = []
    for name, ys in panel.series.items():
        errs = panel.errors.get(name) or [None] * len(ys)
        for y, e in zip(ys, errs):
            if y is not None and math.isfinite(y):
                vals += [y - (e or 0.0), y + (e or 0.0)]
    if not vals:
        c.text(left, top + 14 * scale, "no data", GREY, scale)
        return
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 0.5)
    lo, hi = lo - pad, hi + pad
    if panel.limits is not None:
        lo, hi = max(lo, panel.limits[0]), min(hi, panel.limits[1])
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    labels = [panel.fmt.format(t) for t in ticks]
    axis_x = left + max(text_width(s, scale) for s in labels) + 5 * scale
    plot_top, plot_bottom = top + 12 * scale, top + h - 22 * scale
    plot_right = left + w - 4 * scale

    def ypix(v: float) -> int:
        return round(plot_bottom - (v - lo) / (hi - lo) * (plot_bottom - plot_top))

    for t, s in zip(ticks, labels):
        y = ypix(t)
        c.rect(axis_x, y, plot_right, y + 1, LIGHT)
        c.text(axis_x - 3 * scale - text_width(s, scale), y - 3 * scale, s, BLACK, scale)
    c.rect(axis_x, plot_top, axis_x + 1, plot_bottom + 1, BLACK)
    c.rect(axis_x, plot_bottom, plot_right, plot_bottom + 1, BLACK)
    if panel.reference is not None and lo <= panel.reference <= hi:
        y = ypix(panel.reference)
        for x in range(axis_x, plot_right, 6 * scale):
            c.rect(x, y, x + 3 * scale, y + scale, GREY)
    n = len(x_labels)
    span = (plot_right - axis_x) / max(n, 1)
    xs = [round(axis_x + span * (i + 0.5)) for i in range(n)]
    widest = max((text_width(s, scale) for s in x_labels), default=0)
    stagger = widest > span - 2 * scale  # labels that would touch go on two lines
    for i, (x, s) in enumerate(zip(xs, x_labels)):
        c.rect(x, plot_bottom, x + 1, plot_bottom + 3 * scale, BLACK)
        y = plot_bottom + 5 * scale + (9 * scale if stagger and i % 2 else 0)
        c.text(x - text_width(s, scale) // 2, y, s, BLACK, scale)
    for k, (name, ys) in enumerate(panel.series.items()):
        color = colors[name]
        # Later series are drawn thinner and with smaller markers on top, so equal values stay visible.
        width = max(1, round(scale * (2.0 - 0.5 * min(k, 2))))
        r = max(1, round(scale * (3.0 - 0.8 * min(k, 2))))
        errs = panel.errors.get(name) or [None] * len(ys)
        pts = [(x, ypix(y)) if y is not None and math.isfinite(y) else None for x, y in zip(xs, ys)]
        for a, b in zip(pts, pts[1:]):
            if a and b:
                _line(c, *a, *b, color, width)
        for p, y, e in zip(pts, ys, errs):
            if p is None:
                continue
            if e:
                y0, y1 = ypix(y - e), ypix(y + e)
                c.rect(p[0], y1, p[0] + max(1, scale // 2), y0 + 1, color)
                for yy in (y0, y1):
                    c.rect(p[0] - 3 * scale, yy, p[0] + 3 * scale + 1, yy + max(1, scale // 2), color)
            c.rect(p[0] - r, p[1] - r, p[0] + r + 1, p[1] + r + 1, color)


def line_panels_png(path: str | Path, title: str, x_labels: Sequence[str], panels: Sequence[Panel],
                    columns: int = 2, scale: int = 2, note: str = "") -> Path:
    """Panels on a grid, a shared legend on top; writes an 8-bit RGB PNG atomically."""
    x_labels = [str(s) for s in x_labels]
    names = list(dict.fromkeys(n for p in panels for n in p.series))
    order = list(MODE_COLORS)  # the modes first, in their usual order
    first = {n: i for i, n in enumerate(names)}
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), first[n]))
    colors = _colors(names)
    columns = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    per_x = max(text_width(s, scale) for s in x_labels) + 10 * scale if x_labels else 40 * scale
    pw = max(230 * scale, 50 * scale + int(per_x * len(x_labels) * 0.6))  # long labels are staggered
    ph = 150 * scale
    legend_h = 12 * scale
    top = 16 * scale + legend_h + (10 * scale if note else 0)
    width = columns * (pw + 12 * scale) + 10 * scale
    height = top + rows * (ph + 12 * scale) + 4 * scale
    c = Canvas(width, height)
    c.text(6 * scale, 4 * scale, title, BLACK, scale)
    y_note = 14 * scale
    if note:
        c.text(6 * scale, y_note, note, GREY, scale)
        y_note += 10 * scale
    x = 6 * scale
    for name in names:
        c.rect(x, y_note + 2 * scale, x + 14 * scale, y_note + 4 * scale, colors[name])
        c.rect(x + 5 * scale, y_note, x + 9 * scale + 1, y_note + 6 * scale, colors[name])
        x = c.text(x + 18 * scale, y_note, name, BLACK, scale) + 12 * scale
    for i, panel in enumerate(panels):
        r, col = divmod(i, columns)
        _panel(c, 8 * scale + col * (pw + 12 * scale), top + r * (ph + 12 * scale), pw, ph, panel, x_labels, colors,
               scale)
    path = Path(path)
    atomic_save(path, lambda tmp: tmp.write_bytes(c.png()))
    return path
