"""WUG tests of morphological generalization, BabyLM 2025 version.

  wug_adj   adjective nominalization (Hofmann et al. 2024): 200 nonce adjectives, two
            nouns each ("-ity" first, then "-ness"); `ratio` = share of people choosing "-ity".
  wug_past  past tense (Weissweiler et al. 2023): 50 nonce verbs, three past-tense forms;
            `ratio` = share of people choosing the first.

Official rule (`read_files.decode_wug`, `compute_results.rank_and_evaluate_wug`,
`calculate_results_from_pred._calculate_wug_results`): each alternative is a
whole sentence (the TAB-separated `sentences` field) scored in full (every
token after `<s>`); the model's probability of the first alternative is the
softmax over the alternatives' summed log-probabilities; the score is
Spearman's rho between that probability and the human `ratio` over all items,
x 100. There is no accuracy. The predictions file also names the best-scoring
alternative (the first on ties, as torch.max).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import GPTBertError
from ..scoring import SentenceScorer
from .common import (
    ChoiceItem,
    TaskResult,
    jsonl_files,
    jsonl_records,
    need,
    score_choices,
    subset_note,
)
from .stats import spearman

# task name -> (folder under the babylm2025 data dir, official data folder / file stem, item count)
NAMED = {
    "wug_adj": ("wug_adj_nominalization/full_eval/wug_adj_nominalization", "wug_adj_nominalization", 200),
    "wug_past": ("wug_past_tense/full_eval/wug_past_tense", "wug_past_tense", 50),
}


def load_wug(path: str | Path, task: str, limit: int | None = None) -> list[ChoiceItem]:
    """Items of the .jsonl file(s) of `path`; every item's subtask is the task name (the official UID)."""
    items: list[ChoiceItem] = []
    for f in jsonl_files(Path(path), "WUG"):
        for lineno, rec in jsonl_records(f):
            where = f"{f}:{lineno}"
            sentences = need(rec, "sentences", str, where).split("\t")
            ratio = float(need(rec, "ratio", float, where))
            if len(sentences) < 2:
                raise GPTBertError(f"{where}: 'sentences' must hold at least 2 TAB-separated alternatives")
            if items and len(sentences) != len(items[0].texts):
                n = len(items[0].texts)
                raise GPTBertError(f"{where}: {len(sentences)} alternatives, but earlier items have {n}")
            items.append(ChoiceItem(task, sentences, [0] * len(sentences), sentences, {"ratio": ratio}))
    if not items:
        raise GPTBertError(f"{path}: no WUG items (all files are empty)")
    return items[:limit] if limit is not None else items


def softmax_first(scores: np.ndarray) -> np.ndarray:
    """(n, k) log-probabilities -> (n,) softmax probability of alternative 0 (float64, stable)."""
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 0] / e.sum(axis=1)


def evaluate_wug(scorer: SentenceScorer, items: list[ChoiceItem], mode: str, *, name: str = "wug_adj",
                 temperature: float = 1.0, limit: int | None = None) -> TaskResult:
    """Spearman's rho x 100 of P(first alternative) against the human ratio."""
    scores = score_choices(scorer, items, mode, temperature, desc=name)  # (n, k)
    prob = softmax_first(scores)
    human = np.array([it.extra["ratio"] for it in items])
    rho = spearman(prob, human)
    chosen = np.argmax(scores, axis=1)  # first best, as torch.max
    preds = [{"id": f"{name}_{i}", "pred": it.preds[int(k)], "prob": float(p)}
             for i, (it, k, p) in enumerate(zip(items, chosen, prob))]
    official = NAMED.get(name)
    summary = {
        "task": name, "mode": mode, "metric": "Spearman rho x 100 (P(first alternative) vs human ratio)",
        "temperature": temperature, "score": 100.0 * rho, "n_items": len(items),
        "mean_prob_first": float(prob.mean()), "first_chosen": 100.0 * float(np.mean(chosen == 0)),
        **subset_note(limit, {name: len(items)}, official[2] if official else None),
    }
    dataset = official[1] if official else name
    report = f"TEMPERATURE: {temperature:.2f}\n\n### UID SPEARMAN'S RHO\navg: {100 * rho:.2f}\n"
    return TaskResult(name, mode, summary, {name: {"predictions": preds}}, official_dir=f"{name}/{dataset}",
                      report=report)
