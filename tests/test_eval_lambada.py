"""LAMBADA: batched evaluation against a per-passage reference, and bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from gptbert.config import ModelConfig
from gptbert.errors import GPTBertError
from gptbert.eval.lambada import _encode, evaluate_lambada, load_lambada
from gptbert.model import GPTBERT
from gptbert.tokenizer import BOS_ID, MASK_ID, train_tokenizer

EVAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = random.Random(0)
    words = ["apple", "river", "stone", "garden", "window", "letter", "music", "winter"]
    texts = [" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(300)]
    tok = train_tokenizer(texts, 300)
    torch.manual_seed(0)
    model = GPTBERT(ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                                intermediate_size=48, dropout=0.0, attention_dropout=0.0)).eval()
    path = tmp_path_factory.mktemp("lambada") / "lambada.jsonl"
    rows = [{"prompt": "apple river stone garden window {answer}.", "answer": "letter"},
            {"prompt": "music winter apple {answer}", "answer": "gardens"},
            {"prompt": "stone stone river window letter music winter {answer}!\"", "answer": "apple"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tok, model, path


def _reference(model, tok, items, mode):
    nll_mean, nll_sum, correct = [], [], 0
    for it in items:
        ctx, ans, ending = _encode(tok, it)
        c = len(ctx)
        if mode == "mntp":
            ids = [BOS_ID, *ctx, *([MASK_ID] * len(ans)), *ending]
            mask = None
        else:
            ids = [BOS_ID, *ctx, *ans]
            T = len(ids)
            mask = torch.ones(1, 1, T, T, dtype=torch.bool).tril()
            if mode == "prefix":
                mask[..., : 1 + c, : 1 + c] = True
        with torch.no_grad():
            logits = model(torch.tensor([ids]), mask)[0, c: c + len(ans)]
        lp = torch.log_softmax(logits.double(), -1)[torch.arange(len(ans)), torch.tensor(ans)]
        nll_mean.append(-lp.mean().item())
        nll_sum.append(-lp.sum().item())
        correct += tok.decode(logits.argmax(-1).tolist()).strip() == it.answer
    n = len(items)
    return 100 * correct / n, math.exp(sum(nll_mean) / n), math.exp(sum(nll_sum) / n)


@pytest.mark.parametrize("mode", ["causal", "mntp", "prefix"])
def test_lambada_matches_reference(setup, mode):
    tok, model, path = setup
    items = load_lambada(path)
    assert items[0].ending == "." and items[1].ending == "" and items[2].ending == "!\""
    got = evaluate_lambada(model, tok, items, mode, max_tokens=20)
    acc, ppl, wppl = _reference(model, tok, items, mode)
    assert got["n"] == 3 and got["accuracy"] == pytest.approx(acc)
    assert got["perplexity"] == pytest.approx(ppl, rel=1e-4)
    assert got["word_perplexity"] == pytest.approx(wppl, rel=1e-4)


def test_lambada_bad_input(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text(json.dumps({"prompt": "no placeholder", "answer": "x"}) + "\n")
    with pytest.raises(GPTBertError, match=r"l\.jsonl:1: prompt has no '\{answer\}'"):
        load_lambada(p)
    p.write_text(json.dumps({"prompt": "a {answer}"}) + "\n")
    with pytest.raises(GPTBertError, match=r"l\.jsonl:1: missing field 'answer'"):
        load_lambada(p)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GPTBertError, match="empty task folder"):
        load_lambada(tmp_path / "empty")


@pytest.mark.skipif(not (EVAL_DATA / "lambada" / "lambada.jsonl").is_file(), reason=f"no LAMBADA file under {EVAL_DATA}")
def test_shared_lambada_file_parses():
    items = load_lambada(EVAL_DATA / "lambada" / "lambada.jsonl", limit=50)
    assert len(items) == 50 and all(it.answer and "{answer}" not in it.context for it in items)
