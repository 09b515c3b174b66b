"""BabyLM 2025 tasks: scoring against one-forward-per-token references, the statistics against
hand computations, the readers against the real data files, COMPS on a fixture, the official
output layout, and the EWoK-scoring and tie-rule options of the minimal-pair tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from gptbert.config import ModelConfig
from gptbert.errors import GPTBertError
from gptbert.eval.minimal_pairs import evaluate_task, load_task, task_result_dict
from gptbert.eval.report import summary_table
from gptbert.eval.scoring import SentenceScorer
from gptbert.eval.suite import run_suite
from gptbert.eval.tasks2025 import aoa, comps, entity_tracking, reading, run, stats, wug
from gptbert.eval.tasks2025.common import ChoiceItem, MemoScorer, choose, score_choices, split_at_chars
from gptbert.eval.tasks2025.common import write_official
from gptbert.model import GPTBERT
from gptbert.tokenizer import BOS_ID, MASK_ID, train_tokenizer

DATA = SHARED_DATA / "babylm2025"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"BabyLM 2025 data not found at {DATA}")
pytestmark = pytest.mark.usefixtures("one_thread")

_THINGS = ["apple", "pear", "hat", "key", "book", "cup", "shoe", "coin"]


def _box_prefix(i: int) -> str:
    a, b, c = _THINGS[i % 8], _THINGS[(i + 3) % 8], _THINGS[(i + 5) % 8]
    return f"Box 0 contains the {a}, Box 1 contains the {b} and the {c}. Box {i % 2} contains "


@pytest.fixture(scope="module")
def tok():
    texts = [_box_prefix(i) + f"the {t}." for i in range(40) for t in _THINGS]
    texts += [f"The {t} is on the table. A {t} can roll." for t in _THINGS] * 5
    return train_tokenizer(texts, 320)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                      intermediate_size=48, dropout=0.0, attention_dropout=0.0)
    m = GPTBERT(cfg).eval()
    with torch.no_grad():
        for a in m.transformer.dwa_modules.alphas:
            a.add_(0.3 * torch.randn_like(a))
    return m


# ---------------------------------------------------------------------------
# One forward per scored token


def _brute(model, ids: list[int], scored: list[int], mode: str, prefix_len: int = 0) -> float:
    """Sum of log p(ids[i]) over the scored row indices i: causal = the row up to i-1 under a causal
    mask; mntp = ids[i] replaced by <mask>, full attention, read at i-1; prefix = causal with the
    first prefix_len positions bidirectional; fused = causal + mntp."""
    if mode == "fused":
        return _brute(model, ids, scored, "causal") + _brute(model, ids, scored, "mntp")
    total = 0.0
    for i in scored:
        with torch.no_grad():
            if mode == "mntp":
                x = list(ids)
                x[i] = MASK_ID
                logits = model(torch.tensor([x]), None)[0, i - 1]
            else:
                x = ids[:i]
                T = len(x)
                mask = torch.ones(1, 1, T, T, dtype=torch.bool).tril()
                if mode == "prefix":
                    mask[..., :prefix_len, :prefix_len] = True
                logits = model(torch.tensor([x]), mask)[0, -1]
        total += torch.log_softmax(logits.double(), -1)[ids[i]].item()
    return total


def _official_positions(tok, text: str, start: int) -> tuple[list[int], list[int]]:
    """[<s>] + the whole text's tokens, and the row indices of the tokens whose span ends after `start`."""
    enc = tok.encode(text, add_special_tokens=False)
    ids = [BOS_ID] + enc.ids
    return ids, [1 + k for k, (_, end) in enumerate(enc.offsets) if end > start]


