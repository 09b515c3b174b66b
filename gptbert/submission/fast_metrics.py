"""The fast metrics (fast_eval_results), as the official collation computes them."""

from __future__ import annotations

import numpy as np

from ..errors import GPTBertError
from ..eval.minimal_pairs import load_task
from ..eval.tasks2025.entity_tracking import load_entity_tracking
from ..eval.tasks2025.reading import ReadingData, load_reading, reading_scores
from ..eval.tasks2025.stats import spearman
from ..eval.tasks2025.wug import load_wug
from .evaluator import DataPaths


def _accuracy_by_key(preds: dict, gold: dict[str, list[str]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, v in preds.items():
        answers = gold.get(key)
        if answers is None:
            out[key] = None
            continue
        pairs = list(zip(v["predictions"], answers))
        ok = sum(1 for p, g in pairs if (p["pred"].strip() if isinstance(p["pred"], str) else p["pred"]) == g.strip())
        out[key] = ok / len(pairs) if pairs else None
    return out


class FastGold:
    """The fast sets' answers (what the official collation compares predictions with), read once."""

    def __init__(self, data: DataPaths, password: str):
        self.data, self.password = data, password
        self._cache: dict[str, object] = {}

    def get(self, task: str):
        if task not in self._cache:
            try:
                self._cache[task] = self._load(task)
            except GPTBertError as e:
                self._cache[task] = e
        got = self._cache[task]
        if isinstance(got, GPTBertError):
            raise got
        return got

    def _load(self, task: str):
        if task in ("blimp_fast", "supplement_fast", "ewok_fast"):
            t = load_task(task, self.data.eval_dir, password=self.password)
            gold: dict[str, list[str]] = {}
            for p in t.pairs:  # BLiMP / supplement: sentence_good; EWoK: Target1
                gold.setdefault(p.subtask, []).append(p.good)
            return gold
        if task == "entity_tracking_fast":
            gold = {}
            for it in load_entity_tracking(self.data.where(task)):
                if it.subtask.startswith("regular_"):  # the official reads the `regular` file only
                    gold.setdefault(it.subtask, []).append(it.preds[0])
            return gold
        if task in ("wug_adj", "wug_past"):
            return [it.extra["ratio"] for it in load_wug(self.data.where(task), task)]
        if task == "reading":
            return load_reading(self.data.where(task))
        raise KeyError(task)


def fast_metric(task: str, preds: dict, gold: FastGold):
    """One revision's entry of fast_eval_results for one task (None when it cannot be computed)."""
    if task in ("blimp_fast", "supplement_fast", "ewok_fast", "entity_tracking_fast"):
        return _accuracy_by_key(preds, gold.get(task))
    if task in ("wug_adj", "wug_past"):
        ratios = gold.get(task)
        out = {}
        for key, v in preds.items():
            probs = [float(p["prob"]) for p in v["predictions"]]
            n = min(len(probs), len(ratios))
            out[key] = float(spearman(probs[:n], ratios[:n])) if n >= 2 else None  # NaN if constant, as scipy
        return out
    if task == "reading":
        data: ReadingData = gold.get(task)
        rows = preds.get("reading", {}).get("predictions", [])
        n = min(len(rows), len(data))
        if n == 0:
            return None
        sub = ReadingData(data.items[:n], data.words[:n], data.prev_items[:n], data.prev_words[:n],
                          {k: v[:n] for k, v in data.columns.items()})
        pred = np.array([_num(r["pred"]) for r in rows[:n]])
        prev = np.array([_num(r["prev_pred"]) for r in rows[:n]])
        s = reading_scores(sub, pred, prev)
        return {"spr": _frac(s["self_paced_reading"]), "rt": _frac(s["eye_tracking"])}
    raise KeyError(task)


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _frac(v: float) -> float:
    return float(v) / 100.0  # ours are x 100, the official collation's are fractions (NaN stays NaN)
