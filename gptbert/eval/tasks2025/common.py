"""What the BabyLM 2025 tasks share: data paths, JSONL reading, the official token split,
multiple-choice scoring with an explicit tie rule, and the result / official-output record.

The official token split. The 2025 pipeline (`sentence_zero_shot/dataset.py`)
tokenizes the *whole* sentence (prefix + completion) with character offsets and
scores every token whose span ends after the completion's first character. With
our tokenizer (a space is prepended to every word) this makes " the" of
"... contains the hat." a completion token although its space belongs to the
prefix. `split_at_chars` reproduces that rule from the tokenizer's offsets, so
context + target are exactly the tokens of the whole sentence.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import GPTBertError, input_error
from ...paths import babylm2025_dir
from ..report import write_json
from ..scoring import TIE_RULES, Scores, SentenceScorer

TIE_NOTES = {
    "wrong": "an item whose correct answer only ties for the best score counts as wrong (gptbert default)",
    "correct": "a tie for the best score counts as correct (the official BabyLM 2025 rule: torch.max keeps the "
               "first, correct, candidate)",
}


def default_data_dir() -> Path:
    """`<data root>/babylm2025` (gptbert.paths: $GPTBERT_DATA, else ../shared/data)."""
    return babylm2025_dir()


def check_tie_rule(ties: str) -> str:
    if ties not in TIE_RULES:
        raise GPTBertError(f"unknown tie rule '{ties}' (choose from {', '.join(TIE_RULES)})")
    return ties


# ---------------------------------------------------------------------------
# Reading


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-empty line; one-line errors naming file and line."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise input_error(path, f"cannot be read ({e.strerror})") from None
    with f:
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise GPTBertError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise GPTBertError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
                yield lineno, rec
        except UnicodeDecodeError as e:
            raise input_error(path, f"not UTF-8 text (byte {e.start})") from None


def need(rec: dict, key: str, kind: type, where: str):
    """rec[key], checked to be of `kind` (a float field also accepts an int)."""
    v = rec.get(key)
    ok = isinstance(v, kind) or (kind is float and isinstance(v, int) and not isinstance(v, bool))
    if not ok:
        raise GPTBertError(f"{where}: missing or invalid field '{key}' (expected {kind.__name__})")
    return v


def jsonl_files(path: Path, what: str) -> list[Path]:
    """The .jsonl files of a folder (sorted), or the file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise input_error(path, f"no such {what} folder or file")
    files = sorted(p for p in path.iterdir() if p.suffix == ".jsonl" and p.is_file())
    if not files:
        raise input_error(path, f"no .jsonl files of {what} items")
    return files


# ---------------------------------------------------------------------------
# Scoring


