"""Scoring modes against a brute-force reference loop on a tiny random model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from gptbert.config import ModelConfig
from gptbert.eval.forward import EvalModel
from gptbert.eval import native_sweep
from gptbert.eval.scoring import (SWEEP_TEMPERATURES, Scores, SentenceScorer, head_statistics, pair_correct,
                                  token_statistics)
from gptbert.model import GPTBERT
from gptbert.tokenizer import BOS_ID, MASK_ID

TINY = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, dropout=0.0,
            attention_dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> GPTBERT:
    torch.manual_seed(0)
    m = GPTBERT(ModelConfig(**TINY)).eval()
    with torch.no_grad():  # non-trivial layer weights, so the weighted sums are exercised
        for a in m.transformer.dwa_modules.alphas:
            a.add_(0.3 * torch.randn_like(a))
    return m


def _items(seed: int = 1):
    """Different lengths (so batches pad), with and without a context, and a repeated item."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(0, 3), (0, 7), (2, 1), (0, 5), (3, 4), (0, 9), (0, 1), (4, 6), (0, 2)]
    items = [(tuple(torch.randint(16, 300, (c,), generator=g).tolist()),
              tuple(torch.randint(16, 300, (n,), generator=g).tolist())) for c, n in shapes]
    return items + [items[1]]


def _reference(model, items, mode, temperatures):
    """One forward per scored token, plain model() call, log_softmax per temperature."""
    out, gaps = [], []
    for ctx, tgt in items:
        base = [BOS_ID, *ctx, *tgt]
        c, T = len(ctx), len(base)
        s, gap = np.zeros(len(temperatures)), 0.0
        for j, t in enumerate(tgt):
            ids = list(base)
            if mode == "mntp":
                ids[1 + c + j] = MASK_ID
                mask = None
            else:
                mask = torch.ones(1, 1, T, T, dtype=torch.bool).tril()
                if mode == "prefix":
                    mask[..., : 1 + c, : 1 + c] = True
            with torch.no_grad():
                logits = model(torch.tensor([ids]), mask)[0, c + j].double()  # position before the token
            temps = torch.tensor(temperatures, dtype=torch.float64)[:, None]
            s += torch.log_softmax(logits[None] / temps, -1)[:, t].numpy()
            gap += (logits[t] - logits.max()).item()
        out.append(s)
        gaps.append(gap)
    return np.array(out), np.array(gaps)


@pytest.mark.parametrize("mode", ["causal", "mntp", "prefix", "fused"])
def test_batched_scorer_matches_brute_force(model, mode):
    items = _items()
    # max_tokens=24 forces several batches with padding inside them
    got = SentenceScorer(model, precision="fp32", max_tokens=24).score(items, mode)
    if mode == "fused":
        a, ga = _reference(model, items, "causal", SWEEP_TEMPERATURES)
        b, gb = _reference(model, items, "mntp", SWEEP_TEMPERATURES)
        ref, gref = a + b, ga + gb
    else:
        ref, gref = _reference(model, items, mode, SWEEP_TEMPERATURES)
    # 1e-4 absolute, plus fp32-relative slack for the large values at T=0.05 (log-probs of ~-1000)
    np.testing.assert_allclose(got.logprob, ref, atol=1e-4, rtol=1e-6)
    np.testing.assert_allclose(got.greedy_gap, gref, atol=1e-4)
    j1 = SWEEP_TEMPERATURES.index(1.0)
    np.testing.assert_allclose(got.column(1.0), ref[:, j1], atol=1e-4)
    assert list(got.n_tokens) == [len(t) for _, t in items]


def _shared_prefix_items():
    """Minimal-pair-like items: shared prefixes, one sentence a prefix of another, the same token
    sequence split differently into context and target, a context shared by two targets."""
    return [((), (20, 21, 22, 23, 24)), ((), (20, 21, 25, 23, 24)), ((), (20, 21)), ((), (20, 21, 22)),
            ((20,), (21, 22)), ((), (30, 31, 32, 33, 34, 35, 36, 37, 38, 39)), ((40, 41), (42,)),
            ((40, 41), (43, 44)), ((), (20, 26, 27)), ((), (29,))]