def test_split_at_chars_keeps_the_whole_sentence_and_gives_the_space_to_the_completion(tok):
    prefix = _box_prefix(3)
    (ctx, tgt), = split_at_chars(tok, [prefix + "the key and the cup."], [len(prefix)])
    whole = tok.encode(prefix + "the key and the cup.", add_special_tokens=False).ids
    assert list(ctx + tgt) == whole
    assert list(tgt) == tok.encode("the key and the cup.", add_special_tokens=False).ids  # " the" ...
    assert list(ctx) == tok.encode(prefix.rstrip(), add_special_tokens=False).ids


@pytest.mark.parametrize("mode", ["causal", "mntp", "fused", "prefix"])
def test_choice_scores_match_one_forward_per_token(model, tok, mode):
    options = ["the hat.", "the coin and the book.", "nothing."]
    items = [ChoiceItem("regular_0_ops", [_box_prefix(i) + o for o in options], [len(_box_prefix(i))] * 3, options)
             for i in range(2)]
    items.append(ChoiceItem("w", ["A pear can roll.", "A pear can rolled."], [0, 0], ["a", "b"]))
    items.append(ChoiceItem("c", ["The cup is on the table.", "The shoe is on the table."], [8, 9], ["x", "y"]))
    got = [score_choices(SentenceScorer(model, tok, temperatures=(1.0,), max_tokens=64), [it], mode)[0] for it in items]
    for it, row in zip(items, got):
        for text, start, value in zip(it.texts, it.starts, row):
            ids, scored = _official_positions(tok, text, start)
            assert value == pytest.approx(_brute(model, ids, scored, mode, prefix_len=scored[0]), abs=2e-4)


def test_memo_scorer_gives_fused_as_causal_plus_mntp_without_scoring_again(model, tok, monkeypatch):
    items = [((20, 21), (22, 23, 24)), ((), (30, 31))]
    sc = MemoScorer(model, tok, temperatures=(1.0,))
    c, m = sc.score(items, "causal"), sc.score(items, "mntp")
    monkeypatch.setattr(SentenceScorer, "score", lambda *a, **k: pytest.fail("scored again"))
    np.testing.assert_allclose(sc.score(items, "fused").logprob, c.logprob + m.logprob)
    assert sc.score(items, "causal") is c and len(sc.memo) == 3


def test_tie_rules_on_crafted_scores():
    s = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 2.0, 2.0], [3.0, 0.0, 3.0]])
    assert choose(s, "correct").tolist() == [0, 0, 1, 1, 0]  # first best, as torch.max
    assert choose(s, "wrong").tolist() == [1, 0, 1, 1, 2]  # a tie for the best is not a win
    with pytest.raises(GPTBertError):
        choose(s, "maybe")


# ---------------------------------------------------------------------------
# Statistics


def test_rankdata_and_spearman_with_ties_by_hand():
    assert stats.rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    x, y = [1, 2, 2, 3, 5], [2, 1, 4, 4, 5]
    # ranks x: 1 2.5 2.5 4 5, y: 2 1 3.5 3.5 5; centred products sum 7.25, squares 9.5 and 9.5
    assert stats.spearman(x, y) == pytest.approx(7.25 / 9.5, abs=1e-12)
    assert stats.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3]))
    assert stats.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_ols_r2_closed_form_and_interactions():
    x, y = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])
    assert stats.ols_r2(y, stats.design_matrix({"x": x}, ["x"])) == pytest.approx(0.64)  # r = 0.8
    assert stats.ols_r2(y, stats.design_matrix({"x": x}, [])) == pytest.approx(0.0)  # intercept only
    a, b = np.array([1.0, 2, 3, 4, 5, 6]), np.array([2.0, 1, 4, 3, 6, 1])
    exact = 1 + 2 * a - b + 3 * a * b
    X = stats.design_matrix({"a": a, "b": b}, stats.pairwise_terms(["a", "b"]))
    assert X.shape == (6, 4) and np.allclose(X[:, 3], a * b)
    assert stats.ols_r2(exact, X) == pytest.approx(1.0)
    assert stats.pairwise_terms(["f", "l", "c"]) == ["f", "l", "c", "f:l", "f:c", "l:c"]


