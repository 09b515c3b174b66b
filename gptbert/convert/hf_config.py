"""The mapping between our ModelConfig and a Hugging Face config.json.

The field names of config.json are those of the official GPT-BERT releases
(`ltg/gpt-bert-babylm-*`, LTG-BERT lineage); `HF_TO_OURS` is the one table
that maps them. The parameter names of the weights are the same on both
sides, except the two keys below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import GPTBertError, input_error
from ..hf import AUTO_MAP, DEFAULT_MLM_LAYOUT, MLM_LAYOUTS
from ..tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID

HF_TO_OURS = {  # config.json field -> ModelConfig field
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "position_bucket_size": "position_buckets",
    "max_position_embeddings": "max_position",
    "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "layer_norm_eps": "layer_norm_eps",
    # ablation switches (absent from the official releases: they default to the paper's architecture)
    "attention_gate": "attention_gate",
    "layer_weighting": "layer_weighting",
}
_SWITCHES = ("attention_gate", "layer_weighting")
_REQUIRED_HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
# The output matrix: tied to the word embedding in our model, saved separately by the official releases.
TIED_KEY = "classifier.nonlinearity.5.weight"
EMBED_KEY = "embedding.word_embedding.weight"


def hf_config_dict(mc: ModelConfig) -> dict[str, Any]:
    """The official config.json fields for a ModelConfig."""
    return {hf: getattr(mc, ours) for hf, ours in HF_TO_OURS.items()}


def model_config_from_hf(d: Mapping[str, Any], where: str | Path = "config.json") -> ModelConfig:
    """A validated ModelConfig from an official / exported config.json dict."""
    missing = [k for k in _REQUIRED_HF_FIELDS if k not in d]
    if missing:
        raise input_error(where, f"missing field '{missing[0]}' (not a GPT-BERT / LTG-BERT config.json?)")
    kw: dict[str, Any] = {}
    for hf, ours in HF_TO_OURS.items():
        if hf in d and d[hf] is not None:
            v = d[hf]
            if ours in _SWITCHES:
                if not isinstance(v, bool):
                    raise input_error(where, f"field '{hf}' must be true or false, got {v!r}")
                kw[ours] = v
                continue
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not ok:
                raise input_error(where, f"field '{hf}' must be a number, got {v!r}")
            kw[ours] = float(v) if ours in ("dropout", "attention_dropout", "layer_norm_eps") else int(v)
    mc = ModelConfig(**kw)
    try:
        mc.validate(str(where))
    except GPTBertError as e:
        raise GPTBertError(str(e).replace(".model.", ".").replace(": model.", ": ")) from None
    return mc


def build_hf_config(mc: ModelConfig, mlm_logits_layout: str | None = None, **extra):
    """A GPTBertConfig (gptbert/hf, needs transformers) for a ModelConfig (default layout: "mntp")."""
    from ..hf.configuration_gpt_bert import GPTBertConfig

    mlm_logits_layout = mlm_logits_layout or DEFAULT_MLM_LAYOUT
    if mlm_logits_layout not in MLM_LAYOUTS:
        raise GPTBertError(f"--mlm-layout: expected one of {', '.join(MLM_LAYOUTS)}, got {mlm_logits_layout!r}")
    cfg = GPTBertConfig(
        **hf_config_dict(mc),
        mlm_logits_layout=mlm_logits_layout,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, mask_token_id=MASK_ID,
        **extra,
    )
    cfg.auto_map = dict(AUTO_MAP)
    return cfg

