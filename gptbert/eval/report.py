"""Tables, results.json, BabyLM-format predictions and charts for `gptbert eval`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from .png import bar_chart_png


def _fmt(v: float | None, width: int = 6) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table (first column left-aligned, the rest right-aligned)."""
    cols = list(zip(*([list(header)] + [list(r) for r in rows]))) if rows else [[h] for h in header]
    widths = [max(len(str(x)) for x in col) for col in cols]
    lines = []
    for k, r in enumerate([list(header)] + [list(r) for r in rows]):
        cells = [str(r[0]).ljust(widths[0])] + [str(x).rjust(w) for x, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_table(results: dict[str, dict[str, dict]]) -> str:
    """One row per (task, mode): the paper's average at T=1, at the best T (and which), at T->0."""
    rows = []
    for task, by_mode in results.items():
        for mode, r in by_mode.items():
            t1 = r["T1"]["average"] if r.get("T1") else None
            best = r["best_T"]
            cal = r.get("calibrated_T")
            rows.append([task, mode, str(r["n_pairs"]), _fmt(t1), _fmt(best["average"]), f"{best['temperature']:g}",
                         _fmt(r["greedy_limit"]["average"]),
                         _fmt(cal["average"]) + f" @{cal['temperature']:g}" if cal else "-", rules_label(r)])
    return table(["task", "mode", "pairs", "T=1", "best-T", "T*", "T->0", "BLiMP-calibrated", "rules"], rows)


def rules_label(r: dict) -> str:
    """How a task was scored: the tie rule, and for EWoK which tokens (full = context + target)."""
    label = f"ties {r.get('ties', 'wrong')}"
    if r.get("ewok_scoring"):
        label += f", {r['ewok_scoring']}"
    return label


def breakdown_table(by_mode: dict[str, dict], level: str = "phenomena", which: str = "T1") -> str:
    """Rows = phenomena (or sub-tasks), columns = modes; accuracies at T=1 (or 'best_T')."""
    modes = [m for m in by_mode if by_mode[m].get(which)]
    if not modes:
        return ""
    names: list[str] = []
    for m in modes:
        for k in by_mode[m][which][level]:
            if k not in names:
                names.append(k)
    rows = [[k] + [_fmt(by_mode[m][which][level].get(k)) for m in modes] for k in names]
    rows.append(["average (paper)"] + [_fmt(by_mode[m][which]["average"]) for m in modes])
    head = [{"phenomena": "phenomenon", "subtasks": "sub-task"}.get(level, level)] + [
        f"{m}" + (f" T={by_mode[m][which]['temperature']:g}" if which != "T1" else "") for m in modes]
    return table(head, rows)


def lambada_table(results: dict[str, dict]) -> str:
    rows = [[m, str(r["n"]), _fmt(r["accuracy"]), _fmt(r["token_accuracy"]), f"{r['perplexity']:.2f}",
             f"{r['word_perplexity']:.2f}"] for m, r in results.items()]
    return table(["lambada mode", "n", "acc", "tok-acc", "ppl", "word-ppl"], rows)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    atomic_write_json(path, obj)


def write_report_md(path: Path, header: str, results: dict[str, dict[str, dict]],
                    lambada: dict[str, dict] | None = None, extra: str | None = None) -> None:
    parts = [header, "", "## Summary (paper averages, %)", "", "```", summary_table(results), "```", ""]
    parts.append("T=1: plain log-probabilities. best-T: the temperature of the sweep 0.05..3.00 with the best "
                 "average on this task itself (the paper reports BLiMP this way). T->0: the argmax limit. "
                 "rules: how an exact tie counts (wrong: strict >, the gptbert default; correct: the official "
                 "BabyLM 2025 rule) and, for EWoK, which tokens are scored (full: context + target, the paper's "
                 "way; target: the target only, the BabyLM 2025 pipeline's default).")
    for task, by_mode in results.items():
        parts += ["", f"## {task}", "", "### by phenomenon / domain, T=1", "", "```",
                  breakdown_table(by_mode, "phenomena"), "```", "", "### by paradigm / sub-task, T=1", "", "```",
                  breakdown_table(by_mode, "subtasks"), "```", "", "### by paradigm / sub-task, best T", "", "```",
                  breakdown_table(by_mode, "subtasks", "best_T"), "```"]
    if lambada:
        parts += ["", "## LAMBADA", "", "```", lambada_table(lambada), "```"]
    if extra:
        parts += ["", extra]
    atomic_write_text(path, "\n".join(parts) + "\n")


def phenomenon_chart(path: Path, task: str, by_mode: dict[str, dict], which: str = "T1") -> Path | None:
    modes = [m for m in by_mode if by_mode[m].get(which)]
    if not modes:
        return None
    names: list[str] = []
    for m in modes:
        for k in by_mode[m][which]["phenomena"]:
            if k not in names:
                names.append(k)
    names.append("AVERAGE")
    series = {}
    for m in modes:
        ph = by_mode[m][which]["phenomena"]
        series[m] = [ph.get(k) for k in names[:-1]] + [by_mode[m][which]["average"]]
    label = "T=1" if which == "T1" else "best T"
    return bar_chart_png(path, f"{task}: accuracy (%) by phenomenon, {label}", names, series)
