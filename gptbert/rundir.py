"""The run folder: it belongs to one run, and its metrics files match its checkpoints.

A run folder (`--train.out_dir`) holds config.yaml, metrics.csv/.jsonl,
validation.csv/.jsonl, tensorboard/ and checkpoints/. Mixing two runs in one
folder is how results get lost silently (the newer `latest` hides the older
model, rows of both runs interleave in metrics.csv), so `prepare_run_dir`
refuses a folder that holds another run unless the user says what to do:

  resume=None        the folder must be new or empty
  resume="auto"      continue the newest complete checkpoint in it, or start
                     fresh when there is none (a crash before the first save)
  resume=PATH        continue that checkpoint
  overwrite=True     clear the folder first (only a folder that looks like a
                     run folder, or is empty: never an arbitrary directory)

On resume, metrics rows after the resumed step are dropped (they belong to the
part of the run that is being redone), as is a partial last line left by a
killed process, so a resumed run's metrics equal those of an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .checkpoint import LATEST_FILE, resolve_checkpoint
from .errors import GPTBertError
from .io import atomic_write_text

RUN_FILES = ("config.yaml", "metrics.csv", "metrics.jsonl", "validation.csv", "validation.jsonl")
RUN_DIRS = ("checkpoints", "tensorboard")
METRIC_STEMS = ("metrics", "validation")


def holds_a_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).exists() for n in RUN_FILES + RUN_DIRS)


def newest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint of the run in `folder`, or None."""
    if not (folder / "checkpoints").is_dir():
        return None
    try:
        return resolve_checkpoint(folder)
    except GPTBertError:
        return None


def prepare_run_dir(out_dir: Path, resume: str | Path | None, overwrite: bool, *, clear: bool = True) -> Path | None:
    """Check (and with `overwrite`, clear) the run folder before any work; return the checkpoint to resume.

    `clear=False` only checks (other ranks of a distributed run; rank 0 clears).
    """
    if overwrite and resume is not None:
        raise GPTBertError("--overwrite and --resume contradict each other: choose one")
    if out_dir.exists() and not out_dir.is_dir():
        raise GPTBertError(f"{out_dir}: run folder path exists and is not a folder")
    if overwrite:
        if out_dir.exists() and any(out_dir.iterdir()) and not holds_a_run(out_dir):
            raise GPTBertError(f"{out_dir}: not a run folder (no config.yaml, metrics or checkpoints); "
                               "refusing to clear it, choose another --train.out_dir")
        if clear and out_dir.exists():
            for child in out_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return None
    if resume == "auto":
        found = newest_checkpoint(out_dir)
        if found is None and clear:
            _truncate_metrics(out_dir, 0)  # the attempt that never saved: its rows are void
        return found
    if resume is not None:
        return resolve_checkpoint(resume)
    if holds_a_run(out_dir):
        what = "checkpoints" if (out_dir / "checkpoints" / LATEST_FILE).exists() else "files of another run"
        raise GPTBertError(f"{out_dir}: holds {what}; pass --resume auto to continue it, --overwrite to replace "
                           "it, or choose another --train.out_dir")
    return None


def after_resume(out_dir: Path, step: int) -> None:
    """Drop metrics rows of steps after `step` (redone by the resumed run) and partial lines."""
    _truncate_metrics(out_dir, step)


def _truncate_metrics(out_dir: Path, step: int) -> None:
    for stem in METRIC_STEMS:
        jsonl = out_dir / f"{stem}.jsonl"
        if jsonl.is_file():
            keep = []
            for line in jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                    keep.append(line)
            atomic_write_text(jsonl, "".join(f"{line}\n" for line in keep))
        csv = out_dir / f"{stem}.csv"
        if csv.is_file():
            lines = csv.read_text(encoding="utf-8").splitlines()
            if not lines:
                continue
            header, rows = lines[0], lines[1:]
            width = len(header.split(","))
            keep = [r for r in rows if len(r.split(",")) == width and _csv_step(r) is not None and _csv_step(r) <= step]
            atomic_write_text(csv, "".join(f"{line}\n" for line in [header, *keep]) if keep or step else "")


def _csv_step(row: str) -> int | None:
    try:
        return int(row.split(",", 1)[0])
    except ValueError:
        return None


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
            new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
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
