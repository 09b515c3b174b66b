"""The pretraining loop: one step = one global batch of mixed causal and MNTP rows.

Per optimizer step (paper section 4, Table 3):
  1. build this rank's micro-batches for the step (data.py; a pure function of
     (seed, step), so resume and any world size read the same data)
  2. all-reduce the number of causal and MNTP targets of the global batch, so
     each micro-batch's loss is already divided by the global counts: summing
     micro-batches and averaging ranks gives exactly the ratio-weighted mean
     of the two objectives, whatever the accumulation or world size
  3. forward/backward each micro-batch (DDP syncs gradients on the last one),
     clip the global gradient norm to 2.0, LAMB step, EMA update (0.999)
Dropout is re-seeded from (seed, step, rank) every step, so a resumed run
continues bit-identically without saving RNG streams.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import distributed as dist_utils
from .checkpoint import load_checkpoint, load_model_weights, save_checkpoint, state_dict_for_save
from .config import RunConfig, config_from_dict, save_config
from .corpus import read_meta
from .data import TrainBatches, step_shape, validation_batches
from .matmul import fp32_matmul_via_onednn
from .errors import GPTBertError
from .model import GPTBERT, attention_mask
from .objectives import IGNORE, causal_rows, hybrid_loss, step_mask_rate
from .optim import EMA, Lamb, lr_factor, param_groups
from .tokenizer import check_vocab, load_tokenizer


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int
    seconds: float
    checkpoint: Path | None
    val: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Helpers


def autocast(device: torch.device, precision: str):
    if precision == "bf16" and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_data(cfg: RunConfig) -> dict:
    """The prepared corpus must exist and match the model's vocabulary."""
    data = Path(cfg.train.data)
    meta = read_meta(data)
    if int(meta["vocab_size"]) != cfg.model.vocab_size:
        raise GPTBertError(
            f"{data / 'meta.json'}: corpus was tokenized with a vocabulary of {meta['vocab_size']} "
            f"but model.vocab_size is {cfg.model.vocab_size}"
        )
    tok_path = Path(cfg.train.tokenizer) if cfg.train.tokenizer else data / "tokenizer.json"
    if cfg.train.tokenizer or tok_path.exists():
        check_vocab(tok_path, load_tokenizer(tok_path), cfg.model.vocab_size)
    return meta


@torch.no_grad()
def evaluate(model: torch.nn.Module, cfg: RunConfig, device: torch.device, rows: int | None = None) -> dict[str, float]:
    """Validation loss (nats/token) of both objectives on fixed rows of val.bin; MNTP at 15% masking."""
    was_training = model.training
    model.eval()
    rows = rows or cfg.train.eval_rows
    out = {}
    for name, causal in (("masked", False), ("causal", True)):
        total, count = 0.0, 0
        for mb in validation_batches(cfg.train.data, cfg, rows, cfg.train.micro_batch_size, causal):
            mb = mb.to(device)
            positions = (mb.targets.reshape(-1) != IGNORE).nonzero().squeeze(-1)
            with autocast(device, cfg.train.precision):
                logits = model(mb.input_ids, attention_mask(mb.segments, mb.is_causal), positions)
            tgt = mb.targets.reshape(-1)[positions]
            total += float(torch.nn.functional.cross_entropy(logits.float(), tgt, reduction="sum"))
            count += int(tgt.numel())
        out[f"val_loss_{name}"] = total / max(count, 1)
    model.train(was_training)
    return out


def unigram_entropy(data_dir: str | Path, vocab_size: int) -> float:
    """Entropy (nats/token) of the training unigram distribution: the loss of a model that ignores context."""
    tokens = np.memmap(Path(data_dir) / "train.bin", dtype=np.uint16, mode="r")
    counts = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


