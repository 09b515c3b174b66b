"""The GPT-BERT model (Charpentier & Samuel 2024, section 2), in plain PyTorch.

One transformer serves as a causal LM and as a masked LM: the only
difference is the attention mask passed in. With masked next-token
prediction (MNTP) the output at position k always predicts token k+1, so the
same head and the same loss read the same way in both modes.

Architecture (LTG-BERT lineage, paper section 2, official `model_extra.py`):
  - word embedding -> LayerNorm (no affine) -> dropout; no absolute positions
  - disentangled attention (DeBERTa-style) with log-bucketed relative
    positions: scores = (c2c + c2p + p2c) / sqrt(3 * head_dim); the 63
    relative embeddings pass through an affine LayerNorm and are projected
    by each layer's own query/key projection
  - attention gate: (softmax(scores) V) * GELU(gate) -> LayerNorm -> out_proj
    (`attention_gate=False`: no gate, `in_proj_v` instead of `in_proj_vg`)
  - GEGLU feed-forward with an extra LayerNorm before the down projection
  - all LayerNorms inside blocks are parameter-free (pre-norm)
  - DenseFormer-style layer weights: attention and FFN are separate blocks
    (2L in all); after each block the stream becomes an unconstrained
    weighted sum of the embedding output and every earlier block output,
    initialised to a plain residual network (`layer_weighting=False`: that
    plain residual network, without the weights)
  - head: LayerNorm -> Linear -> GELU -> LayerNorm -> dropout -> Linear tied
    to the word embedding
  - init: trunc-normal(std = sqrt(2 / (5 d)), +-2 std), biases 0, FFN
    matrices of layer i scaled by sqrt(1 / (2 (i + 1)))

Speed: the official code gathers a (T, T, d) position tensor per layer. Here
the c2p and p2c terms are computed against the 63 bucket embeddings only,
(B, H, T, 63), then gathered into a (B, H, T, T) additive bias that goes to
`scaled_dot_product_attention` together with the mask. Same math, a fraction
of the memory and time.

Module names follow the official checkpoints (`embedding.word_embedding`,
`transformer.attention_layers.N.in_proj_qk`, `transformer.mlp_layers.N.mlp.1`,
`transformer.dwa_modules.alphas.N`, `classifier.nonlinearity.5`) so released
weights load by name. The model knows nothing about training or data.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .fused import add_into, attention_probs, dropout, dropout_matmul, dropout_threshold, geglu, layer_norm


# ---------------------------------------------------------------------------
# Relative positions


def bucket_position(relative: torch.Tensor, num_buckets: int, max_position: int) -> torch.Tensor:
    """Log-bucketed relative position (DeBERTa-v2 / LTG-BERT formula).

    Distances up to num_buckets // 2 keep their own bucket; longer ones share
    log-spaced buckets up to max_position - 1. Output is in
    [-(num_buckets - 1), num_buckets - 1], same sign as the input.
    """
    sign = torch.sign(relative)
    mid = num_buckets // 2
    abs_pos = torch.where(
        (relative < mid) & (relative > -mid),
        torch.full_like(relative, mid - 1),
        relative.abs().clamp(max=max_position - 1),
    )
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)).long() + mid
    return torch.where(abs_pos <= mid, relative, log_pos * sign).long()


def relative_position_index(length: int, num_buckets: int, max_position: int, offset: int = 0) -> torch.Tensor:
    """(T, T) indices into the 2*num_buckets-1 relative embeddings; entry [i, j] is for query i, key j."""
    q = torch.arange(offset, offset + length)
    k = torch.arange(0, offset + length)
    return bucket_position(q[:, None] - k[None, :], num_buckets, max_position) + num_buckets - 1


def per_head_product(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) against a per-head table (H, R, D): (B, H, T, R) of dot products.

    Same numbers as `x @ table.transpose(-1, -2)`, but that broadcast copies the table B
    times into a (B, H, D, R) tensor (and its backward sums B gradients back): with short
    rows (zero-shot scoring, R = 63 > T) the copy is larger than x itself, and the
    broadcast product took 7x as long as these H matmuls over all B*T rows at once.
    The (H, B*T, D) rows of x are a strided view of the projection's output (each head's
    D columns, 2d apart); `_PerHeadProduct` multiplies each head's view as it is, where a
    batched matmul first copied x (and x transposed in backward) into contiguous memory.
    Returns the (H, B, T, R) storage seen as (B, H, T, R).
    """
    B, H, T, D = x.shape
    x3 = x.transpose(0, 1).reshape(H, B * T, D)  # a view where x comes from the projection
    if x3.dtype == table.dtype and x3.stride(-1) == 1 and not torch.compiler.is_compiling():
        y = _PerHeadProduct.apply(x3, table)  # (H, B*T, R); under torch.compile the batched form below
    else:
        y = x3 @ table.transpose(-1, -2)
    return y.view(H, B, T, -1).transpose(0, 1)


