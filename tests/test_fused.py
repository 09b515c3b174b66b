"""The native GeGLU (gptbert/fused.py) against the torch formula and a float64 reference."""

from __future__ import annotations

import shutil

import pytest
import torch

from gptbert import fused, native


def _x(dtype=torch.float32, shape=(3, 5, 2 * 96), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3
    I = shape[-1] // 2
    x[0, 0, I:I + 4] = torch.tensor([0.0, -30.0, 30.0, -200.0])  # gates: zero, both saturated ends, the exp clamp
    return x.to(dtype)


def _reference64(x: torch.Tensor, dy: torch.Tensor):
    xd = x.detach().double().requires_grad_()
    y = fused.geglu_reference(xd)
    (dx,) = torch.autograd.grad(y, xd, dy.double())
    return y, dx


def test_native_kernel_is_built_where_a_compiler_is():
    assert fused.library() is not None or shutil.which("cc") is None, "a C compiler is here: the kernel must build"


def test_fp32_matches_the_torch_formula_forward_and_backward():
    if fused.library() is None:
        pytest.skip("no C compiler on this machine: geglu() is the torch formula itself")
    x = _x().requires_grad_()
    dy = torch.randn(3, 5, 96, generator=torch.Generator().manual_seed(1))
    y = fused.geglu(x)
    assert y.shape == (3, 5, 96) and y.dtype == torch.float32
    assert y.grad_fn is not None and "GeGLU" in type(y.grad_fn).__name__  # the native path ran
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().requires_grad_()
    yr = fused.geglu_reference(xr)
    (dxr,) = torch.autograd.grad(yr, xr, dy)
    torch.testing.assert_close(y, yr, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dx, dxr, rtol=1e-5, atol=1e-5)
    # and against float64: no worse than torch's own fp32 formula (plus a few ulp)
    y, yr, dx, dxr = y.detach(), yr.detach(), dx.detach(), dxr.detach()
    y64, dx64 = (t.detach() for t in _reference64(x, dy))
    assert float((y - y64).abs().max()) <= float((yr - y64).abs().max()) + 1e-5
    assert float((dx.double() - dx64).abs().max()) <= float((dxr.double() - dx64).abs().max()) + 1e-5
    assert float(y[0, 0, 0]) == 0.0 and float(x[0, 0, 0]) != 0.0  # g = 0: gelu(0) = 0 exactly
    assert float(y[0, 0, 2]) == float(x[0, 0, 2] * 30.0)  # g = 30: gelu(g) = g to fp32 precision


def test_bf16_is_within_one_rounding_of_float64():
    if fused.library() is None:
        pytest.skip("no C compiler on this machine: geglu() is the torch formula itself")
    x = _x(torch.bfloat16).requires_grad_()
    dy = torch.randn(3, 5, 96, generator=torch.Generator().manual_seed(1)).bfloat16()
    y = fused.geglu(x)
    (dx,) = torch.autograd.grad(y, x, dy)
    assert y.dtype == dx.dtype == torch.bfloat16
    y64, dx64 = _reference64(x, dy)
    # one rounding to bf16 of the exact value: relative error <= 2^-8 (plus the fp32 arithmetic before it).
    # atol: where g < -7 the float64 formula's 1 + tanh(u) cancels to exactly 0 while ours keeps
    # g * exp(2u) ~ 1e-15 (ours is the closer one there).
    for ours, ref in ((y, y64), (dx, dx64)):
        err = (ours.detach().double() - ref.detach()).abs()
        assert bool((err <= ref.detach().abs() * (2.0 ** -8 + 1e-6) + 1e-12).all()), float(err.max())


def test_rows_split_over_threads_give_the_same_bits(monkeypatch):
    if fused.library() is None:
        pytest.skip("no C compiler on this machine")
    x = _x(shape=(64, 33, 2 * 512))
    many = fused.geglu(x)
    monkeypatch.setattr(native, "parallel", lambda run, n, min_rows=1: run(0, n))
    one = fused.geglu(x)
    assert torch.equal(many, one)


def test_switched_off_or_odd_inputs_take_the_torch_formula(monkeypatch):
    x = _x(torch.float64)  # no float64 kernel: the formula
    assert torch.equal(fused.geglu(x), fused.geglu_reference(x))
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("GPTBERT_NATIVE", "0")
    assert fused.library() is None
    x = _x()
    assert torch.equal(fused.geglu(x), fused.geglu_reference(x))


# ---------------------------------------------------------------------------
# Dropout


def _needs_native():
    if fused.library() is None:
        pytest.skip("no C compiler on this machine: model.Dropout takes its torch path (tests/test_model.py)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_rate_scale_and_backward(dtype):
    _needs_native()
    torch.manual_seed(0)
    x = (torch.rand(999, 1001) + 1).to(dtype).requires_grad_()  # odd sizes: a partial last word
    threshold, rate = fused.dropout_threshold(0.1)
    assert threshold == 6554 and rate == 1 - 6554 / 65536
    torch.manual_seed(1)
    y = fused.dropout(x, 0.1)
    assert y.dtype == dtype and y.shape == x.shape
    keep = y != 0
    assert abs(keep.float().mean().item() - rate) < 0.002
    # alike everywhere: the kept share of each of 16 interleaved classes i % 16 (one class is 62,500 elements)
    classes = keep.reshape(-1)[: 999 * 1001 // 16 * 16].view(-1, 16).float().mean(0)
    assert float((classes - rate).abs().max()) < 0.006, classes
    scaled = (x.detach().float() * (1.0 / rate)).to(dtype)  # one fp32 multiply, one rounding
    assert torch.equal(y[keep], scaled[keep])
    dy = torch.randn(x.shape).to(dtype)
    (dx,) = torch.autograd.grad(y, x, dy)
    assert torch.equal(dx, torch.where(keep, (dy.float() * (1.0 / rate)).to(dtype), torch.zeros((), dtype=dtype)))


def test_dropout_is_reproducible_from_torch_seed_and_independent_of_threads(monkeypatch):
    _needs_native()
    x = torch.ones(257, 129)
    torch.manual_seed(5)
    a = fused.dropout(x, 0.25)
    b = fused.dropout(x, 0.25)  # the next draw of the generator: another mask
    torch.manual_seed(5)
    monkeypatch.setattr(native, "parallel", lambda run, n, min_rows=1: run(0, n))
    assert torch.equal(fused.dropout(x, 0.25), a)
    assert not torch.equal(a, b)
    # neighbouring elements are not correlated (a hash of the index, not a shifted stream)
    k = (a != 0).float().reshape(-1)
    c = torch.corrcoef(torch.stack([k[:-1], k[1:]]))[0, 1]
    assert abs(float(c)) < 0.01, float(c)


def test_dropout_returns_none_where_native_code_cannot_run(monkeypatch):
    assert fused.dropout(torch.ones(4, 4, dtype=torch.float64), 0.1) is None
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("GPTBERT_NATIVE", "0")
    assert fused.dropout(torch.ones(4, 4), 0.1) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_matmul_equals_dropout_then_matmul(dtype):
    """fused.dropout_matmul(x, v, p) draws the same seed and gives the same product and gradients as
    fused.dropout(x, p) @ v, bit for bit, without keeping dropout(x) for backward."""
    _needs_native()
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 40, 40).softmax(-1).to(dtype)
    v0 = torch.randn(2, 3, 40, 16).to(dtype)
    dy = torch.randn(2, 3, 40, 16).to(dtype)
    runs = []
    for fn in (lambda x, v: fused.dropout(x, 0.25) @ v, lambda x, v: fused.dropout_matmul(x, v, 0.25)):
        x, v = x0.clone().requires_grad_(), v0.clone().requires_grad_()
        torch.manual_seed(1)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = fn(x, v)
        y.backward(dy)
        runs.append((y, x.grad, v.grad, saved))
    (ya, dxa, dva, saved_a), (yb, dxb, dvb, saved_b) = runs
    assert torch.equal(ya, yb) and torch.equal(dxa, dxb) and torch.equal(dva, dvb)
    assert float((yb == 0).float().mean()) == 0.0 and float(dxb.eq(0).float().mean()) > 0.15  # some dropped
    # The two-op path keeps dropout(x) (a new (.., T, T) tensor); the fused one keeps only x and v.
    assert any(t.numel() == x0.numel() and t.data_ptr() != x.data_ptr() for t in saved_a)
    assert {t.data_ptr() for t in saved_b} == {x.data_ptr(), v.data_ptr()}


def test_training_attention_keeps_one_probability_tensor_a_layer():
    """In training with attention dropout on the CPU, each layer keeps one (B, H, T, T) bf16/fp32 tensor
    for backward (the softmax's output), not a second one for the dropped probabilities."""
    _needs_native()
    from gptbert.config import ModelConfig
    from gptbert.model import GPTBERT

    cfg = ModelConfig(vocab_size=300, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=48,
                      dropout=0.1, attention_dropout=0.1)
    torch.manual_seed(0)
    model = GPTBERT(cfg).train()
    B, T = 3, 20
    ids = torch.randint(16, 300, (B, T))
    saved = {}  # storage -> a tensor that uses it (views of one storage count once)

    def pack(t):
        saved.setdefault(t.untyped_storage().data_ptr(), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids).float().sum().backward()
    H = cfg.num_heads
    square = [t for t in saved.values()
              if t.is_floating_point() and tuple(t.shape[-2:]) == (T, T) and t.numel() == B * H * T * T]
    assert len(square) == cfg.num_layers, [tuple(t.shape) for t in square]


def test_layer_norm_fp32_matches_torch_forward_and_backward():
    """fused.layer_norm (native) = F.layer_norm without affine, values and input gradients, in fp32."""
    _needs_native()
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 7, 96, generator=g) * 5 + 3).requires_grad_()
    dy = torch.randn(4, 7, 96, generator=g)
    y = fused.layer_norm(x, 1e-7)
    ref = torch.nn.functional.layer_norm(x, (96,), eps=1e-7)
    assert y.dtype == torch.float32 and y.grad_fn is not None and "LayerNorm" in type(y.grad_fn).__name__
    torch.testing.assert_close(y, ref, rtol=0, atol=2e-6)
    (dx,) = torch.autograd.grad(y, x, dy)
    (dref,) = torch.autograd.grad(ref, x, dy)
    torch.testing.assert_close(dx, dref, rtol=0, atol=2e-6)
    # A row's gradient sums to zero and is orthogonal to its output (the two directions LN removes).
    assert float(dx.sum(-1).abs().max()) < 1e-5 and float((dx * y).sum(-1).abs().max()) < 1e-4


