"""The hybrid objective: causal LM + masked next-token prediction (paper 2.1-2.2).

Every training row is a sequence x of seq_length + 1 tokens (data.py packs
it; with the official packing it is a few chunks, each led by `<s>`, plus
padding). A row becomes:

  causal row:  input x[:-1], target x[1:]  (targets that are `<s>` or
               padding are ignored)
  MNTP row:    span-mask x, input = masked x[:-1], target at position k =
               x[k+1] if position k+1 was masked, else ignored. So when token
               k+1 is masked its prediction comes out at position k, exactly
               as for the causal rows (paper 2.1).

Masking (official `SpanMaskingStrategy` + `apply_mask`, paper 2.2, Ankner et
al. 2024) works on *segments*: the content tokens of one chunk (official
packing) or positions 1..T of a row (stream packing):
  - the rate falls linearly from mask_p_start (30%) to mask_p_end (15%)
    (`mask_schedule=False`: mask_p_end at every step)
  - k = max(1, floor(n * p + U(0, 1))) per segment (stochastic rounding),
    n = maskable (non-special) tokens of the segment
  - spans: lengths uniform in 1..max_span tile the segment, every span gets
    one random score, and every token whose score is <= the k-th smallest
    score is masked. Whole spans go together, so slightly more than k tokens
    are masked (the span holding the k-th token is taken whole), about
    30.5% / 15.5% at rates of 30% / 15% on 126-token chunks, as in the
    official code
  - count-balanced masking (official, `balanced_masking=True`): every
    token's score is multiplied by softmax(mask counts) over its segment,
    where the counts say how often each corpus token has been masked before
    (data.MaskCounts). Rarely masked tokens get small scores and are picked
    first; since the weights differ inside a span, spans break up as counts
    grow. Over hundreds of epochs this balances coverage.
  - per span: mask_random_p -> random tokens, mask_keep_p -> unchanged,
    otherwise `<mask>` (80/10/10); special tokens (ids < 16) are never masked
    and never drawn as random replacements

All randomness comes from a counter-based hash of (seed, step, global row,
segment, stream, index): any subset of rows can be masked on its own and gets
the same result, so any number of workers, any world size and a resumed run
produce the same data, and the masking of a whole global batch is a handful
of vectorised numpy operations.

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


def step_mask_rate(step: int, max_steps: int, cfg: ObjectiveConfig) -> float:
    """The MNTP mask rate of a training step: the schedule, or mask_p_end throughout when it is off."""
    if not cfg.mask_schedule:
        return cfg.mask_p_end
    return mask_rate(step, max_steps, cfg.mask_p_start, cfg.mask_p_end)


# ---------------------------------------------------------------------------
# Counter-based randomness (splitmix64): a pure function of its integer inputs


_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(n) for n in (30, 27, 31, 11))

# streams of random numbers drawn per segment
_SPAN_LENGTH, _SPAN_SCORE, _COUNT, _ACTION, _TOKEN, _FILL = range(1, 7)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (a bijection with full avalanche); works in place."""
    with np.errstate(over="ignore"):
        z ^= z >> _S30
        z *= _M1
        z ^= z >> _S27
        z *= _M2
        z ^= z >> _S31
    return z


