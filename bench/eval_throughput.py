"""Zero-shot scoring throughput: BLiMP-fast pairs/s in causal and mntp mode, fp32 and bf16.

    python bench/eval_throughput.py                      # 1,005 pairs (15 per paradigm), small preset
    python bench/eval_throughput.py --pairs 0            # all 13,400 BLiMP-fast pairs
    python bench/eval_throughput.py --task blimp_filtered --pairs 0 --modes causal --precisions bf16
    python bench/eval_throughput.py --no-sweep           # T=1 only (no 60-temperature sweep)
    python bench/eval_throughput.py --checkpoint runs/x  # a trained model instead of random weights
    python bench/eval_throughput.py --plain              # also a plain one-sentence-per-row scorer: ratios

--plain times, in the same run, the scorer other tools use (minicons, the
GPT-2 peer script of ../shared/tools/peer_quality.py): one padded row per
sentence (causal) or per masked copy (mntp), sorted by length in batches of
--plain-batch rows, the output head and a log-softmax over the whole
vocabulary at every position, T=1 only. Its T=1 accuracy must
equal ours (same model, same arithmetic up to summation order); the table
then gives ours/plain, and ours with the 60-temperature sweep against ours at
T=1 (what the sweep costs).

Random weights are fine for speed: the work per pair does not depend on the
weights. Without --checkpoint/--tokenizer a vocab-8192 tokenizer is trained
once on ../shared/data/pretrain (a few seconds) and cached in runs/bench/.
The last column extrapolates to the whole BabyLM-filtered BLiMP (59,875 pairs).
On a shared machine other processes compete for the cores: the load average
is printed with the table, and the best of --repeat runs is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cpuinfo import cpu_name  # noqa: E402

from gptbert.config import model_preset  # noqa: E402
from gptbert.eval.forward import EvalModel  # noqa: E402
from gptbert.paths import eval_dir, pretrain_dir  # noqa: E402
from gptbert.pretrained import load as load_pretrained  # noqa: E402
from gptbert.eval.minimal_pairs import evaluate_task, load_task  # noqa: E402
from gptbert.eval.scoring import SWEEP_TEMPERATURES, SentenceScorer  # noqa: E402
from gptbert.model import GPTBERT  # noqa: E402
from gptbert.model import attention_mask  # noqa: E402
from gptbert.tokenizer import BOS_ID, MASK_ID, PAD_ID, load_tokenizer  # noqa: E402

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


def plain_scores(em: EvalModel, sentences: list[list[int]], mode: str, batch: int) -> torch.Tensor:
    """Summed T=1 log-probs of each sentence, the plain way (see the module docstring).

    causal: one row `<s> w1 .. wn` per sentence; mntp: n rows per sentence,
    row j with w_j replaced by `<mask>` and read one position earlier (MNTP's shift).
    """
    rows, owner, where = [], [], []  # where: (position read, target) per row; None = every position (causal)
    for i, s in enumerate(sentences):
        ids = [BOS_ID, *s]
        if mode == "causal":
            rows.append(ids)
            owner.append(i)
            where.append(None)
        else:
            for j in range(1, len(ids)):
                copy = list(ids)
                copy[j] = MASK_ID
                rows.append(copy)
                owner.append(i)
                where.append((j - 1, ids[j]))
    order = sorted(range(len(rows)), key=lambda r: len(rows[r]))  # by length, as a careful plain scorer does
    rows, owner, where = [rows[r] for r in order], [owner[r] for r in order], [where[r] for r in order]
    out = torch.zeros(len(sentences), dtype=torch.float64)
    for b0 in range(0, len(rows), batch):
        chunk = rows[b0:b0 + batch]
        B, T = len(chunk), max(len(r) for r in chunk)
        ids = torch.full((B, T), PAD_ID, dtype=torch.long)
        seg = torch.full((B, T), -1, dtype=torch.long)
        for b, r in enumerate(chunk):
            ids[b, :len(r)] = torch.tensor(r)
            seg[b, :len(r)] = 0
        mask = attention_mask(seg, mode == "causal")
        logp = torch.log_softmax(em.logits(ids, mask), dim=-1)  # (B, T, V): every position, full vocabulary
        for b, r in enumerate(chunk):
            w = where[b0 + b]
            if w is None:  # causal: position p predicts token p + 1
                tgt = torch.tensor(r[1:])
                val = logp[b, torch.arange(len(r) - 1), tgt].double().sum()
            else:
                val = logp[b, w[0], w[1]].double()
            out[owner[b0 + b]] += val
    return out


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
    p.add_argument("--plain", action="store_true", help="also time a plain one-sentence-per-row scorer (T=1) "
                   "and ours at T=1, and print ratios")
    p.add_argument("--plain-batch", type=int, default=128,
                   help="rows per batch of the plain scorer (default 128, as the peer script)")
    p.add_argument("--json", help="also write the results to this JSON file")
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

    def timed(fn):
        best, out = math.inf, None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    sentences = [e.ids for e in tok.encode_batch([q.good for q in task.pairs] + [q.bad for q in task.pairs],
                                                 add_special_tokens=False)]
    n = len(task.pairs)
    warm = load_task("blimp_fast", args.data_dir, limit=1)
    records = []
    for precision in args.precisions.split(","):
        em = EvalModel(model, precision)
        scorer = SentenceScorer(em, tok, temperatures=temps, max_tokens=args.max_tokens,
                                trie_row_tokens=args.trie_row_tokens)
        t1 = SentenceScorer(em, tok, temperatures=(1.0,), max_tokens=args.max_tokens,
                            trie_row_tokens=args.trie_row_tokens)
        for mode in args.modes.split(","):
            evaluate_task(scorer, warm, mode)  # warm-up: kernel selection, allocator
            sec, res = timed(lambda: evaluate_task(scorer, task, mode))
            acc = res.average_at(res.column(1.0))
            rec = {"mode": mode, "precision": precision, "pairs": n, "seconds": round(sec, 2),
                   "pairs_per_s": round(n / sec, 2), "accuracy_t1": round(acc, 2), "sweep": args.sweep}
            print(f"  {mode:6s} {precision}: {n / sec:8.1f} pairs/s", file=sys.stderr)
            if args.plain:
                sec1, res1 = timed(lambda: evaluate_task(t1, task, mode))
                plain_scores(em, sentences[:4], mode, args.plain_batch)  # warm-up
                secp, sp = timed(lambda: plain_scores(em, sentences, mode, args.plain_batch))
                good, bad = sp[:n].numpy(), sp[n:].numpy()
                ours = np.concatenate([res1.good.column(1.0), res1.bad.column(1.0)])
                rec.update(seconds_t1=round(sec1, 2), seconds_plain=round(secp, 2),
                           plain_accuracy_t1=round(res1.average_at(good > bad), 2),
                           max_abs_diff_vs_plain=float(np.abs(ours - sp.numpy()).max()),
                           ours_t1_over_plain=round(secp / sec1, 2), ours_sweep_over_plain=round(secp / sec, 2),
                           sweep_overhead=round(sec / sec1 - 1, 3))
                print(f"  {mode:6s} {precision}: T=1 {n / sec1:.1f} pairs/s, plain {n / secp:.1f} pairs/s",
                      file=sys.stderr)
            records.append(rec)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nCPU: {cpu_name()}; load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores")
    sweep = "sweep" if args.sweep else "T=1"
    head = f"{'mode':8s}{'precision':>10s}{'pairs':>8s}{'s (' + sweep + ')':>12s}{'pairs/s':>10s}{'BLiMP-filtered':>16s}"
    if args.plain:
        head += f"{'s (T=1)':>10s}{'s (plain)':>11s}{'T=1/plain':>11s}{'sweep cost':>12s}{'acc ours/plain':>16s}"
    print(head)
    for r in records:
        line = (f"{r['mode']:8s}{r['precision']:>10s}{r['pairs']:>8d}{r['seconds']:>12.1f}{r['pairs_per_s']:>10.1f}"
                f"{BLIMP_FILTERED_PAIRS / r['pairs_per_s'] / 60:>12.1f} min")
        if args.plain:
            line += (f"{r['seconds_t1']:>10.1f}{r['seconds_plain']:>11.1f}{r['ours_t1_over_plain']:>10.2f}x"
                     f"{100 * r['sweep_overhead']:>11.0f}%{r['accuracy_t1']:>9.2f}/{r['plain_accuracy_t1']:.2f}")
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "model": name, "task": args.task,
                                               "load_average": load, "records": records}, indent=1))

if __name__ == "__main__":
    main()
