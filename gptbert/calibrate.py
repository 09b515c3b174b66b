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
from dataclasses import dataclass, field

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


def step_costs(cfg: RunConfig, shapes: list[tuple[int, int]], repeats: int = 4) -> dict[int, tuple[float, float]]:
    """For each (row length T, rows) in `shapes`: (seconds per token of forward + backward at T,
    seconds of the per-step update).

    The update is what a training step does once whatever its size: gradient clipping, the LAMB
    step, zeroing the gradients and the EMA update. It is timed apart because steps differ in size
    (the batch ramp starts at a quarter batch): for a small model at the ramp's start it is a fifth
    of the step, and folding it into a per-token cost measured on one full micro-batch made the
    quickstart plan 10% more steps than its budget held (2026-12-03, 4 x 192: 659 of 725).
    The shapes are timed in interleaved rounds after one warm-up each, and each takes the median
    of its `repeats` timings: on a shared VM a slow moment then lands on one timing of every
    shape, not on all timings of one (timed one shape after the other, the 256-token cost of one
    quickstart came out 4x too high, 2026-12-03). The minimum would pick the machine's fastest
    moment, which a whole run does not see.
    """
    torch.manual_seed(0)
    model = GPTBERT(cfg.model)
    opt = Lamb(param_groups(model, 0.1), lr=1e-3)
    ema = EMA(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None

    def one_step(T: int, rows: int) -> tuple[float, float]:
        x = torch.randint(16, cfg.model.vocab_size, (rows, T))
        mask = attention_mask(torch.zeros_like(x), torch.zeros(rows, dtype=torch.bool))
        positions = torch.arange(0, rows * T, 4)  # ~25% of positions carry a target
        targets = torch.randint(16, cfg.model.vocab_size, (positions.numel(),))
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
        return t1 - t0, time.perf_counter() - t1

    for T, rows in shapes:  # warm-up: first allocations, kernel choices
        one_step(T, rows)
    times: dict[int, list[tuple[float, float]]] = {T: [] for T, _ in shapes}
    for _ in range(repeats):
        for T, rows in shapes:
            times[T].append(one_step(T, rows))
    return {T: (_median([f for f, _ in ts]) / (rows * T), _median([u for _, u in ts]))
            for (T, rows), ts in zip(shapes, times.values())}


OVERHEAD = 1.05  # data loading, logging, the target bookkeeping of the real loss: not in the timed step


@dataclass
class StepCosts:
    """What a training step costs: seconds per token of forward + backward at each row length,
    plus one update per step, times `scale` (the loop's overheads; or, after a stretch of the real
    run, what that stretch measured against this model: `rescaled`), times `rates[T]` for the
    row lengths whose own rate was measured (1 for the others)."""

    per_token: dict[int, float]  # row length -> seconds per token of forward + backward
    update: float  # seconds of clipping + LAMB + zeroing + EMA, once per step
    scale: float = OVERHEAD
    rates: dict[int, float] = field(default_factory=dict)  # row length -> extra factor on its steps

    def seconds(self, cfg: RunConfig, n: int, start: int = 0, stop: int | None = None) -> float:
        """Seconds of steps [start, stop) of an n-step schedule (the shapes depend on n)."""
        trial = copy.deepcopy(cfg)
        trial.train.max_steps = n
        total = 0.0
        for s in range(start, n if stop is None else stop):
            shape = step_shape(s, trial)
            step = shape.tokens * self.per_token[shape.seq_length] + self.update
            total += step * self.rates.get(shape.seq_length, 1.0)
        return total * self.scale

    def fit(self, cfg: RunConfig, seconds: float, done: int = 0) -> int:
        """The largest n whose steps [done, n) fit in `seconds` (at least done + 1; cfg is not changed)."""
        lo, hi = done + 1, done + 1
        while self.seconds(cfg, hi, done) < seconds and hi < 10**6:
            lo, hi = hi, 2 * hi
        while lo < hi - 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.seconds(cfg, mid, done) < seconds else (lo, mid)
        return lo

    def rescaled(self, factor: float, by_length: dict[int, float] | None = None) -> "StepCosts":
        """This model with every step `factor` times slower, except the row lengths in `by_length`,
        whose steps are by_length[T] times slower instead (factors relative to this model)."""
        rates = {T: self.rates.get(T, 1.0) * r / factor for T, r in (by_length or {}).items()}
        return StepCosts(dict(self.per_token), self.update, self.scale * factor, {**self.rates, **rates})


def measure_step_costs(cfg: RunConfig) -> StepCosts:
    """Time each row length of the schedule with the schedule's rows per micro-batch.

    On a CPU the (B, H, T, T) attention work grows faster with T than the FLOP count says, so
    scaling the time of T=128 would overfill a budget. A run of n steps then costs the sum over its
    steps of tokens x seconds/token at that step's length, plus n updates.
    """
    rows = cfg.train.micro_batch_size
    T0 = cfg.train.seq_length
    mults = (1, 2, 4) if cfg.train.seq_schedule else (1,)
    costs = step_costs(cfg, [(T0 * m, max(1, rows // m)) for m in mults])
    return StepCosts({T: c for T, (c, _) in costs.items()}, _median([u for _, u in costs.values()]))


def steps_for_budget(cfg: RunConfig, seconds: float) -> int:
    """The largest max_steps whose whole run fits in `seconds` by a fresh timing (cfg is not changed)."""
    return measure_step_costs(cfg).fit(cfg, seconds)


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
