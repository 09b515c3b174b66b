"""Numbers behind issue 13's recipe items, computed from the code (seconds on a CPU; prints only).

  masked share   span_select at the paper's 30% and 15% rates on 126-token chunks (seq_len - 2 at T=128)
  LR schedule    lr_factor at 50 / 70 / 90% of N = 7812 steps (the paper's small run)
  balancing      per-token mask counts and the mean masked run after E epochs over one corpus,
                 plain spans vs count-balanced masking (counts carried across epochs)
  batch ramp     the distinct global batch sizes (rows) of the cpu-quick preset over its schedule

Usage: python bench/recipe_numbers.py [--epochs 270] [--chunks 200]
"""

from __future__ import annotations

import argparse

import numpy as np

from gptbert.config import load_config
from gptbert.data import step_shape
from gptbert.objectives import N_SPECIAL, mask_key, span_select
from gptbert.optim import lr_factor


def masked_share(rate: float, chunks: int, L: int = 126) -> float:
    rng = np.random.default_rng(0)
    tokens = rng.integers(N_SPECIAL, 8192, size=(chunks, L))
    keys = mask_key(1, 0, np.arange(chunks)).astype(np.uint64)
    sel = span_select(tokens, np.full(chunks, L), keys, rate, 3)
    return float(sel.masked.mean())


def mean_run(masked: np.ndarray) -> float:
    """Mean length of the maximal runs of consecutive masked positions, over all rows."""
    m = masked.astype(np.int8)
    starts = (np.diff(np.pad(m, ((0, 0), (1, 0))), axis=1) == 1).sum()
    return float(m.sum() / max(starts, 1))


def balancing(epochs: int, chunks: int, balanced: bool, rate: float = 0.15, L: int = 126) -> dict:
    rng = np.random.default_rng(1)
    tokens = rng.integers(N_SPECIAL, 8192, size=(chunks, L))
    counts = np.zeros((chunks, L), np.int64)
    runs = []
    for e in range(epochs):
        keys = mask_key(7, e, np.arange(chunks)).astype(np.uint64)
        sel = span_select(tokens, np.full(chunks, L), keys, rate, 3, counts if balanced else None)
        counts += sel.masked
        runs.append(mean_run(sel.masked))
    return {"count_min": int(counts.min()), "count_p1": float(np.percentile(counts, 1)),
            "count_p99": float(np.percentile(counts, 99)), "count_max": int(counts.max()),
            "count_mean": float(counts.mean()), "mean_run_last_epochs": float(np.mean(runs[-max(1, epochs // 10):]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=270, help="epochs of the balancing simulation")
    ap.add_argument("--chunks", type=int, default=200, help="126-token chunks in the simulated corpus")
    a = ap.parse_args()
    print("masked share (whole spans):", {r: round(100 * masked_share(r, 4000), 2) for r in (0.30, 0.15)})
    N = 7812
    print(f"lr factor at 50/70/90% of N={N}:", [round(lr_factor(int(f * N), N), 4) for f in (0.5, 0.7, 0.9)])
    for balanced in (False, True):
        print(f"balanced={balanced} after {a.epochs} epochs at 15%:", balancing(a.epochs, a.chunks, balanced))
    cfg = load_config("cpu-quick", {"train.max_steps": 1000})
    rows = [step_shape(s, cfg).rows for s in range(cfg.train.max_steps)]
    print(f"cpu-quick ramp (max_steps 1000): {len(set(rows))} distinct batch sizes, rows {rows[0]} .. {rows[-1]}")


if __name__ == "__main__":
    main()
