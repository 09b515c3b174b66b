"""GPT-BERT for Hugging Face transformers (4.51+ and 5.x): causal LM, masked LM, encoder, classifier.

Self-contained on purpose: this file is copied next to exported weights and
loaded with `trust_remote_code=True`, so it imports torch, transformers and
its sibling configuration file only. The few API differences between
transformers 4.x and 5.x (the cache constructor, the name of the cache field
of the output, the init helpers) are resolved once, below the imports.

One set of weights serves every head. The parameter names are those of the
officially released GPT-BERT checkpoints (`embedding.word_embedding.weight`,
`transformer.attention_layers.N.in_proj_qk.weight`, `classifier.nonlinearity.5.bias`,
...), with no base-model prefix, so a `model.safetensors` written for one head
loads into all of them.

* `GPTBertForCausalLM` - causal mask; logits at position i predict token i+1;
  `generate()` with a real KV cache (`DynamicCache`; the relative-position
  matrix is sliced at the cached offset).
* `GPTBertForMaskedLM` - bidirectional; `config.mlm_logits_layout` says how
  the logits are laid out: "mntp" (the default and the released checkpoints'
  layout: row i scores token i+1; BabyLM 2025 `--backend mntp`) or "aligned"
  (row i scores token i, the usual masked-LM convention; BabyLM 2025
  `--backend mlm`; row 0 is uniform, never -inf).
* `GPTBertModel` - bidirectional encoder returning `last_hidden_state`.
* `GPTBertForSequenceClassification` - first-token (`<s>`) state through
  LayerNorm-Linear-GELU-LayerNorm-Dropout-Linear (`head.nonlinearity.*`).

Attention masks: `attention_mask` may be (batch, keys) with 1 = real token,
(batch, queries, keys) bool/0-1 with 1 = may attend, or a 4D
(batch, 1, queries, keys) bool/0-1 mask or additive float mask.

Position ids: `position_ids` (batch, seq) are honoured by every head. GPT-BERT
has no absolute positions; attention between tokens i and j uses the relative
position position_ids[i] - position_ids[j]. Several texts packed into one row
(positions restarting at 0, a block-diagonal 3D mask) thus score exactly as
each text alone. Without position_ids, row positions are 0, 1, 2, ... after
whatever the KV cache holds. With a cache, the positions of the cached keys
are kept on the cache object (`cache.gpt_bert_position_ids`), so `generate()`
(which passes position_ids computed from the attention mask, e.g. for left
padding) and step-by-step decoding see the same relative positions as one
full forward pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import (
    BaseModelOutput,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

try:  # transformers >= 5: init helpers that respect already-loaded weights
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    init = nn.init

from .configuration_gpt_bert import GPTBertConfig

# transformers 5 calls the cache field of model outputs `cache` (`past_key_values` before).
_CACHE_FIELD = "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"
# Where the positions of the cached keys are kept (see the module docstring).
_CACHE_POSITIONS = "gpt_bert_position_ids"


def _new_cache(config) -> DynamicCache:
    """An empty DynamicCache: transformers 5 takes the config (to size its layers), 4.x takes nothing."""
    try:
        return DynamicCache(config=config)
    except TypeError:
        return DynamicCache()


# ---------------------------------------------------------------------------
# Relative positions


def _bucket_position(relative: torch.Tensor, num_buckets: int, max_position: int) -> torch.Tensor:
    """Log-bucketed signed relative distance: exact up to num_buckets // 2, log-spaced beyond."""
    sign = torch.sign(relative)
    mid = num_buckets // 2
    abs_pos = torch.where(
        (relative < mid) & (relative > -mid),
        torch.full_like(relative, mid - 1),
        relative.abs().clamp(max=max_position - 1),
    )
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)).long() + mid
    return torch.where(abs_pos <= mid, relative, log_pos * sign).long()


def relative_index(past: int, query_len: int, num_buckets: int, max_position: int, device) -> torch.Tensor:
    """(query_len, past + query_len) indices into the relative embeddings.

    Queries sit at positions past .. past+query_len-1, keys at 0 .. past+query_len-1;
    entry [i, j] is the bucket of (past + i) - j, shifted to be >= 0.
    """
    q = torch.arange(past, past + query_len, device=device)
    k = torch.arange(0, past + query_len, device=device)
    return _bucket_position(q[:, None] - k[None, :], num_buckets, max_position) + num_buckets - 1


