"""Hugging Face transformers integration (optional: needs transformers; the export is written with 5.x
and loads under 4.51+ and 5.x).

`configuration_gpt_bert.py` and `modeling_gpt_bert.py` are self-contained:
`gptbert export` copies them next to the weights, and anyone can load the
folder with `trust_remote_code=True` without installing gptbert.

The lm-evaluation-harness model `gpt-bert` lives in `gptbert/eval/lm_eval_adapter.py`
(needs lm-eval; `python -m gptbert.eval.lm_eval_adapter --model gpt-bert ...`).

Importing this package does not import transformers. Call `register()` to
make the Auto classes know `model_type="gpt_bert"` in this process (then
`trust_remote_code` is not needed for folders whose config says gpt_bert).
"""

from __future__ import annotations

import ast
from pathlib import Path

HF_DIR = Path(__file__).resolve().parent
REMOTE_CODE_FILES = ("configuration_gpt_bert.py", "modeling_gpt_bert.py")


def _config_constants(*names: str) -> tuple:
    """Literal constants of configuration_gpt_bert.py, read without importing transformers (one source of truth:
    the remote-code file, which cannot import this package)."""
    tree = ast.parse((HF_DIR / "configuration_gpt_bert.py").read_text(encoding="utf-8"))
    found = {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name) and t.id in names}
    return tuple(found[n] for n in names)


# Masked-LM logit layouts, the export default, and the BabyLM 2025 pipeline backend that reads each.
MLM_LAYOUTS, DEFAULT_MLM_LAYOUT, PIPELINE_BACKEND = _config_constants("MLM_LAYOUTS", "DEFAULT_MLM_LAYOUT",
                                                                      "PIPELINE_BACKEND")

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


__all__ = ["AUTO_MAP", "DEFAULT_MLM_LAYOUT", "HF_DIR", "MLM_LAYOUTS", "PIPELINE_BACKEND", "REMOTE_CODE_FILES",
           "register"]
