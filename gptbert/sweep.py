"""Sweeps: a grid of pretraining runs that differ in one or two settings, under one budget.

The paper's ratio study (section 4.2, Figure 2) and ablations (Table 2) are sweeps: runs
that share everything (corpus, tokenizer, schedules, budget, seeds) but one or two
settings, each evaluated the same way. This module holds everything about a sweep
except running the training loop (only the CLI imports the loop: `cli/sweep.py`); what a cell
folder holds, its evaluation and the aggregate are in sweep_cells.py, tables and figures in
sweep_report.py:

  spec        what to run: a base config + overrides, 1-2 *dimensions* (an `--axis`
              `section.key=v1,v2,...`, or named override sets `--row "name: k=v, ..."`),
              seeds and one budget (steps, tokens or minutes)
  plan        the cells (one per point of the grid and seed), each a resolved and
              validated RunConfig, with a stable id derived from its overrides + seed
  budgets     --steps as given; --tokens: the fewest steps that read that many tokens;
              --minutes: calibrated once on the base config, the same steps for every cell
              (an ablation: equal work, so machine load cannot change the results);
              --minutes-each: every distinct cell config timed on its own, so each cell gets
              the same CPU time (a tuning study: model shapes, batch sizes at equal minutes)
  data        one tokenizer + prepared corpus for all cells (OUT/tokenizer.json, OUT/data)

Layout of a sweep folder `OUT/`:

  spec.yaml               the resolved spec (`gptbert sweep --spec OUT/spec.yaml` continues it)
  tokenizer.json, data/   one tokenizer and prepared corpus shared by all cells
  calibration.json        --minutes / --minutes-each: the timing that fixed the steps of the cells
  cells/<id>/             cell.json (overrides, seed, config hash), config.yaml, train/ (the run
                          folder), attempts.jsonl, train.json, eval/ (results.json, report.md),
                          result.json (written last: the cell is done), log.txt (--jobs > 1)
  sweep.json, sweep.md, *.png   the aggregate (sweep_report.py)

Ratio names: for `objective.causal_ratio` (the share of causal rows in every batch) an
axis value may be `causal-only` (1.0), `masked-only` (0.0) or `a:b` causal:masked rows,
i.e. a / (a + b): 1:1 = 0.5, 1:7 = 0.125, 1:15 = 0.0625, 3:1 = 0.75. Numbers are labelled
back the same way.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .calibrate import steps_for_budget
from .config import SECTIONS, RunConfig, load_config
from .corpus import corpus_stats_line, find_corpus_files, prepare_corpus, read_documents
from .data import step_shape
from .errors import GPTBertError, did_you_mean
from .eval.minimal_pairs import NAMED_TASKS
from .eval.suite import LAMBADA_NAMES, check_modes, check_task_names
from .io import atomic_write_json
from .paths import eval_dir, pretrain_dir
from .tokenizer import load_tokenizer, train_tokenizer

RATIO_KEY = "objective.causal_ratio"
RATIO_NAMES = {"causal-only": 1.0, "masked-only": 0.0}
ROWS = "row"  # the name of a dimension of named override sets

# Settings a dimension may not vary: the sweep sets them itself (or they must be shared).
RESERVED = {
    "train.data": "the sweep prepares one corpus for all cells (--data / --prepared)",
    "train.tokenizer": "the sweep trains one tokenizer for all cells (--data / --prepared)",
    "train.out_dir": "cells live in OUT/cells/<id>/train (--out)",
    "train.seed": "use --seeds",
    "train.max_steps": "use --steps, --tokens or --minutes",
    "train.time_budget": "a sweep's budget is a number of steps, the same whatever the machine's load "
                         "(--minutes calibrates it once)",
}
SHARED = {"model.vocab_size": "one tokenizer is shared by all cells; set it in the base config"}

DEFAULT_TASKS = ("blimp_fast", "supplement_fast", "blimp_filtered", "ewok_fast", "lambada")
DEFAULT_MODES = ("causal", "mntp", "fused")
SPLIT_SEED = 0  # the validation split of the shared corpus


# ---------------------------------------------------------------------------
# Spec: dimensions, values, budget


def ratio_value(text: str) -> float:
    """`causal-only`, `masked-only`, `a:b` (causal:masked rows) or a number -> causal_ratio."""
    s = str(text).strip().lower()
    if s in RATIO_NAMES:
        return RATIO_NAMES[s]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)", s)
    if m:
        a, b = float(m.group(1)), float(m.group(2))
        if a + b <= 0:
            raise GPTBertError(f"'{text}': a causal:masked ratio needs a positive side")
        return a / (a + b)
    try:
        return float(s)
    except ValueError:
        raise GPTBertError(f"'{text}': not a causal:masked ratio (causal-only, masked-only, a:b such as 1:7, "
                           "or a share of causal rows such as 0.125)") from None


def ratio_label(r: float) -> str:
    """0.125 -> '1:7', 0.75 -> '3:1', 1 -> 'causal-only', 0 -> 'masked-only'; else the number."""
    if r == 1.0:
        return "causal-only"
    if r == 0.0:
        return "masked-only"
    if not 0.0 < r < 1.0:
        return f"{r:g}"  # refused by the config's own check
    k = (1 - r) / r if r <= 0.5 else r / (1 - r)
    if abs(k - round(k)) < 1e-6:
        return f"1:{round(k)}" if r <= 0.5 else f"{round(k)}:1"
    return f"{r:g}"


def check_key(key: str, where: str, shared_ok: bool = False) -> None:
    """`section.key` must be a config field the sweep does not set itself."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise GPTBertError(f"{where}: '{key}' is not section.key with a section of {', '.join(SECTIONS)}")
    known = [f for f in SECTIONS[section].__dataclass_fields__]
    if name not in known:
        raise GPTBertError(f"{where}: unknown config key '{key}'"
                           f"{did_you_mean(name, known)} (see `gptbert train --help`)")
    if key in RESERVED:
        raise GPTBertError(f"{where}: '{key}' cannot be set here: {RESERVED[key]}")
    if key in SHARED and not shared_ok:
        raise GPTBertError(f"{where}: '{key}' cannot vary between cells: {SHARED[key]}")


