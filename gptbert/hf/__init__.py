"""Hugging Face transformers integration (optional: needs `transformers>=5`).

`configuration_gpt_bert.py` and `modeling_gpt_bert.py` are self-contained:
`gptbert export` copies them next to the weights, and anyone can load the
folder with `trust_remote_code=True` without installing gptbert.

`lm_eval_adapter.py` is the lm-evaluation-harness model `gpt-bert` (needs
lm-eval; `python -m gptbert.hf.lm_eval_adapter --model gpt-bert ...`).

Importing this package does not import transformers. Call `register()` to
make the Auto classes know `model_type="gpt_bert"` in this process (then
`trust_remote_code` is not needed for folders whose config says gpt_bert).
"""

from __future__ import annotations

from pathlib import Path

HF_DIR = Path(__file__).resolve().parent
REMOTE_CODE_FILES = ("configuration_gpt_bert.py", "modeling_gpt_bert.py")

AUTO_MAP = {
    "AutoConfig": "configuration_gpt_bert.GPTBertConfig",
    "AutoModel": "modeling_gpt_bert.GPTBertModel",
    "AutoModelForCausalLM": "modeling_gpt_bert.GPTBertForCausalLM",
    "AutoModelForMaskedLM": "modeling_gpt_bert.GPTBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_gpt_bert.GPTBertForSequenceClassification",
}


def register() -> None:
    """Register GPTBertConfig and the model classes with the transformers Auto classes (idempotent).

    The classes are also marked for `register_for_auto_class`, so `save_pretrained`
    on a model built from them still writes the two code files and `auto_map`:
    the saved folder stays loadable where gptbert is not installed.
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
    )

    from .configuration_gpt_bert import GPTBertConfig
    from .modeling_gpt_bert import (
        GPTBertForCausalLM,
        GPTBertForMaskedLM,
        GPTBertForSequenceClassification,
        GPTBertModel,
    )

    AutoConfig.register("gpt_bert", GPTBertConfig, exist_ok=True)
    GPTBertConfig.register_for_auto_class("AutoConfig")
    for auto, cls in (
        (AutoModel, GPTBertModel),
        (AutoModelForCausalLM, GPTBertForCausalLM),
        (AutoModelForMaskedLM, GPTBertForMaskedLM),
        (AutoModelForSequenceClassification, GPTBertForSequenceClassification),
    ):
        auto.register(GPTBertConfig, cls, exist_ok=True)
        cls.register_for_auto_class(auto.__name__)


__all__ = ["AUTO_MAP", "HF_DIR", "REMOTE_CODE_FILES", "register"]
