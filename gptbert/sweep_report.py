"""The tables and figures of a sweep (from the sweep.json dict of `sweep.aggregate`).

  sweep.md       one Markdown table per metric family (validation loss, each task, LAMBADA):
                 rows = grid points, columns = scoring modes, mean +- sample std over seeds,
                 the best value of each column in bold; with named rows, a Table-2-style table
                 (the first row absolute, the others as differences from it); then every cell.
  figure2*.png   (when the first dimension is an axis) the paper's Figure 2 shape: one panel
                 per metric family, the metric against the axis values (causal:masked ratios),
                 one line per evaluation mode, error bars = std over seeds; one figure per value
                 of a second dimension.
  table2*.png    (with named rows) grouped bars: one group per row, one bar per task in the
                 table mode (Table 2's columns).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .eval.linechart import Panel, line_panels_png
from .eval.png import bar_chart_png
from .io import atomic_write_text


@dataclass
class Family:
    title: str
    columns: list[tuple[str, str]]  # (column label, metric key)
    higher_better: bool
    fmt: str
    chance: float | None = None
    limits: tuple[float, float] | None = None
    short: str = ""  # panel title in the figures


def _metric_keys(sw: dict) -> list[str]:
    return list(dict.fromkeys(k for s in sw["settings"] for k in s["mean"]))


def _task_key(task: str, mode: str, keys: set[str], temperature: str) -> str | None:
    if temperature == "best":
        for suffix in ("/blimp_T", "/best_T"):  # the supplement takes BLiMP's temperature, as in the paper
            if f"{task}/{mode}{suffix}" in keys:
                return f"{task}/{mode}{suffix}"
        return None
    return f"{task}/{mode}" if f"{task}/{mode}" in keys else None


def families(sw: dict) -> list[Family]:
    keys = _metric_keys(sw)
    present = set(keys)
    modes = list(sw["eval"]["modes"])
    temp = sw.get("report_temperature", "t1")
    t_note = "T=1" if temp == "t1" else "best T (supplement: BLiMP's T)"
    out = [Family("Validation loss (nats/token, lower is better)",
                  [("causal", "val_loss_causal"), ("mntp (masked)", "val_loss_masked")], False, "{:.3f}",
                  short="validation loss (nats/token)")]
    tasks = list(dict.fromkeys(k.split("/")[0] for k in keys if "/" in k and not k.startswith("lambada/")))
    for task in tasks:
        cols = [(m, _task_key(task, m, present, temp)) for m in modes]
        cols = [(m, k) for m, k in cols if k]
        if cols:
            out.append(Family(f"{task} (accuracy %, {t_note})", cols, True, "{:.1f}", 50.0, (0.0, 100.0),
                              short=f"{task} (%, {'T=1' if temp == 't1' else 'best T'})"))
    lam = [(m, f"lambada/{m}") for m in modes if f"lambada/{m}" in present]
    if lam:
        out.append(Family("LAMBADA (exact-match accuracy %)", lam, True, "{:.1f}", None, (0.0, 100.0),
                          short="LAMBADA (accuracy %)"))
        out.append(Family("LAMBADA (answer perplexity, lower is better)",
                          [(m, f"{k}/perplexity") for m, k in lam], False, "{:.1f}"))
    return out


def _label(s: dict) -> str:
    return " / ".join(s["labels"])


def _cell(s: dict, key: str, fmt: str) -> str:
    if key not in s["mean"]:
        return "-"
    text = fmt.format(s["mean"][key])
    if s["std"].get(key) is not None:
        text += " ± " + fmt.format(s["std"][key])
    return text


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def family_table(sw: dict, fam: Family) -> str:
    first = " / ".join(d["title"] for d in sw["dimensions"])
    settings = sw["settings"]
    best = {}
    for _, key in fam.columns:
        vals = [s["mean"][key] for s in settings if key in s["mean"]]
        if len(set(vals)) > 1:
            best[key] = max(vals) if fam.higher_better else min(vals)
    rows = []
    for s in settings:
        row = [_label(s)]
        for _, key in fam.columns:
            text = _cell(s, key, fam.fmt)
            if key in best and key in s["mean"] and s["mean"][key] == best[key]:
                text = f"**{text}**"
            row.append(text)
        rows.append(row)
    return _md_table([first] + [c for c, _ in fam.columns], rows)


def _rows_dim(sw: dict) -> int | None:
    for i, d in enumerate(sw["dimensions"]):
        if d["name"] == "row":
            return i
    return None


def _groups(sw: dict, dim: int) -> list[tuple[str, list[dict]]]:
    """Settings grouped by the labels of the other dimension (one group when there is none)."""
    groups: dict[str, list[dict]] = {}
    for s in sw["settings"]:
        other = " / ".join(lbl for i, lbl in enumerate(s["labels"]) if i != dim)
        groups.setdefault(other, []).append(s)
    return list(groups.items())


def table2_columns(sw: dict) -> list[tuple[str, str, bool, str]]:
    """(label, metric key, higher is better, format): validation losses, then each task in the table mode."""
    mode = sw["spec"].get("table_mode", "mntp")
    cols = [("val loss mntp", "val_loss_masked", False, "{:.3f}"), ("val loss causal", "val_loss_causal", False, "{:.3f}")]
    if any("val_bpb_causal" in s["mean"] for s in sw["settings"]):  # runs made before bits per byte lack it
        cols.append(("val bpb causal", "val_bpb_causal", False, "{:.3f}"))
    for fam in families(sw)[1:]:
        for m, key in fam.columns:
            if m == mode and "perplexity" not in key:
                name = key.split("/")[0]
                cols.append((f"{name} {mode}", key, True, "{:.1f}"))
    return cols


def table2(sw: dict, settings: list[dict]) -> str:
    """Paper Table 2 shape: the first row absolute, every other row as the difference from it."""
    cols = table2_columns(sw)
    dim = _rows_dim(sw)
    base = settings[0]
    rows = []
    for i, s in enumerate(settings):
        row = [s["labels"][dim] + (f" (n={s['n']})" if s["n"] != 1 else "")]
        for _, key, _, fmt in cols:
            if key not in s["mean"]:
                row.append("-")
            elif i == 0:
                row.append(_cell(s, key, fmt))
            elif key in base["mean"]:
                row.append(("{:+" + fmt[2:]).format(s["mean"][key] - base["mean"][key]))
            else:
                row.append("-")
        rows.append(row)
    return _md_table(["setting"] + [c[0] for c in cols], rows)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "all"


def write_figures(sw: dict, out: Path) -> list[Path]:
    paths: list[Path] = []
    dims = sw["dimensions"]
    if not dims:
        return paths
    note = scale_line(sw)
    if dims[0]["name"] != "row":
        x_labels = dims[0]["labels"]
        for other, group in _groups(sw, 0):
            by_label = {s["labels"][0]: s for s in group}
            panels = []
            for fam in families(sw):
                if "perplexity" in fam.title:
                    continue  # the paper's panels: accuracies and validation loss
                series, errors = {}, {}
                for col, key in fam.columns:
                    name = "mntp" if col.startswith("mntp") else col
                    series[name] = [by_label[x]["mean"].get(key) if x in by_label else None for x in x_labels]
                    errors[name] = [by_label[x]["std"].get(key) if x in by_label else None for x in x_labels]
                panels.append(Panel(fam.short or fam.title, series, errors, fam.chance, "{:.1f}" if fam.higher_better else "{:.2f}",
                                    fam.limits))
            name = "figure2.png" if not other else f"figure2_{_slug(other)}.png"
            title = f"Metric against {dims[0]['title']}" + (f" ({other})" if other else "") + ", one line per mode"
            paths.append(line_panels_png(out / name, title, x_labels, panels, note=note))
    dim = _rows_dim(sw)
    if dim is not None:
        cols = [c for c in table2_columns(sw) if c[2]]  # accuracies (percent) only
        for other, group in _groups(sw, dim):
            if not cols:
                break
            labels = [s["labels"][dim] for s in group]
            series = {c[0]: [s["mean"].get(c[1]) for s in group] for c in cols}
            name = "table2.png" if not other else f"table2_{_slug(other)}.png"
            title = "Ablations: accuracy (%) per row" + (f" ({other})" if other else "")
            paths.append(bar_chart_png(out / name, title, labels, series))
    return paths


def _budget_text(b: dict) -> str:
    """'8 minutes', or '8 minutes (each config timed)' for --minutes-each."""
    if b["kind"] == "minutes_each":
        return f"{b['amount']:g} minutes (each config timed)"
    return f"{b['amount']:g} {b['kind']}"


def scale_line(sw: dict) -> str:
    b = sw["budget"]
    steps = "/".join(map(str, b["steps_per_cell"]))
    amount = _budget_text(b)
    base = sw["base"]
    n = base.get("params") or 0
    params = f"{n / 1e6:.1f}M params" if n >= 1e6 else f"{n / 1e3:.0f}K params"
    subset = ", SUBSET evaluation (--eval-limit)" if sw["eval"].get("limit") else ""
    per_cell = f"{amount} per cell" + ("" if b["kind"] == "steps" else f" ({steps} steps)")
    return f"{base.get('config') or 'defaults'}, {params}, {per_cell}{subset}"


def markdown(sw: dict) -> str:
    cells = sw["cells"]
    done = [c for c in cells if c["status"] == "done"]
    dims = " x ".join(f"{d['title']} ({', '.join(d['labels'])})" for d in sw["dimensions"])
    b, ev = sw["budget"], sw["eval"]
    tokens = sorted({c["tokens_seen"] for c in done})
    lines = [f"# Sweep: {dims}", ""]
    lines.append(f"Scale: base config `{sw['base'].get('config') or 'defaults'}`"
                 + "".join(f" --{k} {v}" for k, v in (sw["base"].get("overrides") or {}).items())
                 + (f", {sw['base']['params']:,} parameters" if sw["base"].get("params") else "")
                 + f"; budget {_budget_text(b)} per cell"
                 + ("" if b["kind"] == "steps" else f" = {', '.join(map(str, b['steps_per_cell']))} steps")
                 + (f", {', '.join(f'{t:,}' for t in tokens)} tokens" if tokens else "")
                 + f"; seeds {sw['spec']['seeds']}.")
    cal = sw.get("calibration")
    if cal and cal.get("kind") == "minutes_each":
        lines.append(f"Calibration: {cal['minutes']:g} minutes per cell, each cell config timed on its own -> "
                     f"{', '.join(map(str, b['steps_per_cell']))} steps ({cal['measured_with']['torch_threads']} threads, "
                     f"{cal['time']}); a faster config trains more steps in the same minutes.")
    elif cal:
        lines.append(f"Calibration: {cal['minutes']:g} minutes -> {cal['steps']} steps "
                     f"(~{cal['seconds_per_step_estimate']:.2f} s/step, {cal['measured_with']['torch_threads']} threads, "
                     f"{cal['time']}); every cell trains exactly these steps.")
    if ev["tasks"]:
        lines.append(f"Evaluation: EMA weights, {', '.join(ev['tasks'])} in {', '.join(ev['modes'])} modes, "
                     f"{ev['precision']}" + (f", first {ev['limit']} pairs per sub-task only (SUBSET)" if ev["limit"] else "")
                     + ("" if ev["temperature_sweep"] else ", T=1 only") + ".")
    train_s = [c["train_seconds"] for c in done]
    if train_s:
        lines.append(f"Wall time per cell: training {min(train_s) / 60:.1f}-{max(train_s) / 60:.1f} min, evaluation "
                     f"{min(c['eval_seconds'] for c in done) / 60:.1f}-{max(c['eval_seconds'] for c in done) / 60:.1f} min.")
    lines.append(f"Cells: {len(done)} of {len(cells)} done"
                 + ("" if sw["complete"] else " (INCOMPLETE: the tables show the finished cells only)")
                 + ". Values: mean ± sample standard deviation over seeds; bold = best in its column.")
    for fam in families(sw):
        lines += ["", f"## {fam.title}", "", family_table(sw, fam)]
    dim = _rows_dim(sw)
    if dim is not None:
        lines += ["", "## Ablations (Table 2 shape: the first row absolute, the others as differences)", ""]
        for other, group in _groups(sw, dim):
            if other:
                lines += [f"### {other}", ""]
            lines += [table2(sw, group), ""]
    lines += ["", "## Cells", ""]
    rows = []
    for c in cells:
        rows.append([c["id"], " / ".join(c["labels"]), str(c["seed"]), str(c["steps"]),
                     f"{c['tokens_seen']:,}" if "tokens_seen" in c else "-",
                     f"{c['train_seconds']:.0f}" if "train_seconds" in c else "-",
                     f"{c['eval_seconds']:.0f}" if "eval_seconds" in c else "-", c["status"]])
    lines.append(_md_table(["cell", "setting", "seed", "steps", "tokens", "train s", "eval s", "status"], rows))
    return "\n".join(lines) + "\n"


def write_report(sw: dict, out: Path) -> list[Path]:
    """sweep.md and the figures; returns the figure paths."""
    atomic_write_text(out / "sweep.md", markdown(sw))
    return write_figures(sw, out)