def test_sigmoid_fit_recovers_known_parameters():
    ages = np.arange(16, 31, dtype=float)
    true = (0.9, 0.45, 22.5, 0.04)
    got = stats.fit_sigmoid(ages, stats.sigmoid(ages, *true), [1.0, 0.1, ages.mean(), 0.0],
                            bounds=([0, 0, 16, -0.5], [2, 1, 30, 0.5]))
    np.testing.assert_allclose(got, true, atol=1e-5)
    x = np.repeat(np.log10(np.array([1, 2, 5, 10, 20, 50, 100]) * 1e6 + 1), 20)
    y = stats.sigmoid(x, 6.0, 3.0, 7.2, -15.0) + np.random.default_rng(0).normal(0, 0.05, x.size)
    got = stats.fit_sigmoid(x, y, [y.max() - y.min(), 1.0, x.mean(), y.min()])
    np.testing.assert_allclose(got, (6.0, 3.0, 7.2, -15.0), rtol=0.03)
    assert stats.sigmoid_crossing(got, -12.0) == pytest.approx(7.2, abs=0.02)  # the curve's midpoint
    assert stats.sigmoid_crossing((1.0, 1.0, 0.0, 0.0), 1.5) is None  # never reaches it


@needs_data
def test_child_aoa_agrees_with_scipy_curve_fit_on_the_cdi_data():
    """The official code fits the children's curves with scipy; our numpy fit gives the same AoAs."""
    scipy_fit = aoa._fit("scipy") if _has_scipy() else pytest.skip("scipy not installed")
    ages, human = aoa.load_cdi_human(DATA / aoa.HUMAN)
    words = sorted(human)[::6]
    same_pattern, diffs = 0, []
    for w in words:
        ours, ref = aoa.child_aoa(ages, human[w]), aoa.child_aoa(ages, human[w], scipy_fit)
        same_pattern += (ours is None) == (ref is None)
        if ours is not None and ref is not None:
            diffs.append(abs(ours - ref))
    assert same_pattern == len(words) and len(diffs) > 0.7 * len(words)
    assert max(diffs) < 1e-3  # months


def test_model_aoa_agrees_with_scipy_curve_fit_on_learning_curves():
    """The official code fits the model's curves with scipy's unbounded curve_fit (MINPACK lmdif)."""
    scipy_fit = aoa._fit("scipy") if _has_scipy() else pytest.skip("scipy not installed")
    rng = np.random.default_rng(0)
    steps = np.repeat([n * 10**6 for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 40, 60, 80, 100)], 20)
    both = 0
    for _ in range(20):
        a, b, c, d = rng.uniform(2, 10), rng.uniform(1, 6), rng.uniform(6.2, 7.8), -rng.uniform(12, 18)
        surp = -stats.sigmoid(np.log10(steps + 1), a, b, c, d) + rng.normal(0, rng.uniform(0.2, 2), steps.size)
        ours, ref = aoa.model_aoa(steps, surp), aoa.model_aoa(steps, surp, scipy_fit)
        assert (ours is None) == (ref is None)
        if ours is not None:
            both += 1
            assert ours == pytest.approx(ref, abs=1e-3)  # log10 words
    assert both >= 10


def _has_scipy() -> bool:
    try:
        import scipy.optimize  # noqa: F401
        return True
    except ImportError:
        return False


