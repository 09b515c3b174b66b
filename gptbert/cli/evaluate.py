"""`gptbert eval` (the zero-shot BabyLM suite) and `gptbert finetune` ((Super)GLUE).

Names (tasks, modes) and numbers are checked before the model is loaded.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .. import paths
from ..distributed import pick_device
from ..errors import GPTBertError, did_you_mean
from ..eval import report
from ..eval.finetune import GLUE_TASKS, FinetuneConfig, run_finetune
from ..eval.minimal_pairs import EWOK_SCORING
from ..eval.scoring import MODES, TIE_RULES
from ..eval.suite import check_modes, check_task_names, run_suite
from ..eval.tasks2025.aoa import evaluate_aoa, milestone_checkpoints
from ..eval.tasks2025.common import write_official
from ..eval.tasks2025.run import summary_table as summary_table_2025
from ..convert.revisions import milestone_folders
from ..pretrained import load
from ..precision import resolve_precision

DEFAULT_TASKS = "blimp_fast,supplement_fast"
DEFAULT_MODES = "causal,mntp,fused"


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run folder, quickstart --out folder, checkpoints/ folder, a "
                                      "checkpoints/step_N folder, or a Hugging Face GPT-BERT folder")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the run's config train.tokenizer, else next to the run)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights (default: EMA)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto (default): bf16 where the hardware has bf16 matmuls (GPUs, CPUs with AVX-512 or AMX), else fp32; bf16: transformer in bf16 (log-probs/logits and all sums stay fp32); fp32: everything fp32")
    p.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _add_eval_parser(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser(
        "eval", help="zero-shot BabyLM suite: BLiMP, supplement, EWoK, LAMBADA in causal/mntp/fused/prefix modes",
        description="Score minimal pairs (and LAMBADA) with a checkpoint. Reports, per task and mode, the paper's "
                    "average at T=1 and at the best temperature of the sweep 0.05..3.00 (chosen on the task "
                    "itself, as the paper does for BLiMP), and the T->0 (argmax) limit (ties: see --ties). "
                    "Writes results.json, report.md, predictions_<mode>.json (BabyLM 2024 submission format), "
                    "accuracy_<task>.png and, for the BabyLM 2025 tasks, the official pipeline's files under "
                    "zero_shot/<mode>/ to --out.")
    _common(s)
    s.add_argument("--tasks", default=DEFAULT_TASKS,
                   help="comma-separated: blimp_filtered, blimp_fast, blimp, supplement_filtered, supplement_fast, "
                        "ewok_filtered, ewok_fast, ewok_core, lambada, the BabyLM 2025 tasks entity_tracking, "
                        "entity_tracking_fast, wug_adj, wug_past, reading, comps (NAME=PATH reads a 2025 task's "
                        f"data from PATH, e.g. comps=DIR), or paths to folders/.jsonl/.zip files (default: {DEFAULT_TASKS})")
    s.add_argument("--modes", default=DEFAULT_MODES,
                   help=f"comma-separated of causal, mntp, fused, prefix (default: {DEFAULT_MODES})")
    s.add_argument("--out", default="runs/eval", help="output folder (default: runs/eval; must be new or empty)")
    s.add_argument("--force", action="store_true", help="replace an earlier evaluation in --out")
    s.add_argument("--data-dir", help=f"folder holding the named tasks (default: <data root>/eval, {paths.DEFAULTS_HELP})")
    s.add_argument("--no-sweep", dest="sweep", action="store_false",
                   help="score at T=1 only (faster: one log-sum-exp per token instead of the 60-point sweep)")
    s.add_argument("--temperature", type=float, default=1.0,
                   help="temperature of the predictions files (0 = argmax limit; default 1)")
    s.add_argument("--limit", type=int, help="only the first N pairs of every sub-task (quick runs)")
    s.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per forward pass (default 4096)")
    s.add_argument("--ewok-password", default="ewok", help="password of the EWoK zips (from the EWoK terms of use)")
    s.add_argument("--ewok-predictions", action="store_true",
                   help="also write EWoK predictions (they contain EWoK sentences in plain text: keep them off the web)")
    s.add_argument("--ties", choices=TIE_RULES, default="wrong",
                   help="how an exact tie counts: wrong (strict >, the gptbert default) or correct (the official "
                        "BabyLM scorers: the good candidate is kept); recorded in results.json and the report")
    s.add_argument("--ewok-scoring", choices=EWOK_SCORING, default="full",
                   help="EWoK tokens scored: full = context + target (the GPT-BERT paper; under bidirectional "
                        "attention the context depends on the target) or target = target only (the BabyLM 2025 "
                        "pipeline: use it for submissions)")
    s.add_argument("--data-dir-2025", help=f"folder of the BabyLM 2025 task data (default: <data root>/babylm2025, "
                                           f"{paths.DEFAULTS_HELP})")
    s.add_argument("--no-charts", dest="charts", action="store_false", help="do not write the PNG bar charts")
    s.add_argument("--details", action="store_true", help="also print the per-phenomenon / per-domain tables")
    s.set_defaults(fn=cmd_eval)
    return s


def claim_out_dir(out: Path, force: bool, what: str) -> None:
    """An output folder holds one evaluation: new, empty, or (with --force) an earlier result, cleared first."""
    if not out.exists():
        return
    if not out.is_dir():
        raise GPTBertError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not (out / "results.json").is_file():
        raise GPTBertError(f"{out}: not empty and holds no results.json (not an earlier {what}); choose another --out")
    if not force:
        raise GPTBertError(f"{out}: holds an earlier {what} (results.json); pass --force to replace it "
                           "or choose another --out")
    shutil.rmtree(out)


def _options(args: argparse.Namespace) -> dict:
    """The command line as run, for results.json."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "fn"}


