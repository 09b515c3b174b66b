"""LAMB, parameter groups, LR schedule and EMA against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gptbert.errors import GPTBertError
from gptbert.optim import EMA, Lamb, clean_param_name, lr_factor, param_groups

# ---------------------------------------------------------------------------
# LAMB
# ---------------------------------------------------------------------------

W0 = [[1.0, 2.0], [3.0, 4.0]]
B0 = [0.5, -0.5]
GRADS = [  # (grad of W, grad of b) for step 1 and step 2
    ([[0.1, -0.2], [0.3, 0.4]], [0.1, -0.2]),
    ([[-0.3, 0.1], [0.2, 0.05]], [0.4, 0.1]),
]
LR, WD, B1, B2, EPS = 0.01, 0.1, 0.9, 0.98, 1e-8


def reference_lamb(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The LAMB formulas written out in float64 numpy."""
    w, b = np.array(W0), np.array(B0)
    m = {"w": np.zeros_like(w), "b": np.zeros_like(b)}
    v = {"w": np.zeros_like(w), "b": np.zeros_like(b)}
    for t in range(1, steps + 1):
        gw, gb = (np.array(g) for g in GRADS[t - 1])
        for key, p, g, wd in (("w", w, gw, WD), ("b", b, gb, 0.0)):
            m[key] = B1 * m[key] + (1 - B1) * g
            v[key] = B2 * v[key] + (1 - B2) * g**2
            m_hat = m[key] / (1 - B1**t)
            v_hat = v[key] / (1 - B2**t)
            update = m_hat / (np.sqrt(v_hat) + EPS)
            trust = 1.0
            if wd > 0:
                update = update + wd * p
                trust = np.linalg.norm(p) / np.linalg.norm(update)
            p -= LR * trust * update  # in place: updates w / b
    return w, b


def run_lamb(steps: int) -> tuple[nn.Parameter, nn.Parameter, Lamb]:
    w = nn.Parameter(torch.tensor(W0))
    b = nn.Parameter(torch.tensor(B0))
    opt = Lamb(
        [{"params": [w], "weight_decay": WD}, {"params": [b], "weight_decay": 0.0}],
        lr=LR,
        betas=(B1, B2),
        eps=EPS,
    )
    for t in range(steps):
        gw, gb = GRADS[t]
        w.grad = torch.tensor(gw)
        b.grad = torch.tensor(gb)
        opt.step()
    return w, b, opt


