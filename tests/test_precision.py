"""fp32 matmuls through oneDNN (gptbert/precision.py): same numbers as the default GEMM, setting restored."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from gptbert.config import ModelConfig
from gptbert.precision import fp32_matmul_via_onednn, onednn_fp32_is_exact
from gptbert.model import GPTBERT, attention_mask
from gptbert.train import train

needs_route = pytest.mark.skipif(not onednn_fp32_is_exact(),
                                 reason="this CPU has AMX (or no oneDNN fpmath switch): the route stays off")


def test_route_is_scoped_and_restored():
    before = torch.backends.mkldnn.matmul.fp32_precision
    with fp32_matmul_via_onednn() as r:
        inside = torch.backends.mkldnn.matmul.fp32_precision
        assert inside == ("bf16" if r.active else before)
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    with fp32_matmul_via_onednn(enabled=False) as r:
        assert not r.active and torch.backends.mkldnn.matmul.fp32_precision == before


@needs_route
def test_onednn_fp32_matches_default_gemm():
    """Not bf16 in disguise: a bf16 product would be off by ~1e-2 here, fp32 agrees to ~1e-6."""
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(512, 384, generator=g), torch.randn(1280, 384, generator=g)
    ref = (a.double() @ w.double().t())
    plain = torch.nn.functional.linear(a, w)
    with fp32_matmul_via_onednn():
        routed = torch.nn.functional.linear(a, w)
    err_plain = (plain.double() - ref).abs().max().item()
    err_routed = (routed.double() - ref).abs().max().item()
    bf16_err = ((a.bfloat16().double() @ w.bfloat16().double().t()) - ref).abs().max().item()
    assert err_routed < 4 * err_plain + 1e-5
    assert err_routed < bf16_err / 100


@needs_route
def test_model_forward_backward_same_under_route():
    torch.manual_seed(0)
    m = GPTBERT(ModelConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=96,
                            dropout=0.0, attention_dropout=0.0))
    ids = torch.randint(16, 300, (4, 24))
    mask = attention_mask(torch.zeros(4, 24, dtype=torch.long), torch.tensor([True, False, False, False]))

    def run():
        m.zero_grad()
        out = m(ids, mask)
        out.square().mean().backward()
        return out.detach(), m.embedding.word_embedding.weight.grad.clone()

    ref_out, ref_grad = run()
    with fp32_matmul_via_onednn():
        out, grad = run()
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-4)


@needs_route
def test_fp32_training_same_losses_with_and_without_route(prepared, tmp_path):
    v = prepared["vocab_size"]
    losses = {}
    for flag in (True, False):
        out = tmp_path / str(flag)
        train(tiny_config(prepared["data"], out, v, max_steps=6, onednn_fp32=flag))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[flag] = [(r["loss_masked"], r["loss_causal"]) for r in rows]
    assert len(losses[True]) == 6
    flat = lambda xs: [v for pair in xs for v in pair]  # noqa: E731
    assert flat(losses[True]) == pytest.approx(flat(losses[False]), rel=1e-4)
    assert torch.backends.mkldnn.matmul.fp32_precision != "bf16"  # train() restored the setting


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_hardware(native, monkeypatch):
    """"auto" is bf16 only where bf16 matmuls are native (AVX-512/AMX CPUs, GPUs): on an AVX2-only CPU
    bf16 matmuls fall back to a slow loop, so auto picks fp32 there. An explicit choice is kept."""
    from gptbert import precision as P

    P.bf16_is_native.cache_clear()
    monkeypatch.setattr(P, "bf16_is_native", lambda kind: native)
    assert P.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert [P.resolve_precision(p, "cpu") for p in ("bf16", "fp32", "fp64")] == ["bf16", "fp32", "fp64"]
    with P.autocast("cpu", "auto"):
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == (torch.bfloat16 if native else torch.float32)
    note = P.precision_note("auto", "cpu")
    assert (note is None) == native
    assert (P.precision_note("bf16", "cpu") is None) == native


def test_bf16_native_agrees_with_onednn():
    from gptbert.precision import bf16_is_native

    assert bf16_is_native("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_a_run_records_the_precision_it_ran_in(prepared, tmp_path, one_thread):
    import yaml

    from gptbert.precision import resolve_precision

    cfg = tiny_config(prepared["data"], tmp_path / "run", prepared["vocab_size"], max_steps=2, precision="auto")
    train(cfg)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["precision"] == resolve_precision("auto", "cpu") != "auto"
    assert cfg.train.precision == "auto"  # the caller's config is left alone
