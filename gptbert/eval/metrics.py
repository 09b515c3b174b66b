"""Classification metrics in numpy (no scikit-learn needed) and the paper's GLUE average.

All functions take integer label arrays (gold first, like scikit-learn) and
return plain floats in [0, 1] (MCC in [-1, 1]). Degenerate cases follow
scikit-learn: F1 is 0 when there are no true positives, MCC is 0 when any
marginal of the confusion matrix is empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred have different lengths ({t.size} vs {p.size})")
    if t.size == 0:
        raise ValueError("no predictions to score")
    return t, p


def accuracy(y_true, y_pred) -> float:
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(t == p))


def f1_binary(y_true, y_pred, positive: int = 1) -> float:
    """F1 of the positive class: 2 TP / (2 TP + FP + FN)."""
    t, p = _arrays(y_true, y_pred)
    tp = int(np.sum((p == positive) & (t == positive)))
    fp = int(np.sum((p == positive) & (t != positive)))
    fn = int(np.sum((p != positive) & (t == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    t, p = _arrays(y_true, y_pred)
    k = int(max(t.max(), p.max()) + 1) if n_classes is None else n_classes
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def matthews_corrcoef(y_true, y_pred) -> float:
    """Matthews correlation coefficient (multi-class form, = the usual binary MCC for 2 classes)."""
    cm = confusion_matrix(y_true, y_pred).astype(np.float64)
    t_sum = cm.sum(axis=1)  # true counts per class
    p_sum = cm.sum(axis=0)  # predicted counts per class
    n = cm.sum()
    correct = np.trace(cm)
    cov_tp = correct * n - np.dot(t_sum, p_sum)
    cov_pp = n * n - np.dot(p_sum, p_sum)
    cov_tt = n * n - np.dot(t_sum, t_sum)
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


METRICS = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef}

# The 11 numbers the paper averages into its GLUE score (Table 7), with each task's metric.
GLUE_SCORE_TASKS: dict[str, str] = {
    "cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "qqp": "f1", "mnli": "accuracy", "mnli-mm": "accuracy",
    "qnli": "accuracy", "rte": "accuracy", "boolq": "accuracy", "multirc": "accuracy", "wsc": "accuracy",
}


def glue_score(results: Mapping[str, float | None], tasks: Sequence[str] = tuple(GLUE_SCORE_TASKS)) -> dict:
    """Unweighted mean of the per-task numbers, in percent (MCC x 100), as the paper averages them.

    results: task -> the task's metric in percent (None or absent = unavailable).
    Returns {"score": mean over the available ones, "n_available", "n_tasks",
    "missing": [...], "complete": all 11 present}.
    """
    have = {t: results[t] for t in tasks if results.get(t) is not None}
    missing = [t for t in tasks if t not in have]
    score = float(np.mean(list(have.values()))) if have else None
    return {"score": score, "n_available": len(have), "n_tasks": len(tasks), "missing": missing,
            "complete": not missing}
