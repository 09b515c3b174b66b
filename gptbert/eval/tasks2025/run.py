"""Run the single-checkpoint BabyLM 2025 tasks: named tasks -> data -> TaskResult per mode.

Task specs: a name (read from the babylm2025 data folder, `../shared/data/babylm2025`),
or `name=path` to read a task's data from elsewhere (COMPS, whose data we do not
ship: `comps=/data/evaluation_data/full_eval/comps`). AoA needs many checkpoints
and has its own entry point, `aoa.evaluate_aoa`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import GPTBertError
from ..forward import EvalModel
from ..report import table
from ..scoring import MODES, SentenceScorer
from . import comps, entity_tracking, reading, wug
from .common import (
    MemoScorer,
    TaskResult,
    check_tie_rule,
    default_data_dir,
    write_official,
)

TASKS = ("entity_tracking", "entity_tracking_fast", "wug_adj", "wug_past", "reading", "comps")


def parse_spec(spec: str | Path) -> tuple[str, Path | None] | None:
    """(task name, explicit data path or None) for a 2025 task spec; None for anything else."""
    s = str(spec)
    name, sep, path = s.partition("=")
    name = name.strip().replace("-", "_")
    if name not in TASKS:
        return None
    return name, (Path(path) if sep else None)


def is_task_2025(spec) -> bool:
    return parse_spec(spec) is not None


def load(spec: str | Path, data_dir: str | Path | None = None, limit: int | None = None):
    """(name, data, dataset folder name) of one task spec."""
    parsed = parse_spec(spec)
    if parsed is None:
        raise GPTBertError(f"'{spec}' is not a BabyLM 2025 task ({', '.join(TASKS)})")
    name, path = parsed
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name.startswith("entity_tracking"):
        path = path or root / entity_tracking.NAMED[name][0]
        data = entity_tracking.load_entity_tracking(_exists(path, name), limit)
    elif name.startswith("wug"):
        path = path or root / wug.NAMED[name][0]
        data = wug.load_wug(_exists(path, name), name, limit)
    elif name == "reading":
        path = path or root / reading.NAMED[name]
        data = reading.load_reading(_exists(path, name), limit)
    else:
        path = path or root / comps.NAMED[name][0]
        data = comps.load_comps(_exists(path, name), limit)
    dataset = path.name if path.is_dir() else path.parent.name
    return name, data, dataset


def _exists(path: Path, name: str) -> Path:
    if not path.exists():
        hint = " (COMPS data is not shipped: pass comps=PATH to the official comps folder)" if name == "comps" else ""
        raise GPTBertError(f"{path}: data of task '{name}' not found{hint}")
    return path


def evaluate(scorer: SentenceScorer, name: str, data, mode: str, *, dataset: str | None = None, ties: str = "wrong",
             temperature: float = 1.0, limit: int | None = None) -> TaskResult:
    """One loaded task in one mode."""
    if name.startswith("entity_tracking"):
        return entity_tracking.evaluate_entity_tracking(scorer, data, mode, name=name, dataset=dataset, ties=ties,
                                                        temperature=temperature, limit=limit)
    if name.startswith("wug"):
        return wug.evaluate_wug(scorer, data, mode, name=name, temperature=temperature, limit=limit)
    if name == "reading":
        return reading.evaluate_reading(scorer, data, mode, name=name, temperature=temperature, limit=limit)
    return comps.evaluate_comps(scorer, data, mode, name=name, ties=ties, temperature=temperature, limit=limit)


def run_tasks_2025(model, tokenizer, tasks: Sequence[str], modes: Sequence[str], out_dir: str | Path | None = None, *,
                   data_dir: str | Path | None = None, precision: str = "fp32", ties: str = "wrong",
                   temperature: float = 1.0, limit: int | None = None, max_tokens: int = 4096,
                   progress: bool = False,
                   log: Callable[[str], None] = lambda s: None) -> dict[str, dict[str, TaskResult]]:
    """Evaluate `model` (a GPTBERT or an EvalModel) on 2025 tasks in each mode.

    With out_dir, each task's official-format output goes to
    `out_dir/zero_shot/<mode>/<official folder>/` (e.g. zero_shot/mntp/entity_tracking/
    entity_tracking_fast/predictions.json), the layout `collate_preds.py` reads under
    `results/<model>/<revision>/`.
    """
    check_tie_rule(ties)
    for m in modes:
        if m not in MODES:
            raise GPTBertError(f"unknown scoring mode '{m}' (choose from {', '.join(MODES)})")
    em = model if isinstance(model, EvalModel) else EvalModel(model, precision)
    scorer = MemoScorer(em, tokenizer, temperatures=(temperature,), max_tokens=max_tokens, progress=progress)
    out: dict[str, dict[str, TaskResult]] = {}
    for spec in tasks:
        name, data, dataset = load(spec, data_dir, limit)
        if name in out:
            raise GPTBertError(f"task '{name}' given twice")
        out[name] = {}
        for m in modes:
            t0 = time.perf_counter()
            res = evaluate(scorer, name, data, m, dataset=dataset, ties=ties, temperature=temperature, limit=limit)
            res.summary["seconds"] = time.perf_counter() - t0
            out[name][m] = res
            log(f"{name} [{m}]: {res.summary['score']:.2f} ({res.summary['seconds']:.1f}s)")
            if out_dir is not None:
                write_official(res, Path(out_dir) / "zero_shot" / m / res.official_dir)
    return out


def summary_table(summaries: dict[str, dict[str, dict]]) -> str:
    """A plain table of `results["babylm2025"]` ({task: {mode: summary}}): task, mode, items, score."""
    rows = []
    for name, by_mode in summaries.items():
        for m, s in by_mode.items():
            if name == "reading":
                metric = f"eye tracking (self-paced {s['self_paced_reading']:.2f})"
            elif name.startswith("wug"):
                metric = "Spearman x100"
            else:
                metric = "accuracy"
            items = f"{s['n_items']}" + ("" if s.get("complete", True) else " (subset)")
            rows.append([name, m, items, f"{s['score']:.2f}", metric, s.get("ties", "-")])
    return table(["BabyLM 2025 task", "mode", "items", "score", "metric", "ties"], rows)