def test_curve_fitness_correlates_model_and_child_aoa():
    ages = np.arange(16, 31, dtype=float)
    steps = [n * 10**6 for n in (1, 2, 3, 5, 10, 20, 30, 50, 100)]
    human, records = {}, []
    for k, c_child in enumerate([18.0, 20.5, 22.0, 25.0, 27.5]):
        human[f"w{k}"] = stats.sigmoid(ages, 0.9, 0.6, c_child, 0.02)
        c_model = 6.2 + 0.1 * (c_child - 18)  # later for children -> later for the model
        for s in steps:
            for i in range(3):
                surp = -stats.sigmoid(math.log10(s + 1), 8.0, 4.0, c_model, -20.0) + 0.01 * i
                records.append({"step": aoa.step_name(s), "target_word": f"w{k}", "surprisal": surp})
    out = aoa.curve_fitness(records, ages, human)
    assert out["n_words"] == 5 and out["curve_fitness"] > 0.99
    child = [aoa.child_aoa(ages, human[f"w{k}"]) for k in range(5)]
    np.testing.assert_allclose(out["child_aoa_months"], child)
    assert aoa.step_name(30 * 10**6) == "chck_30M" and aoa.step_words("chck_30M") == 3e7
    # fewer than 3 words with both AoAs: the official score is 0
    assert aoa.curve_fitness(records[: 2 * 27], ages, human)["curve_fitness"] == 0.0


# ---------------------------------------------------------------------------
# Tasks end to end on small fixtures


def _write_jsonl(path: Path, recs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def test_entity_tracking_subsets_score_and_official_predictions(tmp_path, model, tok):
    folder = tmp_path / "entity_tracking_fast"
    for stem in ("regular", "ambiref"):
        _write_jsonl(folder / f"{stem}.jsonl", [
            {"numops": k // 2, "input_prefix": _box_prefix(k), "example_id": k,
             "options": [f"the {_THINGS[k]}.", f"the {_THINGS[k + 1]}.", "nothing."]} for k in range(4)])
    items = entity_tracking.load_entity_tracking(folder)
    assert [it.subtask for it in items[:4]] == ["ambiref_0_ops"] * 2 + ["ambiref_1_ops"] * 2
    scorer = SentenceScorer(model, tok, temperatures=(1.0,))
    res = entity_tracking.evaluate_entity_tracking(scorer, items, "mntp", name="entity_tracking_fast")
    ref = np.array([[_brute(model, *_official_positions(tok, t, s), "mntp") for t, s in zip(it.texts, it.starts)]
                    for it in items])
    right = ref[:, 0] > ref[:, 1:].max(1)
    per = [right[i:i + 2].mean() * 100 for i in range(0, 8, 2)]
    assert res.summary["score"] == pytest.approx(np.mean(per))
    assert res.summary["subsets"]["regular_1_ops"]["accuracy"] == pytest.approx(per[3])
    assert res.summary["complete"] is False and res.official_dir == "entity_tracking/entity_tracking_fast"
    p = res.predictions["regular_1_ops"]["predictions"]
    assert [e["id"] for e in p] == ["regular_1_ops_0", "regular_1_ops_1"]
    assert p[1]["pred"] == items[7].preds[int(np.argmax(ref[7]))]
    out = write_official(res, tmp_path / "out" / res.official_dir)
    assert json.loads(out.read_text()) == res.predictions and not list(out.parent.glob("*.tmp"))
    assert "### AVERAGE ACCURACY" in (out.parent / "best_temperature_report.txt").read_text()
    assert len(entity_tracking.load_entity_tracking(folder, limit=1)) == 4  # one per subset


def test_wug_probability_spearman_and_predictions(tmp_path, model, tok):
    recs = [{"sentences": f"The {t} can roll.\tThe {t} can rolled.\tThe {t} rolls can.", "ratio": r}
            for t, r in zip(_THINGS[:5], (0.9, 0.2, 0.5, 0.5, 0.7))]
    items = wug.load_wug(_write_jsonl(tmp_path / "wug_past_tense" / "wug_past_tense.jsonl", recs), "wug_past")
    res = wug.evaluate_wug(SentenceScorer(model, tok, temperatures=(1.0,)), items, "causal", name="wug_past")
    ref = np.array([[_brute(model, *_official_positions(tok, t, 0), "causal") for t in it.texts] for it in items])
    prob = np.exp(ref[:, 0]) / np.exp(ref).sum(1)
    preds = res.predictions["wug_past"]["predictions"]
    np.testing.assert_allclose([p["prob"] for p in preds], prob, rtol=1e-4)
    assert res.summary["score"] == pytest.approx(100 * stats.spearman(prob, [0.9, 0.2, 0.5, 0.5, 0.7]), abs=1e-6)
    assert preds[0]["id"] == "wug_past_0" and preds[0]["pred"] in items[0].texts
    assert res.official_dir == "wug_past/wug_past_tense"
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"sentences": "only one", "ratio": 0.5}])
    with pytest.raises(GPTBertError, match=r"bad\.jsonl:1: .*at least 2"):
        wug.load_wug(bad, "wug_adj")


