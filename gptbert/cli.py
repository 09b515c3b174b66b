"""Command-line interface: `gptbert <command> ...`.

Commands:
  tokenizer   train the byte-level BPE tokenizer on a corpus folder
  prepare     tokenize a corpus folder into packed uint16 shards + validation split
  train       pretrain GPT-BERT (single process, or DDP under torchrun)
  quickstart  the main job: tokenizer + prepare + a CPU-budgeted training run

Every `train` option is a field of the dataclasses in config.py and appears in
`gptbert train --help` as `--section.key`. User errors (bad files, bad config
values, corrupted checkpoints) print one line `error: ...` and exit with 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from .errors import GPTBertError

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pretrain"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from .config import SECTIONS

    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for f in dataclasses.fields(cls):
            default = f.default
            group.add_argument(
                f"--{section}.{f.name}", dest=f"{section}.{f.name}", default=None, metavar=type(default).__name__.upper(),
                help=f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%"),
            )


def _overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


# ---------------------------------------------------------------------------
# Commands


def cmd_tokenizer(args: argparse.Namespace) -> None:
    from .corpus import find_corpus_files, read_documents
    from .tokenizer import train_tokenizer

    files = find_corpus_files(args.data)
    t0 = time.perf_counter()
    texts = (doc for f in files for doc in read_documents(f))
    tok = train_tokenizer(texts, args.vocab_size, Path(args.out), min_frequency=args.min_frequency)
    print(f"tokenizer: {tok.get_vocab_size()} tokens from {len(files)} files in {time.perf_counter() - t0:.1f}s -> {args.out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from .corpus import corpus_stats_line, prepare_corpus

    t0 = time.perf_counter()
    stats = prepare_corpus(args.data, args.tokenizer, args.out, val_fraction=args.val_fraction, seed=args.seed)
    print(f"prepared: {corpus_stats_line(stats)} in {time.perf_counter() - t0:.1f}s -> {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .train import format_losses, train

    cfg = load_config(args.config, _overrides(args))
    result = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {result.steps} steps, {result.tokens_seen:,} tokens in {result.seconds:.0f}s")
        print(f"validation: {format_losses(result.val)}")
        print(f"checkpoint: {result.checkpoint}")


def cmd_quickstart(args: argparse.Namespace) -> None:
    """The main job: from a folder of text to a trained, validated GPT-BERT in a CPU budget."""
    from .config import load_config
    from .corpus import corpus_stats_line, find_corpus_files, prepare_corpus, read_documents
    from .tokenizer import train_tokenizer
    from .train import format_losses, train, unigram_entropy
    from .calibrate import steps_for_budget

    t_all = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, _overrides(args))
    vocab = cfg.model.vocab_size

    print(f"[1/4] tokenizer: byte-level BPE, {vocab} tokens, on {args.data}")
    t0 = time.perf_counter()
    files = find_corpus_files(args.data)
    tok_path = out / "tokenizer.json"
    tok = train_tokenizer((d for f in files for d in read_documents(f)), vocab, tok_path)
    if tok.get_vocab_size() != vocab:
        raise GPTBertError(f"{args.data}: corpus too small for a {vocab}-token vocabulary "
                           f"(got {tok.get_vocab_size()}); lower --model.vocab_size")
    print(f"      {time.perf_counter() - t0:.1f}s -> {tok_path}")

    print("[2/4] prepare: tokenize + pack + hold out validation")
    t0 = time.perf_counter()
    data_dir = out / "data"
    stats = prepare_corpus(args.data, tok_path, data_dir, val_fraction=args.val_fraction, seed=cfg.train.seed)
    print(f"      {corpus_stats_line(stats)} ({time.perf_counter() - t0:.1f}s)")

    cfg.train.data = str(data_dir)
    cfg.train.tokenizer = str(tok_path)
    cfg.train.out_dir = str(out / "train")
    spent = (time.perf_counter() - t_all) / 60
    budget = max(args.minutes - spent, 0.5)
    steps, step_s = steps_for_budget(cfg, budget * 60 * 0.92)
    cfg.train.max_steps = steps
    cfg.train.time_budget = budget
    cfg.validate("quickstart")
    print(f"[3/4] train: {steps} steps (~{step_s:.2f}s each) in a {budget:.1f}-minute budget, "
          f"{cfg.train.precision}, causal:masked rows = {cfg.objective.causal_ratio:.4f}")
    result = train(cfg)
    h = unigram_entropy(data_dir, vocab)
    print(f"[4/4] done in {(time.perf_counter() - t_all) / 60:.1f} min: {result.steps} steps, "
          f"{result.tokens_seen:,} tokens, {result.tokens_seen / max(result.seconds, 1e-9):.0f} tokens/s")
    print(f"      validation: {format_losses(result.val)}")
    print(f"      unigram-entropy baseline: {h:.4f} nats/token")
    print(f"      checkpoint: {result.checkpoint}")
    if args.eval_tasks:
        _quick_eval(args, result.checkpoint, tok_path, out)


def _quick_eval(args: argparse.Namespace, checkpoint: Path, tok_path: Path, out: Path) -> None:
    """Zero-shot minimal pairs on the fresh checkpoint (EMA weights), one small table."""
    from .eval.loading import default_eval_dir, load_for_eval
    from .eval.report import summary_table
    from .eval.suite import run_suite

    data_dir = Path(args.eval_data) if args.eval_data else default_eval_dir()
    tasks = [t for t in args.eval_tasks.split(",") if t]
    if not data_dir.is_dir():
        print(f"[eval] skipped: evaluation data folder {data_dir} is absent (pass --eval-data)")
        return
    t0 = time.perf_counter()
    model, tok = load_for_eval(checkpoint, tok_path, ema=True, device="cpu")
    print(f"[eval] {', '.join(tasks)} in causal, mntp and fused modes (EMA weights, bf16 forward, fp32 sums)")
    results = run_suite(model, tok, tasks, ["causal", "mntp", "fused"], out / "eval", data_dir=data_dir,
                        precision="bf16", progress=False, log=lambda s: None)
    print(summary_table(results["tasks"]))
    print(f"      {time.perf_counter() - t0:.0f}s -> {out / 'eval' / 'results.json'}")


# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptbert", description="Pretrain, evaluate and export GPT-BERT models.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("tokenizer", help="train the byte-level BPE tokenizer on a corpus folder")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="corpus folder (*.train, *.test, *.txt, *.jsonl)")
    s.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size incl. 16 specials (8192 small, 16384 base)")
    s.add_argument("--min-frequency", type=int, default=2, help="minimum pair frequency for a merge")
    s.add_argument("--out", default="runs/tokenizer.json", help="output tokenizer.json")
    s.set_defaults(fn=cmd_tokenizer)

    s = sub.add_parser("prepare", help="tokenize a corpus folder into packed shards")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="corpus folder (*.train, *.test, *.txt, *.jsonl)")
    s.add_argument("--tokenizer", required=True, help="tokenizer.json from `gptbert tokenizer`")
    s.add_argument("--out", default="runs/data", help="output folder (replaced atomically)")
    s.add_argument("--val-fraction", type=float, default=0.01, help="fraction of documents held out for validation")
    s.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("train", help="pretrain GPT-BERT (use torchrun --nproc_per_node=N for DDP)")
    s.add_argument("--config", help="YAML preset, e.g. configs/small-10m.yaml")
    s.add_argument("--resume", help="checkpoint to continue from: a run folder or a checkpoints/step_N folder")
    _add_config_flags(s)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("quickstart", help="main job: tokenizer + prepare + budgeted CPU training")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="corpus folder (default: ../shared/data/pretrain)")
    s.add_argument("--out", default="runs/quickstart", help="output folder")
    s.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "cpu-quick.yaml"),
                   help="YAML preset for the model and schedule")
    s.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget for the whole job, in minutes")
    s.add_argument("--val-fraction", type=float, default=0.01, help="fraction of documents held out")
    s.add_argument("--eval-tasks", default="blimp_fast,supplement_fast",
                   help="zero-shot tasks to run after training ('' = none)")
    s.add_argument("--eval-data", help="evaluation data folder (default: ../shared/data/eval)")
    _add_config_flags(s)
    s.set_defaults(fn=cmd_quickstart)

    from .export import add_hf_parsers  # export, import-hf, generate (transformers only needed by export)

    add_hf_parsers(sub)
    try:
        from .eval.cli import add_eval_parser, add_finetune_parser
    except ImportError:  # evaluation package not installed in this tree
        pass
    else:
        add_eval_parser(sub)
        add_finetune_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except GPTBertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
