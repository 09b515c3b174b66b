"""BabyLM corpus folder -> packed uint16 token arrays for pretraining.

Input: a folder (searched recursively) of `*.train`, `*.test`, `*.txt` and
`*.jsonl` files. Everything else (`.csv`, `.zip`, `.gz`, READMEs) is ignored,
as are hidden files and folders (names starting with "."), so the raw BabyLM
download can be pointed at directly.

How lines become documents
--------------------------
* Text files: a document is a maximal run of non-blank lines, cut into pieces
  of at most `max_doc_lines` (default 128) lines. Blank lines are where the
  corpora mark story or transcript boundaries. The cap matters for files with
  no blank lines at all (CHILDES and Switchboard transcripts are one utterance
  per line): without it such a file would be one giant document, so the
  validation split could only take or leave whole files, and document
  boundaries (`<s>`) would almost never be seen in training. 128 lines is a
  few hundred to a few thousand tokens, a handful of training sequences.
* Lines are kept verbatim, joined with "\\n", except that trailing whitespace
  (and the `\\r` of CRLF files) is stripped. Speaker tags such as `*MOT:\\t...`
  or `A:\\t...` are kept: they carry turn-taking, which the BLiMP supplement's
  `turn_taking` task tests, and removing them would merge two speakers'
  utterances into one voice.
* `.jsonl` files: one JSON value per line, either an object with a string
  `text` field or a bare JSON string (the official GPT-BERT format); each is
  one document, not cut. Blank lines and empty texts are skipped.

Output (into `out_dir`)
-----------------------
* `train.bin`, `val.bin`: flat uint16 token ids; every document is written as
  `[BOS_ID] + ids` and documents are concatenated. uint16 halves the size of
  int32 and is enough for any vocabulary up to 65,536 tokens.
* `train_docs.npy`, `val_docs.npy`: int64 start offset of every document.
* `meta.json`: counts, the tokenizer's sha256 and the settings used.
* `tokenizer.json`: a copy of the tokenizer, so the folder is self-contained
  (and a tokenizer kept inside `out_dir` survives re-preparing).

The validation split takes exactly `round(val_fraction * n_docs)` documents
(at least one, and at least one left for training), chosen by a numpy
Generator seeded with `seed` from the document indices, so the split only
depends on (seed, corpus). Choosing whole documents, rather than a tail of the
token stream, keeps validation text from every source in the folder.

Robustness: files are read twice in a streaming way, line by line and never
whole (the first pass validates every file and counts documents, so a bad file
fails fast before any tokenization; the second tokenizes in batches and appends
to the .bin files). Nothing is written into `out_dir` directly: everything goes
into a fresh temporary folder next to it, which is swapped into place only once
complete, so an existing `out_dir` is never damaged by a failure halfway.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GPTBertError, input_error
from .io import replace_dir, sha256_file, temp_path, write_synced
from .tokenizer import BOS_ID, encode_batch, load_tokenizer
from .words import WORD_TABLE_FILE, WordTable, count_words

CORPUS_SUFFIXES = (".train", ".test", ".txt", ".jsonl")
SPLITS = ("train", "val")

TOKEN_DTYPE = np.uint16
META_KEYS = (
    "vocab_size",
    "tokenizer_sha256",
    "files",
    "words",
    "documents",
    "train_tokens",
    "val_tokens",
    "train_documents",
    "val_documents",
    "val_fraction",
    "seed",
    "max_doc_lines",
)

_READ_PIECE_BYTES = 1 << 22  # 4 MiB: how much of an over-long line we hold at once while measuring it


# ----------------------------------------------------------------------------------------------
# finding and reading files


def skipped_files(folder: str | Path) -> list[tuple[Path, str]]:
    """Files under `folder` that `find_corpus_files` leaves out, with the reason (reported by `prepare`)."""
    folder = Path(folder)
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            out.append((p, "hidden"))
        elif p.suffix not in CORPUS_SUFFIXES:
            out.append((p, f"not a corpus file type ({', '.join(CORPUS_SUFFIXES)})"))
    return out


def find_corpus_files(folder: str | Path) -> list[Path]:
    """All corpus files under `folder` (recursive, sorted, hidden entries skipped; see `skipped_files`)."""
    folder = Path(folder)
    if not folder.exists():
        raise input_error(folder, "corpus folder does not exist")
    if not folder.is_dir():
        raise input_error(folder, "corpus folder is not a folder")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix in CORPUS_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise input_error(folder, "no corpus files (*.train, *.test, *.txt, *.jsonl) found")
    if all(p.stat().st_size == 0 for p in files):
        raise input_error(folder, f"all {len(files)} corpus files are empty")
    return files


def _count_utf8_chars(data: bytes) -> int:
    """Characters in UTF-8 `data`, counted without decoding (every byte that is not 0b10xxxxxx)."""
    return int(np.count_nonzero((np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80))


def _too_long(path: Path, line_no: int, n_chars: int, max_line_chars: int) -> GPTBertError:
    return input_error(
        path,
        f"line {line_no} is {n_chars} characters long (limit {max_line_chars}); is this really a text corpus?",
    )


def _check_nul(path: Path, data: bytes, offset: int, line_no: int) -> None:
    nul = data.find(b"\0")
    if nul >= 0:
        raise input_error(path, f"binary file (NUL byte at byte offset {offset + nul}, line {line_no})")


def _iter_lines(path: Path, max_line_chars: int) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline), streaming, with input checks.

    Reading in binary and decoding line by line lets the errors name the exact
    byte offset, and `readline(limit)` means an over-long line (a binary or
    minified file renamed .txt) is measured piece by piece instead of being
    built up in memory.
    """
    # A line of at most max_line_chars characters has at most 4 bytes per character, plus "\r\n".
    # So a line that does not end within max_bytes is certainly too long.
    max_bytes = 4 * max_line_chars + 2
    offset = 0  # byte offset of the current line's start
    with open(path, "rb") as f:
        line_no = 0
        while raw := f.readline(max_bytes):
            line_no += 1
            _check_nul(path, raw, offset, line_no)
            if len(raw) == max_bytes and not raw.endswith(b"\n"):
                # Measure the rest of the line without keeping it, then fail.
                n_chars = _count_utf8_chars(raw)
                piece_offset = offset + len(raw)
                while not raw.endswith(b"\n") and (raw := f.readline(_READ_PIECE_BYTES)):
                    _check_nul(path, raw, piece_offset, line_no)
                    n_chars += _count_utf8_chars(raw)
                    piece_offset += len(raw)
                n_chars -= 1 if raw.endswith(b"\r\n") else 0  # line terminators are not line content
                n_chars -= 1 if raw.endswith(b"\n") else 0
                raise _too_long(path, line_no, n_chars, max_line_chars)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise input_error(path, f"not valid UTF-8 (byte offset {offset + e.start}, line {line_no})") from None
            text = text.rstrip("\n")
            if line_no == 1 and text.startswith("\ufeff"):  # UTF-8 byte order mark (Windows editors)
                text = text[1:]
            if len(text.rstrip("\r")) > max_line_chars:
                raise _too_long(path, line_no, len(text.rstrip("\r")), max_line_chars)
            offset += len(raw)
            yield line_no, text


