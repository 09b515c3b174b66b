"""Hugging Face export and import, and text generation.

Commands (registered by `add_hf_parsers`, wired into `gptbert` by cli.py):

  gptbert export CHECKPOINT OUT_DIR [--raw] [--mlm-layout aligned|mntp] [--results R.json]
      a folder that loads with `trust_remote_code=True` as AutoModelForCausalLM /
      AutoModelForMaskedLM / AutoModel / AutoModelForSequenceClassification
      (needs transformers 5.x)
  gptbert import-hf DIR OUT_RUN_DIR           the official released layout
      (ltg/gpt-bert-babylm-small/-base: config.json, pytorch_model.bin or
      model.safetensors, tokenizer.json) or one of our exports -> a checkpoint
      of ours, so `eval`, `finetune` and `generate` work on it
  gptbert generate CHECKPOINT "prompt"        greedy or sampled continuation

`export_sequence_classifier(state, ...)` writes a fine-tuned classifier
(`gptbert.eval.finetune.SequenceClassifier` weights) as an HF folder.

The export folder holds:
  config.json                 GPTBertConfig with `auto_map` for five Auto classes
  configuration_gpt_bert.py   self-contained (torch + transformers only)
  modeling_gpt_bert.py        self-contained
  model.safetensors           EMA weights by default (`--raw`: the trained ones), fp32
  generation_config.json
  tokenizer.json, tokenizer_config.json   fast tokenizer, specials set, offsets trimmed
  README.md                   model card

Parameter names in the export are the ones of our checkpoints, which are the
ones of the official releases; the only differences of the official layout
are a stored `position_indices` buffer per attention layer and the output
matrix `classifier.nonlinearity.5.weight` saved next to the (identical)
word embedding. `import-hf` handles both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import GPTBertError, input_error

TRANSFORMERS_REQUIREMENT = "transformers>=5.24,<6"
OFFICIAL_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
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
}
_REQUIRED_HF_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_TIED_KEY = "classifier.nonlinearity.5.weight"
# Never generated: <unk>, <pad>, <mask> and the 11 spare specials (<s> and </s> end a continuation).
SUPPRESSED_IDS = (0, 3, 4) + tuple(range(5, 16))
_EMBED_KEY = "embedding.word_embedding.weight"


# ---------------------------------------------------------------------------
# Config mapping


def hf_config_dict(mc) -> dict[str, Any]:
    """The official config.json fields for a ModelConfig."""
    return {hf: getattr(mc, ours) for hf, ours in HF_TO_OURS.items()}


def model_config_from_hf(d: Mapping[str, Any], where: str | Path = "config.json"):
    """A validated ModelConfig from an official / exported config.json dict."""
    from .config import ModelConfig

    missing = [k for k in _REQUIRED_HF_FIELDS if k not in d]
    if missing:
        raise input_error(where, f"missing field '{missing[0]}' (not a GPT-BERT / LTG-BERT config.json?)")
    kw: dict[str, Any] = {}
    for hf, ours in HF_TO_OURS.items():
        if hf in d and d[hf] is not None:
            v = d[hf]
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


def _resolve(path: str | Path, base: Path | None) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists() and base is not None and (base / p).exists():
        return base / p
    return p


def checkpoint_tokenizer_path(ckpt: Mapping[str, Any], override: str | Path | None = None) -> Path:
    """The tokenizer.json of a loaded checkpoint: override, train.tokenizer, or <train.data>/tokenizer.json."""
    if override:
        p = Path(override)
        if not p.is_file():
            raise input_error(p, "tokenizer file does not exist")
        return p
    train = (ckpt.get("config") or {}).get("train") or {}
    run_dir = Path(ckpt["path"]).parent.parent
    candidates = []
    if train.get("tokenizer"):
        candidates.append(_resolve(train["tokenizer"], run_dir))
    if train.get("data"):
        candidates.append(_resolve(Path(train["data"]) / "tokenizer.json", run_dir))
    candidates.append(run_dir / "tokenizer.json")
    for c in candidates:
        if c.is_file():
            return c
    raise input_error(
        ckpt["path"],
        f"cannot find the tokenizer (tried {', '.join(str(c) for c in candidates)}); pass --tokenizer PATH",
    )


# ---------------------------------------------------------------------------
# Loading our checkpoints


def load_model(checkpoint: str | Path, raw: bool = False, map_location: str = "cpu"):
    """(GPTBERT in eval mode, loaded checkpoint dict, which weights: "ema" or "raw").

    EMA weights are used when the checkpoint has them, unless `raw`.
    """
    from .checkpoint import EMA_FILE, MODEL_FILE, load_checkpoint, load_model_weights
    from .config import ModelConfig
    from .model import GPTBERT

    ckpt = load_checkpoint(checkpoint, map_location=map_location)
    cfg = ckpt.get("config") or {}
    if not isinstance(cfg.get("model"), dict):
        raise input_error(Path(ckpt["path"]) / "config.yaml", "has no 'model' section")
    try:
        mc = ModelConfig(**cfg["model"])
    except TypeError as e:
        raise input_error(Path(ckpt["path"]) / "config.yaml", f"bad model section ({e})") from None
    mc.validate(str(Path(ckpt["path"]) / "config.yaml"))
    use_ema = ckpt.get("ema") is not None and not raw
    state = ckpt["ema"] if use_ema else ckpt["model"]
    model = GPTBERT(mc)
    load_model_weights(model, state, Path(ckpt["path"]) / (EMA_FILE if use_ema else MODEL_FILE))
    model.eval()
    return model, ckpt, "ema" if use_ema else "raw"


# ---------------------------------------------------------------------------
# Export


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


def build_hf_config(mc, mlm_logits_layout: str = "aligned", **extra):
    """A GPTBertConfig (from gptbert/hf) for a ModelConfig."""
    from .hf import AUTO_MAP
    from .hf.configuration_gpt_bert import GPTBertConfig
    from .tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID

    if mlm_logits_layout not in ("aligned", "mntp"):
        raise GPTBertError(f"--mlm-layout: expected aligned or mntp, got {mlm_logits_layout!r}")
    cfg = GPTBertConfig(
        **hf_config_dict(mc),
        mlm_logits_layout=mlm_logits_layout,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, mask_token_id=MASK_ID,
        **extra,
    )
    cfg.auto_map = dict(AUTO_MAP)
    return cfg


def hf_fast_tokenizer(tokenizer_path: str | Path, max_length: int):
    """Our tokenizer.json wrapped as a transformers fast tokenizer with the GPT-BERT special tokens.

    A ByteLevel post-processor with `trim_offsets` is put in front of the
    `<s> $A` template: ids are unchanged, but `offset_mapping` no longer
    covers the leading space of each word (ltgoslo/gpt-bert#2).
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from .tokenizer import load_tokenizer

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


def _state_for_hf(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()}


def export_hf(
    checkpoint: str | Path,
    out_dir: str | Path,
    raw: bool = False,
    tokenizer: str | Path | None = None,
    mlm_logits_layout: str = "aligned",
    force: bool = False,
    results: list[str | Path] | tuple = (),
) -> Path:
    """Write a Hugging Face folder for a checkpoint of ours; returns the folder.

    The model card lists the numbers of `results` (results.json files of `gptbert eval` /
    `gptbert finetune`) and of any results.json found next to the checkpoint or in its run folder.

    The folder is written next to OUT_DIR under a temporary name and renamed
    into place at the end, so a failure never leaves a half-written export.
    """
    _require_transformers()
    from .hf.modeling_gpt_bert import GPTBertForCausalLM
    from .tokenizer import BOS_ID, EOS_ID

    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    model, ckpt, which = load_model(checkpoint, raw=raw)
    mc = model.config
    tok_path = checkpoint_tokenizer_path(ckpt, tokenizer)
    hf_tok = hf_fast_tokenizer(tok_path, mc.max_position)
    if len(hf_tok) != mc.vocab_size:
        raise input_error(tok_path, f"tokenizer has {len(hf_tok)} tokens but the model has vocab_size={mc.vocab_size}")

    config = build_hf_config(mc, mlm_logits_layout)
    config.architectures = ["GPTBertForCausalLM"]
    hf_model = GPTBertForCausalLM(config)
    missing, unexpected = hf_model.load_state_dict(_state_for_hf(model), strict=False)
    if unexpected or [k for k in missing if k != _TIED_KEY]:
        raise GPTBertError(f"internal: HF model does not match ours (missing {missing}, unexpected {unexpected})")
    hf_model.eval()
    _check_same_logits(model, hf_model, mc)

    hf_model.generation_config.suppress_tokens = list(SUPPRESSED_IDS)
    hf_model.generation_config.eos_token_id = [EOS_ID, BOS_ID]  # a new document (<s>) also ends a text
    card = model_card(ckpt, model, which, mlm_logits_layout, tok_path, [Path(r) for r in results])
    return _write_hf_folder(hf_model, hf_tok, card, out_dir)


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise input_error(out_dir, "already exists and is not empty (pass --force to replace it)")


def _write_hf_folder(hf_model, hf_tok, card: str, out_dir: Path) -> Path:
    """save_pretrained + remote-code files + tokenizer + README into a temporary folder, then swap it in."""
    from transformers.utils import logging as hf_logging

    from .hf import HF_DIR, REMOTE_CODE_FILES

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
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
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return out_dir


def export_sequence_classifier(
    state: Mapping[str, torch.Tensor],
    model_config,
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
    from .hf.modeling_gpt_bert import GPTBertForSequenceClassification

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
            "(transformers 5.x).\n")
    return _write_hf_folder(hf_model.eval(), hf_tok, card, out_dir)


@torch.no_grad()
def _check_same_logits(model, hf_model, mc) -> None:
    """Guard against a silent mismatch: a short causal and bidirectional pass must agree."""
    from .model import attention_mask

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


# ---------------------------------------------------------------------------
# Model card


def _result_files(ckpt_dir: Path, extra: list[Path] | tuple = ()) -> list[Path]:
    """results.json files given explicitly, next to the checkpoint, or in its run folder."""
    run_dir = ckpt_dir.parent.parent
    files: list[Path] = []
    for f in extra:
        f = Path(f)
        if not f.is_file():
            raise input_error(f, "results file does not exist")
        files.append(f)
    for base in (ckpt_dir, run_dir, run_dir / "eval"):
        if base.is_dir():
            files += sorted(base.glob("results.json")) + sorted(base.glob("*/results.json"))
            files += sorted(base.glob("*/*/results.json"))
    unique: list[Path] = []
    for f in files:
        if f.resolve() not in {u.resolve() for u in unique}:
            unique.append(f)
    return unique


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _results_rows(data: Any, source: str) -> list[tuple[str, str, str]]:
    """(what, metric, value) rows from a `gptbert eval` / `gptbert finetune` results.json (or any JSON)."""
    rows: list[tuple[str, str, str]] = []
    if not isinstance(data, dict):
        return rows
    tasks = data.get("tasks")
    if isinstance(tasks, dict):
        for task, by_mode in tasks.items():
            if not isinstance(by_mode, dict):
                continue
            for mode, r in by_mode.items():
                if isinstance(r, (int, float)) and not isinstance(r, bool):  # flat metrics per task
                    if "scores" not in data and mode not in ("n_pairs", "n_subtasks", "ties_at_T1", "seconds"):
                        rows.append((str(task), str(mode), _num(r)))
                    continue
                if not isinstance(r, dict):
                    continue
                t1, best = r.get("T1"), r.get("best_T")
                if isinstance(t1, dict) and isinstance(t1.get("average"), (int, float)):
                    rows.append((f"{task} ({mode})", "accuracy, T=1", _num(t1["average"])))
                if isinstance(best, dict) and isinstance(best.get("average"), (int, float)):
                    rows.append((f"{task} ({mode})", f"accuracy, best T={best.get('temperature', '?')}",
                                 _num(best["average"])))
    for mode, r in (data.get("lambada") or {}).items() if isinstance(data.get("lambada"), dict) else ():
        if isinstance(r, dict):
            for k, v in r.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seconds":
                    rows.append((f"LAMBADA ({mode})", str(k), _num(v)))
    scores = data.get("scores")  # `gptbert finetune`: {task: metric value or None}
    if isinstance(scores, dict):
        for task, v in scores.items():
            rows.append((str(task), "score", _num(v) if isinstance(v, (int, float)) else "unavailable"))
    glue = data.get("glue_score")
    if isinstance(glue, dict) and isinstance(glue.get("score"), (int, float)):
        rows.append(("GLUE score", "mean", _num(glue["score"])))
    if not rows:  # unknown layout: top-level numbers only
        rows = [(source, str(k), _num(v)) for k, v in data.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return rows


def _eval_block(ckpt_dir: Path, extra: list[Path] | tuple = ()) -> str:
    rows: list[tuple[str, str, str]] = []
    for f in _result_files(ckpt_dir, extra):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows += _results_rows(data, f.parent.name)
    if not rows:
        return ("No evaluation results were found (run `gptbert eval` / `gptbert finetune`, then export "
                "again with `--results runs/eval/results.json`).")
    if len(rows) > 80:
        rows = rows[:80] + [("...", f"{len(rows) - 80} more rows in the results files", "")]
    return "| task | metric | value |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)


def model_card(ckpt: Mapping[str, Any], model, which: str, mlm_logits_layout: str, tok_path: Path,
               results: list[Path] | tuple = ()) -> str:
    cfg = ckpt.get("config") or {}
    train = cfg.get("train") or {}
    obj = cfg.get("objective") or {}
    meta = ckpt.get("meta") or {}
    mc = model.config
    n = model.num_parameters()
    n_params = f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"
    data_line = f"`{train.get('data', 'unknown')}`"
    data_meta = Path(str(train.get("data", ""))) / "meta.json"
    if train.get("data") and data_meta.is_file():
        try:
            dm = json.loads(data_meta.read_text(encoding="utf-8"))
            parts = [f"{k.replace('_', ' ')} {dm[k]:,}" for k in ("words", "documents", "train_tokens") if isinstance(dm.get(k), int)]
            if parts:
                data_line += " (" + ", ".join(parts) + ")"
        except (OSError, ValueError):
            pass
    ratio = obj.get("causal_ratio")
    ratio_line = (
        f"{ratio:.4f} of the rows causal, {1 - ratio:.4f} masked next-token prediction (MNTP)"
        if isinstance(ratio, (int, float)) else "unknown"
    )
    step = meta.get("step", "unknown")
    tokens = meta.get("tokens_seen")
    tokens_line = f"{tokens:,}" if isinstance(tokens, int) else "unknown"
    eval_block = _eval_block(Path(ckpt["path"]), results)
    other = "mntp" if mlm_logits_layout == "aligned" else "aligned"
    return f"""---
library_name: transformers
tags:
- gpt-bert
- babylm
- causal-lm
- masked-lm
pipeline_tag: text-generation
---

# GPT-BERT ({n_params} parameters)

A GPT-BERT model (Charpentier & Samuel, 2024): one transformer trained with a
hybrid of causal language modelling and masked next-token prediction, so the
same weights work as a causal LM and as a masked LM. Exported with `gptbert
export` from `{ckpt['path']}` ({which} weights).

## Training

| | |
|---|---|
| training data | {data_line} |
| optimizer steps | {step} |
| tokens seen | {tokens_line} |
| objective | {ratio_line} |
| size | {mc.num_layers} layers, hidden {mc.hidden_size}, {mc.num_heads} heads, FFN {mc.intermediate_size}, vocabulary {mc.vocab_size} |
| sequence length | {train.get('seq_length', 'unknown')} (longest supported: {mc.max_position}) |
| weights | {"exponential moving average (EMA)" if which == "ema" else "raw trained weights (not the EMA)"} |
| tokenizer | byte-level BPE, `{tok_path.name}`; `<s>` is prepended to every text |

## Evaluation

{eval_block}

## Usage

The folder carries its own modeling code: load it with `trust_remote_code=True`
(transformers 5.x).

```python
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(PATH, trust_remote_code=True)
lm = AutoModelForCausalLM.from_pretrained(PATH, trust_remote_code=True)
out = lm.generate(**tok("The cat", return_tensors="pt"), max_new_tokens=30, repetition_penalty=1.5)
print(tok.decode(out[0], skip_special_tokens=True))

mlm = AutoModelForMaskedLM.from_pretrained(PATH, trust_remote_code=True)
```

| Auto class | behaviour |
|---|---|
| `AutoModelForCausalLM` | causal attention; logits at position i predict token i+1; `generate()` with a KV cache |
| `AutoModelForMaskedLM` | bidirectional; logits **{mlm_logits_layout}** (see below) |
| `AutoModel` | bidirectional encoder, `last_hidden_state`; `attention_mask` (batch, seq) with 1 = token |
| `AutoModelForSequenceClassification` | `<s>`-token state -> LN-Linear-GELU-LN-Dropout-Linear head (`head.*`, new weights) |

### Masked-LM logit layout and evaluation backends

GPT-BERT predicts a masked token at position i from the output at position
i-1 (masked next-token prediction). `config.mlm_logits_layout` chooses what
`AutoModelForMaskedLM` returns:

- `aligned` (the export default): logit row i scores token i, the usual
  Hugging Face convention; row 0 is a one-hot `<s>` row. Use this with
  minicons `MaskedLMScorer`, lm-evaluation-harness `hf-mlm` (BabyLM 2024) and
  the BabyLM 2025 pipeline's `--backend mlm`.
- `mntp`: the raw output, row i scores token i+1. Use this with the BabyLM
  2025 pipeline's `--backend mntp` (it reads row idx-1).

This folder uses `{mlm_logits_layout}`; for `{other}`, pass
`mlm_logits_layout="{other}"` to `from_pretrained` or edit config.json. For
causal scoring use `--backend causal` / lm-eval `hf` with
`AutoModelForCausalLM`.

Evaluation tools: lm-evaluation-harness (0.4.13) through the adapter in the
`gptbert` package, `python -m gptbert.hf.lm_eval_adapter --model gpt-bert
--model_args pretrained=PATH,mode=causal --tasks ...` (`mode=mntp` for the
pseudo-log-likelihood, `mode=fused` for their sum); minicons
`IncrementalLMScorer` (causal) and `MaskedLMScorer` (aligned masked LM).

Generation: the paper recommends `repetition_penalty=1.5`. The training data
have no end-of-text token (every document starts with `<s>`), so
generation_config.json stops at `<s>` as well as `</s>`, and never produces
`<unk>`, `<pad>`, `<mask>` or the spare special tokens (`suppress_tokens`).

Tokenizer: a fast tokenizer (`tokenizer.json`) with `<s>` (BOS/CLS), `</s>`
(EOS/SEP), `<pad>`, `<mask>` and `<unk>`; `<s>` is added in front of every
text. Character offsets are trimmed, so a token's span never includes the
space before its word; within the first word of a text, spans start one
character late (the space the tokenizer prepends maps onto character 0).
"""


# ---------------------------------------------------------------------------
# The official released layout


def official_state_dict(model) -> dict[str, torch.Tensor]:
    """Our model's weights in the official released layout (as `ltg/gpt-bert-babylm-*` store them)."""
    from .model import relative_position_index

    mc = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd[_TIED_KEY] = sd[_EMBED_KEY].clone()  # saved separately there
    idx = relative_position_index(mc.max_position, mc.position_buckets, mc.max_position)
    for i in range(mc.num_layers):
        sd[f"transformer.attention_layers.{i}.position_indices"] = idx.clone()
    return sd


def write_official_layout(model, tokenizer_path: str | Path, out_dir: str | Path, safetensors: bool = False) -> Path:
    """Write config.json + pytorch_model.bin (or model.safetensors) + tokenizer.json in the official layout."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architectures": ["LtgbertForCausalLM"],
        "model_type": "ltgbert",
        **hf_config_dict(model.config),
        "temperature": 1.0,  # the official name of the classifier temperature
    }
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    sd = official_state_dict(model)
    if safetensors:
        import safetensors.torch

        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(out_dir / "model.safetensors"))
    else:
        torch.save(sd, out_dir / "pytorch_model.bin")
    shutil.copyfile(tokenizer_path, out_dir / "tokenizer.json")
    return out_dir


# ---------------------------------------------------------------------------
# Import


def _read_hf_weights(src: Path) -> tuple[dict[str, torch.Tensor], Path]:
    for name in OFFICIAL_WEIGHT_FILES:
        f = src / name
        if not f.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                import safetensors.torch

                return safetensors.torch.load_file(str(f)), f
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            raise input_error(f, f"cannot be read ({' '.join(str(e).split())[:200]})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise input_error(f, "is not a state dict of tensors")
        return state, f
    if any(src.glob("*.safetensors.index.json")) or any(src.glob("pytorch_model.bin.index.json")):
        raise input_error(src, "sharded checkpoints are not supported (merge the shards into one file)")
    raise input_error(src, f"no weights found (expected one of {', '.join(OFFICIAL_WEIGHT_FILES)})")


def convert_official_state_dict(state: Mapping[str, torch.Tensor], model, source: Path) -> dict[str, torch.Tensor]:
    """Official / exported HF weights -> our state dict, checked against `model` (a GPTBERT) key by key."""
    # A wrapper prefix ("model.", "bert.", ...) is removed when every weight carries it.
    prefix = ""
    if _EMBED_KEY not in state:
        hits = [k[: -len(_EMBED_KEY)] for k in state if k.endswith("." + _EMBED_KEY)]
        if len(hits) != 1:
            raise input_error(source, f"no '{_EMBED_KEY}' weight (not a GPT-BERT / LTG-BERT checkpoint?)")
        prefix = hits[0]
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not k.startswith(prefix):
            continue
        k = k[len(prefix):]
        if k.endswith("position_indices") or k.startswith("head."):
            continue  # recomputed buffer / a fine-tuning head (not part of the language model)
        out[k] = v.detach().to(torch.float32) if v.is_floating_point() else v
    if not any(k.startswith("classifier.") for k in out):
        raise input_error(source, "has no language-model head (classifier.*): a fine-tuned classifier "
                                  "cannot be imported as a language model")
    if _TIED_KEY in out:
        head, emb = out.pop(_TIED_KEY), out[_EMBED_KEY]
        if head.shape != emb.shape or not torch.allclose(head, emb, rtol=0, atol=1e-6):
            raise input_error(source, f"'{_TIED_KEY}' differs from '{_EMBED_KEY}': GPT-BERT ties the output "
                                      "matrix to the word embedding and an untied head cannot be imported")
    expected = model.state_dict()
    for k, v in out.items():
        if k not in expected:
            raise input_error(source, f"unexpected weight '{prefix}{k}' (not a GPT-BERT checkpoint, or an LTG-BERT "
                                      "without layer weights?)")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise input_error(source, f"weight '{prefix}{k}' has shape {tuple(v.shape)}, config.json implies "
                                      f"{tuple(expected[k].shape)}")
    for k in expected:
        if k not in out and k != _TIED_KEY:
            raise input_error(source, f"missing weight '{prefix}{k}'")
    return out


def import_hf(src_dir: str | Path, out_run_dir: str | Path) -> Path:
    """Convert an official (or exported) HF folder into a checkpoint of ours; returns the checkpoint folder.

    OUT_RUN_DIR gets tokenizer.json and checkpoints/step_0000000/ (step 0, no
    EMA, no optimizer state); `gptbert eval/generate OUT_RUN_DIR` then work.
    """
    from .checkpoint import load_model_weights, save_checkpoint
    from .config import RunConfig
    from .model import GPTBERT
    from .tokenizer import check_vocab, load_tokenizer

    src = Path(src_dir)
    if not src.is_dir():
        raise input_error(src, "does not exist" if not src.exists() else "is not a folder")
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise input_error(cfg_path, "missing (not a Hugging Face model folder)")
    try:
        hf_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise input_error(cfg_path, f"is not valid JSON ({e})") from None
    if not isinstance(hf_cfg, dict):
        raise input_error(cfg_path, "is not a JSON object")
    mc = model_config_from_hf(hf_cfg, cfg_path)
    tok_src = src / "tokenizer.json"
    tok = load_tokenizer(tok_src)
    check_vocab(tok_src, tok, mc.vocab_size)
    state, weights_path = _read_hf_weights(src)
    model = GPTBERT(mc)
    ours = convert_official_state_dict(state, model, weights_path)
    load_model_weights(model, ours, weights_path)

    out = Path(out_run_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_dst = out / "tokenizer.json"
    shutil.copyfile(tok_src, tok_dst)
    run = RunConfig(model=mc)
    run.train.tokenizer = str(tok_dst.resolve())
    run.train.out_dir = str(out.resolve())
    run.train.data = ""
    config = run.to_dict()
    config["source"] = {"imported_from": str(src.resolve()), "weights": weights_path.name,
                        "architectures": hf_cfg.get("architectures"), "time": time.time()}
    return save_checkpoint(out, 0, model.state_dict(), None, {"imported": True}, config, 0, keep_last=None)


# ---------------------------------------------------------------------------
# Generation (our model; no transformers needed)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty, as transformers' RepetitionPenaltyLogitsProcessor: for every token already in the
    sequence, a positive logit is divided by `penalty` and a negative one multiplied by it."""
    if penalty == 1.0:
        return logits
    picked = logits.gather(-1, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return logits.scatter(-1, seen, picked)


@torch.no_grad()
def generate_ids(
    model,
    prompt_ids: list[int],
    max_new_tokens: int = 50,
    greedy: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.5,
    stop_ids: tuple[int, ...] = (),
    suppress_ids: tuple[int, ...] = (),
    seed: int | None = None,
) -> list[int]:
    """Continue `prompt_ids` with our GPTBERT (causal mask); returns the new token ids.

    Greedy decoding with the same repetition penalty gives exactly the tokens
    of transformers' `generate(do_sample=False, repetition_penalty=...)` on the
    exported model (pass `suppress_ids=SUPPRESSED_IDS`, which the export's
    generation_config.json sets as `suppress_tokens`). The context is cut to
    the model's longest sequence.
    """
    from .model import attention_mask

    if not prompt_ids:
        raise GPTBertError("generate: the prompt encodes to no tokens")
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    limit = model.config.max_position
    new: list[int] = []
    for _ in range(max_new_tokens):
        ctx = ids[:, -limit:]
        mask = attention_mask(torch.zeros_like(ctx), True)
        logits = model(ctx, mask)[:, -1].float()  # (1, V)
        logits = apply_repetition_penalty(logits, ids, repetition_penalty)
        if suppress_ids:
            logits[:, list(suppress_ids)] = float("-inf")
        if greedy:
            nxt = int(logits.argmax(-1))
        else:
            logits = logits / max(temperature, 1e-6)
            if top_k and top_k > 0:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p < 1.0:
                sorted_logits, order = torch.sort(logits, descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest set reaching top_p
                logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
            probs = logits.softmax(-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
        if nxt in stop_ids:
            break
        new.append(nxt)
    return new


def generate_text(checkpoint, prompt: str, raw: bool = False, tokenizer: str | Path | None = None, **kw) -> str:
    """The continuation of `prompt` (text only, without the prompt)."""
    from .tokenizer import BOS_ID, EOS_ID, load_tokenizer

    model, ckpt, _ = load_model(checkpoint, raw=raw)
    tok = load_tokenizer(checkpoint_tokenizer_path(ckpt, tokenizer))
    prompt_ids = tok.encode(prompt).ids  # "<s> ..." (the post-processor adds <s>)
    kw.setdefault("stop_ids", (BOS_ID, EOS_ID))
    kw.setdefault("suppress_ids", SUPPRESSED_IDS)
    new = generate_ids(model, prompt_ids, **kw)
    full = tok.decode(prompt_ids + new, skip_special_tokens=True)
    head = tok.decode(prompt_ids, skip_special_tokens=True)
    return full[len(head):] if full.startswith(head) else tok.decode(new, skip_special_tokens=True)


# ---------------------------------------------------------------------------
# CLI


def cmd_export(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    out = export_hf(args.checkpoint, args.out_dir, raw=args.raw, tokenizer=args.tokenizer,
                    mlm_logits_layout=args.mlm_layout, force=args.force, results=args.results or ())
    print(f"exported ({'raw' if args.raw else 'EMA if present'} weights, masked-LM logits {args.mlm_layout}) "
          f"in {time.perf_counter() - t0:.1f}s -> {out}")
    print(f"load with: AutoModelForCausalLM.from_pretrained('{out}', trust_remote_code=True)")


def cmd_import_hf(args: argparse.Namespace) -> None:
    path = import_hf(args.dir, args.out_run_dir)
    print(f"imported {args.dir} -> {path}")


def cmd_generate(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise GPTBertError("--max-new-tokens must be >= 1")
    if args.temperature <= 0:
        raise GPTBertError("--temperature must be > 0")
    if args.repetition_penalty <= 0:
        raise GPTBertError("--repetition-penalty must be > 0")
    if not 0 < args.top_p <= 1:
        raise GPTBertError("--top-p must be in (0, 1]")
    if args.top_k < 0:
        raise GPTBertError("--top-k must be >= 0")
    from .tokenizer import BOS_ID, EOS_ID

    text = generate_text(
        args.checkpoint, args.prompt, raw=args.raw, tokenizer=args.tokenizer,
        max_new_tokens=args.max_new_tokens, greedy=not args.sample, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        stop_ids=() if args.no_stop else (BOS_ID, EOS_ID), seed=args.seed,
    )
    sys.stdout.write(args.prompt + text + "\n")


def add_hf_parsers(subparsers) -> None:
    """Register `export`, `import-hf` and `generate` on the `gptbert` sub-command parser."""
    s = subparsers.add_parser("export", help="write a Hugging Face folder (trust_remote_code) for a checkpoint")
    s.add_argument("checkpoint", help="run folder, checkpoints/ folder or checkpoints/step_N folder")
    s.add_argument("out_dir", help="output folder (must be new or empty unless --force)")
    s.add_argument("--raw", action="store_true", help="export the trained weights instead of the EMA weights")
    s.add_argument("--tokenizer", help="tokenizer.json (default: the one named in the checkpoint's config)")
    s.add_argument("--mlm-layout", choices=("aligned", "mntp"), default="aligned",
                   help="AutoModelForMaskedLM logits: aligned (row i scores token i; minicons, hf-mlm, "
                        "BabyLM --backend mlm) or mntp (raw GPT-BERT, row i scores token i+1; BabyLM --backend mntp)")
    s.add_argument("--results", action="append", metavar="RESULTS_JSON",
                   help="results.json of `gptbert eval` / `gptbert finetune` to list in the model card "
                        "(repeatable; results.json files in the run folder are found by themselves)")
    s.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    s.set_defaults(fn=cmd_export)

    s = subparsers.add_parser("import-hf", help="convert an official GPT-BERT HF folder into a checkpoint of ours")
    s.add_argument("dir", help="folder with config.json, pytorch_model.bin or model.safetensors, tokenizer.json")
    s.add_argument("out_run_dir", help="run folder to create (gets tokenizer.json and checkpoints/step_0000000)")
    s.set_defaults(fn=cmd_import_hf)

    s = subparsers.add_parser("generate", help="continue a prompt with a checkpoint (causal mode)")
    s.add_argument("checkpoint", help="run folder, checkpoints/ folder or checkpoints/step_N folder")
    s.add_argument("prompt", help="text to continue")
    s.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate at most (default: 50)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--greedy", dest="sample", action="store_false", help="pick the most likely token (default)")
    mode.add_argument("--sample", dest="sample", action="store_true", help="sample from the distribution")
    s.set_defaults(sample=False)
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    s.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens only (0 = all)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0 = off)")
    s.add_argument("--repetition-penalty", type=float, default=1.5,
                   help="CTRL-style penalty on tokens already present (default: 1.5, as the paper recommends; 1 = off)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    s.add_argument("--no-stop", action="store_true", help="do not stop at <s> / </s> (document boundaries)")
    s.add_argument("--raw", action="store_true", help="use the trained weights instead of the EMA weights")
    s.add_argument("--tokenizer", help="tokenizer.json (default: the one named in the checkpoint's config)")
    s.set_defaults(fn=cmd_generate)


__all__ = [
    "SUPPRESSED_IDS",
    "add_hf_parsers",
    "apply_repetition_penalty",
    "build_hf_config",
    "checkpoint_tokenizer_path",
    "convert_official_state_dict",
    "export_hf",
    "export_sequence_classifier",
    "generate_ids",
    "generate_text",
    "hf_config_dict",
    "hf_fast_tokenizer",
    "import_hf",
    "load_model",
    "model_card",
    "model_config_from_hf",
    "official_state_dict",
    "write_official_layout",
]