def test_layer_norm_under_bf16_autocast_writes_bf16_and_keeps_its_output_only():
    """Under CPU bf16 autocast the norm writes bf16 (the next matmul's dtype) from an fp32 input,
    within one rounding of the fp32 norm; backward returns fp32 for the fp32 input; and it keeps
    its bf16 output and one fp32 rstd per row for backward, not the fp32 input."""
    _needs_native()
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(6, 40, 64, generator=g) * 2 - 1).requires_grad_()
    ref = torch.nn.functional.layer_norm(x, (64,), eps=1e-7)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fused.layer_norm(x, 1e-7)
    assert y.dtype == torch.bfloat16
    # within half a bf16 ulp of the fp32 value (plus fp32 noise at the rounding boundary)
    err = (y.float() - ref).abs()
    assert bool((err <= ref.abs() * 2.0 ** -8 + 1e-6).all()), float(err.max())
    assert sorted((str(t.dtype), tuple(t.shape)) for t in saved) == [("torch.bfloat16", (6, 40, 64)),
                                                                     ("torch.float32", (240,))]
    assert saved[0].data_ptr() == y.data_ptr() or saved[1].data_ptr() == y.data_ptr()
    dy = torch.randn(6, 40, 64, generator=g)
    (dx,) = torch.autograd.grad(y, x, dy.bfloat16())
    (dref,) = torch.autograd.grad(ref, x, dy.bfloat16().float())
    assert dx.dtype == torch.float32
    # backward reads x-hat rounded to bf16: relative error of a few bf16 roundings
    assert float((dx - dref).norm() / dref.norm()) < 1e-2


