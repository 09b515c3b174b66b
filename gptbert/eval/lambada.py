"""LAMBADA: predict the last word of a passage (paper section 4.2, ratio study).

Data: jsonl lines {"prompt": "... {answer}.", "answer": "word"} (the GPT-BERT
authors' conversion of the detokenized OpenAI test set, 5,153 passages).
The text before `{answer}` is the context; what follows it (usually
punctuation) is the ending.

Modes (all read the prediction of answer token j at the position before it,
the MNTP shift):
  causal  `<s> context answer`, causal mask.
  mntp    "masked": `<s> context <mask>*k ending`, k = the gold answer's
          token count, full bidirectional attention; all k tokens are
          predicted at once (the paper's masked LAMBADA).
  prefix  `<s> context` bidirectional, the answer causal.

Metrics (as in the authors' evaluation script):
  accuracy        the argmax tokens, decoded, equal the answer (exact match)
  token_accuracy  every argmax token equals the gold token
  perplexity      exp(mean over passages of the mean per-token NLL of the answer)
  word_perplexity exp(mean over passages of the answer's total NLL)
                  (lm-eval-harness's LAMBADA perplexity; each answer is one word)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import GPTBertError
from ..io import read_jsonl
from ..tokenizer import BOS_ID, MASK_ID
from .forward import EvalModel
from .scoring import Row, run_rows

LAMBADA_MODES = ("causal", "mntp", "prefix")


@dataclass
class LambadaItem:
    context: str
    answer: str
    ending: str


def load_lambada(path: str | Path, limit: int | None = None) -> list[LambadaItem]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise GPTBertError(f"{path}: empty task folder (no lambada .jsonl file)")
        path = files[0]
    if not path.is_file():
        raise GPTBertError(f"{path}: LAMBADA file does not exist")
    items: list[LambadaItem] = []
    for lineno, rec in read_jsonl(path):
        for k in ("prompt", "answer"):
            if not isinstance(rec.get(k), str):
                raise GPTBertError(f"{path}:{lineno}: missing field '{k}' (a LAMBADA line needs prompt and answer)")
        if "{answer}" not in rec["prompt"]:
            raise GPTBertError(f"{path}:{lineno}: prompt has no '{{answer}}' placeholder")
        before, after = rec["prompt"].split("{answer}", 1)
        items.append(LambadaItem(before.strip(), rec["answer"].strip(), after.strip()))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise GPTBertError(f"{path}: no LAMBADA passages")
    return items


def _encode(tok, item: LambadaItem) -> tuple[list[int], list[int], list[int]]:
    ctx = tok.encode(item.context, add_special_tokens=False).ids
    ans = tok.encode(item.answer, add_special_tokens=False).ids
    ending: list[int] = []
    if item.ending:
        joined = tok.encode(item.answer + item.ending, add_special_tokens=False).ids
        # The ending is glued to the answer in the text ("signs."): take its tokens from the joint encoding.
        ending = joined[len(ans):] if joined[: len(ans)] == ans else tok.encode(item.ending, add_special_tokens=False).ids
    return ctx, ans, ending


@torch.no_grad()
def evaluate_lambada(model, tokenizer, items: list[LambadaItem], mode: str, *, precision: str = "fp32",
                     max_tokens: int = 8192, progress: bool = False) -> dict:
    """Accuracy and perplexity of the last word in one mode (see the module docstring)."""
    if mode not in LAMBADA_MODES:
        raise ValueError(f"LAMBADA mode must be one of {LAMBADA_MODES}, got {mode!r}")
    em = model if isinstance(model, EvalModel) else EvalModel(model, precision)
    rows: list[Row] = []
    golds: list[list[int]] = []
    for i, item in enumerate(items):
        ctx, ans, ending = _encode(tokenizer, item)
        golds.append(ans)
        c = len(ctx)
        positions = [c + j for j in range(len(ans))]
        if mode == "mntp":
            rows.append(Row(i, [BOS_ID, *ctx, *([MASK_ID] * len(ans)), *ending], positions, list(ans)))
        else:
            rows.append(Row(i, [BOS_ID, *ctx, *ans], positions, list(ans),
                             prefix_len=1 + c if mode == "prefix" else 0))
    n = len(items)
    nll = torch.zeros(n, dtype=torch.float64)
    pred: list[list[int]] = [[] for _ in range(n)]
    for owners, logits, targets in run_rows(em, rows, mode, max_tokens, progress=progress, desc=f"lambada [{mode}]"):
        lp = torch.log_softmax(logits.float(), dim=-1)
        tok_lp = lp.gather(-1, targets[:, None]).squeeze(-1).double().cpu()
        nll.index_add_(0, owners, -tok_lp)
        arg = logits.argmax(-1).cpu().tolist()
        for o, a in zip(owners.tolist(), arg):  # rows keep their positions in order
            pred[o].append(a)
    lengths = torch.tensor([len(g) for g in golds], dtype=torch.float64)
    correct = [tokenizer.decode(p).strip() == item.answer for p, item in zip(pred, items)]
    token_correct = [p == g for p, g in zip(pred, golds)]
    mean_nll = (nll / lengths).mean().item()
    return {
        "mode": mode,
        "n": n,
        "accuracy": 100.0 * sum(correct) / n,
        "token_accuracy": 100.0 * sum(token_correct) / n,
        "perplexity": math.exp(mean_nll),
        "word_perplexity": math.exp(nll.mean().item()),
        "mean_answer_tokens": lengths.mean().item(),
    }
