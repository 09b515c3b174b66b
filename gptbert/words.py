"""Words seen: counted exactly from the tokens a training row covers.

The BabyLM challenge measures training in words seen (repeats count): its
checkpoints are at 1M, 2M, ... 10M, 20M, ... 100M, 200M, ... 1000M words. We
count words from the tokens themselves, so the count is exact for any packing:

  a word is a maximal run of non-whitespace characters (whitespace: space,
  tab, newline, carriage return, vertical tab, form feed), and a token starts
  a word where one of its bytes is not whitespace and the byte before it is
  whitespace: inside the token (" the"), or at the end of the token before it
  in the corpus stream ("\n" then "word"). Special tokens (`<s>`) count as
  whitespace, so a document's first word always counts.

The tokenizer normalises text (NFKC, a space before each line) before it is
split, so this counts the words of the normalised text; on ordinary text it
equals `len(text.split())` (tests/test_words.py checks it on a corpus).

`WordTable` holds three numbers per vocabulary entry; `count_words` applies
them to a token sequence. `gptbert prepare` saves the table next to the token
stream (word_table.npy), so the data pipeline needs no tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .tokenizer import N_SPECIAL

WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")
WORD_TABLE_FILE = "word_table.npy"  # saved by `prepare` next to the token stream: (3, V) uint8
MILESTONES_M = (*range(1, 10), *range(10, 100, 10), *range(100, 1001, 100))  # BabyLM checkpoints, millions of words


def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte -> printable character map (GPT-2's scheme): printable
    Latin-1 bytes stand for themselves, the other 68 bytes are shifted to code points 256 and up."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


@dataclass
class WordTable:
    starts_inside: np.ndarray  # (V,) uint8: word starts inside the token (a whitespace byte, then not)
    first_is_word: np.ndarray  # (V,) bool: the first byte is not whitespace
    ends_in_space: np.ndarray  # (V,) bool: the last byte is whitespace (special tokens: True)

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> "WordTable":
        decode = _byte_decoder()
        V = tok.get_vocab_size()
        inside = np.zeros(V, dtype=np.uint8)
        first = np.zeros(V, dtype=bool)
        ends = np.ones(V, dtype=bool)
        for piece, i in tok.get_vocab().items():
            if i < N_SPECIAL:
                continue  # special tokens are boundaries: no word, "whitespace" at the end
            b = bytes(decode[c] for c in piece if c in decode)
            if not b:
                continue
            ws = [x in WHITESPACE for x in b]
            inside[i] = sum(1 for j in range(1, len(b)) if ws[j - 1] and not ws[j])
            first[i] = not ws[0]
            ends[i] = ws[-1]
        return cls(inside, first, ends)

    @classmethod
    def load(cls, path: Path) -> "WordTable":
        a = np.load(path)
        return cls(a[0].astype(np.uint8), a[1].astype(bool), a[2].astype(bool))


def count_words(tokens: np.ndarray, table: WordTable, previous: int | None = None) -> int:
    """Words that start in `tokens` (1-D ids); `previous` is the token before them in the corpus
    stream (None: a document boundary)."""
    t = np.asarray(tokens, dtype=np.int64)
    if t.size == 0:
        return 0
    before_space = np.empty(t.size, dtype=bool)
    before_space[0] = True if previous is None else bool(table.ends_in_space[previous])
    before_space[1:] = table.ends_in_space[t[:-1]]
    return int(table.starts_inside[t].sum()) + int((table.first_is_word[t] & before_space).sum())


def milestone_name(millions: int) -> str:
    """The BabyLM revision name of a word-count checkpoint: chck_1M, chck_20M, ..."""
    return f"chck_{millions}M"


def milestones_crossed(before: int, after: int) -> list[int]:
    """Milestones (in millions of words) reached by going from `before` to `after` words."""
    return [m for m in MILESTONES_M if before < m * 1_000_000 <= after]