def test_layer_norm_falls_back_to_torch_without_native_code(monkeypatch):
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(fused.layer_norm(x, 1e-5), torch.nn.functional.layer_norm(x, (8,), eps=1e-5))
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("GPTBERT_NATIVE", "0")
    x = torch.randn(3, 8)
    y = fused.layer_norm(x, 1e-5)
    assert y.grad_fn is None or "NativeLayerNorm" in type(y.grad_fn).__name__
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (8,), eps=1e-5))


def _attention_inputs(dtype, B=3, H=2, T=20, R=63, per_row_idx=False, seed=5):
    from gptbert.model import relative_position_index

    g = torch.Generator().manual_seed(seed)
    qk = (torch.randn(B, H, T, T, generator=g) * 4).to(dtype).requires_grad_()
    # c2p in the layout per_head_product returns: (H, B, ...) storage seen as (B, H, ...)
    c2p = torch.randn(H, B, T, R, generator=g).to(dtype).transpose(0, 1).requires_grad_()
    p2c = torch.randn(H, B, T, R, generator=g).to(dtype).transpose(0, 1).requires_grad_()
    if per_row_idx:  # zero-shot scoring: every row has its own positions (a packed prefix tree)
        pos = torch.randint(0, 30, (B, T), generator=g)
        idx = torch.randint(0, R, (B, 1, T, T), generator=g)
        idx[:, 0] = (pos[:, :, None] - pos[:, None, :]).clamp(-31, 31) + 31
    else:
        idx = relative_position_index(T, 32, 512)[None, None]
    keep = (torch.rand(B, 1, T, T, generator=g) > 0.4) | torch.eye(T, dtype=torch.bool)
    mask = torch.zeros(B, 1, T, T).masked_fill_(~keep, float("-inf"))
    return qk, c2p, p2c, idx, mask, keep