def test_comps_fixture_scores_only_the_property(tmp_path, model, tok):
    folder = tmp_path / "comps"
    _write_jsonl(folder / "comps_base.jsonl", [
        {"prefix_acceptable": "A pear", "prefix_unacceptable": "A hat", "property_phrase": "can be eaten."},
        {"prefix_acceptable": "A key", "prefix_unacceptable": "A pear", "property_phrase": "opens a lock."},
        {"prefix_acceptable": "A cup", "prefix_unacceptable": "A coin", "property_phrase": "holds tea."}])
    _write_jsonl(folder / "comps_wugs.jsonl", [
        {"prefix_acceptable": "A dax is a shoe. A dax", "prefix_unacceptable": "A dax is a book. A dax",
         "property_phrase": "has laces."}])
    items = comps.load_comps(folder)
    assert [it.subtask for it in items] == ["base"] * 3 + ["wugs"]
    assert items[0].texts == ["A pear can be eaten.", "A hat can be eaten."] and items[0].starts == [7, 6]
    (_, tgt), = split_at_chars(tok, [items[0].texts[0]], [items[0].starts[0]])
    assert list(tgt) == tok.encode("can be eaten.", add_special_tokens=False).ids  # the subject is context
    for mode in ("causal", "mntp"):
        res = comps.evaluate_comps(SentenceScorer(model, tok, temperatures=(1.0,)), items, mode, ties="correct")
        ref = np.array([[_brute(model, *_official_positions(tok, t, s), mode) for t, s in zip(it.texts, it.starts)]
                        for it in items])
        right = ref[:, 0] >= ref[:, 1]
        assert res.summary["subsets"]["base"]["correct"] == int(right[:3].sum())
        assert res.summary["score"] == pytest.approx((right[:3].mean() * 100 + right[3] * 100) / 2)
        assert res.predictions["wugs"]["predictions"][0]["pred"] in items[3].texts  # whole sentences
        assert res.official_dir == "comps/comps" and res.summary["ties"] == "correct"


def test_reading_surprisal_matches_one_forward_per_token(model, tok):
    contexts, words = ["The cup is on the", "A pear", "None"], ["table", "can", "Box"]
    sc = SentenceScorer(model, tok, temperatures=(1.0,), max_tokens=48)
    for mode in ("causal", "mntp", "fused"):
        got = reading.surprisal(sc, contexts, words, mode)
        for c, w, g in zip(contexts, words, got):
            ctx, wd = tok.encode(c, add_special_tokens=False).ids, tok.encode(w, add_special_tokens=False).ids
            ref = 0.0
            if mode in ("causal", "fused"):
                ids = [BOS_ID, *ctx, *wd]
                ref += _brute(model, ids, list(range(1 + len(ctx), len(ids))), "causal")
            if mode in ("mntp", "fused"):  # <s> ctx w_<j <mask> x3, read before the first mask
                for j, t in enumerate(wd):
                    x = [BOS_ID, *ctx, *wd[:j], MASK_ID, MASK_ID, MASK_ID]
                    with torch.no_grad():
                        lg = model(torch.tensor([x]), None)[0, len(ctx) + j]
                    ref += torch.log_softmax(lg.double(), -1)[t].item()
            assert g == pytest.approx(-ref, abs=2e-4)
    assert len(tok.encode("table", add_special_tokens=False).ids) > 1  # a multi-token word is exercised


