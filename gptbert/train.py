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

Stopping early without losing work. SIGTERM (a scheduler's preemption) and a
first Ctrl-C finish the current optimizer step, write a checkpoint and return
with `stopped` set (the CLI prints the resume command and exits with status
75, EX_TEMPFAIL: try again); a second Ctrl-C aborts at once. `time_budget`
stops the same way, and `save_minutes` saves on wall-clock time. Under
torchrun these decisions are summed over the ranks at the start of each step,
so every rank stops (or saves) after the same step. A step whose gradient is
not finite is skipped (no optimizer or EMA update) and counted; after
`max_bad_steps` in a row the run stops with its last good checkpoint, so NaN
weights are never saved.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as dist_utils
from . import memory
from .checkpoint import load_checkpoint, load_model_weights, save_checkpoint, state_dict_for_save
from .config import RunConfig, config_from_dict, save_config
from .corpus import read_meta
from .data import TrainBatches, step_shape, validation_batches
from .errors import GPTBertError
from .model import GPTBERT, attention_mask
from .objectives import IGNORE, causal_rows, hybrid_loss, step_mask_rate
from .optim import EMA, Lamb, lr_factor, param_groups
from .precision import autocast, fp32_matmul_via_onednn, precision_note, resolve_precision
from .rundir import MetricsWriter, after_resume, prepare_run_dir
from .tokenizer import check_vocab, load_tokenizer, token_byte_lengths
from .words import milestone_name, milestones_crossed


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int
    seconds: float
    checkpoint: Path | None
    val: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None  # why the run ended before max_steps: "SIGTERM", "SIGINT", "time budget", ...
    skipped_steps: int = 0  # steps with a non-finite gradient (not applied)
    words_seen: int = 0  # words of corpus text in all rows trained on, repeats counted (words.py)
    milestones: list[Path] = field(default_factory=list)  # BabyLM word-count checkpoints saved by this run


class DivergedError(GPTBertError):
    """Training stopped: too many consecutive steps with a non-finite gradient."""


# ---------------------------------------------------------------------------
# Signals: finish the step, save, stop


class _StopSignals:
    """SIGTERM / first SIGINT set a flag read at the next step; a second SIGINT raises at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._saved: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.received = self.received or name

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        return False


# ---------------------------------------------------------------------------
# Helpers


def _worker_ignores_stop_signals(_worker_id: int) -> None:
    """Data-loader workers leave SIGTERM and SIGINT to the training process. A terminal's Ctrl-C and
    most schedulers (SLURM, Kubernetes) signal the whole process group: a worker that died of it
    would make the DataLoader raise before the main process could save its checkpoint. The main
    process stops the workers itself when it is done (and they exit when it dies)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_data(cfg: RunConfig) -> dict:
    """The prepared corpus must exist and match the model's vocabulary."""
    data = Path(cfg.train.data)
    meta = read_meta(data)
    if int(meta["vocab_size"]) != cfg.model.vocab_size:
        raise GPTBertError(
            f"{data / 'meta.json'}: corpus was tokenized with a vocabulary of {meta['vocab_size']} "
            f"but model.vocab_size is {cfg.model.vocab_size}"
        )
    tok_path = _tokenizer_path(cfg)
    if cfg.train.tokenizer or tok_path.exists():
        check_vocab(tok_path, load_tokenizer(tok_path), cfg.model.vocab_size)
    return meta


def _tokenizer_path(cfg: RunConfig) -> Path:
    return Path(cfg.train.tokenizer) if cfg.train.tokenizer else Path(cfg.train.data) / "tokenizer.json"


@functools.lru_cache(maxsize=4)
def _byte_table(tok_path: str) -> torch.Tensor | None:
    """Bytes per token id (see tokenizer.token_byte_lengths), or None without a tokenizer file."""
    if not Path(tok_path).exists():
        return None
    return torch.from_numpy(token_byte_lengths(load_tokenizer(tok_path)))


@torch.no_grad()
def validation_loss(model: torch.nn.Module, cfg: RunConfig, device: torch.device, rows: int | None = None) -> dict[str, float]:
    """Validation loss of both objectives on fixed rows of val.bin; MNTP at 15% masking.

    val_loss_*: nats per predicted token. val_bpb_*: the same cross-entropy in bits per byte of the
    predicted tokens' text, which does not depend on the vocabulary, so models with different
    tokenizers compare on it (absent when the corpus folder has no tokenizer.json).
    """
    was_training = model.training
    model.eval()
    rows = rows or cfg.train.eval_rows
    table = _byte_table(str(_tokenizer_path(cfg)))
    out = {}
    for name, causal in (("masked", False), ("causal", True)):
        total, count, nbytes = 0.0, 0, 0
        for mb in validation_batches(cfg.train.data, cfg, rows, cfg.train.micro_batch_size, causal):
            mb = mb.to(device)
            positions = (mb.targets.reshape(-1) != IGNORE).nonzero().squeeze(-1)
            with autocast(device, cfg.train.precision):
                logits = model(mb.input_ids, attention_mask(mb.segments, mb.is_causal), positions)
            tgt = mb.targets.reshape(-1)[positions]
            total += float(torch.nn.functional.cross_entropy(logits.float(), tgt, reduction="sum"))
            count += int(tgt.numel())
            if table is not None:
                nbytes += int(table[tgt.cpu()].sum())
        out[f"val_loss_{name}"] = total / max(count, 1)
        if table is not None:
            out[f"val_bpb_{name}"] = total / (math.log(2) * max(nbytes, 1))
    model.train(was_training)
    return out


def unigram_entropy(data_dir: str | Path, vocab_size: int) -> float:
    """Entropy (nats/token) of the training unigram distribution: the loss of a model that ignores context."""
    tokens = np.memmap(Path(data_dir) / "train.bin", dtype=np.uint16, mode="r")
    counts = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------------------
# The loop: setup, step, log, save


@dataclass
class _Run:
    """Everything the loop works with, built once by `_setup`."""

    cfg: RunConfig
    d: dist_utils.Dist
    out_dir: Path
    model: GPTBERT
    net: torch.nn.Module  # the model as wrapped for training (DDP, torch.compile)
    optimizer: Lamb
    ema: EMA | None
    batches: TrainBatches  # this rank's data; holds the mask counts of count-balanced masking
    start_step: int
    end_step: int
    tokens_seen: int
    skipped_steps: int = 0  # steps with a non-finite gradient, in the whole run
    bad_in_a_row: int = 0
    words_seen: int = 0
    milestones: list = field(default_factory=list)


@dataclass
class _Window:
    """Loss sums of the steps since the last metrics line."""

    ce_c: float = 0.0
    n_c: int = 0
    ce_m: float = 0.0
    n_m: int = 0
    tokens: int = 0
    t0: float = field(default_factory=time.perf_counter)


def train(cfg: RunConfig, resume: str | Path | None = None, max_steps_to_run: int | None = None,
          overwrite: bool = False, validate: bool = True) -> TrainResult:
    """Pretrain according to `cfg` into the run folder `cfg.train.out_dir`.

    resume: None (the folder must not hold another run), "auto" (continue the newest complete
    checkpoint in the run folder, or start fresh when there is none) or a checkpoint path.
    overwrite: clear the run folder first. `max_steps_to_run` stops early (for tests; the
    schedules still use max_steps). `validate=False` skips the validation loss at the end (the
    quickstart's first stretch, which the same run continues).
    """
    memory.keep_freed_pages()  # steps reuse freed activations' pages instead of faulting them in (memory.py)
    with _StopSignals() as sig:
        run = _setup(copy.deepcopy(cfg), resume, max_steps_to_run, overwrite)
        # fp32 on the CPU: oneDNN's fp32 GEMM instead of MKL's where that stays exact (gptbert/precision.py)
        with fp32_matmul_via_onednn(enabled=run.cfg.train.precision == "fp32" and run.cfg.train.onednn_fp32):
            return _loop(run, sig, validate)


def _setup(cfg: RunConfig, resume: str | Path | None, max_steps_to_run: int | None, overwrite: bool) -> _Run:
    """Process group, run folder, data check, model, optimizer, EMA, and the state of a resumed run."""
    t = cfg.train
    d = dist_utils.setup(t.device)
    note = precision_note(t.precision, d.device)
    if note and d.is_main:
        print(note, file=sys.stderr)
    t.precision = resolve_precision(t.precision, d.device)  # config.yaml records what ran
    out_dir = Path(t.out_dir)
    ckpt = prepare_run_dir(out_dir, resume, overwrite, clear=d.is_main)  # before any work
    dist_utils.barrier(d)
    check_data(cfg)
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = GPTBERT(cfg.model).to(d.device, torch.float64 if t.precision == "fp64" else torch.float32)
    model.recompute_attention(t.recompute_attention)
    optimizer = Lamb(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    ema = EMA(model, t.ema_decay) if t.ema_decay > 0 else None
    start_step, tokens_seen, skipped, words_seen = 0, 0, 0, 0
    batches = TrainBatches(t.data, cfg, d.rank, d.world_size)

    if ckpt is not None:
        ck = load_checkpoint(ckpt)
        saved_model = ck.config.get("model") or {}
        if saved_model:  # fields added since (e.g. the ablation switches) take their defaults
            try:
                saved_model = config_from_dict({"model": saved_model}).to_dict()["model"]
            except GPTBertError:
                pass
        if saved_model and saved_model != cfg.to_dict()["model"]:
            raise GPTBertError(f"{ck.path}: checkpoint was trained with a different model config")
        load_model_weights(model, ck.model, ck.path / "model.safetensors")
        if ema is not None and ck.ema is not None:
            ema.load_state_dict(ck.ema, str(ck.path / "ema.safetensors"))
        optimizer.load_state_dict(ck.state["optimizer"])
        start_step, tokens_seen = int(ck.state["step"]), int(ck.state["tokens_seen"])
        skipped = int(ck.state.get("skipped_steps", 0))
        words_seen = int(ck.state.get("words_seen", 0))
        if batches.mask_counts is not None:  # count-balanced masking: continue from the saved counts
            saved, where = ck.state.get("mask_counts"), ck.path / "state.pt"
            if saved is not None and "counts" not in saved:  # counts in their own file (older: inside state.pt)
                where = ck.path / "mask_counts.npy"
                if "mask_counts" not in ck.arrays:
                    raise GPTBertError(f"{where}: missing (the checkpoint's state.pt says the run kept mask counts)")
                saved = {**saved, "counts": ck.arrays["mask_counts"]}
            if saved is not None:
                batches.load_mask_state(saved, str(where))
            batches.advance(start_step)  # exact either way; without saved counts this replays them
        if d.is_main:
            after_resume(out_dir, start_step)

    if d.is_main:
        save_config(cfg, out_dir / "config.yaml")
    net = dist_utils.wrap_model(model, d)
    if t.compile:
        net = torch.compile(net)
    end_step = t.max_steps if max_steps_to_run is None else min(t.max_steps, start_step + max_steps_to_run)
    return _Run(cfg, d, out_dir, model, net, optimizer, ema, batches, start_step, end_step, tokens_seen, skipped,
                words_seen=words_seen)


# On the CPU, glibc keeps the heap blocks that freed activations leave behind. The batch ramp
# changes the last micro-batch's size every step and the sequence schedule changes every tensor's
# size twice a run, so the freed blocks fit ever fewer new tensors and the resident memory creeps
# up: on a 2-core EPYC the 10-minute quickstart's process tree went from 3.0 GB (64-token rows) to
# 3.8 GB (end of the 128-token rows), the main process of a 20-minute one to 5.3 GB. The loop
# hands the free blocks back (malloc_trim) at every length-phase change and whenever the resident
# memory has grown more than _TRIM_SLACK_MB since the last trim (memory.HeapTrimmer; a trim costs
# about a second, the pages being faulted back in; README, "The main job"). Each metrics row logs
# the RSS and the trims so far.
_TRIM_SLACK_MB = 512.0


def _loop(run: _Run, sig: _StopSignals, validate: bool = True) -> TrainResult:
    cfg, t, d = run.cfg, run.cfg.train, run.d
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(run.batches, range(run.start_step, run.end_step)),
        batch_size=None, shuffle=False, num_workers=t.num_workers, worker_init_fn=_worker_ignores_stop_signals,
        pin_memory=d.device.type == "cuda", prefetch_factor=4 if t.num_workers > 0 else None,
    )
    metrics = MetricsWriter(run.out_dir, d.is_main, t.tensorboard)
    val_metrics = MetricsWriter(run.out_dir, d.is_main, t.tensorboard, stem="validation")
    bar = None
    if d.is_main and t.progress:
        bar = tqdm(total=run.end_step, initial=run.start_step, desc="train", dynamic_ncols=True)

    history: list[dict] = []
    window = _Window()
    t_start = last_save = time.perf_counter()
    done = run.start_step
    stopped = None
    last_length = None
    trimmer = memory.HeapTrimmer(_TRIM_SLACK_MB)
    run.net.train()
    for step, micro_batches in zip(range(run.start_step, run.end_step), loader):
        now = time.perf_counter()
        flags = {"time budget": t.time_budget > 0 and now - t_start > 60 * t.time_budget,
                 "SIGTERM": sig.received == "SIGTERM", "SIGINT": sig.received == "SIGINT",
                 "save": t.save_minutes > 0 and now - last_save > 60 * t.save_minutes}
        result = _step(run, step, micro_batches, flags, window)
        if result.stop is not None:  # every rank agreed to stop before this step
            stopped = result.stop
            break
        lr, grad_norm, shape = result.lr, result.grad_norm, result.shape
        done = step + 1
        trimmer.after_step(shape_changed=last_length is not None and shape.seq_length != last_length)
        last_length = shape.seq_length
        if done % t.log_every == 0 or done == run.end_step:
            row = _log_row(run, step, lr, grad_norm, shape, window, t_start)
            row.update(rss_mb=round(memory.rss_mb()), peak_rss_mb=round(memory.peak_rss_mb()), heap_trims=trimmer.trims)
            history.append(row)
            metrics.write(row)
            if bar is not None:
                bar.set_postfix(mlm=f"{row['loss_masked']:.3f}", clm=f"{row['loss_causal']:.3f}",
                                tok_s=f"{row['tokens_per_s']:.0f}", refresh=False)
            window = _Window()
        if bar is not None:
            bar.update(1)
        if t.eval_every and done % t.eval_every == 0 and done != run.end_step:
            val_metrics.write(dict(step=done, **validation_loss(run.model, cfg, d.device)))
        if done != run.end_step and ((t.save_every and done % t.save_every == 0) or result.save):
            _save(run, done)
            last_save = time.perf_counter()
        if t.milestones:  # every rank takes part (the main process writes, all wait for it)
            for m in milestones_crossed(result.words_before, run.words_seen):
                path = _save(run, done, milestone=milestone_name(m))
                if path is not None:
                    run.milestones.append(path)
        if run.bad_in_a_row >= t.max_bad_steps:
            stopped = "non-finite gradients"
            break
        if t.max_words and run.words_seen >= t.max_words:
            stopped = "word budget" if done < run.end_step else None
            break

    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_start
    last_ckpt = _save(run, done)
    val = {}
    if validate and stopped not in ("SIGTERM", "SIGINT"):  # a preempted job has seconds left: save and go
        val = validation_loss(run.model, cfg, d.device)
        val_metrics.write(dict(step=done, **val))
    metrics.close()
    val_metrics.close()
    dist_utils.teardown()
    if stopped == "non-finite gradients":
        raise DivergedError(f"{run.out_dir}: training stopped at step {done}: {run.bad_in_a_row} steps in a row had a "
                            f"non-finite gradient (skipped); last good checkpoint: {last_ckpt}")
    return TrainResult(done, run.tokens_seen, seconds, last_ckpt, val, history, stopped, run.skipped_steps,
                       run.words_seen, run.milestones)


@dataclass
class _StepResult:
    lr: float = 0.0
    grad_norm: float = 0.0
    shape: object = None
    stop: str | None = None  # set when the ranks agreed to stop before the step
    save: bool = False  # save after this step (save_minutes)
    skipped: bool = False  # the gradient was not finite: no update
    words_before: int = 0  # words seen before this step


def _step(run: _Run, step: int, micro_batches: list, flags: dict[str, bool], window: _Window) -> _StepResult:
    """One optimizer step over this rank's micro-batches, unless the ranks agree to stop first."""
    cfg, t, d = run.cfg, run.cfg.train, run.d
    shape = step_shape(step, cfg, d.world_size)
    lr = t.lr * lr_factor(step, t.max_steps, t.warmup, t.cooldown, t.min_lr_factor)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed((t.seed * 1_000_003 + step) * 1009 + d.rank)  # dropout stream of this step

    # Global target counts per objective -> per-token weights (see module docstring).
    n_c = sum(int(((mb.targets != IGNORE) & mb.is_causal[:, None]).sum()) for mb in micro_batches)
    n_m = sum(int(((mb.targets != IGNORE) & ~mb.is_causal[:, None]).sum()) for mb in micro_batches)
    words = sum(mb.words for mb in micro_batches)
    n_c, n_m, words, *votes = dist_utils.all_reduce_sum([n_c, n_m, words, *(float(v) for v in flags.values())], d)
    votes = dict(zip(flags, votes))
    for reason in ("SIGTERM", "SIGINT", "time budget"):
        if votes[reason] > 0:
            return _StepResult(stop=reason)
    run.batches.commit(step, micro_batches)  # mask counts (balanced masking): the state saved with checkpoints
    frac_causal = float(causal_rows(shape.rows, cfg.objective.causal_ratio, t.seed, step).mean())
    w_c = frac_causal / max(n_c, 1) * d.world_size  # x world: DDP averages gradients over ranks
    w_m = (1.0 - frac_causal) / max(n_m, 1) * d.world_size

    for i, mb in enumerate(micro_batches):
        mb = mb.to(d.device, non_blocking=True)
        flat_targets = mb.targets.reshape(-1)
        positions = (flat_targets != IGNORE).nonzero().squeeze(-1)  # (N,)
        targets, tok_causal = flat_targets[positions], mb.is_causal[:, None].expand_as(mb.targets).reshape(-1)[positions]
        valid = None
        if d.device.type == "cpu":  # N from a short list of sizes, so glibc reuses the last step's blocks
            positions, targets, tok_causal, valid = _pad_targets(positions, targets, tok_causal)
        sync = i == len(micro_batches) - 1
        no_sync = d.enabled and not sync and hasattr(run.net, "no_sync")
        with run.net.no_sync() if no_sync else contextlib.nullcontext():
            with autocast(d.device, t.precision):
                logits = run.net(mb.input_ids, attention_mask(mb.segments, mb.is_causal), positions)
            loss, sums = hybrid_loss(logits, targets, tok_causal, w_c, w_m, cfg.objective.z_loss, valid)
            loss.backward()
        window.ce_c += sums.ce_causal
        window.n_c += sums.n_causal
        window.ce_m += sums.ce_masked
        window.n_m += sums.n_masked

    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
    # The norm is of the all-reduced gradient, so every rank takes the same decision.
    skipped = not bool(torch.isfinite(grad_norm))
    if skipped:
        run.skipped_steps += 1
        run.bad_in_a_row += 1
    else:
        run.bad_in_a_row = 0
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None and not skipped:
        run.ema.update(run.model)
    run.tokens_seen += shape.tokens
    words_before = run.words_seen
    run.words_seen += int(words)  # the rows were read (and the data stream advanced) even when skipped
    window.tokens += shape.tokens
    return _StepResult(lr, float(grad_norm), shape, save=votes["save"] > 0, skipped=skipped, words_before=words_before)


def _pad_targets(positions: torch.Tensor, targets: torch.Tensor, is_causal: torch.Tensor):
    """(N,) target positions, ids and causal flags -> the same padded to `memory.padded_count(N)`
    (position 0, token 0, weight 0), and the (N',) mask of the real ones for `hybrid_loss`."""
    n = positions.numel()
    pad = positions.new_zeros(memory.padded_count(n) - n)
    valid = torch.arange(n + pad.numel(), device=positions.device) < n
    return torch.cat([positions, pad]), torch.cat([targets, pad]), torch.cat([is_causal, pad.bool()]), valid


def _log_row(run: _Run, step: int, lr: float, grad_norm, shape, window: _Window, t_start: float) -> dict:
    """The metrics line of the window that ends at `step` (losses summed over all ranks)."""
    cfg, d = run.cfg, run.d
    ce_c, n_c, ce_m, n_m = dist_utils.all_reduce_sum([window.ce_c, window.n_c, window.ce_m, window.n_m], d)
    dt = time.perf_counter() - window.t0
    return dict(
        step=step + 1, lr=lr, loss_masked=ce_m / n_m if n_m else float("nan"),
        loss_causal=ce_c / n_c if n_c else float("nan"), grad_norm=float(grad_norm),
        mask_rate=step_mask_rate(step, cfg.train.max_steps, cfg.objective),
        seq_length=shape.seq_length, rows=shape.rows, tokens_seen=run.tokens_seen,
        tokens_per_s=window.tokens / dt, elapsed_s=time.perf_counter() - t_start, skipped_steps=run.skipped_steps,
        words_seen=run.words_seen,
    )


def _save(run: _Run, step: int, milestone: str | None = None) -> Path | None:
    """Checkpoint on the main process; every rank waits for it. `milestone` saves chck_NM instead."""
    path = None
    if not all(bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        raise DivergedError(f"{run.out_dir}: the weights at step {step} are not finite; not saving them "
                            "(the last good checkpoint is kept)")
    if run.d.is_main:
        state = {"optimizer": run.optimizer.state_dict(), "skipped_steps": run.skipped_steps,
                 "words_seen": run.words_seen}
        arrays = {}
        mask_state = run.batches.mask_state()
        if mask_state is not None:  # count-balanced masking: the counts before `step` (the same on every rank)
            if mask_state["step"] != step:
                raise RuntimeError(f"internal: mask counts are at step {mask_state['step']}, saving step {step}")
            # the counts (one uint16 per corpus token) go to mask_counts.npy, written straight from the
            # live array: no corpus-sized copy or serialisation buffer at any save
            arrays = {"mask_counts": mask_state.pop("counts")}
            state["mask_counts"] = mask_state
        path = save_checkpoint(
            run.out_dir, step=step, tokens_seen=run.tokens_seen, model_state=state_dict_for_save(run.model),
            ema_state=run.ema.state_dict() if run.ema is not None else None,
            train_state=state, arrays=arrays,
            config=run.cfg.to_dict(), keep_last=run.cfg.train.keep_last,
            on_prune=lambda d: print(f"removed checkpoint {d.name} (train.keep_last={run.cfg.train.keep_last})",
                                     file=sys.stderr),
            name=milestone,
        )
    dist_utils.barrier(run.d)
    return path


def format_losses(val: dict[str, float]) -> str:
    """One line: nats/token losses with their perplexity, bits per byte as they are."""
    return " ".join(f"{k}={v:.4f}" + ("" if "bpb" in k else f" (ppl {math.exp(v):.1f})") for k, v in val.items())