def _attention_reference(qk, c2p, p2c, idx, mask, scale):
    """The model's torch path (Attention._bias and the softmax), in float64."""
    from gptbert.model import Attention

    bias = Attention._bias(c2p.double(), p2c.double(), idx, None if mask is None else mask.double())
    return (qk.double() * scale + bias).softmax(-1)


@pytest.mark.parametrize("per_row_idx", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_probs_fp32_matches_the_torch_path(per_row_idx, masked):
    """fused.attention_probs = softmax(qk * scale + gathered bias + mask), values and the gradients of
    qk, c2p and p2c, against the model's gather path in float64; masked keys get exactly 0."""
    _needs_native()
    qk, c2p, p2c, idx, mask, keep = _attention_inputs(torch.float32, per_row_idx=per_row_idx)
    mask = mask if masked else None
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        p = fused.attention_probs(qk, c2p, p2c, idx, mask, 0.3)
    ref = _attention_reference(qk, c2p, p2c, idx, mask, 0.3)
    assert p.dtype == torch.float32 and p.shape == qk.shape
    torch.testing.assert_close(p.double(), ref, rtol=0, atol=1e-6)
    if masked:
        assert bool((p[~keep.expand_as(p)] == 0).all())
    dy = torch.randn(p.shape, generator=torch.Generator().manual_seed(9))
    got = torch.autograd.grad(p, (qk, c2p, p2c), dy)
    want = torch.autograd.grad(ref, (qk, c2p, p2c), dy.double())
    for a, b in zip(got, want):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b.double(), rtol=0, atol=1e-6)
    # backward keeps the probabilities and the index table only (no (B, H, T, T) scores or bias)
    assert {t.data_ptr() for t in saved} == {p.data_ptr(), idx.data_ptr()}


def test_attention_probs_bf16_rounds_once():
    """In bf16 the row is computed in fp32 from the bf16 inputs and each probability rounded once:
    within half a bf16 ulp (plus fp32 noise) of the float64 softmax of the same bf16 inputs."""
    _needs_native()
    qk, c2p, p2c, idx, mask, keep = _attention_inputs(torch.bfloat16)
    p = fused.attention_probs(qk, c2p, p2c, idx, mask, 0.3)
    ref = _attention_reference(qk, c2p, p2c, idx, mask, 0.3)
    assert p.dtype == torch.bfloat16
    assert bool(((p.double() - ref).abs() <= ref.abs() * 2.0 ** -8 + 1e-7).all())
    (dqk, dc2p, dp2c) = torch.autograd.grad(p, (qk, c2p, p2c), torch.ones_like(p) * 0.5 - p.detach())
    assert dqk.dtype == dc2p.dtype == dp2c.dtype == torch.bfloat16


