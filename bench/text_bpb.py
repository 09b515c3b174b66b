"""Causal bits per byte of a text, for a gptbert model and an HF causal LM side by side.

    python bench/text_bpb.py --text ../shared/data/pretrain/extra/wikipedia_en_sentences_fpadovani_validation.csv \
        --first 2000 --gptbert Q/train --hf P/model --hf-tokenizer P/tokenizer.json

Nats per token depend on the tokenizer; bits per byte of the same text do not, so this is the
metric to compare two models with different vocabularies (issue 12: ours against the GPT-2 of
../shared/tools/peer_quality.py). Every line is scored alone, after `<s>`, at T=1, in fp32:

    bits/byte = - sum over lines of log p(line | <s>) / ln 2 / sum over lines of UTF-8 bytes(line)

The line's bytes are those of the text as stored (no added spaces); both tokenizers here are
byte-level, so each model assigns a probability to exactly those bytes. A `.csv` file with a
`text` column (the BabyLM Wikipedia sentences) is read by that column; any other file one line
per sentence, empty lines skipped. Not a timed benchmark: it prints the metric, the byte and
token counts and the seconds it took.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cpuinfo import cpu_name  # noqa: E402


def read_lines(path: Path, first: int) -> list[str]:
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if "text" not in (reader.fieldnames or []):
                raise SystemExit(f"{path}: a .csv needs a 'text' column (has {reader.fieldnames})")
            lines = [r["text"].strip() for r in reader]
    else:
        lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    lines = [l for l in lines if l]
    return lines[:first] if first > 0 else lines


def gptbert_logprobs(path: str, lines: list[str]) -> tuple[list[float], int]:
    """Summed log p(line | <s>) per line with our scorer (EMA weights, T=1, fp32)."""
    from gptbert.eval.scoring import SentenceScorer
    from gptbert.pretrained import load

    pre = load(path)
    scorer = SentenceScorer(pre.model, pre.tokenizer, precision="fp32", temperatures=(1.0,))
    scores = scorer.score_texts(lines, "causal")
    return scores.column(1.0).tolist(), int(scores.n_tokens.sum())


@torch.no_grad()
def hf_logprobs(model_dir: str, tokenizer_file: str, lines: list[str], bos: int, batch: int = 64,
                trust_remote_code: bool = False):
    """The same quantity for an HF causal LM: one right-padded row per line, `<s>` first."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    tok = Tokenizer.from_file(tokenizer_file)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 trust_remote_code=trust_remote_code).eval()
    ids = [[bos] + e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [0.0] * len(ids)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        L = max(len(ids[i]) for i in idx)
        x = torch.zeros((len(idx), L), dtype=torch.long)      # (B, L); pad id is irrelevant: masked out
        m = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            m[r, :len(ids[i])] = 1
        lp = torch.log_softmax(model(input_ids=x, attention_mask=m).logits.float(), -1)  # (B, L, V)
        tgt = lp[:, :-1].gather(-1, x[:, 1:, None])[..., 0] * m[:, 1:]                  # position i-1 predicts i
        for r, i in enumerate(idx):
            out[i] = tgt[r].double().sum().item()
    return out, sum(len(i) - 1 for i in ids)


def bits_per_byte(logprobs: list[float], lines: list[str]) -> float:
    n_bytes = sum(len(l.encode("utf-8")) for l in lines)
    return -math.fsum(logprobs) / math.log(2) / n_bytes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, type=Path, help="a .csv with a 'text' column, or one sentence per line")
    ap.add_argument("--first", type=int, default=2000, help="score only the first N non-empty lines (0 = all)")
    ap.add_argument("--gptbert", action="append", default=[], help="a gptbert run, checkpoint or HF export (repeatable)")
    ap.add_argument("--hf", action="append", default=[], help="an HF causal LM folder (repeatable)")
    ap.add_argument("--hf-tokenizer", action="append", default=[],
                    help="the tokenizers JSON of each --hf model, in the same order")
    ap.add_argument("--hf-bos", type=int, default=1, help="the `<s>` id of the --hf tokenizers (the peer script: 1)")
    ap.add_argument("--hf-remote-code", action="store_true",
                    help="trust the --hf folders' own modeling code (needed for a `gptbert export` folder)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    if len(a.hf) != len(a.hf_tokenizer):
        ap.error("give one --hf-tokenizer for every --hf model")
    if a.threads:
        torch.set_num_threads(a.threads)
    lines = read_lines(a.text, a.first)
    if not lines:
        raise SystemExit(f"{a.text}: no text to score")
    n_bytes = sum(len(l.encode("utf-8")) for l in lines)
    print(f"cpu: {cpu_name()}  text: {a.text} ({len(lines)} lines, {n_bytes} bytes)")
    results = []
    jobs = [("gptbert", p, None) for p in a.gptbert] + [("hf", p, t) for p, t in zip(a.hf, a.hf_tokenizer)]
    for kind, path, tok in jobs:
        t0 = time.perf_counter()
        if kind == "gptbert":
            lp, n_tok = gptbert_logprobs(path, lines)
        else:
            lp, n_tok = hf_logprobs(path, tok, lines, a.hf_bos, trust_remote_code=a.hf_remote_code)
        r = {"model": path, "kind": kind, "lines": len(lines), "bytes": n_bytes, "tokens": n_tok,
             "nats_per_token": -math.fsum(lp) / n_tok, "bits_per_byte": bits_per_byte(lp, lines),
             "seconds": round(time.perf_counter() - t0, 1)}
        results.append(r)
        print(f"{kind:8s} {path}: {r['bits_per_byte']:.4f} bits/byte ({r['nats_per_token']:.4f} nats/token, "
              f"{n_tok} tokens, {r['seconds']} s)", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"cpu": cpu_name(), "text": str(a.text), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