def test_lamb_first_step_by_hand():
    w, b, _ = run_lamb(1)
    # Step 1: m_hat = g and v_hat = g^2, so the Adam direction is sign(g) (up to eps).
    # No-decay bias: plain Adam step, no trust ratio.
    np.testing.assert_allclose(b.detach().numpy(), [0.5 - 0.01, -0.5 + 0.01], atol=1e-6)
    # Decayed weight: u = sign(g) + 0.1 * W = [[1.1, -0.8], [1.3, 1.4]],
    # ||W|| = sqrt(30), ||u|| = sqrt(5.5), W <- W - lr * ||W|| / ||u|| * u.
    u = np.array([[1.1, -0.8], [1.3, 1.4]])
    expected = np.array(W0) - LR * math.sqrt(30 / 5.5) * u
    np.testing.assert_allclose(w.detach().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(w.detach().numpy(), reference_lamb(1)[0], atol=1e-6)


def test_lamb_second_step_matches_reference():
    w, b, opt = run_lamb(2)
    ref_w, ref_b = reference_lamb(2)
    np.testing.assert_allclose(w.detach().numpy(), ref_w, atol=1e-6)
    np.testing.assert_allclose(b.detach().numpy(), ref_b, atol=1e-6)
    state = opt.state[w]
    assert state["step"] == 2
    assert state["exp_avg"].dtype == torch.float32
    # Without bias correction the second step would differ clearly.
    assert not np.allclose(ref_b, np.array(B0) - 0.02, atol=1e-4)


def test_lamb_zero_weight_gets_trust_one_and_is_deterministic():
    w = nn.Parameter(torch.zeros(3))
    opt = Lamb([{"params": [w], "weight_decay": 0.1}], lr=0.1)
    w.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()  # ||p|| == 0 -> trust ratio 1.0, a plain Adam step
    np.testing.assert_allclose(w.detach().numpy(), [-0.1, 0.1, -0.1], atol=1e-6)

    # eps is added after the square root: for |g| == eps the Adam direction is 1/2.
    b = nn.Parameter(torch.zeros(2))
    opt = Lamb([{"params": [b], "weight_decay": 0.0}], lr=1.0, eps=1e-8)
    b.grad = torch.tensor([1e-8, -1e-8])
    opt.step()
    np.testing.assert_allclose(b.detach().numpy(), [-0.5, 0.5], atol=1e-6)

    results = []
    for _ in range(2):
        torch.manual_seed(0)
        lin = nn.Linear(8, 8)
        opt = Lamb(param_groups(lin, 0.1), lr=0.01)
        for _ in range(3):
            lin(torch.randn(4, 8)).square().sum().backward()
            opt.step()
            opt.zero_grad()
        results.append(lin.weight.detach().clone())
    assert torch.equal(results[0], results[1])


# ---------------------------------------------------------------------------
# Parameter groups
# ---------------------------------------------------------------------------


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.ln_nobias = nn.LayerNorm(4, bias=False)
        self.proj = nn.Linear(4, 4)
        self.alphas = nn.Parameter(torch.ones(3))


def test_param_groups_membership():
    model = ToyModel()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, weight_decay=0.1)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert {names[id(p)] for p in groups[0]["params"]} == {"emb.weight", "proj.weight", "alphas"}
    assert {names[id(p)] for p in groups[1]["params"]} == {
        "norm.weight",
        "norm.bias",
        "ln_nobias.weight",
        "proj.bias",
    }


def test_param_groups_skips_empty_group():
    groups = param_groups(nn.Linear(3, 3, bias=False), weight_decay=0.1)
    assert [g["name"] for g in groups] == ["decay"]


# ---------------------------------------------------------------------------
# LR schedule
# ---------------------------------------------------------------------------


def official_lr_lambda(current_step: int, N: int, warmup: float = 0.016, cooldown: float = 0.016,
                       min_factor: float = 0.1) -> float:
    """A re-implementation of the official `cosine_schedule_with_warmup_cooldown` lambda (utils.py),
    with the step counts the official trainer passes: int(max_steps * proportion)."""
    W, C = int(N * warmup), int(N * cooldown)
    if current_step < W:
        return float(current_step) / float(max(1, W))
    elif current_step >= N - C:
        return min_factor * float(N - current_step) / float(max(1, C))
    progress = float(current_step - W) / float(max(1, N - W))
    return max(min_factor, min_factor + (1 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("frac", [0.0, 0.016, 0.5, 0.7, 0.9, 0.99, 1.0])
def test_lr_factor_equals_official_schedule(frac):
    N = 7812  # the small preset
    step = min(int(frac * N), N - 1)
    assert lr_factor(step, N) == official_lr_lambda(step, N)


def test_lr_factor_key_values_for_the_small_preset():
    N = 7812  # W = C = int(124.99) = 124
    assert lr_factor(0, N) == 0.0  # LambdaLR's first step: factor(0) = 0, as in the official run
    assert lr_factor(62, N) == 0.5 and lr_factor(124, N) == 1.0
    # The cosine spans N - W = 7688 steps after warmup and is cut off by the cooldown.
    assert lr_factor(3906, N) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 3782 / 7688)), abs=1e-15)
    assert round(lr_factor(3906, N), 3) == 0.561  # 50%
    assert round(lr_factor(5468, N), 3) == 0.291  # 70%
    assert round(lr_factor(7030, N), 3) == 0.123  # 90%
    assert lr_factor(7687, N) == pytest.approx(0.10059, abs=1e-5)  # last cosine step, above min_factor
    assert lr_factor(7688, N) == pytest.approx(0.1, abs=1e-12)  # cooldown starts at min_factor * C / C
    assert lr_factor(7811, N) == pytest.approx(0.1 / 124)
    assert lr_factor(7812, N) == 0.0 and lr_factor(9000, N) == 0.0
    # Exact over the whole run.
    assert all(lr_factor(s, N) == official_lr_lambda(s, N) for s in range(N))


