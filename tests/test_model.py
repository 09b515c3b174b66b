"""The GPT-BERT architecture: positions, masks, parameter counts, a reference implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptbert.config import ModelConfig, model_preset
from gptbert.model import GPTBERT, attention_mask, bucket_position, per_head_product, relative_position_index


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=200, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
                dropout=0.0, attention_dropout=0.0)
    return ModelConfig(**{**base, **kw})


def test_per_head_product_equals_the_broadcast_product_and_its_gradients():
    # The relative-position tables: H matmuls over all B*T rows instead of a (B, H, D, R) broadcast.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, 3, 4, generator=g).transpose(1, 2).requires_grad_()  # (B, H, T, D), as q in the model
    table = torch.randn(9, 3, 4, generator=g).transpose(0, 1).requires_grad_()  # (H, R, D)
    ours = per_head_product(x, table)
    ref = x @ table.transpose(-1, -2)
    assert ours.shape == (5, 3, 7, 9)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    w = torch.randn(ours.shape, generator=g)
    gx, gt = torch.autograd.grad((ours * w).sum(), (x, table))
    rx, rt = torch.autograd.grad((ref * w).sum(), (x, table))
    torch.testing.assert_close(gx, rx, rtol=0, atol=1e-5)
    torch.testing.assert_close(gt, rt, rtol=0, atol=1e-5)


def test_bucket_function_hand_values():
    # 32 buckets, max 512: |d| <= 16 exact; beyond: ceil(log(|d|/16) / log(511/16) * 15) + 16.
    rel = torch.tensor([0, 1, -1, 15, -15, 16, -16, 17, 20, 30, 100, 200, 511, 512, 5000, -100])
    expected = []
    for d in rel.tolist():
        a = abs(d)
        if a <= 16:
            expected.append(d)
        else:
            a = min(a, 511)
            expected.append(int(math.copysign(math.ceil(math.log(a / 16) / math.log(511 / 16) * 15) + 16, d)))
    got = bucket_position(rel, 32, 512)
    assert got.tolist() == expected
    # A few values written out by hand: log(20/16)/log(511/16)*15 = 0.0644*15/... -> ceil = 1 -> 17
    assert got[8].item() == 17 and got[9].item() == 19 and got[10].item() == 24 and got[12].item() == 31
    assert got[13].item() == 31 and got[14].item() == 31 and got[15].item() == -24


def test_relative_index_range_and_toeplitz():
    idx = relative_position_index(600, 32, 512)
    assert idx.min().item() == 0 and idx.max().item() == 62
    assert idx[5, 5].item() == 31  # distance 0 -> middle row of the 63 embeddings
    assert idx[10, 3].item() == 31 + 7 and idx[3, 10].item() == 31 - 7
    assert torch.equal(idx[1:, 1:], idx[:-1, :-1])  # depends on i - j only


@pytest.mark.parametrize("preset,target", [("small", 30e6), pytest.param("base", 119e6, marks=pytest.mark.slow)])
def test_parameter_counts(preset, target):
    n = GPTBERT(model_preset(preset)).num_parameters()
    # small: 29,892,164; base: 119,454,532 (paper Table 3: 30M / 119M)
    assert abs(n - target) / target < 0.01, n
    assert n == {"small": 29_892_164, "base": 119_454_532}[preset]


def test_init_is_plain_residual_and_tied():
    m = GPTBERT(tiny())
    alphas = m.transformer.dwa_modules.alphas
    assert len(alphas) == 4 and [a.numel() for a in alphas] == [2, 3, 4, 5]
    assert all(a[-1].item() == 1.0 and a[:-1].abs().sum().item() == 0 for a in alphas)
    assert m.classifier.nonlinearity[-1].weight is m.embedding.word_embedding.weight
    std = math.sqrt(2 / (5 * 32))
    w = m.transformer.attention_layers[0].in_proj_qk.weight
    assert w.abs().max().item() <= 2 * std + 1e-6
    # FFN matrices of layer i are scaled by sqrt(1 / (2 (i + 1)))
    w1 = m.transformer.mlp_layers[1].mlp[1].weight
    assert w1.abs().max().item() <= 2 * std * math.sqrt(1 / 4) + 1e-6


def reference_forward(m: GPTBERT, ids: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """A literal implementation of the paper's attention (T x T x d position tensors), for comparison."""
    cfg = m.config
    H, D = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    x = F.layer_norm(m.embedding.word_embedding(ids), (cfg.hidden_size,), eps=cfg.layer_norm_eps)
    rel = m.embedding.relative_layer_norm(m.embedding.relative_embedding)
    B, T = ids.shape
    outputs = [x]
    for i in range(cfg.num_layers):
        a = m.transformer.attention_layers[i]
        h = F.layer_norm(x, (cfg.hidden_size,), eps=cfg.layer_norm_eps)
        q, k = a.in_proj_qk(h).chunk(2, -1)
        if cfg.attention_gate:
            v, g = a.in_proj_vg(h).chunk(2, -1)
        else:
            v, g = a.in_proj_v(h), None
        pq, pk = a.in_proj_qk(rel).chunk(2, -1)
        idx = relative_position_index(T, cfg.position_buckets, cfg.max_position)
        pq, pk = pq[idx].view(T, T, H, D), pk[idx].view(T, T, H, D)  # (T, T, H, D)
        q, k, v = (t.view(B, T, H, D) for t in (q, k, v))
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) + torch.einsum("bqhd,qkhd->bhqk", q, pk) \
            + torch.einsum("bkhd,qkhd->bhqk", k, pq)
        s = s / math.sqrt(3 * D)
        s = s.masked_fill(~allowed, float("-inf")).softmax(-1)
        ctx = torch.einsum("bhqk,bkhd->bqhd", s, v).reshape(B, T, -1)
        if g is not None:
            ctx = ctx * F.gelu(g)
        y = a.out_proj(F.layer_norm(ctx, (cfg.hidden_size,), eps=cfg.layer_norm_eps))
        if not cfg.layer_weighting:  # plain pre-LN residual stream
            x = x + y
            x = x + m.transformer.mlp_layers[i](x)
            continue
        outputs.append(x + y)
        al = m.transformer.dwa_modules.alphas[2 * i]
        x = sum(al[j] * outputs[j] for j in range(len(outputs)))
        outputs.append(x + m.transformer.mlp_layers[i](x))
        al = m.transformer.dwa_modules.alphas[2 * i + 1]
        x = sum(al[j] * outputs[j] for j in range(len(outputs)))
    return m.head(x)


