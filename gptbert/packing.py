"""Packing: where the text of every training row comes from, and the rows it makes.

A row is T + 1 tokens. Its text comes in segments of the prepared token stream
(corpus.py): `Layout` says, for R rows, which stream positions each segment
copies and at which column, and `materialize` turns a layout into the rows'
tokens, attention blocks and text flags. The two packings (`train.packing`,
see data.py) only differ in the layout they build:

  official  segments are the chunks of `chunk_table` (every document cut into
            pieces of T - 2 tokens from its start), each written after a `<s>`
            of its own, with its own attention block
  stream    one segment per row: the whole window after its first token (the
            stream's own `<s>` tokens mark the documents)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tokenizer import BOS_ID, PAD_ID


@dataclass
class Layout:
    """Where the text segments of R rows of T + 1 tokens come from. A segment is `<s>` at column
    col - 1 followed by `length` corpus tokens from stream position src on (stream packing: the
    whole window after its first token, without a `<s>` of its own)."""

    rows: int
    T: int
    row: np.ndarray  # (M,) row of every segment
    col: np.ndarray  # (M,) column of its first text token
    length: np.ndarray  # (M,)
    src: np.ndarray  # (M,) corpus position of its first text token
    index: np.ndarray  # (M,) segment number within its row (0 = first)
    stream: np.ndarray | None = None  # (R,) window starts (stream packing)


@dataclass
class Chunks:
    """The official chunks of T - 2 tokens: every document's text cut from its start."""

    start: np.ndarray  # (n,) corpus position of the first token
    length: np.ndarray  # (n,) int32, 2 .. T - 2 tokens


def chunk_table(tokens: np.ndarray, T: int) -> Chunks:
    """Documents (`<s>` to `<s>`, without the `<s>`) cut into chunks of T - 2 tokens; chunks
    of a single token are dropped, as in the official `dataset.py`."""
    C = T - 2
    n = tokens.shape[0]
    block = 1 << 24  # scan a memmap in 16M-token blocks: no corpus-sized temporary
    bos = np.concatenate([np.flatnonzero(np.asarray(tokens[i:i + block]) == BOS_ID) + i for i in range(0, n, block)]
                         or [np.zeros(0, np.int64)])
    starts, ends = bos + 1, np.append(bos[1:], n)
    if len(bos) == 0 or bos[0] != 0:  # text before the first <s> is a document too
        starts = np.insert(starts, 0, 0)
        ends = np.insert(ends, 0, bos[0] if len(bos) else n)
    # Cut documents into chunks a group of documents at a time, so the temporaries stay small and
    # the table itself (12 bytes per chunk: about 0.2 bytes per corpus token at T=64) is all that grows.
    out_start, out_length = [], []
    for g in range(0, len(starts), 1 << 18):
        s, e = starts[g:g + (1 << 18)], ends[g:g + (1 << 18)]
        doc, k = _spread(np.arange(len(s)), -(-(e - s) // C))  # each document's chunk numbers 0, 1, ...
        cs = s[doc] + k * C
        cl = np.minimum(C, e[doc] - cs)
        keep = cl >= 2
        out_start.append(cs[keep].astype(np.int64))
        out_length.append(cl[keep].astype(np.int32))
    if not out_start:
        return Chunks(np.zeros(0, np.int64), np.zeros(0, np.int32))
    return Chunks(np.concatenate(out_start), np.concatenate(out_length))


def _spread(values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(np.repeat(values, lengths), offsets 0..len-1 within each repeat)."""
    rep = np.repeat(values, lengths)
    within = np.arange(len(rep)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rep, within


def materialize(tokens: np.ndarray, lay: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layout -> (x (R, T+1) tokens, segments (R, T+1) attention blocks, text (R, T+1) bool).

    text marks the corpus tokens (not `<s>`, not padding): the positions that can be targets.
    """
    R, T = lay.rows, lay.T
    if lay.stream is not None:  # windows of the stream; blocks = documents
        x = np.asarray(tokens[lay.stream[:, None] + np.arange(T + 1)], dtype=np.int64)
        return x, np.cumsum(x == BOS_ID, axis=1), x != BOS_ID
    x = np.full((R, T + 1), PAD_ID, dtype=np.int64)
    seg = np.zeros((R, T + 1), dtype=np.int64)  # padding: block 0
    x[lay.row, lay.col - 1] = BOS_ID
    seg[lay.row, lay.col - 1] = lay.index + 1
    rr, within = _spread(lay.row, lay.length)
    cc = np.repeat(lay.col, lay.length) + within
    x[rr, cc] = tokens[np.repeat(lay.src, lay.length) + within]
    seg[rr, cc] = np.repeat(lay.index, lay.length) + 1
    text = np.zeros((R, T + 1), dtype=bool)
    text[rr, cc] = True
    return x, seg, text & (x != BOS_ID)


def segment_tokens(tokens: np.ndarray, lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(M, L) corpus tokens of every segment (left-aligned, padded with PAD) and their positions."""
    L = int(lay.length.max()) if len(lay.length) else 0
    pos = lay.src[:, None] + np.arange(L)
    pos = np.where(np.arange(L) < lay.length[:, None], pos, lay.src[:, None])  # inside the corpus
    tok = np.asarray(tokens[pos], dtype=np.int64)
    tok[np.arange(L)[None, :] >= lay.length[:, None]] = PAD_ID
    return tok, pos
