"""Export to Hugging Face transformers: a folder that loads with `trust_remote_code=True`.

The export folder holds:
  config.json                 GPTBertConfig with `auto_map` for five Auto classes and the
                              masked-LM logit layout (`mlm_logits_layout`)
  configuration_gpt_bert.py   self-contained (torch + transformers only)
  modeling_gpt_bert.py        self-contained
  model.safetensors           EMA weights by default (`--raw`: the trained ones), fp32
  generation_config.json
  tokenizer.json, tokenizer_config.json   fast tokenizer, specials set, offsets trimmed;
                              `tokenizer_class` is `PreTrainedTokenizerFast`, a name
                              transformers 4.x and 5.x both know
  README.md                   model card (convert/model_card.py)

The folder is written with transformers 5 and loads under transformers 4.51+
as well as 5.x (the BabyLM 2025 evaluation pipeline pins 4.51.3).

Parameter names in the export are those of our checkpoints, which are those
of the official releases, so one `model.safetensors` serves every head.
Before anything is written, a short causal and bidirectional pass through the
HF model must reproduce our model's logits; the folder is then written under
a temporary name and swapped in, so a failure never leaves a half-written
export.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from tokenizers import processors

from ..config import ModelConfig
from ..errors import GPTBertError, input_error
from ..generate import SUPPRESSED_IDS
from ..hf import DEFAULT_MLM_LAYOUT, HF_DIR, REMOTE_CODE_FILES
from ..io import replace_dir, temp_path
from ..model import attention_mask
from ..pretrained import load
from ..tokenizer import BOS_ID, EOS_ID, load_tokenizer
from .hf_config import TIED_KEY, build_hf_config
from .model_card import model_card

TRANSFORMERS_REQUIREMENT = "transformers>=5.24,<6"
# The class named in tokenizer_config.json. transformers 5 writes its own name for it, `TokenizersBackend`,
# which transformers 4.x does not know; `PreTrainedTokenizerFast` is the same class in 5.x (an alias) and
# the fast tokenizer class of 4.x.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise GPTBertError(
            f"the Hugging Face export needs transformers: pip install '{TRANSFORMERS_REQUIREMENT}'"
        ) from None
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise GPTBertError(
            f"transformers {transformers.__version__} is installed; the export needs {TRANSFORMERS_REQUIREMENT}"
        )
    return transformers



def hf_fast_tokenizer(tokenizer_path: str | Path, max_length: int):
    """Our tokenizer.json wrapped as a transformers fast tokenizer with the GPT-BERT special tokens.

    A ByteLevel post-processor with `trim_offsets` is put in front of the
    `<s> $A` template: ids are unchanged, but `offset_mapping` no longer
    covers the leading space of each word (ltgoslo/gpt-bert#2).
    """
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(tokenizer_path)
    tok.post_processor = processors.Sequence(
        [processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False), tok.post_processor]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        cls_token="<s>", sep_token="</s>",
        model_max_length=max_length, padding_side="right",
        clean_up_tokenization_spaces=False,
    )



def export_hf(
    checkpoint: str | Path,
    out_dir: str | Path,
    raw: bool = False,
    tokenizer: str | Path | None = None,
    mlm_logits_layout: str = DEFAULT_MLM_LAYOUT,
    force: bool = False,
    results: list[str | Path] | tuple = (),
) -> Path:
    """Write a Hugging Face folder for a checkpoint of ours; returns the folder.

    mlm_logits_layout: "mntp" (default; row i of the masked-LM logits scores token i+1, as in the
    released GPT-BERT checkpoints; BabyLM 2025 `--backend mntp`) or "aligned" (row i scores token i;
    `--backend mlm`). It is recorded in config.json and named in the model card.

    The model card lists the numbers of `results` (results.json files of `gptbert eval` /
    `gptbert finetune`) and of any results.json found next to the checkpoint or in its run folder.

    The folder is written next to OUT_DIR under a temporary name and renamed
    into place at the end, so a failure never leaves a half-written export.
    """
    _require_transformers()
    from ..hf.modeling_gpt_bert import GPTBertForCausalLM

    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    pre = load(checkpoint, weights="raw" if raw else "ema", tokenizer=tokenizer)
    model, mc, tok_path = pre.model, pre.model.config, pre.tokenizer_path
    hf_tok = hf_fast_tokenizer(tok_path, mc.max_position)
    if len(hf_tok) != mc.vocab_size:
        raise input_error(tok_path, f"tokenizer has {len(hf_tok)} tokens but the model has vocab_size={mc.vocab_size}")

    config = build_hf_config(mc, mlm_logits_layout)
    config.architectures = ["GPTBertForCausalLM"]
    hf_model = GPTBertForCausalLM(config)
    missing, unexpected = hf_model.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != TIED_KEY]:
        raise GPTBertError(f"internal: HF model does not match ours (missing {missing}, unexpected {unexpected})")
    hf_model.eval()
    _check_same_logits(model, hf_model, mc)

    hf_model.generation_config.suppress_tokens = list(SUPPRESSED_IDS)
    hf_model.generation_config.eos_token_id = [EOS_ID, BOS_ID]  # a new document (<s>) also ends a text
    card = model_card(pre, mlm_logits_layout, [Path(r) for r in results])
    return _write_hf_folder(hf_model, hf_tok, card, out_dir)



def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise input_error(out_dir, "already exists and is not empty (pass --force to replace it)")


def _name_portable_tokenizer_class(path: Path) -> None:
    """Name in tokenizer_config.json a tokenizer class that transformers 4.x and 5.x both know."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = TOKENIZER_CLASS
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_hf_folder(hf_model, hf_tok, card: str, out_dir: Path) -> Path:
    """save_pretrained + remote-code files + tokenizer + README into a temporary folder, then swap it in."""
    from transformers.utils import logging as hf_logging

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out_dir)
    if tmp.exists():
        shutil.rmtree(tmp)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        if getattr(hf_model, "generation_config", None) is not None and hf_model.can_generate():
            hf_model.generation_config.save_pretrained(tmp)
        for name in REMOTE_CODE_FILES:
            shutil.copyfile(HF_DIR / name, tmp / name)
        hf_tok.save_pretrained(tmp)
        _name_portable_tokenizer_class(tmp / "tokenizer_config.json")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return out_dir