class MetricsWriter:
    """metrics.csv + metrics.jsonl always; TensorBoard when installed and enabled."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, stem: str = "metrics"):
        self.enabled = enabled
        self.csv = self.jsonl = self.tb = None
        self.keys: list[str] | None = None
        if not enabled:
            return
        self.csv_path = out_dir / f"{stem}.csv"
        self.jsonl = open(out_dir / f"{stem}.jsonl", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard" / stem))
            except Exception:  # tensorboard not installed: CSV/JSONL only
                self.tb = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if self.keys is None:
            self.keys = list(row)
            new = not self.csv_path.exists()
            self.csv = open(self.csv_path, "a", encoding="utf-8")
            if new:
                self.csv.write(",".join(self.keys) + "\n")
        self.csv.write(",".join(str(row.get(k, "")) for k in self.keys) + "\n")
        self.csv.flush()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        for f in (self.csv, self.jsonl):
            if f is not None:
                f.close()
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------
# The loop


def train(cfg: RunConfig, resume: str | Path | None = None, max_steps_to_run: int | None = None) -> TrainResult:
    """Pretrain according to `cfg`. `max_steps_to_run` stops early (for tests; schedules still use max_steps)."""
    # fp32 on the CPU: oneDNN's fp32 GEMM instead of MKL's where that stays exact (gptbert/matmul.py)
    with fp32_matmul_via_onednn(enabled=cfg.train.precision == "fp32" and cfg.train.onednn_fp32):
        return _train(cfg, resume, max_steps_to_run)


def _train(cfg: RunConfig, resume: str | Path | None, max_steps_to_run: int | None) -> TrainResult:
    t = cfg.train
    d = dist_utils.setup(t.device)
    meta = check_data(cfg)
    out_dir = Path(t.out_dir)
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = GPTBERT(cfg.model).to(d.device, torch.float64 if t.precision == "fp64" else torch.float32)
    model.recompute_attention(t.recompute_attention)
    optimizer = Lamb(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    ema = EMA(model, t.ema_decay) if t.ema_decay > 0 else None
    start_step, tokens_seen = 0, 0
    batches = TrainBatches(t.data, cfg, d.rank, d.world_size)

    if resume is not None:
        ck = load_checkpoint(resume)
        saved_model = ck["config"].get("model", {}) if isinstance(ck["config"], dict) else {}
        if saved_model:  # fields added since (e.g. the ablation switches) take their defaults
            try:
                saved_model = config_from_dict({"model": saved_model}).to_dict()["model"]
            except GPTBertError:
                pass
        if saved_model and saved_model != cfg.to_dict()["model"]:
            raise GPTBertError(f"{ck['path']}: checkpoint was trained with a different model config")
        load_model_weights(model, ck["model"], ck["path"] / "model.safetensors")
        if ema is not None and ck["ema"] is not None:
            ema.load_state_dict(ck["ema"], str(ck["path"] / "ema.safetensors"))
        optimizer.load_state_dict(ck["state"]["optimizer"])
        start_step, tokens_seen = int(ck["state"]["step"]), int(ck["state"]["tokens_seen"])
        if batches.mask_counts is not None:  # count-balanced masking: continue from the saved counts
            saved = ck["state"].get("mask_counts")
            if saved is not None:
                batches.load_mask_state(saved, str(ck["path"] / "state.pt"))
            batches.advance(start_step)  # exact either way; without saved counts this replays them

    if d.is_main:
        save_config(cfg, out_dir / "config.yaml")

    net = dist_utils.wrap_model(model, d)
    if t.compile:
        net = torch.compile(net)
    end_step = t.max_steps if max_steps_to_run is None else min(t.max_steps, start_step + max_steps_to_run)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(batches, range(start_step, end_step)),
        batch_size=None, shuffle=False, num_workers=t.num_workers,
        pin_memory=d.device.type == "cuda", prefetch_factor=4 if t.num_workers > 0 else None,
    )

    metrics = MetricsWriter(out_dir, d.is_main, t.tensorboard)
    val_metrics = MetricsWriter(out_dir, d.is_main, t.tensorboard, stem="validation")
    bar = None
    if d.is_main and t.progress:
        from tqdm import tqdm

        bar = tqdm(total=end_step, initial=start_step, desc="train", dynamic_ncols=True)

    history: list[dict] = []
    window = dict(ce_c=0.0, n_c=0, ce_m=0.0, n_m=0, tokens=0, t0=time.perf_counter())
    t_start = time.perf_counter()
    last_ckpt: Path | None = None
    done = start_step
    net.train()
    for step, micro_batches in zip(range(start_step, end_step), loader):
        shape = step_shape(step, cfg, d.world_size)
        lr = t.lr * lr_factor(step, t.max_steps, t.warmup, t.cooldown, t.min_lr_factor)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed((t.seed * 1_000_003 + step) * 1009 + d.rank)  # dropout stream of this step

        # Global target counts per objective -> per-token weights (see module docstring).
        n_c = sum(int(((mb.targets != IGNORE) & mb.is_causal[:, None]).sum()) for mb in micro_batches)
        n_m = sum(int(((mb.targets != IGNORE) & ~mb.is_causal[:, None]).sum()) for mb in micro_batches)
        over_budget = float(t.time_budget > 0 and (time.perf_counter() - t_start) > 60 * t.time_budget)
        n_c, n_m, stop = dist_utils.all_reduce_sum([n_c, n_m, over_budget], d)
        if stop > 0:
            break
        batches.commit(step, micro_batches)  # mask counts (balanced masking): the state saved with checkpoints
        frac_causal = float(causal_rows(shape.rows, cfg.objective.causal_ratio, t.seed, step).mean())
        w_c = frac_causal / max(n_c, 1) * d.world_size  # x world: DDP averages gradients over ranks
        w_m = (1.0 - frac_causal) / max(n_m, 1) * d.world_size

        for i, mb in enumerate(micro_batches):
            mb = mb.to(d.device, non_blocking=True)
            flat_targets = mb.targets.reshape(-1)
            positions = (flat_targets != IGNORE).nonzero().squeeze(-1)
            sync = i == len(micro_batches) - 1
            ctx = net.no_sync() if (d.enabled and not sync and hasattr(net, "no_sync")) else contextlib.nullcontext()
            with ctx:
                with autocast(d.device, t.precision):
                    logits = net(mb.input_ids, attention_mask(mb.segments, mb.is_causal), positions)
                tok_causal = mb.is_causal[:, None].expand_as(mb.targets).reshape(-1)[positions]
                loss, sums = hybrid_loss(logits, flat_targets[positions], tok_causal, w_c, w_m, cfg.objective.z_loss)
                loss.backward()
            window["ce_c"] += sums.ce_causal
            window["n_c"] += sums.n_causal
            window["ce_m"] += sums.ce_masked
            window["n_m"] += sums.n_masked

        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        tokens_seen += shape.tokens
        window["tokens"] += shape.tokens
        done = step + 1

        if done % t.log_every == 0 or done == end_step:
            ce_c, n_cw, ce_m, n_mw = dist_utils.all_reduce_sum(
                [window["ce_c"], window["n_c"], window["ce_m"], window["n_m"]], d)
            dt = time.perf_counter() - window["t0"]
            row = dict(
                step=done, lr=lr, loss_masked=ce_m / n_mw if n_mw else float("nan"),
                loss_causal=ce_c / n_cw if n_cw else float("nan"), grad_norm=float(grad_norm),
                mask_rate=step_mask_rate(step, t.max_steps, cfg.objective),
                seq_length=shape.seq_length, rows=shape.rows, tokens_seen=tokens_seen,
                tokens_per_s=window["tokens"] / dt, elapsed_s=time.perf_counter() - t_start,
            )
            history.append(row)
            metrics.write(row)
            if bar is not None:
                bar.set_postfix(mlm=f"{row['loss_masked']:.3f}", clm=f"{row['loss_causal']:.3f}",
                                tok_s=f"{row['tokens_per_s']:.0f}", refresh=False)
            window = dict(ce_c=0.0, n_c=0, ce_m=0.0, n_m=0, tokens=0, t0=time.perf_counter())
        if bar is not None:
            bar.update(1)

        if t.eval_every and done % t.eval_every == 0 and done != end_step:
            val = evaluate(model, cfg, d.device)
            val_metrics.write(dict(step=done, **val))
        if t.save_every and done % t.save_every == 0 and done != end_step:
            last_ckpt = _save(model, ema, optimizer, cfg, done, tokens_seen, d, batches)

    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_start
    final_step = done
    last_ckpt = _save(model, ema, optimizer, cfg, final_step, tokens_seen, d, batches)
    val = evaluate(model, cfg, d.device)
    val_metrics.write(dict(step=final_step, **val))
    metrics.close()
    val_metrics.close()
    dist_utils.teardown()
    return TrainResult(final_step, tokens_seen, seconds, last_ckpt, val, history)


def _save(model, ema, optimizer, cfg: RunConfig, step: int, tokens_seen: int, d, batches: TrainBatches) -> Path | None:
    path = None
    if d.is_main:
        state = {"optimizer": optimizer.state_dict(), "step": step, "tokens_seen": tokens_seen}
        mask_state = batches.mask_state()
        if mask_state is not None:  # count-balanced masking: counts before `step` (identical on every rank)
            assert mask_state["step"] == step, (mask_state["step"], step)
            state["mask_counts"] = mask_state
        path = save_checkpoint(
            Path(cfg.train.out_dir), step, state_dict_for_save(model),
            ema.state_dict() if ema is not None else None,
            state,
            cfg.to_dict(), tokens_seen, keep_last=cfg.train.keep_last,
        )
    dist_utils.barrier(d)
    return path


def format_losses(val: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f} (ppl {math.exp(v):.1f})" for k, v in val.items())
