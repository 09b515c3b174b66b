"""`gptbert sweep`: the paper's experiments as one resumable command.

The grid, cell ids, shared data, budgets, evaluation and aggregation live in
gptbert/sweep.py (tables and figures in sweep_report.py); this module parses
the options and runs the cells, because only the CLI runs the training loop.

A cell runs in this process (--jobs 1), in a worker process
`gptbert sweep --spec OUT/spec.yaml --cell ID` (--jobs N, N at a time), and
its training either here or under `torchrun --nproc_per_node N` (--launcher
torchrun). Training always uses `resume="auto"`, so a sweep that was killed
or stopped continues each cell where its last checkpoint left it; a cell whose
result.json matches its config and the evaluation options is skipped.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .. import memory, paths
from .. import sweep as sw
from .. import sweep_cells
from ..config import load_config, preset_names
from ..errors import GPTBertError, did_you_mean
from ..io import atomic_write_json, atomic_write_text
from ..sweep_report import family_table, families, write_report
from ..train import train
from . import exits
from .pretrain import STOP_SIGNALS, add_config_flags, config_overrides

FAILED = 1  # exit status when some cells failed (the others are done and reported)

EXAMPLES = """\
examples:
  # the paper's ratio study (Figure 2): 5 ratios, the same 15-minute budget per cell
  gptbert sweep --data ../shared/data/pretrain --out runs/sweep-ratio --config cpu-quick \\
      --axis objective.causal_ratio=causal-only,1:1,1:7,1:15,masked-only --minutes 15

  # Table 2 ablations (named override sets; the first row is the reference of the differences)
  gptbert sweep --data ../shared/data/pretrain --out runs/sweep-ablations --config cpu-quick --minutes 15 \\
      --row "GPT-BERT" --row "w/o layer weights: model.layer_weighting=false" \\
      --row "w/o attention gate: model.attention_gate=false" \\
      --row "w/o mask scheduling: objective.mask_schedule=false" --row "w/o batch scheduling: train.batch_ramp=false"
  (any section.key of `gptbert train --help` works; where a switch does not exist, a fixed mask rate is
  objective.mask_p_start=0.15, i.e. mask_p_end)

  # continue a stopped sweep / rebuild its tables and figures
  gptbert sweep --spec runs/sweep-ratio/spec.yaml
  gptbert sweep --spec runs/sweep-ratio/spec.yaml --report-only
"""


# ---------------------------------------------------------------------------
# Options: command line over --spec file over defaults


def _read_spec(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise GPTBertError(f"--spec {p}: file does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise GPTBertError(f"--spec {p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise GPTBertError(f"--spec {p}: expected a mapping of options")
    known = set(SPEC_KEYS) | {"overrides"}
    for k in data:
        if k not in known:
            raise GPTBertError(f"--spec {p}: unknown option '{k}'{did_you_mean(k, known)}")
    ov = data.get("overrides") or {}
    if isinstance(ov, list):  # ["train.lr=0.01", ...]
        ov = dict(str(x).split("=", 1) for x in ov)
    if not isinstance(ov, dict):
        raise GPTBertError(f"--spec {p}: overrides must be a mapping of section.key: value")
    data["overrides"] = ov
    for k in ("axis", "row"):
        if isinstance(data.get(k), str):
            data[k] = [data[k]]
    return data


SPEC_KEYS = ("out", "config", "axis", "row", "seeds", "steps", "tokens", "minutes", "minutes_each", "data", "prepared", "val_fraction",
             "eval_tasks", "eval_modes", "eval_precision", "eval_limit", "temperature_sweep", "eval_data", "device",
             "report_temperature", "table_mode", "jobs", "launcher", "nproc")


def merged_options(args: argparse.Namespace) -> dict:
    spec = _read_spec(args.spec) if args.spec else {}
    opts = {"config": "cpu-quick"}
    opts.update({k: v for k, v in spec.items() if v is not None})
    for k in SPEC_KEYS:
        v = getattr(args, k, None)
        if v is not None:
            opts[k] = v
    if any(getattr(args, b, None) is not None for b in sw.BUDGETS):  # a budget flag replaces the file's budget
        for b in sw.BUDGETS:
            opts[b] = getattr(args, b, None)
    opts["overrides"] = {**(spec.get("overrides") or {}), **config_overrides(args)}
    return opts


# ---------------------------------------------------------------------------
# Running cells


class Stopped(Exception):
    """A cell's training was stopped by SIGTERM / Ctrl-C after saving a checkpoint."""


