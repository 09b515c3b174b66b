"""Tests for gptbert.corpus: document splitting, packed output, input errors, safe output replacement."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

import gptbert.corpus as corpus
import gptbert.io
from gptbert.corpus import (
    corpus_stats_line,
    find_corpus_files,
    iter_corpus_documents,
    load_split,
    prepare_corpus,
    read_documents,
    read_meta,
)
from gptbert.errors import GPTBertError
from gptbert.tokenizer import BOS_ID, encode_batch, load_tokenizer, train_tokenizer

FIXTURE_CORPUS = Path(__file__).parent / "fixtures" / "tiny_corpus"
REAL_CORPUS = Path(__file__).parents[1] / ".." / "shared" / "data" / "pretrain"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(iter_corpus_documents(FIXTURE_CORPUS), 400, path)
    return path


@pytest.fixture(scope="module")
def tok(tok_path: Path):
    return load_tokenizer(tok_path)


def many_docs_corpus(folder: Path, n_docs: int = 40) -> Path:
    """A corpus of `n_docs` distinct two-line documents split over a .txt and a .jsonl file."""
    half = n_docs // 2
    stories = [f"The hen saw {i} dogs.\nThe dog number {i} ran." for i in range(half)]
    notes = [json.dumps({"text": f"Note {i}: the library opens."}) for i in range(half, n_docs)]
    write(folder / "a.txt", "\n\n".join(stories) + "\n")
    write(folder / "b.jsonl", "\n".join(notes) + "\n")
    return folder


# ------------------------------------------------------------------------------------------------
# finding files and splitting documents


def test_find_corpus_files_recursive_sorted_and_filtered() -> None:
    files = find_corpus_files(FIXTURE_CORPUS)
    assert [p.relative_to(FIXTURE_CORPUS).as_posix() for p in files] == [
        "nested/dialogue.train",
        "notes.jsonl",
        "stories.txt",
    ]  # ignored.csv, README and .hidden.txt are skipped


def test_find_corpus_files_ignores_other_extensions(tmp_path: Path) -> None:
    for name in ("data.csv", "data.zip", "data.csv.gz", "0_README", "notes.md", ".secret.txt"):
        write(tmp_path / name, "some text\n")
    write(tmp_path / "sub" / "x.test", "a test line\n")
    assert find_corpus_files(tmp_path) == [tmp_path / "sub" / "x.test"]


def test_blank_lines_end_documents_and_trailing_whitespace_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", b"first line  \r\nsecond\tline\r\n \r\n\r\n  indented third\n\n\nlast")
    assert list(read_documents(path)) == ["first line\nsecond\tline", "  indented third", "last"]


def test_max_doc_lines_cuts_long_runs(tmp_path: Path) -> None:
    path = write(tmp_path / "a.train", "".join(f"line {i}\n" for i in range(7)) + "\nafter blank\n")
    docs = list(read_documents(path, max_doc_lines=3))
    assert docs == ["line 0\nline 1\nline 2", "line 3\nline 4\nline 5", "line 6", "after blank"]


def test_speaker_tags_are_kept_verbatim(tmp_path: Path) -> None:
    path = write(tmp_path / "chat.train", "*MOT:\twhere is the dog ?\n*CHI:\tthere .\nA:\tyes.\nB:\tno.\n")
    assert list(read_documents(path)) == ["*MOT:\twhere is the dog ?\n*CHI:\tthere .\nA:\tyes.\nB:\tno."]


def test_fixture_dialogue_documents() -> None:
    docs = list(read_documents(FIXTURE_CORPUS / "nested" / "dialogue.train"))
    assert len(docs) == 2
    assert docs[1].split("\n") == [
        "*FAT:\twhat did you have for lunch today ?",
        "*CHI:\tsoup .",
        "*FAT:\twas the soup hot ?",
        "*CHI:\thot soup !",
    ]


def test_jsonl_documents(tmp_path: Path) -> None:
    lines = [
        json.dumps({"text": "one\n\ntwo paragraphs", "id": 1}),
        "",
        json.dumps("a bare string document"),
        json.dumps({"text": "   "}),  # empty text: skipped
        json.dumps({"text": "x " * 300}),  # not cut by max_doc_lines
    ]
    path = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    docs = list(read_documents(path, max_doc_lines=1))
    assert docs == ["one\n\ntwo paragraphs", "a bare string document", "x " * 300]


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.txt", "\ufeffHello there\n".encode("utf-8"))
    assert list(read_documents(path)) == ["Hello there"]


# ------------------------------------------------------------------------------------------------
# prepare_corpus output


def test_prepare_exact_output(tmp_path: Path, tok_path: Path, tok) -> None:
    data = many_docs_corpus(tmp_path / "data", 40)
    out = tmp_path / "out"
    stats = prepare_corpus(data, tok_path, out, val_fraction=0.1, seed=3, batch_docs=7)

    docs = list(iter_corpus_documents(data))
    assert len(docs) == 40 and len(set(docs)) == 40
    ids = encode_batch(tok, docs)

    # The documented split rule: exactly round(0.1 * 40) = 4 documents, drawn by numpy from the seed.
    is_val = np.zeros(40, dtype=bool)
    is_val[np.random.default_rng(3).choice(40, size=4, replace=False)] = True
    expected = {
        split: [[BOS_ID] + ids[i] for i in range(40) if is_val[i] == (split == "val")] for split in ("train", "val")
    }
    for split in ("train", "val"):
        tokens, starts = load_split(out, split)
        assert tokens.dtype == np.uint16 and not tokens.flags.writeable
        assert tokens.tolist() == [t for doc in expected[split] for t in doc]
        assert starts.dtype == np.int64
        assert starts.tolist() == np.cumsum([0] + [len(d) for d in expected[split]])[:-1].tolist()

    meta = read_meta(out)
    assert meta == stats
    assert meta["documents"] == 40 and meta["train_documents"] == 36 and meta["val_documents"] == 4
    assert meta["train_tokens"] == sum(map(len, expected["train"]))
    assert meta["val_tokens"] == sum(map(len, expected["val"]))
    assert meta["words"] == sum(len(d.split()) for d in docs)
    assert meta["files"] == ["a.txt", "b.jsonl"]
    assert meta["vocab_size"] == 400
    assert meta["tokenizer_sha256"] == hashlib.sha256(tok_path.read_bytes()).hexdigest()
    assert (meta["val_fraction"], meta["seed"], meta["max_doc_lines"]) == (0.1, 3, 128)
    assert (out / "tokenizer.json").read_bytes() == tok_path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # no temporary folders left


def test_split_partitions_documents_in_order(tmp_path: Path, tok_path: Path, tok) -> None:
    """Independent of how the split is drawn: train and val together are all documents, each once, in order."""
    data = many_docs_corpus(tmp_path / "data", 30)
    prepare_corpus(data, tok_path, tmp_path / "out", val_fraction=0.2, seed=11)
    docs = list(iter_corpus_documents(data))

    def split_docs(split: str) -> list[str]:
        tokens, starts = load_split(tmp_path / "out", split)
        bounds = list(starts) + [len(tokens)]
        return [tok.decode(tokens[a:b].tolist(), skip_special_tokens=True) for a, b in zip(bounds, bounds[1:])]

    train, val = split_docs("train"), split_docs("val")
    assert len(val) == 6 and len(train) == 24
    ti, vi = 0, 0
    for d in docs:  # two-pointer merge: each document comes next from exactly one split
        if ti < len(train) and train[ti] == d:
            ti += 1
        elif vi < len(val) and val[vi] == d:
            vi += 1
        else:
            pytest.fail(f"document {d!r} missing or out of order")
    assert (ti, vi) == (len(train), len(val))


def test_split_is_deterministic_and_seed_dependent(tmp_path: Path, tok_path: Path) -> None:
    data = many_docs_corpus(tmp_path / "data", 40)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare_corpus(data, tok_path, tmp_path / name, val_fraction=0.25, seed=seed)
    val = {n: (tmp_path / n / "val.bin").read_bytes() for n in "abc"}
    assert val["a"] == val["b"]
    assert val["a"] != val["c"]


def test_tiny_fraction_still_gives_one_val_document(tmp_path: Path, tok_path: Path) -> None:
    data = many_docs_corpus(tmp_path / "data", 4)
    stats = prepare_corpus(data, tok_path, tmp_path / "out", val_fraction=0.001)
    assert (stats["train_documents"], stats["val_documents"]) == (3, 1)


def test_prepare_fixture_corpus_and_stats_line(tmp_path: Path, tok_path: Path) -> None:
    stats = prepare_corpus(FIXTURE_CORPUS, tok_path, tmp_path / "out", val_fraction=0.2)
    assert stats["documents"] == 9  # 2 dialogue + 3 jsonl + 4 story paragraphs
    assert stats["val_documents"] == 2
    line = corpus_stats_line(stats)
    total = stats["train_tokens"] + stats["val_tokens"]
    assert line == (
        f"files=3 words={stats['words']:,} documents=9 tokens={total:,} "
        f"(train {stats['train_tokens']:,}, val {stats['val_tokens']:,}); skipped 3 file(s): "
        ".hidden.txt: hidden; README: not a corpus file type (.train, .test, .txt, .jsonl); "
        "ignored.csv: not a corpus file type (.train, .test, .txt, .jsonl)"
    )


def test_corpus_stats_line_format() -> None:
    stats = {"files": ["a", "b"], "words": 2321812, "documents": 3039, "train_tokens": 3352452, "val_tokens": 29778}
    assert corpus_stats_line(stats) == (
        "files=2 words=2,321,812 documents=3,039 tokens=3,382,230 (train 3,352,452, val 29,778)"
    )


# ------------------------------------------------------------------------------------------------
# bad input


def expect_error(fn, *needles: str) -> str:
    with pytest.raises(GPTBertError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_folder(tmp_path: Path, tok_path: Path) -> None:
    missing = tmp_path / "nowhere"
    msg = expect_error(lambda: prepare_corpus(missing, tok_path, tmp_path / "out"))
    assert msg == f"{missing}: corpus folder does not exist"


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "only.csv", "a,b\n")
    msg = expect_error(lambda: find_corpus_files(tmp_path / "data"))
    assert msg == f"{tmp_path / 'data'}: no corpus files (*.train, *.test, *.txt, *.jsonl) found"


def test_only_empty_file(tmp_path: Path) -> None:
    write(tmp_path / "data" / "empty.txt", "")
    expect_error(lambda: find_corpus_files(tmp_path / "data"), str(tmp_path / "data"), "empty")


def test_only_blank_lines(tmp_path: Path, tok_path: Path) -> None:
    write(tmp_path / "data" / "blank.txt", "\n  \n\t\n")
    expect_error(lambda: prepare_corpus(tmp_path / "data", tok_path, tmp_path / "out"), "has 0 document(s)")


def test_binary_file(tmp_path: Path, tok_path: Path) -> None:
    write(tmp_path / "data" / "good.txt", "fine text\n")
    bad = write(tmp_path / "data" / "image.train", b"ok line\nPK\x03\x04\x00\x00\x14\x00 zipped")
    msg = expect_error(lambda: prepare_corpus(tmp_path / "data", tok_path, tmp_path / "out"))
    assert msg == f"{bad}: binary file (NUL byte at byte offset 12, line 2)"


def test_non_utf8_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "latin1.txt", "caf\u00e9 au lait\n".encode("latin-1"))
    msg = expect_error(lambda: list(read_documents(bad)))
    assert msg == f"{bad}: not valid UTF-8 (byte offset 3, line 1)"


def test_ten_megabyte_line(tmp_path: Path, tok_path: Path) -> None:
    bad = write(tmp_path / "data" / "huge.txt", "short line\n" + "a" * 10_000_000 + "\nmore\n")
    msg = expect_error(lambda: prepare_corpus(tmp_path / "data", tok_path, tmp_path / "out"))
    assert msg == f"{bad}: line 2 is 10000000 characters long (limit 1000000); is this really a text corpus?"


def test_long_line_limit_counts_characters_not_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "u.txt", "é" * 50 + "\n")  # 50 characters, 100 bytes
    assert list(read_documents(path, max_line_chars=50)) == ["é" * 50]
    expect_error(lambda: list(read_documents(path, max_line_chars=49)), "line 1 is 50 characters long (limit 49)")
    path = write(tmp_path / "v.txt", "é" * 500 + "\r\n")  # beyond 4 bytes/char: measured piece by piece
    expect_error(lambda: list(read_documents(path, max_line_chars=100)), "line 1 is 500 characters long (limit 100)")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "line 2 is not valid JSON"),
        (json.dumps({"title": "no text field"}), 'line 2 is not a JSON object with a string "text" field'),
        (json.dumps({"text": 42}), 'line 2 is not a JSON object with a string "text" field'),
    ],
)
def test_bad_jsonl_line(tmp_path: Path, line: str, problem: str) -> None:
    bad = write(tmp_path / "d.jsonl", json.dumps({"text": "good"}) + "\n" + line + "\n")
    msg = expect_error(lambda: list(read_documents(bad)))
    assert msg.startswith(f"{bad}: {problem}")


def test_bad_arguments(tmp_path: Path, tok_path: Path) -> None:
    data = many_docs_corpus(tmp_path / "data", 4)
    expect_error(lambda: prepare_corpus(data, tok_path, tmp_path / "o", val_fraction=0.0), "val_fraction")
    expect_error(lambda: prepare_corpus(data, tok_path, tmp_path / "o", max_doc_lines=0), "max_doc_lines")
    expect_error(lambda: prepare_corpus(data, tmp_path / "missing.json", tmp_path / "o"), "missing.json")


# ------------------------------------------------------------------------------------------------
# existing output is never damaged


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_existing_output_survives_bad_corpus(tmp_path: Path, tok_path: Path) -> None:
    out = tmp_path / "out"
    prepare_corpus(many_docs_corpus(tmp_path / "good", 10), tok_path, out)
    write(out / "sentinel.txt", "keep me")
    before = snapshot(out)

    write(tmp_path / "bad" / "a.txt", "fine\n")
    write(tmp_path / "bad" / "b.txt", b"\xff\xfe broken")
    expect_error(lambda: prepare_corpus(tmp_path / "bad", tok_path, out), "b.txt", "not valid UTF-8")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "out"]


def test_existing_output_survives_failure_midway(
    tmp_path: Path, tok_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = many_docs_corpus(tmp_path / "data", 10)
    out = tmp_path / "out"
    prepare_corpus(data, tok_path, out)
    write(out / "sentinel.txt", "keep me")
    before = snapshot(out)

    calls = []
    real_encode_batch = corpus.encode_batch

    def failing_encode_batch(tok, texts):
        calls.append(len(texts))
        if len(calls) == 2:  # the first batch is already written to the temporary folder
            raise RuntimeError("disk full (simulated)")
        return real_encode_batch(tok, texts)

    monkeypatch.setattr(corpus, "encode_batch", failing_encode_batch)
    with pytest.raises(RuntimeError, match="simulated"):
        prepare_corpus(data, tok_path, out, batch_docs=3)
    assert len(calls) == 2
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # temporary folder cleaned up


def test_failed_swap_restores_previous_output(
    tmp_path: Path, tok_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = many_docs_corpus(tmp_path / "data", 10)
    out = tmp_path / "out"
    prepare_corpus(data, tok_path, out)
    before = snapshot(out)
    real_rename = gptbert.io.os.replace

    def rename(src, dst):  # moving the old output aside works, moving the new one in fails
        if Path(src).name.startswith(".out.tmp-"):
            raise OSError("rename failed (simulated)")
        real_rename(src, dst)

    monkeypatch.setattr(gptbert.io.os, "replace", rename)
    with pytest.raises(OSError, match="simulated"):
        prepare_corpus(data, tok_path, out, seed=5)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]


def test_rerun_replaces_output_cleanly(tmp_path: Path, tok_path: Path) -> None:
    out = tmp_path / "out"
    prepare_corpus(many_docs_corpus(tmp_path / "d1", 10), tok_path, out)
    write(out / "sentinel.txt", "stale")
    stats = prepare_corpus(many_docs_corpus(tmp_path / "d2", 20), tok_path, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", "tokenizer.json", "train.bin", "train_docs.npy", "val.bin", "val_docs.npy", "word_table.npy",
    ]
    assert read_meta(out)["documents"] == stats["documents"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d1", "d2", "out"]  # old output deleted


def test_refuses_to_replace_a_folder_that_is_not_a_prepared_corpus(tmp_path: Path, tok_path: Path) -> None:
    data = many_docs_corpus(tmp_path / "data", 4)
    write(tmp_path / "mine" / "thesis.tex", "precious")
    expect_error(lambda: prepare_corpus(data, tok_path, tmp_path / "mine"), "mine", "refusing to replace")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    expect_error(lambda: prepare_corpus(data, tok_path, tmp_path), "contains the corpus folder")


# ------------------------------------------------------------------------------------------------
# load_split / read_meta errors


@pytest.fixture
def prepared_dir(tmp_path: Path, tok_path: Path) -> Path:
    out = tmp_path / "out"
    prepare_corpus(many_docs_corpus(tmp_path / "data", 10), tok_path, out, val_fraction=0.2)
    return out


def test_load_split_unknown_split(prepared_dir: Path) -> None:
    expect_error(lambda: load_split(prepared_dir, "test"), "unknown split 'test'")


def test_load_split_missing_meta(prepared_dir: Path) -> None:
    (prepared_dir / "meta.json").unlink()
    expect_error(lambda: load_split(prepared_dir, "train"), "meta.json: missing")


def test_load_split_unreadable_meta(prepared_dir: Path) -> None:
    (prepared_dir / "meta.json").write_text("{ truncated", encoding="utf-8")
    expect_error(lambda: read_meta(prepared_dir), "meta.json: not valid JSON")
    (prepared_dir / "meta.json").write_text(json.dumps({"vocab_size": 400}), encoding="utf-8")
    expect_error(lambda: read_meta(prepared_dir), "meta.json: missing keys: tokenizer_sha256")


def test_load_split_missing_bin(prepared_dir: Path) -> None:
    (prepared_dir / "val.bin").unlink()
    expect_error(lambda: load_split(prepared_dir, "val"), "val.bin: missing")


def test_load_split_truncated_bin(prepared_dir: Path) -> None:
    data = (prepared_dir / "train.bin").read_bytes()
    (prepared_dir / "train.bin").write_bytes(data[:-3])
    n = len(data) // 2
    expect_error(lambda: load_split(prepared_dir, "train"), "train.bin: holds", f"meta.json says {n}", "truncated")


def test_load_split_offsets_beyond_tokens(prepared_dir: Path) -> None:
    starts = np.load(prepared_dir / "train_docs.npy")
    starts[-1] = read_meta(prepared_dir)["train_tokens"] + 5
    np.save(prepared_dir / "train_docs.npy", starts)
    expect_error(lambda: load_split(prepared_dir, "train"), "train_docs.npy", "below the token count")


def test_load_split_offsets_not_at_bos(prepared_dir: Path) -> None:
    starts = np.load(prepared_dir / "train_docs.npy")
    starts[1] += 1
    np.save(prepared_dir / "train_docs.npy", starts)
    expect_error(lambda: load_split(prepared_dir, "train"), "train_docs.npy", "<s>")


def test_load_split_garbage_docs_file(prepared_dir: Path) -> None:
    (prepared_dir / "val_docs.npy").write_bytes(b"not numpy")
    expect_error(lambda: load_split(prepared_dir, "val"), "val_docs.npy: not a valid .npy file")


# ------------------------------------------------------------------------------------------------
# the real BabyLM corpus


@pytest.mark.slow  # heavy: in `pytest -m slow` (README), not the default CI tier
@pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason=f"real corpus not found at {REAL_CORPUS}")
def test_real_corpus_tokenizer_and_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    tok_path = tmp_path / "tokenizer.json"
    tok = train_tokenizer(iter_corpus_documents(REAL_CORPUS), 8192, tok_path)
    t1 = time.perf_counter()
    stats = prepare_corpus(REAL_CORPUS, tok_path, tmp_path / "out")
    t2 = time.perf_counter()
    with capsys.disabled():
        print(f"\n[real corpus] tokenizer training {t1 - t0:.1f}s, prepare {t2 - t1:.1f}s: {corpus_stats_line(stats)}")

    assert tok.get_vocab_size() == 8192
    assert stats["vocab_size"] == 8192
    assert 1_000_000 < stats["words"] < 20_000_000
    tokens = stats["train_tokens"] + stats["val_tokens"]
    assert 1.0 < tokens / stats["words"] < 2.5  # BPE-8192 on child-directed English: ~1.5 tokens per word
    assert stats["val_documents"] == round(0.01 * stats["documents"])
    train, train_starts = load_split(tmp_path / "out", "train")
    val, val_starts = load_split(tmp_path / "out", "val")
    assert len(train) + len(val) == tokens
    assert int(train.max()) < 8192 and int(val.max()) < 8192