def test_matches_reference_implementation():
    torch.manual_seed(0)
    m = GPTBERT(tiny()).eval()
    with torch.no_grad():  # make the DWA weights non-trivial
        for a in m.transformer.dwa_modules.alphas:
            a.add_(torch.randn_like(a) * 0.3)
    ids = torch.randint(16, 200, (3, 21))
    ids[:, 0] = 1
    ids[1, 9] = 1
    seg = torch.cumsum(ids == 1, -1)
    for causal in (torch.tensor([False, True, False]), torch.tensor([True, True, True])):
        mask = attention_mask(seg, causal)
        got = m(ids, mask)
        ref = reference_forward(m, ids, mask)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_positions_argument_selects_rows():
    torch.manual_seed(0)
    m = GPTBERT(tiny()).eval()
    ids = torch.randint(16, 200, (2, 10))
    full = m(ids)
    pos = torch.tensor([0, 5, 13, 19])
    torch.testing.assert_close(m(ids, None, pos), full.reshape(-1, 200)[pos])


def test_causal_rows_ignore_later_tokens():
    torch.manual_seed(0)
    m = GPTBERT(tiny()).eval()
    ids = torch.randint(16, 200, (1, 16))
    seg = torch.zeros_like(ids)
    mask = attention_mask(seg, True)
    a = m(ids, mask)
    ids2 = ids.clone()
    ids2[0, 10:] = torch.randint(16, 200, (6,))
    b = m(ids2, mask)
    torch.testing.assert_close(a[0, :10], b[0, :10], atol=0, rtol=0)
    assert not torch.allclose(a[0, 10:], b[0, 10:])
    # Bidirectional rows do see later tokens.
    c, d_ = m(ids, attention_mask(seg, False)), m(ids2, attention_mask(seg, False))
    assert not torch.allclose(c[0, :10], d_[0, :10])