def _threads(jobs: int, nproc: int = 1) -> str:
    return os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // (jobs * nproc)))


def _child_env(threads: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():  # a source checkout: the children import this same package
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    return env


def train_cell(spec: sw.SweepSpec, cell: sw.Cell) -> None:
    """Train (or continue) one cell; writes attempts.jsonl and, when finished, train.json."""
    cfg_path = cell.dir / "config.yaml"
    from_step = sweep_cells.last_step(cell.dir / "train")
    t0 = time.perf_counter()
    if spec.launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec.nproc}",
               "-m", "gptbert.cli", "train", "--config", str(cfg_path), "--resume", "auto"]
        rc = subprocess.run(cmd, env=_child_env(_threads(spec.jobs, spec.nproc))).returncode
        stopped = rc == exits.STOPPED
        if rc not in (exits.OK, exits.STOPPED):
            sweep_cells.record_attempt(cell, from_step, time.perf_counter() - t0, f"failed ({rc})")
            raise GPTBertError(f"{cell.id}: torchrun training exited with status {rc}")
    else:
        result = train(load_config(cfg_path), resume="auto")
        stopped = result.stopped in STOP_SIGNALS
    sweep_cells.record_attempt(cell, from_step, time.perf_counter() - t0, "stopped" if stopped else "finished")
    if stopped:
        raise Stopped(cell.id)
    sweep_cells.finish_training(cell)


_SEEN: set[str] = set()


def _once(message: str) -> bool:
    """True the first time a message is seen (the suite's notes repeat for every cell)."""
    new = message not in _SEEN
    _SEEN.add(message)
    return new


def run_cell(spec: sw.SweepSpec, cell: sw.Cell, tokenizer: Path, eval_data: Path | None, log) -> None:
    if sweep_cells.cell_status(cell, spec.eval) == "done":
        return
    t0 = time.perf_counter()
    if sweep_cells.cell_status(cell, spec.eval) == "pending":
        memory.release()  # the previous cell's (or the calibration's) freed memory, as quickstart does
        train_cell(spec, cell)
        memory.release()  # training's freed memory, before the evaluation loads the checkpoint
    rec = sweep_cells.evaluate_cell(cell, tokenizer, spec.eval, eval_data, log=lambda s: _once(s) and log(f"  {cell.id}: {s}"))
    val = rec["metrics"]
    log(f"  {cell.id}: done in {time.perf_counter() - t0:.0f}s: {rec['train']['steps']} steps, "
        f"val masked {val['val_loss_masked']:.3f} causal {val['val_loss_causal']:.3f}")


def _load_cell(spec: sw.SweepSpec, cell_id: str) -> sw.Cell:
    d = spec.out.resolve() / "cells" / cell_id
    rec = sweep_cells.read_json(d / "cell.json")
    if not rec:
        raise GPTBertError(f"{d}: not a cell of this sweep (no cell.json)")
    cfg = load_config(d / "config.yaml")
    return sw.Cell(rec["id"], rec["labels"], rec["overrides"], rec["seed"], cfg, sw.config_sha(cfg), d)


def run_worker(spec: sw.SweepSpec, cell_id: str) -> int:
    """`--cell ID`: one cell in this process (started by a sweep with --jobs > 1)."""
    cell = _load_cell(spec, cell_id)
    eval_data = sw.check_eval_data(spec.eval)
    try:
        run_cell(spec, cell, Path(cell.config.train.tokenizer), eval_data, log=lambda s: print(s, flush=True))
    except Stopped:
        return exits.STOPPED
    return exits.OK