def relative_index_from_positions(q_pos: torch.Tensor, k_pos: torch.Tensor, num_buckets: int,
                                  max_position: int) -> torch.Tensor:
    """(B, 1, Q, K) indices into the relative embeddings for query positions (B, Q) and key positions (B, K)."""
    rel = q_pos[:, :, None] - k_pos[:, None, :]
    return (_bucket_position(rel, num_buckets, max_position) + num_buckets - 1)[:, None]


def _cached_positions(cache, batch: int, past: int):
    """The positions of the `past` cached keys as kept on the cache, (b, past) with b 1 or batch; None if unknown.

    A cache cropped by transformers (assisted decoding) keeps its first `past` positions; one expanded along
    the batch (beam search, num_return_sequences) is expanded the same way."""
    pos = getattr(cache, _CACHE_POSITIONS, None)
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] < past:
        return None
    pos = pos[:, :past]
    if pos.shape[0] not in (1, batch):
        if batch % pos.shape[0] != 0:
            return None
        pos = pos.repeat_interleave(batch // pos.shape[0], dim=0)
    return pos


# ---------------------------------------------------------------------------
# Blocks


class GPTBertEmbedding(nn.Module):
    def __init__(self, config: GPTBertConfig):
        super().__init__()
        d = config.hidden_size
        self.word_embedding = nn.Embedding(config.vocab_size, d)
        self.word_layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps, elementwise_affine=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.relative_embedding = nn.Parameter(torch.empty(2 * config.position_bucket_size - 1, d))
        self.relative_layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, input_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embedding(input_ids)
        x = self.dropout(self.word_layer_norm(inputs_embeds))
        rel = self.relative_layer_norm(self.relative_embedding)
        return x, rel


class GPTBertAttention(nn.Module):
    """Disentangled attention (content-content + content-position + position-content), gated output."""

    def __init__(self, config: GPTBertConfig, layer_idx: int):
        super().__init__()
        d = config.hidden_size
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = d // config.num_attention_heads
        self.in_proj_qk = nn.Linear(d, 2 * d, bias=True)
        self.gated = getattr(config, "attention_gate", True)
        if self.gated:  # values and the attention gate
            self.in_proj_vg = nn.Linear(d, 2 * d, bias=True)
        else:  # ablation (config.attention_gate = False): values only, no gate
            self.in_proj_v = nn.Linear(d, d, bias=True)
        self.out_proj = nn.Linear(d, d, bias=True)
        self.pre_layer_norm = nn.LayerNorm(d, config.layer_norm_eps, elementwise_affine=False)
        self.post_layer_norm = nn.LayerNorm(d, config.layer_norm_eps, elementwise_affine=False)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.out_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.scale = 1.0 / math.sqrt(3 * self.head_dim)

    def forward(self, x, keep, rel, index, cache=None):
        # x: (B, Q, d); keep: (B, 1, Q, K) bool; rel: (R, d); index: (Q, K) or (B, 1, Q, K) long
        B, Q, d = x.shape
        H, D = self.num_heads, self.head_dim
        h = self.pre_layer_norm(x)
        q, k = self.in_proj_qk(h).chunk(2, dim=-1)
        if self.gated:
            v, gate = self.in_proj_vg(h).chunk(2, dim=-1)
        else:
            v, gate = self.in_proj_v(h), None
        q = q.view(B, Q, H, D).transpose(1, 2)  # (B, H, Q, D)
        k = k.view(B, Q, H, D).transpose(1, 2)
        v = v.view(B, Q, H, D).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        K = index.shape[-1]
        k, v = k[:, :, :K], v[:, :, :K]  # static caches hand back their whole buffer

        pos_q, pos_k = self.in_proj_qk(self.dropout(rel)).chunk(2, dim=-1)  # (R, d) each
        R = pos_q.shape[0]
        pos_q = pos_q.view(R, H, D).transpose(0, 1)  # (H, R, D)
        pos_k = pos_k.view(R, H, D).transpose(0, 1)
        # (B, H, Q or K, R) tables as H matmuls over all rows: `q @ pos_k.transpose(-1, -2)` would
        # broadcast-copy the (H, D, R) table B times (7x slower on short rows).
        c2p = (q.transpose(0, 1).reshape(H, B * Q, D) @ pos_k.transpose(-1, -2)).view(H, B, Q, R).transpose(0, 1)
        p2c = (k.transpose(0, 1).reshape(H, B * K, D) @ pos_q.transpose(-1, -2)).view(H, B, K, R).transpose(0, 1)
        c2p = torch.gather(c2p, -1, index.expand(B, H, Q, K))  # q_i . key_pos[idx(i, j)]
        p2c = torch.gather(p2c, -1, index.transpose(-1, -2).expand(B, H, K, Q)).transpose(-1, -2)
        bias = ((c2p + p2c) * self.scale).masked_fill(~keep, float("-inf"))

        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype),
            dropout_p=self.attention_dropout if self.training else 0.0, scale=self.scale,
        )
        y = y.transpose(1, 2).reshape(B, Q, d)
        if gate is not None:
            y = y * F.gelu(gate)
        return self.out_dropout(self.out_proj(self.post_layer_norm(y)))


class GPTBertGeGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate, approximate="tanh")


class GPTBertFeedForward(nn.Module):
    def __init__(self, config: GPTBertConfig, layer_idx: int):
        super().__init__()
        d, i, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
        self.layer_idx = layer_idx
        self.mlp = nn.Sequential(
            nn.LayerNorm(d, eps, elementwise_affine=False),
            nn.Linear(d, 2 * i, bias=False),
            GPTBertGeGLU(),
            nn.LayerNorm(i, eps, elementwise_affine=False),
            nn.Linear(i, d, bias=False),
            nn.Dropout(config.hidden_dropout_prob),
        )
        for lin in (self.mlp[1], self.mlp[4]):  # read by _init_weights: deeper FFNs start smaller
            lin.init_scale = math.sqrt(1.0 / (2.0 * (layer_idx + 1)))

    def forward(self, x):
        return self.mlp(x)


class GPTBertLayerWeights(nn.Module):
    """DenseFormer-style weights: block b mixes the embedding output and all block outputs so far."""

    def __init__(self, num_blocks: int):
        super().__init__()
        self.alphas = nn.ParameterList([nn.Parameter(torch.zeros(b + 2)) for b in range(num_blocks)])
        self.alphas.is_layer_weights = True  # read by _init_weights: start as a plain residual stack

    def forward(self, outputs, block: int):
        alpha = self.alphas[block].to(outputs[0].dtype)
        x = outputs[0] * alpha[0]
        for j in range(1, len(outputs)):
            x = x + outputs[j] * alpha[j]
        return x


class GPTBertEncoder(nn.Module):
    def __init__(self, config: GPTBertConfig):
        super().__init__()
        n = config.num_hidden_layers
        self.attention_layers = nn.ModuleList([GPTBertAttention(config, i) for i in range(n)])
        self.mlp_layers = nn.ModuleList([GPTBertFeedForward(config, i) for i in range(n)])
        # ablation (config.layer_weighting = False): no layer weights, a plain pre-LN residual stream
        self.dwa_modules = GPTBertLayerWeights(2 * n) if getattr(config, "layer_weighting", True) else None

    def forward(self, x, keep, rel, index, cache=None, output_hidden_states=False):
        outputs = [x]
        hidden = [x] if output_hidden_states else None
        for i, (attn, ff) in enumerate(zip(self.attention_layers, self.mlp_layers)):
            if self.dwa_modules is None:
                x = x + attn(x, keep, rel, index, cache)
                x = x + ff(x)
            else:
                outputs.append(x + attn(x, keep, rel, index, cache))
                x = self.dwa_modules(outputs, 2 * i)
                outputs.append(x + ff(x))
                x = self.dwa_modules(outputs, 2 * i + 1)
            if hidden is not None:
                hidden.append(x)
        return x, (tuple(hidden) if hidden is not None else None)


class GPTBertLMHead(nn.Module):
    """LayerNorm -> Linear -> GELU -> LayerNorm -> Dropout -> Linear (weight tied to the word embedding)."""

    def __init__(self, config: GPTBertConfig):
        super().__init__()
        d = config.hidden_size
        self.nonlinearity = nn.Sequential(
            nn.LayerNorm(d, config.layer_norm_eps, elementwise_affine=False),
            nn.Linear(d, d),
            nn.GELU(),
            nn.LayerNorm(d, config.layer_norm_eps, elementwise_affine=False),
            nn.Dropout(config.hidden_dropout_prob),
            nn.Linear(d, config.vocab_size),
        )

    def forward(self, x):
        return self.nonlinearity(x)


