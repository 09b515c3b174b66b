"""Tests for gptbert.tokenizer: special ids, post-processing, splitting rules, round trips, load errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import pre_tokenizers, trainers

from gptbert.corpus import iter_corpus_documents
from gptbert.errors import GPTBertError
from gptbert.tokenizer import (
    BOS_ID,
    EOS_ID,
    MASK_ID,
    N_SPECIAL,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    build_tokenizer,
    check_vocab,
    encode_batch,
    load_tokenizer,
    train_tokenizer,
)

FIXTURE_CORPUS = Path(__file__).parent / "fixtures" / "tiny_corpus"
VOCAB = 400


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    return list(iter_corpus_documents(FIXTURE_CORPUS))


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory: pytest.TempPathFactory, corpus_texts: list[str]) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(corpus_texts, VOCAB, path)
    return path


@pytest.fixture(scope="module")
def tok(tok_path: Path):
    return load_tokenizer(tok_path)


def test_special_token_constants() -> None:
    assert SPECIAL_TOKENS[:5] == ["<unk>", "<s>", "</s>", "<pad>", "<mask>"]
    assert SPECIAL_TOKENS[5:] == [f"<special_{i}>" for i in range(11)]
    assert (UNK_ID, BOS_ID, EOS_ID, PAD_ID, MASK_ID, N_SPECIAL) == (0, 1, 2, 3, 4, 16)


def test_specials_at_ids_0_to_15(tok) -> None:
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == i
        assert tok.id_to_token(i) == token
    # First non-special ids are the 256 byte symbols.
    assert tok.id_to_token(N_SPECIAL) not in SPECIAL_TOKENS


def test_vocab_size_reached_exactly(tok) -> None:
    assert tok.get_vocab_size() == VOCAB


def test_small_corpus_gives_fewer_tokens_and_check_vocab_catches_it(corpus_texts: list[str], tmp_path: Path) -> None:
    # The fixture corpus has too few repeated pairs for 2000 tokens: training stops early.
    small = train_tokenizer(corpus_texts, 2000)
    n = small.get_vocab_size()
    assert 16 + 256 < n < 2000
    check_vocab(tmp_path / "t.json", small, n)  # matching sizes: no error
    with pytest.raises(GPTBertError) as e:
        check_vocab(tmp_path / "t.json", small, 2000)
    assert str(e.value) == (
        f"{tmp_path / 't.json'}: tokenizer has {n} tokens but the model config expects 2000 (model.vocab_size)"
    )


@pytest.mark.parametrize("bad", [100, 271, 65537])
def test_vocab_size_out_of_range(bad: int) -> None:
    with pytest.raises(GPTBertError, match="vocab_size"):
        train_tokenizer(["hello world"], bad)
    with pytest.raises(GPTBertError, match="vocab_size"):
        build_tokenizer(bad)


def test_bos_post_processing(tok) -> None:
    enc = tok.encode("hello")
    assert enc.ids[0] == BOS_ID
    assert enc.ids[1:] == encode_batch(tok, ["hello"])[0]
    pair = tok.encode("the hen", "the dog")
    assert pair.ids.count(BOS_ID) == 2 and pair.ids[0] == BOS_ID


def test_encode_batch_has_no_special_tokens(tok) -> None:
    texts = ["The hen walked to the river.", "soup !", "In 2024"]
    batch = encode_batch(tok, texts)
    assert batch == [tok.encode(t, add_special_tokens=False).ids for t in texts]
    assert all(i >= N_SPECIAL for ids in batch for i in ids)


def test_case_sensitive(tok) -> None:
    upper, lower = encode_batch(tok, ["The farm", "the farm"])
    assert upper[0] != lower[0]
    assert upper[1:] == lower[1:]
    assert tok.decode(upper) == "The farm"


def test_digits_are_single_tokens(tok) -> None:
    tokens = tok.encode("In 2024 there were 365 days and 12 apples", add_special_tokens=False).tokens
    digit_tokens = [t for t in tokens if any(c.isdigit() for c in t)]
    assert len(digit_tokens) == 9  # 2,0,2,4 3,6,5 1,2
    assert all(sum(c.isdigit() for c in t) == 1 for t in digit_tokens)


def test_digits_stay_single_even_when_numbers_repeat() -> None:
    # Without digit isolation BPE would learn "20", "24", "2024" from this text.
    tok = train_tokenizer(["In 2024 and 1999, 2024 again."] * 50, 300, min_frequency=2)
    tokens = tok.encode("2024 1999", add_special_tokens=False).tokens
    assert tokens == ["Ġ2", "0", "2", "4", "Ġ1", "9", "9", "9"]


def test_camel_case_split_before_capital(tok) -> None:
    # The case-aware regex splits "TheHen" into "The" + "Hen": no token crosses the boundary.
    pieces = tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str("TheHen"))
    assert [p for p, _ in pieces] == ["ĠThe", "Hen"]


@pytest.mark.parametrize(
    "text",
    [
        "Hello, World! The hen and the dog.",
        "In 2024 the farm had 365 sunny days.",
        "café, naïve, Zürich, Ελληνικά, 日本語, emoji 😀 and a tab\there",
        "*MOT:\twhere is the little dog ?\n*CHI:\tthere .",
        "first paragraph\n\nsecond paragraph\n  indented line",
        "  two leading spaces and  double  spaces",
        "unknown-ish bytes: \u00a9 \u2022 \u20ac \U0001f680",
    ],
)
def test_decode_round_trip(tok, text: str) -> None:
    enc = tok.encode(text)
    assert tok.decode(enc.ids, skip_special_tokens=True) == text
    assert UNK_ID not in enc.ids  # byte-level: nothing is unknown


def test_save_is_atomic_and_reloads_identically(tok_path: Path, tok, corpus_texts: list[str]) -> None:
    assert not tok_path.with_name(tok_path.name + ".tmp").exists()
    trained = train_tokenizer(corpus_texts, VOCAB)  # deterministic training
    assert encode_batch(trained, corpus_texts) == encode_batch(tok, corpus_texts)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(GPTBertError) as e:
        load_tokenizer(path)
    assert str(e.value) == f"{path}: tokenizer file does not exist"


def test_load_garbage_json(tmp_path: Path) -> None:
    path = tmp_path / "garbage.json"
    path.write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(GPTBertError, match=r"garbage\.json: tokenizer file is not valid JSON \(line 1"):
        load_tokenizer(path)


def test_load_json_that_is_not_a_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"d_model": 128}}), encoding="utf-8")
    with pytest.raises(GPTBertError, match=r"config\.json: not a valid Hugging Face tokenizer\.json"):
        load_tokenizer(path)


def test_load_wrong_special_order(tmp_path: Path, corpus_texts: list[str]) -> None:
    # Same pipeline, but the trainer puts the special tokens in reverse order.
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(reversed(SPECIAL_TOKENS)),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts, trainer=trainer)
    path = tmp_path / "reversed.json"
    tok.save(str(path))
    with pytest.raises(GPTBertError) as e:
        load_tokenizer(path)
    assert str(e.value).startswith(f"{path}: special token <unk> is at id 15 but must be at id 0")


@pytest.mark.parametrize("text", ["The cat sat.", "naïve café — ½ price\nnew line", "Émile's 3 dogs\n\n  ran"])
def test_token_byte_lengths_sum_to_the_normalized_text(tok, text: str) -> None:
    """Bits per byte divides by these: over an encoding they add up to the UTF-8 length of the text
    the BPE model saw (NFKC, one leading space, a space after each newline without trailing spaces)."""
    from gptbert.tokenizer import token_byte_lengths

    table = token_byte_lengths(tok)
    assert table.shape == (tok.get_vocab_size(),)
    assert table[:N_SPECIAL].tolist() == [0] * N_SPECIAL
    normalized = tok.normalizer.normalize_str(text)
    assert normalized.startswith(" ")
    ids = encode_batch(tok, [text])[0]
    assert int(table[ids].sum()) == len(normalized.encode("utf-8"))
