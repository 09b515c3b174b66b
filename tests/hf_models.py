"""Tiny models and data shared by the Hugging Face test files (test_hf_export, test_hf_compat, test_hf_pipelines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptbert.checkpoint import save_checkpoint, state_dict_for_save
from gptbert.config import ModelConfig, RunConfig
from gptbert.model import GPTBERT
from gptbert.tokenizer import train_tokenizer
from helpers import SENTENCES

BLIMP_FAST = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "blimp_fast"


def tiny_run(root: Path, seed: int = 0) -> Path:
    """A run folder with one checkpoint (step 7, raw + different EMA weights) and its tokenizer."""
    tok = train_tokenizer(SENTENCES * 40, 300, root / "tokenizer.json")
    mc = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=48, dropout=0, attention_dropout=0)
    torch.manual_seed(seed)
    model = GPTBERT(mc)
    with torch.no_grad():  # move every weight off its init (layer weights, biases, relative LN...)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    raw = state_dict_for_save(model)
    ema = {k: v + 0.01 * torch.randn_like(v) for k, v in raw.items()}
    rc = RunConfig(model=mc)
    rc.train.tokenizer = str(root / "tokenizer.json")
    rc.train.out_dir = str(root / "run")
    save_checkpoint(root / "run", step=7, tokens_seen=12345, model_state=raw, ema_state=ema, config=rc.to_dict())
    return root / "run"


def blimp_pairs(n_files: int = 3, per_file: int = 2, stride: int = 1) -> list[dict]:
    """The shortest pairs of BLiMP-fast files (MNTP scoring costs n^2 per sentence): per_file pairs from every
    stride-th file, n_files files in all. Skips the test when ../shared/data is absent."""
    if not BLIMP_FAST.is_dir():
        pytest.skip(f"{BLIMP_FAST} not found (the shared evaluation data lives next to the repository)")
    pairs = []
    for f in sorted(BLIMP_FAST.glob("*.jsonl"))[::stride][:n_files]:
        items = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()[:50]]
        items.sort(key=lambda p: len(p["sentence_good"]) + len(p["sentence_bad"]))
        pairs += items[:per_file]
    return pairs
