"""(Super)GLUE fine-tuning of a pretrained GPT-BERT (paper section 5, Table 4).

Classifier: the final hidden state of the first token (`<s>`), through
LayerNorm -> Linear(d, d) -> GELU -> LayerNorm -> Dropout(0.1) -> Linear(d, labels)
(LayerNorms without parameters, as in the official `ClassifierHead`).
Attention is bidirectional, padding is masked out. Inputs are `<s> A` or
`<s> A <s> B` (the tokenizer's pair template), truncated longest-first to
`max_length` (512). AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.01 on
matrices only), linear warmup then cosine decay to 0.1x, bf16 autocast by
default. After every epoch the model is scored on the validation set; the best
epoch by the task's metric is kept (BabyLM's "valid" split is also its test
split, paper footnote 4 - the selection is the paper's protocol, not a clean
held-out estimate).

Defaults are the paper's Table 4 for the model's size (hidden < 768: the 10M
column, else the 100M column); `--epochs/--lr/--batch-size/--warmup`
override them.

Tasks and data (BabyLM 2024 `glue_filtered` files, `<task>.train.jsonl` /
`<task>.valid.jsonl`):
  cola (MCC) sst2 mrpc (F1) qqp (F1) mnli (evaluated on mnli and mnli-mm)
  qnli rte boolq multirc wsc (accuracy)
MultiRC trains on the SuperGLUE training file (nested passages, flattened to
one row per answer: "Question: q Answer: a" paired with the paragraph) and is
scored on BabyLM's multirc.valid. WSC input: 'Does "{span2}" refer to
"{span1}" in this passage?' paired with the text. Tasks without a training
file (here BoolQ, QNLI, SST-2) are reported as unavailable.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import paths
from ..errors import GPTBertError
from ..io import read_jsonl
from ..precision import autocast
from ..model import PredictionHead, attention_mask
from ..tokenizer import BOS_ID, PAD_ID
from .metrics import METRICS, glue_score

# ---------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class GlueTask:
    name: str
    fields: tuple[str, ...]  # required jsonl fields besides "label"
    build: Callable[[dict], tuple[str, str | None]]
    num_labels: int
    metric: str
    hparam_group: str  # row of Table 4
    valid: tuple[str, ...]  # evaluation sets (task names of the valid files)


def _pair(a: str, b: str | None = None):
    return lambda r: (r[a], r[b] if b else None)


def _wsc(r: dict) -> tuple[str, str]:
    return f'Does "{r["span2_text"]}" refer to "{r["span1_text"]}" in this passage?', r["text"]


def _multirc(r: dict) -> tuple[str, str]:
    return f"Question: {r['question']} Answer: {r['answer']}", r["paragraph"]


GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", ("sentence",), _pair("sentence"), 2, "mcc", "small", ("cola",)),
    GlueTask("sst2", ("sentence",), _pair("sentence"), 2, "accuracy", "large", ("sst2",)),
    GlueTask("mrpc", ("sentence1", "sentence2"), _pair("sentence1", "sentence2"), 2, "f1", "small", ("mrpc",)),
    GlueTask("qqp", ("question1", "question2"), _pair("question1", "question2"), 2, "f1", "large", ("qqp",)),
    GlueTask("mnli", ("premise", "hypothesis"), _pair("premise", "hypothesis"), 3, "accuracy", "large", ("mnli", "mnli-mm")),
    GlueTask("qnli", ("question", "sentence"), _pair("question", "sentence"), 2, "accuracy", "large", ("qnli",)),
    GlueTask("rte", ("sentence1", "sentence2"), _pair("sentence1", "sentence2"), 2, "accuracy", "small", ("rte",)),
    GlueTask("boolq", ("question", "passage"), _pair("question", "passage"), 2, "accuracy", "large", ("boolq",)),
    GlueTask("multirc", ("paragraph", "question", "answer"), _multirc, 2, "accuracy", "multirc", ("multirc",)),
    GlueTask("wsc", ("text", "span1_text", "span2_text"), _wsc, 2, "accuracy", "wsc", ("wsc",)),
]}

# Paper Table 4: (epochs, lr, batch size, warmup proportion); weight decay 0.01 everywhere.
HPARAMS: dict[str, dict[str, tuple[int, float, int, float]]] = {
    "10M": {"large": (3, 1e-4, 16, 0.06), "small": (10, 1e-4, 16, 0.06), "multirc": (3, 1e-4, 16, 0.06),
            "wsc": (20, 3e-4, 32, 0.00)},
    "100M": {"large": (3, 1e-4, 32, 0.06), "small": (10, 1e-4, 32, 0.06), "multirc": (3, 1e-4, 32, 0.06),
             "wsc": (20, 3e-4, 16, 0.06)},
}


@dataclass
class Example:
    a: str
    b: str | None
    label: int


def read_examples(path: Path, task: GlueTask) -> list[Example]:
    """Rows of a BabyLM GLUE jsonl file; SuperGLUE-format MultiRC training files are flattened."""
    out: list[Example] = []
    for lineno, rec in read_jsonl(path):
        if task.name == "multirc" and isinstance(rec.get("passage"), dict):
            out.extend(_flatten_superglue_multirc(rec, path, lineno))
            continue
        for k in (*task.fields, "label"):
            if k not in rec:
                raise GPTBertError(f"{path}:{lineno}: missing field '{k}' ({task.name} needs {', '.join(task.fields)}, label)")
        label = rec["label"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < task.num_labels:
            raise GPTBertError(f"{path}:{lineno}: label {label!r} is not in 0..{task.num_labels - 1}")
        a, b = task.build(rec)
        out.append(Example(str(a), None if b is None else str(b), label))
    if not out:
        raise GPTBertError(f"{path}: no examples")
    return out


def _flatten_superglue_multirc(rec: dict, path: Path, lineno: int) -> list[Example]:
    try:
        text = rec["passage"]["text"]
        rows = []
        for q in rec["passage"]["questions"]:
            for a in q["answers"]:
                rows.append(Example(f"Question: {q['question']} Answer: {a['text']}", text, int(a["label"])))
        return rows
    except (KeyError, TypeError, ValueError) as e:
        raise GPTBertError(f"{path}:{lineno}: not a SuperGLUE MultiRC passage ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------
# Model


class SequenceClassifier(nn.Module):
    """GPT-BERT encoder + the paper's classification head on the first (`<s>`) token."""

    def __init__(self, backbone: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        cfg = backbone.config
        self.backbone = backbone
        self.head = PredictionHead(cfg.hidden_size, num_labels, dropout, cfg.layer_norm_eps)
        std = math.sqrt(2.0 / (5.0 * cfg.hidden_size))
        for lin in (self.head.nonlinearity[1], self.head.nonlinearity[5]):
            nn.init.trunc_normal_(lin.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(lin.bias)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.backbone.encode(input_ids, mask)[:, 0]
        return self.head(h)


def encode_examples(tok, examples: Sequence[Example], max_length: int) -> list[list[int]]:
    """`<s> A` or `<s> A <s> B`, truncated longest-first to max_length tokens."""
    a_ids = [e.ids for e in tok.encode_batch([ex.a for ex in examples], add_special_tokens=False)]
    bs = [ex.b for ex in examples]
    b_enc = tok.encode_batch([b if b is not None else "" for b in bs], add_special_tokens=False)
    out = []
    for a, b_text, b in zip(a_ids, bs, b_enc):
        b = b.ids if b_text is not None else None
        budget = max_length - (2 if b is not None else 1)
        a = list(a)
        b = list(b) if b is not None else None
        while len(a) + (len(b) if b is not None else 0) > budget:
            if b is not None and len(b) >= len(a):
                b.pop()
            else:
                a.pop()
        out.append([BOS_ID, *a] + ([BOS_ID, *b] if b is not None else []))
    return out


def _collate(seqs: Sequence[list[int]], device) -> tuple[torch.Tensor, torch.Tensor | None]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), PAD_ID, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs])
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    if bool((lengths == T).all()):
        return ids.to(device), None
    seg = torch.where(torch.arange(T)[None, :] < lengths[:, None], 0, -1)
    return ids.to(device), attention_mask(seg, False).to(device)