def run_pool(spec: sw.SweepSpec, cells: list[sw.Cell], log) -> tuple[dict[str, str], bool]:
    """Cells as `--jobs` worker processes; returns (failed cell -> reason, stopped)."""
    queue = list(cells)
    running: dict[subprocess.Popen, tuple[sw.Cell, object]] = {}
    failed: dict[str, str] = {}
    stop = {"now": False}
    env = _child_env(_threads(spec.jobs, spec.nproc))

    def on_term(signum, frame):  # stop launching; running cells save a checkpoint and exit
        stop["now"] = True
        for p in running:
            p.send_signal(signal.SIGTERM)

    old = signal.signal(signal.SIGTERM, on_term)
    stopped = False
    try:
        while queue or running:
            while queue and len(running) < spec.jobs and not stop["now"]:
                cell = queue.pop(0)
                cell.dir.mkdir(parents=True, exist_ok=True)
                logf = open(cell.dir / "log.txt", "a", encoding="utf-8")
                cmd = [sys.executable, "-m", "gptbert.cli", "sweep", "--spec", str(spec.out / "spec.yaml"),
                       "--cell", cell.id]
                running[subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)] = (cell, logf)
                log(f"  {cell.id}: started (log: {cell.dir / 'log.txt'})")
            if stop["now"] and not running:
                break
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:
                on_term(None, None)
            for p in [p for p in running if p.poll() is not None]:
                cell, logf = running.pop(p)
                logf.close()
                if p.returncode == exits.STOPPED:
                    stopped = True
                    log(f"  {cell.id}: stopped (checkpoint saved)")
                elif p.returncode != exits.OK:
                    tail = (cell.dir / "log.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
                    failed[cell.id] = tail[-1] if tail else f"exit status {p.returncode}"
                    log(f"  {cell.id}: FAILED (exit {p.returncode}): {failed[cell.id]}")
                else:
                    log(f"  {cell.id}: done")
    finally:
        signal.signal(signal.SIGTERM, old)
    return failed, stopped or stop["now"]


# ---------------------------------------------------------------------------
# The command


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise GPTBertError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "spec.yaml").is_file():
        raise GPTBertError(f"--out {out}: not empty and not a sweep folder (no spec.yaml); choose another --out")


def cmd_sweep(args: argparse.Namespace) -> int:
    spec = sw.spec_from_options(merged_options(args))
    if args.cell:
        return run_worker(spec, args.cell)
    eval_data = sw.check_eval_data(spec.eval)
    base = sw.base_config(spec)
    out = spec.out
    # Every cell's config is resolved and validated before anything is prepared or trained.
    placeholders = sw.build_cells(spec, out / "data", out / "tokenizer.json", None, check_only=True)
    _check_out(out)
    cal_path = out / "calibration.json"
    timed = spec.budget[0] in sw.TIMED
    calibration = sweep_cells.read_json(cal_path) if timed else None
    if timed and not sw.calibration_fits(spec, calibration):  # another budget: timed afresh
        calibration = None

    if args.dry_run or args.report_only:
        if timed and not sw.calibration_fits(spec, calibration, placeholders):
            if args.report_only:
                raise GPTBertError(f"{out}: no calibration.json for every cell: nothing of this sweep has run yet")
            print(f"(--{spec.budget[0].replace('_', '-')} {spec.budget[1]:g}: the steps per cell are calibrated "
                  "when the sweep starts)")
            cells = placeholders
        else:
            cells = sw.build_cells(spec, out / "data", out / "tokenizer.json", sw.cell_steps(spec, calibration))
        if args.dry_run:
            _print_plan(spec, cells)
            return exits.OK
        return _report(spec, cells, calibration, {})

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "spec.yaml", yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    data, tok = sw.prepare_data(spec, base.model.vocab_size)
    sw.check_prepared_vocab(tok, base.model.vocab_size)
    if spec.budget[0] == "minutes" and calibration is None:
        print(f"calibrating: timing the base config to fit {spec.budget[1]:g} minutes of training per cell ...")
        calibration = sw.calibrate(spec, spec.budget[1])
        atomic_write_json(cal_path, calibration)
    elif spec.budget[0] == "minutes_each" and not sw.calibration_fits(spec, calibration, placeholders):
        print(f"calibrating: timing each cell config to fit {spec.budget[1]:g} minutes of training ...")
        calibration = sw.calibrate_each(spec, placeholders, spec.budget[1], calibration)
        atomic_write_json(cal_path, calibration)
    memory.release()  # the timing's freed activations: not kept through the cells' training
    cells = sw.build_cells(spec, data, tok, sw.cell_steps(spec, calibration))
    for c in cells:  # all checked before any is written
        sweep_cells.check_cell_files(c)
    for c in cells:
        sweep_cells.write_cell_files(c)
    status = {c.id: sweep_cells.cell_status(c, spec.eval) for c in cells}
    todo = [c for c in cells if status[c.id] != "done"]
    steps = sorted({c.config.train.max_steps for c in cells})
    print(f"sweep: {len(cells)} cells ({' x '.join(str(len(d.entries)) for d in spec.dims)} x {len(spec.seeds)} seeds), "
          f"{'/'.join(map(str, steps))} steps each; {len(cells) - len(todo)} done, "
          f"{sum(s == 'trained' for s in status.values())} to evaluate, {sum(s == 'pending' for s in status.values())} "
          f"to train; jobs {spec.jobs}, launcher {spec.launcher}" + (f" x {spec.nproc}" if spec.launcher == "torchrun" else ""))
    failed: dict[str, str] = {}
    stopped = False
    if spec.jobs > 1 and len(todo) > 1:
        failed, stopped = run_pool(spec, todo, print)
    else:
        for i, c in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {c.id} ({' / '.join(c.labels)}, seed {c.seed})", flush=True)
            try:
                run_cell(spec, c, tok, eval_data, log=lambda s: print(s, flush=True))
            except Stopped:
                stopped = True
                break
            except GPTBertError as e:
                failed[c.id] = str(e)
                print(f"  {c.id}: FAILED: {e}", file=sys.stderr)
    status_code = _report(spec, cells, calibration, failed)
    if stopped:
        print(f"stopped; continue with: gptbert sweep --spec {out / 'spec.yaml'}", file=sys.stderr)
        return exits.STOPPED
    return FAILED if failed else status_code