def test_reading_scores_on_a_hand_built_table():
    rng = np.random.default_rng(1)
    n = 40
    F, L, C = rng.normal(10, 2, n), rng.integers(2, 9, n).astype(float), rng.integers(1, 12, n).astype(float)
    pred, prev = rng.normal(5, 1, n), rng.normal(5, 1, n)
    prev[:6] = np.nan  # first words: no previous word
    F[10] = np.nan  # a word without a frequency
    cols = {"Subtlex_log10": F, "length": L, "context_length": C, "prev_length": rng.integers(1, 9, n).astype(float)}
    for k, m in enumerate(reading.EYE_TRACKING):
        cols[m] = 200 + 3 * L - 2 * np.nan_to_num(F) + (k + 1) * pred + rng.normal(0, 4, n)
    cols[reading.SELF_PACED] = 300 + 5 * np.nan_to_num(prev) + 2 * pred + rng.normal(0, 6, n)
    data = reading.ReadingData(["x"] * n, ["y"] * n, [None] * n, [None] * n, cols)
    got = reading.reading_scores(data, pred, prev)

    def share(y, extra):  # the formula terms written out by hand
        ok = ~np.isnan(y) & ~np.isnan(F) & np.all([~np.isnan(e) for e in extra], axis=0)
        base = [np.ones(n), F, L, C, F * L, F * C, L * C] + extra
        def r2(cols_):
            X = np.column_stack([c[ok] for c in cols_])
            beta = np.linalg.lstsq(X, y[ok], rcond=None)[0]
            res = y[ok] - X @ beta
            return 1 - res @ res / np.sum((y[ok] - y[ok].mean()) ** 2)
        rb, rm = r2(base), r2(base + [pred])
        return 100 * (rm - rb) / (1 - rb), int(ok.sum())

    eye = [share(cols[m], [])[0] for m in reading.EYE_TRACKING]
    assert got["eye_tracking"] == pytest.approx(np.mean(eye), abs=1e-9)
    PL = cols["prev_length"]
    spill = [PL, prev, F * PL, F * prev, L * PL, L * prev, C * PL, C * prev, PL * prev]
    spr, n_used = share(cols[reading.SELF_PACED], spill)
    assert got["self_paced_reading"] == pytest.approx(spr, abs=1e-9)
    assert got["measures"][reading.SELF_PACED]["n"] == n_used == n - 7
    assert got["eye_tracking"] > 1 and got["self_paced_reading"] > 1  # surprisal does explain these
    few = reading.ReadingData(["x"] * 12, ["y"] * 12, [None] * 12, [None] * 12, {k: v[:12] for k, v in cols.items()})
    assert math.isnan(reading.reading_scores(few, pred[:12], prev[:12])["self_paced_reading"])  # 6 rows, 17 params


def test_aoa_end_to_end_with_three_checkpoints(tmp_path, tok):
    ctx = {"apple": [{"context": "I ate an "}, {"context": "The red "}], "hat": [{"context": " She wore a "}],
           "a": [{"context": "This is "}]}
    (tmp_path / "ctx.json").write_text(json.dumps(ctx))
    (tmp_path / "human.csv").write_text("," + "word," + ",".join(str(a) for a in range(16, 31)) + "\n"
                                        + "0,apple," + ",".join(f"{0.05 * k:.2f}" for k in range(15)) + "\n")
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(GPTBERT(ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=1,
                                          num_heads=2, intermediate_size=24)).eval())
    res = aoa.evaluate_aoa([(3 * 10**6, models[2]), (10**6, models[0]), (2 * 10**6, models[1])], tok, "mntp",
                           contexts_path=tmp_path / "ctx.json", human_path=tmp_path / "human.csv")
    recs = res.predictions["results"]
    assert len(recs) == 3 * 3  # "a" is skipped (one character), 3 contexts x 3 checkpoints
    assert [r["step"] for r in recs[::3]] == ["chck_1M", "chck_2M", "chck_3M"]
    assert recs[2] == {**recs[2], "target_word": "hat", "context_id": 0, "context": " She wore a ", "word_count": 10**6}
    sc = SentenceScorer(models[0], tok, temperatures=(1.0,))
    (c, t), = split_at_chars(tok, ["She wore a hat"], [11])
    assert recs[2]["surprisal"] == pytest.approx(-sc.score([(c, t)], "mntp").logprob[0, 0], abs=1e-5)
    assert res.official_file == "surprisal.json" and res.official_dir == "AoA_word"
    for name in ("chck_10M", "chck_2M", "step_0000100"):
        (tmp_path / "ms" / name).mkdir(parents=True)
    assert aoa.milestone_checkpoints(tmp_path / "ms") == [(2 * 10**6, tmp_path / "ms" / "chck_2M"),
                                                         (10**7, tmp_path / "ms" / "chck_10M")]
    assert res.summary["checkpoints"] == ["chck_1M", "chck_2M", "chck_3M"] and not res.summary["complete"]


