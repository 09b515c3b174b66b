"""Entity tracking (Kim & Schuster 2023, "Entity Tracking in Language Models"), BabyLM 2025 version.

An item describes the contents of seven boxes, applies `numops` operations
(move / remove / put), and asks what one box contains:

  input_prefix  "Box 0 contains the beer and the map, ... Box 1 contains "
  options       5 continuations; options[0] is the right one

Official rule (`sentence_zero_shot/read_files.decode_entity_tracking`,
`compute_results.rank_and_evaluate`): every option is scored as the completion
of `input_prefix + option` (the prefix ends with a space, which the option's
first token absorbs; see `common.split_at_chars`), and the item is right when
options[0] scores highest. Accuracy is computed per `<file>_<numops>_ops` subset
(18 subsets for the full task: regular / ambiref / move_contents x 0..5
operations; the fast task is `regular` only), and the task score is the mean
over subsets (`calculate_results_from_pred._calculate_entity_tracking_results`;
`run.py` averages the per-file means instead, which is the same number because
every file has six subsets).
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
    with_trie_rows,
)

# Item counts per subset, as collate_preds.py checks them.
FULL_SIZES = {f"{f}_{k}_ops": n for f, ns in (("regular", (606, 607, 606, 606, 568, 159)),
                                              ("ambiref", (607, 607, 604, 604, 615, 187)),
                                              ("move_contents", (605, 606, 605, 606, 529, 156)))
              for k, n in enumerate(ns)}
FAST_SIZES = {k: v for k, v in FULL_SIZES.items() if k.startswith("regular_")}

# task name -> (folder under the babylm2025 data dir, official sizes)
NAMED = {
    "entity_tracking": ("entity_tracking/full_eval/entity_tracking", FULL_SIZES),
    "entity_tracking_fast": ("entity_tracking/fast_eval/entity_tracking_fast", FAST_SIZES),
}


def load_entity_tracking(path: str | Path, limit: int | None = None) -> list[ChoiceItem]:
    """Items of every .jsonl file of `path` (a folder or one file), in file then line order.

    limit: keep the first `limit` items of every subset (quick runs).
    """
    items: list[ChoiceItem] = []
    n_options = None
    for f in jsonl_files(Path(path), "entity tracking"):
        for lineno, rec in jsonl_records(f):
            where = f"{f}:{lineno}"
            numops = need(rec, "numops", int, where)
            prefix = need(rec, "input_prefix", str, where)
            options = need(rec, "options", list, where)
            if len(options) < 2 or not all(isinstance(o, str) for o in options):
                raise GPTBertError(f"{where}: 'options' must be a list of at least 2 strings")
            if n_options is None:
                n_options = len(options)
            elif len(options) != n_options:
                raise GPTBertError(f"{where}: {len(options)} options, but earlier items have {n_options}")
            items.append(ChoiceItem(f"{f.stem}_{numops}_ops", [prefix + o for o in options],
                                    [len(prefix)] * len(options), list(options)))
    if not items:
        raise GPTBertError(f"{path}: no entity tracking items (all files are empty)")
    return limited(items, limit, lambda it: it.subtask)


def evaluate_entity_tracking(scorer: SentenceScorer, items: list[ChoiceItem], mode: str, *,
                             name: str = "entity_tracking", dataset: str | None = None, ties: str = "wrong",
                             temperature: float = 1.0, limit: int | None = None) -> TaskResult:
    """Accuracy per subset and their mean (%); official predictions name the chosen option.

    dataset: the official data folder name ("entity_tracking" or "entity_tracking_fast";
    default `name`), which names the output folder.
    """
    check_tie_rule(ties)
    scores = score_choices(with_trie_rows(scorer, 512), items, mode, temperature, desc=name)  # (n, n_options)
    chosen = choose(scores, ties)
    correct = chosen == 0
    subsets = accuracy_by_subtask(items, correct)
    accs = {k: v["accuracy"] for k, v in subsets.items()}
    files: dict[str, list[float]] = {}
    for k, a in accs.items():
        files.setdefault(k.rsplit("_", 2)[0], []).append(a)
    official = NAMED.get(name, (None, None))[1]
    summary = {
        "task": name, "mode": mode, "metric": "accuracy (%)", "temperature": temperature, "ties": ties,
        "ties_note": TIE_NOTES[ties],
        "score": float(np.mean(list(accs.values()))),
        "n_items": len(items),
        "n_ties": int(np.sum(scores[:, 0] == np.max(scores[:, 1:], axis=1))),
        "subsets": subsets,
        "files": {f: float(np.mean(v)) for f, v in files.items()},
        **subset_note(limit, {k: v["n"] for k, v in subsets.items()}, official),
    }
    dataset = dataset or name
    return TaskResult(name, mode, summary, predictions_by_subtask(items, chosen),
                      official_dir=f"entity_tracking/{dataset}",
                      report=text_report("ACCURACY", temperature, accs, summary["score"]))
