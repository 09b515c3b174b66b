"""What a sweep's cell folder says about itself, its evaluation, and the sweep's aggregate.

A cell folder `OUT/cells/<id>/` holds cell.json (overrides, seed, config hash) and config.yaml
(written when the sweep starts), train/ (the run folder), attempts.jsonl (one line per training
attempt that returned), train.json (training finished: steps, tokens, seconds, validation losses,
all read back from the run folder itself), eval/ (the zero-shot suite: results.json, report.md)
and result.json, written last: a cell with a result.json for its config hash and the sweep's
evaluation options is done and skipped. `aggregate` reads every result.json into sweep.json.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch

from .checkpoint import META_FILE
from .config import RunConfig, save_config
from .distributed import pick_device
from .errors import GPTBertError
from .eval.suite import run_suite
from .io import atomic_write_json, read_jsonl
from .model import GPTBERT
from .pretrained import load
from .rundir import newest_checkpoint
from .sweep import Cell, EvalSpec, SweepSpec


def check_cell_files(cell: Cell) -> None:
    """A cell folder that exists must have been made with this cell's configuration."""
    old = read_json(cell.dir / "cell.json")
    if old is not None and old.get("config_sha") != cell.config_sha:
        raise GPTBertError(f"{cell.dir}: this cell was started with a different configuration (another preset, "
                           "overrides or budget); use another --out, or delete the cell folder to retrain it")


def write_cell_files(cell: Cell) -> None:
    """cell.json + config.yaml (after `check_cell_files`)."""
    check_cell_files(cell)
    cell.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cell.dir / "cell.json", cell.record())
    save_config(cell.config, cell.dir / "config.yaml")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cell_status(cell: Cell, ev: EvalSpec) -> str:
    """'done' (result.json for this config and these eval options), 'trained', or 'pending'."""
    res = read_json(cell.dir / "result.json")
    if res and res.get("config_sha") == cell.config_sha and res.get("eval_options") == ev.options():
        return "done"
    tr = read_json(cell.dir / "train.json")
    if tr and tr.get("config_sha") == cell.config_sha:
        return "trained"
    return "pending"


def last_step(run_dir: Path) -> int:
    ck = newest_checkpoint(run_dir)
    return int(json.loads((ck / META_FILE).read_text())["step"]) if ck is not None else 0


def record_attempt(cell: Cell, from_step: int, seconds: float, status: str) -> None:
    """One line per training attempt that returned (a killed one never writes its line)."""
    line = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "from_step": from_step, "to_step": last_step(cell.dir / "train"),
            "seconds": round(seconds, 3), "status": status}
    with open(cell.dir / "attempts.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def finish_training(cell: Cell) -> dict:
    """train.json from the run folder itself (checkpoint meta, validation.jsonl, attempts)."""
    run = cell.dir / "train"
    ck = newest_checkpoint(run)
    if ck is None:
        raise GPTBertError(f"{run}: no checkpoint after training")
    meta = json.loads((ck / META_FILE).read_text(encoding="utf-8"))
    steps = cell.config.train.max_steps
    if int(meta["step"]) != steps:
        raise GPTBertError(f"{run}: training ended at step {meta['step']} of {steps}")
    val = {}
    if (run / "validation.jsonl").is_file():
        for _, row in read_jsonl(run / "validation.jsonl"):
            if row.get("step") == steps:
                val = {k: v for k, v in row.items() if k.startswith(("val_loss_", "val_bpb_"))}
    if not val:
        raise GPTBertError(f"{run}: no validation losses for step {steps}")
    attempts = [r for _, r in read_jsonl(cell.dir / "attempts.jsonl")] if (cell.dir / "attempts.jsonl").is_file() else []
    rec = {"config_sha": cell.config_sha, "steps": int(meta["step"]), "tokens_seen": int(meta["tokens_seen"]),
           "train_seconds": round(sum(a["seconds"] for a in attempts), 3), "attempts": len(attempts),
           "resumed": any(a["from_step"] > 0 for a in attempts), "checkpoint": str(ck), "val": val}
    atomic_write_json(cell.dir / "train.json", rec)
    return rec


# ---------------------------------------------------------------------------
# Evaluation of one cell


def evaluate_cell(cell: Cell, tokenizer: Path, ev: EvalSpec, eval_data: Path | None, log=print) -> dict:
    """The zero-shot suite on the cell's EMA weights -> cells/<id>/eval/results.json, then result.json."""
    train_rec = read_json(cell.dir / "train.json")
    if not train_rec:
        raise GPTBertError(f"{cell.dir}: not trained yet")
    out = cell.dir / "eval"
    t0 = time.perf_counter()
    results = None
    if ev.tasks:
        if out.exists():
            shutil.rmtree(out)  # an evaluation with other options: its files would mix with these
        pre = load(cell.dir / "train", weights="ema", tokenizer=tokenizer, device=pick_device(ev.device))
        results = run_suite(pre.model, pre.tokenizer, ev.tasks, ev.modes, out, data_dir=eval_data,
                            precision=ev.precision, sweep=ev.temperature_sweep, limit=ev.limit, progress=False,
                            charts=False, info=pre.info(), options={"sweep_cell": cell.id, **ev.options()}, log=log)
    res = {**cell.record(), "eval_options": ev.options(), "train": train_rec,
           "eval_seconds": round(time.perf_counter() - t0, 3), "metrics": cell_metrics(train_rec, results)}
    atomic_write_json(cell.dir / "result.json", res)
    return res


def cell_metrics(train_rec: dict, results: dict | None) -> dict[str, float]:
    """The flat numbers of one cell:

    val_loss_masked, val_loss_causal                 nats/token on the held-out split (MNTP at 15% masking)
    val_bpb_masked, val_bpb_causal                   the same in bits per byte of the predicted text
    <task>/<mode>                                    paper average (%), T=1
    <task>/<mode>/best_T                             at the best temperature of the sweep (chosen on the task)
    <task>/<mode>/blimp_T                            supplement at the temperature calibrated on BLiMP
    lambada/<mode>, lambada/<mode>/perplexity        exact-match accuracy (%), answer perplexity
    """
    m = {k: float(v) for k, v in train_rec["val"].items()}
    if not results:
        return m
    for task, by_mode in results.get("tasks", {}).items():
        for mode, r in by_mode.items():
            if r.get("T1"):
                m[f"{task}/{mode}"] = r["T1"]["average"]
            m[f"{task}/{mode}/best_T"] = r["best_T"]["average"]
            if r.get("calibrated_T"):
                m[f"{task}/{mode}/blimp_T"] = r["calibrated_T"]["average"]
    for mode, r in results.get("lambada", {}).items():
        m[f"lambada/{mode}"] = r["accuracy"]
        m[f"lambada/{mode}/perplexity"] = r["perplexity"]
    return m


# ---------------------------------------------------------------------------
# Aggregate


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n-1); None for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def param_count(cfg: RunConfig) -> int:
    torch.manual_seed(0)
    return sum(p.numel() for p in GPTBERT(cfg.model).parameters())


