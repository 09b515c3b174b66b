"""GPT-BERT configuration for Hugging Face transformers (4.51+ and 5.x).

Self-contained on purpose: this file is copied next to exported weights and
loaded with `trust_remote_code=True`, so it imports transformers only.

Field names follow the officially released GPT-BERT / LTG-BERT checkpoints
(`ltg/gpt-bert-babylm-small`, `-base`), so their config.json reads as is.

Written as a classic `__init__` (no dataclass fields): transformers 4.x sets
attributes from `__init__`, transformers 5.x turns every config subclass
into a dataclass but keeps a custom `__init__` as it is, so the one class
works under both.
"""

from __future__ import annotations

try:  # transformers >= 5
    from transformers import PreTrainedConfig
except ImportError:  # transformers 4.x spelling
    from transformers import PretrainedConfig as PreTrainedConfig


# "mntp": row i of the masked-LM logits scores token i+1 (what GPT-BERT computes and the released checkpoints
# return; BabyLM 2025 `--backend mntp`). "aligned": row i scores token i (BabyLM 2025 `--backend mlm`).
MLM_LAYOUTS = ("mntp", "aligned")
DEFAULT_MLM_LAYOUT = "mntp"
# The BabyLM 2025 evaluation pipeline backend that reads each layout.
PIPELINE_BACKEND = {"mntp": "mntp", "aligned": "mlm"}


class GPTBertConfig(PreTrainedConfig):
    r"""Configuration of a GPT-BERT model (Charpentier & Samuel 2024).

    One transformer trained with a hybrid of causal language modelling and
    masked next-token prediction (MNTP): the output at position k always
    predicts token k+1, in causal and in bidirectional mode alike.

    Args:
        vocab_size: tokens in the vocabulary (ids 0..15 are special).
        hidden_size: width of the residual stream.
        intermediate_size: GEGLU feed-forward width (the first projection is twice this).
        num_hidden_layers: transformer layers (each one attention and one feed-forward block).
        num_attention_heads: attention heads; must divide hidden_size.
        position_bucket_size: relative-position buckets per direction (2 * size - 1 embeddings).
        max_position_embeddings: largest relative distance told apart.
        layer_norm_eps: LayerNorm epsilon.
        hidden_dropout_prob: dropout on embeddings, block outputs and the LM head.
        attention_probs_dropout_prob: dropout on attention probabilities and relative embeddings.
        classifier_dropout: dropout inside the sequence-classification head (None: hidden_dropout_prob).
        classifier_temperature: the sequence-classification logits are divided by it (the official
            checkpoints call it `temperature`, a name transformers now reserves for generation).
        mlm_logits_layout: what `GPTBertForMaskedLM` returns.
            "mntp" (default): the GPT-BERT output as it is, row i scores token i+1, as in the officially
            released checkpoints; the BabyLM 2025 pipeline's `--backend mntp` reads it (row idx-1 for a
            mask at idx).
            "aligned": row i scores token i, the usual masked-LM convention (BabyLM 2025 `--backend mlm`,
            minicons `MaskedLMScorer`, lm-eval `hf-mlm`); row 0, which GPT-BERT does not predict, is a
            uniform distribution (every token log(1/vocab_size)), never -inf.
        attention_gate: the attention output is multiplied by GELU(gate) (paper 2.2); False is the
            "w/o attention gate" ablation (`in_proj_v` instead of `in_proj_vg`).
        layer_weighting: DenseFormer-style weighted sums of all earlier block outputs (paper 2.2);
            False is the "w/o layer weights" ablation, a plain pre-LN residual stream.
        Both default to True, so the officially released config.json files (which lack them) load as is.
    """

    model_type = "gpt_bert"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    def __init__(
        self,
        vocab_size: int = 16384,
        hidden_size: int = 768,
        intermediate_size: int = 2560,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        position_bucket_size: int = 32,
        max_position_embeddings: int = 512,
        layer_norm_eps: float = 1e-5,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        classifier_dropout: float | None = None,
        classifier_temperature: float = 1.0,
        mlm_logits_layout: str = DEFAULT_MLM_LAYOUT,
        attention_gate: bool = True,
        layer_weighting: bool = True,
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        pad_token_id: int | None = 3,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        mask_token_id: int | None = 4,
        **kwargs,
    ):
        if mlm_logits_layout not in MLM_LAYOUTS:
            raise ValueError(f"mlm_logits_layout must be one of {MLM_LAYOUTS}, got {mlm_logits_layout!r}")
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_attention_heads})"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.position_bucket_size = position_bucket_size
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.classifier_dropout = classifier_dropout
        self.classifier_temperature = classifier_temperature
        self.mlm_logits_layout = mlm_logits_layout
        self.attention_gate = bool(attention_gate)
        self.layer_weighting = bool(layer_weighting)
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)
        # Set after the base __init__: transformers 4.x resets the token ids and tie_word_embeddings to its own
        # defaults there, transformers 5.x drops generation parameters such as use_cache from the kwargs.
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = tie_word_embeddings
        self.use_cache = use_cache


__all__ = ["GPTBertConfig"]