@pytest.mark.parametrize("causal", [False, True])
def test_no_attention_across_documents(causal):
    torch.manual_seed(0)
    m = GPTBERT(tiny()).eval()
    ids = torch.randint(16, 200, (1, 24))
    ids[0, 0] = 1
    ids[0, 8] = 1  # document 2 = positions 8..15
    ids[0, 16] = 1  # document 3 = positions 16..23
    seg = torch.cumsum(ids == 1, -1)
    mask = attention_mask(seg, causal)
    a = m(ids, mask)
    other = ids.clone()
    other[0, 1:8] = torch.randint(16, 200, (7,))  # change documents 1 and 3
    other[0, 17:] = torch.randint(16, 200, (7,))
    b = m(other, mask)
    # Document 2's logits are unchanged (position-relative attention only inside the document).
    torch.testing.assert_close(a[0, 8:16], b[0, 8:16], atol=1e-6, rtol=0)
    assert not torch.allclose(a[0, 1:8], b[0, 1:8])


def test_mask_shape_and_mixing():
    seg = torch.tensor([[1, 1, 1, 2], [1, 1, 2, 2]])
    m = attention_mask(seg, torch.tensor([True, False]))
    assert m.shape == (2, 1, 4, 4)
    assert m[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    assert m[1, 0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    m = GPTBERT(tiny()).eval()
    ids = torch.randint(16, 200, (2, 12))
    a = m(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = m(ids)
    assert (a - b.float()).abs().max().item() < 0.1


def test_gradients_match_reference_implementation():
    """The buffer-based layer-weight sums (custom autograd) give the same gradients as plain autograd."""
    torch.manual_seed(1)
    m = GPTBERT(tiny(num_layers=3)).double()
    with torch.no_grad():
        for a in m.transformer.dwa_modules.alphas:
            a.add_(torch.randn_like(a) * 0.3)
    ids = torch.randint(16, 200, (2, 11))
    mask = attention_mask(torch.zeros_like(ids), torch.tensor([True, False]))
    w = torch.randn(2, 11, 200, dtype=torch.float64)
    (m(ids, mask) * w).sum().backward()
    got = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    (reference_forward(m, ids, mask) * w).sum().backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-9, rtol=1e-7, msg=n)


@pytest.mark.parametrize("path", ["native", "torch"])
def test_cpu_dropout_rate_and_scaling(path, monkeypatch):
    import gptbert.model
    from gptbert.model import Dropout

    if path == "torch":  # the fallback where no native code can run (model.dropout_keep_mask)
        monkeypatch.setattr(gptbert.model, "dropout", lambda x, p: None)
    d = Dropout(0.1).train()
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = d(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.002  # drop rate 6554/65536 = 0.1000061
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - 6554 / 65536)))
    assert abs(y.mean().item() - 1.0) < 0.003  # unbiased
    torch.manual_seed(0)
    assert torch.equal(d(x), y)  # reproducible from the seed (exact resume)
    assert torch.equal(d.eval()(x), x)


def test_cpu_dropout_is_unbiased_in_bf16():
    """Kept bf16 activations are scaled by 1/(1-p) with one rounding: no systematic shrink (a bf16
    scale factor would round 1/0.9 to 1.109, -0.16% on every kept value)."""
    from gptbert.model import Dropout, dropout_keep_mask

    torch.manual_seed(0)
    x = (torch.rand(2000, 1000) + 1).bfloat16()  # no zeros: y == 0 exactly where dropped
    rate = dropout_keep_mask((1,), 0.1, x.device)[1]
    torch.manual_seed(1)
    y = Dropout(0.1).train()(x)
    keep = y != 0
    assert abs(keep.float().mean().item() - rate) < 0.002
    torch.testing.assert_close(y[keep], (x[keep].float() / rate).bfloat16(), rtol=0, atol=0)  # one rounding
    ratio = (y.double().sum() / (x.double() * keep).sum() * rate).item()
    assert abs(ratio - 1.0) < 2e-4, ratio


