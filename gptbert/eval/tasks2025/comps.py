"""COMPS (Misra et al. 2023, "COMPS: Conceptual Minimal Pair Sentences for testing robust
property knowledge and its inheritance"), BabyLM 2025 version.

A line pairs two subjects with one property phrase:

  {"prefix_acceptable": "A robin", "prefix_unacceptable": "A carp", "property_phrase": "can fly."}

Official rule (`read_files.decode_comps`, `calculate_results_from_pred._calculate_comps_results`):
the good sentence is `prefix_acceptable + " " + property_phrase`, the bad one
uses `prefix_unacceptable`; only the property phrase's tokens are scored (so
the subject is context); accuracy is computed per file and averaged over the
files. The files and their subset names: comps_base -> base, comps_wugs ->
wugs, comps_wugs_dist-before -> wugs_dist_before, comps_wugs_dist-in-between ->
wugs_dist_in_between (the official reader files *any* other name under the
last one; we keep its own name). The predictions file names the whole chosen
sentence, and the official output folder is `comps/comps`.

The COMPS data is not in ../shared/data; point `load_comps` at a folder of the
official files (`evaluation_data/full_eval/comps`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import GPTBertError
from ..scoring import SentenceScorer
from .common import (
    TIE_NOTES,
    ChoiceItem,
    TaskResult,
    accuracy_by_subtask,
    check_tie_rule,
    choose,
    jsonl_files,
    jsonl_records,
    limited,
    need,
    predictions_by_subtask,
    score_choices,
    subset_note,
    text_report,
)

SUBSETS = {"comps_base": "base", "comps_wugs": "wugs", "comps_wugs_dist-before": "wugs_dist_before",
           "comps_wugs_dist-in-between": "wugs_dist_in_between"}
FULL_SIZES = {"base": 49340, "wugs": 13896, "wugs_dist_before": 13896, "wugs_dist_in_between": 13896}
NAMED = {"comps": ("comps/full_eval/comps", FULL_SIZES)}


def load_comps(path: str | Path, limit: int | None = None) -> list[ChoiceItem]:
    """Pairs of every .jsonl file of `path` (a folder or one file); limit = first N per subset."""
    items: list[ChoiceItem] = []
    for f in jsonl_files(Path(path), "COMPS"):
        subset = SUBSETS.get(f.stem, f.stem)
        for lineno, rec in jsonl_records(f):
            where = f"{f}:{lineno}"
            good = need(rec, "prefix_acceptable", str, where)
            bad = need(rec, "prefix_unacceptable", str, where)
            phrase = need(rec, "property_phrase", str, where)
            texts = [f"{good} {phrase}", f"{bad} {phrase}"]
            items.append(ChoiceItem(subset, texts, [len(good) + 1, len(bad) + 1], texts))
    if not items:
        raise GPTBertError(f"{path}: no COMPS pairs (all files are empty)")
    return limited(items, limit, lambda it: it.subtask)


def evaluate_comps(scorer: SentenceScorer, items: list[ChoiceItem], mode: str, *, name: str = "comps",
                   ties: str = "wrong", temperature: float = 1.0, limit: int | None = None) -> TaskResult:
    """Accuracy per file (subset) and their mean (%)."""
    check_tie_rule(ties)
    scores = score_choices(scorer, items, mode, temperature, desc=name)  # (n, 2)
    chosen = choose(scores, ties)
    subsets = accuracy_by_subtask(items, chosen == 0)
    accs = {k: v["accuracy"] for k, v in subsets.items()}
    summary = {
        "task": name, "mode": mode, "metric": "accuracy (%)", "temperature": temperature, "ties": ties,
        "ties_note": TIE_NOTES[ties], "score": float(np.mean(list(accs.values()))), "n_items": len(items),
        "n_ties": int(np.sum(scores[:, 0] == scores[:, 1])), "subsets": subsets,
        **subset_note(limit, {k: v["n"] for k, v in subsets.items()}, FULL_SIZES if name == "comps" else None),
    }
    return TaskResult(name, mode, summary, predictions_by_subtask(items, chosen), official_dir="comps/comps",
                      report=text_report("ACCURACY", temperature, accs, summary["score"]))
