"""GPT-BERT configuration for Hugging Face transformers (5.x).

Self-contained on purpose: this file is copied next to exported weights and
loaded with `trust_remote_code=True`, so it imports transformers only.

Field names follow the officially released GPT-BERT / LTG-BERT checkpoints
(`ltg/gpt-bert-babylm-small`, `-base`), so their config.json reads as is.
"""

from __future__ import annotations

try:  # transformers >= 5
    from transformers import PreTrainedConfig
except ImportError:  # pragma: no cover - transformers 4.x spelling
    from transformers import PretrainedConfig as PreTrainedConfig


MLM_LAYOUTS = ("aligned", "mntp")


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
        mlm_logits_layout: what `GPTBertForMaskedLM` returns. "aligned" (default): logit row i scores
            token i, the Hugging Face masked-LM convention (minicons `MaskedLMScorer`, lm-eval `hf-mlm`,
            BabyLM 2025 `--backend mlm`); row 0 is a one-hot `<s>` row. "mntp": the raw GPT-BERT
            output, row i scores token i+1 (BabyLM 2025 `--backend mntp`, which reads row idx-1).
    """

    model_type = "gpt_bert"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    vocab_size: int = 16384
    hidden_size: int = 768
    intermediate_size: int = 2560
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    position_bucket_size: int = 32
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-5
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    classifier_temperature: float = 1.0
    mlm_logits_layout: str = "aligned"
    use_cache: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 3
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    mask_token_id: int | None = 4

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.mlm_logits_layout not in MLM_LAYOUTS:
            raise ValueError(f"mlm_logits_layout must be one of {MLM_LAYOUTS}, got {self.mlm_logits_layout!r}")
        self.validate_architecture()

    def validate_architecture(self):
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads ({self.num_attention_heads})"
            )


__all__ = ["GPTBertConfig"]
