"""`gptbert tokenizer | prepare | train | quickstart`.

Every `train` option is a field of the dataclasses in config.py and appears in
`gptbert train --help` as `--section.key`, with the help string written next
to the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

from .. import memory, paths
from ..calibrate import fit_steps_to_words, measure_step_costs, words_per_row_token
from ..config import SECTIONS, load_config, preset_names
from ..corpus import corpus_stats_line, find_corpus_files, prepare_corpus, read_documents
from ..distributed import pick_device
from ..errors import GPTBertError
from ..io import atomic_write_json
from ..eval.report import summary_table
from ..eval.suite import check_task_names, run_suite
from ..precision import resolve_precision
from ..pretrained import load
from ..tokenizer import train_tokenizer
from . import exits
from .budget import train_in_budget
from ..train import format_losses, train, unigram_entropy


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One `--section.key` flag per config field, documented by the field's help string."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for f in dataclasses.fields(cls):
            default = f.default
            group.add_argument(
                f"--{section}.{f.name}", dest=f"{section}.{f.name}", default=None, metavar=type(default).__name__.upper(),
                help=f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%"),
            )


def config_overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


def cmd_tokenizer(args: argparse.Namespace) -> None:
    data = paths.pretrain_dir(args.data)
    files = find_corpus_files(data)
    t0 = time.perf_counter()
    texts = (doc for f in files for doc in read_documents(f))
    tok = train_tokenizer(texts, args.vocab_size, Path(args.out), min_frequency=args.min_frequency)
    print(f"tokenizer: {tok.get_vocab_size()} tokens from {len(files)} files in {time.perf_counter() - t0:.1f}s -> {args.out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    stats = prepare_corpus(paths.pretrain_dir(args.data), args.tokenizer, args.out, val_fraction=args.val_fraction,
                           seed=args.seed)
    print(f"prepared: {corpus_stats_line(stats)} in {time.perf_counter() - t0:.1f}s -> {args.out}")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, config_overrides(args))
    if cfg.train.max_steps == 0:  # a word budget sets the length of the schedules
        ratio = words_per_row_token(cfg)
        cfg.train.max_steps = fit_steps_to_words(cfg, ratio)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"max_words {cfg.train.max_words:,} at {ratio:.3f} words per row token: "
                  f"max_steps = {cfg.train.max_steps:,}", file=sys.stderr)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return exits.STOPPED if result.stopped in STOP_SIGNALS else exits.OK
    print(f"trained {result.steps} steps, {result.tokens_seen:,} tokens, {result.words_seen:,} words "
          f"in {result.seconds:.0f}s"
          + (f" ({result.skipped_steps} steps skipped: non-finite gradient)" if result.skipped_steps else ""))
    if result.val:
        print(f"validation: {format_losses(result.val)}")
    print(f"checkpoint: {result.checkpoint}")
    if result.milestones:
        print(f"milestones: {', '.join(p.name for p in result.milestones)}")
    return _stopped_message(result, Path(cfg.train.out_dir))


STOP_SIGNALS = ("SIGTERM", "SIGINT")


def _stopped_message(result, run_dir: Path) -> int:
    """After a preemption: the exact command that continues the run, and exit status 75."""
    if result.stopped not in STOP_SIGNALS:
        return exits.OK
    print(f"stopped by {result.stopped} after step {result.steps}; checkpoint saved. Continue with:\n"
          f"  gptbert train --config {run_dir / 'config.yaml'} --resume auto", file=sys.stderr)
    return exits.STOPPED


def cmd_quickstart(args: argparse.Namespace) -> int:
    """The main job: from a folder of text to a trained, validated GPT-BERT in a CPU budget."""
    t_all = time.perf_counter()
    cfg = load_config(args.config, config_overrides(args))
    data = paths.pretrain_dir(args.data)
    out = Path(args.out)
    _check_quickstart_out(out, args.overwrite)
    tasks = [t for t in args.eval_tasks.split(",") if t]
    eval_data = None
    if tasks:  # where the evaluation data is, before hours of work
        try:
            eval_data = paths.eval_dir(args.eval_data)
        except GPTBertError:
            eval_data = None
        if eval_data is not None and eval_data.is_dir():
            check_task_names(tasks, eval_data)
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = cfg.model.vocab_size

    print(f"[1/4] tokenizer: byte-level BPE, {vocab} tokens, on {data}")
    t0 = time.perf_counter()
    files = find_corpus_files(data)
    tok_path = out / "tokenizer.json"
    tok = train_tokenizer((d for f in files for d in read_documents(f)), vocab, tok_path)
    if tok.get_vocab_size() != vocab:
        raise GPTBertError(f"{data}: corpus too small for a {vocab}-token vocabulary "
                           f"(got {tok.get_vocab_size()}); lower --model.vocab_size")
    print(f"      {time.perf_counter() - t0:.1f}s -> {tok_path}")

    print("[2/4] prepare: tokenize + pack + hold out validation")
    t0 = time.perf_counter()
    data_dir = out / "data"
    stats = prepare_corpus(data, tok_path, data_dir, val_fraction=args.val_fraction, seed=cfg.train.seed)
    print(f"      {corpus_stats_line(stats)} ({time.perf_counter() - t0:.1f}s)")

    cfg.train.data = str(data_dir)
    cfg.train.tokenizer = str(tok_path)
    cfg.train.out_dir = str(out / "train")
    cfg.validate("quickstart")
    costs = measure_step_costs(cfg)  # inside --minutes, like steps 1-2
    memory.release()  # the calibration's freed activations: not kept through training (or by its data worker)
    budget = max(args.minutes - (time.perf_counter() - t_all) / 60, 0.05)
    print(f"[3/4] train in the {budget:.1f} minutes left, "
          f"{resolve_precision(cfg.train.precision, pick_device(cfg.train.device))}, causal:masked rows = {cfg.objective.causal_ratio:.4f}")
    result, plan = train_in_budget(cfg, budget, costs)
    atomic_write_json(out / "budget.json", plan)
    memory.release()  # training's freed memory, before the evaluation loads the checkpoint
    if result.stopped in STOP_SIGNALS:
        return _stopped_message(result, Path(cfg.train.out_dir))
    h = unigram_entropy(data_dir, vocab)
    print(f"[4/4] done in {(time.perf_counter() - t_all) / 60:.1f} min: {result.steps} steps, "
          f"{result.tokens_seen:,} tokens, {result.tokens_seen / max(result.seconds, 1e-9):.0f} tokens/s")
    print(f"      validation: {format_losses(result.val)}")
    print(f"      unigram-entropy baseline: {h:.4f} nats/token")
    print(f"      checkpoint: {result.checkpoint}")
    if not tasks:
        return exits.OK
    if eval_data is None or not eval_data.is_dir():
        print(f"[eval] skipped: no evaluation data folder (pass --eval-data DIR or set {paths.ENV_VAR})")
        return exits.OK
    _quick_eval(tasks, result.checkpoint, tok_path, out, eval_data)
    return exits.OK


QUICKSTART_ITEMS = ("tokenizer.json", "data", "budget.json", "train", "eval")


def _check_quickstart_out(out: Path, overwrite: bool) -> None:
    """The output folder must be new, empty, or (with --overwrite) an earlier quickstart's."""
    if not out.exists():
        return
    if not out.is_dir():
        raise GPTBertError(f"{out}: exists and is not a folder")
    items = {p.name for p in out.iterdir()}
    if not items:
        return
    if not overwrite:
        raise GPTBertError(f"{out}: holds an earlier run; pass --overwrite to replace it or choose another --out")
    if not items <= set(QUICKSTART_ITEMS):
        raise GPTBertError(f"{out}: is not a quickstart folder (it holds {', '.join(sorted(items - set(QUICKSTART_ITEMS)))}); "
                           "refusing to clear it, choose another --out")


