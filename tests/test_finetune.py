"""GLUE fine-tuning: metrics against hand computations (and scikit-learn when installed), end-to-end runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from gptbert.config import ModelConfig
from gptbert.errors import GPTBertError
from gptbert.eval.finetune import (GLUE_TASKS, Example, FinetuneConfig, SequenceClassifier, _collate, _lr_factor,
                                   encode_examples, read_examples, resolve_hparams, run_finetune)
from gptbert.eval.metrics import accuracy, confusion_matrix, f1_binary, glue_score, matthews_corrcoef
from gptbert.model import GPTBERT
from gptbert.tokenizer import BOS_ID, train_tokenizer

EVAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"

Y_TRUE = [1, 1, 1, 0, 0, 0, 1, 0]
Y_PRED = [1, 0, 1, 0, 1, 0, 1, 1]  # TP=3 FP=2 FN=1 TN=2


pytestmark = pytest.mark.usefixtures("one_thread")


def test_metrics_equal_hand_computed_values():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(5 / 8)
    assert f1_binary(Y_TRUE, Y_PRED) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert matthews_corrcoef(Y_TRUE, Y_PRED) == pytest.approx((3 * 2 - 2 * 1) / np.sqrt(5 * 4 * 4 * 3))
    # multi-class MCC: c=3, s=6, t=[2,2,2], p=[3,1,2] -> (18-12)/sqrt(22*24)
    assert matthews_corrcoef([0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 2]) == pytest.approx(6 / np.sqrt(22 * 24))
    assert confusion_matrix(Y_TRUE, Y_PRED).tolist() == [[2, 2], [1, 3]]
    # degenerate cases (as scikit-learn): constant predictions -> MCC 0; no true positive -> F1 0
    assert matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0
    assert f1_binary([0, 0, 1], [0, 0, 0]) == 0.0
    assert matthews_corrcoef([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])


def test_metrics_equal_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed (hand-computed values are tested above)")
    rng = np.random.default_rng(0)
    for k in (2, 3):
        t, p = rng.integers(0, k, 200), rng.integers(0, k, 200)
        assert accuracy(t, p) == pytest.approx(sk.accuracy_score(t, p))
        assert matthews_corrcoef(t, p) == pytest.approx(sk.matthews_corrcoef(t, p))
        if k == 2:
            assert f1_binary(t, p) == pytest.approx(sk.f1_score(t, p))


def test_glue_score_is_the_mean_of_available_tasks():
    g = glue_score({"cola": 40.0, "rte": 60.0, "boolq": None})
    assert g["score"] == 50.0 and g["n_available"] == 2 and not g["complete"] and "boolq" in g["missing"]


def test_hparams_follow_table_4():
    hp = resolve_hparams(GLUE_TASKS["wsc"], 384, FinetuneConfig())
    assert (hp["epochs"], hp["lr"], hp["batch_size"], hp["warmup"], hp["track"]) == (20, 3e-4, 32, 0.0, "10M")
    hp = resolve_hparams(GLUE_TASKS["mnli"], 768, FinetuneConfig(lr=5e-5))
    assert (hp["epochs"], hp["lr"], hp["batch_size"], hp["track"]) == (3, 5e-5, 32, "100M")
    assert _lr_factor(0, 100, 10) == pytest.approx(0.1) and _lr_factor(9, 100, 10) == 1.0
    assert _lr_factor(100, 100, 10) == pytest.approx(0.1)


@pytest.fixture(scope="module")
def tiny():
    rng = random.Random(0)
    words = ["good", "bad", "film", "movie", "great", "awful", "the", "was", "is", "plot", "actor"]
    tok = train_tokenizer([" ".join(rng.choice(words) for _ in range(8)) for _ in range(300)], 300)
    torch.manual_seed(0)
    model = GPTBERT(ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                                intermediate_size=48, dropout=0.0, attention_dropout=0.0))
    return tok, model


def test_encoding_uses_pair_template_and_truncates(tiny):
    tok, _ = tiny
    ex = Example("good film " * 20, "bad movie", 1)
    [ids] = encode_examples(tok, [ex], 16)
    assert len(ids) == 16 and ids[0] == BOS_ID and ids.count(BOS_ID) == 2
    [single] = encode_examples(tok, [Example("good film", None, 0)], 16)
    assert single.count(BOS_ID) == 1


def test_classifier_uses_first_token_and_ignores_padding(tiny):
    tok, model = tiny
    clf = SequenceClassifier(model, 3, dropout=0.0).eval()
    ids, mask = _collate([[BOS_ID, 20, 21], [BOS_ID, 20, 21, 22, 23]], "cpu")
    with torch.no_grad():
        batched = clf(ids, mask)
        alone = clf(torch.tensor([[BOS_ID, 20, 21]]), None)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)


def _write_glue(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    for split, n in (("train", 24), ("valid", 10)):
        with open(folder / f"rte.{split}.jsonl", "w") as f:
            for i in range(n):
                lab = rng.randint(0, 1)
                f.write(json.dumps({"sentence1": "the film was great" if lab else "the plot was awful",
                                    "sentence2": "good movie", "label": lab, "idx": i}) + "\n")
    (folder / "boolq.valid.jsonl").write_text(json.dumps({"question": "is it", "passage": "it is", "label": 1}) + "\n")
    return folder


def test_finetune_end_to_end_on_a_tiny_task(tmp_path, tiny):
    tok, model = tiny
    glue = _write_glue(tmp_path / "glue")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig(epochs=2, batch_size=8, lr=1e-3, precision="fp32", max_length=32, progress=False)
    out = run_finetune(model, tok, ["rte", "boolq"], cfg, glue_dir=glue, log=lambda s: None)
    res = out["tasks"]["rte"]
    assert res["n_train"] == 24 and len(res["history"]) == 2 and res["best_epoch"] in (1, 2)
    assert 0 <= res["results"]["rte"]["value"] <= 100
    preds = res["predictions"]["rte"]["predictions"]
    assert len(preds) == 10 and preds[0]["id"] == "rte_0" and isinstance(preds[0]["pred"], int)
    assert out["unavailable"] == {"boolq": out["unavailable"]["boolq"]} and out["scores"]["boolq"] is None
    assert out["glue_score"]["n_available"] == 1
    best = max(h["valid"]["rte"] for h in res["history"])
    assert res["results"]["rte"]["value"] == pytest.approx(best)  # the best epoch is the one kept
    for k, v in model.state_dict().items():  # the pretrained model itself is untouched
        assert torch.equal(v, before[k])


def test_finetune_bad_input(tmp_path, tiny):
    tok, model = tiny
    glue = _write_glue(tmp_path / "glue")
    with open(glue / "rte.train.jsonl", "a") as f:
        f.write(json.dumps({"sentence1": "x", "label": 0}) + "\n")
    cfg = FinetuneConfig(epochs=1, precision="fp32", progress=False)
    with pytest.raises(GPTBertError, match=r"rte\.train\.jsonl:25: missing field 'sentence2'"):
        run_finetune(model, tok, ["rte"], cfg, glue_dir=glue, log=lambda s: None)
    with pytest.raises(GPTBertError, match="unknown GLUE task 'nope'"):
        run_finetune(model, tok, ["nope"], cfg, glue_dir=glue, log=lambda s: None)


@pytest.mark.skipif(not (EVAL_DATA / "glue_filtered" / "rte.train.jsonl").is_file(),
                    reason=f"shared GLUE data not found under {EVAL_DATA}")
def test_finetune_on_a_real_rte_slice(tiny):
    tok, model = tiny
    cfg = FinetuneConfig(epochs=1, batch_size=8, precision="fp32", max_length=48, max_train_examples=16,
                         max_eval_examples=12, progress=False)
    out = run_finetune(model, tok, ["rte"], cfg, glue_dir=EVAL_DATA / "glue_filtered", log=lambda s: None)
    r = out["tasks"]["rte"]["results"]["rte"]
    assert r["n"] == 12 and r["metric"] == "accuracy" and 0 <= r["value"] <= 100


@pytest.mark.skipif(not (EVAL_DATA / "superglue_original" / "multirc.train.jsonl").is_file(),
                    reason=f"SuperGLUE MultiRC training file not found under {EVAL_DATA}")
def test_superglue_multirc_is_flattened():
    rows = read_examples(EVAL_DATA / "superglue_original" / "multirc.train.jsonl", GLUE_TASKS["multirc"])
    assert len(rows) == 27243 and rows[0].a.startswith("Question: ") and " Answer: " in rows[0].a
    assert {r.label for r in rows} == {0, 1}