def cmd_eval(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise GPTBertError("--limit must be >= 1")
    if args.max_tokens < 16:
        raise GPTBertError("--max-tokens must be >= 16")
    tasks, modes = _split(args.tasks), _split(args.modes)
    check_modes(modes)
    data_dir = paths.eval_dir(args.data_dir)
    check_task_names(tasks, data_dir)
    claim_out_dir(Path(args.out), args.force, "evaluation")
    device = pick_device(args.device)
    args.precision = resolve_precision(args.precision, device)  # auto -> bf16 or fp32 for this device
    t0 = time.perf_counter()
    pre = load(args.checkpoint, weights="raw" if args.raw else "ema", tokenizer=args.tokenizer, device=device)
    info = pre.info()
    print(f"eval: {info['checkpoint']} ({info['weights']} weights, step {info['step']}), {args.precision} on {device}",
          file=sys.stderr)
    results = run_suite(pre.model, pre.tokenizer, tasks, modes, args.out, data_dir=data_dir, precision=args.precision,
                        sweep=args.sweep, predict_temperature=args.temperature, ewok_password=args.ewok_password,
                        ewok_predictions=args.ewok_predictions, limit=args.limit, max_tokens=args.max_tokens,
                        progress=args.progress, charts=args.charts, info=info, options=_options(args),
                        ties=args.ties, ewok_scoring=args.ewok_scoring, data_dir_2025=args.data_dir_2025,
                        log=lambda s: print(s, file=sys.stderr))
    if results["tasks"]:
        print(report.summary_table(results["tasks"]))
        if args.details:
            for name, by_mode in results["tasks"].items():
                print(f"\n{name}")
                print(report.breakdown_table(by_mode, "phenomena"))
    if results.get("lambada"):
        print(report.lambada_table(results["lambada"]))
    if results.get("babylm2025"):
        print(summary_table_2025(results["babylm2025"]))
    print(f"results: {Path(args.out) / 'results.json'} ({time.perf_counter() - t0:.0f}s)")


def _add_aoa_parser(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser(
        "eval-aoa", help="BabyLM 2025 age-of-acquisition: surprisal curves over the milestone checkpoints of a run",
        description="Scores the CDI words in their contexts at every milestone checkpoint (chck_1M, ...) of a run, "
                    "fits sigmoids to the model's learning curves and to the children's CDI data, and reports the "
                    "correlation of the two ages of acquisition. Writes results.json and the official "
                    "zero_shot/<mode>/AoA_word/surprisal.json to --out.")
    s.add_argument("run", help="run folder (or its checkpoints/ folder) holding chck_NM milestone checkpoints")
    s.add_argument("--modes", default="causal,mntp", help="comma-separated of causal, mntp (default: causal,mntp)")
    s.add_argument("--out", default="runs/eval-aoa", help="output folder (must be new or empty)")
    s.add_argument("--force", action="store_true", help="replace an earlier result in --out")
    s.add_argument("--fit", choices=("numpy", "scipy"), default="numpy",
                   help="sigmoid fitter: numpy (ours, deterministic) or scipy (the official pipeline's; needs scipy)")
    s.add_argument("--min-context", type=int, default=0, help="keep words with at least this many contexts")
    s.add_argument("--limit", type=int, help="only the first N contexts of every word (quick runs)")
    s.add_argument("--data-dir-2025", help="folder of the BabyLM 2025 task data (default: <data root>/babylm2025)")
    s.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="transformer precision (sums fp32); auto: bf16 where the hardware has bf16 matmuls, else fp32")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    s.set_defaults(fn=cmd_eval_aoa)
    return s


def cmd_eval_aoa(args: argparse.Namespace) -> None:
    modes = _split(args.modes)
    for m in modes:
        if m not in ("causal", "mntp"):
            raise GPTBertError(f"--modes: AoA is scored in causal or mntp mode, not '{m}'{did_you_mean(m, MODES)}")
    checkpoints = milestone_checkpoints(milestone_root(args.run))
    data_2025 = paths.babylm2025_dir(args.data_dir_2025)
    out = Path(args.out)
    claim_out_dir(out, args.force, "AoA evaluation")
    device = pick_device(args.device)
    args.precision = resolve_precision(args.precision, device)  # auto -> bf16 or fp32 for this device
    summaries = {}
    for m in modes:
        res = evaluate_aoa(checkpoints, mode=m, data_dir=data_2025, precision=args.precision, device=str(device),
                           min_context=args.min_context, limit=args.limit, fit=args.fit,
                           log=lambda s: print(s, file=sys.stderr))
        write_official(res, out / "zero_shot" / m / res.official_dir)
        summaries[m] = res.summary
        print(f"aoa ({m}): curve fitness {res.summary['score']:.3f} over {res.summary['n_words']} words, "
              f"{len(checkpoints)} checkpoints")
    report.write_json(out / "results.json", {"options": _options(args), "aoa": summaries})
    print(f"results: {out / 'results.json'}")


def _add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser(
        "finetune", help="fine-tune on (Super)GLUE tasks with the paper's classifier and Table 4 hyperparameters",
        description="Fine-tune a copy of the checkpoint per task (first-token classifier, bidirectional attention, "
                    "AdamW, warmup + cosine, best epoch by validation metric). Defaults: paper Table 4 for the "
                    "model's size. Writes results.json and predictions.json (BabyLM 2024 format) to --out.")
    _common(s)
    s.add_argument("--tasks", default="all", help=f"comma-separated of {', '.join(GLUE_TASKS)}, or all (default)")
    s.add_argument("--out", default="runs/finetune", help="output folder (default: runs/finetune; must be new or empty)")
    s.add_argument("--force", action="store_true", help="replace an earlier fine-tuning result in --out")
    s.add_argument("--glue-dir", help="folder of <task>.train.jsonl / <task>.valid.jsonl "
                                      f"(default: <data root>/eval/glue_filtered, {paths.DEFAULTS_HELP})")
    s.add_argument("--multirc-train", help="MultiRC training file, SuperGLUE or flat format "
                                           "(default: superglue_original/multirc.train.jsonl next to --glue-dir)")
    s.add_argument("--epochs", type=int, help="override Table 4 epochs")
    s.add_argument("--lr", type=float, help="override Table 4 learning rate")
    s.add_argument("--batch-size", type=int, help="override Table 4 batch size")
    s.add_argument("--warmup", type=float, help="override Table 4 warmup proportion")
    s.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    s.add_argument("--max-length", type=int, default=512, help="max tokens per example (default 512)")
    s.add_argument("--dropout", type=float, default=0.1, help="classifier-head dropout (default 0.1)")
    s.add_argument("--grad-clip", type=float, default=2.0, help="clip the gradient norm (0 = off; default 2.0)")
    s.add_argument("--seed", type=int, default=42, help="seed of the head init, data order and subsampling")
    s.add_argument("--track", choices=("auto", "10M", "100M"), default="auto",
                   help="Table 4 column (auto: 100M when hidden size >= 768, else 10M)")
    s.add_argument("--max-train-examples", type=int, help="train on a random subset of this many rows (quick runs)")
    s.add_argument("--max-eval-examples", type=int, help="evaluate on a random subset of this many rows")
    s.set_defaults(fn=cmd_finetune)
    return s


def cmd_finetune(args: argparse.Namespace) -> None:
    tasks = list(GLUE_TASKS) if args.tasks.strip() == "all" else _split(args.tasks)
    for t in tasks:
        if t not in GLUE_TASKS:
            raise GPTBertError(f"--tasks: unknown task '{t}'{did_you_mean(t, list(GLUE_TASKS))} "
                               f"(choose from {', '.join(GLUE_TASKS)}, or all)")
    for n in (args.max_train_examples, args.max_eval_examples):
        if n is not None and n < 1:
            raise GPTBertError("--max-train-examples / --max-eval-examples must be >= 1")
    if args.max_length < 8:
        raise GPTBertError("--max-length must be >= 8")
    glue_dir = paths.glue_dir(args.glue_dir)
    claim_out_dir(Path(args.out), args.force, "fine-tuning")
    device = pick_device(args.device)
    args.precision = resolve_precision(args.precision, device)  # auto -> bf16 or fp32 for this device
    pre = load(args.checkpoint, weights="raw" if args.raw else "ema", tokenizer=args.tokenizer, device=device)
    model, tok, info = pre.model, pre.tokenizer, pre.info()
    print(f"finetune: {info['checkpoint']} ({info['weights']} weights), {args.precision} on {device}", file=sys.stderr)
    cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, warmup=args.warmup,
                         weight_decay=args.weight_decay, max_length=args.max_length, dropout=args.dropout,
                         grad_clip=args.grad_clip, precision=args.precision, seed=args.seed,
                         max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
                         track=args.track, progress=args.progress)
    out = run_finetune(model, tok, tasks, cfg, glue_dir=glue_dir,
                       multirc_train=Path(args.multirc_train) if args.multirc_train else None, device=device,
                       log=lambda s: print(s, file=sys.stderr))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    preds = {}
    for res in out["tasks"].values():
        preds.update(res.pop("predictions"))
    subset = (None if args.max_train_examples is None and args.max_eval_examples is None else
              "trained and/or evaluated on random subsets (--max-train-examples / --max-eval-examples)")
    report.write_json(out_dir / "results.json", {"model": info, "options": _options(args), "subset": subset, **out})
    report.write_json(out_dir / "predictions.json", {"glue": preds})
    rows = []
    for name, v in out["scores"].items():
        metric = "-"
        for res in out["tasks"].values():
            if name in res["results"]:
                metric = res["results"][name]["metric"]
        rows.append([name, metric, "unavailable" if v is None else f"{v:.1f}"])
    g = out["glue_score"]
    score = "-" if g["score"] is None else f"{g['score']:.1f}"
    rows.append([f"GLUE score ({g['n_available']}/{g['n_tasks']} tasks)", "mean", score])
    print(report.table(["task", "metric", "value"], rows))
    print(f"results: {out_dir / 'results.json'}")


def add_parsers(sub) -> None:
    _add_eval_parser(sub)
    _add_aoa_parser(sub)
    _add_finetune_parser(sub)


def milestone_root(run: str) -> Path:
    """The folder holding a run's chck_NM checkpoints (the run, its checkpoints/ folder, or that folder itself)."""
    folders = milestone_folders(run)
    if not folders:
        raise GPTBertError(f"{run}: no milestone checkpoints (chck_1M, ...) to evaluate AoA on")
    return folders[0].parent