def split_at_chars(tokenizer, texts: Sequence[str],
                   starts: Sequence[int]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(context ids, target ids) per text: the target is every token of the whole text whose
    character span ends after `start` (the official rule; see the module docstring)."""
    encs = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    out = []
    for enc, start in zip(encs, starts):
        ids = enc.ids
        cut = next((i for i, (_, end) in enumerate(enc.offsets) if end > start), len(ids))
        out.append((tuple(ids[:cut]), tuple(ids[cut:])))
    return out


@dataclass
class ChoiceItem:
    """One multiple-choice item: alternative k is the text texts[k], scored from character starts[k]."""

    subtask: str  # the official UID, the key of the predictions file
    texts: list[str]
    starts: list[int]
    preds: list[str]  # what the official predictions file names as the choice ("pred")
    extra: dict = field(default_factory=dict)


def score_choices(scorer: SentenceScorer, items: Sequence[ChoiceItem], mode: str, temperature: float = 1.0,
                  desc: str | None = None) -> np.ndarray:
    """(n_items, n_alternatives) summed log-probabilities of the scored tokens (float64)."""
    k = len(items[0].texts)
    flat_texts = [t for it in items for t in it.texts]
    flat_starts = [s for it in items for s in it.starts]
    pairs = split_at_chars(scorer.tokenizer, flat_texts, flat_starts)
    scores = scorer.score(pairs, mode, desc=desc)
    return scores.column(temperature).reshape(len(items), k)


class MemoScorer(SentenceScorer):
    """A SentenceScorer that remembers what it scored, so that a task run in several modes
    gets fused = causal + mntp for free (the sum the scorer would compute anyway)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memo: dict[tuple[str, bytes], Scores] = {}

    def score(self, items, mode: str, desc: str | None = None) -> Scores:
        digest = hashlib.sha1(repr([(tuple(c), tuple(t)) for c, t in items]).encode()).digest()
        if (mode, digest) not in self.memo:
            parts = [self.memo.get((m, digest)) for m in ("causal", "mntp")]
            if mode == "fused" and all(p is not None for p in parts):
                self.memo[mode, digest] = parts[0] + parts[1]
            else:
                self.memo[mode, digest] = super().score(items, mode, desc)
        return self.memo[mode, digest]


def with_trie_rows(scorer: SentenceScorer, row_tokens: int) -> SentenceScorer:
    """The same scorer (and memo) with prefix-tree rows of at least `row_tokens` nodes (causal
    mode). Entity tracking's five options share a ~130-token prefix: rows that hold whole items
    score it once per item instead of once per option (2.5x faster than 64-node rows)."""
    if scorer.trie_row_tokens >= row_tokens:
        return scorer
    out = copy.copy(scorer)
    out.trie_row_tokens = row_tokens
    out.max_tokens = max(scorer.max_tokens, row_tokens)
    return out


def choose(scores: np.ndarray, ties: str) -> np.ndarray:
    """Index of the chosen alternative per row (alternative 0 is the correct one).

    ties="correct": the first best (torch.max, as the official scorer). ties="wrong": the same,
    except that when alternative 0 only ties for the best, the first other best is chosen.
    """
    check_tie_rule(ties)
    idx = np.argmax(scores, axis=1)
    if ties == "wrong" and scores.shape[1] > 1:
        others = scores[:, 1:]
        tied = (idx == 0) & (others.max(axis=1) == scores[:, 0])
        idx = np.where(tied, 1 + np.argmax(others, axis=1), idx)
    return idx


def limited(items: list, limit: int | None, key) -> list:
    """The first `limit` items of every group (key(item) -> group), in the original order."""
    if limit is None:
        return items
    seen: dict = {}
    out = []
    for it in items:
        g = key(it)
        if seen.get(g, 0) < limit:
            out.append(it)
            seen[g] = seen.get(g, 0) + 1
    return out


# ---------------------------------------------------------------------------
# Results and the official output


@dataclass
class TaskResult:
    """One task in one mode: JSON-ready numbers, and what the official 2025 pipeline would write.

    official_dir is the folder under `results/<model>/<revision>/zero_shot/<backend>/` that
    `collate_preds.py` reads (e.g. "entity_tracking/entity_tracking_fast", "reading", "AoA_word").
    """

    task: str
    mode: str
    summary: dict
    predictions: dict
    official_dir: str
    official_file: str = "predictions.json"
    report: str = ""  # the official run's human-readable report, if it writes one
    report_file: str = "best_temperature_report.txt"


def write_text(path: Path, text: str) -> None:
    """Write text atomically (tmp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_official(result: TaskResult, folder: str | Path) -> Path:
    """Write one task's official-format output into `folder` (the leaf the official run would
    write: pass `zero_shot_dir / result.official_dir`). Returns the predictions file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / result.official_file
    write_json(out, result.predictions)
    if result.report:
        write_text(folder / result.report_file, result.report)
    return out


def official_backend(mode: str) -> str | None:
    """The 2025 pipeline's --backend that scores as `mode` does for a GPT-BERT exported with the
    raw MNTP layout (causal -> causal, mntp -> mntp); fused and prefix have none."""
    return {"causal": "causal", "mntp": "mntp"}.get(mode)


def subset_note(limit: int | None, counts: dict[str, int], official: dict[str, int] | int | None) -> dict:
    """Whether the numbers cover the whole official data ("complete"), and the limit used."""
    if official is None:
        complete = limit is None
    elif isinstance(official, int):
        complete = sum(counts.values()) == official
    else:
        complete = all(counts.get(k) == v for k, v in official.items()) and set(counts) <= set(official)
    return {"limit": limit, "complete": bool(complete)}


def accuracy_by_subtask(items: Sequence[ChoiceItem], correct: np.ndarray) -> dict[str, dict]:
    """{subtask: {"n", "correct", "accuracy" (%)}} in the order the subtasks first appear."""
    out: dict[str, dict] = {}
    for it, c in zip(items, correct):
        d = out.setdefault(it.subtask, {"n": 0, "correct": 0})
        d["n"] += 1
        d["correct"] += int(bool(c))
    for d in out.values():
        d["accuracy"] = 100.0 * d["correct"] / d["n"]
    return out


def predictions_by_subtask(items: Sequence[ChoiceItem], chosen: np.ndarray, extra=None) -> dict[str, dict]:
    """The official predictions file: {uid: {"predictions": [{"id": "<uid>_<i>", "pred": ..., **extra}]}},
    i counting the items of each uid in data order (as `compute_results.rank_and_evaluate` does)."""
    out: dict[str, dict] = {}
    for n, (it, k) in enumerate(zip(items, chosen)):
        preds = out.setdefault(it.subtask, {"predictions": []})["predictions"]
        entry = {"id": f"{it.subtask}_{len(preds)}", "pred": it.preds[int(k)]}
        if extra is not None:
            entry.update(extra(n))
        preds.append(entry)
    return out


def text_report(metric: str, temperature: float, groups: dict[str, float], average: float) -> str:
    """A plain-text report in the layout of the official best_temperature_report.txt."""
    lines = [f"TEMPERATURE: {temperature:.2f}", "", f"### UID {metric}"]
    lines += [f"{k}: {v:.2f}" for k, v in groups.items()]
    lines += ["", f"### AVERAGE {metric}", f"{average:.2f}", ""]
    return "\n".join(lines)
