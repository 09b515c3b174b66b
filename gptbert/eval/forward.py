"""The evaluation forward pass: fp32 logits at chosen positions, in fp32 or bf16.

`EvalModel` wraps a GPTBERT for scoring. The transformer runs in fp32, or
under bf16 autocast (its residual stream and layer-weight sums stay fp32 in
the model itself); the output head always runs in fp32 and only at the
positions asked for, so log-probabilities are never rounded to bf16: in bf16
mode the only reduced-precision step is the transformer body (and, on CPUs
with AMX, the inputs of the head matmul, which oneDNN may round to bf16 while
accumulating in fp32; see `_matmul`).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from ..model import GPTBERT, PredictionHead
from ..precision import autocast, fp32_matmul_via_onednn, resolve_precision

PRECISIONS = ("fp32", "bf16", "auto")


class EvalModel:
    """`hidden(ids, mask)` -> fp32 (B, T, d); `logits(ids, mask, positions)` -> fp32 (N, V).

    precision: "fp32", "bf16" (autocast for the transformer, fp32 head), or "auto" (bf16 where the
    device has native bf16 matmuls, else fp32; gptbert.precision.resolve_precision).
    The wrapped model is put in eval mode.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)

    @torch.no_grad()
    def hidden(self, input_ids: Tensor, mask: Tensor | None, position_ids: Tensor | None = None,
               select: Tensor | None = None) -> Tensor:
        """fp32 (B, T, d), or (N, d) at the flat indices `select` into B*T."""
        with autocast(self.device, self.precision), self._matmul():
            if position_ids is None and select is None:
                return self.model.encode(input_ids, mask).float()  # (also any model without the extras)
            return self.model.encode(input_ids, mask, position_ids, select=select).float()

    @torch.no_grad()
    def logits(self, input_ids: Tensor, mask: Tensor | None, positions: Tensor | None = None,
               position_ids: Tensor | None = None) -> Tensor:
        """fp32 logits (B, T, V), or (N, V) at flat indices `positions` into B*T.

        position_ids (B, T): per-token positions for the relative attention (default 0..T-1).
        """
        return self.project(self.features(input_ids, mask, positions, position_ids))

    @torch.no_grad()
    def features(self, input_ids: Tensor, mask: Tensor | None, positions: Tensor | None = None,
                 position_ids: Tensor | None = None) -> Tensor:
        """What `project` turns into logits: fp32 (B, T, d) or (N, d), the head up to its vocabulary
        projection. The scorer projects them a few hundred rows at a time, so the (N, V) logits of a
        batch (128 MB for 3,900 positions at V = 8,192) never exist at once."""
        B, T = input_ids.shape
        if positions is not None and 4 * positions.shape[0] <= B * T:
            # Few positions read (MNTP: one per row): the model's last layer runs at those alone.
            h = self.hidden(input_ids, mask, position_ids, select=positions)
        else:
            h = self.hidden(input_ids, mask, position_ids)
            if positions is not None:
                h = h.reshape(-1, h.shape[-1]).index_select(0, positions)
        pre, _ = self._head_parts()
        if pre is None:
            return h
        with torch.autocast(self.device.type, enabled=False), self._matmul(head=True):
            return pre(h)  # fp32 weights, fp32 input

    @torch.no_grad()
    def project(self, features: Tensor, out: Tensor | None = None, bias: bool = True) -> Tensor:
        """fp32 logits from `features` (into `out` if given, e.g. a reused buffer); bias=False leaves
        out `projection_bias()`, for a caller that adds it itself."""
        _, last = self._head_parts()
        with torch.autocast(self.device.type, enabled=False), self._matmul(head=True):
            if last is None:
                return self.model.head(features)
            b = last.bias if bias else None
            if features.dim() != 2:
                return nn.functional.linear(features, last.weight, b)
            if b is None:
                return torch.mm(features, last.weight.t(), out=out)
            return torch.addmm(b, features, last.weight.t(), out=out)

    def projection_bias(self) -> Tensor | None:
        """The vocabulary projection's bias (V,), where `project(..., bias=False)` can leave it out."""
        _, last = self._head_parts()
        return None if last is None else last.bias

    def _head_parts(self) -> tuple[nn.Module | None, nn.Linear | None]:
        """(everything before the vocabulary projection, the projection) of a GPTBERT's head;
        (None, None) for other models, whose `head` then runs whole in `project`."""
        if not isinstance(self.model, GPTBERT) or type(self.model).head is not GPTBERT.head:
            return None, None
        seq = getattr(getattr(self.model, "classifier", None), "nonlinearity", None)
        if (type(self.model.classifier).forward is PredictionHead.forward and isinstance(seq, nn.Sequential)
                and len(seq) > 1 and isinstance(seq[-1], nn.Linear)):
            return seq[:-1], seq[-1]
        return None, None

    def _matmul(self, head: bool = False):
        """fp32 matmuls through oneDNN where that is exact (see `gptbert.precision`); in bf16 mode
        also for the fp32 head on AMX CPUs, where oneDNN may round its inputs to bf16 (the
        logits and everything after them stay fp32)."""
        if self.device.type != "cpu":
            return nullcontext()
        return fp32_matmul_via_onednn(force=head and self.precision == "bf16")