@dataclass
class Entry:
    """One value of a dimension: a label and the overrides it sets."""

    label: str
    overrides: dict[str, Any]


@dataclass
class Dimension:
    name: str  # the config key of an axis, or "row"
    entries: list[Entry]

    @property
    def is_rows(self) -> bool:
        return self.name == ROWS

    @property
    def title(self) -> str:
        return "causal:masked" if self.name == RATIO_KEY else ("setting" if self.is_rows else self.name)


def parse_axis(text: str) -> Dimension:
    """`section.key=v1,v2,...` -> a dimension with one entry per value."""
    key, sep, values = str(text).partition("=")
    key = key.strip()
    where = f"--axis {text}"
    if not sep:
        raise GPTBertError(f"{where}: expected section.key=v1,v2,... (e.g. objective.causal_ratio=1:1,1:7,1:15)")
    check_key(key, where)
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not items:
        raise GPTBertError(f"{where}: no values")
    entries = []
    for v in items:
        if key == RATIO_KEY:
            r = ratio_value(v)
            entries.append(Entry(ratio_label(r), {key: r}))
        else:
            entries.append(Entry(v, {key: v}))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise GPTBertError(f"{where}: a value is given twice")
    return Dimension(key, entries)


_ROW = re.compile(r"^(?P<name>.*?)\s*:\s*(?P<ov>[A-Za-z_]\w*\.\w+\s*=.*)$")


