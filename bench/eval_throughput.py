"""Zero-shot scoring throughput: BLiMP-fast pairs/s in causal and mntp mode, fp32 and bf16.

    python bench/eval_throughput.py                      # 1,005 pairs (15 per paradigm), small preset
    python bench/eval_throughput.py --pairs 0            # all 13,400 BLiMP-fast pairs
    python bench/eval_throughput.py --task blimp_filtered --pairs 0 --modes causal --precisions bf16
    python bench/eval_throughput.py --no-sweep           # T=1 only (no 60-temperature sweep)
    python bench/eval_throughput.py --checkpoint runs/x  # a trained model instead of random weights

Random weights are fine for speed: the work per pair does not depend on the
weights. Without --checkpoint/--tokenizer a vocab-8192 tokenizer is trained
once on ../shared/data/pretrain (a few seconds) and cached in runs/bench/.
The last column extrapolates to the whole BabyLM-filtered BLiMP (59,875 pairs).
On a shared machine other processes compete for the cores: the load average
is printed with the table, and the best of --repeat runs is reported.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptbert.config import model_preset  # noqa: E402
from gptbert.eval.forward import EvalModel  # noqa: E402
from gptbert.paths import eval_dir, pretrain_dir  # noqa: E402
from gptbert.pretrained import load as load_pretrained  # noqa: E402
from gptbert.eval.minimal_pairs import evaluate_task, load_task  # noqa: E402
from gptbert.eval.scoring import SWEEP_TEMPERATURES, SentenceScorer  # noqa: E402
from gptbert.model import GPTBERT  # noqa: E402
from gptbert.tokenizer import load_tokenizer  # noqa: E402

BLIMP_FILTERED_PAIRS = 59_875


def _tokenizer(path: str | None):
    if path:
        return load_tokenizer(path)
    cached = REPO / "runs" / "bench" / "tokenizer-8192.json"
    if not cached.is_file():
        from gptbert.corpus import find_corpus_files, read_documents
        from gptbert.tokenizer import train_tokenizer

        data = pretrain_dir()
        files = find_corpus_files(data)
        print(f"training a vocab-8192 tokenizer on {data} -> {cached}", file=sys.stderr)
        train_tokenizer((d for f in files for d in read_documents(f)), 8192, cached)
    return load_tokenizer(cached)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="trained run to load (default: random small-preset weights)")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the checkpoint's, or a cached vocab-8192 one)")
    p.add_argument("--preset", default="small", help="model preset for random weights (default: small)")
    p.add_argument("--data-dir", help="folder holding blimp_fast/ (default: <data root>/eval)")
    p.add_argument("--task", default="blimp_fast", help="minimal-pair task folder under --data-dir (default: blimp_fast; "
                   "blimp_filtered is the full 59,875 pairs)")
    p.add_argument("--pairs", type=int, default=1005, help="pairs to score, spread over the 67 paradigms (0 = all)")
    p.add_argument("--trie-row-tokens", type=int, default=64, help="causal mode: prefix-tree row length (0 = off)")
    p.add_argument("--modes", default="causal,mntp")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="score at T=1 only")
    p.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per forward pass")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the fastest is reported")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        pre = load_pretrained(args.checkpoint, tokenizer=args.tokenizer)
        model, tok = pre.model, pre.tokenizer
        name = args.checkpoint
    else:
        tok = _tokenizer(args.tokenizer)
        torch.manual_seed(0)
        model = GPTBERT(model_preset(args.preset, vocab_size=tok.get_vocab_size(), dropout=0.0,
                                     attention_dropout=0.0)).eval()
        name = f"{args.preset} preset, random weights"
    limit = None if args.pairs <= 0 else max(1, math.ceil(args.pairs / 67))
    task = load_task(args.task, eval_dir(args.data_dir), limit=limit)
    n_tok = sum(len(e.ids) for e in tok.encode_batch([q.good for q in task.pairs] + [q.bad for q in task.pairs],
                                                      add_special_tokens=False))
    temps = SWEEP_TEMPERATURES if args.sweep else (1.0,)
    print(f"model: {name} ({model.num_parameters() / 1e6:.1f}M params); {len(task.pairs)} {args.task} pairs, "
          f"{n_tok / (2 * len(task.pairs)):.1f} tokens/sentence; temperatures: "
          f"{'sweep of ' + str(len(temps)) if args.sweep else 'T=1 only'}; torch threads {torch.get_num_threads()}")

    rows = []
    for precision in args.precisions.split(","):
        em = EvalModel(model, precision)
        scorer = SentenceScorer(em, tok, temperatures=temps, max_tokens=args.max_tokens,
                                trie_row_tokens=args.trie_row_tokens)
        warm = load_task("blimp_fast", args.data_dir, limit=1)
        for mode in args.modes.split(","):
            evaluate_task(scorer, warm, mode)  # warm-up: kernel selection, allocator
            best = math.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = evaluate_task(scorer, task, mode)
                best = min(best, time.perf_counter() - t0)
            rate = len(task.pairs) / best
            rows.append((mode, precision, len(task.pairs), best, rate, BLIMP_FILTERED_PAIRS / rate,
                         100 * res.correct[:, 0].mean() if not args.sweep else res.average_at(res.column(1.0))))
            print(f"  {mode:6s} {precision}: {rate:8.1f} pairs/s", file=sys.stderr)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"{'mode':8s}{'precision':>10s}{'pairs':>8s}{'seconds':>10s}{'pairs/s':>10s}{'BLiMP-filtered':>16s}")
    for mode, precision, n, sec, rate, full, _ in rows:
        print(f"{mode:8s}{precision:>10s}{n:>8d}{sec:>10.1f}{rate:>10.1f}{full / 60:>12.1f} min")


if __name__ == "__main__":
    main()