def _print_plan(spec: sw.SweepSpec, cells: list[sw.Cell]) -> None:
    print(f"{len(cells)} cells -> {spec.out / 'cells'}")
    for c in cells:
        steps = "? steps" if c.config.train.max_steps == 1 and spec.budget[0] in sw.TIMED \
            else f"{c.config.train.max_steps} steps"
        print(f"  {c.id}  {' / '.join(c.labels)}  seed {c.seed}  {steps}  "
              f"{sweep_cells.cell_status(c, spec.eval)}")


def _report(spec: sw.SweepSpec, cells: list[sw.Cell], calibration: dict | None, failed: dict[str, str]) -> int:
    agg = sweep_cells.aggregate(spec, cells, calibration, failed)
    atomic_write_json(spec.out / "sweep.json", agg)
    figures = write_report(agg, spec.out)
    done = sum(c["status"] == "done" for c in agg["cells"])
    for fam in families(agg):
        print(f"\n{fam.title}\n{family_table(agg, fam)}")
    print(f"\nsweep: {done}/{len(cells)} cells done -> {spec.out / 'sweep.md'}, {spec.out / 'sweep.json'}"
          + "".join(f", {p}" for p in figures))
    return exits.OK


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "sweep", help="a grid of runs that differ in one or two settings, trained and evaluated alike",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Train a grid of GPT-BERT runs that differ in one or two settings (an --axis of values, or "
                    "named --row override sets as in the paper's Table 2) under the same budget and seeds, "
                    "evaluate each (validation losses, zero-shot tasks in several modes, EMA weights), and write "
                    "OUT/sweep.json, OUT/sweep.md and PNG figures (Figure 2: metric against the axis, one line per "
                    "mode; Table 2: bars per row). Rerunning the same command (or --spec OUT/spec.yaml) skips "
                    "finished cells and continues interrupted ones from their last checkpoint. Exit status: 0 all "
                    "cells done, 1 some cells failed, 2 bad input (checked before any work), 75 stopped.")
    s.add_argument("--spec", help="YAML file with any of these options under their long names ('-' -> '_'; "
                                  "--axis/--row as lists, config overrides as `overrides: {section.key: value}`); "
                                  "flags given on the command line win. Every sweep writes its own OUT/spec.yaml")
    s.add_argument("--out", help="the sweep folder (required, here or in --spec)")
    s.add_argument("--config", help=f"base preset ({', '.join(preset_names())}) or YAML file (default: cpu-quick); "
                                    "--section.key flags below override it for every cell")
    g = s.add_argument_group("grid")
    g.add_argument("--axis", action="append",
                   help="KEY=V1,V2,...: one cell per value of the config key KEY (any section.key of `gptbert train`). "
                        "For objective.causal_ratio the values may be causal-only (1.0), masked-only (0.0) or "
                        "causal:masked ratios a:b = a/(a+b) rows causal (1:1 = 0.5, 1:7 = 0.125, 1:15 = 0.0625). "
                        "Repeat for a second axis (the grid is their product)")
    g.add_argument("--row", action="append",
                   help="'NAME: KEY=V, KEY=V' a named set of overrides (one Table 2 row); 'NAME' alone is the base "
                        "settings. Repeat per row; the first row is the reference of the difference table. "
                        "Rows count as one dimension (at most two in all)")
    g.add_argument("--seeds", help="comma-separated train.seed values, each run at every grid point; mean and sample "
                                   "std over them are reported (default: 0)")
    b = s.add_argument_group("budget per cell (exactly one)")
    b.add_argument("--steps", type=int, help="every cell trains this many optimizer steps")
    b.add_argument("--tokens", type=int, help="every cell trains the fewest steps whose schedule reads at least this "
                                              "many tokens (cells that change the batch schedule get other step counts)")
    b.add_argument("--minutes", type=float,
                   help="wall-clock training minutes per cell: the base config is timed once (calibration.json) and "
                        "every cell gets the same number of steps, so load from other processes changes the wall "
                        "time, not the results. Evaluation time comes on top")
    b.add_argument("--minutes-each", dest="minutes_each", type=float,
                   help="wall-clock training minutes per cell, each distinct cell config timed on its own "
                        "(calibration.json), so a faster config (a smaller model, a larger batch) gets more steps: "
                        "for tuning at equal CPU time. Timing noise shifts the step counts; a restarted sweep "
                        "keeps the counts already fixed")
    d = s.add_argument_group("data (one tokenizer and corpus for all cells)")
    d.add_argument("--data", help=f"corpus folder to tokenize and prepare into OUT/data once (default: <data root>/pretrain, "
                                  f"{paths.DEFAULTS_HELP})")
    d.add_argument("--prepared", help="use this `gptbert prepare` folder (meta.json + tokenizer.json) instead")
    d.add_argument("--val-fraction", type=float, help="documents held out for the validation losses (default: 0.01)")
    e = s.add_argument_group("evaluation (per cell, EMA weights)")
    e.add_argument("--eval-tasks", help="comma-separated tasks of `gptbert eval` ('' = validation losses only; default: "
                                        f"{','.join(sw.DEFAULT_TASKS)}: roughly half an hour per cpu-quick cell on a 2-core "
                                        "CPU (an estimate), most of it blimp_filtered)")
    e.add_argument("--eval-modes", help=f"comma-separated scoring modes (default: {','.join(sw.DEFAULT_MODES)}; "
                                        "LAMBADA has no fused mode)")
    e.add_argument("--eval-precision", choices=("auto", "bf16", "fp32"),
                   help="transformer precision in evaluation; sums stay fp32 (default: auto = bf16 where the hardware "
                        "has bf16 matmuls, else fp32)")
    e.add_argument("--eval-limit", type=int, help="only the first N pairs of every sub-task (a quick, SUBSET sweep)")
    e.add_argument("--no-temperature-sweep", dest="temperature_sweep", action="store_const", const=False,
                   help="score at T=1 only (faster; no best-T numbers)")
    e.add_argument("--eval-data", help=f"folder of the named tasks (default: <data root>/eval, {paths.DEFAULTS_HELP})")
    e.add_argument("--device", help="evaluation device: auto, cpu, cuda, cuda:N, mps (default: auto); training uses "
                                    "--train.device")
    r = s.add_argument_group("report")
    r.add_argument("--report-temperature", choices=("t1", "best"),
                   help="accuracies in the tables and figures at T=1 (default) or at the best temperature of the "
                        "0.05-3.00 sweep (chosen on the task itself; the supplement at BLiMP's); both are in sweep.json")
    r.add_argument("--table-mode", help="scoring mode of the Table 2 columns (default: mntp)")
    r.add_argument("--report-only", action="store_true", help="train nothing: rebuild sweep.json, sweep.md and the "
                                                              "figures from the finished cells")
    r.add_argument("--dry-run", action="store_true", help="check everything and print the cells; write nothing")
    x = s.add_argument_group("execution")
    x.add_argument("--jobs", type=int, help="cells run at once, each in its own process (default: 1). On a CPU the "
                                            "cores are shared: each cell gets cores/jobs threads and trains slower")
    x.add_argument("--launcher", choices=("local", "torchrun"),
                   help="train each cell in the sweep's process (local, default) or under torchrun (DDP)")
    x.add_argument("--nproc", type=int, help="processes per cell under --launcher torchrun (default: 1)")
    s.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one cell (the worker of --jobs N)
    add_config_flags(s)
    s.set_defaults(fn=cmd_sweep)