class _PerHeadProduct(torch.autograd.Function):
    """y[h] = x[h] @ table[h]^T for x (H, N, D) with strided rows, one plain matmul per head each way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        y = x.new_empty((x.shape[0], x.shape[1], table.shape[1]))  # (H, N, R)
        for h in range(x.shape[0]):
            torch.mm(x[h], table[h].t(), out=y[h])
        ctx.save_for_backward(x, table)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # grad (H, N, R)
        x, table = ctx.saved_tensors
        grad = grad.to(x.dtype)
        gx = torch.bmm(grad, table) if ctx.needs_input_grad[0] else None  # (H, N, D)
        gt = None
        if ctx.needs_input_grad[1]:
            gt = table.new_empty(table.shape)  # (H, R, D)
            for h in range(x.shape[0]):
                torch.mm(grad[h].t(), x[h], out=gt[h])
        return gx, gt


def attention_mask(segment_ids: torch.Tensor, causal: torch.Tensor | bool) -> torch.Tensor:
    """Boolean (B, 1, T, T) mask, True where query i may attend to key j.

    segment_ids: (B, T) document id of every position (padding gets its own id)
    causal:      (B,) bool per row, or one bool for the whole batch
    No position attends across a document boundary, in either mode.
    """
    B, T = segment_ids.shape
    allowed = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, T, T)
    if isinstance(causal, bool):
        causal = torch.full((B,), causal, dtype=torch.bool, device=segment_ids.device)
    lower = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = allowed & (lower | ~causal[:, None, None])
    return allowed[:, None]


# ---------------------------------------------------------------------------
# Dropout


def dropout_keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """Bernoulli(1 - p) keep-mask from 16 random bits per element, and the exact keep rate.

    On CPU, `bernoulli_` draws one 32-bit number per element, a visible share of a
    small model's training step; 64-bit draws split into four 16-bit lanes cost a
    fraction of that (docs/performance.md). The drop rate is quantised to 1/65536
    (0.1 -> 0.1000061).
    """
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform in [-32768, 32767]
    threshold, rate = dropout_threshold(p)  # the native path's rule
    return lanes >= (threshold - 32768), rate


class Dropout(nn.Module):
    """nn.Dropout with a cheaper random mask on CPU (same semantics; CUDA uses the built-in one).

    On the CPU `gptbert.fused.dropout` draws one seed from torch's generator and hashes it with
    each element's index into 16 random bits (one pass, no mask kept for backward); where native
    code cannot run, `dropout_keep_mask` draws the bits with torch (same rule, another stream)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        y = dropout(x, self.p)  # one native pass; the mask is rebuilt from its seed in backward
        if y is not None:
            return y
        keep, rate = dropout_keep_mask(x.shape, self.p, x.device)  # without native code
        # Scale x (in fp32 arithmetic, one rounding), then zero: a bf16 mask scaled first would
        # round 1/0.9 to 1.109 and shrink every kept bf16 activation by 0.16%.
        return x.mul(1.0 / rate).mul_(keep)

    def then_matmul(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`self(x) @ v`. On the native CPU path the dropped x is not kept for backward but rebuilt
        from x and the seed (`fused.dropout_matmul`): for the attention probabilities, whose
        softmax keeps x anyway, that saves one (B, H, T, T) tensor a layer."""
        if self.training and self.p > 0.0 and x.device.type == "cpu":
            y = dropout_matmul(x, v, self.p)
            if y is not None:
                return y
        return self(x) @ v


# ---------------------------------------------------------------------------
# Blocks


class MatmulNorm(nn.LayerNorm):
    """A parameter-free LayerNorm whose output feeds a matmul (every norm in the blocks, the head's first).

    Same module (no parameters, same state dict) and same math as `nn.LayerNorm(n, eps,
    elementwise_affine=False)`. On the CPU `gptbert.fused.layer_norm` writes the output in the
    matmul's dtype in one pass and keeps that output for backward instead of the input: under bf16
    autocast the fp32 -> bf16 cast the projection would make is folded in, the attention's two
    projections share one bf16 copy, and no fp32 input is kept (docs/performance.md).
    """

    def __init__(self, n: int, eps: float):
        super().__init__(n, eps, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.head_dim = d // cfg.num_heads
        self.num_buckets = cfg.position_buckets
        self.max_position = cfg.max_position
        self.pre_layer_norm = MatmulNorm(d, cfg.layer_norm_eps)
        self.in_proj_qk = nn.Linear(d, 2 * d)  # queries and keys (also of the relative embeddings)
        self.gated = cfg.attention_gate
        if self.gated:
            self.in_proj_vg = nn.Linear(d, 2 * d)  # values and the attention gate
        else:  # ablation: no gate (LTG-BERT / official model.py)
            self.in_proj_v = nn.Linear(d, d)
        self.post_layer_norm = MatmulNorm(d, cfg.layer_norm_eps)
        self.out_proj = nn.Linear(d, d)
        self.attention_dropout = cfg.attention_dropout
        self.dropout = Dropout(cfg.attention_dropout)  # on relative embeddings (as official)
        self.out_dropout = Dropout(cfg.dropout)
        self.scale = 1.0 / math.sqrt(3 * self.head_dim)  # three score terms (c2c, c2p, p2c)
        self.recompute = False  # GPTBERT.recompute_attention(True): trade compute for (B, H, T, T) memory
        self.register_buffer(
            "position_indices",
            relative_position_index(cfg.max_position, cfg.position_buckets, cfg.max_position),
            persistent=False,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rel: torch.Tensor,
                position_index: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, d); mask: (B, 1, T, T) additive float (0 / -inf) or None (= attend everywhere);
        # rel: (2K-1, d); position_index: (B, 1, T, T) bucket of (pos_i - pos_j), or None for
        # positions 0..T-1 in every row
        B, T, d = x.shape
        H, D = self.num_heads, self.head_dim
        h = self.pre_layer_norm(x)
        q, k = self.in_proj_qk(h).chunk(2, dim=-1)  # (B, T, d) each
        if self.gated:
            v, gate = self.in_proj_vg(h).chunk(2, dim=-1)
        else:
            v, gate = self.in_proj_v(h), None
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)

        # Relative-position terms against the 2K-1 bucket embeddings, then gathered to (T, T).
        pos_q, pos_k = self._position_tables(rel)  # (H, 2K-1, D) each
        idx = self._position_index(T, x.device) if position_index is None else position_index  # (.., T, T)
        # Scale the small (.., 2K-1) tables before gathering them into (T, T) bias terms.
        c2p = per_head_product(q, pos_k) * self.scale  # (B, H, T, 2K-1): q_i . key_pos[r]
        p2c = per_head_product(k, pos_q) * self.scale  # (B, H, T, 2K-1): k_j . query_pos[r]

        if self._explicit_probabilities(x.device, T):
            if self.recompute and torch.is_grad_enabled():
                # Keep only q, k, v and the (.., 2K-1) tables; rebuild the (B, H, T, T) bias,
                # scores, probabilities and dropout mask in backward (same RNG state, same mask).
                y = checkpoint(self._attend, q, k, v, c2p, p2c, idx, mask, use_reentrant=False,
                               preserve_rng_state=True)
            else:
                y = self._attend(q, k, v, c2p, p2c, idx, mask)
        else:
            bias = self._bias(c2p, p2c, idx, mask)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.to(q.dtype),
                dropout_p=self.attention_dropout if self.training else 0.0, scale=self.scale,
            )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, d)
        if gate is not None:
            y = y * F.gelu(gate)  # attention gate
        y = self.out_proj(self.post_layer_norm(y))
        return self.out_dropout(y)

    def _position_tables(self, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(2K-1, d) relative embeddings -> their queries and keys in this layer, (H, 2K-1, D) each."""
        pos_q, pos_k = self.in_proj_qk(self.dropout(rel)).chunk(2, dim=-1)  # (2K-1, d) each
        R = pos_q.shape[0]
        return (pos_q.view(R, self.num_heads, self.head_dim).transpose(0, 1),
                pos_k.view(R, self.num_heads, self.head_dim).transpose(0, 1))

    def _explicit_probabilities(self, device: torch.device, T: int) -> bool:
        """Build the (B, H, T, T) probabilities ourselves instead of calling SDPA (same math).

        On the CPU only: in training with attention dropout, SDPA would materialise the
        probabilities anyway, and doing it here lets them use the cheap CPU dropout mask; in
        inference on short rows (zero-shot scoring), the CPU flash kernel is slower than these
        three ops. Everything else (GPUs, long inference rows, training without dropout) uses SDPA.
        """
        if device.type != "cpu":
            return False
        if self.training:
            return self.attention_dropout > 0
        return T <= 64

    @staticmethod
    def _bias(c2p: torch.Tensor, p2c: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, H, T, 2K-1) tables -> (B, H, T, T) relative-position bias plus the additive mask."""
        B, H, T, _ = c2p.shape
        bias = torch.gather(c2p, -1, idx.expand(B, H, T, T))  # [i, j] = q_i . key_pos[idx(i, j)]
        bias = bias.add_(torch.gather(p2c, -1, idx.transpose(-1, -2).expand(B, H, T, T)).transpose(-1, -2))  # + k_j . query_pos[idx(i, j)]
        if mask is not None:
            bias = bias.add_(mask.to(bias.dtype))  # additive mask: 0 or -inf, (B, 1, T, T)
        return bias

    def _attend(self, q, k, v, c2p, p2c, idx, mask) -> torch.Tensor:
        # On the CPU: scale, bias, mask and softmax in one native pass each way (fused.attention_probs).
        qk = q @ k.transpose(-1, -2)  # (B, H, T, T)
        probs = attention_probs(qk, c2p, p2c, idx, mask, self.scale)
        if probs is not None:
            return self.dropout.then_matmul(probs, v)  # (B, H, T, D)
        scores = qk * self.scale + self._bias(c2p, p2c, idx, mask)  # (B, H, T, T)
        if torch.is_grad_enabled():
            # Training: under bf16 autocast the probabilities stay bf16 (the CPU kernel accumulates
            # in fp32); they are rounded to bf16 for the PV matmul anyway, and fp32 probabilities
            # would cost two (B, H, T, T) casts each way. The 200-step bf16 loss curve stays within
            # 1% of fp32 (tests/test_train.py).
            probs = scores.softmax(-1)
        else:  # inference: no backward to feed, and the fp32 softmax kernel is the faster one here
            probs = scores.float().softmax(-1)
        return self.dropout.then_matmul(probs.to(v.dtype), v)  # (B, H, T, D)

    def _position_index(self, T: int, device: torch.device) -> torch.Tensor:
        if T > self.position_indices.shape[0]:
            self.position_indices = relative_position_index(T, self.num_buckets, self.max_position).to(device)
        return self.position_indices[:T, :T][None, None]  # (1, 1, T, T)

    def forward_at(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mask: torch.Tensor | None,
                   rel: torch.Tensor, position_index: torch.Tensor | None = None) -> torch.Tensor:
        """`forward(x, ...)` at N positions only (query n at row rows[n], column cols[n]): (N, d).

        Inference only (`GPTBERT.encode(select=...)`): keys and values are still projected at
        every position, but the queries, the (N, H, T) scores, the gate and the output projection
        only at the N chosen ones. Same math as `forward` (explicit softmax, no SDPA).
        """
        B, T, d = x.shape
        H, D = self.num_heads, self.head_dim
        N = rows.shape[0]
        h = self.pre_layer_norm(x)  # (B, T, d): keys and values need every position
        hs = h[rows, cols]  # (N, d)
        w, b = self.in_proj_qk.weight, self.in_proj_qk.bias  # rows [0, d): queries, [d, 2d): keys
        q = F.linear(hs, w[:d], b[:d]).view(N, H, D)
        k = F.linear(h, w[d:], b[d:]).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        if self.gated:
            w, b = self.in_proj_vg.weight, self.in_proj_vg.bias  # values, then the gate
            v, gate = F.linear(h, w[:d], b[:d]), F.linear(hs, w[d:], b[d:])
        else:
            v, gate = self.in_proj_v(h), None
        v = v.view(B, T, H, D).transpose(1, 2)
        pos_q, pos_k = self._position_tables(rel)  # (H, 2K-1, D) each
        if position_index is None:
            idx = self._position_index(T, x.device)[0, 0][cols]  # (N, T): bucket of (i_n - j)
        else:
            idx = position_index.expand(B, 1, T, T)[rows, 0, cols]
        c2p = per_head_product(q[:, :, None], pos_k).squeeze(-2) * self.scale  # (N, H, 2K-1)
        p2c = per_head_product(k, pos_q) * self.scale  # (B, H, T, 2K-1), as in forward
        bias = torch.gather(c2p, -1, idx[:, None].expand(N, H, T))  # [n, j] = q_n . key_pos[idx(i_n, j)]
        bias = bias.add_(torch.gather(p2c[rows], -1, idx[:, None, :, None].expand(N, H, T, 1)).squeeze(-1))
        if mask is not None:
            # (1 or B, 1, T, T) -> (N, 1, T): the mask row of each query
            bias = bias.add_(mask.expand(B, 1, T, T)[rows, 0, cols][:, None].to(bias.dtype))
        kn, vn = k[rows], v[rows]  # (N, H, T, D): the keys and values of each query's row
        scores = (q[:, :, None] @ kn.transpose(-1, -2)).squeeze(-2) * self.scale + bias  # (N, H, T)
        probs = scores.float().softmax(-1)
        y = (probs[:, :, None].to(vn.dtype) @ vn).reshape(N, d)  # (N, H, 1, D) -> (N, d)
        if gate is not None:
            y = y * F.gelu(gate)
        return self.out_proj(self.post_layer_norm(y))


class GeGLU(nn.Module):
    """(..., 2I) -> (..., I): x[..., :I] * gelu_tanh(x[..., I:]) (the official gate). On the CPU
    one native pass forward and one backward (gptbert.fused: 2x faster than eager torch there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return geglu(x)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, i, eps = cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps
        self.mlp = nn.Sequential(
            MatmulNorm(d, eps),
            nn.Linear(d, 2 * i, bias=False),
            GeGLU(),
            MatmulNorm(i, eps),
            nn.Linear(i, d, bias=False),
            Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class _LayerSumState:
    """Per-forward storage of the DenseFormer stream: every block output, and in backward the
    gradient arriving at every weighted sum (so no (k, B, T, d) outer products are built)."""

    def __init__(self, x: torch.Tensor, alphas: nn.ParameterList):
        self.buf = x.new_empty((len(alphas) + 1, *x.shape))  # (2L + 1, B, T, d) block outputs
        self.grads: torch.Tensor | None = None  # (2L, B, T, d) gradient of every weighted sum
        self.alphas = alphas


class _Store(torch.autograd.Function):
    """buf[idx] = x + branch (a block's residual sum; branch None: buf[idx] = x). Returns a 1-element
    token that orders the autograd graph: every weighted sum that reads row idx depends on this
    token, so their backward runs first and the gradient of the sum can be collected in one
    matrix-vector product over their stored gradients. The sum is written into buf directly
    (`fused.add_into`: fp32 x plus a bf16 branch in one pass), not formed and then copied."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, branch: torch.Tensor | None, token: torch.Tensor | None,
                state: _LayerSumState, idx: int):
        if branch is None:
            state.buf[idx].copy_(x)
        else:
            add_into(state.buf[idx], x, branch)
        ctx.state, ctx.idx, ctx.has_token = state, idx, token is not None
        ctx.branch_dtype = None if branch is None else branch.dtype
        return x.new_zeros(1)

    @staticmethod
    def backward(ctx, _grad_token: torch.Tensor):
        st, j = ctx.state, ctx.idx
        first = max(j - 1, 0)  # weighted sums b >= j - 1 read row j
        coeffs = torch.stack([st.alphas[b].detach()[j] for b in range(first, len(st.alphas))]).to(st.grads.dtype)
        grad = torch.tensordot(coeffs, st.grads[first:], dims=1)  # sum_b alpha[b, j] * dL/dx_b
        grad_branch = None if ctx.branch_dtype is None else grad.to(ctx.branch_dtype)
        grad_token = torch.zeros(1, dtype=grad.dtype, device=grad.device) if ctx.has_token else None
        return grad, grad_branch, grad_token, None, None


class _WeightedSum(torch.autograd.Function):
    """x = sum_j alpha[j] * buf[j] over rows 0..block+1 (one matrix-vector product)."""

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, token: torch.Tensor, state: _LayerSumState, block: int):
        k = block + 2
        ctx.state, ctx.block, ctx.alpha_dtype = state, block, alpha.dtype
        return torch.tensordot(alpha.to(state.buf.dtype), state.buf[:k], dims=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        st, b = ctx.state, ctx.block
        if st.grads is None:
            st.grads = torch.empty((len(st.alphas), *grad.shape), dtype=st.buf.dtype, device=grad.device)
        st.grads[b].copy_(grad)
        k = b + 2
        grad_alpha = st.buf[:k].reshape(k, -1) @ grad.reshape(-1).to(st.buf.dtype)  # (k,)
        return grad_alpha.to(ctx.alpha_dtype), torch.zeros(1, dtype=grad.dtype, device=grad.device), None, None


class LayerWeights(nn.Module):
    """DenseFormer-style weighted sums over all earlier block outputs (paper 2.2).

    Block b (0-based, 2L blocks) has b + 2 unconstrained scalars, one for the
    embedding output and one per block output so far. Initialised to
    [0, ..., 0, 1]: the network starts as a plain pre-norm residual stack.
    The sums run in fp32 even under bf16 autocast (they are the residual stream).
    This differs from the official code on purpose: there `torch.tensordot(alphas,
    accumulator)` runs under autocast, so every weighted sum (and each stored block
    output) is rounded to bf16. Same math, but bf16 training numerics differ slightly;
    ours is the more accurate stream.
    Speed: all block outputs live in one (2L + 1, B, T, d) buffer, so a weighted
    sum is one matrix-vector product, and backward gathers each output's
    gradient in one more, instead of 2L scale-and-add kernels per block.
    """

    def __init__(self, num_blocks: int):
        super().__init__()
        self.alphas = nn.ParameterList([nn.Parameter(torch.zeros(b + 2)) for b in range(num_blocks)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for a in self.alphas:
                a.zero_()
                a[-1] = 1.0

    def start(self, x: torch.Tensor) -> tuple[_LayerSumState, torch.Tensor]:
        state = _LayerSumState(x, self.alphas)
        return state, _Store.apply(x, None, None, state, 0)

    def store(self, state: _LayerSumState, token: torch.Tensor, x: torch.Tensor, branch: torch.Tensor,
              idx: int) -> torch.Tensor:
        """Stream state idx = x + branch (a block's input plus its output)."""
        return _Store.apply(x, branch, token, state, idx)

    def forward(self, state: _LayerSumState, token: torch.Tensor, block: int) -> torch.Tensor:
        with torch.autocast(state.buf.device.type, enabled=False):
            return _WeightedSum.apply(self.alphas[block], token, state, block)  # (B, T, d)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_layers = nn.ModuleList([Attention(cfg) for _ in range(cfg.num_layers)])
        self.mlp_layers = nn.ModuleList([FeedForward(cfg) for _ in range(cfg.num_layers)])
        # Ablation (layer_weighting=False): no weights at all, a plain pre-LN residual stream.
        self.dwa_modules = LayerWeights(2 * cfg.num_layers) if cfg.layer_weighting else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rel: torch.Tensor,
                position_ids: torch.Tensor | None = None, select: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, d) embedding output; all 2L + 1 stream states live in one buffer.
        # position_ids: (B, T) or None (= 0..T-1); only differences between them matter.
        # select: (N,) flat indices into B*T, inference only: the output is (N, d) at those
        # positions, and the last layer runs its queries and feed-forward there alone.
        if mask is not None and mask.dtype == torch.bool:  # one additive mask for all layers
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        position_index = None
        if position_ids is not None:  # one (B, 1, T, T) bucket table for all layers
            a = self.attention_layers[0]
            relative = position_ids[:, :, None] - position_ids[:, None, :]
            position_index = (bucket_position(relative, a.num_buckets, a.max_position) + a.num_buckets - 1)[:, None]
        dwa = self.dwa_modules
        L = len(self.attention_layers)
        last = L - 1 if select is not None else L  # the layer that runs at the selected positions only
        if select is not None:
            rows, cols = select // x.shape[1], select % x.shape[1]
        if dwa is None:  # plain residual stream (official model.py)
            for attn, ff in zip(self.attention_layers[:last], self.mlp_layers[:last]):
                x = x + attn(x, mask, rel, position_index)
                x = x + ff(x)
            if select is None:
                return x
            attn, ff = self.attention_layers[last], self.mlp_layers[last]
            x = x[rows, cols] + attn.forward_at(x, rows, cols, mask, rel, position_index)  # (N, d)
            return x + ff(x)
        state, token = dwa.start(x)
        for i, (attn, ff) in enumerate(zip(self.attention_layers[:last], self.mlp_layers[:last])):
            token = dwa.store(state, token, x, attn(x, mask, rel, position_index), 2 * i + 1)
            x = dwa(state, token, 2 * i)
            token = dwa.store(state, token, x, ff(x), 2 * i + 2)
            x = dwa(state, token, 2 * i + 1)
        if select is None:
            return x
        # The last layer at the N selected positions: the same weighted sums, over the stream
        # states at those positions (buf rows 0 .. 2L-2 are complete).
        attn, ff = self.attention_layers[last], self.mlp_layers[last]
        buf = state.buf[:, rows, cols]  # (2L + 1, N, d)

        def weighted(block: int) -> torch.Tensor:  # LayerWeights.forward over buf: fp32, no autocast
            with torch.autocast(buf.device.type, enabled=False):
                return torch.tensordot(dwa.alphas[block].to(buf.dtype), buf[:block + 2], dims=1)

        buf[2 * last + 1].copy_(x[rows, cols] + attn.forward_at(x, rows, cols, mask, rel, position_index))
        x = weighted(2 * last)
        buf[2 * last + 2].copy_(x + ff(x))
        return weighted(2 * last + 1)


class Embedding(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden_size
        self.word_embedding = nn.Embedding(cfg.vocab_size, d)
        self.word_layer_norm = nn.LayerNorm(d, cfg.layer_norm_eps, elementwise_affine=False)
        self.dropout = Dropout(cfg.dropout)
        self.relative_embedding = nn.Parameter(torch.empty(2 * cfg.position_buckets - 1, d))
        self.relative_layer_norm = nn.LayerNorm(d, cfg.layer_norm_eps)  # affine (the only affine norm)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dropout(self.word_layer_norm(self.word_embedding(input_ids)))  # (B, T, d)
        rel = self.relative_layer_norm(self.relative_embedding)  # (2K-1, d)
        return x, rel


class PredictionHead(nn.Module):
    """LN -> Linear -> GELU -> LN -> dropout -> Linear: the paper's head, used twice.

    As the language-model head (`Classifier`, out_features = vocabulary, last
    weight tied to the word embedding) and as the GLUE classifier on the `<s>`
    state (`eval.finetune.SequenceClassifier`, out_features = labels). The
    module names (`nonlinearity.1`, `nonlinearity.5`) are those of the official
    checkpoints and of the HF remote code (`hf/modeling_gpt_bert.py`).
    """

    def __init__(self, hidden_size: int, out_features: int, dropout: float, layer_norm_eps: float):
        super().__init__()
        d = hidden_size
        self.nonlinearity = nn.Sequential(
            MatmulNorm(d, layer_norm_eps),
            nn.Linear(d, d),
            nn.GELU(),
            nn.LayerNorm(d, layer_norm_eps, elementwise_affine=False),
            Dropout(dropout),
            nn.Linear(d, out_features),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.nonlinearity(h)


class Classifier(PredictionHead):
    """The language-model head: vocabulary logits, output matrix tied to the word embedding."""

    def __init__(self, cfg: ModelConfig, word_embedding: nn.Parameter):
        super().__init__(cfg.hidden_size, cfg.vocab_size, cfg.dropout, cfg.layer_norm_eps)
        self.nonlinearity[-1].weight = word_embedding  # tied


# ---------------------------------------------------------------------------
# The model


class GPTBERT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embedding = Embedding(cfg)
        self.transformer = Encoder(cfg)
        self.classifier = Classifier(cfg, self.embedding.word_embedding.weight)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = math.sqrt(2.0 / (5.0 * self.config.hidden_size))

        def trunc(w: torch.Tensor, scale: float = 1.0) -> None:
            nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2 * std, b=2 * std)
            w.mul_(scale)

        trunc(self.embedding.word_embedding.weight)
        trunc(self.embedding.relative_embedding)
        self.embedding.relative_layer_norm.reset_parameters()
        for attn in self.transformer.attention_layers:
            for proj in (attn.in_proj_qk, attn.in_proj_vg if attn.gated else attn.in_proj_v, attn.out_proj):
                trunc(proj.weight)
                proj.bias.zero_()
        for i, ff in enumerate(self.transformer.mlp_layers):
            depth_scale = math.sqrt(1.0 / (2.0 * (i + 1)))
            trunc(ff.mlp[1].weight, depth_scale)
            trunc(ff.mlp[4].weight, depth_scale)
        if self.transformer.dwa_modules is not None:
            self.transformer.dwa_modules.reset_parameters()
        trunc(self.classifier.nonlinearity[1].weight)
        self.classifier.nonlinearity[1].bias.zero_()
        self.classifier.nonlinearity[-1].bias.zero_()

    def encode(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None, select: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids, (B, 1, T, T) bool mask -> (B, T, d) final hidden states.

        position_ids (B, T) replaces the default 0..T-1 of every row: attention
        between i and j uses the relative position pos_i - pos_j. Zero-shot
        scoring uses it to pack a prefix tree of sentences into one row
        (`eval/scoring.py`); training never needs it.
        select (N,) flat indices into B*T: return (N, d), the hidden states at
        those positions only. Without gradients the last layer then runs its
        queries, gate, output projection and feed-forward at those positions
        alone (MNTP scoring reads one position of each row: ~14% fewer FLOPs
        for the 6-layer preset); with gradients it is the full pass, indexed.
        """
        x, rel = self.embedding(input_ids)
        if select is not None and torch.is_grad_enabled():
            h = self.transformer(x, mask, rel, position_ids)
            return h.reshape(-1, h.shape[-1]).index_select(0, select)
        return self.transformer(x, mask, rel, position_ids, select)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) hidden states -> (..., V) logits. Position k scores token k+1."""
        return self.classifier(hidden)

    def forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor | None = None, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, T, V) at every position, or (N, V) at the flat indices `positions` into B*T.

        Training passes `positions` (the target positions only): the vocabulary
        projection is the largest matmul of the small model, and only ~15-30%
        of MNTP positions have a target.
        """
        hidden = self.encode(input_ids, mask)
        if positions is not None:
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)  # (N, d)
        return self.head(hidden)

    def recompute_attention(self, enabled: bool = True) -> "GPTBERT":
        """Recompute the (B, H, T, T) attention probabilities in backward instead of storing them.

        Only the CPU path that builds the probabilities itself (training with attention
        dropout) stores them; at T=512 they are most of the activation memory.
        The results are bit-identical; the cost is one more attention forward per layer.
        """
        for attn in self.transformer.attention_layers:
            attn.recompute = enabled
        return self

    def num_parameters(self) -> int:
        """Unique parameters (the tied output matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_length: int, train: bool = True) -> float:
        """Matmul FLOPs per token: 2 x params x (3 if training) + attention scores (PaLM-style estimate)."""
        c = self.config
        # Every parameter is used once per token in a matmul: the (tied) embedding counts once, as
        # the output head; the embedding lookup itself is free.
        dense = self.num_parameters()
        attn = 2 * 2 * c.num_layers * seq_length * c.hidden_size  # QK^T and PV
        return (3 if train else 1) * (2 * dense + attn)
