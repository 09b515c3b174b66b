"""The one loader (`gptbert.pretrained.load`): every command accepts the same folders and finds the same tokenizer."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from gptbert.checkpoint import save_checkpoint, state_dict_for_save
from gptbert.cli import main
from gptbert.config import ModelConfig, RunConfig
from gptbert.errors import GPTBertError
from gptbert.model import GPTBERT, attention_mask
from gptbert.pretrained import load
from gptbert.tokenizer import save_tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _quickstart_layout(root: Path) -> Path:
    """A run laid out as `gptbert quickstart --out qs` leaves it, started from `root` with relative paths:
    qs/tokenizer.json, qs/data/, qs/train/checkpoints/step_0000004 whose config names "qs/tokenizer.json"."""
    rng = random.Random(0)
    words = ["the", "dog", "cat", "sees", "likes", "a", "bird", "runs", "big", "small"]
    tok = train_tokenizer([" ".join(rng.choice(words) for _ in range(7)) + "." for _ in range(300)], 300)
    qs = root / "qs"
    save_tokenizer(tok, qs / "tokenizer.json")
    save_tokenizer(tok, qs / "data" / "tokenizer.json")
    mc = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=48, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = GPTBERT(mc)
    raw = state_dict_for_save(model)
    ema = {k: v + 0.01 for k, v in raw.items()}
    rc = RunConfig(model=mc)
    rc.train.tokenizer, rc.train.data, rc.train.out_dir = "qs/tokenizer.json", "qs/data", "qs/train"
    save_checkpoint(qs / "train", step=4, tokens_seen=64, model_state=raw, ema_state=ema, config=rc.to_dict())
    return qs


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, attention_mask(torch.zeros_like(ids), True))


def test_every_command_accepts_the_same_folders_from_any_directory(tmp_path, monkeypatch):
    qs = _quickstart_layout(tmp_path / "work")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the relative "qs/tokenizer.json" of the config means nothing here
    step = qs / "train" / "checkpoints" / "step_0000004"
    ids = torch.tensor([[1, 20, 21, 22, 23, 24]])
    ref = None
    for folder in (qs, qs / "train", qs / "train" / "checkpoints", step):
        pre = load(folder)
        assert pre.source == step and pre.weights == "ema" and pre.step == 4
        assert pre.tokenizer_path.resolve() in {(qs / "tokenizer.json").resolve(), (qs / "data" / "tokenizer.json").resolve()}
        out = _logits(pre.model, ids)
        ref = out if ref is None else ref
        assert torch.equal(out, ref)
    assert not torch.equal(_logits(load(qs, weights="raw").model, ids), ref)  # EMA and raw differ

    # Regression: `gptbert export` of a quickstart run from another directory found no tokenizer
    # while `gptbert eval` did (two loaders with two search rules).
    pytest.importorskip("transformers", minversion="5.0")
    assert main(["export", str(qs), str(tmp_path / "hf")]) == 0
    hf = load(tmp_path / "hf")  # an HF export folder is a model folder too
    assert hf.weights == "hf" and hf.checkpoint is None
    torch.testing.assert_close(_logits(hf.model, ids), ref, atol=1e-6, rtol=0)


def test_loader_errors_are_one_line(tmp_path):
    qs = _quickstart_layout(tmp_path)
    with pytest.raises(GPTBertError, match="tokenizer not found"):
        os.remove(qs / "tokenizer.json")
        os.remove(qs / "data" / "tokenizer.json")
        load(qs)
    with pytest.raises(GPTBertError, match="weights must be one of"):
        load(qs, weights="best")
    (tmp_path / "two" / "a" / "checkpoints").mkdir(parents=True)
    (tmp_path / "two" / "b" / "checkpoints").mkdir(parents=True)
    with pytest.raises(GPTBertError, match="holds several runs"):
        load(tmp_path / "two")
