"""`gptbert eval` / `gptbert finetune` entry points on a tiny saved checkpoint, and loading errors."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest
import torch

from gptbert.checkpoint import save_checkpoint
from gptbert.config import ModelConfig
from gptbert.errors import GPTBertError
from gptbert.cli.evaluate import add_parsers
from gptbert.pretrained import load
from gptbert.model import GPTBERT
from gptbert.tokenizer import save_tokenizer, train_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")


def _make_run(root: Path, tokenizer_in_config: bool = True, tokenizer_file: bool = True) -> Path:
    """A run folder with one checkpoint (raw + EMA weights) of a tiny random model."""
    rng = random.Random(0)
    words = ["the", "dog", "cat", "sees", "likes", "a", "bird", "runs", "big", "small"]
    tok = train_tokenizer([" ".join(rng.choice(words) for _ in range(7)) + "." for _ in range(300)], 300)
    tok_path = root / "data" / "tokenizer.json"
    if tokenizer_file:
        save_tokenizer(tok, tok_path)
    torch.manual_seed(0)
    model_cfg = dict(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=48, dropout=0.0, attention_dropout=0.0)
    model = GPTBERT(ModelConfig(**model_cfg))
    ema = {k: v + 0.01 for k, v in model.state_dict().items()}
    run = root / "run"
    config = {"model": model_cfg, "objective": {},
              "train": {"tokenizer": str(tok_path) if tokenizer_in_config else "", "data": str(root / "nodata")}}
    save_checkpoint(run, step=5, tokens_seen=100, model_state=model.state_dict(), ema_state=ema, config=config)
    return run


def _tasks(root: Path) -> Path:
    d = root / "blimp_mini"
    d.mkdir(parents=True)
    with open(d / "agreement.jsonl", "w") as f:
        for i in range(4):
            f.write(json.dumps({"sentence_good": f"the dog runs {i}.", "sentence_bad": f"the dog run {i}.",
                                "UID": "agreement", "linguistics_term": "subject_verb_agreement"}) + "\n")
    return d


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptbert")
    add_parsers(p.add_subparsers(dest="command", required=True))
    return p


def test_eval_command_end_to_end(tmp_path, capsys):
    run = _make_run(tmp_path)
    out = tmp_path / "out"
    args = _parser().parse_args(["eval", str(run), "--tasks", str(_tasks(tmp_path)), "--modes", "causal,mntp",
                                 "--out", str(out), "--precision", "fp32", "--device", "cpu", "--no-progress"])
    args.fn(args)
    printed = capsys.readouterr().out
    assert "blimp_mini" in printed and "causal" in printed and "mntp" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["model"]["weights"] == "ema" and res["model"]["step"] == 5
    assert set(res["tasks"]["blimp_mini"]) == {"causal", "mntp"}
    assert (out / "predictions_mntp.json").is_file() and (out / "accuracy_blimp_mini.png").is_file()


def test_ema_by_default_raw_on_request(tmp_path):
    run = _make_run(tmp_path)
    m_ema = load(run).model
    raw = load(run, weights="raw")
    m_raw, info = raw.model, raw.info()
    assert info["weights"] == "raw" and not m_ema.training
    w = "embedding.word_embedding.weight"
    assert torch.allclose(m_ema.state_dict()[w], m_raw.state_dict()[w] + 0.01)


def test_tokenizer_found_next_to_the_run(tmp_path):
    run = _make_run(tmp_path, tokenizer_in_config=False, tokenizer_file=False)
    rng = random.Random(1)
    save_tokenizer(train_tokenizer([" ".join(rng.choice(["a", "b", "c"]) for _ in range(5)) for _ in range(50)], 280),
                   run / "tokenizer.json")
    info = load(run).info()
    assert info["tokenizer"] == str(run / "tokenizer.json")


def test_missing_tokenizer_is_a_one_line_error_naming_the_checkpoint(tmp_path):
    run = _make_run(tmp_path, tokenizer_file=False)
    with pytest.raises(GPTBertError) as e:
        load(run)
    msg = str(e.value)
    assert "step_0000005" in msg and "tokenizer not found" in msg and "--tokenizer" in msg and "\n" not in msg
    args = _parser().parse_args(["eval", str(run), "--out", str(tmp_path / "o")])
    with pytest.raises(GPTBertError, match="tokenizer not found"):
        args.fn(args)
    with pytest.raises(GPTBertError, match="does not exist"):
        load(run, tokenizer=tmp_path / "nope.json")


def test_finetune_command_end_to_end(tmp_path, capsys):
    run = _make_run(tmp_path)
    glue = tmp_path / "glue"
    glue.mkdir()
    for split, n in (("train", 12), ("valid", 6)):
        with open(glue / f"cola.{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"sentence": "the dog runs." if i % 2 else "dog the run.", "label": i % 2}) + "\n")
    out = tmp_path / "ft"
    args = _parser().parse_args(["finetune", str(run), "--tasks", "cola,sst2", "--glue-dir", str(glue), "--out", str(out),
                                 "--epochs", "1", "--batch-size", "4", "--precision", "fp32", "--device", "cpu",
                                 "--max-length", "32", "--no-progress"])
    args.fn(args)
    printed = capsys.readouterr().out
    assert "cola" in printed and "mcc" in printed and "unavailable" in printed and "GLUE score (1/11" in printed
    res = json.loads((out / "results.json").read_text())
    assert "sst2" in res["unavailable"] and res["tasks"]["cola"]["hparams"]["epochs"] == 1
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds["glue"]["cola"]["predictions"]) == 6