def test_attention_probs_is_none_where_native_code_cannot_run(monkeypatch):
    qk, c2p, p2c, idx, mask, _ = _attention_inputs(torch.float64)
    assert fused.attention_probs(qk, c2p, p2c, idx, mask, 0.3) is None
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("GPTBERT_NATIVE", "0")
    qk, c2p, p2c, idx, mask, _ = _attention_inputs(torch.float32)
    assert fused.attention_probs(qk, c2p, p2c, idx, mask, 0.3) is None


def test_model_native_and_torch_paths_agree_in_fp32(monkeypatch):
    """The whole model (training mode, dropout off, a causal row and a document boundary) gives the
    same logits and parameter gradients with the native norm and attention kernels as with the torch
    paths they replace (1e-5)."""
    _needs_native()
    import gptbert.model as M
    from gptbert.config import ModelConfig

    cfg = ModelConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=96,
                      dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = M.GPTBERT(cfg).train()
    ids = torch.randint(16, 300, (3, 24))
    seg = torch.zeros(3, 24, dtype=torch.long)
    seg[1, 10:] = 1
    mask = M.attention_mask(seg, torch.tensor([True, False, False]))

    def run():
        model.zero_grad()
        out = model(ids, mask)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    monkeypatch.setattr(M.Attention, "_explicit_probabilities", lambda self, device, T: True)
    native_out, native_grads = run()
    monkeypatch.setattr(M, "attention_probs", lambda *a: None)
    monkeypatch.setattr(M, "layer_norm", lambda x, eps: torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps))
    torch_out, torch_grads = run()
    torch.testing.assert_close(native_out, torch_out, rtol=1e-5, atol=1e-5)
    assert len(native_grads) == len(torch_grads)
    for a, b in zip(native_grads, torch_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_add_into_writes_the_promoted_sum_bit_for_bit():
    """fused.add_into(out, x, b): out = x + b as torch promotes it (fp32 + bf16 -> fp32, one rounding),
    written into out (a row of a larger buffer), bit for bit; other dtypes through torch.add."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 9, 33, generator=g)
    b = (torch.randn(4, 9, 33, generator=g) * 3).bfloat16()
    buf = torch.full((3, 4, 9, 33), 7.0)
    fused.add_into(buf[1], x, b)
    assert torch.equal(buf[1], x + b) and bool((buf[0] == 7).all()) and bool((buf[2] == 7).all())
    b32 = b.float() * 0.5
    fused.add_into(buf[2], x, b32)
    assert torch.equal(buf[2], x + b32)


def test_layer_norm_keeps_its_precision_when_the_mean_dwarfs_the_spread():
    """One pass for both moments (of x - x[0]) must not cancel: rows at mean 1e4, std 1, in fp32 are
    as close to the float64 norm as torch's fp32 layer_norm is."""
    _needs_native()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(64, 384, generator=g, dtype=torch.float64) + 1e4
    ref = torch.nn.functional.layer_norm(x, (384,), eps=1e-7)
    ours = fused.layer_norm(x.float(), 1e-7).double()
    theirs = torch.nn.functional.layer_norm(x.float(), (384,), eps=1e-7).double()
    assert float((ours - ref).abs().max()) <= 1.5 * float((theirs - ref).abs().max()) + 1e-6


def test_native_builds_use_512_bit_vectors_only_where_the_cpu_has_avx512():
    assert native._vector_flags("fpu sse2 avx2 avx512f avx512bw") == ["-mprefer-vector-width=512"]
    assert native._vector_flags("fpu sse2 avx2 fma") == []
    assert native._vector_flags("fp asimd avx512fp16_lookalike") == []  # whole flags only
