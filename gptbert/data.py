"""Stateless, rank-sharded training batches from a prepared token stream.

`gptbert prepare` (corpus.py) writes the corpus as one uint16 stream in which
every document starts with `<s>`. Training rows are windows of T + 1 tokens
of that stream (T inputs, T shifted targets). Everything about a step's batch
is a pure function of (seed, step):

  - its shape, from the paper's schedules (section 4, Table 3): tokens per
    step ramp linearly from 1/4 to all of global_batch_tokens over training;
    rows hold T = 128 tokens, 256 from 70% and 512 from 90% of the steps,
    with half and a quarter of the rows, so tokens per step stay the same
  - which windows it reads: global row r of step s is sample number
    c = (rows of all earlier steps) + r; windows of length T are visited in a
    fresh random order every epoch (seeded by (seed, T, epoch)), so each
    epoch covers every window once
  - which rows are causal and how MNTP rows are masked (objectives.py)

So a resumed run, a run with data-loader workers and a run on any number of
processes read exactly the same global batch at every step. Rank k of N takes
the k-th contiguous slice of the global rows, cut into micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .errors import GPTBertError
from .objectives import causal_row, causal_rows, mask_rate, mntp_row, row_rng, segment_ids


@dataclass(frozen=True)
class StepShape:
    seq_length: int  # T: tokens per row at this step
    rows: int  # rows in the global batch (all ranks, all micro-batches)
    micro_rows: int  # rows per forward pass per rank
    micro_steps: int  # forward passes per rank (gradient accumulation)

    @property
    def tokens(self) -> int:
        return self.rows * self.seq_length


def step_shape(step: int, cfg: RunConfig, world_size: int = 1) -> StepShape:
    t = cfg.train
    frac = step / t.max_steps
    mult = 1
    if t.seq_schedule:
        mult = 4 if frac >= 0.9 else 2 if frac >= 0.7 else 1
    T = t.seq_length * mult
    tokens = t.global_batch_tokens * ((0.25 + 0.75 * frac) if t.batch_ramp else 1.0)
    micro_rows = max(1, t.micro_batch_size // mult)
    unit = micro_rows * world_size
    rows = max(unit, int(round(tokens / T / unit)) * unit)
    return StepShape(T, rows, micro_rows, rows // unit)


_CUMULATIVE: dict[tuple, np.ndarray] = {}


def samples_before(step: int, cfg: RunConfig, world_size: int = 1) -> int:
    """Global rows read by all steps before `step` (the sample counter at its start)."""
    t = cfg.train
    key = (t.max_steps, t.seq_length, t.global_batch_tokens, t.micro_batch_size, t.seq_schedule,
           t.batch_ramp, world_size)
    if key not in _CUMULATIVE:
        rows = [step_shape(s, cfg, world_size).rows for s in range(t.max_steps + 1)]
        _CUMULATIVE[key] = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    return int(_CUMULATIVE[key][step])


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (b, T) int64
    targets: torch.Tensor  # (b, T) int64, -100 = no target
    segments: torch.Tensor  # (b, T) int64 document id per position
    is_causal: torch.Tensor  # (b,) bool

    def to(self, device: torch.device, non_blocking: bool = False) -> "MicroBatch":
        return MicroBatch(*(t.to(device, non_blocking=non_blocking) for t in
                            (self.input_ids, self.targets, self.segments, self.is_causal)))

    def pin_memory(self) -> "MicroBatch":
        return MicroBatch(*(t.pin_memory() for t in (self.input_ids, self.targets, self.segments, self.is_causal)))


def make_micro_batch(windows: list[np.ndarray], causal: np.ndarray, rates: float, seeds: list[tuple],
                     vocab_size: int, cfg: RunConfig) -> MicroBatch:
    """Turn T+1-token windows into one mixed micro-batch (causal and MNTP rows side by side)."""
    inputs, targets = [], []
    for x, is_c, (seed, step, row) in zip(windows, causal, seeds):
        x = x.astype(np.int64)
        if is_c:
            inp, tgt = causal_row(x)
        else:
            inp, tgt = mntp_row(x, rates, row_rng(seed, step, row), vocab_size, cfg.objective)
        inputs.append(inp)
        targets.append(tgt)
    inp = np.stack(inputs)
    return MicroBatch(
        torch.from_numpy(inp),
        torch.from_numpy(np.stack(targets)),
        torch.from_numpy(segment_ids(inp)),
        torch.from_numpy(np.asarray(causal, dtype=bool)),
    )


class TrainBatches(torch.utils.data.Dataset):
    """Item `step` = this rank's micro-batches of that step. Safe in DataLoader workers."""

    def __init__(self, data_dir: str | Path, cfg: RunConfig, rank: int = 0, world_size: int = 1, split: str = "train"):
        self.path = Path(data_dir) / f"{split}.bin"
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self._tokens: np.ndarray | None = None
        self._perm_key: tuple | None = None
        self._perm: np.ndarray | None = None
        n = self.tokens.shape[0]
        longest = max(step_shape(s, cfg, world_size).seq_length for s in (0, int(cfg.train.max_steps * 0.95)))
        if n < longest + 2:
            raise GPTBertError(f"{self.path}: {n} tokens is too few for rows of {longest} tokens")

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:  # opened lazily: each DataLoader worker maps the file itself
            self._tokens = np.memmap(self.path, dtype=np.uint16, mode="r")
        return self._tokens

    def __len__(self) -> int:
        return self.cfg.train.max_steps

    def window(self, sample: int, T: int) -> np.ndarray:
        n_windows = (self.tokens.shape[0] - 1) // T
        epoch, i = divmod(sample, n_windows)
        key = (T, epoch)
        if self._perm_key != key:
            rng = np.random.default_rng(np.random.SeedSequence([self.cfg.train.seed, T, epoch, 0xDA7A]))
            self._perm, self._perm_key = rng.permutation(n_windows), key
        start = int(self._perm[i]) * T
        return np.asarray(self.tokens[start:start + T + 1])

    def __getitem__(self, step: int) -> list[MicroBatch]:
        cfg = self.cfg
        shape = step_shape(step, cfg, self.world_size)
        first = samples_before(step, cfg, self.world_size)
        causal = causal_rows(shape.rows, cfg.objective.causal_ratio, cfg.train.seed, step)
        rate = mask_rate(step, cfg.train.max_steps, cfg.objective.mask_p_start, cfg.objective.mask_p_end)
        per_rank = shape.rows // self.world_size
        out = []
        for m in range(shape.micro_steps):
            rows = range(self.rank * per_rank + m * shape.micro_rows, self.rank * per_rank + (m + 1) * shape.micro_rows)
            windows = [self.window(first + r, shape.seq_length) for r in rows]
            seeds = [(cfg.train.seed, step, r) for r in rows]
            out.append(make_micro_batch(windows, causal[list(rows)], rate, seeds, cfg.model.vocab_size, cfg))
        return out


def validation_batches(data_dir: str | Path, cfg: RunConfig, rows: int, batch_size: int, causal: bool,
                       rate: float = 0.15) -> list[MicroBatch]:
    """Fixed validation rows: the first `rows` consecutive windows of val.bin, all causal or all MNTP
    at a fixed mask rate (paper: validation uses 15%), masked with a fixed seed."""
    path = Path(data_dir) / "val.bin"
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    T = cfg.train.seq_length
    n = min(rows, (tokens.shape[0] - 1) // T)
    if n < 1:
        raise GPTBertError(f"{path}: {tokens.shape[0]} tokens is too few for one validation row of {T} tokens")
    out = []
    for s in range(0, n, batch_size):
        idx = list(range(s, min(n, s + batch_size)))
        windows = [np.asarray(tokens[i * T:i * T + T + 1]) for i in idx]
        seeds = [(cfg.train.seed, -1 & 0x7FFFFFFF, i) for i in idx]
        out.append(make_micro_batch(windows, np.full(len(idx), causal), rate, seeds, cfg.model.vocab_size, cfg))
    return out
