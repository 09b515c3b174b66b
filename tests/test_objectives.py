"""MNTP alignment, masking statistics, hybrid mixing and the loss weighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gptbert.config import ObjectiveConfig, RunConfig
from gptbert.objectives import (IGNORE, causal_row, causal_rows, hybrid_loss, mask_key, mask_rate, mntp_row,
                                segment_ids, span_mask)
from gptbert.tokenizer import BOS_ID, MASK_ID, N_SPECIAL

V = 1000


def random_row(rng, T=128, docs=3):
    x = rng.integers(N_SPECIAL, V, size=T + 1)
    for p in rng.choice(np.arange(1, T), size=docs, replace=False):
        x[p] = BOS_ID
    x[0] = BOS_ID
    return x


def test_mntp_targets_are_shifted_masked_tokens():
    cfg = ObjectiveConfig()
    rng = np.random.default_rng(0)
    for r in range(50):
        x = random_row(rng)
        m = span_mask(x, 0.3, mask_key(1, 2, r), V, cfg)
        inp, tgt = mntp_row(x, 0.3, mask_key(1, 2, r), V, cfg)
        assert len(inp) == len(tgt) == len(x) - 1
        np.testing.assert_array_equal(inp, m.tokens[:-1])
        for k in range(len(tgt)):
            if m.masked[k + 1]:
                assert tgt[k] == x[k + 1]  # the prediction for token k+1 is output at position k
            else:
                assert tgt[k] == IGNORE
        # Position k's input at a masked, <mask>-replaced token k+1 is not visible at k itself.
        assert not m.masked[0]


def test_causal_targets():
    x = np.array([BOS_ID, 20, 21, 22, BOS_ID, 30, 31])
    inp, tgt = causal_row(x)
    assert inp.tolist() == [BOS_ID, 20, 21, 22, BOS_ID, 30]
    assert tgt.tolist() == [20, 21, 22, IGNORE, 30, 31]  # never predict the next document's <s>
    assert segment_ids(inp).tolist() == [1, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("step", [0, 500, 999])
def test_masking_statistics(step):
    cfg = ObjectiveConfig()
    p = mask_rate(step, 1000, cfg.mask_p_start, cfg.mask_p_end)
    rng = np.random.default_rng(step)
    masked = maskable = 0
    span_lengths = []
    actions = {0: 0, 1: 0, 2: 0}
    for r in range(600):
        x = random_row(rng)
        m = span_mask(x, p, mask_key(7, step, r), V, cfg)
        special = x < N_SPECIAL
        assert not (m.masked & special).any()  # special tokens never masked
        assert (m.tokens[special] == x[special]).all()
        masked += m.masked.sum()
        maskable += (~special[1:]).sum()
        # spans: every chosen span has 1..3 positions
        chosen_spans, counts = np.unique(m.span_id[m.masked], return_counts=True)
        span_lengths += counts.tolist()
        for s in chosen_spans:
            a = set(m.action[(m.span_id == s) & m.masked].tolist())
            assert len(a) == 1  # one decision per span
            actions[a.pop()] += 1
        # random replacements are never special tokens
        rnd = m.masked & (m.action == 1)
        assert (m.tokens[rnd] >= N_SPECIAL).all()
        assert (m.tokens[m.masked & (m.action == 0)] == MASK_ID).all()
        assert (m.tokens[m.masked & (m.action == 2)] == x[m.masked & (m.action == 2)]).all()
    rate = masked / maskable
    assert abs(rate - p) < 0.01, (rate, p)
    assert set(span_lengths) <= {1, 2, 3} and {1, 2, 3} <= set(span_lengths)
    total = sum(actions.values())
    assert abs(actions[0] / total - 0.8) < 0.02
    assert abs(actions[1] / total - 0.1) < 0.02
    assert abs(actions[2] / total - 0.1) < 0.02


def test_mask_rate_schedule():
    assert mask_rate(0, 101, 0.3, 0.15) == pytest.approx(0.30)
    assert mask_rate(50, 101, 0.3, 0.15) == pytest.approx(0.225)
    assert mask_rate(100, 101, 0.3, 0.15) == pytest.approx(0.15)


def test_masking_is_a_pure_function_of_seed_step_row():
    cfg = ObjectiveConfig()
    x = random_row(np.random.default_rng(3))
    a = span_mask(x, 0.2, mask_key(5, 10, 3), V, cfg)
    b = span_mask(x, 0.2, mask_key(5, 10, 3), V, cfg)
    c = span_mask(x, 0.2, mask_key(5, 10, 4), V, cfg)
    assert np.array_equal(a.tokens, b.tokens) and not np.array_equal(a.masked, c.masked)


def test_hybrid_ratio_is_a_property_of_the_batch():
    # 1:15 over many steps -> 1/16 of rows causal, whatever the batch size; exact count per step
    # is rows/16 stochastically rounded.
    for rows in (8, 32, 64):
        fr = [causal_rows(rows, 1 / 16, 0, s).mean() for s in range(2000)]
        assert abs(np.mean(fr) - 1 / 16) < 0.004
        for s in range(20):
            n = causal_rows(rows, 1 / 16, 0, s).sum()
            assert n in (int(rows / 16), int(rows / 16) + 1)
    assert causal_rows(32, 0.0, 0, 1).sum() == 0 and causal_rows(32, 1.0, 0, 1).sum() == 32


def test_hybrid_loss_weights():
    torch.manual_seed(0)
    logits = torch.randn(10, 7)
    targets = torch.randint(0, 7, (10,))
    is_causal = torch.tensor([True] * 3 + [False] * 7)
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    lse = torch.logsumexp(logits, -1)
    # Global batch: 3 causal and 7 masked targets, 1/4 of rows causal.
    loss, sums = hybrid_loss(logits, targets, is_causal, 0.25 / 3, 0.75 / 7, 1e-4)
    expected = 0.25 * (ce[:3] + 1e-4 * lse[:3] ** 2).mean() + 0.75 * (ce[3:] + 1e-4 * lse[3:] ** 2).mean()
    torch.testing.assert_close(loss, expected)
    assert sums.n_causal == 3 and sums.n_masked == 7
    assert sums.ce_causal == pytest.approx(float(ce[:3].sum()), rel=1e-6)
