"""The GPT-BERT tokenizer: case-sensitive byte-level BPE (Charpentier & Samuel 2024, sec. 3).

We follow the official GPT-BERT recipe, built with the Hugging Face `tokenizers`
library so that training and encoding run in multi-threaded Rust:

* Special tokens come first, at fixed ids 0..15: `<unk> <s> </s> <pad> <mask>`
  and eleven spare `<special_i>` slots. The model code relies on these ids
  (`BOS_ID`, `MASK_ID`, ...) without looking them up, so `load_tokenizer`
  refuses a file where they are anywhere else.
* Normalizer: prepend a space, NFKC, and put a space after every newline (and
  drop spaces before it). A word then tokenizes the same way (" word") whether
  it starts the text, starts a line, or sits mid-line, instead of wasting
  vocabulary on space-less copies of frequent words. NFKC folds compatibility
  characters (ligatures, full-width forms) so they share tokens with their
  plain forms; this is the one place where decoding is not an exact inverse.
* Pre-tokenizer: a tiktoken/o200k-style regex that is case aware (it splits
  "camelCase" before the capital, so "The" and "the" are separate, reusable
  pieces) and isolates single digits (numbers are spelled digit by digit, which
  makes arithmetic-like patterns consistent); then byte-level mapping (every
  byte is a symbol, so nothing is ever `<unk>`); then a cap of 24 bytes per
  pre-token so a long run of symbols cannot become one giant token.
* Model: BPE with `ignore_merges=True` (a pre-token that is itself in the
  vocabulary is taken whole) and no byte fallback (byte-level already covers
  every byte).
* Post-processor: `<s> $A` (and `<s> $A <s> $B` for pairs). GPT-BERT has no
  end-of-text token in training data: every document starts with `<s>`.
* Decoder: byte-level, then strip the one prepended space and the space added
  after each newline, so `decode(encode(s).ids)` gives back `s` for ordinary
  text (NFC text without trailing spaces at line ends).

Vocabulary size: `BpeTrainer(vocab_size=V)` counts the 16 special tokens, the
256 byte symbols and the learned merges. On a corpus big enough it stops at
exactly V. On a corpus too small (not enough pairs seen `min_frequency` times)
it stops early with fewer tokens; we do not treat that as an error, but the
model's `vocab_size` must then match `get_vocab_size()`, which `check_vocab`
enforces with a clear message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from .errors import input_error
from .io import atomic_save

SPECIAL_TOKENS: list[str] = ["<unk>", "<s>", "</s>", "<pad>", "<mask>"] + [f"<special_{i}>" for i in range(11)]
UNK_ID, BOS_ID, EOS_ID, PAD_ID, MASK_ID = 0, 1, 2, 3, 4
N_SPECIAL = len(SPECIAL_TOKENS)  # 16
N_BYTES = 256  # byte-level alphabet: always in the vocabulary
MIN_VOCAB_SIZE = N_SPECIAL + N_BYTES  # 272: specials + bytes, zero merges
MAX_VOCAB_SIZE = 2**16  # token ids are stored as uint16 in the prepared corpus

# Case-aware split (from the official GPT-BERT tokenizer, o200k-like):
#   1. optional non-letter prefix, optional capitals, then lowercase letters   (" the", " The", "Word")
#   2. optional non-letter prefix, capitals, then optional lowercase         (" NASA", " I")
#   3. a single digit, optionally after a space                               (" 2", "0", "2", "4")
#   4. a run of punctuation/symbols, optionally after a space, plus newlines  (" ...", "!\n")
#   5. newlines (with the whitespace before them), then other whitespace runs
_SPLIT_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"| ?\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)
_MAX_PRETOKEN_BYTES = 24


def build_tokenizer(vocab_size: int | None = None) -> Tokenizer:
    """An untrained GPT-BERT tokenizer: the full pipeline with an empty BPE model.

    The vocabulary size belongs to the trainer, not the pipeline; when given it
    is only range-checked here, so callers fail before any training work.
    """
    if vocab_size is not None:
        _check_vocab_size_arg(vocab_size)
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False, fuse_unk=False, ignore_merges=True))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Prepend(" "),
            normalizers.NFKC(),
            # Make every line start like a mid-line word (" word"), and drop the
            # spaces that would then sit before a newline.
            normalizers.Replace(Regex("\n"), "\n "),
            normalizers.Replace(Regex(" *\n"), "\n"),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=True),
            # After byte-level mapping one character is one byte: cap pre-tokens at 24 bytes.
            pre_tokenizers.Split(Regex(f".{{1,{_MAX_PRETOKEN_BYTES}}}"), behavior="isolated", invert=False),
        ]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.ByteLevel(add_prefix_space=False, use_regex=False),
            # ByteLevel joins all tokens into one string, so these act on the whole text:
            decoders.Strip(" ", 1, 0),  # undo Prepend(" ")
            decoders.Replace("\n ", "\n"),  # undo the space added after each newline
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A",
        pair="<s> $A <s> $B",
        special_tokens=[("<s>", BOS_ID)],
    )
    return tok


def _check_vocab_size_arg(vocab_size: int) -> None:
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise input_error(
            "vocab_size",
            f"{vocab_size} is out of range: it must be at least {MIN_VOCAB_SIZE} "
            f"({N_SPECIAL} special tokens + {N_BYTES} bytes) and at most {MAX_VOCAB_SIZE} (uint16 token ids)",
        )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_path: Path | None = None,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train the tokenizer on `texts` (documents or lines) and optionally save it.

    The result has exactly `vocab_size` tokens when the corpus is big enough,
    fewer otherwise (see the module docstring); always size the model with
    `tok.get_vocab_size()`. Saving is atomic: a crash never leaves a
    half-written `tokenizer.json` behind.
    """
    tok = build_tokenizer(vocab_size)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    _check_special_tokens("<trained tokenizer>", tok)  # guards against a library change
    if out_path is not None:
        save_tokenizer(tok, out_path)
    return tok


