"""The one loader: a trained model and its tokenizer, from whatever folder the user has.

Every command that takes a model (eval, finetune, export, generate, submission)
calls `load`, so they all accept the same things:

  - a `gptbert quickstart --out` folder (the run is in its `train/` subfolder)
  - a run folder (`--train.out_dir`), or its `checkpoints/` folder: the newest
    complete checkpoint (`checkpoints/latest`)
  - one step folder, `checkpoints/step_XXXXXXX` (or a milestone `chck_NM`)
  - a Hugging Face folder: one of our exports or an officially released
    GPT-BERT (config.json + model.safetensors / pytorch_model.bin + tokenizer.json)

EMA weights are used when the checkpoint has them (the paper evaluates and
releases those) unless `weights="raw"`; a checkpoint without EMA weights falls
back to the raw ones with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from .checkpoint import EMA_FILE, MODEL_FILE, Checkpoint, load_checkpoint, load_model_weights
from .convert.import_hf import is_hf_folder, read_hf_folder
from .errors import GPTBertError, input_error
from .model import GPTBERT
from .tokenizer import load_tokenizer

WEIGHTS = ("ema", "raw")  # what `load` may be asked for; an HF folder has one set ("hf")


@dataclass
class Pretrained:
    model: GPTBERT  # in eval mode, on the requested device
    tokenizer: Tokenizer
    tokenizer_path: Path
    weights: str  # "ema" or "raw"
    source: Path  # the step folder or the HF folder that was read
    checkpoint: Checkpoint | None  # None for an HF folder

    @property
    def step(self) -> int | None:
        return self.checkpoint.step if self.checkpoint is not None else None

    def info(self) -> dict[str, Any]:
        """What was loaded, for results.json and model cards."""
        return {"checkpoint": str(self.source), "tokenizer": str(self.tokenizer_path), "weights": self.weights,
                "step": self.step, "tokens_seen": self.checkpoint.tokens_seen if self.checkpoint else None,
                "model": {k: v for k, v in vars(self.model.config).items()}}


def tokenizer_candidates(ck: Checkpoint) -> list[Path]:
    """Where a run's tokenizer may be, in order: the config's train.tokenizer, <train.data>/tokenizer.json,
    then tokenizer.json next to the step folder, the run folder and the folder above it (quickstart).

    A relative path in the config is tried as given (relative to where the run was started), then
    relative to the run folder and to the folder above it, so a run can be used from anywhere."""
    train = ck.config.get("train") if isinstance(ck.config.get("train"), dict) else {}
    run_dir = ck.run_dir
    out: list[Path] = []

    def add(p: str | Path) -> None:
        p = Path(p)
        out.append(p)
        if not p.is_absolute():
            out.extend(base / p for base in (run_dir, run_dir.parent))

    if train.get("tokenizer"):
        add(train["tokenizer"])
    if train.get("data"):
        add(Path(train["data"]) / "tokenizer.json")
    out.extend(d / "tokenizer.json" for d in (ck.path, run_dir, run_dir.parent))
    return list(dict.fromkeys(out))  # unique, in order


def find_tokenizer(ck: Checkpoint, explicit: str | Path | None = None) -> Path:
    """The tokenizer of a loaded checkpoint: `explicit`, else the first candidate that exists."""
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise input_error(p, "tokenizer file does not exist")
        return p
    candidates = tokenizer_candidates(ck)
    for p in candidates:
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in candidates[:4])
    raise input_error(ck.path, f"checkpoint's tokenizer not found (looked at {looked}, ...); pass --tokenizer PATH")


def _load_tokenizer_for(tok_path: Path, vocab_size: int, source: Path) -> Tokenizer:
    """A tokenizer with more tokens than the model's embedding cannot belong to it (fewer is allowed:
    a model may reserve unused rows)."""
    tok = load_tokenizer(tok_path)
    if tok.get_vocab_size() > vocab_size:
        raise input_error(tok_path, f"tokenizer has {tok.get_vocab_size()} tokens but the model only {vocab_size} "
                                    f"(wrong tokenizer for {source}?)")
    return tok


def load(path: str | Path, *, weights: str = "ema", tokenizer: str | Path | None = None,
         device: str | torch.device = "cpu") -> Pretrained:
    """Model + tokenizer from a run, checkpoint, step or HF folder (see the module docstring)."""
    if weights not in WEIGHTS:
        raise GPTBertError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    path = Path(path)
    if is_hf_folder(path):
        hf = read_hf_folder(path)
        model = GPTBERT(hf.config)
        load_model_weights(model, hf.state, hf.weights_path)
        tok_path = Path(tokenizer) if tokenizer else hf.tokenizer_path
        tok = _load_tokenizer_for(tok_path, hf.config.vocab_size, path)
        return Pretrained(model.to(device).eval(), tok, tok_path, "hf", path, None)

    ck = load_checkpoint(path)
    mc = ck.model_config()
    tok_path = find_tokenizer(ck, tokenizer)
    tok = _load_tokenizer_for(tok_path, mc.vocab_size, ck.path)
    use_ema = weights == "ema" and ck.ema is not None
    if weights == "ema" and ck.ema is None and not ck.state.get("imported"):  # imported: released weights as they are
        warnings.warn(f"{ck.path}: no EMA weights saved; using the raw weights")
    model = GPTBERT(mc)
    load_model_weights(model, ck.ema if use_ema else ck.model, ck.path / (EMA_FILE if use_ema else MODEL_FILE))
    return Pretrained(model.to(device).eval(), tok, tok_path, "ema" if use_ema else "raw", ck.path, ck)