# ---------------------------------------------------------------------------
# The real data files


@needs_data
def test_readers_on_the_shared_2025_data():
    et = entity_tracking.load_entity_tracking(DATA / entity_tracking.NAMED["entity_tracking"][0])
    counts: dict[str, int] = {}
    for it in et:
        counts[it.subtask] = counts.get(it.subtask, 0) + 1
    assert counts == entity_tracking.FULL_SIZES and len(et) == 9483 and len(et[0].texts) == 5
    fast = entity_tracking.load_entity_tracking(DATA / entity_tracking.NAMED["entity_tracking_fast"][0])
    assert len(fast) == 3152 and {it.subtask for it in fast} == set(entity_tracking.FAST_SIZES)
    adj = wug.load_wug(DATA / wug.NAMED["wug_adj"][0], "wug_adj")
    past = wug.load_wug(DATA / wug.NAMED["wug_past"][0], "wug_past")
    assert (len(adj), len(adj[0].texts), len(past), len(past[0].texts)) == (200, 2, 50, 3)
    assert adj[0].texts[0].endswith("actignability") and 0 <= adj[0].extra["ratio"] <= 1
    rd = reading.load_reading(DATA / reading.NAMED["reading"])
    assert len(rd) == reading.SIZE and sum(p is None for p in rd.prev_items) == 205
    assert rd.items.count("None") == 1 and int(np.isnan(rd.columns["Subtlex_log10"]).sum()) == 30
    words = aoa.load_cdi_contexts(DATA / aoa.CONTEXTS)
    assert len(words) == 504 and sum(len(c) for _, c in words) == aoa.AOA_SIZE
    assert len(aoa.load_cdi_contexts(DATA / aoa.CONTEXTS, min_context=20)) == 328
    ages, human = aoa.load_cdi_human(DATA / aoa.HUMAN)
    assert len(human) == 504 and ages.tolist() == list(range(16, 31))


# ---------------------------------------------------------------------------
# EWoK scoring (issue 13 item 3), ties (item 4) and the suite


def _ewok(tmp_path) -> Path:
    d = tmp_path / "ewok_tiny"
    _write_jsonl(d / "physical-relations.jsonl", [
        {"Domain": "physical-relations", "Context1": "The cup is on the table.",
         "Target1": "The table is under the cup.", "Target2": "The cup is under the table."},
        {"Domain": "physical-relations", "Context1": "A pear can roll.", "Target1": "The pear is round.",
         "Target2": "The pear is a box."}])
    return d


