"""Fit a training run into a wall-clock budget (for the CPU quickstart).

The schedules (LR, mask rate, batch ramp, sequence length) are functions of
step / max_steps, so a run must know its length up front. We time a few
forward+backward+LAMB steps of the real model on random tokens, then pick
max_steps so that the whole run's tokens fit the budget. The trainer also gets
the budget as a hard stop, in case the machine slows down.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from .config import RunConfig
from .data import TrainBatches, samples_before, step_shape
from .errors import GPTBertError
from .model import GPTBERT, attention_mask
from .optim import EMA, Lamb, param_groups
from .precision import autocast


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def step_costs(cfg: RunConfig, seq_length: int, rows: int, repeats: int = 3) -> tuple[float, float]:
    """(seconds per token of forward + backward at this row length, seconds of the per-step update).

    The update is what a training step does once whatever its size: gradient clipping, the LAMB
    step, zeroing the gradients and the EMA update. It is timed apart because steps differ in size
    (the batch ramp starts at a quarter batch): for a small model at the ramp's start it is a fifth
    of the step, and folding it into a per-token cost measured on one full micro-batch made the
    quickstart plan 10% more steps than its budget held (2026-12-03, 4 x 192: 659 of 725).
    Medians of `repeats` timings after one warm-up: the minimum picked the machine's fastest
    moment, which a whole run does not see on a shared VM.
    """
    torch.manual_seed(0)
    model = GPTBERT(cfg.model)
    opt = Lamb(param_groups(model, 0.1), lr=1e-3)
    ema = EMA(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    x = torch.randint(16, cfg.model.vocab_size, (rows, seq_length))
    seg = torch.zeros_like(x)
    mask = attention_mask(seg, torch.zeros(rows, dtype=torch.bool))
    positions = torch.arange(0, rows * seq_length, 4)  # ~25% of positions carry a target
    targets = torch.randint(16, cfg.model.vocab_size, (positions.numel(),))
    fwd_bwd, update = [], []
    for _ in range(1 + repeats):
        t0 = time.perf_counter()
        with autocast(torch.device("cpu"), cfg.train.precision):
            logits = model(x, mask, positions)
        torch.nn.functional.cross_entropy(logits.float(), targets).backward()
        t1 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        t2 = time.perf_counter()
        fwd_bwd.append(t1 - t0)
        update.append(t2 - t1)
    return _median(fwd_bwd[1:]) / (rows * seq_length), _median(update[1:])


OVERHEAD = 1.05  # data loading, logging, the target bookkeeping of the real loss: not in the timed step


def steps_for_budget(cfg: RunConfig, seconds: float) -> int:
    """The largest max_steps whose whole run fits in `seconds` (cfg is not changed).

    Each row length of the schedule is timed with the schedule's rows per micro-batch: on a CPU
    the (B, H, T, T) attention work grows faster with T than the FLOP count says, so scaling the
    time of T=128 would overfill the budget. A run of n steps costs the sum over its steps of
    tokens x seconds/token at that step's length, plus n updates.
    """
    rows = cfg.train.micro_batch_size
    T0 = cfg.train.seq_length
    mults = (1, 2, 4) if cfg.train.seq_schedule else (1,)
    costs = {T0 * m: step_costs(cfg, T0 * m, max(1, rows // m)) for m in mults}
    update = _median([u for _, u in costs.values()])
    trial = copy.deepcopy(cfg)

    def cost(n: int) -> float:
        """Seconds of a run of n steps."""
        trial.train.max_steps = n
        total = 0.0
        for s in range(n):
            shape = step_shape(s, trial)
            total += shape.tokens * costs[shape.seq_length][0] + update
        return total * OVERHEAD

    lo, hi = 1, 1
    while cost(hi) < seconds and hi < 10**6:
        lo, hi = hi, hi * 2
    while lo < hi - 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) < seconds else (lo, mid)
    return lo


def steps_for_words(cfg: RunConfig, words_per_token: float) -> int:
    """The smallest max_steps whose schedule reads `cfg.train.max_words` words (cfg is not changed).

    The schedules depend on max_steps (the batch ramp and the row lengths are fractions of the run),
    so the run's tokens are summed for each candidate length; `words_per_token` is what the data
    pipeline delivers (words per row token, measured on the corpus). The trainer still stops at the
    exact word count, which this estimate only has to reach.
    """
    target = cfg.train.max_words
    if target <= 0 or words_per_token <= 0:
        raise ValueError("steps_for_words needs a positive max_words and words_per_token")
    trial = copy.deepcopy(cfg)

    def words(n: int) -> float:
        trial.train.max_steps = n
        return words_per_token * sum(step_shape(s, trial).tokens for s in range(n))

    lo, hi = 0, 1
    while words(hi) < target:
        lo, hi = hi, hi * 2
        if hi > 10**7:
            raise ValueError("max_words is out of reach of 10M steps")
    while lo < hi - 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if words(mid) >= target else (mid, hi)
    return hi


def schedule_words(cfg: RunConfig, chunk_rows: int = 65536) -> int:
    """Exactly the words a run of cfg.train.max_steps steps reads (all ranks together): the rows of
    every step laid out as the data pipeline lays them out, counted with the corpus word table.
    Pure numpy over the token memmap; a few seconds per 100M words."""
    trial = copy.deepcopy(cfg)
    trial.objective.balanced_masking = False  # only the layout is needed
    batches = TrainBatches(trial.train.data, trial)
    if batches.word_table is None:
        raise GPTBertError(f"{trial.train.data}: no word table (word_table.npy or tokenizer.json); "
                           "prepare the corpus again to count words")
    n, total, s = trial.train.max_steps, 0, 0
    while s < n:  # phases of one row length
        T = step_shape(s, trial).seq_length
        e = s + 1
        while e < n and step_shape(e, trial).seq_length == T:
            e += 1
        a, b = samples_before(s, trial), samples_before(e, trial)
        for c in range(a, b, chunk_rows):
            total += int(batches.row_words(batches.layout(np.arange(c, min(b, c + chunk_rows)), T)).sum())
        s = e
    return total


def fit_steps_to_words(cfg: RunConfig, words_per_token: float, max_tries: int = 8) -> int:
    """The max_steps whose schedule reads at least cfg.train.max_words words, checked exactly.

    `steps_for_words` estimates it from an average words-per-token ratio, which can fall a few
    steps short (seen: 2,988,739 of a 3M budget); a short schedule would end before the budget, and
    the last milestone (chck_100M of a strict-small run) would never be written. So the estimate
    is counted exactly (`schedule_words`) and lengthened until it reaches the budget, then
    shortened by one step while that still reaches it. The trainer stops at the exact count.
    """
    target = cfg.train.max_words
    trial = copy.deepcopy(cfg)
    n = steps_for_words(cfg, words_per_token)

    def words(k: int) -> int:
        trial.train.max_steps = k
        return schedule_words(trial)

    w = words(n)
    for _ in range(max_tries):
        if w >= target:
            break
        n += max(1, math.ceil((target - w) / max(w / n, 1e-9)))
        w = words(n)
    else:
        raise GPTBertError(f"max_words {target:,}: no schedule length found that reads it")
    for _ in range(max_tries):
        if n <= 1 or words(n - 1) < target:
            break
        n -= 1
    return n


def words_per_row_token(cfg: RunConfig, probe_steps: int = 1000, rows: int = 256) -> float:
    """Words per token of the training rows as the data pipeline builds them (padding, `<s>` per
    chunk and top-up chunks included), measured on `rows` rows of each row length of the schedule."""
    trial = copy.deepcopy(cfg)
    trial.train.max_steps = max(trial.train.max_steps, probe_steps)
    trial.objective.balanced_masking = False  # only the layout is needed
    batches = TrainBatches(trial.train.data, trial)
    if batches.word_table is None:
        raise GPTBertError(f"{trial.train.data}: no word table (word_table.npy or tokenizer.json); "
                           "prepare the corpus again to count words")
    words = tokens = 0
    for frac in (0.0, 0.75, 0.95) if trial.train.seq_schedule else (0.0,):
        step = int(frac * trial.train.max_steps)
        T = step_shape(step, trial).seq_length
        lay = batches.layout(samples_before(step, trial) + np.arange(rows), T)
        words += int(batches.row_words(lay).sum())
        tokens += rows * T
    return words / tokens