@pytest.mark.parametrize("row_tokens", [0, 4, 7, 64])
def test_prefix_tree_rows_match_brute_force(model, row_tokens):
    """Causal scoring over prefix-tree rows (explicit position ids, ancestor masks) equals one
    forward per token; row_tokens=4/7 split the tree over rows (and give long items a row of their own)."""
    items = _shared_prefix_items()
    got = SentenceScorer(model, max_tokens=16, trie_row_tokens=row_tokens).score(items, "causal")
    ref, gref = _reference(model, items, "causal", SWEEP_TEMPERATURES)
    np.testing.assert_allclose(got.logprob, ref, atol=1e-4, rtol=1e-6)
    np.testing.assert_allclose(got.greedy_gap, gref, atol=1e-4)


def test_prefix_tree_packs_shared_prefixes_once():
    from gptbert.eval.scoring import _trie_rows

    items = _shared_prefix_items()
    rows = _trie_rows(items, 64)
    # <s> 20 21 {22 23 24 | 25 23 24} ; 20 26 27 ; 29 ; 30..39 ; 40 41 {42 | 43 44}
    assert len(rows) == 1 and len(rows[0].ids) == 1 + 2 + 3 + 3 + 2 + 1 + 10 + 2 + 1 + 2
    r = rows[0]
    assert r.depth == [0] + [len([p for p in _ancestors(r, n)]) for n in range(1, len(r.ids))]
    tokens = sum(len(t) for _, t in items)
    assert sum(len(v) for v in r.scored.values()) == tokens  # every scored token has one entry


def _ancestors(row, node):
    while row.parent[node] >= 0:
        node = row.parent[node]
        yield node


