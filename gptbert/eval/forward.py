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
    def hidden(self, input_ids: Tensor, mask: Tensor | None) -> Tensor:
        with self._autocast():
            return self.model.encode(input_ids, mask).float()

    @torch.no_grad()
    def logits(self, input_ids: Tensor, mask: Tensor | None, positions: Tensor | None = None) -> Tensor:
        """fp32 logits (B, T, V), or (N, V) at flat indices `positions` into B*T."""
        h = self.hidden(input_ids, mask)
        if positions is not None:
            h = h.reshape(-1, h.shape[-1]).index_select(0, positions)
        with torch.autocast(self.device.type, enabled=False):
            return self.model.head(h)  # fp32 weights, fp32 input