def test_lr_factor_without_warmup_and_with_lambdalr():
    assert lr_factor(0, 20) == 1.0  # int(0.016 * 20) = 0: no warmup, no cooldown
    assert lr_factor(19, 20) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 19 / 20)))
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 1000))
    assert opt.param_groups[0]["lr"] == 0.0  # W = 16: step / 16
    for _ in range(8):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    values = [lr_factor(s, 1000) for s in range(1001)]
    assert max(abs(a - b) for a, b in zip(values[16:], values[17:])) < 0.01  # no jumps after warmup


# ---------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------


class WithBuffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.register_buffer("counter", torch.tensor([1.0]))
        self.register_buffer("cache", torch.zeros(2), persistent=False)


def test_ema_two_updates_match_formula():
    model = WithBuffers()
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.lin.bias.fill_(0.5)
    ema = EMA(model, decay=0.9)
    assert set(ema.state_dict()) == {"lin.weight", "lin.bias", "counter"}  # no non-persistent buffer

    p0 = model.lin.weight.detach().clone()
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[3.0, -1.0]]))
        model.counter.fill_(7.0)
    p1 = model.lin.weight.detach().clone()
    ema.update(model)
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[0.0, 4.0]]))
    p2 = model.lin.weight.detach().clone()
    ema.update(model)

    expected = 0.9 * (0.9 * p0 + 0.1 * p1) + 0.1 * p2  # = 0.81 p0 + 0.09 p1 + 0.1 p2
    torch.testing.assert_close(ema.shadow["lin.weight"], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ema.shadow["lin.weight"], torch.tensor([[1.08, 1.93]]), atol=1e-6, rtol=0)
    assert ema.shadow["lin.bias"].item() == pytest.approx(0.5)
    assert ema.shadow["counter"].item() == 7.0  # buffers are copied, not averaged

    fresh = WithBuffers()
    ema.copy_to(fresh)
    torch.testing.assert_close(fresh.lin.weight.detach(), expected, atol=1e-6, rtol=0)

    other = EMA(WithBuffers(), decay=0.9)
    other.load_state_dict({k: v.clone() for k, v in ema.state_dict().items()})
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
    with pytest.raises(GPTBertError, match="ema.safetensors: missing EMA tensor 'lin.bias'"):
        other.load_state_dict({"lin.weight": expected, "counter": torch.ones(1)}, source="ema.safetensors")


class FakeCompiled(nn.Module):
    """Stands in for torch.compile's OptimizedModule (same attribute name, no compile cost)."""

    def __init__(self, mod: nn.Module) -> None:
        super().__init__()
        self._orig_mod = mod


def test_ema_strips_wrapper_prefixes():
    model = WithBuffers()
    wrapped = nn.DataParallel(model)  # names start with 'module.'
    assert next(iter(dict(wrapped.named_parameters()))).startswith("module.")
    ema = EMA(wrapped, decay=0.5)
    assert set(ema.state_dict()) == {"lin.weight", "lin.bias", "counter"}
    ema.update(FakeCompiled(model))  # names start with '_orig_mod.' like torch.compile's wrapper
    ema.update(nn.DataParallel(model))
    assert clean_param_name("module._orig_mod.layers.0.weight") == "layers.0.weight"
    assert clean_param_name("_orig_mod.module.alphas") == "alphas"
    assert clean_param_name("layers.0._orig_mod.weight") == "layers.0.weight"