@torch.no_grad()
def predict(model: SequenceClassifier, seqs: Sequence[list[int]], batch_size: int, device, precision: str,
            max_tokens: int = 16384) -> np.ndarray:
    """Argmax labels, in input order (batches are length-sorted internally)."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    preds = np.empty(len(seqs), dtype=np.int64)
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and j - i < 4 * batch_size and (j - i + 1) * len(seqs[order[j]]) <= max_tokens:
            j += 1
        idx = order[i:j]
        ids, mask = _collate([seqs[k] for k in idx], device)
        with autocast(device, precision):
            logits = model(ids, mask)
        preds[idx] = logits.float().argmax(-1).cpu().numpy()
        i = j
    return preds


def _lr_factor(step: int, total: int, warmup: int, min_factor: float = 0.1) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------------------
# Fine-tuning one task


@dataclass
class FinetuneConfig:
    epochs: int | None = None  # None: Table 4
    lr: float | None = None
    batch_size: int | None = None
    warmup: float | None = None
    weight_decay: float = 0.01
    max_length: int = 512
    dropout: float = 0.1
    grad_clip: float = 2.0
    precision: str = "auto"  # bf16 where the hardware has bf16 matmuls, else fp32 (gptbert.precision)
    seed: int = 42
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    track: str = "auto"  # "auto", "10M" or "100M": the column of Table 4
    progress: bool = True
    extra: dict = field(default_factory=dict)


def resolve_hparams(task: GlueTask, hidden_size: int, cfg: FinetuneConfig) -> dict:
    track = cfg.track if cfg.track != "auto" else ("100M" if hidden_size >= 768 else "10M")
    if track not in HPARAMS:
        raise GPTBertError(f"--track must be auto, 10M or 100M, got {cfg.track!r}")
    epochs, lr, bs, warmup = HPARAMS[track][task.hparam_group]
    return {
        "track": track,
        "epochs": cfg.epochs if cfg.epochs is not None else epochs,
        "lr": cfg.lr if cfg.lr is not None else lr,
        "batch_size": cfg.batch_size if cfg.batch_size is not None else bs,
        "warmup": cfg.warmup if cfg.warmup is not None else warmup,
        "weight_decay": cfg.weight_decay,
        "max_length": cfg.max_length,
        "precision": cfg.precision,
        "seed": cfg.seed,
    }


def _subsample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return examples
    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(examples)), n))
    return [examples[i] for i in idx]


def finetune_task(backbone: nn.Module, tok, task: GlueTask, train: list[Example],
                  valid: dict[str, list[Example]], cfg: FinetuneConfig, device="cpu") -> dict:
    """Fine-tune a copy of `backbone` on one task; returns metrics, history and predictions.

    valid: evaluation set name -> examples (the first one selects the best epoch).
    """
    device = torch.device(device)
    hp = resolve_hparams(task, backbone.config.hidden_size, cfg)
    if hp["epochs"] < 1 or hp["batch_size"] < 1 or hp["lr"] <= 0:
        raise GPTBertError(f"{task.name}: epochs and batch size must be >= 1 and lr > 0")
    torch.manual_seed(hp["seed"])
    rng = random.Random(hp["seed"])
    train = _subsample(train, cfg.max_train_examples, hp["seed"])
    valid = {k: _subsample(v, cfg.max_eval_examples, hp["seed"]) for k, v in valid.items()}
    train_seqs = encode_examples(tok, train, hp["max_length"])
    train_labels = torch.tensor([e.label for e in train], dtype=torch.long)
    valid_seqs = {k: encode_examples(tok, v, hp["max_length"]) for k, v in valid.items()}
    valid_gold = {k: np.array([e.label for e in v]) for k, v in valid.items()}

    model = SequenceClassifier(copy.deepcopy(backbone), task.num_labels, cfg.dropout).to(device)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=hp["lr"], betas=(0.9, 0.999), eps=1e-8)
    bs = hp["batch_size"]
    steps_per_epoch = math.ceil(len(train_seqs) / bs)
    total = steps_per_epoch * hp["epochs"]
    warmup = int(hp["warmup"] * total)
    metric_fn = METRICS[task.metric]
    primary = next(iter(valid))
    best = (-math.inf, -1, None)
    history = []
    step = 0
    t0 = time.perf_counter()
    for epoch in range(1, hp["epochs"] + 1):
        model.train()
        order = list(range(len(train_seqs)))
        rng.shuffle(order)
        losses = []
        bar = tqdm(range(0, len(order), bs), desc=f"{task.name} epoch {epoch}/{hp['epochs']}", leave=False,
                   disable=not cfg.progress, dynamic_ncols=True)
        for s in bar:
            idx = order[s:s + bs]
            ids, mask = _collate([train_seqs[i] for i in idx], device)
            for g in opt.param_groups:
                g["lr"] = hp["lr"] * _lr_factor(step, total, warmup)
            with autocast(device, hp["precision"]):
                logits = model(ids, mask)
            loss = F.cross_entropy(logits.float(), train_labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        bar.close()
        scores = {}
        for name, seqs in valid_seqs.items():
            pred = predict(model, seqs, bs, device, hp["precision"])
            scores[name] = 100.0 * metric_fn(valid_gold[name], pred)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None, "valid": scores})
        if scores[primary] > best[0]:
            best = (scores[primary], epoch, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    results = {}
    predictions = {}
    for name, seqs in valid_seqs.items():
        pred = predict(model, seqs, bs, device, hp["precision"])
        gold = valid_gold[name]
        results[name] = {
            "metric": task.metric,
            "value": 100.0 * metric_fn(gold, pred),
            "accuracy": 100.0 * METRICS["accuracy"](gold, pred),
            "n": int(len(gold)),
        }
        predictions[name] = {"predictions": [{"id": f"{name}_{i}", "pred": int(p)} for i, p in enumerate(pred)]}
    return {
        "task": task.name,
        "best_epoch": best[1],
        "hparams": hp,
        "n_train": len(train_seqs),
        "seconds": time.perf_counter() - t0,
        "results": results,
        "history": history,
        "predictions": predictions,
    }


# ---------------------------------------------------------------------------
# Several tasks


def task_files(task: GlueTask, glue_dir: Path, multirc_train: Path | None) -> tuple[Path | None, dict[str, Path]]:
    """(training file, {eval set: valid file}); (None, {}) when there is no training file.

    A task with a training file but no validation file is an error.
    """
    if task.name == "multirc":
        train = multirc_train if multirc_train is not None else glue_dir / "multirc.train.jsonl"
    else:
        train = glue_dir / f"{task.name}.train.jsonl"
    if not train.is_file():
        return None, {}
    valid = {}
    for v in task.valid:
        p = glue_dir / f"{v}.valid.jsonl"
        if p.is_file():
            valid[v] = p
        elif v == task.valid[0]:
            raise GPTBertError(f"{p}: validation file for {task.name} does not exist")
    return train, valid


def run_finetune(backbone: nn.Module, tok, tasks: Sequence[str], cfg: FinetuneConfig, *, glue_dir: Path | None = None,
                 multirc_train: Path | None = None, device="cpu", log=print) -> dict:
    """Fine-tune on each task that has a training file; unavailable ones are listed, not failed."""
    glue_dir = paths.glue_dir(glue_dir)
    # The SuperGLUE MultiRC training file sits next to glue_filtered/ in the BabyLM eval folder.
    if multirc_train is None and (d := glue_dir.parent / "superglue_original" / "multirc.train.jsonl").is_file():
        multirc_train = d
    if not glue_dir.is_dir():
        raise GPTBertError(f"{glue_dir}: GLUE data folder does not exist (pass --glue-dir)")
    out = {"tasks": {}, "unavailable": {}, "scores": {}}
    for name in tasks:
        if name not in GLUE_TASKS:
            raise GPTBertError(f"unknown GLUE task '{name}' (choose from {', '.join(GLUE_TASKS)}, or 'all')")
        task = GLUE_TASKS[name]
        train_path, valid_paths = task_files(task, glue_dir, multirc_train)
        if train_path is None:
            why = "no training file" + (f" ({multirc_train})" if name == "multirc" and multirc_train
                                        else f" ({glue_dir / (name + '.train.jsonl')})")
            out["unavailable"][name] = why
            for v in task.valid:
                out["scores"][v] = None
            log(f"{name}: unavailable - {why}")
            continue
        train = read_examples(train_path, task)
        valid = {k: read_examples(p, task) for k, p in valid_paths.items()}
        log(f"{name}: {len(train)} training rows from {train_path}"
            + (f" (using {cfg.max_train_examples})" if cfg.max_train_examples and cfg.max_train_examples < len(train) else ""))
        res = finetune_task(backbone, tok, task, train, valid, cfg, device)
        out["tasks"][name] = res
        for v, r in res["results"].items():
            out["scores"][v] = r["value"]
        vals = ", ".join(f"{v} {r['metric']} {r['value']:.1f}" for v, r in res["results"].items())
        log(f"{name}: best epoch {res['best_epoch']}/{res['hparams']['epochs']}: {vals} ({res['seconds']:.0f}s)")
    out["glue_score"] = glue_score(out["scores"])
    return out
