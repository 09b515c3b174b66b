"""Words seen, counted from tokens (gptbert/words.py), against a count on the text itself."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import SHARED_DATA
from gptbert.corpus import find_corpus_files, read_documents
from gptbert.tokenizer import encode_batch, load_tokenizer, train_tokenizer
from gptbert.words import MILESTONES_M, WordTable, count_words, milestone_name, milestones_crossed

WORD = re.compile(r"[^ \t\n\r\x0b\x0c]+")


def test_words_of_the_prepared_streams_equal_the_text(prepared):
    meta = json.loads((prepared["data"] / "meta.json").read_text())
    assert meta["train_words"] + meta["val_words"] == meta["words"]  # plain ASCII text: split() agrees
    table = WordTable.load(prepared["data"] / "word_table.npy")
    train = np.fromfile(prepared["data"] / "train.bin", dtype=np.uint16)
    assert count_words(train, table) == meta["train_words"]
    # any cut of the stream, counted piece by piece with the token before each piece, adds up exactly
    cuts = [0, 17, 500, 501, 4096, len(train)]
    parts = sum(count_words(train[a:b], table, int(train[a - 1]) if a else None) for a, b in zip(cuts, cuts[1:]))
    assert parts == meta["train_words"]


def test_hand_counted_text(tmp_path):
    texts = ["One two  three.\nFour\tfive six", "alone", " spaced   out ", "new\n\nlines\nhere!"]
    tok = train_tokenizer(texts * 20, 300)
    table = WordTable.from_tokenizer(tok)
    for text in texts:
        ids = encode_batch(tok, [text])[0]
        assert count_words(np.array(ids), table) == len(WORD.findall(text)) == len(text.split()), text
    # a word cut by a row boundary is counted once, in the row where it starts
    ids = np.array(encode_batch(tok, ["abcdefghij klmnop"])[0])
    assert sum(count_words(ids[i:i + 1], table, int(ids[i - 1]) if i else None) for i in range(len(ids))) == 2


def test_milestones():
    assert MILESTONES_M[:11] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20) and MILESTONES_M[-1] == 1000
    assert len(MILESTONES_M) == 28 and milestone_name(20) == "chck_20M"
    assert milestones_crossed(0, 999_999) == [] and milestones_crossed(999_999, 1_000_000) == [1]
    assert milestones_crossed(9_500_000, 21_000_000) == [10, 20]


@pytest.mark.slow  # heavy: in `pytest -m slow` (README), not the default CI tier
def test_real_corpus_counts_match_split(tmp_path):
    """On BabyLM-domain text (speaker tags, tabs, Unicode) the token count equals str.split() per document,
    except where NFKC normalisation changes whitespace (counted on the normalised text, as documented)."""
    src = SHARED_DATA / "pretrain"
    if not src.is_dir():
        pytest.skip("../shared/data/pretrain is absent")
    docs = [d for f in find_corpus_files(src)[:3] for d in list(read_documents(f))[:300]]
    tok = train_tokenizer(docs, 2048, tmp_path / "tok.json")
    table = WordTable.from_tokenizer(load_tokenizer(tmp_path / "tok.json"))
    ids = encode_batch(tok, docs)
    ours = [count_words(np.array(x), table) for x in ids]
    normalized = [tok.normalizer.normalize_str(d) for d in docs]
    assert ours == [len(WORD.findall(n)) for n in normalized]
    exact = sum(o == len(d.split()) for o, d in zip(ours, docs))
    assert exact >= 0.99 * len(docs), f"{exact}/{len(docs)} documents agree with str.split()"