def save_tokenizer(tok: Tokenizer, out_path: str | Path) -> None:
    """Write `tok` to `out_path` atomically (temporary file, then rename over)."""
    atomic_save(out_path, lambda tmp: tok.save(str(tmp)))


def _check_special_tokens(path: str | Path, tok: Tokenizer) -> None:
    for i, token in enumerate(SPECIAL_TOKENS):
        found = tok.token_to_id(token)
        if found != i:
            where = "missing" if found is None else f"at id {found}"
            raise input_error(
                path,
                f"special token {token} is {where} but must be at id {i} "
                "(not a GPT-BERT tokenizer; train one with gptbert's tokenizer)",
            )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a `tokenizer.json` and check it is a GPT-BERT tokenizer (special ids 0..15)."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "tokenizer file does not exist" if not path.exists() else "is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise input_error(path, f"tokenizer file is not valid UTF-8 (byte offset {e.start})") from None
    # Parse the JSON ourselves first: the library's error for bad JSON is less precise.
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        problem = f"tokenizer file is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        raise input_error(path, problem) from None
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:  # the Rust side raises plain Exception with a serde message
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise input_error(path, f"not a valid Hugging Face tokenizer.json ({reason})") from None
    _check_special_tokens(path, tok)
    if tok.get_vocab_size() > MAX_VOCAB_SIZE:
        n = tok.get_vocab_size()
        raise input_error(path, f"tokenizer has {n} tokens; at most {MAX_VOCAB_SIZE} are supported (uint16 ids)")
    return tok


def encode_batch(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (the corpus adds `<s>` itself).

    Corpus text is text: a literal "<s>", "</s>" or "<mask>" inside a document
    (web pages, code, papers about tokenizers) is encoded as ordinary
    characters, never as the special ids, which would fake document boundaries
    and show `<mask>` in training input. `encode_batch_fast` is `encode_batch`
    (multi-threaded in Rust) minus the character offsets, which we never use.
    """
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # older tokenizers lack the fast one
    before = tok.encode_special_tokens
    tok.encode_special_tokens = True  # special-token strings are not matched in the text
    try:
        return [enc.ids for enc in encode(list(texts), add_special_tokens=False)]
    finally:
        tok.encode_special_tokens = before


def token_byte_lengths(tok: Tokenizer) -> np.ndarray:
    """Bytes of text each token id stands for, (V,) int64; 0 for the special tokens.

    After the byte-level mapping one character of a token string is one byte, so the length of
    the string is its byte count. The bytes are those of the *normalized* text (NFKC, the leading
    space, one space after each newline): summed over an encoding they give the length of what
    the BPE model saw. Validation divides by them to report bits per byte, a loss that does not
    depend on the tokenizer's vocabulary (issue 12: GPT-2 and GPT-BERT compared on one scale).
    """
    out = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    special = set(SPECIAL_TOKENS)
    for token, i in tok.get_vocab().items():
        if token not in special:
            out[i] = len(token)
    return out


def check_vocab(tok_path: str | Path, tok: Tokenizer, vocab_size_expected: int) -> None:
    """Fail clearly when the tokenizer and the model config disagree on vocabulary size."""
    n = tok.get_vocab_size()
    if n != vocab_size_expected:
        raise input_error(
            tok_path, f"tokenizer has {n} tokens but the model config expects {vocab_size_expected} (model.vocab_size)"
        )


__all__ = [
    "SPECIAL_TOKENS",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "MASK_ID",
    "N_SPECIAL",
    "build_tokenizer",
    "train_tokenizer",
    "save_tokenizer",
    "load_tokenizer",
    "encode_batch",
    "check_vocab",
    "token_byte_lengths",
]
