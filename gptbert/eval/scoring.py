"""Sentence log-probabilities under GPT-BERT, in the paper's four scoring modes.

Every mode scores a *target* token sequence, optionally after a *context*
(EWoK: context = `Context1`, target = `Target1`/`Target2`; BLiMP: no
context, the whole sentence is the target). A row always starts with `<s>`.
Because of masked next-token prediction (MNTP) the output at position k
predicts token k+1 in every mode, so the target token at row position p is
read at position p - 1.

  causal  `<s> context target`, causal mask.
  mntp    pseudo-log-likelihood the GPT-BERT way: one copy of the row per
          target token with that token replaced by `<mask>`, full
          bidirectional attention, read at the position before the mask.
          All copies of all sentences are length-sorted and packed into large
          padded batches (never one forward per copy).
  fused   causal + mntp, summed token by token.
  prefix  `<s> context` attend to each other bidirectionally, the target
          tokens causally (a prefix LM). With an empty context this is causal.

Only target tokens are scored. For EWoK that is one of two rules (see
`minimal_pairs.EWOK_SCORING`): the context's tokens cancel between the two
candidates only in causal mode, where they cannot see the target; under
bidirectional attention (mntp, and so fused) every masked context token sees
the candidate target, so scoring the context too ("full", the paper's way)
gives different rankings from scoring the target alone ("target", the BabyLM
2025 pipeline's default). Full scoring passes context + target as one target.
In prefix mode the context is the bidirectional prefix and is never scored.

Temperatures. For every scored token we keep, per temperature T,
log_softmax(logits / T)[target] (all in fp32, summed per sentence in
float64), so one pass gives the scores of the whole sweep of the paper
(T = 0.05, 0.10, ..., 3.00, which includes T = 1). The 60 log-sum-exps per
token are computed with 30 exponentials: exp(z / T)^2 = exp(z / (T / 2)), so
each T in (1.5, 3.0] seeds a chain of squarings T, T/2, T/4, ... that covers
every grid point exactly once.
That chain, and the single log-sum-exp of T = 1 alone, run as compiled C
where a C compiler is present (`native_sweep`: row by row in cache instead of
~150 torch passes over the whole block; 2.6x faster on a 2-core AVX2 CPU,
docs/performance.md), else in torch. The vocabulary projection runs a few
hundred rows at a time into one reused buffer, its bias added inside that
pass (`head_statistics`), so a batch's (N, V) logits never exist at once.

T = 0 is defined as the limit T -> 0+: log_softmax(l / T)[y] * T tends to
l_y - max(l), so the ranking of two sentences at T -> 0 is the ranking of
`greedy_gap` = sum over tokens of (logit of the target - largest logit)
(<= 0; 0 when every token is the argmax). It is reported separately as
"T->0"; two sentences whose every token is the argmax tie there.

Ties. By default a pair whose two sentences get exactly the same score counts
as wrong (`pair_correct` uses a strict >); ties="correct" counts it as right,
the official BabyLM 2025 rule (its torch.max keeps the first, good, sentence).
Identical token sequences are scored once and share their score, so a pair of
identical sentences is always a tie.

Precision. In bf16 mode the transformer body runs under bf16 autocast; the
output head, the log-softmax and all accumulation stay in fp32 (logits are
never rounded to bf16; per-sentence sums are float64). See `forward.EvalModel`.

Batching. Rows are grouped by length so that nearly every batch has a single
length: no padding and, in mntp mode, no attention mask at all.

Prefix trees (causal mode). Under a causal mask the hidden state of a token
depends only on the tokens before it, so sentences that start alike share
their hidden states: the two sentences of a minimal pair usually differ only
after a common prefix, and every sentence shares `<s>` (and often "The").
Causal scoring therefore packs the sorted sentences into rows of a prefix
tree: a row holds each distinct prefix once, every node attends to itself and
its ancestors only, and its position id is its depth, so the relative
positions (and hence every log-prob) are exactly those of the sentence on its
own. On BabyLM-filtered BLiMP this is 0.60x the tokens of one row per
sentence (953k instead of 1.59M with a vocab-8192 tokenizer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .. import memory
from ..model import attention_mask
from ..tokenizer import BOS_ID, MASK_ID, PAD_ID
from . import native_sweep
from .forward import EvalModel

MODES = ("causal", "mntp", "fused", "prefix")
SWEEP_TEMPERATURES: tuple[float, ...] = tuple(round(k / 20, 2) for k in range(1, 61))  # 0.05 .. 3.00
_GRID = native_sweep.GRID  # temperatures on the sweep grid are k / _GRID (20)


# ---------------------------------------------------------------------------
# Results


@dataclass
class Scores:
    """Summed log-probabilities of n token sequences.

    logprob[i, j]  sum over the target tokens of sequence i of
                   log_softmax(logits / temperatures[j])[target]
    greedy_gap[i]  sum of (target logit - max logit): the T -> 0 ranking key
    n_tokens[i]    number of scored tokens
    """

    temperatures: tuple[float, ...]
    logprob: np.ndarray
    greedy_gap: np.ndarray
    n_tokens: np.ndarray

    def column(self, temperature: float) -> np.ndarray:
        """Scores at one temperature of the sweep (0 = the T -> 0 limit)."""
        if temperature == 0:
            return self.greedy_gap
        for j, t in enumerate(self.temperatures):
            if abs(t - temperature) < 1e-9:
                return self.logprob[:, j]
        raise KeyError(f"temperature {temperature} was not scored (have {self.temperatures[0]}..{self.temperatures[-1]})")

    def __add__(self, other: "Scores") -> "Scores":
        if self.temperatures != other.temperatures or len(self.n_tokens) != len(other.n_tokens):
            raise ValueError("cannot add Scores over different temperatures or items")
        return Scores(self.temperatures, self.logprob + other.logprob, self.greedy_gap + other.greedy_gap,
                      self.n_tokens)

    def take(self, index: np.ndarray) -> "Scores":
        return Scores(self.temperatures, self.logprob[index], self.greedy_gap[index], self.n_tokens[index])


TIE_RULES = ("wrong", "correct")


def pair_correct(good: np.ndarray, bad: np.ndarray, ties: str = "wrong") -> np.ndarray:
    """The good sentence scores strictly higher; ties="correct" also accepts a tie (the official 2025 rule)."""
    if ties == "wrong":
        return np.asarray(good) > np.asarray(bad)
    if ties == "correct":
        return np.asarray(good) >= np.asarray(bad)
    raise ValueError(f"unknown tie rule {ties!r} (choose from {', '.join(TIE_RULES)})")


# ---------------------------------------------------------------------------
# Per-token statistics


def _on_grid(temperatures: Sequence[float]) -> bool:
    return all(abs(t * _GRID - round(t * _GRID)) < 1e-6 and 1 <= round(t * _GRID) <= 3 * _GRID for t in temperatures)


def token_statistics(logits: Tensor, targets: Tensor, temperatures: Sequence[float],
                     chunk_rows: int = 256, native: bool = True, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(N, V) fp32 logits, (N,) targets -> (N, K) log-probs per temperature, (N,) greedy gaps.

    bias: a (V,) row still to be added to every row of logits (the head's, see `head_statistics`).

    log-probs[:, j] = log_softmax(logits / temperatures[j])[target], computed
    in fp32 through the max-subtracted form (l_y - m) / T - log sum exp((l - m) / T).
    For T = 1 alone and for sweeps on the grid, the max, the gap and the sums
    come from `native_sweep` (compiled C, one pass over each row in cache) where
    it is available and native=True; else from torch, the sweep by the same chain.
    """
    logits = logits.float()
    N = logits.shape[0]
    K = len(temperatures)
    temps = [float(t) for t in temperatures]
    if any(t <= 0 for t in temps):
        raise ValueError("temperatures must be positive (T = 0 is reported as the greedy limit)")
    use_chain = K > 4 and _on_grid(temps)
    if native and (use_chain or temps == [1.0]):
        got = native_sweep.token_sums(logits, targets, [round(t * _GRID) for t in temps],
                                      None if bias is None else bias.float())
        if got is not None:
            sums, gaps = got
            return gaps[:, None] / torch.tensor(temps, dtype=torch.float32) - torch.log(sums), gaps
    if bias is not None:
        logits = logits + bias.float()
    out = torch.empty((N, K), dtype=torch.float32, device=logits.device)
    gaps = torch.empty((N,), dtype=torch.float32, device=logits.device)
    for s in range(0, N, chunk_rows):
        lg = logits[s:s + chunk_rows]
        m = lg.amax(dim=-1, keepdim=True)
        ly = lg.gather(-1, targets[s:s + chunk_rows, None].to(lg.device))
        gap = (ly - m).squeeze(-1)  # <= 0
        gaps[s:s + chunk_rows] = gap
        if not use_chain and temps == [1.0]:  # T=1 alone: no (N, V) temporary, half the passes over the logits
            out[s:s + chunk_rows, 0] = ly.squeeze(-1) - torch.logsumexp(lg, dim=-1)
            continue
        z = lg - m  # <= 0, max 0: sums below are >= 1
        if use_chain:
            sums = torch.empty((lg.shape[0], 3 * _GRID + 1), dtype=torch.float32, device=lg.device)
            e = torch.empty_like(z)
            for k in range(3 * _GRID // 2 + 1, 3 * _GRID + 1):  # seeds T = k/20 in (1.5, 3.0]
                torch.mul(z, _GRID / k, out=e).exp_()
                sums[:, k] = e.sum(-1)
                while k % 2 == 0:  # exp(z / T)^2 = exp(z / (T/2))
                    e.mul_(e)
                    k //= 2
                    sums[:, k] = e.sum(-1)
        if use_chain:
            for j, t in enumerate(temps):
                out[s:s + chunk_rows, j] = gap / t - torch.log(sums[:, round(t * _GRID)])
        else:
            for j, t in enumerate(temps):
                lse = torch.logsumexp(z if t == 1.0 else z / t, dim=-1)
                out[s:s + chunk_rows, j] = gap / t - lse
    return out, gaps


HEAD_CHUNK_ROWS = 256  # logits projected at a time: (256, V) fp32 is 8 MB at V = 8,192


def head_statistics(eval_model: EvalModel, features: Tensor, targets: Tensor, temperatures: Sequence[float],
                    chunk_rows: int = HEAD_CHUNK_ROWS) -> tuple[Tensor, Tensor]:
    """`token_statistics` of the logits of (N, d) `features` (`EvalModel.features`), projected
    chunk_rows at a time into one reused buffer: the batch's (N, V) logits never exist at once,
    and the projection's bias is added inside the statistics' pass over each row. Projecting 3,900
    rows at once into a fresh 128 MB tensor, bias first, took more time than the matmul itself
    (docs/performance.md)."""
    N = features.shape[0]
    lp = torch.empty((N, len(temperatures)), dtype=torch.float32)
    gaps = torch.empty((N,), dtype=torch.float32)
    bias = eval_model.projection_bias()
    buf = None  # the first chunk's logits, reused by the next ones
    for s in range(0, N, chunk_rows):
        f = features[s:s + chunk_rows]
        logits = eval_model.project(f, out=None if buf is None else buf[:f.shape[0]], bias=bias is None)
        if buf is None and logits.device.type == "cpu" and logits.shape[0] == chunk_rows:
            buf = logits
        a, b = token_statistics(logits, targets[s:s + chunk_rows], temperatures, bias=bias)
        lp[s:s + chunk_rows], gaps[s:s + chunk_rows] = a.cpu(), b.cpu()
    return lp, gaps


# ---------------------------------------------------------------------------
# Batching


@dataclass
class Row:
    item: int  # index into the unique items
    ids: list[int]  # <s> context target (with one <mask> in mntp copies)
    positions: list[int]  # where the scored tokens are predicted (row index of the token - 1)
    targets: list[int]
    prefix_len: int = 0  # prefix mode: the first prefix_len positions attend bidirectionally


@dataclass
class _Batch:
    rows: list[Row] = field(default_factory=list)
    length: int = 0


def _rows_for(items: Sequence[tuple[tuple[int, ...], tuple[int, ...]]], mode: str) -> list[Row]:
    rows: list[Row] = []
    for i, (ctx, tgt) in enumerate(items):
        if not tgt:
            continue
        base = [BOS_ID, *ctx, *tgt]
        c = len(ctx)
        if mode in ("causal", "prefix"):
            rows.append(Row(i, base, [c + j for j in range(len(tgt))], list(tgt),
                             prefix_len=1 + c if mode == "prefix" else 0))
        elif mode == "mntp":
            for j, t in enumerate(tgt):
                ids = list(base)
                ids[1 + c + j] = MASK_ID
                rows.append(Row(i, ids, [c + j], [t]))
        else:
            raise ValueError(f"unknown scoring mode {mode!r}")
    return rows


def _batches(rows: list[Row], max_tokens: int) -> list[_Batch]:
    """Length-sorted batches of at most max_tokens padded tokens (or one row).

    Rows of one length go together; a length group too small to fill an
    eighth of a batch is merged with the next length (padded). BLiMP-sized
    data thus gives almost only single-length batches: no padding, and in
    mntp mode no attention mask at all (an all-True mask would cost a
    masked_fill over every (B, H, T, T) score tensor).
    """
    by_len: dict[int, list[Row]] = {}
    for row in rows:
        by_len.setdefault(len(row.ids), []).append(row)
    batches: list[_Batch] = []
    cur = _Batch()
    for L in sorted(by_len):
        group = by_len[L]
        if cur.rows and len(cur.rows) * cur.length >= max_tokens // 8:
            batches.append(cur)  # the previous (merged) group is big enough on its own
            cur = _Batch()
        for row in group:
            if cur.rows and (len(cur.rows) + 1) * max(cur.length, L) > max_tokens:
                batches.append(cur)
                cur = _Batch()
            cur.rows.append(row)
            cur.length = max(cur.length, L)
    if cur.rows:
        batches.append(cur)
    return batches


def _batch_tensors(batch: _Batch, mode: str, device: torch.device):
    B, T = len(batch.rows), batch.length
    ids = torch.full((B, T), PAD_ID, dtype=torch.long)
    lengths = torch.empty(B, dtype=torch.long)
    positions, targets, owners = [], [], []
    for b, row in enumerate(batch.rows):
        ids[b, : len(row.ids)] = torch.tensor(row.ids, dtype=torch.long)
        lengths[b] = len(row.ids)
        positions.extend(b * T + p for p in row.positions)
        targets.extend(row.targets)
        owners.extend([row.item] * len(row.positions))
    uniform = bool((lengths == T).all())
    if mode == "causal":
        # Right padding: real queries never see the pads that follow them.
        mask = torch.ones(1, 1, T, T, dtype=torch.bool).tril()
    elif mode == "prefix":
        prefix = torch.tensor([row.prefix_len for row in batch.rows], dtype=torch.long)
        ar = torch.arange(T)
        in_prefix = ar[None, :] < prefix[:, None]  # (B, T)
        mask = torch.ones(T, T, dtype=torch.bool).tril()[None] | (in_prefix[:, :, None] & in_prefix[:, None, :])
        mask = mask[:, None]
    else:  # mntp: bidirectional; pads form their own segment
        if uniform:
            mask = None
        else:
            seg = torch.where(torch.arange(T)[None, :] < lengths[:, None], 0, -1)
            mask = attention_mask(seg, False)
    return (ids.to(device), None if mask is None else mask.to(device),
            torch.tensor(positions, dtype=torch.long, device=device),
            torch.tensor(targets, dtype=torch.long, device=device), torch.tensor(owners, dtype=torch.long))


# ---------------------------------------------------------------------------
# Prefix-tree rows (causal mode)


@dataclass
class _TrieRow:
    ids: list[int] = field(default_factory=list)  # token of every node, in creation order
    depth: list[int] = field(default_factory=list)  # position id: <s> is 0
    parent: list[int] = field(default_factory=list)  # row index of the parent node (-1 for <s>)
    scored: dict[int, list[int]] = field(default_factory=dict)  # node -> items that score its token


def _trie_rows(items: Sequence[tuple[tuple[int, ...], tuple[int, ...]]], max_len: int) -> list[_TrieRow]:
    """Pack `<s> context target` sequences into prefix-tree rows of at most max_len nodes.

    Sequences are sorted, so the longest prefix a sequence shares with any
    earlier one in the row is the one it shares with its predecessor: adding it
    costs len - lcp new nodes. A sequence longer than max_len gets a row of its own.
    """
    seqs = [(BOS_ID, *ctx, *tgt) for ctx, tgt in items]
    order = sorted((i for i, (_, tgt) in enumerate(items) if tgt), key=lambda i: seqs[i])
    rows: list[_TrieRow] = []
    row: _TrieRow | None = None
    prev: tuple[int, ...] = ()
    path: list[int] = []  # row indices of prev's nodes
    for i in order:
        seq = seqs[i]
        lcp = 0
        if row is not None:
            n = min(len(seq), len(prev))
            while lcp < n and seq[lcp] == prev[lcp]:
                lcp += 1
        if row is None or len(row.ids) + len(seq) - lcp > max(max_len, len(seq)) or (row.ids and lcp == 0):
            row = _TrieRow()
            rows.append(row)
            lcp, path = 0, []
        del path[lcp:]
        for k in range(lcp, len(seq)):
            row.parent.append(path[-1] if path else -1)
            path.append(len(row.ids))
            row.ids.append(seq[k])
            row.depth.append(k)
        first = 1 + len(items[i][0])  # the first target token
        for k in range(first, len(seq)):
            row.scored.setdefault(path[k], []).append(i)
        prev = seq
    return rows


def _trie_batches(rows: list[_TrieRow], max_tokens: int):
    """Length-sorted groups of rows, at most max_tokens padded tokens each (or one row)."""
    rows = sorted(rows, key=lambda r: len(r.ids))
    batch: list[_TrieRow] = []
    for r in rows:
        if batch and (len(batch) + 1) * len(r.ids) > max_tokens:
            yield batch
            batch = []
        batch.append(r)
    if batch:
        yield batch


def _trie_tensors(batch: list[_TrieRow], device: torch.device):
    """ids, position ids (B, T); ancestor mask (B, 1, T, T); per scored node: the flat index of
    its parent (where its token is predicted) and its token; then (item, scored node) entries."""
    B, T = len(batch), max(len(r.ids) for r in batch)
    ids_np = np.full((B, T), PAD_ID, dtype=np.int64)
    depth_np = np.zeros((B, T), dtype=np.int64)
    parent_np = np.full((B, T), -1, dtype=np.int64)  # pads: no parent, they see only themselves
    for b, r in enumerate(batch):
        n = len(r.ids)
        ids_np[b, :n], depth_np[b, :n], parent_np[b, :n] = r.ids, r.depth, r.parent
    ids, depth, parent = torch.from_numpy(ids_np), torch.from_numpy(depth_np), torch.from_numpy(parent_np)
    # ancestor-or-self: walk every node up its parent pointers at once, one step per tree level
    # (a tree's depth, ~15 steps for BLiMP, instead of one step per node of the row)
    anc = torch.zeros((B, T, T), dtype=torch.bool)
    b_idx = torch.arange(B)[:, None].expand(B, T).reshape(-1)
    i_idx = torch.arange(T).repeat(B)
    cur = i_idx.clone()  # the ancestor reached so far (the node itself first)
    flat_parent = parent.reshape(-1)
    while b_idx.numel():
        anc[b_idx, i_idx, cur] = True
        cur = flat_parent[b_idx * T + cur]
        live = cur >= 0
        b_idx, i_idx, cur = b_idx[live], i_idx[live], cur[live]
    positions, targets, owners, pick = [], [], [], []
    for b, r in enumerate(batch):
        for node, its in r.scored.items():
            pick.extend([len(positions)] * len(its))
            owners.extend(its)
            positions.append(b * T + r.parent[node])
            targets.append(r.ids[node])
    return (ids.to(device), depth.to(device), anc[:, None].to(device),
            torch.tensor(positions, dtype=torch.long, device=device),
            torch.tensor(targets, dtype=torch.long, device=device),
            torch.tensor(owners, dtype=torch.long), torch.tensor(pick, dtype=torch.long))


def run_trie(eval_model: EvalModel, items, max_len: int, max_tokens: int, *, progress: bool = False,
             desc: str | None = None, features: bool = False):
    """Causal scoring over prefix-tree rows; yields (owners, fp32 logits (N, V), targets, pick):
    entry e adds the statistics of logits row pick[e] to item owners[e]. With features=True it
    yields the head's features instead of logits (`EvalModel.features`)."""
    rows = _trie_rows(items, max_len)
    total = sum(len(r.ids) for r in rows)
    with tqdm(total=total, desc=desc or "causal", unit="tok", unit_scale=True, disable=not progress,
              leave=False, dynamic_ncols=True) as bar:
        for batch in _trie_batches(rows, max_tokens):
            ids, depth, mask, positions, targets, owners, pick = _trie_tensors(batch, eval_model.device)
            out = (eval_model.features if features else eval_model.logits)(ids, mask, positions, position_ids=depth)
            yield owners, out, targets, pick
            bar.update(sum(len(r.ids) for r in batch))


# ---------------------------------------------------------------------------
# The scorer


class SentenceScorer:
    """Scores token sequences (or texts) with a GPTBERT in any of the four modes.

    model        a GPTBERT (or an `EvalModel` wrapping one)
    tokenizer    needed only for `score_texts`
    precision    "fp32" or "bf16" (transformer in bf16, fp32 head and accumulation)
    temperatures the sweep kept for every sequence (default 0.05..3.00; use (1.0,) for speed)
    max_tokens   padded tokens per forward pass
    trie_row_tokens  causal mode: nodes per prefix-tree row (0 = one plain row per sentence)
    progress     show a tqdm bar over tokens
    """

    def __init__(self, model, tokenizer=None, *, precision: str = "fp32",
                 temperatures: Sequence[float] = SWEEP_TEMPERATURES, max_tokens: int = 4096,
                 trie_row_tokens: int = 64, progress: bool = False):
        self.eval_model = model if isinstance(model, EvalModel) else EvalModel(model, precision)
        self.tokenizer = tokenizer
        self.temperatures = tuple(float(t) for t in temperatures)
        if not self.temperatures:
            raise ValueError("at least one temperature is needed")
        self.max_tokens = max_tokens
        self.trie_row_tokens = trie_row_tokens
        self.progress = progress

    @property
    def device(self) -> torch.device:
        return self.eval_model.device

    def encode(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        if self.tokenizer is None:
            raise ValueError("SentenceScorer needs a tokenizer to score texts")
        if not texts:
            return []
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [tuple(e.ids) for e in encs]

    def score_texts(self, texts: Sequence[str], mode: str, contexts: Sequence[str] | None = None,
                    desc: str | None = None) -> Scores:
        """Score each text (after its context, if given; empty contexts are allowed)."""
        tgt = self.encode(texts)
        if contexts is None:
            ctx = [()] * len(tgt)
        else:
            uniq = sorted(set(contexts))
            enc = dict(zip(uniq, self.encode([c for c in uniq]))) if uniq else {}
            ctx = [enc[c] if c else () for c in contexts]
        return self.score(list(zip(ctx, tgt)), mode, desc=desc)

    def score(self, items: Sequence[tuple[Sequence[int], Sequence[int]]], mode: str,
              desc: str | None = None) -> Scores:
        """items: (context ids, target ids) pairs, without `<s>` (it is added)."""
        if mode not in MODES:
            raise ValueError(f"unknown scoring mode {mode!r} (choose from {', '.join(MODES)})")
        # Identical sequences are scored once: exact ties stay exact.
        index: dict[tuple, int] = {}
        uniq: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        back = np.empty(len(items), dtype=np.int64)
        for i, (c, t) in enumerate(items):
            key = (tuple(c), tuple(t))
            j = index.get(key)
            if j is None:
                j = index[key] = len(uniq)
                uniq.append(key)
            back[i] = j
        if mode == "fused":
            scores = self._score_unique(uniq, "causal", desc) + self._score_unique(uniq, "mntp", desc)
        else:
            scores = self._score_unique(uniq, mode, desc)
        return scores.take(back)

    def _score_unique(self, items, mode: str, desc: str | None) -> Scores:
        K = len(self.temperatures)
        n = len(items)
        logprob = torch.zeros((n, K), dtype=torch.float64)
        gap = torch.zeros((n,), dtype=torch.float64)
        n_tokens = np.array([len(t) for _, t in items], dtype=np.int64)
        label = f"{desc} [{mode}]" if desc else mode
        if mode == "causal" and self.trie_row_tokens > 0:
            batches = run_trie(self.eval_model, items, self.trie_row_tokens, self.max_tokens,
                               progress=self.progress, desc=label, features=True)
        else:
            batches = ((*b, None) for b in run_rows(self.eval_model, _rows_for(items, mode), mode, self.max_tokens,
                                                     progress=self.progress, desc=label, features=True))
        # In a process that trained first (quickstart), the heap is full of freed holes; the
        # batches' tensors land in ever other holes and fault them back in, so the RSS of
        # quickstart's evaluation crept from 0.7 to 3.8 GB. Trim when it grows (memory.HeapTrimmer).
        trimmer = memory.HeapTrimmer()
        for owners, feats, targets, pick in batches:
            lp, g = head_statistics(self.eval_model, feats, targets, self.temperatures)
            lp, g = lp.double().cpu(), g.double().cpu()
            if pick is not None:  # a shared prefix-tree node counts for every item through it
                lp, g = lp[pick], g[pick]
            logprob.index_add_(0, owners, lp)
            gap.index_add_(0, owners, g)
            trimmer.after_step()
        return Scores(self.temperatures, logprob.numpy(), gap.numpy(), n_tokens)


def run_rows(eval_model: EvalModel, rows: list[Row], mode: str, max_tokens: int, *, progress: bool = False,
             desc: str | None = None, features: bool = False):
    """Forward length-sorted batches of rows; yields (owners, fp32 logits (N, V), targets) per batch
    (the head's features instead of logits with features=True).

    mode picks the attention: "causal" (lower-triangular), "prefix" (each
    row's first prefix_len positions bidirectional, the rest causal) or
    "mntp" (bidirectional; padding is its own segment).
    """
    batches = _batches(rows, max_tokens)
    total = sum(len(b.rows) * b.length for b in batches)
    with tqdm(total=total, desc=desc or mode, unit="tok", unit_scale=True, disable=not progress,
              leave=False, dynamic_ncols=True) as bar:
        for batch in batches:
            ids, mask, positions, targets, owners = _batch_tensors(batch, mode, eval_model.device)
            out = (eval_model.features if features else eval_model.logits)(ids, mask, positions)
            yield owners, out, targets
            bar.update(len(batch.rows) * batch.length)


def best_temperature(curve: dict[float, float]) -> tuple[float, float]:
    """(temperature, value) with the highest value; the lowest such T on exact ties."""
    best_t, best_v = None, -math.inf
    for t in sorted(curve):
        if curve[t] > best_v + 1e-12:
            best_t, best_v = t, curve[t]
    return best_t, best_v
