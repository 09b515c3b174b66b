"""Bad input through the CLI: one-line errors naming the file and the problem, exit 2, outputs untouched."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gptbert.cli import build_parser, main

TINY = ["--model.hidden_size", "32", "--model.num_layers", "2", "--model.num_heads", "4",
        "--model.intermediate_size", "48", "--train.seq_length", "32", "--train.global_batch_tokens", "512",
        "--train.micro_batch_size", "8", "--train.precision", "fp32", "--train.num_workers", "0",
        "--train.progress", "false", "--train.tensorboard", "false", "--train.eval_rows", "8"]


def run_cli(args, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return rc, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


# -- corpus -----------------------------------------------------------------


def test_missing_and_empty_corpus(tmp_path, prepared, capsys):
    rc, err = run_cli(["prepare", "--data", tmp_path / "nope", "--tokenizer", prepared["tokenizer"],
                       "--out", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    rc, err = run_cli(["tokenizer", "--data", tmp_path / "empty", "--out", tmp_path / "t.json"], capsys)
    assert_one_line_error(rc, err, "empty", "no corpus files")


@pytest.mark.parametrize("kind", ["binary", "latin1", "long_line"])
def test_bad_corpus_file_leaves_output_intact(tmp_path, prepared, capsys, kind):
    corpus = tmp_path / "corpus"
    shutil.copytree(prepared["corpus"], corpus)
    bad = corpus / "bad.txt"
    if kind == "binary":
        bad.write_bytes(b"hello\n\x00\x01\x02\x89PNG\n")
    elif kind == "latin1":
        bad.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    else:
        bad.write_text("a" * 10_000_000 + "\n", encoding="utf-8")
    out = tmp_path / "out"
    shutil.copytree(prepared["data"], out)  # an existing, valid prepared folder
    before = tree_digest(out)
    rc, err = run_cli(["prepare", "--data", corpus, "--tokenizer", prepared["tokenizer"], "--out", out], capsys)
    problem = {"binary": "binary file", "latin1": "not valid UTF-8", "long_line": "characters long"}[kind]
    assert_one_line_error(rc, err, "bad.txt", problem)
    assert tree_digest(out) == before  # never damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "out"]  # no temp folders left


# -- config -----------------------------------------------------------------


@pytest.mark.parametrize("yaml_text,needles", [
    ("train:\n  lr: 0.01\n  learning_rate: 0.1\n", ["cfg.yaml", "unknown key 'train.learning_rate'"]),
    ("objective:\n  causal_ratio: 1.5\n", ["cfg.yaml", "causal_ratio", "[0, 1]"]),
    ("train:\n  seq_length: 1024\n  seq_schedule: false\n", ["cfg.yaml", "seq_length", "512"]),
    ("train:\n  seq_length: 256\n", ["cfg.yaml", "seq_length", "1024 tokens"]),
    ("model:\n  preset: huge\n", ["cfg.yaml", "preset 'huge'"]),
    ("train: [1, 2\n", ["cfg.yaml", "not valid YAML"]),
    ("train:\n  max_steps: lots\n", ["cfg.yaml", "train.max_steps", "expected int"]),
])
def test_bad_config(tmp_path, prepared, capsys, yaml_text, needles):
    (tmp_path / "cfg.yaml").write_text(yaml_text)
    rc, err = run_cli(["train", "--config", tmp_path / "cfg.yaml", "--train.data", prepared["data"]], capsys)
    assert_one_line_error(rc, err, *needles)


def test_bad_override_flag(prepared, capsys):
    rc, err = run_cli(["train", "--train.data", prepared["data"], "--objective.causal_ratio", "-0.1"], capsys)
    assert_one_line_error(rc, err, "objective.causal_ratio", "[0, 1]")


def test_tokenizer_vocab_mismatch(tmp_path, prepared, capsys):
    rc, err = run_cli(["train", "--train.data", prepared["data"], "--train.out_dir", tmp_path / "run",
                       "--model.vocab_size", "512", *TINY], capsys)
    assert_one_line_error(rc, err, "meta.json", f"vocabulary of {prepared['vocab_size']}", "512")
    rc, err = run_cli(["train", "--train.data", prepared["data"], "--train.out_dir", tmp_path / "run",
                       "--train.tokenizer", prepared["root"] / "other.json",
                       "--model.vocab_size", str(prepared["vocab_size"]), *TINY], capsys)
    assert_one_line_error(rc, err, "other.json")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_prepared_data(tmp_path, capsys):
    rc, err = run_cli(["train", "--train.data", tmp_path / "nodata", "--train.out_dir", tmp_path / "run", *TINY], capsys)
    assert_one_line_error(rc, err, "nodata")


# -- checkpoints ------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, prepared):
    out = tmp_path_factory.mktemp("run") / "run"
    rc = main(["train", "--train.data", str(prepared["data"]), "--train.out_dir", str(out), "--train.max_steps", "4",
               "--model.vocab_size", str(prepared["vocab_size"]), *TINY])
    assert rc == 0
    return out


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupted_checkpoint_on_resume(tmp_path, trained_run, prepared, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    weights = run / "checkpoints" / "step_0000004" / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    before = tree_digest(run / "checkpoints")
    rc, err = run_cli(["train", "--resume", run, "--train.data", prepared["data"], "--train.out_dir", run,
                       "--train.max_steps", "8", "--model.vocab_size", prepared["vocab_size"], *TINY], capsys)
    assert_one_line_error(rc, err, "model.safetensors")
    assert tree_digest(run / "checkpoints") == before  # nothing overwritten


def test_resume_from_missing_checkpoint(tmp_path, prepared, capsys):
    rc, err = run_cli(["train", "--resume", tmp_path / "ghost", "--train.data", prepared["data"],
                       "--model.vocab_size", prepared["vocab_size"], *TINY], capsys)
    assert_one_line_error(rc, err, "ghost")


def test_no_traceback_in_a_real_process(tmp_path):
    """The console entry point itself: exit status 2, one line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "gptbert.cli", "prepare", "--data", str(tmp_path / "missing"),
                           "--tokenizer", str(tmp_path / "t.json"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_every_train_option_has_help():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for opt in ("--train.lr", "--objective.causal_ratio", "--model.hidden_size", "--train.time_budget", "--resume"):
        assert opt in help_text