class GPTBertClassificationHead(nn.Module):
    """Fine-tuning head on the first-token state: LN -> Linear -> GELU -> LN -> Dropout -> Linear, / temperature."""

    def __init__(self, config: GPTBertConfig):
        super().__init__()
        d = config.hidden_size
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.temperature = config.classifier_temperature
        self.nonlinearity = nn.Sequential(
            nn.LayerNorm(d, config.layer_norm_eps, elementwise_affine=False),
            nn.Linear(d, d),
            nn.GELU(),
            nn.LayerNorm(d, config.layer_norm_eps, elementwise_affine=False),
            nn.Dropout(p),
            nn.Linear(d, config.num_labels),
        )

    def forward(self, x):
        return self.nonlinearity(x) / self.temperature


# ---------------------------------------------------------------------------
# Masks


def _attention_allowed(attention_mask, batch: int, query_len: int, past: int, causal: bool, device) -> torch.Tensor:
    """Boolean (B, 1, Q, K) mask, True where query i (at position past+i) may attend to key j."""
    K = past + query_len
    if attention_mask is None:
        keep = torch.ones(batch, 1, query_len, K, dtype=torch.bool, device=device)
    else:
        m = attention_mask.to(device)
        if m.dim() == 2:  # (B, keys): 1 = real token
            if m.shape[-1] == query_len and past > 0:
                m = torch.cat([m.new_ones(m.shape[0], past), m], dim=-1)  # mask of the new tokens only
            if m.shape[-1] < K:
                raise ValueError(f"attention_mask has {m.shape[-1]} positions but the keys are {K} tokens long")
            keep = m[:, None, None, -K:].bool().expand(m.shape[0], 1, query_len, K)
        elif m.dim() in (3, 4):  # (B, Q, K) or (B, 1, Q, K): True / 1 = may attend, or additive floats
            if m.dim() == 3:
                m = m[:, None]
            m = m[..., -query_len:, :K]
            if m.is_floating_point() and bool((m < 0).any()):
                keep = m > torch.finfo(m.dtype).min / 2
            else:
                keep = m.bool()
            if m.shape[-1] < K:
                raise ValueError(f"attention_mask covers {m.shape[-1]} keys but the keys are {K} tokens long")
        else:
            raise ValueError(f"attention_mask must have 2, 3 or 4 dimensions, got shape {tuple(m.shape)}")
        keep = keep.expand(batch, 1, query_len, K)
    rows = torch.arange(past, K, device=device)[:, None]
    cols = torch.arange(K, device=device)[None, :]
    if causal:
        keep = keep & (cols <= rows)
    # Every query may see itself: a padding row then stays finite instead of NaN; real rows are unchanged.
    return keep | (cols == rows)


# ---------------------------------------------------------------------------
# Models


