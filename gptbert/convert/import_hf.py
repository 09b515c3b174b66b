"""Import a Hugging Face GPT-BERT folder: the official releases or one of our exports.

The officially released layout (`ltg/gpt-bert-babylm-small/-base`) is
config.json + pytorch_model.bin or model.safetensors + tokenizer.json, with
the same parameter names as ours plus a stored `position_indices` buffer per
attention layer and the output matrix saved next to the (identical) word
embedding. `read_hf_folder` turns such a folder (or our own export) into a
ModelConfig and a state dict of ours; `gptbert.pretrained.load` uses it to
evaluate an HF folder directly, and `import_hf` writes it as a checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from ..checkpoint import save_checkpoint
from ..config import ModelConfig, RunConfig
from ..errors import input_error
from ..model import GPTBERT
from ..tokenizer import check_vocab, load_tokenizer
from .hf_config import EMBED_KEY, TIED_KEY, model_config_from_hf

OFFICIAL_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hf_folder(path: Path) -> bool:
    """A folder with config.json and one of the weight files (not one of our run folders)."""
    return path.is_dir() and (path / "config.json").is_file() and any((path / f).is_file() for f in OFFICIAL_WEIGHT_FILES)


def read_hf_weights(src: Path) -> tuple[dict[str, torch.Tensor], Path]:
    for name in OFFICIAL_WEIGHT_FILES:
        f = src / name
        if not f.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
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


def convert_official_state_dict(state: Mapping[str, torch.Tensor], model: GPTBERT, source: Path) -> dict[str, torch.Tensor]:
    """Official / exported HF weights -> our state dict, checked against `model` (a GPTBERT) key by key."""
    # A wrapper prefix ("model.", "bert.", ...) is removed when every weight carries it.
    prefix = ""
    if EMBED_KEY not in state:
        hits = [k[: -len(EMBED_KEY)] for k in state if k.endswith("." + EMBED_KEY)]
        if len(hits) != 1:
            raise input_error(source, f"no '{EMBED_KEY}' weight (not a GPT-BERT / LTG-BERT checkpoint?)")
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
    if TIED_KEY in out:
        head, emb = out.pop(TIED_KEY), out[EMBED_KEY]
        if head.shape != emb.shape or not torch.allclose(head, emb, rtol=0, atol=1e-6):
            raise input_error(source, f"'{TIED_KEY}' differs from '{EMBED_KEY}': GPT-BERT ties the output "
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
        if k not in out and k != TIED_KEY:
            raise input_error(source, f"missing weight '{prefix}{k}'")
    return out


@dataclass
class HFFolder:
    config: ModelConfig
    state: dict[str, torch.Tensor]  # our names, fp32, checked against the model
    weights_path: Path
    tokenizer_path: Path
    hf_config: dict[str, Any]


def read_hf_folder(src_dir: str | Path) -> HFFolder:
    """Read and check config.json, the weights and tokenizer.json of an HF GPT-BERT folder."""
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
    tok_path = src / "tokenizer.json"
    check_vocab(tok_path, load_tokenizer(tok_path), mc.vocab_size)
    state, weights_path = read_hf_weights(src)
    ours = convert_official_state_dict(state, GPTBERT(mc), weights_path)
    return HFFolder(mc, ours, weights_path, tok_path, hf_cfg)


def import_hf(src_dir: str | Path, out_run_dir: str | Path) -> Path:
    """Convert an official (or exported) HF folder into a checkpoint of ours; returns the checkpoint folder.

    OUT_RUN_DIR gets tokenizer.json and checkpoints/step_0000000/ (step 0, no
    EMA, no optimizer state); `gptbert eval/generate OUT_RUN_DIR` then work.
    """
    hf = read_hf_folder(src_dir)
    out = Path(out_run_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_dst = out / "tokenizer.json"
    shutil.copyfile(hf.tokenizer_path, tok_dst)
    run = RunConfig(model=hf.config)
    run.train.tokenizer = str(tok_dst.resolve())
    run.train.out_dir = str(out.resolve())
    run.train.data = ""
    config = run.to_dict()
    config["source"] = {"imported_from": str(Path(src_dir).resolve()), "weights": hf.weights_path.name,
                        "architectures": hf.hf_config.get("architectures"), "time": time.time()}
    return save_checkpoint(out, step=0, tokens_seen=0, model_state=hf.state, config=config,
                           train_state={"imported": True}, keep_last=None)
