"""Minimal-pair loading, accuracy bookkeeping, ties, bad inputs and the suite's outputs."""

from __future__ import annotations

import json
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gptbert.config import ModelConfig
from gptbert.errors import GPTBertError
from gptbert.eval.minimal_pairs import PairResult, evaluate_task, load_task, task_result_dict
from gptbert.eval.scoring import SentenceScorer
from gptbert.eval.suite import run_suite
from gptbert.model import GPTBERT
from gptbert.tokenizer import train_tokenizer

EVAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"
needs_data = pytest.mark.skipif(not EVAL_DATA.is_dir(), reason=f"shared eval data not found at {EVAL_DATA}")

_NOUNS = ["dog", "cat", "girl", "boy", "teacher", "bird", "farmer", "child"]
_VERBS = ["sees", "likes", "helps", "finds", "calls", "follows"]


pytestmark = pytest.mark.usefixtures("one_thread")


def sentences(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"The {rng.choice(_NOUNS)} {rng.choice(_VERBS)} the {rng.choice(_NOUNS)}." for _ in range(n)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(sentences() + ["Who is here? A dog is here. Many dogs are here."], 300)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                      intermediate_size=48, dropout=0.0, attention_dropout=0.0)
    return GPTBERT(cfg).eval()


def write_blimp(folder: Path, paradigms=("agreement_1", "agreement_2"), n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, uid in enumerate(paradigms):
        with open(folder / f"{uid}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"sentence_good": f"The dog sees the cat {i}.", "sentence_bad": f"The dog see the cat {i}.",
                                    "field": "morphology", "linguistics_term": "agreement" if k == 0 else "other",
                                    "UID": uid, "pair_id": i}) + "\n")
    return folder


def test_load_blimp_folder_and_limits(tmp_path):
    t = load_task(write_blimp(tmp_path / "blimp_tiny"))
    assert t.kind == "blimp" and t.group == "blimp"
    assert t.subtasks == ["agreement_1", "agreement_2"]
    assert len(t.pairs) == 6 and t.pairs[4].index == 1 and t.pairs[4].phenomenon == "other"
    assert len(load_task(tmp_path / "blimp_tiny", limit=2).pairs) == 4


def test_supplement_and_ewok_formats(tmp_path):
    sup = tmp_path / "supplement_x"
    sup.mkdir()
    (sup / "turn_taking.jsonl").write_text(json.dumps({"sentence_good": "A: Hi.", "sentence_bad": "A: Ho."}) + "\n\n")
    t = load_task(sup)
    assert t.kind == "supplement" and t.group == "blimp_supplement" and t.pairs[0].phenomenon == "turn_taking"
    ew = tmp_path / "ewok_mine"
    ew.mkdir()
    (ew / "social-relations.jsonl").write_text(json.dumps(
        {"Domain": "social-relations", "Context1": "Ali helps Wei.", "Target1": "Ali is kind.", "Target2": "Ali is mean."}) + "\n")
    t = load_task(ew)
    assert t.kind == "ewok" and t.has_context and t.pairs[0].context == "Ali helps Wei."
    assert (t.pairs[0].good, t.pairs[0].bad) == ("Ali is kind.", "Ali is mean.")


def test_missing_field_names_file_and_line(tmp_path):
    d = write_blimp(tmp_path / "bad")
    with open(d / "agreement_2.jsonl", "a") as f:
        f.write(json.dumps({"sentence_good": "Only one."}) + "\n")
    with pytest.raises(GPTBertError) as e:
        load_task(d)
    msg = str(e.value)
    assert "agreement_2.jsonl:4" in msg and "sentence_bad" in msg and "\n" not in msg


def test_invalid_json_and_empty_folder(tmp_path):
    d = write_blimp(tmp_path / "broken", paradigms=("p",))
    with open(d / "p.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(GPTBertError, match=r"p\.jsonl:4: not valid JSON"):
        load_task(d)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GPTBertError, match="empty task folder"):
        load_task(tmp_path / "empty")
    with pytest.raises(GPTBertError, match="no such task"):
        load_task(tmp_path / "nowhere")


def test_accuracy_bookkeeping_follows_the_paper(tmp_path):
    """Average = mean over sub-tasks (not over pairs, not over phenomena); ties are wrong."""
    t = load_task(write_blimp(tmp_path / "b", paradigms=("a", "b", "c"), n=4))
    # a: 4/4, b: 1/4, c: 2/4 -> paradigm mean 58.33; pair mean 58.33 too, so make c bigger
    correct = np.array([1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0], dtype=bool)
    res = PairResult(t, "causal", (1.0,), correct[:, None], correct, np.zeros(12, bool), None, None)
    assert res.accuracy_at(correct) == {"a": 100.0, "b": 25.0, "c": 50.0}
    assert res.average_at(correct) == pytest.approx(175 / 3)
    assert res.accuracy_at(correct, "phenomenon") == {"agreement": 100.0, "other": 37.5}
    d = task_result_dict(res)
    assert d["T1"]["average"] == pytest.approx(175 / 3) and d["best_T"]["temperature"] in (0.0, 1.0)
    preds = res.predictions(1.0)
    assert preds["b"]["predictions"][0] == {"id": "b_0", "pred": t.pairs[4].good}
    assert preds["b"]["predictions"][1] == {"id": "b_1", "pred": t.pairs[5].bad}