class GPTBertPreTrainedModel(PreTrainedModel):
    config_class = GPTBertConfig
    config: GPTBertConfig
    base_model_prefix = "gpt_bert"
    supports_gradient_checkpointing = False
    _no_split_modules = ["GPTBertAttention", "GPTBertFeedForward"]
    _supports_sdpa = True
    _supports_cache_class = True  # transformers 4.x: generate() may hand this model a DynamicCache
    # The official checkpoints store the position-bucket matrix of every layer; it is recomputed here.
    _keys_to_ignore_on_load_unexpected = [r"position_indices$"]

    def _init_weights(self, module):
        """GPT-BERT init: trunc-normal std sqrt(2 / 5d) cut at 2 std, zero biases, FFN scaled by depth."""
        std = math.sqrt(2.0 / (5.0 * self.config.hidden_size))

        def trunc(w, scale=1.0):
            init.trunc_normal_(w, mean=0.0, std=std * scale, a=-2 * std * scale, b=2 * std * scale)

        # transformers initialises module by module, each through its own parameters only (and skips
        # modules without direct parameters), so the GPT-BERT specifics are marked on the modules
        # that own the parameters: `init_scale` on the FFN matrices, `is_layer_weights` on the alphas.
        if isinstance(module, nn.Linear):
            trunc(module.weight, getattr(module, "init_scale", 1.0))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            trunc(module.weight)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GPTBertEmbedding):
            trunc(module.relative_embedding)
        elif isinstance(module, nn.ParameterList) and getattr(module, "is_layer_weights", False):
            for a in module:
                target = torch.zeros_like(a)
                target[-1] = 1.0
                init.copy_(a, target) if hasattr(init, "copy_") else a.data.copy_(target)

    # -- shared trunk ---------------------------------------------------------

    def _encode(self, input_ids, inputs_embeds, attention_mask, causal, cache=None, output_hidden_states=False,
                position_ids=None):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x, rel = self.embedding(input_ids, inputs_embeds)
        B, Q = x.shape[:2]
        past = cache.get_seq_length(0) if cache is not None else 0
        keep = _attention_allowed(attention_mask, B, Q, past, causal, x.device)
        index = self._relative_index(position_ids, B, Q, past, cache, x.device)
        return self.transformer(x, keep, rel, index, cache, output_hidden_states)

    def _relative_index(self, position_ids, B: int, Q: int, past: int, cache, device) -> torch.Tensor:
        """Relative-position bucket indices of the Q new queries against all past + Q keys.

        (Q, K) when every row uses the default positions 0, 1, 2, ...; (B, 1, Q, K) otherwise. The positions
        of the keys in the cache are those kept on it; a cache without them (filled by a caller that did
        not go through this model) holds keys at the positions just before the first new query."""
        cfg = self.config
        nb, mp = cfg.position_bucket_size, cfg.max_position_embeddings
        k_past = _cached_positions(cache, B, past) if past > 0 else None
        if position_ids is None and (past == 0 or k_past is None):
            if cache is not None:  # default positions: 0 .. past+Q-1 (kept for later calls with position_ids)
                setattr(cache, _CACHE_POSITIONS, torch.arange(past + Q, device=device)[None])
            return relative_index(past, Q, nb, mp, device)
        if position_ids is None:  # continue after the last cached position
            q_pos = k_past[:, -1:].to(device) + 1 + torch.arange(Q, device=device)[None]
        else:
            q_pos = position_ids.to(device=device, dtype=torch.long)
            if q_pos.dim() == 1:
                q_pos = q_pos[None]
            if q_pos.dim() != 2 or q_pos.shape[-1] != Q or q_pos.shape[0] not in (1, B):
                raise ValueError(f"position_ids must have shape (batch, {Q}) for {Q} new tokens, "
                                 f"got {tuple(position_ids.shape)}")
        if past > 0:
            if k_past is None:  # keys sit just before the first new query
                k_past = q_pos[:, :1] - past + torch.arange(past, device=device)[None]
            k_past = k_past.to(device)
            rows = max(q_pos.shape[0], k_past.shape[0])
            k_pos = torch.cat([k_past.expand(rows, -1), q_pos.expand(rows, -1)], dim=1)
        else:
            k_pos = q_pos
        if cache is not None:
            setattr(cache, _CACHE_POSITIONS, k_pos)
        return relative_index_from_positions(q_pos, k_pos, nb, mp)

    def get_input_embeddings(self):
        return self.embedding.word_embedding

    def set_input_embeddings(self, value):
        self.embedding.word_embedding = value


class GPTBertModel(GPTBertPreTrainedModel):
    """The bare encoder: bidirectional by default, returns `last_hidden_state` (no logits)."""

    _keys_to_ignore_on_load_unexpected = [r"position_indices$", r"^classifier\.", r"^head\."]

    def __init__(self, config: GPTBertConfig):
        super().__init__(config)
        self.embedding = GPTBertEmbedding(config)
        self.transformer = GPTBertEncoder(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_hidden_states=None,
        return_dict=None,
        is_causal: bool = False,
        **kwargs,
    ):
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden, all_hidden = self._encode(input_ids, inputs_embeds, attention_mask, is_causal,
                                          output_hidden_states=bool(output_hidden_states), position_ids=position_ids)
        if return_dict is False:
            return (hidden,) + ((all_hidden,) if all_hidden is not None else ())
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=all_hidden)


