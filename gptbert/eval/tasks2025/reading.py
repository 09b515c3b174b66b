"""Reading times from surprisal (de Varda, Marelli & Amenta 2023, "Cloze probability,
predictability ratings, and computational estimates for 205 English sentences"), BabyLM 2025 version.

Data: one CSV row per target word (1,726 words of 205 sentences) with `item`
(the sentence up to the word), `word`, baseline predictors (`Subtlex_log10`
frequency, `length`, `context_length`), the previous word (`prev_item`,
`prev_word`, `prev_length`; empty for the sentence's first scored word), four
eye-tracking measures and self-paced reading times.

Surprisal (official `reading/run.py`, `evaluation_functions.get_p2*`), in nats:
  causal  -log p(word | <s> item): the word's tokens (the word tokenized on its own)
          after the item's tokens, summed over the word's tokens.
  mntp    GPT-BERT's masked way (Samuel 2024): `<s> item w_1..w_{j-1} <mask> <mask> <mask>`
          with bidirectional attention, token w_j read at the position before the
          first mask (mntp reads row i-1 for token i); summed over j.
  fused   causal + mntp (not an official backend).
  prefix  `<s> item` bidirectional, the word causal (not an official backend).
The official code appends each decoded sub-word to the item *string* and
re-tokenizes; we append token ids, which is what that aims at and the same
whenever decoding and re-encoding round-trip. An empty `item` is read, as
pandas + `fillna("None")` do there, as the literal text "None".

Scores (official `collate_preds._calculate_reading_results`): for each measure an
OLS with the baseline terms is fitted with and without surprisal on the rows
where all its variables are present; the score is the share of the variance
the baseline leaves that surprisal explains, (R2_model - R2_base) / (1 - R2_base) x 100.
  eye tracking   mean over RTfirstfix, RTfirstpass, RTgopast, RTrightbound of that share;
                 baseline: Subtlex_log10, length, context_length and their pairwise products.
  self-paced     self_paced_reading_time with a 1-word spillover: the baseline adds
                 prev_length and the previous word's surprisal, with all pairwise products.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import GPTBertError, input_error
from ...tokenizer import BOS_ID, MASK_ID
from ..scoring import SentenceScorer, Row, run_rows, token_statistics
from .common import TaskResult, subset_note
from .stats import design_matrix, ols_r2, pairwise_terms

EYE_TRACKING = ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")
SELF_PACED = "self_paced_reading_time"
BASELINE = ("Subtlex_log10", "length", "context_length")
SPILLOVER = BASELINE + ("prev_length", "prev_pred")
NUMERIC = BASELINE + ("prev_length",) + EYE_TRACKING + (SELF_PACED,)
SIZE = 1726
NAMED = {"reading": "reading/full_eval/reading/reading_data.csv"}
N_MASKS = 3  # official --number_of_mask_tokens_to_append


@dataclass
class ReadingData:
    items: list[str]  # context before the word ("None" when empty, as the official code reads it)
    words: list[str]
    prev_items: list[str | None]  # None where the row has no previous word
    prev_words: list[str | None]
    columns: dict[str, np.ndarray]  # NUMERIC columns, float64, NaN where empty

    def __len__(self) -> int:
        return len(self.words)


def load_reading(path: str | Path, limit: int | None = None) -> ReadingData:
    """Read `reading_data.csv` (or the folder holding it); limit = the first N rows."""
    path = Path(path)
    if path.is_dir():
        path = path / "reading_data.csv"
    try:
        f = open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise input_error(path, f"cannot be read ({e.strerror})") from None
    with f:
        reader = csv.DictReader(f)
        need = ("item", "word", "prev_item", "prev_word") + NUMERIC
        missing = [k for k in need if k not in (reader.fieldnames or [])]
        if missing:
            raise input_error(path, f"missing column '{missing[0]}' (the reading CSV needs {', '.join(need)})")
        rows = []
        for lineno, rec in enumerate(reader, start=2):
            if limit is not None and len(rows) >= limit:
                break
            if not rec["word"]:
                raise GPTBertError(f"{path}:{lineno}: empty 'word'")
            rows.append((lineno, rec))
    if not rows:
        raise input_error(path, "no rows")

    def num(lineno, rec, k):
        v = rec[k].strip()
        if v in ("", "NA", "NaN", "nan"):
            return math.nan
        try:
            return float(v)
        except ValueError:
            raise GPTBertError(f"{path}:{lineno}: column '{k}' is not a number ({v!r})") from None

    columns = {k: np.array([num(n, r, k) for n, r in rows]) for k in NUMERIC}
    has_prev = [bool(r["prev_item"]) for _, r in rows]
    return ReadingData(items=[r["item"] or "None" for _, r in rows], words=[r["word"] for _, r in rows],
                       prev_items=[r["prev_item"] if h else None for (_, r), h in zip(rows, has_prev)],
                       prev_words=[r["prev_word"] if h else None for (_, r), h in zip(rows, has_prev)],
                       columns=columns)


# ---------------------------------------------------------------------------
# Surprisal


def _mntp_surprisal(scorer: SentenceScorer, contexts: list[str], words: list[str], temperature: float) -> np.ndarray:
    """-sum_j log p(w_j | <s> context w_<j <mask>^3), read at the position before the first mask."""
    tok = scorer.tokenizer
    ctx = [tuple(e.ids) for e in tok.encode_batch(contexts, add_special_tokens=False)]
    wrd = [tuple(e.ids) for e in tok.encode_batch(words, add_special_tokens=False)]
    rows = []
    for i, (c, w) in enumerate(zip(ctx, wrd)):
        for j, t in enumerate(w):
            ids = [BOS_ID, *c, *w[:j]] + [MASK_ID] * N_MASKS
            rows.append(Row(i, ids, [len(c) + j], [t]))  # row index of the last real token
    out = torch.zeros(len(words), dtype=torch.float64)
    for owners, logits, targets in run_rows(scorer.eval_model, rows, "mntp", scorer.max_tokens,
                                            progress=scorer.progress, desc="reading [mntp]"):
        lp, _ = token_statistics(logits, targets, (temperature,))
        out.index_add_(0, owners, lp[:, 0].double().cpu())
    return -out.numpy()


def surprisal(scorer: SentenceScorer, contexts: list[str], words: list[str], mode: str,
              temperature: float = 1.0) -> np.ndarray:
    """(n,) surprisal in nats of each word after its context (see the module docstring)."""
    if mode == "mntp":
        memo = getattr(scorer, "memo", None)  # a MemoScorer keeps it for fused
        if memo is None:
            return _mntp_surprisal(scorer, contexts, words, temperature)
        key = ("reading-mntp", hashlib.sha1(repr((contexts, words, temperature)).encode()).digest())
        if key not in memo:
            memo[key] = _mntp_surprisal(scorer, contexts, words, temperature)
        return memo[key]
    if mode == "fused":
        return (surprisal(scorer, contexts, words, "causal", temperature)
                + surprisal(scorer, contexts, words, "mntp", temperature))
    if mode not in ("causal", "prefix"):
        raise GPTBertError(f"unknown scoring mode '{mode}' for reading (causal, mntp, fused, prefix)")
    return -scorer.score_texts(words, mode, contexts, desc="reading").column(temperature)


# ---------------------------------------------------------------------------
# Regression scores


def explained_share(y: np.ndarray, columns: dict[str, np.ndarray], base_terms: list[str]) -> dict:
    """OLS of y on the baseline terms, and on them plus `pred`, each on the rows where all its
    variables are present (as `dropna` does there): both R2 and the share
    (R2_model - R2_base) / (1 - R2_base) x 100."""
    out = {}
    for key, terms in (("base", base_terms), ("model", base_terms + ["pred"])):
        names = sorted({n for t in terms for n in t.split(":")})
        keep = ~np.isnan(y)
        for n in names:
            keep &= ~np.isnan(columns[n])
        out[key] = ols_r2(y[keep], design_matrix({n: columns[n][keep] for n in names}, terms))
        out[f"n_{key}"] = int(keep.sum())
    n_params = 2 + len(base_terms)  # intercept, the terms, pred
    left = 1.0 - out["base"]
    # too few rows to fit (a --limit run) or a baseline that explains everything: undefined
    score = 100.0 * (out["model"] - out["base"]) / left if out["n_model"] > n_params and left > 0 else math.nan
    return {"n": out["n_model"], "r2_base": out["base"], "r2_model": out["model"], "score": score}


def reading_scores(data: ReadingData, pred: np.ndarray, prev_pred: np.ndarray) -> dict:
    """Eye-tracking and self-paced reading scores for given surprisals."""
    cols = dict(data.columns, pred=np.asarray(pred, dtype=np.float64),
                prev_pred=np.asarray(prev_pred, dtype=np.float64))
    eye = {m: explained_share(cols[m], cols, pairwise_terms(BASELINE)) for m in EYE_TRACKING}
    spr = explained_share(cols[SELF_PACED], cols, pairwise_terms(SPILLOVER))
    return {"eye_tracking": float(np.mean([v["score"] for v in eye.values()])), "self_paced_reading": spr["score"],
            "measures": {**eye, SELF_PACED: spr}}


def evaluate_reading(scorer: SentenceScorer, data: ReadingData, mode: str, *, name: str = "reading",
                     temperature: float = 1.0, limit: int | None = None) -> TaskResult:
    """Surprisal of every word (and of the previous word), then the two reading scores."""
    pred = surprisal(scorer, data.items, data.words, mode, temperature)
    has_prev = [i for i, p in enumerate(data.prev_items) if p is not None]
    prev_pred = np.full(len(data), np.nan)
    if has_prev:
        prev_pred[has_prev] = surprisal(scorer, [data.prev_items[i] for i in has_prev],
                                        [data.prev_words[i] for i in has_prev], mode, temperature)
    scores = reading_scores(data, pred, prev_pred)
    summary = {"task": name, "mode": mode, "metric": "% of the baseline's unexplained variance explained by surprisal",
               "temperature": temperature, "score": scores["eye_tracking"], **scores, "n_items": len(data),
               "mean_surprisal": float(np.mean(pred)), **subset_note(limit, {name: len(data)}, SIZE)}
    preds = [{"id": i, "pred": float(p), "prev_pred": float(q)} for i, (p, q) in enumerate(zip(pred, prev_pred))]
    report = (f"EYE TRACKING SCORE: {scores['eye_tracking']:.2f}\n"
              f"SELF-PACED READING SCORE: {scores['self_paced_reading']:.2f}\n")
    return TaskResult(name, mode, summary, {"reading": {"predictions": preds}}, official_dir="reading",
                      report=report, report_file="report.txt")