def parse_row(text: str) -> Entry:
    """`name: section.key=value, section.key=value` (or just `name` for the base settings)."""
    s = str(text).strip()
    m = _ROW.match(s)
    name, ov = (m.group("name"), m.group("ov")) if m else (s.rstrip(":").strip(), "")
    where = f"--row '{text}'"
    if not name:
        raise GPTBertError(f"{where}: a row needs a name, as in 'w/o layer weights: model.layer_weighting=false'")
    overrides: dict[str, Any] = {}
    for part in (p.strip() for p in ov.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise GPTBertError(f"{where}: '{part}' is not section.key=value")
        check_key(key, where)
        if key in overrides:
            raise GPTBertError(f"{where}: '{key}' is set twice")
        overrides[key] = ratio_value(value) if key == RATIO_KEY else value.strip()
    return Entry(name, overrides)


def parse_seeds(text: Any) -> list[int]:
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        seeds = [int(str(s).strip()) for s in items if str(s).strip()]
    except ValueError:
        raise GPTBertError(f"--seeds: expected comma-separated integers, got '{text}'") from None
    if not seeds:
        raise GPTBertError("--seeds: no seed given")
    if len(set(seeds)) != len(seeds):
        raise GPTBertError(f"--seeds: a seed is given twice ({text})")
    return seeds


@dataclass
class EvalSpec:
    tasks: list[str]
    modes: list[str]
    precision: str = "auto"
    limit: int | None = None
    temperature_sweep: bool = True
    data_dir: str | None = None
    device: str = "auto"

    def options(self) -> dict:
        """What decides the numbers (a cell evaluated with other options is evaluated again)."""
        return {"tasks": list(self.tasks), "modes": list(self.modes), "precision": self.precision,
                "limit": self.limit, "temperature_sweep": self.temperature_sweep, "data_dir": self.data_dir}


@dataclass
class SweepSpec:
    out: Path
    config: str | None
    overrides: dict[str, Any]  # base overrides, section.key -> value
    dims: list[Dimension]
    seeds: list[int]
    budget: tuple[str, float]  # ("steps" | "tokens" | "minutes" | "minutes_each", amount)
    corpus: str | None = None  # a corpus folder to prepare, or
    prepared: str | None = None  # a folder made by `gptbert prepare` (with tokenizer.json)
    val_fraction: float = 0.01
    eval: EvalSpec = field(default_factory=lambda: EvalSpec(list(DEFAULT_TASKS), list(DEFAULT_MODES)))
    report_temperature: str = "t1"
    table_mode: str = "mntp"
    jobs: int = 1
    launcher: str = "local"
    nproc: int = 1
    axis_texts: list[str] = field(default_factory=list)  # as given, for spec.yaml
    row_texts: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.nproc if self.launcher == "torchrun" else 1

    def to_yaml_dict(self) -> dict:
        """The spec in the form `--spec` reads (flag names, values as given)."""
        return {
            "out": str(self.out), "config": self.config, "overrides": dict(self.overrides),
            "axis": list(self.axis_texts), "row": list(self.row_texts),
            "seeds": ",".join(map(str, self.seeds)),
            self.budget[0]: self.budget[1] if self.budget[0] in TIMED else int(self.budget[1]),
            "data": self.corpus, "prepared": self.prepared, "val_fraction": self.val_fraction,
            "eval_tasks": ",".join(self.eval.tasks), "eval_modes": ",".join(self.eval.modes),
            "eval_precision": self.eval.precision, "eval_limit": self.eval.limit,
            "temperature_sweep": self.eval.temperature_sweep, "eval_data": self.eval.data_dir,
            "device": self.eval.device, "report_temperature": self.report_temperature,
            "table_mode": self.table_mode, "jobs": self.jobs, "launcher": self.launcher, "nproc": self.nproc,
        }


BUDGETS = ("steps", "tokens", "minutes", "minutes_each")
TIMED = ("minutes", "minutes_each")  # budgets fixed by timing steps on this machine (calibration.json)


def spec_from_options(o: dict) -> SweepSpec:
    """Build and check a spec from merged options (command line over --spec file over defaults)."""
    if not o.get("out"):
        raise GPTBertError("--out: the sweep folder is required")
    overrides = dict(o.get("overrides") or {})
    for key in overrides:
        check_key(key, f"--{key}", shared_ok=True)
    dims = [parse_axis(a) for a in o.get("axis") or []]
    rows = [parse_row(r) for r in o.get("row") or []]
    if rows:
        names = [r.label for r in rows]
        dup = [n for n in names if names.count(n) > 1]
        if dup:
            raise GPTBertError(f"--row: the name '{dup[0]}' is given twice")
        dims.append(Dimension(ROWS, rows))
    if not dims:
        raise GPTBertError("nothing to sweep: give --axis section.key=v1,v2,... and/or --row 'name: k=v, ...'")
    if len(dims) > 2:
        raise GPTBertError(f"a sweep has one or two dimensions (axes, or rows as one dimension); got {len(dims)}")
    if len(dims) == 2:
        a = {k for e in dims[0].entries for k in e.overrides}
        b = {k for e in dims[1].entries for k in e.overrides}
        if a & b:
            raise GPTBertError(f"two dimensions set the same key '{sorted(a & b)[0]}'")
    given = [b for b in BUDGETS if o.get(b) is not None]
    if len(given) != 1:
        raise GPTBertError("give exactly one budget per cell: --steps N, --tokens N, --minutes M or --minutes-each M"
                           + (f" (got {', '.join('--' + b for b in given)})" if given else ""))
    kind = given[0]
    amount = float(o[kind])
    flag = "--" + kind.replace("_", "-")
    if amount <= 0 or (kind not in TIMED and not amount.is_integer()):
        raise GPTBertError(f"{flag}: expected a positive {'number' if kind in TIMED else 'integer'}, got {o[kind]}")
    if bool(o.get("data")) and bool(o.get("prepared")):
        raise GPTBertError("--data and --prepared contradict each other: give a corpus to prepare, or a prepared folder")
    tasks = _split(o.get("eval_tasks"), DEFAULT_TASKS)
    modes = _split(o.get("eval_modes"), DEFAULT_MODES)
    if tasks:
        check_modes(modes)
    if o.get("eval_limit") is not None and int(o["eval_limit"]) < 1:
        raise GPTBertError("--eval-limit must be >= 1")
    precision = o.get("eval_precision") or "auto"
    if precision not in ("auto", "bf16", "fp32"):
        raise GPTBertError(f"--eval-precision: expected auto, bf16 or fp32, got '{precision}'")
    report_t = o.get("report_temperature") or "t1"
    if report_t not in ("t1", "best"):
        raise GPTBertError(f"--report-temperature: expected t1 or best, got '{report_t}'")
    table_mode = o.get("table_mode") or "mntp"
    check_modes([table_mode])
    jobs, nproc = int(o.get("jobs") or 1), int(o.get("nproc") or 1)
    launcher = o.get("launcher") or "local"
    if jobs < 1 or nproc < 1:
        raise GPTBertError("--jobs and --nproc must be >= 1")
    if launcher not in ("local", "torchrun"):
        raise GPTBertError(f"--launcher: expected local or torchrun, got '{launcher}'")
    if nproc > 1 and launcher != "torchrun":
        raise GPTBertError("--nproc needs --launcher torchrun")
    val_fraction = float(o.get("val_fraction") if o.get("val_fraction") is not None else 0.01)
    if not 0 < val_fraction < 1:
        raise GPTBertError("--val-fraction must be in (0, 1)")
    ev = EvalSpec(tasks, modes, precision, None if o.get("eval_limit") is None else int(o["eval_limit"]),
                  bool(o.get("temperature_sweep", True)), o.get("eval_data"), o.get("device") or "auto")
    return SweepSpec(Path(o["out"]), o.get("config"), overrides, dims, parse_seeds(o.get("seeds", "0")),
                     (kind, amount), o.get("data"), o.get("prepared"), val_fraction, ev, report_t, table_mode,
                     jobs, launcher, nproc, [str(a) for a in o.get("axis") or []], [str(r) for r in o.get("row") or []])


def _split(value: Any, default) -> list[str]:
    if value is None:
        return list(default)
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(x).strip() for x in items if str(x).strip()]