def _quick_eval(tasks: list[str], checkpoint: Path, tok_path: Path, out: Path, eval_data: Path) -> None:
    """Zero-shot minimal pairs on the fresh checkpoint (EMA weights), one small table."""
    t0 = time.perf_counter()
    pre = load(checkpoint, weights="ema", tokenizer=tok_path)
    precision = resolve_precision("auto", next(pre.model.parameters()).device)
    print(f"[eval] {', '.join(tasks)} in causal, mntp and fused modes (EMA weights, {precision} forward, fp32 sums)")
    results = run_suite(pre.model, pre.tokenizer, tasks, ["causal", "mntp", "fused"], out / "eval", data_dir=eval_data,
                        precision=precision, progress=False, log=lambda s: None, info=pre.info())
    print(summary_table(results["tasks"]))
    print(f"      {time.perf_counter() - t0:.0f}s -> {out / 'eval' / 'results.json'}")


def add_parsers(sub) -> None:
    corpus_help = f"corpus folder (*.train, *.test, *.txt, *.jsonl; default: <data root>/pretrain, {paths.DEFAULTS_HELP})"
    s = sub.add_parser("tokenizer", help="train the byte-level BPE tokenizer on a corpus folder")
    s.add_argument("--data", help=corpus_help)
    s.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size incl. 16 specials (8192 small, 16384 base)")
    s.add_argument("--min-frequency", type=int, default=2, help="minimum pair frequency for a merge")
    s.add_argument("--out", default="runs/tokenizer.json", help="output tokenizer.json")
    s.set_defaults(fn=cmd_tokenizer)

    s = sub.add_parser("prepare", help="tokenize a corpus folder into packed shards")
    s.add_argument("--data", help=corpus_help)
    s.add_argument("--tokenizer", required=True, help="tokenizer.json from `gptbert tokenizer`")
    s.add_argument("--out", default="runs/data", help="output folder (replaced atomically)")
    s.add_argument("--val-fraction", type=float, default=0.01, help="fraction of documents held out for validation")
    s.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    s.set_defaults(fn=cmd_prepare)

    presets = ", ".join(preset_names())
    s = sub.add_parser("train", help="pretrain GPT-BERT (use torchrun --nproc_per_node=N for DDP)")
    s.add_argument("--config", help=f"preset name ({presets}) or a YAML file")
    s.add_argument("--resume", help="continue a run: 'auto' (the newest complete checkpoint in --train.out_dir, "
                                    "or a fresh start when there is none), or a run / checkpoints/step_N folder")
    s.add_argument("--overwrite", action="store_true", help="clear --train.out_dir first (it must be a run folder)")
    add_config_flags(s)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("quickstart", help="main job: tokenizer + prepare + budgeted CPU training + evaluation")
    s.add_argument("--data", help=corpus_help)
    s.add_argument("--out", default="runs/quickstart", help="output folder (must be new or empty unless --overwrite)")
    s.add_argument("--overwrite", action="store_true", help="replace the output of an earlier quickstart in --out")
    s.add_argument("--config", default="cpu-quick", help=f"preset name ({presets}) or a YAML file (default: cpu-quick)")
    s.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget for the whole job, in minutes")
    s.add_argument("--val-fraction", type=float, default=0.01, help="fraction of documents held out")
    s.add_argument("--eval-tasks", default="blimp_fast,supplement_fast",
                   help="zero-shot tasks to run after training ('' = none)")
    s.add_argument("--eval-data", help=f"evaluation data folder (default: <data root>/eval, {paths.DEFAULTS_HELP})")
    add_config_flags(s)
    s.set_defaults(fn=cmd_quickstart)