def aggregate(spec: SweepSpec, cells: list[Cell], calibration: dict | None, failed: dict[str, str] | None = None) -> dict:
    """sweep.json: the spec, the calibration, every cell's numbers, and mean/std per grid point."""
    failed = failed or {}
    cell_rows, by_setting = [], {}
    params: dict[str, int] = {}
    for c in cells:
        res = read_json(c.dir / "result.json") if cell_status(c, spec.eval) == "done" else None
        key = json.dumps(c.config.to_dict()["model"], sort_keys=True)
        if key not in params:
            params[key] = param_count(c.config)
        row = {**c.record(), "params": params[key], "status": "done" if res else ("failed" if c.id in failed else "missing")}
        if c.id in failed:
            row["error"] = failed[c.id]
        if res:
            tr = res["train"]
            row.update(tokens_seen=tr["tokens_seen"], train_seconds=tr["train_seconds"], resumed=tr["resumed"],
                       eval_seconds=res["eval_seconds"], metrics=res["metrics"])
        cell_rows.append(row)
        by_setting.setdefault(c.setting, []).append(row)
    settings = []
    for labels, rows in by_setting.items():
        done = [r for r in rows if r["status"] == "done"]
        keys = list(dict.fromkeys(k for r in done for k in r["metrics"]))
        mean, std, n = {}, {}, {}
        for k in keys:
            vals = [r["metrics"][k] for r in done if k in r["metrics"]]
            mean[k], std[k] = mean_std(vals)
            n[k] = len(vals)
        settings.append({"labels": list(labels), "overrides": rows[0]["overrides"], "seeds": [r["seed"] for r in done],
                         "cells": [r["id"] for r in rows], "n": len(done), "mean": mean, "std": std, "n_per_metric": n})
    first = cells[0].config if cells else None
    return {
        "spec": spec.to_yaml_dict(),
        "dimensions": [{"name": d.name, "title": d.title, "labels": [e.label for e in d.entries],
                        "overrides": [e.overrides for e in d.entries]} for d in spec.dims],
        "budget": {"kind": spec.budget[0], "amount": spec.budget[1],
                   "steps_per_cell": sorted({c.config.train.max_steps for c in cells})},
        "calibration": calibration,
        "base": {"config": spec.config, "overrides": spec.overrides, "params": params.get(
            json.dumps(first.to_dict()["model"], sort_keys=True)) if first else None,
                 "model": first.to_dict()["model"] if first else None},
        "eval": spec.eval.options(),
        "report_temperature": spec.report_temperature,
        "std": "sample standard deviation over seeds (n-1); null with one seed",
        "metrics_help": cell_metrics.__doc__.split("\n\n", 1)[1].strip(),
        "cells": cell_rows,
        "settings": settings,
        "complete": all(r["status"] == "done" for r in cell_rows),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