def check_eval_data(ev: EvalSpec) -> Path | None:
    """Task names, and the files of named tasks, before any training (None: no task to run)."""
    if not ev.tasks:
        return None
    named = [t for t in ev.tasks if not Path(t).exists()]
    data = eval_dir(ev.data_dir) if named else (Path(ev.data_dir) if ev.data_dir else None)
    check_task_names(ev.tasks, data)
    for t in named:
        key = t.replace("-", "_")
        rel = "lambada" if key in LAMBADA_NAMES else NAMED_TASKS[key][0]
        if not (data / rel).exists():
            raise GPTBertError(f"--eval-tasks: task '{t}' needs {data / rel}, which does not exist "
                               "(is --eval-data right?)")
    return data


# ---------------------------------------------------------------------------
# Plan: cells with resolved configs and stable ids


@dataclass
class Cell:
    id: str
    labels: list[str]  # one per dimension
    overrides: dict[str, Any]  # this cell's own settings (canonical values), without the seed
    seed: int
    config: RunConfig
    config_sha: str
    dir: Path

    @property
    def setting(self) -> tuple[str, ...]:
        return tuple(self.labels)

    def record(self) -> dict:
        return {"id": self.id, "labels": list(self.labels), "overrides": self.overrides, "seed": self.seed,
                "config_sha": self.config_sha, "steps": self.config.train.max_steps}


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def cell_id(overrides: dict[str, Any], seed: int) -> str:
    """Readable and stable: `<key>_<value>[,...]-s<seed>-<hash of overrides + seed>`."""
    canon = json.dumps({"overrides": {k: _value_text(v) for k, v in sorted(overrides.items())}, "seed": seed},
                       sort_keys=True)
    digest = hashlib.sha1(canon.encode()).hexdigest()[:8]
    slug = ",".join(f"{k.split('.', 1)[1]}_{_value_text(v)}" for k, v in sorted(overrides.items())) or "base"
    slug = re.sub(r"[^A-Za-z0-9._,=-]+", "-", slug)[:60].strip("-") or "cell"
    return f"{slug}-s{seed}-{digest}"