def _jsonl_documents(path: Path, max_line_chars: int) -> Iterator[str]:
    for line_no, line in _iter_lines(path, max_line_chars):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise input_error(path, f"line {line_no} is not valid JSON ({e.msg}, column {e.colno})") from None
        text = obj.get("text") if isinstance(obj, dict) else obj
        if not isinstance(text, str):
            problem = f'line {line_no} is not a JSON object with a string "text" field (nor a JSON string)'
            raise input_error(path, problem)
        if text.strip():
            yield text


def _text_documents(path: Path, max_doc_lines: int, max_line_chars: int) -> Iterator[str]:
    lines: list[str] = []
    for _, line in _iter_lines(path, max_line_chars):
        line = line.rstrip()  # trailing spaces, tabs and the "\r" of CRLF line ends
        if not line:  # a blank line ends the document
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        lines.append(line)
        if len(lines) == max_doc_lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


def read_documents(path: str | Path, max_doc_lines: int = 128, max_line_chars: int = 1_000_000) -> Iterator[str]:
    """The documents of one corpus file (see the module docstring for the rules)."""
    path = Path(path)
    if max_doc_lines < 1:
        raise input_error("max_doc_lines", f"must be at least 1, got {max_doc_lines}")
    if path.suffix == ".jsonl":
        return _jsonl_documents(path, max_line_chars)
    return _text_documents(path, max_doc_lines, max_line_chars)