@pytest.mark.parametrize("T", [13, 80])
def test_training_mode_attention_path_matches_sdpa_without_dropout(T):
    """The manual softmax path used for CPU training equals inference (manual for T <= 64,
    SDPA above) when dropout draws nothing."""
    torch.manual_seed(0)
    m = GPTBERT(tiny(attention_dropout=1e-9))
    ids = torch.randint(16, 200, (2, T))
    mask = attention_mask(torch.cumsum((ids == 1).long(), -1), torch.tensor([True, False]))
    train_out = m.train()(ids, mask)
    eval_out = m.eval()(ids, mask)
    torch.testing.assert_close(train_out, eval_out, atol=1e-5, rtol=1e-5)


def test_recomputed_attention_is_bit_identical_with_dropout():
    """recompute_attention(True) replays the same dropout masks: same loss and gradients, exactly."""
    torch.manual_seed(0)
    m = GPTBERT(tiny(attention_dropout=0.2, dropout=0.1)).train()
    ids = torch.randint(16, 200, (3, 40))
    mask = attention_mask(torch.zeros(3, 40, dtype=torch.long), torch.tensor([True, False, False]))
    results = []
    for recompute in (False, True):
        m.recompute_attention(recompute)
        m.zero_grad()
        torch.manual_seed(123)
        out = m(ids, mask)
        out.float().square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
    (o1, g1), (o2, g2) = results
    assert torch.equal(o1, o2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert m.transformer.attention_layers[0].recompute


# ---------------------------------------------------------------------------
# Ablation switches (paper Table 2: w/o attention gate, w/o layer weights)


def _state_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in GPTBERT(cfg).state_dict().items()}


def test_default_switches_keep_todays_keys_and_shapes():
    """Switches on (the defaults) = the paper's model with the official key names, unchanged."""
    assert ModelConfig().attention_gate and ModelConfig().layer_weighting
    shapes = _state_shapes(tiny())
    d, L = 32, 2
    for i in range(L):
        a = f"transformer.attention_layers.{i}."
        assert shapes[a + "in_proj_qk.weight"] == (2 * d, d) and shapes[a + "in_proj_vg.weight"] == (2 * d, d)
        assert shapes[a + "in_proj_vg.bias"] == (2 * d,) and a + "in_proj_v.weight" not in shapes
    assert [shapes[f"transformer.dwa_modules.alphas.{b}"] for b in range(2 * L)] == [(2,), (3,), (4,), (5,)]
    expected = {"embedding.word_embedding.weight", "embedding.relative_embedding",
                "embedding.relative_layer_norm.weight", "embedding.relative_layer_norm.bias",
                "classifier.nonlinearity.1.weight", "classifier.nonlinearity.1.bias",
                "classifier.nonlinearity.5.weight", "classifier.nonlinearity.5.bias"}
    for i in range(L):
        expected |= {f"transformer.attention_layers.{i}.{p}.{w}" for p in ("in_proj_qk", "in_proj_vg", "out_proj")
                     for w in ("weight", "bias")}
        expected |= {f"transformer.mlp_layers.{i}.mlp.{j}.weight" for j in (1, 4)}
    expected |= {f"transformer.dwa_modules.alphas.{b}" for b in range(2 * L)}
    assert set(shapes) == expected


