"""The model card (README.md) written into every export folder.

It lists what the checkpoint was trained on and for how long, how to load
each head, which masked-LM logit layout the folder uses and which BabyLM
pipeline backend reads it, and the numbers of every results.json of
`gptbert eval` / `gptbert finetune` found next to the run (or passed with
`--results`). The results files are read as data: any layout that is not
ours contributes its top-level numbers only. Numbers from a results file with a
non-null "subset" (`eval --limit`, `finetune --max-train-examples` /
`--max-eval-examples`) carry a visible "(subset: ...)" marker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import input_error
from ..hf import MLM_LAYOUTS, PIPELINE_BACKEND
from ..pretrained import Pretrained


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
    subset = data.get("subset")  # `eval --limit`, `finetune --max-*-examples`: not full-task numbers
    if subset:
        rows = [(what, metric, f"{value} (subset: {subset})") for what, metric, value in rows]
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


def model_card(pre: Pretrained, mlm_logits_layout: str, results: list[Path] | tuple = ()) -> str:
    """README.md of an export: what was trained, on what, how to load it, and the results found."""
    ck = pre.checkpoint
    cfg = ck.config if ck is not None else {}
    train = cfg.get("train") or {}
    obj = cfg.get("objective") or {}
    meta = ck.meta if ck is not None else {}
    model, which, tok_path = pre.model, pre.weights, pre.tokenizer_path
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
    eval_block = _eval_block(pre.source, results)
    other = [x for x in MLM_LAYOUTS if x != mlm_logits_layout][0]
    backend = PIPELINE_BACKEND[mlm_logits_layout]
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
export` from `{pre.source}` ({which} weights).

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

The folder carries its own modeling code: load it with `trust_remote_code=True`.
It loads under transformers 4.51+ (what the BabyLM 2025 evaluation pipeline
pins) and 5.x.

```python
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(PATH, trust_remote_code=True)
lm = AutoModelForCausalLM.from_pretrained(PATH, trust_remote_code=True)
out = lm.generate(**tok("The cat", return_tensors="pt"), max_new_tokens=30, repetition_penalty=1.5)
print(tok.decode(out[0], skip_special_tokens=True))

mlm = AutoModelForMaskedLM.from_pretrained(PATH, trust_remote_code=True)  # {mlm_logits_layout} layout
```

| Auto class | behaviour |
|---|---|
| `AutoModelForCausalLM` | causal attention; logits at position i predict token i+1; `generate()` with a KV cache |
| `AutoModelForMaskedLM` | bidirectional; logits in the **{mlm_logits_layout}** layout (see below) |
| `AutoModel` | bidirectional encoder, `last_hidden_state`; `attention_mask` (batch, seq) with 1 = token |
| `AutoModelForSequenceClassification` | `<s>`-token state -> LN-Linear-GELU-LN-Dropout-Linear head (`head.*`, new weights) |

Every head accepts `position_ids`: attention uses the relative position
position_ids[i] - position_ids[j], so texts packed into one row (positions
restarting at 0, a block-diagonal attention mask) score exactly as each text
alone.

### Masked-LM logit layout and the BabyLM 2025 pipeline

GPT-BERT predicts a masked token at position i from the output at position
i-1 (masked next-token prediction). `config.mlm_logits_layout` (in
config.json) says what `AutoModelForMaskedLM` returns:

- `mntp` (the export default, and what the officially released GPT-BERT
  checkpoints return): logit row i scores token i+1. BabyLM 2025 pipeline:
  `--backend mntp`.
- `aligned`: logit row i scores token i, the usual masked-LM convention; row 0
  (which GPT-BERT does not predict) is a uniform distribution. BabyLM 2025
  pipeline: `--backend mlm`; minicons `MaskedLMScorer`.

This folder uses the **{mlm_logits_layout}** layout: run the BabyLM 2025 pipeline
(`evaluation_pipeline.sentence_zero_shot.run`) with `--backend {backend}` for
masked scoring, or `--backend causal` for causal scoring. The other masked
backend reads the wrong logit rows and gives wrong (finite) scores. For the
{other} layout, pass `mlm_logits_layout="{other}"` to `from_pretrained`.

### Other evaluation tools

- lm-evaluation-harness 0.4.13, through the adapter in the `gptbert` package:
  `python -m gptbert.eval.lm_eval_adapter --model gpt-bert --model_args
  pretrained=PATH,mode=causal --tasks ...` (`mode=mntp` for the
  pseudo-log-likelihood, `mode=fused` for their sum).
- minicons `IncrementalLMScorer` (causal): score with `bos_token=False`; the
  tokenizer already adds `<s>`, and `bos_token=True` adds a second one, which
  changes the scores.
- minicons `MaskedLMScorer` (0.3.39) works under transformers 4.x only (under
  5.x it calls the removed `batch_encode_plus`), and needs the aligned layout:
  `MaskedLMScorer(PATH, "cpu", trust_remote_code=True, mlm_logits_layout="aligned")`.

The tokenizer needs no custom code. Under transformers 4.x,
`AutoTokenizer.from_pretrained(PATH)` loads it as it is; transformers 5.x
first reads the model's config, and asks whether to run the folder's code
unless `trust_remote_code` is given (`False` is enough for the tokenizer).

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