def hash_key(*parts) -> np.ndarray:
    """uint64 key(s) from integers or integer arrays (broadcast), e.g. (seed, step, row, segment)."""
    h = np.full((), 0x243F6A8885A308D3, dtype=np.uint64)
    for p in parts:
        p = np.asarray(p, dtype=np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = _mix(np.array(h ^ (p + _GAMMA), dtype=np.uint64, ndmin=1)).reshape(np.broadcast(h, p).shape)
    return h


def hash_uniform(keys: np.ndarray, stream: int, index: np.ndarray | int) -> np.ndarray:
    """U[0, 1) doubles, a pure function of (key, stream, index).

    keys (M,) uint64; index an int (-> (M,)), an (L,) array (-> (M, L), the same
    indices for every key) or an (M, L) array.
    """
    k = _mix(np.asarray(keys, dtype=np.uint64) ^ np.uint64((stream * 0x632BE59BD9B4E019) % 2**64))
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    if idx.ndim:
        k = k[:, None]
    with np.errstate(over="ignore"):
        z = (idx + np.uint64(1)) * _GAMMA
        z = _mix(np.add(k, z, dtype=np.uint64))
    z >>= _S11  # top 53 bits
    u = z.astype(np.float64)
    u *= 1.0 / 9007199254740992.0  # / 2^53
    return u


def mask_key(seed: int, step: int, row, segment=0) -> np.ndarray:
    """Key of the masking draws of one segment: (seed, step, global row, segment index in the row)."""
    return hash_key(seed, step, row, segment)


# ---------------------------------------------------------------------------
# Span masking of segments


@dataclass
class SpanSelection:
    """Which tokens of M segments (left-aligned in an (M, L) matrix) are masked."""

    masked: np.ndarray  # (M, L) bool
    span: np.ndarray  # (M, L) int: span index of every position (one score / one action per span)
    k: np.ndarray  # (M,) the k of the rule (tokens requested before whole spans are taken)


def span_select(tokens: np.ndarray, lengths: np.ndarray, keys: np.ndarray, rate: float, max_span: int,
                counts: np.ndarray | None = None) -> SpanSelection:
    """Pick the masked tokens of M segments (official `SpanMaskingStrategy` + `apply_mask` rule).

    tokens:  (M, L) content tokens of each segment, left-aligned; positions >= lengths[m] are ignored
    lengths: (M,) segment lengths
    keys:    (M,) uint64 masking keys (mask_key)
    counts:  (M, L) how often each token was masked before (count-balanced masking), or None
    """
    M, L = tokens.shape
    keys = np.atleast_1d(keys)
    pos = np.arange(L)
    valid = pos[None, :] < lengths[:, None]
    maskable = valid & (tokens >= N_SPECIAL)
    # Spans tile every segment from its first token: span j has length 1..max_span.
    span_len = 1 + (hash_uniform(keys, _SPAN_LENGTH, pos) * max_span).astype(np.int64)  # (M, L)
    starts = np.cumsum(span_len, axis=1)
    starts -= span_len  # start of span j; starts[:, 0] = 0
    marks = np.zeros((M, L + 1), dtype=np.int32)
    marks.ravel()[(np.arange(M) * (L + 1))[:, None] + np.minimum(starts, L)] = 1
    span = np.cumsum(marks[:, :L], axis=1)
    span -= 1  # (M, L) span index of every position
    n_spans = int(span[:, -1].max()) + 1 if M and L else 0
    # one score per span (the same for all its tokens)
    score = np.take_along_axis(hash_uniform(keys, _SPAN_SCORE, np.arange(n_spans)), span, axis=1)
    if counts is not None:  # softmax of the counts over the maskable tokens of each segment
        c = counts.astype(np.float64)
        top = np.max(np.where(maskable, c, 0.0), axis=1, keepdims=True)  # any shift >= the max will do
        w = np.where(maskable, np.exp(c - top), 0.0)
        w /= np.maximum(w.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        score = score * w
    score = np.where(maskable, score, np.inf)
    n = maskable.sum(axis=1)
    k = np.minimum(np.maximum(1, (n * rate + hash_uniform(keys, _COUNT, 0)).astype(np.int64)), n)
    kth = np.take_along_axis(np.sort(score, axis=1), np.maximum(k - 1, 0)[:, None], axis=1)  # (M, 1)
    masked = (score <= kth) & maskable & (k > 0)[:, None]
    return SpanSelection(masked, span, k)


def span_replace(tokens: np.ndarray, sel: SpanSelection, keys: np.ndarray, vocab_size: int,
                 cfg: ObjectiveConfig) -> tuple[np.ndarray, np.ndarray]:
    """Replace the masked tokens: one 80/10/10 decision per span. Returns (new tokens, action),
    action per position: 0 = `<mask>`, 1 = random token, 2 = kept."""
    u = hash_uniform(keys, _ACTION, sel.span)
    action = np.where(u < cfg.mask_random_p, 1, np.where(u < cfg.mask_random_p + cfg.mask_keep_p, 2, 0)).astype(np.int8)
    rand = N_SPECIAL + (hash_uniform(keys, _TOKEN, np.arange(tokens.shape[1])) * (vocab_size - N_SPECIAL)).astype(np.int64)
    out = tokens.copy()
    out[sel.masked & (action == 0)] = MASK_ID
    sel_rand = sel.masked & (action == 1)
    out[sel_rand] = rand[sel_rand]
    return out, action


@dataclass
class SpanMask:
    """Result of span masking one row (all arrays have the row's length)."""

    tokens: np.ndarray  # tokens after replacement
    masked: np.ndarray  # bool: position was chosen (it is a prediction target)
    span_id: np.ndarray  # int: span of every position (-1 before `first`)
    action: np.ndarray  # int8 per position: 0 = <mask>, 1 = random token, 2 = kept


def span_mask(
    x: np.ndarray,
    rate: float,
    key: np.ndarray | int,
    vocab_size: int,
    cfg: ObjectiveConfig,
    first: int = 1,
    counts: np.ndarray | None = None,
) -> SpanMask:
    """Span-mask positions first..len(x)-1 of one row x (1-D int array) as one segment.
    counts: mask counts of those positions (count-balanced masking) or None."""
    seg = np.asarray(x[first:], dtype=np.int64)[None]
    keys = np.asarray(key, dtype=np.uint64).reshape(1)
    sel = span_select(seg, np.array([seg.shape[1]]), keys, rate, cfg.max_span,
                      None if counts is None else np.asarray(counts)[None])
    out, action = span_replace(seg, sel, keys, vocab_size, cfg)
    head = np.zeros(first, dtype=np.int64)
    return SpanMask(
        np.concatenate([np.asarray(x[:first], dtype=np.int64), out[0]]),
        np.concatenate([head.astype(bool), sel.masked[0]]),
        np.concatenate([head - 1, sel.span[0]]),
        np.concatenate([head.astype(np.int8) + 2, action[0]]),
    )


def causal_row(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Window of T+1 tokens -> (input (T,), target (T,)) for causal LM."""
    target = x[1:].astype(np.int64)
    target[x[1:] == BOS_ID] = IGNORE
    return x[:-1], target


def mntp_row(x: np.ndarray, rate: float, key: np.ndarray | int, vocab_size: int, cfg: ObjectiveConfig):
    """Window of T+1 tokens -> (input (T,), target (T,)) for masked next-token prediction."""
    m = span_mask(x, rate, key, vocab_size, cfg, first=1)
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
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossSums]:
    """Loss contribution of one micro-batch.

    logits:    (N, V) at the N target positions (any dtype; computed in fp32 here)
    targets:   (N,) token ids
    is_causal: (N,) bool, whether the token comes from a causal row
    weight_*:  objective weight divided by that objective's target count over
               the whole global batch, so summing over micro-batches (and
               ranks) gives w_c * mean CE_causal + w_m * mean CE_mntp.
    valid:     (N,) bool or None (all valid): padding positions (`memory.padded_count`) get
               weight 0 and stay out of the sums
    """
    if logits.dtype != torch.float64:  # fp64 only in numerical tests
        logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    ce = lse - logits.gather(-1, targets[:, None]).squeeze(-1)  # (N,) = cross-entropy per token
    per_token = ce + z_loss * lse.square()
    w = torch.where(is_causal, weight_causal, weight_masked)
    if valid is not None:
        w = torch.where(valid, w, 0.0)
    loss = (per_token * w).sum()
    with torch.no_grad():
        c = is_causal if valid is None else is_causal & valid
        m = ~is_causal if valid is None else ~is_causal & valid
        sums = LossSums(
            ce_causal=float(ce[c].sum()), ce_masked=float(ce[m].sum()),
            n_causal=int(c.sum()), n_masked=int(m.sum()),
        )
    return loss, sums