@pytest.mark.parametrize("preset,gate,dwa,expected", [
    ("small", False, True, 29_892_164 - 12 * (384 * 384 + 384)),  # half of in_proj_vg per layer
    ("small", True, False, 29_892_164 - sum(b + 2 for b in range(24))),  # 324 layer weights
    ("small", False, False, 29_892_164 - 12 * (384 * 384 + 384) - 324),
    ("base", False, False, 119_454_532 - 12 * (768 * 768 + 768) - 324),
])
def test_ablation_parameter_counts(preset, gate, dwa, expected):
    cfg = model_preset(preset, attention_gate=gate, layer_weighting=dwa)
    with torch.device("meta"):  # shapes only: no time spent on initialisation
        assert GPTBERT(cfg).num_parameters() == expected
        assert GPTBERT(model_preset(preset)).num_parameters() == {"small": 29_892_164, "base": 119_454_532}[preset]


def test_ablation_state_dict_keys():
    base = set(_state_shapes(tiny()))
    no_gate = _state_shapes(tiny(attention_gate=False))
    no_dwa = set(_state_shapes(tiny(layer_weighting=False)))
    assert base - set(no_gate) == {f"transformer.attention_layers.{i}.in_proj_vg.{w}" for i in range(2)
                                   for w in ("weight", "bias")}
    assert set(no_gate) - base == {f"transformer.attention_layers.{i}.in_proj_v.{w}" for i in range(2)
                                   for w in ("weight", "bias")}
    assert no_gate["transformer.attention_layers.0.in_proj_v.weight"] == (32, 32)
    assert base - no_dwa == {f"transformer.dwa_modules.alphas.{b}" for b in range(4)} and not no_dwa - base


@pytest.mark.parametrize("gate,dwa", [(False, True), (True, False), (False, False)])
def test_ablated_models_match_reference_implementation(gate, dwa):
    torch.manual_seed(0)
    m = GPTBERT(tiny(attention_gate=gate, layer_weighting=dwa)).double().eval()
    if dwa:
        with torch.no_grad():
            for a in m.transformer.dwa_modules.alphas:
                a.add_(torch.randn_like(a) * 0.3)
    ids = torch.randint(16, 200, (3, 21))
    ids[:, 0] = 1
    ids[1, 9] = 1
    mask = attention_mask(torch.cumsum(ids == 1, -1), torch.tensor([False, True, False]))
    torch.testing.assert_close(m(ids, mask), reference_forward(m, ids, mask), atol=1e-10, rtol=1e-10)
    # Gradients too (the plain residual path bypasses the custom layer-weight autograd).
    w = torch.randn(3, 21, 200, dtype=torch.float64)
    (m(ids, mask) * w).sum().backward()
    got = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    (reference_forward(m, ids, mask) * w).sum().backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-9, rtol=1e-7, msg=n)


def test_no_layer_weights_equals_initial_layer_weights():
    """Layer weights start as [0, ..., 0, 1], i.e. a plain residual stack: with the same other weights
    the model without them gives the same output (bit for bit in fp64 up to summation order)."""
    torch.manual_seed(0)
    with_dwa = GPTBERT(tiny()).double().eval()
    plain = GPTBERT(tiny(layer_weighting=False)).double().eval()
    missing, unexpected = plain.load_state_dict(with_dwa.state_dict(), strict=False)
    assert not missing and set(unexpected) == {f"transformer.dwa_modules.alphas.{b}" for b in range(4)}
    ids = torch.randint(16, 200, (2, 17))
    torch.testing.assert_close(plain(ids), with_dwa(ids), atol=1e-12, rtol=0)
    # ... and with trained (non-trivial) weights they differ.
    with torch.no_grad():
        with_dwa.transformer.dwa_modules.alphas[3][0] += 0.5
    assert not torch.allclose(plain(ids), with_dwa(ids))


def test_no_gate_is_not_the_gated_model():
    torch.manual_seed(0)
    gated = GPTBERT(tiny()).eval()
    plain = GPTBERT(tiny(attention_gate=False)).eval()
    sd = gated.state_dict()
    for i in range(2):  # same values, gate half dropped
        a = f"transformer.attention_layers.{i}."
        sd[a + "in_proj_v.weight"] = sd.pop(a + "in_proj_vg.weight")[:32]
        sd[a + "in_proj_v.bias"] = sd.pop(a + "in_proj_vg.bias")[:32]
    plain.load_state_dict(sd)
    ids = torch.randint(16, 200, (2, 9))
    assert not torch.allclose(plain(ids), gated(ids), atol=1e-3)