def test_ewok_full_scoring_is_every_context_and_target_token(tmp_path, model, tok):
    task = load_task(_ewok(tmp_path))
    sc = SentenceScorer(model, tok, temperatures=(1.0,))
    full = evaluate_task(sc, task, "mntp", ewok_scoring="full")
    target = evaluate_task(sc, task, "mntp", ewok_scoring="target")
    for k, p in enumerate(task.pairs):
        for got, sent in ((full.good, p.good), (full.bad, p.bad)):
            ids = [BOS_ID] + tok.encode(f"{p.context} {sent}", add_special_tokens=False).ids
            assert got.logprob[k, 0] == pytest.approx(_brute(model, ids, list(range(1, len(ids))), "mntp"), abs=2e-4)
    assert not np.allclose(full.good.logprob, target.good.logprob)
    # under bidirectional attention the context terms do not cancel between the two candidates
    assert not np.allclose(full.good.logprob - full.bad.logprob, target.good.logprob - target.bad.logprob, atol=1e-3)
    # causal: the context terms are shared exactly, so the differences (and rankings) are the same
    cf, ct = (evaluate_task(sc, task, "causal", ewok_scoring=e) for e in ("full", "target"))
    np.testing.assert_allclose(cf.good.logprob - cf.bad.logprob, ct.good.logprob - ct.bad.logprob, atol=1e-4)
    assert task_result_dict(full)["ewok_scoring"] == "full" and task_result_dict(target)["ewok_scoring"] == "target"


def test_tie_counts_as_correct_only_under_the_official_rule(tmp_path, model, tok):
    d = _write_jsonl(tmp_path / "same" / "same.jsonl", [
        {"sentence_good": "The cup is on the table.", "sentence_bad": "The cup is on the table."},
        {"sentence_good": "A pear can roll.", "sentence_bad": "A pear rolls can."}]).parent
    task = load_task(d)
    sc = SentenceScorer(model, tok, temperatures=(1.0,))
    wrong, right = (evaluate_task(sc, task, "mntp", ties=t) for t in ("wrong", "correct"))
    assert wrong.ties[0] and not wrong.correct[0, 0] and right.correct[0, 0] and right.correct_greedy[0]
    assert wrong.correct[1, 0] == right.correct[1, 0]  # no tie there: same verdict
    assert right.predictions(1.0)["same"]["predictions"][0]["pred"] == task.pairs[0].good
    d_right = task_result_dict(right)
    assert d_right["ties"] == "correct" and "ties correct" in summary_table({"same": {"mntp": d_right}})


def test_suite_runs_2025_tasks_and_labels_the_rules(tmp_path, model, tok):
    recs = [{"sentences": f"The {t} rolled.\tThe {t} rollt.", "ratio": r}
            for t, r in zip(_THINGS, np.linspace(0, 1, 8))]
    wug_dir = _write_jsonl(tmp_path / "wug_past_tense" / "wug_past_tense.jsonl", recs).parent
    out = tmp_path / "out"
    res = run_suite(model, tok, [str(_ewok(tmp_path)), f"wug_past={wug_dir}"], ["causal", "mntp"], out,
                    precision="fp32", progress=False, sweep=False, charts=False, ties="correct", ewok_scoring="target")
    assert res["ties"]["rule"] == "correct" and res["ewok_scoring"] == "target"
    assert res["tasks"]["ewok_tiny"]["mntp"]["ewok_scoring"] == "target"
    w = res["babylm2025"]["wug_past"]["mntp"]
    assert w["n_items"] == 8 and -100 <= w["score"] <= 100 and "seconds" in w
    preds = json.loads((out / "zero_shot" / "mntp" / "wug_past" / "wug_past_tense" / "predictions.json").read_text())
    assert len(preds["wug_past"]["predictions"]) == 8
    md = (out / "report.md").read_text()
    assert "ties correct, target" in md and "BabyLM 2025 tasks" in md and "wug_past" in md
    assert json.loads((out / "results.json").read_text())["babylm2025"]["wug_past"]["causal"]["task"] == "wug_past"
    assert run.parse_spec("reading") == ("reading", None) and run.parse_spec("blimp_fast") is None
    with pytest.raises(GPTBertError, match="comps=PATH"):
        run.load("comps", tmp_path / "nowhere")
