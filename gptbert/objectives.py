"""The hybrid objective: causal LM + masked next-token prediction (paper 2.1-2.2).

Every training row is a window x of seq_length + 1 tokens cut from the packed
token stream, where each document starts with `<s>`. A row becomes:

  causal row:  input x[:-1], target x[1:]  (targets that are `<s>` are
               ignored: the start of the next document can't be predicted)
  MNTP row:    span-mask x at positions 1..T, input = masked x[:-1], target
               at position k = x[k+1] if position k+1 was masked, else ignored.
               So when token k+1 is masked its prediction comes out at
               position k, exactly as for the causal rows (paper 2.1).

Masking (official `SpanMaskingStrategy`, paper 2.2, Ankner et al. 2024):
  - the rate falls linearly from mask_p_start (30%) to mask_p_end (15%)
  - number masked = floor(n * p + U(0, 1)) (stochastic rounding, >= 1),
    n = maskable (non-special) positions of the row
  - spans: lengths uniform in 1..max_span tile the row, every span gets one
    random score, the k lowest-scoring tokens are masked, so whole spans go
    together (only the last chosen span can be cut short)
  - per span: mask_random_p -> random tokens, mask_keep_p -> unchanged,
    otherwise `<mask>` (80/10/10); special tokens (ids < 16) are never masked
    and never drawn as random replacements
  Unlike the official code we don't bias masking toward rarely-masked tokens
  (that needs state kept across epochs); masking here is a pure function of
  (seed, step, row), so any number of workers, any world size and a resumed
  run produce the same data.

Hybrid mixing: which rows of a global batch are causal is a property of the
batch, not of a GPU rank: round(rows * causal_ratio) with stochastic rounding
(so one process matches N in expectation). The loss is
  w_c * CE_causal + w_m * CE_mntp   (+ z-loss per objective)
with CE the token mean over the whole global batch of each objective and
w_c = causal rows / rows, w_m = 1 - w_c.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import ObjectiveConfig
from .tokenizer import BOS_ID, MASK_ID, N_SPECIAL

IGNORE = -100


def mask_rate(step: int, max_steps: int, start: float, end: float) -> float:
    """Linear schedule of the MNTP mask rate from `start` at step 0 to `end` at the last step."""
    frac = min(max(step / max(max_steps - 1, 1), 0.0), 1.0)
    return start + (end - start) * frac


def row_rng(seed: int, step: int, row: int, stream: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, step, global row, stream)."""
    return np.random.default_rng(np.random.SeedSequence([seed, step, row, stream]))


@dataclass
class SpanMask:
    """Result of span masking one row (all arrays have the row's length)."""

    tokens: np.ndarray  # tokens after replacement
    masked: np.ndarray  # bool: position was chosen (it is a prediction target)
    span_id: np.ndarray  # int: span of every position (for statistics/tests)
    action: np.ndarray  # int8 per position: 0 = <mask>, 1 = random token, 2 = kept


def span_mask(
    x: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    vocab_size: int,
    cfg: ObjectiveConfig,
    first: int = 1,
) -> SpanMask:
    """Span-mask positions first..len(x)-1 of one row x (1-D int array)."""
    n = len(x)
    lengths = rng.integers(1, cfg.max_span + 1, size=n)
    span_id = np.repeat(np.arange(n), lengths)[:n]  # (n,) spans tile the row
    num_spans = int(span_id[-1]) + 1
    scores = rng.random(num_spans)[span_id]
    maskable = x >= N_SPECIAL
    maskable[:first] = False
    scores[~maskable] = np.inf
    n_maskable = int(maskable.sum())
    k = min(max(1, int(n_maskable * rate + rng.random())), n_maskable)
    chosen = np.argsort(scores, kind="stable")[:k]  # ties = same span, picked left to right
    masked = np.zeros(n, dtype=bool)
    masked[chosen] = True

    u = rng.random(num_spans)[span_id]  # one draw per span: the 80/10/10 decision
    action = np.where(u < cfg.mask_random_p, 1, np.where(u < cfg.mask_random_p + cfg.mask_keep_p, 2, 0)).astype(np.int8)
    random_tokens = rng.integers(N_SPECIAL, vocab_size, size=n)
    out = x.copy()
    out[masked & (action == 0)] = MASK_ID
    sel = masked & (action == 1)
    out[sel] = random_tokens[sel]
    return SpanMask(out, masked, span_id, action)


def causal_row(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Window of T+1 tokens -> (input (T,), target (T,)) for causal LM."""
    target = x[1:].astype(np.int64)
    target[x[1:] == BOS_ID] = IGNORE
    return x[:-1], target


def mntp_row(x: np.ndarray, rate: float, rng: np.random.Generator, vocab_size: int, cfg: ObjectiveConfig):
    """Window of T+1 tokens -> (input (T,), target (T,)) for masked next-token prediction."""
    m = span_mask(x, rate, rng, vocab_size, cfg, first=1)
    target = np.where(m.masked, x, IGNORE)[1:].astype(np.int64)  # the MNTP shift: y[1:]
    return m.tokens[:-1], target


def segment_ids(inputs: np.ndarray) -> np.ndarray:
    """Document id of every position: a new document starts at each `<s>`. (..., T) -> (..., T)."""
    return np.cumsum(inputs == BOS_ID, axis=-1)


def num_causal_rows(rows: int, ratio: float, seed: int, step: int) -> int:
    """Causal rows in a global batch of `rows`: rows * ratio with stochastic rounding."""
    u = np.random.default_rng(np.random.SeedSequence([seed, step, 0xCA05A1])).random()
    return min(rows, int(rows * ratio + u))


def causal_rows(rows: int, ratio: float, seed: int, step: int) -> np.ndarray:
    """Boolean (rows,) marking the causal rows of the global batch of `step`."""
    n = num_causal_rows(rows, ratio, seed, step)
    perm = np.random.default_rng(np.random.SeedSequence([seed, step, 0x5E1EC7])).permutation(rows)
    is_causal = np.zeros(rows, dtype=bool)
    is_causal[perm[:n]] = True
    return is_causal


# ---------------------------------------------------------------------------
# Loss


@dataclass
class LossSums:
    """Sums over one micro-batch's target tokens, split by objective (detached floats for logging)."""

    ce_causal: float = 0.0
    ce_masked: float = 0.0
    n_causal: int = 0
    n_masked: int = 0


def hybrid_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    is_causal: torch.Tensor,
    weight_causal: float,
    weight_masked: float,
    z_loss: float,
) -> tuple[torch.Tensor, LossSums]:
    """Loss contribution of one micro-batch.

    logits:    (N, V) at the N target positions (any dtype; computed in fp32 here)
    targets:   (N,) token ids
    is_causal: (N,) bool, whether the token comes from a causal row
    weight_*:  objective weight divided by that objective's target count over
               the whole global batch, so summing over micro-batches (and
               ranks) gives w_c * mean CE_causal + w_m * mean CE_mntp.
    """
    if logits.dtype != torch.float64:  # fp64 only in numerical tests
        logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    ce = lse - logits.gather(-1, targets[:, None]).squeeze(-1)  # (N,) = cross-entropy per token
    per_token = ce + z_loss * lse.square()
    w = torch.where(is_causal, weight_causal, weight_masked)
    loss = (per_token * w).sum()
    with torch.no_grad():
        c = is_causal
        sums = LossSums(
            ce_causal=float(ce[c].sum()), ce_masked=float(ce[~c].sum()),
            n_causal=int(c.sum()), n_masked=int((~c).sum()),
        )
    return loss, sums
