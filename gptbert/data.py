"""Rank-sharded, resumable training batches from a prepared token stream.

`gptbert prepare` (corpus.py) writes the corpus as one uint16 stream in which
every document starts with `<s>`. A training row is T + 1 tokens (T inputs,
T shifted targets), cut from that stream in one of two ways (`train.packing`):

  official  (the paper's code, `dataset.py`): documents are cut into chunks of
            T - 2 tokens. A row is `<s>` + one chunk, topped up with `<s>` +
            further random chunks while at least two positions are free (the
            last one cut to fit, at a random offset), then padded. Every chunk
            is its own attention block (segment), so no row starts without
            `<s>` and `<s>` means "start of chunk". A full chunk fills a row
            with one padding input.
  stream    rows are windows of the stream on a fixed grid: one `<s>` per
            document, most rows start mid-document, attention blocks are the
            documents (`<s>` to `<s>`), no padding.

Everything about a step's batch is a pure function of (seed, step):

  - its shape, from the paper's schedules (section 4, Table 3): tokens per
    step ramp linearly from 1/4 to all of global_batch_tokens over training
    (rows rounded to whole rows, so even a 2-micro-batch preset gets a
    linear ramp); rows hold T = 128 tokens, 256 from 70% and 512 from 90% of
    the steps, with half and a quarter of the rows, so tokens per step stay
    the same
  - which text it reads: global row r of step s is sample number
    c = (rows of all earlier steps) + r. Windows (stream) or first chunks
    (official) are visited in a fresh random order every epoch (seeded by
    (seed, T, epoch)), so each epoch covers every one once; the top-up chunks
    and their offsets are drawn from a hash of (seed, T, c)
  - which rows are causal and how MNTP rows are masked (objectives.py)

So a resumed run, a run with data-loader workers and a run on any number of
processes read exactly the same global batch at every step. Rank k of N takes
the k-th contiguous slice of the global rows (sizes differ by at most one
row), cut into micro-batches of at most micro_batch_size rows.

Count-balanced masking (`objective.balanced_masking`) is the one exception to
"pure function of (seed, step)": the official code multiplies span scores by
softmax(how often each token was masked before), counts that live across
epochs. Here the counts (`MaskCounts`, one uint16 per corpus token) are a
deterministic function of (seed, step) all the same: the counts before step s
are the masks of all MNTP rows of all global batches since the row length
last changed (the official code starts new counts with every new row length).
That makes them exact under every setting:

  - DDP: every rank keeps the same *global* counts. To mask its own rows at
    step s a rank needs what every other rank masked before, so each rank
    also computes the mask selection (not the replacement tokens or the
    batch tensors) of the whole global batch. One process equals N
    processes, and resuming with another world size is exact.
  - workers > 0: every worker keeps its own copy and, before building step s,
    replays the selections of the steps that other workers built. Each
    worker thus does the selection work of every step; building rows and
    tensors is still split between them. Each step's batch carries its count
    update (`StepBatch.mask_update`), and the main process applies it to its
    own copy (`TrainBatches.commit`), which is the copy that is saved.
  - resume: checkpoints store the counts (`mask_state`), so a resumed run
    continues from them; without saved counts the selections are replayed
    from step 0 (exact, just slower).

Cost: the selection over the global batch is a few vectorised numpy passes
per step, on top of building this rank's own rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .errors import GPTBertError
from .objectives import (_FILL, IGNORE, causal_rows, hash_key, hash_uniform, mask_key, span_replace, span_select,
                         step_mask_rate)
from .packing import Chunks, Layout, chunk_table, materialize, segment_tokens
from .tokenizer import load_tokenizer
from .words import WORD_TABLE_FILE, WordTable


# ---------------------------------------------------------------------------
# Step shapes


@dataclass(frozen=True)
class StepShape:
    seq_length: int  # T: tokens per row at this step
    rows: int  # rows in the global batch (all ranks, all micro-batches)
    micro_rows: int  # at most this many rows per forward pass per rank
    micro_steps: int  # forward passes of the rank with the most rows (gradient accumulation)

    @property
    def tokens(self) -> int:
        return self.rows * self.seq_length

    def rank_rows(self, rank: int, world_size: int) -> tuple[int, int]:
        """Global rows [lo, hi) of one rank: contiguous slices whose sizes differ by at most one."""
        return rank * self.rows // world_size, (rank + 1) * self.rows // world_size

    def micro_batches(self, rank: int, world_size: int) -> list[tuple[int, int]]:
        """Global row ranges of one rank's micro-batches (full ones first, the last may be smaller)."""
        lo, hi = self.rank_rows(rank, world_size)
        return [(a, min(a + self.micro_rows, hi)) for a in range(lo, hi, self.micro_rows)]


