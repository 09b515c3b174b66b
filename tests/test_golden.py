"""Golden loss curve: 20 steps of the tiny-cpu preset (dropout 0) must not move when code is moved.

The curve was recorded once (`GPTBERT_WRITE_GOLDEN=1 python -m pytest tests/test_golden.py`) and is
compared here to 1e-6. It is recorded in fp64 (identical on every CPU: the matmul kernels differ
between CPUs only in their summation order, which fp64 makes invisible at 1e-6) and in fp32 once per
kind of CPU (AVX2, AVX-512, AMX: each gets other oneDNN kernels, whose summation order moves the fp32
curve by up to ~4e-4 over 20 steps, measured between an AVX2 and an AVX-512 EPYC). The fp32 curve is
checked to 1e-6 against the one of this CPU's kind; on a kind with no recorded curve, to 1e-3 against
the nearest recorded one, and the test says which comparison it made (record it then).

A change that is meant to alter the numerics (a new default) re-records the file and says so in the
commit; anything else that moves these numbers is a bug.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import tiny_config  # noqa: F401  (keeps the fixture module loaded)

GOLDEN = Path(__file__).parent / "assets" / "golden_tiny_cpu_20_steps.json"


def _cpu_kind() -> str:
    """"amx", "avx512", "avx2", ...: the kernel family PyTorch and oneDNN pick on this CPU."""
    import torch

    from gptbert.precision import cpu_has_amx

    return "amx" if cpu_has_amx() else torch.backends.cpu.get_cpu_capability().lower()


def _curve(prepared, tmp_path: Path, precision: str) -> list[list[float]]:
    from gptbert.config import load_config
    from gptbert.train import train

    from helpers import preset_path

    out = tmp_path / precision
    cfg = load_config(preset_path("tiny-cpu"), {
        "train.data": str(prepared["data"]), "train.out_dir": str(out), "train.precision": precision,
        "train.max_steps": 20, "train.log_every": 1, "train.tensorboard": False,
        "model.vocab_size": prepared["vocab_size"], "model.dropout": 0.0, "model.attention_dropout": 0.0,
    })
    train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [[r["step"], r["loss_masked"], r["loss_causal"]] for r in rows]


@pytest.mark.parametrize("precision", [pytest.param("fp64", marks=pytest.mark.slow), "fp32"])  # fp64: slow tier
def test_tiny_cpu_loss_curve_is_golden(prepared, tmp_path, one_thread, precision):
    curve = _curve(prepared, tmp_path, precision)
    assert [r[0] for r in curve] == list(range(1, 21))
    kind = _cpu_kind()
    if os.environ.get("GPTBERT_WRITE_GOLDEN"):
        data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        if precision == "fp32":
            data.setdefault("fp32_by_cpu", {})[kind] = curve
        else:
            data[precision] = curve
        GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())

    def worst(reference):
        return max(abs(a - b) for ra, rb in zip(curve, reference) for a, b in zip(ra[1:], rb[1:]))

    if precision == "fp64":
        tol, diff, against = 1e-6, worst(golden["fp64"]), "fp64"
    elif kind in golden["fp32_by_cpu"]:
        tol, diff, against = 1e-6, worst(golden["fp32_by_cpu"][kind]), f"fp32 on {kind}"
    else:
        tol = 1e-3
        diff, against = min((worst(c), f"fp32 on {k} (none recorded on {kind})")
                            for k, c in golden["fp32_by_cpu"].items())
    print(f"{precision}: largest difference from the golden curve ({against}) {diff:.2e} (tolerance {tol})")
    assert diff <= tol
