"""Load a trained checkpoint (EMA weights by default) and its tokenizer for evaluation."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import GPTBertError

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_eval_dir() -> Path:
    """`<repo>/../shared/data/eval`, where the BabyLM evaluation data lives on this machine."""
    return REPO_ROOT.parent / "shared" / "data" / "eval"


def _tokenizer_candidates(ck: dict[str, Any]) -> list[Path]:
    """Where a run's tokenizer may be: config train.tokenizer, next to train.data, next to the run."""
    cfg = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    step_dir = Path(ck["path"])
    run_dir = step_dir.parent.parent if step_dir.parent.name == "checkpoints" else step_dir.parent
    out: list[Path] = []

    def add(p: str | Path | None, bases: tuple[Path, ...] = ()) -> None:
        if not p:
            return
        p = Path(p)
        if p.is_absolute():
            out.append(p)
        else:
            out.append(p)  # relative to the working directory (how the run was started)
            out.extend(b / p for b in bases)

    add(train.get("tokenizer"), (run_dir, run_dir.parent))
    data = train.get("data")
    if data:
        for rel in (Path(data) / "tokenizer.json", Path(data).parent / "tokenizer.json"):
            add(rel, (run_dir, run_dir.parent))
    for d in (step_dir, run_dir, run_dir.parent):
        out.append(d / "tokenizer.json")
    seen, uniq = set(), []
    for p in out:
        key = str(p)
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


def find_tokenizer(ck: dict[str, Any], explicit: str | Path | None = None) -> Path:
    """The tokenizer of a loaded checkpoint: `explicit`, else the run's config, else files next to the run."""
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise GPTBertError(f"{p}: tokenizer file does not exist")
        return p
    cands = _tokenizer_candidates(ck)
    for p in cands:
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in cands[:4])
    raise GPTBertError(f"{ck['path']}: checkpoint's tokenizer not found (looked at {looked}, ...); pass --tokenizer PATH")


def load_for_eval(checkpoint: str | Path, tokenizer: str | Path | None = None, ema: bool = True,
                  device: str | torch.device = "cpu", return_info: bool = False):
    """(model, tokenizer) from a run dir, checkpoints/ dir or step dir, ready for evaluation.

    ema=True loads the EMA weights (the paper evaluates those) and falls back to
    the raw weights, with a warning, when the checkpoint has none. The model is
    in eval mode on `device`. With return_info=True a third element describes
    what was loaded (paths, weights used, step).
    """
    from ..checkpoint import load_checkpoint, load_model_weights
    from ..config import ModelConfig
    from ..model import GPTBERT
    from ..tokenizer import load_tokenizer

    ck = load_checkpoint(checkpoint)
    cfg_dict = ck.get("config") or {}
    if not isinstance(cfg_dict, dict) or not isinstance(cfg_dict.get("model"), dict):
        raise GPTBertError(f"{ck['path']}: config.yaml has no 'model' section")
    try:
        cfg = ModelConfig(**cfg_dict["model"])
    except TypeError as e:
        raise GPTBertError(f"{ck['path']}: config.yaml model section does not match ModelConfig ({e})") from None
    tok_path = find_tokenizer(ck, tokenizer)
    tok = load_tokenizer(tok_path)
    if tok.get_vocab_size() > cfg.vocab_size:
        raise GPTBertError(f"{tok_path}: tokenizer has {tok.get_vocab_size()} tokens but the checkpoint's model only "
                           f"{cfg.vocab_size} (wrong tokenizer for {ck['path']}?)")
    model = GPTBERT(cfg)
    weights = "raw"
    if ema and ck.get("ema") is not None:
        load_model_weights(model, ck["ema"], Path(ck["path"]) / "ema.safetensors")
        weights = "ema"
    else:
        if ema:
            warnings.warn(f"{ck['path']}: no EMA weights saved; evaluating the raw weights")
        load_model_weights(model, ck["model"], Path(ck["path"]) / "model.safetensors")
    model.to(device).eval()
    if return_info:
        info = {"checkpoint": str(ck["path"]), "tokenizer": str(tok_path), "weights": weights,
                "step": (ck.get("meta") or {}).get("step"), "model": cfg_dict["model"]}
        return model, tok, info
    return model, tok