def step_shape(step: int, cfg: RunConfig, world_size: int = 1) -> StepShape:
    t = cfg.train
    frac = step / t.max_steps
    mult = 1
    if t.seq_schedule:
        mult = 4 if frac >= 0.9 else 2 if frac >= 0.7 else 1
    T = t.seq_length * mult
    tokens = t.global_batch_tokens * ((0.25 + 0.75 * frac) if t.batch_ramp else 1.0)
    micro_rows = max(1, t.micro_batch_size // mult)
    # Whole rows, not micro-batch multiples: the ramp stays linear (within half a row) for any
    # preset, and the global batch does not depend on the world size (unless it has < 1 row a rank).
    rows = max(world_size, int(round(tokens / T)))
    per_rank = -(-rows // world_size)
    return StepShape(T, rows, micro_rows, -(-per_rank // micro_rows))


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


# ---------------------------------------------------------------------------
# Batches


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (b, T) int64
    targets: torch.Tensor  # (b, T) int64, -100 = no target
    segments: torch.Tensor  # (b, T) int64 attention block (document / chunk / padding) of every position
    is_causal: torch.Tensor  # (b,) bool
    words: int = 0  # words of corpus text in these rows (gptbert/words.py): BabyLM's "words seen"

    def to(self, device: torch.device, non_blocking: bool = False) -> "MicroBatch":
        return MicroBatch(*(t.to(device, non_blocking=non_blocking) for t in
                            (self.input_ids, self.targets, self.segments, self.is_causal)), self.words)

    def pin_memory(self) -> "MicroBatch":
        return MicroBatch(*(t.pin_memory() for t in (self.input_ids, self.targets, self.segments, self.is_causal)),
                          self.words)


@dataclass
class MaskUpdate:
    """What one step adds to the mask counts: +increments at corpus positions (all ranks' rows)."""

    step: int
    seq_length: int
    positions: torch.Tensor  # (n,) int64, unique
    increments: torch.Tensor  # (n,) int32


class StepBatch(list):
    """One rank's micro-batches of a step (a list of MicroBatch) and, with count-balanced
    masking, the step's MaskUpdate for the main process's copy of the counts."""

    def __init__(self, micro_batches=(), mask_update: MaskUpdate | None = None):
        super().__init__(micro_batches)
        self.mask_update = mask_update

    def pin_memory(self) -> "StepBatch":
        return StepBatch([mb.pin_memory() for mb in self], self.mask_update)


class MaskCounts:
    """How often every corpus token has been masked (count-balanced masking): training state.

    `step`: the counts include every step before it. `seq_length`: the row length they were
    collected at; a step with another length starts from zero counts (as the official code,
    which builds new datasets when the length changes). uint16, saturating at 65535.
    """

    def __init__(self, n_tokens: int):
        self.counts = np.zeros(n_tokens, dtype=np.uint16)
        self.step = 0
        self.seq_length = 0

    def reset(self) -> None:
        self.counts[:] = 0
        self.step = self.seq_length = 0

    def lookup(self, T: int) -> np.ndarray | None:
        """The counts for a step with rows of T tokens (None = all zero)."""
        return self.counts if self.seq_length == T else None

    def apply(self, update: MaskUpdate) -> None:
        if update.step != self.step:
            raise GPTBertError(f"mask counts are at step {self.step}, got the update of step {update.step}")
        if update.seq_length != self.seq_length:
            self.counts[:] = 0
            self.seq_length = update.seq_length
        pos = update.positions.numpy()
        self.counts[pos] = np.minimum(self.counts[pos].astype(np.int64) + update.increments.numpy(), 65535)
        self.step += 1

    def state_dict(self, copy: bool = True) -> dict:
        """copy=False hands out the live array (one uint16 per corpus token): for a save that
        finishes before the counts change again, without a corpus-sized copy."""
        return {"step": self.step, "seq_length": self.seq_length, "counts": self.counts.copy() if copy else self.counts}

    def load_state_dict(self, state: dict, source: str = "mask counts") -> None:
        counts = np.asarray(state["counts"])
        if counts.shape != self.counts.shape:
            raise GPTBertError(f"{source}: mask counts for {counts.shape[0]} tokens, but the corpus has "
                               f"{self.counts.shape[0]} (another train.bin?)")
        self.counts = counts.astype(np.uint16, copy=True)
        self.step, self.seq_length = int(state["step"]), int(state["seq_length"])


class TrainBatches(torch.utils.data.Dataset):
    """Item `step` = this rank's micro-batches of that step (a StepBatch). Safe in DataLoader workers."""

    def __init__(self, data_dir: str | Path, cfg: RunConfig, rank: int = 0, world_size: int = 1, split: str = "train"):
        self.path = Path(data_dir) / f"{split}.bin"
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self._tokens: np.ndarray | None = None
        self._orders: dict[tuple, np.ndarray] = {}
        self._chunks: dict[int, Chunks] = {}
        n = self.tokens.shape[0]
        longest = max(step_shape(s, cfg, world_size).seq_length for s in (0, int(cfg.train.max_steps * 0.95)))
        if n < longest + 2:
            raise GPTBertError(f"{self.path}: {n} tokens is too few for rows of {longest} tokens")
        self.mask_counts = MaskCounts(n) if cfg.objective.balanced_masking else None
        self._counts_start: dict | None = None  # state to replay from when asked for an earlier step
        self.word_table = load_word_table(Path(data_dir))  # None: words seen are not counted

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:  # opened lazily: each DataLoader worker maps the file itself
            self._tokens = np.memmap(self.path, dtype=np.uint16, mode="r")
        return self._tokens

    def __len__(self) -> int:
        return self.cfg.train.max_steps

    # -- which text ------------------------------------------------------------

    def _order(self, samples: np.ndarray, n: int, T: int, tag: int) -> np.ndarray:
        """Item of each sample when n items are visited in a fresh random order every epoch."""
        epochs, i = np.divmod(samples, n)
        out = np.empty_like(samples)
        for e in np.unique(epochs):
            key = (tag, T, int(e))
            if key not in self._orders:
                if len(self._orders) > 8:
                    self._orders.clear()
                rng = np.random.default_rng(np.random.SeedSequence([self.cfg.train.seed, T, int(e), tag]))
                self._orders[key] = rng.permutation(n)
            sel = epochs == e
            out[sel] = self._orders[key][i[sel]]
        return out

    def window(self, sample: int, T: int) -> np.ndarray:
        """The T + 1 tokens of one stream-packed sample."""
        start = int(self._stream_layout(np.array([sample]), T).stream[0])
        return np.asarray(self.tokens[start:start + T + 1])

    def _stream_layout(self, samples: np.ndarray, T: int) -> Layout:
        n_windows = (self.tokens.shape[0] - 1) // T
        start = self._order(samples, n_windows, T, 0xDA7A) * T
        R = len(samples)
        return Layout(R, T, np.arange(R), np.ones(R, np.int64), np.full(R, T, np.int64), start + 1,
                      np.zeros(R, np.int64), stream=start)

    def chunks(self, T: int) -> Chunks:
        if T not in self._chunks:
            self._chunks[T] = chunk_table(self.tokens, T)
            if len(self._chunks[T].start) == 0:
                raise GPTBertError(f"{self.path}: no document has 2 or more tokens")
        return self._chunks[T]

    def _official_layout(self, samples: np.ndarray, T: int) -> Layout:
        ch = self.chunks(T)
        n = len(ch.start)
        R = len(samples)
        first = self._order(samples, n, T, 0xC4A1C)
        parts = [(np.arange(R), np.ones(R, np.int64), ch.length[first], ch.start[first], np.zeros(R, np.int64))]
        fill = 1 + ch.length[first]  # tokens of the row so far (<s> + chunk)
        keys = hash_key(self.cfg.train.seed, T, samples, 0xF111)
        j = 1
        active = np.flatnonzero(T - fill > 1)
        while len(active):  # top up with random chunks, the last one cut to fit at a random offset
            f = np.minimum((hash_uniform(keys[active], _FILL, 2 * j) * n).astype(np.int64), n - 1)
            take = np.minimum(T - fill[active], ch.length[f])
            offset = (hash_uniform(keys[active], _FILL, 2 * j + 1) * (ch.length[f] - take + 1)).astype(np.int64)
            parts.append((active, fill[active] + 1, take, ch.start[f] + offset, np.full(len(active), j)))
            fill[active] += 1 + take
            active = active[T - fill[active] > 1]
            j += 1
        row, col, length, src, index = (np.concatenate(p) for p in zip(*parts))
        return Layout(R, T, row, col, length, src, index)

    def layout(self, samples: np.ndarray, T: int) -> Layout:
        if self.cfg.train.packing == "official":
            return self._official_layout(samples, T)
        return self._stream_layout(samples, T)

    # -- masking ---------------------------------------------------------------

    def _select(self, lay: Layout, global_rows: np.ndarray, step: int, rate: float, counts: np.ndarray | None):
        tok, pos = segment_tokens(self.tokens, lay)
        keys = mask_key(self.cfg.train.seed, step, global_rows[lay.row], lay.index)
        c = None if counts is None else counts[pos]
        return tok, pos, keys, span_select(tok, lay.length, keys, rate, self.cfg.objective.max_span, c)

    def _count_update(self, step: int) -> MaskUpdate:
        """Positions masked by the MNTP rows of the whole global batch of `step` (from the counts before it)."""
        cfg = self.cfg
        shape = step_shape(step, cfg, self.world_size)
        mntp = np.flatnonzero(~causal_rows(shape.rows, cfg.objective.causal_ratio, cfg.train.seed, step))
        lay = self.layout(samples_before(step, cfg, self.world_size) + mntp, shape.seq_length)
        rate = step_mask_rate(step, cfg.train.max_steps, cfg.objective)
        _, pos, _, sel = self._select(lay, mntp, step, rate, self.mask_counts.lookup(shape.seq_length))
        return _mask_update(step, shape.seq_length, lay, pos[sel.masked])

    def advance(self, step: int) -> None:
        """Bring the mask counts to `step` (replaying the selections of the steps in between)."""
        st = self.mask_counts
        if st.step > step:  # asked for an earlier step: replay from the loaded state, or from step 0
            start = self._counts_start
            if start is not None and start["step"] <= step:
                st.load_state_dict(start)
            else:
                st.reset()
        while st.step < step:
            st.apply(self._count_update(st.step))

    def load_mask_state(self, state: dict, source: str = "checkpoint") -> None:
        """Start from saved mask counts (before building any batch and before forking workers)."""
        self.mask_counts.load_state_dict(state, source)
        # kept to replay from as given (a checkpoint's read-only memory map): no second corpus-sized copy
        self._counts_start = {"step": int(state["step"]), "seq_length": int(state["seq_length"]),
                              "counts": state["counts"]}

    def mask_state(self) -> dict | None:
        """The counts for a checkpoint, not copied: the caller saves them before the next step."""
        return None if self.mask_counts is None else self.mask_counts.state_dict(copy=False)

    def commit(self, step: int, item: StepBatch) -> None:
        """Main process: bring its copy of the mask counts past `step`, using the update that came
        with the step's batch (built in a worker) unless this object built the batch itself."""
        st = self.mask_counts
        if st is None or st.step == step + 1:
            return
        if st.step != step or item.mask_update is None:
            self.advance(step + 1)
        else:
            st.apply(item.mask_update)

    # -- words seen ------------------------------------------------------------

    def row_words(self, lay: Layout) -> np.ndarray:
        """(R,) words of the corpus text in each row of `lay` (zeros without a word table).

        Whether a corpus position starts a word depends on its token and the token before it in the
        stream (words.py), so a chunk or window cut mid-word counts that word where it starts."""
        if self.word_table is None or len(lay.length) == 0:
            return np.zeros(lay.rows, dtype=np.int64)
        L = lay.length.astype(np.int64)
        offset = np.arange(int(L.sum())) - np.repeat(np.cumsum(L) - L, L)
        pos = np.repeat(lay.src, L) + offset  # every text position of every segment
        tok = np.asarray(self.tokens[pos], dtype=np.int64)
        prev = np.asarray(self.tokens[np.maximum(pos - 1, 0)], dtype=np.int64)
        wt = self.word_table
        starts = wt.starts_inside[tok] + (wt.first_is_word[tok] & (wt.ends_in_space[prev] | (pos == 0)))
        per_segment = np.bincount(np.repeat(np.arange(len(L)), L), weights=starts, minlength=len(L))
        return np.bincount(lay.row, weights=per_segment, minlength=lay.rows).astype(np.int64)

    # -- the batch of a step ---------------------------------------------------

    def __getitem__(self, step: int) -> StepBatch:
        cfg = self.cfg
        shape = step_shape(step, cfg, self.world_size)
        T = shape.seq_length
        first = samples_before(step, cfg, self.world_size)
        causal = causal_rows(shape.rows, cfg.objective.causal_ratio, cfg.train.seed, step)
        rate = step_mask_rate(step, cfg.train.max_steps, cfg.objective)
        counts = None
        if self.mask_counts is not None:
            self.advance(step)
            counts = self.mask_counts.lookup(T)
        lo, hi = shape.rank_rows(self.rank, self.world_size)
        own = np.arange(lo, hi)
        lay = self.layout(first + own, T)
        x, seg, text, masked, replaced, mntp = build_rows(self, own, first + own, causal[own], step, T, rate, counts,
                                                          layout=lay)
        words = self.row_words(lay)
        out = StepBatch()
        for a, b in shape.micro_batches(self.rank, self.world_size):
            mb = make_micro_batch(x[a - lo:b - lo], seg[a - lo:b - lo], text[a - lo:b - lo],
                                  masked[a - lo:b - lo], replaced[a - lo:b - lo], causal[a:b])
            mb.words = int(words[a - lo:b - lo].sum())
            out.append(mb)
        if self.mask_counts is not None:
            if lo == 0 and hi == shape.rows:  # this process masked the whole global batch already
                out.mask_update = _mask_update(step, T, *mntp)
            else:
                out.mask_update = self._count_update(step)
            self.mask_counts.apply(out.mask_update)
        return out


def load_word_table(data_dir: Path) -> WordTable | None:
    """The word table `prepare` saved (or one built from the data folder's tokenizer.json for older folders)."""
    if (data_dir / WORD_TABLE_FILE).is_file():
        a = np.load(data_dir / WORD_TABLE_FILE)
        return WordTable(a[0].astype(np.uint8), a[1].astype(bool), a[2].astype(bool))
    if (data_dir / "tokenizer.json").is_file():
        return WordTable.from_tokenizer(load_tokenizer(data_dir / "tokenizer.json"))
    return None


def _mask_update(step: int, T: int, lay: Layout, hit: np.ndarray) -> MaskUpdate:
    """MaskUpdate from the corpus positions masked in the segments of `lay`."""
    if _ranges_overlap(lay.src, lay.length):  # a chunk used twice in one step: count it twice
        hit, inc = np.unique(hit, return_counts=True)
    else:
        inc = np.ones(len(hit), dtype=np.int64)
    return MaskUpdate(step, T, torch.from_numpy(hit.astype(np.int64)), torch.from_numpy(inc.astype(np.int32)))


def _ranges_overlap(start: np.ndarray, length: np.ndarray) -> bool:
    order = np.argsort(start, kind="stable")
    s, e = start[order], start[order] + length[order]
    return bool(np.any(s[1:] < e[:-1]))


def build_rows(source: TrainBatches, global_rows: np.ndarray, samples: np.ndarray, causal: np.ndarray, step: int,
               T: int, rate: float, counts: np.ndarray | None, layout: Layout | None = None):
    """Rows of T + 1 tokens, their attention blocks and text flags, and the masking of the MNTP rows:
    (x, segments, text, masked, x with masked tokens replaced), all (R, T + 1), and (the layout of
    the MNTP segments, the corpus positions masked in them)."""
    lay = layout if layout is not None else source.layout(samples, T)
    x, seg, text = materialize(source.tokens, lay)
    masked = np.zeros_like(text)
    replaced = x.copy()
    keep = ~causal[lay.row]  # segments of MNTP rows
    sub = Layout(lay.rows, T, lay.row[keep], lay.col[keep], lay.length[keep], lay.src[keep], lay.index[keep])
    hits = np.zeros(0, dtype=np.int64)
    if keep.any():
        tok, pos, keys, sel = source._select(sub, global_rows, step, rate, counts)
        hits = pos[sel.masked]
        new, _ = span_replace(tok, sel, keys, source.cfg.model.vocab_size, source.cfg.objective)
        L = tok.shape[1]
        valid = np.arange(L)[None, :] < sub.length[:, None]
        rr = np.broadcast_to(sub.row[:, None], valid.shape)[valid]
        cc = (sub.col[:, None] + np.arange(L))[valid]
        masked[rr, cc] = sel.masked[valid]
        replaced[rr, cc] = new[valid]
    return x, seg, text, masked, replaced, (sub, hits)


def make_micro_batch(x: np.ndarray, seg: np.ndarray, text: np.ndarray, masked: np.ndarray, replaced: np.ndarray,
                     causal: np.ndarray) -> MicroBatch:
    """Rows of T+1 tokens -> one mixed micro-batch (causal and MNTP rows side by side).

    causal rows: input x[:-1], target x[1:] where that is text (not `<s>`, not padding)
    MNTP rows:   input = masked x[:-1], target x[k+1] at k where token k+1 was masked
    """
    causal = np.asarray(causal, dtype=bool)
    y = x[:, 1:]
    target = np.where(causal[:, None], np.where(text[:, 1:], y, IGNORE), np.where(masked[:, 1:], y, IGNORE))
    inputs = np.where(causal[:, None], x[:, :-1], replaced[:, :-1])
    return MicroBatch(
        torch.from_numpy(np.ascontiguousarray(inputs)),
        torch.from_numpy(np.ascontiguousarray(target)),
        torch.from_numpy(np.ascontiguousarray(seg[:, :-1])),
        torch.from_numpy(causal.copy()),
    )


def validation_batches(data_dir: str | Path, cfg: RunConfig, rows: int, batch_size: int, causal: bool,
                       rate: float = 0.15) -> list[MicroBatch]:
    """Fixed validation rows, all causal or all MNTP at a fixed mask rate (paper: validation uses
    15%), masked with a fixed seed. Stream packing: `rows` windows of val.bin; official packing:
    `rows` chunks, one per row (`<s>` + chunk + padding, as the official `ValidationDataset`).
    The rows are drawn at random (seeded, then kept in corpus order) from the whole of val.bin,
    so that on a corpus of many files the loss measures all of them, not the first file or two."""
    path = Path(data_dir) / "val.bin"
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    T = cfg.train.seq_length
    src = _ValSource(tokens, cfg)
    if cfg.train.packing == "official":
        ch = chunk_table(tokens, T) if tokens.shape[0] > 1 else Chunks(np.zeros(0, np.int64), np.zeros(0, np.int64))
        available = len(ch.start)
    else:
        available = (tokens.shape[0] - 1) // T
    n = min(rows, available)
    if n < 1:
        raise GPTBertError(f"{path}: {tokens.shape[0]} tokens is too few for one validation row of {T} tokens")
    rng = np.random.default_rng(np.random.SeedSequence([cfg.train.seed, T, 0x7A11D]))
    chosen = np.sort(rng.choice(available, size=n, replace=False))  # spread over all of val.bin
    out = []
    for s in range(0, n, batch_size):
        idx = chosen[s:s + batch_size]
        R = len(idx)
        if cfg.train.packing == "official":
            lay = Layout(R, T, np.arange(R), np.ones(R, np.int64), ch.length[idx], ch.start[idx], np.zeros(R, np.int64))
        else:
            lay = Layout(R, T, np.arange(R), np.ones(R, np.int64), np.full(R, T, np.int64), idx * T + 1,
                         np.zeros(R, np.int64), stream=idx * T)
        flags = np.full(R, causal)
        x, seg, text, masked, replaced, _ = build_rows(src, idx, idx, flags, 0x7FFFFFFF, T, rate, None, layout=lay)
        out.append(make_micro_batch(x, seg, text, masked, replaced, flags))
    return out


class _ValSource:
    """The parts of TrainBatches that build_rows uses, over val.bin."""

    def __init__(self, tokens: np.ndarray, cfg: RunConfig):
        self.tokens, self.cfg = tokens, cfg

    _select = TrainBatches._select