def export_sequence_classifier(
    state: Mapping[str, torch.Tensor],
    model_config: ModelConfig,
    tokenizer_path: str | Path,
    out_dir: str | Path,
    labels: int | list[str],
    classifier_dropout: float | None = None,
    force: bool = False,
) -> Path:
    """Write a fine-tuned sequence classifier as an HF folder (AutoModelForSequenceClassification).

    state: the fine-tuned weights in one state dict: the GPT-BERT encoder under our names (optionally
        behind a `backbone.` / `model.` / `module.` prefix; `classifier.*` is ignored) and the
        LN-Linear-GELU-LN-Dropout-Linear head on the `<s>` state under `head.` (`head.1.weight`,
        `head.5.bias`, ... as `gptbert.eval.finetune.SequenceClassifier` has them, or
        `head.nonlinearity.1.weight`, ...).
    labels: the number of labels, or their names in id order.
    """
    _require_transformers()
    from ..hf.modeling_gpt_bert import GPTBertForSequenceClassification

    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    mc = model_config
    names = [f"LABEL_{i}" for i in range(labels)] if isinstance(labels, int) else [str(x) for x in labels]
    if len(names) < 1:
        raise GPTBertError("export_sequence_classifier: at least one label is needed")
    config = build_hf_config(mc, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                             classifier_dropout=classifier_dropout)
    config.architectures = ["GPTBertForSequenceClassification"]
    hf_model = GPTBertForSequenceClassification(config)
    weights: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith("head."):
            parts = k.split(".")
            if parts[-2] in ("1", "5") and parts[-1] in ("weight", "bias"):
                weights[f"head.nonlinearity.{parts[-2]}.{parts[-1]}"] = v
        elif not k.startswith("classifier."):
            weights[k] = v
    missing, unexpected = hf_model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise GPTBertError(f"export_sequence_classifier: weights do not fit the model "
                           f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    hf_tok = hf_fast_tokenizer(tokenizer_path, mc.max_position)
    card = (f"---\nlibrary_name: transformers\ntags:\n- gpt-bert\npipeline_tag: text-classification\n---\n\n"
            f"# GPT-BERT sequence classifier ({len(names)} labels: {', '.join(names)})\n\n"
            "Fine-tuned GPT-BERT (Charpentier & Samuel, 2024): bidirectional attention, the `<s>` state through "
            "LayerNorm-Linear-GELU-LayerNorm-Dropout-Linear. Load with "
            "`AutoModelForSequenceClassification.from_pretrained(PATH, trust_remote_code=True)` "
            "(transformers 4.51+ or 5.x).\n")
    return _write_hf_folder(hf_model.eval(), hf_tok, card, out_dir)


@torch.no_grad()
def _check_same_logits(model, hf_model, mc) -> None:
    """Guard against a silent mismatch: a short causal and bidirectional pass must agree."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(16, mc.vocab_size, (1, min(12, mc.max_position)), generator=g)
    seg = torch.zeros_like(ids)
    for causal in (True, False):
        ours = model(ids, attention_mask(seg, causal))
        hidden, _ = hf_model._encode(ids, None, None, causal)
        theirs = hf_model.classifier(hidden)
        err = (ours - theirs).abs().max().item()
        if not err <= 1e-4 * max(1.0, ours.abs().max().item()):
            raise GPTBertError(f"internal: exported model differs from ours (max |logit diff| {err:.3g})")

