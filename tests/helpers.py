"""Helpers shared by several test files: presets, sentences, loading, the official released layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file
import torch

from gptbert.convert.hf_config import EMBED_KEY, TIED_KEY, hf_config_dict
from gptbert.model import relative_position_index
from gptbert.pretrained import load

REPO = Path(__file__).resolve().parents[1]

# Sentences written for these tests (no external text).
SENTENCES = [
    "The cat sat on the warm mat.",
    "A small dog barked at the cat!",
    "Where is the dog going?\nHome, I think.",
    "My sister painted the old fence green yesterday.",
    "Two birds sang near the river after lunch.",
    "We carried some bread to the teacher.",
]


def preset_path(name: str) -> Path:
    """The YAML file of a named preset."""
    return REPO / "gptbert" / "configs" / f"{name}.yaml"


def load_model(path, raw: bool = False):
    """(model, checkpoint or None, weights used) through the one loader."""
    pre = load(path, weights="raw" if raw else "ema")
    return pre.model, pre.checkpoint, pre.weights


# ---------------------------------------------------------------------------
# The official released layout (`ltg/gpt-bert-babylm-*`), written from one of our models


def official_state_dict(model) -> dict[str, torch.Tensor]:
    """Our model's weights in the official released layout (as `ltg/gpt-bert-babylm-*` store them)."""
    mc = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd[TIED_KEY] = sd[EMBED_KEY].clone()  # saved separately there
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
        save_file({k: v.contiguous() for k, v in sd.items()}, str(out_dir / "model.safetensors"))
    else:
        torch.save(sd, out_dir / "pytorch_model.bin")
    shutil.copyfile(tokenizer_path, out_dir / "tokenizer.json")
    return out_dir