def iter_corpus_documents(
    data_dir: str | Path, max_doc_lines: int = 128, max_line_chars: int = 1_000_000
) -> Iterator[str]:
    """Every document of every corpus file under `data_dir`, in file order (e.g. to train the tokenizer)."""
    for path in find_corpus_files(data_dir):
        yield from read_documents(path, max_doc_lines, max_line_chars)


# ----------------------------------------------------------------------------------------------
# preparing


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_out_dir(out_dir: Path, data_dir: Path) -> None:
    """Refuse output folders that replacing would destroy something that is not ours."""
    if _is_within(data_dir, out_dir):
        raise input_error(out_dir, f"output folder contains the corpus folder {data_dir}; choose another output folder")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise input_error(out_dir, "output path exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / "meta.json").is_file():
            raise input_error(
                out_dir,
                "output folder is not empty and has no meta.json (not a prepared corpus); "
                "refusing to replace it, choose an empty or new folder",
            )


class _SplitWriter:
    """Appends documents of one split to `<split>.bin` and records where each starts."""

    def __init__(self, folder: Path, split: str) -> None:
        self.bin_path = folder / f"{split}.bin"
        self.docs_path = folder / f"{split}_docs.npy"
        self.file = open(self.bin_path, "wb")
        self.n_tokens = 0
        self.starts: list[np.ndarray] = []

    def write(self, docs: list[list[int]]) -> None:
        if not docs:
            return
        lengths = np.fromiter((len(ids) + 1 for ids in docs), dtype=np.int64, count=len(docs))
        n = int(lengths.sum())
        # One flat array per batch, built straight from the id lists (no per-document arrays).
        flat = np.fromiter(chain.from_iterable(chain((BOS_ID,), ids) for ids in docs), dtype=TOKEN_DTYPE, count=n)
        self.file.write(flat.tobytes())  # a Python write: a full disk raises OSError with its errno
        self.starts.append(self.n_tokens + np.cumsum(lengths) - lengths)
        self.n_tokens += n

    def close(self) -> int:
        """Finish the files; return the number of documents."""
        self.file.close()
        starts = np.concatenate(self.starts) if self.starts else np.zeros(0, dtype=np.int64)
        buf = io.BytesIO()
        np.save(buf, starts.astype(np.int64))
        self.docs_path.write_bytes(buf.getvalue())
        return len(starts)


def _write_split_files(
    folder: Path,
    data_dir: Path,
    files: Sequence[Path],
    tok: Any,
    is_val: np.ndarray,
    max_doc_lines: int,
    max_line_chars: int,
    batch_docs: int,
) -> dict[str, int]:
    """Tokenize every document and append it to its split; return the counts."""
    writers = {split: _SplitWriter(folder, split) for split in SPLITS}
    words = 0
    doc_index = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal doc_index
        ids = encode_batch(tok, batch)
        val_mask = is_val[doc_index : doc_index + len(batch)]
        writers["train"].write([x for x, v in zip(ids, val_mask) if not v])
        writers["val"].write([x for x, v in zip(ids, val_mask) if v])
        doc_index += len(batch)
        batch.clear()

    try:
        for path in files:
            for doc in read_documents(path, max_doc_lines, max_line_chars):
                if doc_index + len(batch) >= len(is_val):
                    raise input_error(data_dir, "corpus changed while it was being prepared; run again")
                words += len(doc.split())
                batch.append(doc)
                if len(batch) == batch_docs:
                    flush()
        if batch:
            flush()
    finally:
        for w in writers.values():
            w.file.close()
    if doc_index != len(is_val):
        raise input_error(data_dir, "corpus changed while it was being prepared; run again")
    n_docs = {split: w.close() for split, w in writers.items()}
    return {
        "words": words,
        "train_tokens": writers["train"].n_tokens,
        "val_tokens": writers["val"].n_tokens,
        "train_documents": n_docs["train"],
        "val_documents": n_docs["val"],
    }


def _stream_words(path: Path, table: WordTable, chunk: int = 1 << 22) -> int:
    """Words in a token stream file, counted in chunks (each chunk knows the token before it)."""
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r") if path.stat().st_size else np.zeros(0, TOKEN_DTYPE)
    total = 0
    for s in range(0, tokens.shape[0], chunk):
        total += count_words(tokens[s:s + chunk], table, int(tokens[s - 1]) if s else None)
    return total


def prepare_corpus(
    data_dir: str | Path,
    tokenizer_path: str | Path,
    out_dir: str | Path,
    val_fraction: float = 0.01,
    seed: int = 0,
    max_doc_lines: int = 128,
    batch_docs: int = 2048,
    max_line_chars: int = 1_000_000,
) -> dict[str, Any]:
    """Tokenize the corpus in `data_dir` into `out_dir`; return the stats written to meta.json.

    `max_line_chars` guards against binary or minified files; raise it for a
    `.jsonl` whose single-line documents are whole books (the limit applies to
    the JSON line).
    """
    data_dir, tokenizer_path, out_dir = Path(data_dir), Path(tokenizer_path), Path(out_dir)
    if not 0.0 < val_fraction < 1.0:
        raise input_error("val_fraction", f"must be between 0 and 1 (exclusive), got {val_fraction}")
    if max_doc_lines < 1:
        raise input_error("max_doc_lines", f"must be at least 1, got {max_doc_lines}")
    if batch_docs < 1:
        raise input_error("batch_docs", f"must be at least 1, got {batch_docs}")

    files = find_corpus_files(data_dir)
    tok = load_tokenizer(tokenizer_path)  # also checks the vocabulary fits uint16
    _check_out_dir(out_dir, data_dir)

    # Pass 1: validate every file and count documents, before any expensive work.
    n_docs = sum(1 for path in files for _ in read_documents(path, max_doc_lines, max_line_chars))
    if n_docs < 2:
        raise input_error(
            data_dir,
            f"corpus has {n_docs} document(s); at least 2 are needed (one for training, one for validation)",
        )
    n_val = min(max(1, round(val_fraction * n_docs)), n_docs - 1)
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[np.random.default_rng(seed).choice(n_docs, size=n_val, replace=False)] = True

    # Pass 2: tokenize into a fresh folder next to out_dir, then swap it in.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of this pid's own earlier crash
    tmp.mkdir()
    try:
        counts = _write_split_files(tmp, data_dir, files, tok, is_val, max_doc_lines, max_line_chars, batch_docs)
        # Words as the trainer counts them (words.py), saved with the table it counts them with.
        table = WordTable.from_tokenizer(tok)
        buf = io.BytesIO()
        np.save(buf, np.stack([table.starts_inside, table.first_is_word, table.ends_in_space]).astype(np.uint8))
        (tmp / WORD_TABLE_FILE).write_bytes(buf.getvalue())
        stream_words = {split: _stream_words(tmp / f"{split}.bin", table) for split in SPLITS}
        shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
        meta: dict[str, Any] = {
            "vocab_size": tok.get_vocab_size(),
            "tokenizer_sha256": sha256_file(tokenizer_path),
            "files": [p.relative_to(data_dir).as_posix() for p in files],
            "words": counts["words"],
            "train_words": stream_words["train"],
            "val_words": stream_words["val"],
            "documents": n_docs,
            "train_tokens": counts["train_tokens"],
            "val_tokens": counts["val_tokens"],
            "train_documents": counts["train_documents"],
            "val_documents": counts["val_documents"],
            "val_fraction": val_fraction,
            "seed": seed,
            "max_doc_lines": max_doc_lines,
            "dtype": np.dtype(TOKEN_DTYPE).name,
            "data_dir": str(data_dir.resolve()),
            "skipped_files": [f"{p.relative_to(data_dir).as_posix()}: {why}" for p, why in skipped_files(data_dir)],
            "tokenizer_path": str(tokenizer_path.resolve()),
        }
        # meta.json last: a folder with a meta.json is a complete one.
        write_synced(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


# ----------------------------------------------------------------------------------------------
# loading


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    """The meta.json of a prepared corpus folder, checked for the keys the loaders rely on."""
    path = Path(out_dir) / "meta.json"
    if not path.is_file():
        raise input_error(path, "missing; is this a prepared corpus folder? (run the prepare step)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise input_error(path, f"not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise input_error(path, "not a JSON object")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise input_error(path, f"missing keys: {', '.join(missing)}")
    for key in ("vocab_size", "documents", "train_tokens", "val_tokens", "train_documents", "val_documents"):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0:
            raise input_error(path, f"{key} must be a non-negative integer, got {meta[key]!r}")
    return meta


def load_split(out_dir: str | Path, split: str) -> tuple[np.memmap, np.ndarray]:
    """(tokens, doc_starts) of one split: a read-only uint16 memmap and int64 start offsets."""
    out_dir = Path(out_dir)
    if split not in SPLITS:
        raise input_error(out_dir, f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    meta = read_meta(out_dir)
    bin_path, docs_path = out_dir / f"{split}.bin", out_dir / f"{split}_docs.npy"
    for p in (bin_path, docs_path):
        if not p.is_file():
            raise input_error(p, "missing; prepare the corpus again")

    itemsize = np.dtype(TOKEN_DTYPE).itemsize
    size = bin_path.stat().st_size
    n_expected = meta[f"{split}_tokens"]
    if size % itemsize or size // itemsize != n_expected:
        raise input_error(
            bin_path,
            f"holds {size / itemsize:g} tokens but meta.json says {n_expected} (truncated or from another run?)",
        )
    if n_expected == 0:
        raise input_error(bin_path, "has no tokens")
    tokens = np.memmap(bin_path, dtype=TOKEN_DTYPE, mode="r")

    try:
        starts = np.load(docs_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise input_error(docs_path, f"not a valid .npy file ({e})") from None
    n_docs = meta[f"{split}_documents"]
    if starts.ndim != 1 or starts.dtype.kind not in "iu" or len(starts) != n_docs:
        raise input_error(
            docs_path, f"expected {n_docs} integer document offsets, found shape {starts.shape} {starts.dtype}"
        )
    starts = starts.astype(np.int64, copy=False)
    if n_docs == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n_expected:
        raise input_error(
            docs_path,
            f"document offsets are not increasing from 0 to below the token count {n_expected} (corrupted?)",
        )
    if np.any(tokens[starts] != BOS_ID):
        problem = f"some document offsets do not point at a <s> token in {bin_path.name} (mismatched files?)"
        raise input_error(docs_path, problem)
    return tokens, starts


def corpus_stats_line(stats: dict[str, Any]) -> str:
    """One-line human summary of `prepare_corpus` stats / meta.json (tokens include one <s> per document)."""
    files = stats["files"]
    n_files = len(files) if isinstance(files, (list, tuple)) else int(files)
    train, val = stats["train_tokens"], stats["val_tokens"]
    skipped = stats.get("skipped_files") or []
    return (
        f"files={n_files} words={stats['words']:,} documents={stats['documents']:,} "
        f"tokens={train + val:,} (train {train:,}, val {val:,})"
        + (f"; skipped {len(skipped)} file(s): {'; '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}"
           if skipped else "")
    )


__all__ = [
    "CORPUS_SUFFIXES",
    "find_corpus_files",
    "read_documents",
    "iter_corpus_documents",
    "prepare_corpus",
    "read_meta",
    "load_split",
    "corpus_stats_line",
]