def test_position_ids_equal_default_positions_and_shift_invariance(model):
    """position_ids = 0..T-1 is the default; adding a constant changes nothing (only differences matter)."""
    ids = torch.randint(16, 300, (2, 9))
    mask = torch.ones(1, 1, 9, 9, dtype=torch.bool).tril()
    with torch.no_grad():
        ref = model.encode(ids, mask)
        pos = torch.arange(9).repeat(2, 1)
        torch.testing.assert_close(model.encode(ids, mask, pos), ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(model.encode(ids, mask, pos + 5), ref, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(model.encode(ids, mask, pos * 2), ref, atol=1e-3)


def test_batch_size_does_not_change_scores(model):
    items = _items(2)
    a = SentenceScorer(model, max_tokens=16).score(items, "mntp")
    b = SentenceScorer(model, max_tokens=100000).score(items, "mntp")
    np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-4, rtol=1e-6)


def test_prefix_differs_from_causal_only_with_context(model):
    items = _items()
    c = SentenceScorer(model, temperatures=(1.0,)).score(items, "causal")
    p = SentenceScorer(model, temperatures=(1.0,)).score(items, "prefix")
    for i, (ctx, _) in enumerate(items):
        if ctx:
            assert abs(c.logprob[i, 0] - p.logprob[i, 0]) > 1e-6
        else:
            assert c.logprob[i, 0] == pytest.approx(p.logprob[i, 0], abs=1e-5)


def test_eval_model_logits_are_fp32_and_match_the_model(model):
    ids = torch.randint(16, 300, (3, 11))
    mask = torch.ones(3, 1, 11, 11, dtype=torch.bool).tril()
    em = EvalModel(model, "fp32")
    torch.testing.assert_close(em.logits(ids, mask), model(ids, mask), atol=1e-5, rtol=1e-5)
    pos = torch.tensor([0, 12, 32])
    torch.testing.assert_close(em.logits(ids, None, pos), model(ids, None).reshape(-1, 300)[pos], atol=1e-5, rtol=1e-5)
    assert EvalModel(model, "bf16").logits(ids, mask, pos).dtype == torch.float32
    with pytest.raises(ValueError):
        EvalModel(model, "fp16")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_head_statistics_in_chunks_equal_whole_logits(model, precision):
    """The scorer projects features a few rows at a time into one reused buffer: every chunk,
    the short last one included, gives what the whole (N, V) logits give."""
    em = EvalModel(model, precision)
    ids = torch.randint(16, 300, (2, 9))
    pos = torch.tensor([0, 3, 4, 8, 9, 11, 12, 13, 16, 17])
    targets = torch.randint(0, 300, (10,))
    feats = em.features(ids, None, pos)
    logits = em.logits(ids, None, pos)
    assert torch.equal(em.project(feats), logits)
    for temps in ((1.0,), SWEEP_TEMPERATURES, (0.7, 1.33)):
        ref_lp, ref_gap = token_statistics(logits, targets, temps)
        lp, gap = head_statistics(em, feats, targets, temps, chunk_rows=3)
        # (a 3-row matmul may round differently from a 10-row one: equal up to fp32 rounding)
        torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(gap, ref_gap, atol=1e-5, rtol=1e-6)


def test_native_token_sums_match_float64_and_can_be_switched_off(monkeypatch):
    if native_sweep.library() is None:
        pytest.skip("no C compiler on this machine: the torch path is what runs (tested above)")
    torch.manual_seed(1)
    logits = torch.randn(11, 8192) * 5
    logits[4] += 1e4  # a large common offset: the kernel subtracts the max before scaling
    targets = torch.randint(0, 8192, (11,))
    z = logits.double() - logits.double().max(-1, keepdim=True).values
    ks = list(range(1, 61))
    sums, gaps = native_sweep.token_sums(logits, targets, ks)
    assert sums.shape == (11, 60) and gaps.shape == (11,)
    ref = torch.stack([torch.exp(z * (20 / k)).sum(-1) for k in ks], -1)
    rel = (sums.double() - ref).abs() / ref
    assert float(rel.max()) < 2e-5, float(rel.max())
    assert float(sums.min()) >= 1.0  # the max term exp(0) = 1 is always there
    assert torch.equal(gaps, logits.gather(-1, targets[:, None]).squeeze(-1) - logits.max(-1).values)
    # T = 1 alone (its own one-pass branch), and a subset of the grid in any order
    one, _ = native_sweep.token_sums(logits, targets, [20])
    assert float(((one[:, 0].double() - ref[:, 19]).abs() / ref[:, 19]).max()) < 2e-6
    some, _ = native_sweep.token_sums(logits, targets, [60, 1, 20])
    assert torch.equal(some, sums[:, [59, 0, 19]])
    # a bias row added on the fly: as if added to the logits first (in fp32)
    bias = torch.randn(8192) * 3
    with_bias, gb = native_sweep.token_sums(logits, targets, ks, bias)
    lb = logits + bias
    zb = lb.double() - lb.double().max(-1, keepdim=True).values
    refb = torch.stack([torch.exp(zb * (20 / k)).sum(-1) for k in ks], -1)
    assert float(((with_bias.double() - refb).abs() / refb).max()) < 2e-5
    assert torch.equal(gb, lb.gather(-1, targets[:, None]).squeeze(-1) - lb.max(-1).values)
    with pytest.raises(ValueError, match="targets"):
        native_sweep.token_sums(logits, torch.full((11,), 8192), ks)
    with pytest.raises(ValueError, match="grid"):
        native_sweep.token_sums(logits, targets, [0])
    monkeypatch.setenv("GPTBERT_NATIVE", "0")
    assert native_sweep.token_sums(logits, targets, ks) is None


def test_bf16_mode_close_to_fp32(model):
    items = _items()
    a = SentenceScorer(model, precision="fp32", temperatures=(1.0,)).score(items, "mntp")
    b = SentenceScorer(model, precision="bf16", temperatures=(1.0,)).score(items, "mntp")
    assert b.logprob.dtype == np.float64
    np.testing.assert_allclose(a.logprob, b.logprob, rtol=0.05, atol=0.3)


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_temperature_sweep_chain_matches_direct_log_softmax(native):
    if native:
        assert native_sweep.library() is not None or shutil.which("cc") is None, "a C compiler is here: must build"
    torch.manual_seed(0)
    logits = torch.randn(37, 300) * 6
    logits[3, :200] = -float("inf")  # a row with impossible tokens
    logits[5, :100] -= 1e4  # and one whose small terms underflow at every temperature
    targets = torch.randint(200, 300, (37,))
    lp, gap = token_statistics(logits, targets, SWEEP_TEMPERATURES, chunk_rows=8, native=native)
    for j, t in enumerate(SWEEP_TEMPERATURES):
        ref = torch.log_softmax(logits.double() / t, -1).gather(-1, targets[:, None]).squeeze(-1)
        torch.testing.assert_close(lp[:, j].double(), ref, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(gap, logits.gather(-1, targets[:, None]).squeeze(-1) - logits.max(-1).values)
    # T = 1 alone has its own path (natively, one pass of exponentials)
    lp1, gap1 = token_statistics(logits, targets, (1.0,), native=native)
    torch.testing.assert_close(lp1[:, 0], lp[:, SWEEP_TEMPERATURES.index(1.0)], atol=1e-5, rtol=1e-6)
    assert torch.equal(gap1, gap)
    # off-grid temperatures take the direct path
    lp2, _ = token_statistics(logits, targets, (0.7, 1.33))
    ref = torch.log_softmax(logits / 1.33, -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(lp2[:, 1], ref, atol=1e-4, rtol=1e-6)
    with pytest.raises(ValueError):
        token_statistics(logits, targets, (0.0,))


def test_identical_sentences_are_a_tie_and_count_as_wrong(model):
    items = [((), (20, 21, 22, 23)), ((), (20, 21, 22, 23)), ((), (30, 31))]
    for mode in ("causal", "mntp", "fused", "prefix"):
        s = SentenceScorer(model, max_tokens=8).score(items, mode)
        assert np.array_equal(s.logprob[0], s.logprob[1])
        assert s.greedy_gap[0] == s.greedy_gap[1]
        assert not pair_correct(s.logprob[0], s.logprob[1]).any()
        assert not pair_correct(s.greedy_gap[0], s.greedy_gap[1])


def test_scores_column_and_add():
    s = Scores((0.5, 1.0), np.array([[1.0, 2.0]]), np.array([-3.0]), np.array([2]))
    assert s.column(1.0)[0] == 2.0 and s.column(0)[0] == -3.0
    assert (s + s).logprob[0, 1] == 4.0
    with pytest.raises(KeyError):
        s.column(2.0)


def test_scoring_trims_the_heap_when_it_grows(model, monkeypatch):
    """The scorer hands freed heap back (memory.HeapTrimmer) once the RSS has grown 512 MB past
    the first batch's; the scores do not change."""
    from gptbert import memory

    items = _items(2)
    ref = SentenceScorer(model, max_tokens=16).score(items, "mntp")
    rss = iter(range(1000, 10**6, 200))  # +200 MB per batch: a trim every 4th batch after the reference
    calls = []
    monkeypatch.setattr(memory, "rss_mb", lambda: float(next(rss)))
    monkeypatch.setattr(memory, "release", lambda: calls.append(1) or True)
    got = SentenceScorer(model, max_tokens=16).score(items, "mntp")
    from gptbert.eval.scoring import _batches, _rows_for

    n_batches = len(_batches(_rows_for(list(dict.fromkeys(items)), "mntp"), 16))
    np.testing.assert_array_equal(got.logprob, ref.logprob)
    # batch 1 sets the reference (1000); 1200, 1400 stay within 512 MB; 1600 trims; batch 5 sets the next one
    assert n_batches >= 8 and len(calls) == n_batches // 4