def test_identical_pair_is_never_correct(tmp_path, model, tok):
    d = tmp_path / "same"
    d.mkdir()
    (d / "same.jsonl").write_text(
        json.dumps({"sentence_good": "The dog sees the cat.", "sentence_bad": "The dog sees the cat."}) + "\n"
        + json.dumps({"sentence_good": "The cat sees the dog.", "sentence_bad": "The cat sees the dog."}) + "\n")
    task = load_task(d)
    scorer = SentenceScorer(model, tok)
    for mode in ("causal", "mntp", "fused", "prefix"):
        res = evaluate_task(scorer, task, mode)
        assert not res.correct.any() and not res.correct_greedy.any()
        assert res.ties.all()
        assert res.best_temperature()[1] == 0.0


def test_suite_writes_results_predictions_report_and_png(tmp_path, model, tok):
    task_dir = write_blimp(tmp_path / "blimp_tiny")
    ewok = tmp_path / "ewok_tiny"
    ewok.mkdir()
    (ewok / "physical-relations.jsonl").write_text(
        json.dumps({"Context1": "The cat is on the box.", "Target1": "The box is under the cat.",
                    "Target2": "The box is on the cat.", "Domain": "physical-relations"}) + "\n")
    out = tmp_path / "out"
    res = run_suite(model, tok, [str(task_dir), str(ewok)], ["causal", "mntp", "fused", "prefix"], out,
                    precision="fp32", progress=False)
    r = res["tasks"]["blimp_tiny"]["mntp"]
    assert r["n_pairs"] == 6 and set(r["T1"]["subtasks"]) == {"agreement_1", "agreement_2"}
    assert len(r["sweep"]) == 61 and r["best_T"]["average"] >= r["T1"]["average"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["tasks"]["blimp_tiny"]["fused"]["T1"]["average"] == res["tasks"]["blimp_tiny"]["fused"]["T1"]["average"]
    preds = json.loads((out / "predictions_causal.json").read_text())
    assert list(preds) == ["blimp"]  # EWoK sentences are not written unless asked for
    assert [p["id"] for p in preds["blimp"]["agreement_1"]["predictions"]] == ["agreement_1_0", "agreement_1_1", "agreement_1_2"]
    png = (out / "accuracy_blimp_tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert w > 100 and h > 50
    assert zlib.crc32(png[12:29]) == struct.unpack(">I", png[29:33])[0]  # IHDR CRC
    assert "average (paper)" in (out / "report.md").read_text()
    # prefix without a context is causal; with one it is scored separately
    assert res["tasks"]["blimp_tiny"]["prefix"]["T1"] == res["tasks"]["blimp_tiny"]["causal"]["T1"]
    assert "ewok_tiny" in res["tasks"]


def test_bf16_and_fp32_mostly_agree_on_pairs(tmp_path, model, tok):
    rng = random.Random(3)
    d = tmp_path / "agree"
    d.mkdir()
    good = sentences(40, seed=5)
    lines = [json.dumps({"sentence_good": s, "sentence_bad": s.replace(" the ", " a ", 1) if rng.random() < 0.5
                         else s.replace("The ", "A ", 1)}) for s in good]
    (d / "p.jsonl").write_text("\n".join(lines) + "\n")
    task = load_task(d)
    a = evaluate_task(SentenceScorer(model, tok, precision="fp32", temperatures=(1.0,)), task, "mntp")
    b = evaluate_task(SentenceScorer(model, tok, precision="bf16", temperatures=(1.0,)), task, "mntp")
    assert np.mean(a.correct[:, 0] == b.correct[:, 0]) >= 0.9


@needs_data
def test_shared_task_files_load():
    t = load_task("supplement_fast", EVAL_DATA)
    assert t.kind == "supplement" and len(t.subtasks) == 5 and len(t.pairs) == 250
    t = load_task("blimp_fast", EVAL_DATA, limit=2)
    assert len(t.subtasks) == 67 and len(t.pairs) == 134
    assert {p.phenomenon for p in t.pairs} >= {"island_effects", "binding", "npi_licensing"}


@needs_data
def test_ewok_zip_read_in_memory_and_wrong_password(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = load_task("ewok_fast", EVAL_DATA)
    assert t.kind == "ewok" and len(t.subtasks) == 11 and len(t.pairs) == 1100 and t.has_context
    assert list(tmp_path.iterdir()) == []  # nothing extracted
    with pytest.raises(GPTBertError, match="wrong password") as e:
        load_task("ewok_fast", EVAL_DATA, password="not-the-password")
    assert "ewok_babylm_filtered_and_fast.zip" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
@needs_data
@pytest.mark.skipif(not os.environ.get("GPTBERT_EVAL_CHECKPOINT"),
                    reason="set GPTBERT_EVAL_CHECKPOINT to a trained run (minutes of CPU per mode)")
@pytest.mark.parametrize("mode", ["causal", "mntp"])
def test_bf16_and_fp32_agree_on_blimp_fast_for_a_trained_checkpoint(mode):
    from gptbert.pretrained import load

    pre = load(os.environ["GPTBERT_EVAL_CHECKPOINT"])
    model, tok = pre.model, pre.tokenizer
    task = load_task("blimp_fast", EVAL_DATA)
    a = evaluate_task(SentenceScorer(model, tok, precision="fp32", temperatures=(1.0,)), task, mode)
    b = evaluate_task(SentenceScorer(model, tok, precision="bf16", temperatures=(1.0,)), task, mode)
    agree = np.mean(a.correct[:, 0] == b.correct[:, 0])
    print(f"{mode}: bf16 and fp32 agree on {100 * agree:.2f}% of {len(task.pairs)} BLiMP-fast pairs")
    assert agree >= 0.99