class _GPTBertWithLMHead(GPTBertPreTrainedModel):
    _tied_weights_keys = {"classifier.nonlinearity.5.weight": "embedding.word_embedding.weight"}
    _keys_to_ignore_on_load_unexpected = [r"position_indices$", r"^head\."]

    def __init__(self, config: GPTBertConfig):
        super().__init__(config)
        self.embedding = GPTBertEmbedding(config)
        self.transformer = GPTBertEncoder(config)
        self.classifier = GPTBertLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.classifier.nonlinearity[5]

    def set_output_embeddings(self, new_embeddings):
        self.classifier.nonlinearity[5] = new_embeddings


class GPTBertForCausalLM(_GPTBertWithLMHead, GenerationMixin):
    """Causal language model: logits at position i predict token i+1. Supports `generate()` with a KV cache."""

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache: Cache | None = None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        token_type_ids=None,
        **kwargs,
    ):
        if cache is None:
            cache = past_key_values  # name used before transformers 5.40
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if self.training and labels is not None:
            use_cache = False
        if use_cache and cache is None:
            cache = _new_cache(self.config)
        if not use_cache:
            cache = None
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden, all_hidden = self._encode(input_ids, inputs_embeds, attention_mask, True, cache,
                                          bool(output_hidden_states), position_ids)

        if isinstance(logits_to_keep, int):
            kept = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        else:
            kept = hidden[:, logits_to_keep]
        logits = self.classifier(kept)

        loss = None
        if labels is not None:  # labels = input_ids (standard HF causal LM), shifted here
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                labels[:, 1:].to(logits.device).reshape(-1),
                ignore_index=-100,
            )
        if return_dict is False:
            out = (logits, cache) + ((all_hidden,) if all_hidden is not None else ())
            return ((loss,) + out) if loss is not None else out
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=all_hidden, **{_CACHE_FIELD: cache})


class GPTBertForMaskedLM(_GPTBertWithLMHead):
    """Bidirectional masked LM. config.mlm_logits_layout "mntp" (default): row i scores token i+1, as GPT-BERT
    computes it; "aligned": row i scores token i, with a uniform row 0."""

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden, all_hidden = self._encode(input_ids, inputs_embeds, attention_mask, False,
                                          output_hidden_states=bool(output_hidden_states), position_ids=position_ids)
        raw = self.classifier(hidden)  # row i scores token i+1
        aligned = self.config.mlm_logits_layout == "aligned"
        if aligned:
            # Row 0 has no prediction in GPT-BERT (nothing precedes it): a uniform distribution stands in
            # (every token log(1/V)), finite, so a scorer that reads it by mistake never sees -inf or ties.
            logits = torch.cat([torch.zeros_like(raw[:, :1]), raw[:, :-1]], dim=1)
        else:
            logits = raw

        loss = None
        if labels is not None:
            labels = labels.to(raw.device)
            pred, gold = (raw[:, :-1], labels[:, 1:])  # same loss in both layouts
            loss = F.cross_entropy(pred.float().reshape(-1, raw.shape[-1]), gold.reshape(-1), ignore_index=-100)
        if return_dict is False:
            out = (logits,) + ((all_hidden,) if all_hidden is not None else ())
            return ((loss,) + out) if loss is not None else out
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=all_hidden)


class GPTBertForSequenceClassification(GPTBertPreTrainedModel):
    """Sequence classifier on the first-token state, bidirectional attention."""

    _keys_to_ignore_on_load_unexpected = [r"position_indices$", r"^classifier\."]

    def __init__(self, config: GPTBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embedding = GPTBertEmbedding(config)
        self.transformer = GPTBertEncoder(config)
        self.head = GPTBertClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden, all_hidden = self._encode(input_ids, inputs_embeds, attention_mask, False,
                                          output_hidden_states=bool(output_hidden_states), position_ids=position_ids)
        logits = self.head(hidden[:, 0])

        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1)) if self.num_labels == 1 \
                    else F.mse_loss(logits.float(), labels.float())
            elif self.config.problem_type == "single_label_classification":
                loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        if return_dict is False:
            out = (logits,) + ((all_hidden,) if all_hidden is not None else ())
            return ((loss,) + out) if loss is not None else out
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=all_hidden)


__all__ = [
    "GPTBertPreTrainedModel",
    "GPTBertModel",
    "GPTBertForCausalLM",
    "GPTBertForMaskedLM",
    "GPTBertForSequenceClassification",
]