def test_switches_validated_and_old_configs_load():
    from gptbert.config import config_from_dict
    from gptbert.errors import GPTBertError

    old = {k: v for k, v in ModelConfig().__dict__.items() if k not in ("attention_gate", "layer_weighting")}
    cfg = config_from_dict({"model": old}).model  # a config.yaml written before the switches existed
    assert cfg.attention_gate is True and cfg.layer_weighting is True
    with pytest.raises(GPTBertError, match="layer_weighting"):
        ModelConfig(layer_weighting="no").validate()
    with pytest.raises(GPTBertError, match="expected bool"):
        config_from_dict({"model": {"attention_gate": "maybe"}})
    assert config_from_dict({"model": {"attention_gate": "false"}}).model.attention_gate is False


def _randomised(cfg: ModelConfig, seed: int = 0) -> GPTBERT:
    """A model whose layer weights are not the identity init (so every stream state matters)."""
    torch.manual_seed(seed)
    m = GPTBERT(cfg).eval()
    if m.transformer.dwa_modules is not None:
        with torch.no_grad():
            for a in m.transformer.dwa_modules.alphas:
                a.normal_(0.5, 0.3)
    return m


@pytest.mark.parametrize("gate,dwa", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("masking", ["none", "causal", "padded", "tree"])
def test_encode_select_matches_the_full_pass(gate, dwa, masking):
    """encode(select=...) runs the last layer at the selected positions only (MNTP scoring): the
    hidden states there equal the full pass's, for every attention variant the scorers use."""
    m = _randomised(tiny(num_layers=3, attention_gate=gate, layer_weighting=dwa))
    B, T = 5, 11
    torch.manual_seed(1)
    ids = torch.randint(4, 200, (B, T))
    mask, pos_ids = None, None
    if masking == "padded":  # rows of different lengths, pads in their own segment (mntp batches)
        lengths = torch.tensor([11, 7, 9, 11, 3])
        seg = torch.where(torch.arange(T)[None, :] < lengths[:, None], 0, -1)
        mask = attention_mask(seg, False)
    elif masking == "causal":  # one (1, 1, T, T) mask for every row (causal and prefix batches)
        mask = torch.ones(1, 1, T, T, dtype=torch.bool).tril()
    elif masking == "tree":  # a causal mask with per-token position ids (prefix-tree rows)
        mask = torch.ones(1, 1, T, T, dtype=torch.bool).tril().expand(B, 1, T, T)
        pos_ids = torch.arange(T).repeat(B, 1) // 2
    select = torch.tensor([0, 3, 12, 21, 30, 31, 44, 54, 10])  # several per row, any order
    with torch.no_grad():
        full = m.encode(ids, mask, pos_ids).reshape(B * T, -1)[select]
        part = m.encode(ids, mask, pos_ids, select=select)
    assert part.shape == (9, 32)
    torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)
    assert (part - full).abs().max() < 1e-5 * full.abs().max()
    # with gradients it is the full pass, indexed (the same numbers)
    torch.testing.assert_close(m.encode(ids, mask, pos_ids, select=select), full, atol=1e-5, rtol=1e-5)


def test_encode_select_in_bf16_is_as_close_as_the_full_pass():
    m = _randomised(tiny(num_layers=3))
    ids = torch.randint(4, 200, (4, 16))
    select = torch.tensor([2, 17, 40, 63])
    with torch.no_grad():
        ref = m.encode(ids).reshape(64, -1)[select]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            full = m.encode(ids).float().reshape(64, -1)[select]
            part = m.encode(ids, select=select).float()
    # bf16 rounding alone moves the full pass by ~1e-2; the selective pass stays within that of it
    err_full, err_part = (full - ref).abs().max(), (part - ref).abs().max()
    assert err_full > 0 and err_part < 2 * err_full + 1e-3, (err_full, err_part)
    torch.testing.assert_close(part, full, atol=5e-2, rtol=5e-2)
