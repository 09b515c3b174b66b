"""Typed run configuration: model, objective and training settings.

One resolved `RunConfig` describes a whole pretraining run. It is built from
(1) dataclass defaults, (2) an optional YAML preset (`configs/*.yaml`) and
(3) command-line overrides such as `--train.lr 1e-3`. Every field carries a
`help` string that becomes the `--help` text of the CLI, so the dataclasses
below are the one place where options are documented.

Unknown keys and impossible values are refused with a one-line
`GPTBertError` that names the file (or flag) and the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import GPTBertError, did_you_mean
from .io import atomic_write_text


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help string (shown by `gptbert train --help`)."""
    return field(default=default, metadata={"help": help, **kw})


# ---------------------------------------------------------------------------
# Model (paper section 2, Table 3)


@dataclass
class ModelConfig:
    vocab_size: int = _f(8192, "vocabulary size; must equal the tokenizer's (8192 small, 16384 base)")
    hidden_size: int = _f(384, "width d of the residual stream")
    num_layers: int = _f(12, "transformer layers (each = attention + FFN sub-layer)")
    num_heads: int = _f(6, "attention heads; hidden_size must be divisible by it")
    intermediate_size: int = _f(1280, "GEGLU FFN width (the first projection is 2x this)")
    position_buckets: int = _f(32, "relative-position buckets per direction (63 embeddings in all)")
    max_position: int = _f(512, "largest relative distance told apart; also the longest sequence")
    dropout: float = _f(0.1, "dropout on embeddings, sub-layer outputs and the head")
    attention_dropout: float = _f(0.1, "dropout on attention probabilities and relative embeddings")
    layer_norm_eps: float = _f(1e-5, "LayerNorm epsilon (official configs: 1e-5)")
    # Ablation switches (paper Table 2). The defaults are the paper's model; a switched-off part
    # has no parameters, so its state-dict keys are absent.
    attention_gate: bool = _f(
        True, "attention gate: (softmax V) * GELU(gate) before the output projection (in_proj_vg, d -> 2d). "
              "false = plain attention with in_proj_v (d -> d), as LTG-BERT / the official model.py (ablation)")
    layer_weighting: bool = _f(
        True, "DenseFormer-style layer weights (transformer.dwa_modules): each sub-layer's output is a learned "
              "sum of all earlier ones. false = plain pre-LN residual stream (ablation)")

    def validate(self, where: str = "model") -> None:
        _check(self.vocab_size > 16, where, "vocab_size", "must be > 16 (16 special tokens)")
        _check(self.vocab_size <= 65536, where, "vocab_size", "must be <= 65536 (tokens are stored as uint16)")
        _check(self.hidden_size > 0 and self.num_heads > 0, where, "hidden_size", "must be positive")
        _check(self.hidden_size % self.num_heads == 0, where, "num_heads", "must divide hidden_size")
        _check(self.num_layers > 0 and self.intermediate_size > 0, where, "num_layers", "must be positive")
        _check(self.position_buckets >= 2, where, "position_buckets", "must be >= 2")
        _check(self.max_position > self.position_buckets // 2, where, "max_position", "must exceed position_buckets/2")
        _check(0.0 <= self.dropout < 1.0, where, "dropout", "must be in [0, 1)")
        _check(0.0 <= self.attention_dropout < 1.0, where, "attention_dropout", "must be in [0, 1)")
        for name in ("attention_gate", "layer_weighting"):
            _check(isinstance(getattr(self, name), bool), where, name, "must be true or false")


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # For tests and laptop smoke runs: ~1M parameters.
    "tiny": dict(vocab_size=1024, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=320),
    # Paper Table 3, STRICT-SMALL (10M words): ~30M parameters.
    "small": dict(vocab_size=8192, hidden_size=384, num_layers=12, num_heads=6, intermediate_size=1280),
    # Paper Table 3, STRICT (100M words): ~119M parameters.
    "base": dict(vocab_size=16384, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2560),
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in MODEL_PRESETS:
        raise GPTBertError(f"unknown model preset '{name}' (choose from {', '.join(MODEL_PRESETS)})")
    return ModelConfig(**{**MODEL_PRESETS[name], **overrides})


# ---------------------------------------------------------------------------
# Objective (paper section 2.1-2.2)


@dataclass
class ObjectiveConfig:
    causal_ratio: float = _f(
        1 / 16,
        "fraction of rows of every global batch trained causally; the rest use MNTP. "
        "The paper's 1:15 causal:masked = 0.0625; 0 = masked only, 1 = causal only",
    )
    mask_p_start: float = _f(0.30, "MNTP mask rate at step 0 (falls linearly to mask_p_end)")
    mask_p_end: float = _f(0.15, "MNTP mask rate at the last step")
    mask_schedule: bool = _f(True, "falling mask rate mask_p_start -> mask_p_end (paper 2.2). false = mask_p_end "
                                   "at every step (ablation 'w/o mask scheduling')")
    balanced_masking: bool = _f(
        False, "count-balanced masking (official): span scores are multiplied by softmax(how often each token "
               "was masked before), so coverage evens out over epochs and spans break up. The counts are "
               "training state (saved in checkpoints), reset when the row length changes")
    mask_random_p: float = _f(0.10, "share of masked spans replaced by random tokens")
    mask_keep_p: float = _f(0.10, "share of masked spans left unchanged")
    max_span: int = _f(3, "span lengths are uniform in 1..max_span")
    z_loss: float = _f(1e-4, "weight of the z-loss, mean(logsumexp(logits)^2)")

    def validate(self, where: str = "objective") -> None:
        _check(0.0 <= self.causal_ratio <= 1.0, where, "causal_ratio", "must be in [0, 1]")
        for name in ("mask_p_start", "mask_p_end"):
            _check(0.0 < getattr(self, name) < 1.0, where, name, "must be in (0, 1)")
        _check(self.mask_random_p >= 0 and self.mask_keep_p >= 0, where, "mask_random_p", "must be >= 0")
        _check(self.mask_random_p + self.mask_keep_p <= 1.0, where, "mask_keep_p", "mask_random_p + mask_keep_p must be <= 1")
        _check(self.max_span >= 1, where, "max_span", "must be >= 1")
        for name in ("mask_schedule", "balanced_masking"):
            _check(isinstance(getattr(self, name), bool), where, name, "must be true or false")
        _check(self.z_loss >= 0, where, "z_loss", "must be >= 0")


# ---------------------------------------------------------------------------
# Training (paper section 4, Table 3)


@dataclass
class TrainConfig:
    data: str = _f("runs/data", "folder made by `gptbert prepare` (train.bin, val.bin, meta.json)")
    tokenizer: str = _f("", "tokenizer.json; default: <data>/tokenizer.json")
    out_dir: str = _f("runs/train", "run folder: checkpoints/, metrics.csv, metrics.jsonl, config.yaml")
    max_steps: int = _f(7812, "optimizer steps (paper: 7,812 small / 15,625 base)")
    global_batch_tokens: int = _f(
        4_194_304, "tokens per optimizer step at full batch (paper: 32,768 x 128 = 4.19M)"
    )
    micro_batch_size: int = _f(32, "rows per forward pass per process in the first length phase (halved in the "
                                   "second, where rows are 2x seq_length, quartered in the third), so a "
                                   "micro-batch holds the same tokens in every phase")
    seq_length: int = _f(128, "tokens per row in the first phase")
    packing: str = _f(
        "stream", "how rows are cut from the corpus. official: documents are cut into chunks of seq_length - 2 "
                  "tokens, every chunk starts with <s> and gets its own attention block, a row is one chunk "
                  "topped up with random other chunks (+ padding), as in the paper's code. stream: rows are "
                  "windows of the token stream (one <s> per document; most rows start mid-document)")
    seq_schedule: bool = _f(True, "paper's length schedule: 128, 2x from 70%, 4x from 90% (rows shrink to keep "
                                  "tokens/step). false = seq_length throughout (ablation)")
    batch_ramp: bool = _f(True, "paper's batch ramp: tokens/step grow linearly from 1/4 to all of global_batch_tokens "
                                "(whole rows; the last micro-batch of a step may be smaller). false = full batch "
                                "from step 0 (ablation 'w/o batch scheduling')")
    lr: float = _f(1.41e-2, "peak learning rate (paper: 1.41e-2 small, 1e-2 base)")
    min_lr_factor: float = _f(0.1, "the cosine decays towards lr * min_lr_factor over the steps after warmup; the cooldown cuts it off")
    warmup: float = _f(0.016, "fraction of steps of linear warmup")
    cooldown: float = _f(0.016, "fraction of final steps of linear cooldown to 0")
    weight_decay: float = _f(0.1, "LAMB weight decay (not on biases and LayerNorm parameters)")
    beta1: float = _f(0.9, "LAMB beta1")
    beta2: float = _f(0.98, "LAMB beta2")
    eps: float = _f(1e-8, "LAMB epsilon")
    grad_clip: float = _f(2.0, "clip the global gradient norm to this (0 = off)")
    ema_decay: float = _f(0.999, "decay of the exponential moving average of the weights (0 = off)")
    precision: str = _f("auto", "auto (bf16 where the hardware has bf16 matmuls: GPUs, CPUs with AVX-512 or AMX; "
                                "else fp32), bf16 (autocast; weights stay fp32), fp32, or fp64 (numerical tests)")
    onednn_fp32: bool = _f(True, "fp32 on CPU: run fp32 matmuls with oneDNN instead of MKL (faster on CPUs that are not "
                                 "Intel's; only on CPUs without AMX, where it stays exact fp32)")
    recompute_attention: bool = _f(False, "recompute the (B, H, T, T) attention probabilities in backward "
                                          "instead of storing them (CPU: less memory at T=512, a slower step)")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    compile: bool = _f(False, "wrap the model in torch.compile")
    seed: int = _f(42, "seed of the data order, masking, dropout and init")
    num_workers: int = _f(1, "batch-building worker processes (0 = build in the main process)")
    log_every: int = _f(10, "steps between metric lines")
    eval_every: int = _f(0, "steps between validation passes (0 = only at the end)")
    eval_rows: int = _f(256, "validation rows (seq_length tokens each) per objective")
    save_every: int = _f(0, "steps between checkpoints (0 = only at the end)")
    save_minutes: float = _f(0.0, "also save a checkpoint after every this many minutes of wall-clock time (0 = off)")
    keep_last: int = _f(3, "checkpoints kept on disk")
    time_budget: float = _f(0.0, "stop after this many minutes of training, saving a checkpoint (0 = no limit)")
    max_words: int = _f(0, "stop once this many words have been seen, repeats counted (e.g. 100M for BabyLM "
                           "strict-small; 0 = no limit); with max_steps 0 the schedules are fitted to it")
    milestones: bool = _f(True, "save the BabyLM word-count checkpoints chck_1M ... chck_10M, chck_20M ... chck_100M, "
                                "chck_200M ... chck_1000M as they are reached (never removed by keep_last)")
    max_bad_steps: int = _f(5, "steps with a non-finite gradient are skipped; stop after this many in a row")
    tensorboard: bool = _f(True, "also write TensorBoard events when tensorboard is installed")
    progress: bool = _f(True, "show a progress bar")

    def validate(self, where: str = "train") -> None:
        _check(self.max_steps > 0 or self.max_words > 0, where, "max_steps",
               "must be positive (or 0 with a max_words budget, which then sets it)")
        _check(self.max_words >= 0, where, "max_words", "must be >= 0")
        _check(self.seq_length >= 2, where, "seq_length", "must be >= 2")
        _check(self.packing in ("official", "stream"), where, "packing", "must be official or stream")
        _check(self.packing != "official" or self.seq_length >= 4, where, "seq_length",
               "must be >= 4 with official packing (chunks of seq_length - 2 tokens)")
        for name in ("seq_schedule", "batch_ramp"):
            _check(isinstance(getattr(self, name), bool), where, name, "must be true or false")
        top = self.seq_length * (4 if self.seq_schedule else 1)
        _check(top <= 512, where, "seq_length",
               f"{self.seq_length} gives rows of {top} tokens, above the model's 512 limit")
        _check(self.micro_batch_size > 0, where, "micro_batch_size", "must be positive")
        _check(self.global_batch_tokens >= self.seq_length, where, "global_batch_tokens", "must hold at least one row")
        _check(self.lr > 0, where, "lr", "must be positive")
        _check(0 <= self.warmup < 1 and 0 <= self.cooldown < 1, where, "warmup", "warmup and cooldown must be in [0, 1)")
        _check(self.warmup + self.cooldown < 1, where, "cooldown", "warmup + cooldown must be < 1")
        _check(0 <= self.min_lr_factor <= 1, where, "min_lr_factor", "must be in [0, 1]")
        _check(0 <= self.ema_decay < 1, where, "ema_decay", "must be in [0, 1)")
        _check(self.precision in ("auto", "bf16", "fp32", "fp64"), where, "precision", "must be auto, bf16, fp32 or fp64")
        _check(self.grad_clip >= 0, where, "grad_clip", "must be >= 0")
        _check(self.num_workers >= 0, where, "num_workers", "must be >= 0")
        _check(self.save_minutes >= 0, where, "save_minutes", "must be >= 0")
        _check(self.max_bad_steps >= 1, where, "max_bad_steps", "must be >= 1")


# ---------------------------------------------------------------------------
# The whole run


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, where: str = "config") -> "RunConfig":
        self.model.validate(f"{where}: model")
        self.objective.validate(f"{where}: objective")
        self.train.validate(f"{where}: train")
        top = self.train.seq_length * (4 if self.train.seq_schedule else 1)
        _check(top <= self.model.max_position, f"{where}: train", "seq_length",
               f"rows of {top} tokens exceed model.max_position={self.model.max_position}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"model": ModelConfig, "objective": ObjectiveConfig, "train": TrainConfig}


class ConfigValueError(GPTBertError):
    """An impossible config value; `key` is "section.key", so the CLI can name the flag that set it."""

    def __init__(self, message: str, key: str, problem: str):
        super().__init__(message)
        self.key, self.problem = key, problem


def _check(ok: bool, where: str, key: str, problem: str) -> None:
    if not ok:
        section = where.rsplit(": ", 1)[-1].rsplit(" ", 1)[-1]
        raise ConfigValueError(f"{where}.{key}: {problem}", f"{section}.{key}", problem)


def config_from_dict(d: dict[str, Any], where: str = "config") -> RunConfig:
    """Build a RunConfig from nested dicts, refusing unknown keys and wrong types.

    A `model: {preset: small}` entry starts the model section from a preset.
    """
    if not isinstance(d, dict):
        raise GPTBertError(f"{where}: expected a mapping of sections {sorted(SECTIONS)}")
    out: dict[str, Any] = {}
    for section, value in d.items():
        if section not in SECTIONS:
            raise GPTBertError(f"{where}: unknown section '{section}'{did_you_mean(section, SECTIONS)} "
                               f"(expected one of {', '.join(SECTIONS)})")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise GPTBertError(f"{where}: section '{section}' must be a mapping")
        value = dict(value)
        base: dict[str, Any] = {}
        if section == "model" and "preset" in value:
            preset = value.pop("preset")
            if preset not in MODEL_PRESETS:
                raise GPTBertError(f"{where}: model.preset '{preset}' is unknown (choose from {', '.join(MODEL_PRESETS)})")
            base = dict(MODEL_PRESETS[preset])
        known = {f.name: f for f in fields(SECTIONS[section])}
        for key, v in value.items():
            if key not in known:
                raise GPTBertError(f"{where}: unknown key '{section}.{key}'{did_you_mean(key, known)}")
            base[key] = _coerce(v, known[key], f"{where}: {section}.{key}")
        out[section] = SECTIONS[section](**base)
    return RunConfig(**out)


_SUFFIX = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def _parse_count(text: str) -> int:
    """An integer written as 100000, 1e5, 100K, 100M or 1.5B (word and token budgets)."""
    t = text.strip().replace("_", "").replace(",", "")
    mult = _SUFFIX.get(t[-1:].lower(), 1)
    number = float(t[:-1] if mult != 1 else t)
    value = number * mult
    if not value.is_integer():
        raise ValueError
    return int(value)


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    """Convert a YAML/CLI value to the field's type, or explain why it can't be."""
    typ = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if typ == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            raise ValueError
        if typ == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, str):
                return _parse_count(value)
            return int(value)
        if typ == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ == "str":
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise GPTBertError(f"{where}: expected {typ}, got {value!r}")