_PATHS = ("data", "tokenizer", "out_dir", "progress")  # train keys that say where, not what


def _config_hash(cfg: RunConfig, drop_train_keys: tuple[str, ...]) -> str:
    d = copy.deepcopy(cfg.to_dict())
    for k in drop_train_keys:
        d["train"].pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def config_sha(cfg: RunConfig) -> str:
    """A hash of everything that decides a cell's training (not where its files are)."""
    return _config_hash(cfg, _PATHS)


def _resolve(spec: SweepSpec, overrides: dict[str, Any], where: str) -> RunConfig:
    try:
        return load_config(spec.config, overrides)
    except GPTBertError as e:
        raise GPTBertError(f"{where}: {str(e).lstrip('-')}") from None


def base_config(spec: SweepSpec, steps: int = 1) -> RunConfig:
    """The base config (no dimension applied) with the sweep's fixed settings."""
    return _resolve(spec, {**spec.overrides, "train.max_steps": steps}, "base config")


def build_cells(spec: SweepSpec, data: Path, tokenizer: Path, steps_for, check_only: bool = False) -> list[Cell]:
    """One cell per grid point and seed, each config resolved and validated.

    `steps_for(cfg)` gives a cell's max_steps (its budget); with `check_only` the paths and steps are
    placeholders (the check that runs before anything is prepared or trained).
    """
    out = spec.out.resolve()
    cells: list[Cell] = []
    seen: dict[str, tuple] = {}
    for combo in itertools.product(*(d.entries for d in spec.dims)):
        own: dict[str, Any] = {}
        for e in combo:
            own.update(e.overrides)
        labels = [e.label for e in combo]
        where = " / ".join(f"{d.name}={e.label}" if not d.is_rows else f"--row '{e.label}'"
                           for d, e in zip(spec.dims, combo))
        for seed in spec.seeds:
            fixed = {"train.seed": seed, "train.data": str(data), "train.tokenizer": str(tokenizer),
                     "train.progress": False, "train.max_steps": 1}
            cfg = _resolve(spec, {**spec.overrides, **own, **fixed}, where)
            canon = {k: getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) for k in own}
            cid = cell_id(canon, seed)
            if cid in seen:
                raise GPTBertError(f"{where}: the same settings as {seen[cid]} (cells must differ)")
            seen[cid] = tuple(labels)
            cdir = out / "cells" / cid
            cfg.train.out_dir = str(cdir / "train")
            if not check_only:
                cfg.train.max_steps = int(steps_for(cfg))
                cfg.validate(where)
            cells.append(Cell(cid, labels, canon, seed, cfg, config_sha(cfg), cdir))
    return cells


