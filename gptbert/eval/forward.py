"""The evaluation forward pass: fp32 logits at chosen positions, in fp32 or bf16.

`EvalModel` wraps a GPTBERT for scoring. The transformer runs in fp32, or
under bf16 autocast (its residual stream and layer-weight sums stay fp32 in
the model itself); the output head always runs in fp32 and only at the
positions asked for, so log-probabilities are never rounded to bf16: in bf16
mode the only reduced-precision step is the transformer body.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16")


class EvalModel:
    """`hidden(ids, mask)` -> fp32 (B, T, d); `logits(ids, mask, positions)` -> fp32 (N, V).

    precision: "fp32", or "bf16" (autocast for the transformer, fp32 head).
    The wrapped model is put in eval mode.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model = model.eval()
        self.precision = precision
        self.device = next(model.parameters()).device

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def hidden(self, input_ids: Tensor, mask: Tensor | None, position_ids: Tensor | None = None) -> Tensor:
        with self._autocast():
            if position_ids is None:
                return self.model.encode(input_ids, mask).float()
            return self.model.encode(input_ids, mask, position_ids).float()

    @torch.no_grad()
    def logits(self, input_ids: Tensor, mask: Tensor | None, positions: Tensor | None = None,
               position_ids: Tensor | None = None) -> Tensor:
        """fp32 logits (B, T, V), or (N, V) at flat indices `positions` into B*T.

        position_ids (B, T): per-token positions for the relative attention (default 0..T-1).
        """
        h = self.hidden(input_ids, mask, position_ids)
        if positions is not None:
            h = h.reshape(-1, h.shape[-1]).index_select(0, positions)
        with torch.autocast(self.device.type, enabled=False), self._head_matmul():
            return self.model.head(h)  # fp32 weights, fp32 input, fp32 logits

    def _head_matmul(self):
        """bf16 mode on CPU: let oneDNN run the fp32 head matmuls (fpmath mode "bf16").

        The vocabulary projection is ~1/8 of the FLOPs of a scored token and ran
        at ~165 GFLOP/s in the default fp32 GEMM. With this switch oneDNN takes the
        matmul: on CPUs without a bf16 GEMM for it (measured: AMD EPYC, AVX-512
        bf16, no AMX) it runs its own fp32 kernel, same fp32 result to ~1e-6
        relative, at ~280 GFLOP/s; where it has one (AMX) it may round the inputs
        to bf16 and accumulate in fp32. Either way the logits stay fp32. fp32 mode
        never uses it.
        """
        if self.precision != "bf16" or self.device.type != "cpu":
            return nullcontext()
        return _mkldnn_fp32_precision("bf16")


class _mkldnn_fp32_precision:
    """Set torch.backends.mkldnn.matmul.fp32_precision for a block (no-op where it does not exist)."""

    def __init__(self, value: str):
        self.value = value
        self.saved = None

    def __enter__(self):
        try:
            self.saved = torch.backends.mkldnn.matmul.fp32_precision
            torch.backends.mkldnn.matmul.fp32_precision = self.value
        except (AttributeError, RuntimeError):
            self.saved = None

    def __exit__(self, *exc):
        if self.saved is not None:
            torch.backends.mkldnn.matmul.fp32_precision = self.saved
        return False