PRESET_DIR = Path(__file__).resolve().parent / "configs"


def preset_names() -> list[str]:
    """The presets shipped with the package (gptbert/configs/*.yaml)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str | Path) -> Path:
    """A preset name (`small-10m`) or a path to a YAML file -> the YAML file."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    named = PRESET_DIR / f"{name_or_path}.yaml"
    if named.is_file() and p.suffix not in (".yaml", ".yml") and len(p.parts) == 1:
        return named
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        raise GPTBertError(f"{p}: config file does not exist")
    raise GPTBertError(f"--config: unknown preset '{name_or_path}' (presets: {', '.join(preset_names())}; "
                       "or give a path to a YAML file)")


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a YAML preset (a name from `preset_names()` or a path; optional), apply dotted overrides, validate."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = resolve_preset(path)
        where = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise GPTBertError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise GPTBertError(f"{path}: expected a mapping of sections {sorted(SECTIONS)}")
    data = {k: dict(v or {}) if isinstance(v, dict) or v is None else v for k, v in data.items()}
    overrides = overrides or {}
    for dotted, value in overrides.items():  # checked here, so an error names the flag, not the YAML file
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise GPTBertError(f"--{dotted}: expected --section.key with a section of {', '.join(SECTIONS)}")
        known = {f.name: f for f in fields(SECTIONS[section])}
        if key not in known:
            raise GPTBertError(f"--{dotted}: unknown option{did_you_mean(key, known)}")
        data.setdefault(section, {})
        if isinstance(data[section], dict):
            data[section][key] = _coerce(value, known[key], f"--{dotted}")
    cfg = config_from_dict(data, where)
    try:
        return cfg.validate(where)
    except ConfigValueError as e:
        if e.key in overrides:
            raise GPTBertError(f"--{e.key}: {e.problem}") from None
        raise


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