def steps_for_tokens(cfg: RunConfig, tokens: int, world_size: int = 1) -> int:
    """The fewest steps whose schedule (batch ramp, length schedule) reads at least `tokens` tokens."""
    trial = copy.deepcopy(cfg)

    def total(n: int) -> int:
        trial.train.max_steps = n
        return sum(step_shape(s, trial, world_size).tokens for s in range(n))

    lo, hi = 0, 1
    while total(hi) < tokens:
        lo, hi = hi, hi * 2
        if hi > 10**7:
            raise GPTBertError(f"--tokens {tokens}: more than 10 million steps")
    while lo < hi - 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if total(mid) >= tokens else (mid, hi)
    return hi


def _measured_with(spec: SweepSpec, t0: float) -> dict:
    return {"config": spec.config, "overrides": spec.overrides, "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "timing_seconds": round(time.perf_counter() - t0, 2)}


def calibrate(spec: SweepSpec, minutes: float) -> dict:
    """Time a few steps of the base config and fit `minutes` of training: every cell gets these steps."""
    cfg = base_config(spec)
    t0 = time.perf_counter()
    steps = int(steps_for_budget(copy.deepcopy(cfg), minutes * 60))
    return {"kind": "minutes", "minutes": minutes, "steps": steps, "seconds_per_step_estimate": minutes * 60 / steps,
            "measured_with": _measured_with(spec, t0), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "note": "calibrated once on the base config in one process; every cell trains this many steps, so "
                    "contention changes wall time, not results"}


def timing_key(cfg: RunConfig) -> str:
    """What a cell's step time depends on: its whole config but the seed, its length and its paths.
    Cells that differ only in their seed share one timing (and so one step count)."""
    return _config_hash(cfg, _PATHS + ("seed", "max_steps", "time_budget"))


def calibrate_each(spec: SweepSpec, cells: list["Cell"], minutes: float, earlier: dict | None = None, log=print) -> dict:
    """--minutes-each: time every distinct cell config (`timing_key`) on its own and fit `minutes` of
    training to it, so each cell gets the same CPU time and a faster config more steps. Timings
    already in `earlier` (a previous start of the same sweep) are kept: a restarted sweep does not
    change the step count of a cell that has trained."""
    t0 = time.perf_counter()
    steps = dict((earlier or {}).get("steps") or {})
    who = dict((earlier or {}).get("cells") or {})
    for c in cells:
        key = timing_key(c.config)
        who.setdefault(key, [])
        if c.id not in who[key]:
            who[key].append(c.id)
        if key not in steps:
            steps[key] = int(steps_for_budget(copy.deepcopy(c.config), minutes * 60))
            log(f"  {' / '.join(c.labels)}: {steps[key]} steps (~{minutes * 60 / steps[key]:.2f} s/step)")
    return {"kind": "minutes_each", "minutes": minutes, "steps": steps, "cells": who,
            "seconds_per_step_estimate": {k: minutes * 60 / n for k, n in steps.items()},
            "measured_with": _measured_with(spec, t0), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "note": "each distinct cell config timed on its own in one process (keys: timing_key), so every "
                    "cell gets about the same training minutes; load during the timing shifts the step counts"}


def calibration_fits(spec: SweepSpec, calibration: dict | None, cells: list["Cell"] | None = None) -> bool:
    """Whether a calibration.json belongs to this budget (and, for --minutes-each, covers these cells)."""
    if not calibration or calibration.get("minutes") != spec.budget[1]:
        return False
    if calibration.get("kind", "minutes") != spec.budget[0]:
        return False
    if spec.budget[0] == "minutes_each" and cells is not None:
        return all(timing_key(c.config) in calibration["steps"] for c in cells)
    return True


def cell_steps(spec: SweepSpec, calibration: dict | None):
    kind, amount = spec.budget
    if kind == "steps":
        return lambda cfg: int(amount)
    if kind == "tokens":
        return lambda cfg: steps_for_tokens(cfg, int(amount), spec.world_size)
    assert calibration is not None
    if kind == "minutes_each":
        return lambda cfg: calibration["steps"][timing_key(cfg)]
    return lambda cfg: calibration["steps"]


# ---------------------------------------------------------------------------
# The shared corpus


def prepare_data(spec: SweepSpec, vocab_size: int, log=print) -> tuple[Path, Path]:
    """(prepared data folder, tokenizer.json) shared by all cells; prepared once into OUT/data."""
    if spec.prepared:
        data = Path(spec.prepared).resolve()
        tok = data / "tokenizer.json"
        if not (data / "meta.json").is_file() or not tok.is_file():
            raise GPTBertError(f"--prepared {data}: not a `gptbert prepare` folder (needs meta.json and tokenizer.json)")
        return data, tok
    out = spec.out.resolve()
    data, tok_path = out / "data", out / "tokenizer.json"
    source = {"corpus": str(pretrain_dir(spec.corpus).resolve()), "vocab_size": vocab_size,
              "val_fraction": spec.val_fraction, "split_seed": SPLIT_SEED}
    record = out / "data_source.json"
    if record.is_file() and (data / "meta.json").is_file() and tok_path.is_file():
        old = json.loads(record.read_text(encoding="utf-8"))
        if old != source:
            raise GPTBertError(f"{out}: its shared corpus was prepared from {old} and this sweep asks for {source}; "
                               "use another --out")
        return data, tok_path
    corpus = Path(source["corpus"])
    files = find_corpus_files(corpus)
    t0 = time.perf_counter()
    tok = train_tokenizer((d for f in files for d in read_documents(f)), vocab_size, tok_path)
    if tok.get_vocab_size() != vocab_size:
        raise GPTBertError(f"{corpus}: corpus too small for a {vocab_size}-token vocabulary "
                           f"(got {tok.get_vocab_size()}); lower --model.vocab_size")
    stats = prepare_corpus(corpus, tok_path, data, val_fraction=spec.val_fraction, seed=SPLIT_SEED)
    atomic_write_json(record, source)
    log(f"data: tokenizer + {corpus_stats_line(stats)} ({time.perf_counter() - t0:.0f}s) -> {data}")
    return data, tok_path


def check_prepared_vocab(tokenizer: Path, vocab_size: int) -> None:
    n = load_tokenizer(tokenizer).get_vocab_size()
    if n != vocab_size:
        raise GPTBertError(f"{tokenizer}: has {n} tokens but the base config's model.vocab_size is {vocab_size}")
