"""The zero-shot suite behind `gptbert eval`: tasks x modes -> results.json, report, predictions, charts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import GPTBertError, did_you_mean
from ..paths import eval_dir
from ..precision import resolve_precision
from . import report
from .forward import EvalModel
from .lambada import LAMBADA_MODES, evaluate_lambada, load_lambada
from .minimal_pairs import (
    DEFAULT_EWOK_PASSWORD,
    NAMED_TASKS,
    PairResult,
    evaluate_task,
    load_task,
    task_result_dict,
)
from .scoring import MODES, SWEEP_TEMPERATURES, TIE_RULES, SentenceScorer
from .tasks2025.run import TASKS as TASKS_2025
from .tasks2025.run import is_task_2025, run_tasks_2025, summary_table

LAMBADA_NAMES = ("lambada",)


def check_modes(modes: Sequence[str]) -> None:
    if not modes:
        raise GPTBertError("--modes: no scoring mode given")
    for m in modes:
        if m not in MODES:
            raise GPTBertError(f"--modes: unknown scoring mode '{m}'{did_you_mean(m, MODES)} "
                               f"(choose from {', '.join(MODES)})")


def check_task_names(tasks: Sequence[str], data_dir: str | Path | None = None) -> None:
    """Every task is a known name or an existing path; checked before any model is loaded."""
    if not tasks:
        raise GPTBertError("--tasks: no task given")
    names = [*NAMED_TASKS, *LAMBADA_NAMES, *TASKS_2025]
    for t in tasks:
        if t.replace("-", "_") in names or Path(t).exists() or is_task_2025(t):
            continue
        raise GPTBertError(f"--tasks: unknown task '{t}'{did_you_mean(t, names)} "
                           f"(named tasks: {', '.join(names)}; or a path to a folder/.jsonl/.zip)")


def run_suite(model, tokenizer, tasks: Sequence[str], modes: Sequence[str], out_dir: str | Path | None = None, *,
              data_dir: str | Path | None = None, precision: str = "fp32", sweep: bool = True,
              predict_temperature: float = 1.0, ewok_password: str = DEFAULT_EWOK_PASSWORD,
              ewok_predictions: bool = False, limit: int | None = None, max_tokens: int = 4096,
              progress: bool = True, charts: bool = True, info: dict | None = None, options: dict | None = None,
              ties: str = "wrong", ewok_scoring: str = "full", data_dir_2025: str | Path | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Evaluate `model` on minimal-pair tasks and/or LAMBADA in each mode.

    Returns the results dict (also written to out_dir/results.json when out_dir is given, together
    with report.md, predictions_<mode>.json in the BabyLM 2024 submission format and one
    accuracy_<task>.png bar chart per task). `options` (the command line) is recorded in results.json;
    with `limit` the results are flagged as a subset there and in report.md.

    ties: "wrong" (a tie counts as wrong) or "correct" (the official 2025 rule).
    ewok_scoring: "full" (context + target, the paper's way) or "target" (the 2025 pipeline's).
    BabyLM 2025 tasks (entity_tracking[_fast], wug_adj, wug_past, reading, comps; see
    `tasks2025`) are read from data_dir_2025 (default <data root>/babylm2025), scored at
    T=1, and their official-format outputs go to out_dir/zero_shot/<mode>/.
    """
    precision = resolve_precision(precision, next(model.parameters()).device)  # "auto" -> what runs
    if ties not in TIE_RULES:
        raise GPTBertError(f"unknown tie rule '{ties}' (choose from {', '.join(TIE_RULES)})")
    check_modes(modes)
    check_task_names(tasks, data_dir)
    temperatures = SWEEP_TEMPERATURES if sweep else (1.0,)
    if predict_temperature != 0 and not any(abs(t - predict_temperature) < 1e-9 for t in temperatures):
        raise GPTBertError(f"--temperature {predict_temperature:g} is not on the sweep (0, 0.05, 0.10, ..., 3.00)"
                           + ("" if sweep else "; without the sweep only 1 is available"))
    em = EvalModel(model, precision)
    scorer = SentenceScorer(em, tokenizer, temperatures=temperatures, max_tokens=max_tokens, progress=progress)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)

    pair_results: dict[str, dict[str, dict]] = {}
    raw: dict[str, dict[str, PairResult]] = {}
    lambada: dict[str, dict] = {}
    timing: dict[str, dict[str, dict]] = {}
    tasks_2025: list[str] = []
    for spec in tasks:
        if is_task_2025(spec):
            tasks_2025.append(spec)
            continue
        if _is_lambada(spec):
            path = eval_dir(data_dir) / "lambada" if str(spec) == "lambada" else Path(spec)
            items = load_lambada(path, limit)
            for m in modes:
                if m not in LAMBADA_MODES:
                    log(f"lambada: mode '{m}' not defined for LAMBADA (causal, mntp = masked, prefix); skipped")
                    continue
                t0 = time.perf_counter()
                lambada[m] = evaluate_lambada(em, tokenizer, items, m, max_tokens=max_tokens, progress=progress)
                lambada[m]["seconds"] = time.perf_counter() - t0
            continue
        task = load_task(spec, data_dir, password=ewok_password, limit=limit)
        if task.name in pair_results:
            raise GPTBertError(f"task '{task.name}' given twice")
        pair_results[task.name], raw[task.name], timing[task.name] = {}, {}, {}
        cache: dict = {}  # scores by mode: fused = causal + mntp when both are asked for
        order = sorted(modes, key=lambda m: m == "fused")  # fused last, to reuse the other two
        for m in order:
            t0 = time.perf_counter()
            raw[task.name][m] = evaluate_task(scorer, task, m, cache, ties=ties, ewok_scoring=ewok_scoring)
            dt = time.perf_counter() - t0
            timing[task.name][m] = {"seconds": dt, "pairs_per_second": len(task.pairs) / max(dt, 1e-9)}
        raw[task.name] = {m: raw[task.name][m] for m in modes}

    # Temperatures calibrated on BLiMP carry over to the supplement (paper App. B/E).
    blimp_t = {}
    for name, by_mode in raw.items():
        for m, res in by_mode.items():
            if res.task.kind == "blimp" and m not in blimp_t:
                blimp_t[m] = res.best_temperature()[0]
    for name, by_mode in raw.items():
        for m, res in by_mode.items():
            cal = blimp_t.get(m) if res.task.kind == "supplement" else None
            pair_results[name][m] = task_result_dict(res, cal)
            pair_results[name][m]["timing"] = timing[name][m]

    results = {
        "model": info or {},
        "options": options or {"tasks": list(tasks), "modes": list(modes), "limit": limit, "sweep": sweep},
        "subset": None if limit is None else f"only the first {limit} items of every sub-task (--limit): "
                                             "not comparable with full-task numbers",
        "precision": precision,
        "temperatures": {"sweep": list(temperatures), "greedy_limit": "T->0 = ranking by sum of (target logit - max logit)",
                         "predictions_at": predict_temperature},
        "ties": {"rule": ties, "note": "a pair whose two sentences score exactly the same counts as "
                                        + ("wrong" if ties == "wrong" else "correct (the official BabyLM 2025 rule)")},
        "ewok_scoring": ewok_scoring,
        "tasks": pair_results,
    }
    if lambada:
        results["lambada"] = lambada
    by_2025 = {}
    if tasks_2025:
        by_2025 = run_tasks_2025(em, tokenizer, tasks_2025, modes, out_path, data_dir=data_dir_2025, ties=ties,
                                 limit=limit, max_tokens=max_tokens, progress=progress, log=log)
        results["babylm2025"] = {name: {m: r.summary for m, r in by_mode.items()} for name, by_mode in by_2025.items()}

    if out_path is not None:
        report.write_json(out_path / "results.json", results)
        header = (f"# gptbert eval\n\ncheckpoint: {(info or {}).get('checkpoint', '-')}  \n"
                  f"weights: {(info or {}).get('weights', '-')}, precision: {precision}")
        if limit is not None:
            header += f"\n\n**SUBSET**: {results['subset']}"
        extra = None
        if by_2025:
            extra = ("## BabyLM 2025 tasks (T=1; official-format outputs in zero_shot/<mode>/)\n\n```\n"
                     + summary_table(results["babylm2025"]) + "\n```")
        report.write_report_md(out_path / "report.md", header, pair_results, lambada or None, extra)
        for m in modes:
            preds: dict[str, dict] = {}
            for name, by_mode in raw.items():
                res = by_mode.get(m)
                if res is None or (res.task.kind == "ewok" and not ewok_predictions):
                    continue
                preds.setdefault(res.task.group, {}).update(res.predictions(predict_temperature))
            if preds:
                report.write_json(out_path / f"predictions_{m}.json", preds)
        if charts:
            for name, by_mode in pair_results.items():
                report.phenomenon_chart(out_path / f"accuracy_{_safe(name)}.png", name, by_mode)
    return results


def _is_lambada(spec) -> bool:
    s = str(spec)
    return s in LAMBADA_NAMES or "lambada" in Path(s).name.lower()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

