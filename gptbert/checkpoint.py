"""Crash-safe training checkpoints.

A checkpoint is one directory, `<run_dir>/checkpoints/step_XXXXXXX/`:

    model.safetensors  raw weights (fp32, tied tensors stored once)
    ema.safetensors    EMA weights (optional)
    state.pt           optimizer state, step, tokens seen, extras
    <name>.npy         large training-state arrays (optional; e.g. mask_counts.npy, one
                       uint16 per corpus token), written straight from the array and
                       memory-mapped on load, so a save needs no corpus-sized buffer
    config.yaml        the resolved run config
    meta.json          {"step", "tokens_seen", "time", "files": {name: sha256}}

and `<run_dir>/checkpoints/latest` is a text file naming the newest one.

Why it is built this way: pretraining runs are long and get killed (time
limits, preemption, full disks). A save first writes a temporary directory
`step_XXXXXXX.tmp-<pid>`, fsyncs it and only then renames it into place; the
`latest` pointer is rewritten with the same write-then-rename trick. Renames
are atomic, so a crash at any point leaves the previous checkpoint intact and
`latest` naming a complete one. Temporary directories are never picked up.

Weights go into safetensors (no pickle, loadable anywhere, memory-mappable).
The training state needs pickle (optimizer state holds Python containers and
extras that `torch.load(weights_only=True)` may reject), so state.pt is
unpickled only after its sha256 matched meta.json: corrupted files are then
reported as such instead of failing deep inside the unpickler. The checksum
guards integrity, not authenticity: only resume from checkpoints you trust.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import yaml
from torch import Tensor, nn

from .config import ModelConfig, config_from_dict
from .distributed import clean_param_name, unwrap_model
from .errors import GPTBertError, input_error
from .io import atomic_write_text as _atomic_write_text
from .io import fsync_dir as _fsync_dir
from .io import sha256_file as _sha256
from .io import write_synced
from .io import write_synced as _write_text_synced

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
LATEST_FILE = "latest"
REQUIRED_FILES = (MODEL_FILE, STATE_FILE, CONFIG_FILE)

_STEP_DIR = re.compile(r"^step_(\d{7,})$")
_MILESTONE_DIR = re.compile(r"^chck_(\d+)M$")  # BabyLM word-count checkpoints (words.py), never pruned
_TEMP_DIR = re.compile(r"^(?:step_\d{7,}|chck_\d+M)\.(?:tmp|old)-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


# ---------------------------------------------------------------------------
# Tied weights
# ---------------------------------------------------------------------------


def _alias_key(t: Tensor, name: str) -> tuple:
    """Two tensors with the same key are the same tensor (tied weights).

    Empty tensors have no memory to share, so each is its own tensor.
    """
    if t.numel() == 0:
        return ("empty", name)
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def state_dict_for_save(model_or_state: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Weights ready for safetensors: CPU, fp32, contiguous, no shared storage.

    Floating-point tensors are saved in fp32 whatever the training dtype, so a
    checkpoint loads the same way everywhere. A tensor that is the same tensor as an earlier key (e.g. an output layer
    tied to the embedding) is dropped, keeping the first name. Wrapper
    prefixes ('module.', '_orig_mod.') are removed. Partially overlapping
    views are copied so that safetensors accepts them.
    """
    if isinstance(model_or_state, nn.Module):
        state = unwrap_model(model_or_state).state_dict()
    else:
        state = model_or_state
    unique: dict[str, Tensor] = {}
    seen: set[tuple] = set()
    for name, t in state.items():
        key = _alias_key(t, name)
        if key not in seen:
            seen.add(key)
            unique[name] = t.detach()
    # Storages used by more than one kept tensor (e.g. q/k/v views of a fused
    # weight) must be copied, or safetensors refuses to save them.
    storage_users: dict[tuple, int] = {}
    for t in unique.values():
        if t.numel() > 0:
            storage = (t.device, t.untyped_storage().data_ptr())
            storage_users[storage] = storage_users.get(storage, 0) + 1

    out: dict[str, Tensor] = {}
    for name, t in unique.items():
        shared = storage_users.get((t.device, t.untyped_storage().data_ptr()), 0) > 1
        saved = t.to(device="cpu", dtype=torch.float32 if t.is_floating_point() else t.dtype).contiguous()
        if shared and saved.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
            saved = saved.clone()
        out[clean_param_name(name)] = saved
    return out


def _alias_groups(model: nn.Module) -> dict[str, set[str]]:
    """For each state_dict key of `model`, the set of keys that are the same tensor."""
    by_key: dict[tuple, set[str]] = {}
    state = model.state_dict()
    for name, t in state.items():
        by_key.setdefault(_alias_key(t, name), set()).add(name)
    return {name: by_key[_alias_key(t, name)] for name, t in state.items()}


def load_model_weights(model: nn.Module, state: Mapping[str, Tensor], source: str | Path) -> None:
    """Load `state` (from model.safetensors or ema.safetensors) into `model`.

    Keys may be missing only if they are tied to a key that is present (they
    were dropped by `state_dict_for_save`). Any other missing or unexpected
    key, or a shape mismatch, raises a GPTBertError naming `source` and the
    first offending key.
    """
    model = unwrap_model(model)
    expected = model.state_dict()
    aliases = _alias_groups(model)
    for name, t in state.items():
        if name not in expected:
            raise input_error(source, f"unexpected key '{name}' (checkpoint is for a different model architecture?)")
        if tuple(t.shape) != tuple(expected[name].shape):
            raise input_error(
                source,
                f"key '{name}' has shape {tuple(t.shape)} in the checkpoint but {tuple(expected[name].shape)} "
                "in the model (vocab size or model size differs from the config?)",
            )
    for name in expected:
        if name not in state and not any(a in state for a in aliases[name]):
            raise input_error(source, f"missing key '{name}' (checkpoint is for a different model architecture?)")
    model.load_state_dict(dict(state), strict=False)


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------


def _save_safetensors(tensors: dict[str, Tensor], path: Path) -> None:
    # Serialised in memory, written by Python: a full disk then raises an OSError with its errno.
    write_synced(path, safetensors.torch.save(tensors, metadata={"format": "pt"}))


def _save_torch(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_synced(path, buf.getbuffer())  # a view: no second copy of a large state


def _save_array(a: np.ndarray, path: Path) -> None:
    # np.save hands a contiguous array to tofile(): its bytes go to the file without a copy.
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(a), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


_ARRAY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished temporary directory to its final name."""
    if final.exists():
        # Re-saving a step that already exists (e.g. resumed and saved again):
        # a directory cannot be renamed over a non-empty one, so move it aside.
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def _plain(obj: Any) -> Any:
    """Make a config YAML-safe: Paths become strings, tuples lists."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers are stale: we are not saving right now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or unsupported
        return True
    return True


def _remove_stale_temporaries(ckpt_root: Path) -> None:
    """Delete temp/aside directories left by saves that were killed."""
    for d in ckpt_root.iterdir():
        m = _TEMP_DIR.match(d.name)
        if m and d.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)


def _step_dirs(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Final (non-temporary) step directories, sorted by step."""
    dirs = [(int(m.group(1)), d) for d in ckpt_root.iterdir() if (m := _STEP_DIR.match(d.name)) and d.is_dir()]
    return sorted(dirs)


def _prune(ckpt_root: Path, keep_last: int, just_written: Path) -> list[Path]:
    """Remove all but the `keep_last` newest step folders; milestone folders (chck_*) are never touched."""
    dirs = [d for _, d in _step_dirs(ckpt_root)]
    keep = set(dirs[-keep_last:]) | {just_written}
    removed = [d for d in dirs if d not in keep]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


def save_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    tokens_seen: int,
    model_state: Mapping[str, Tensor],
    config: Mapping[str, Any],
    ema_state: Mapping[str, Tensor] | None = None,
    train_state: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    keep_last: int | None = 3,
    on_prune: Callable[[Path], None] | None = None,
    name: str | None = None,
) -> Path:
    """Write `<run_dir>/checkpoints/step_XXXXXXX/` atomically and point `latest` at it.

    `model_state` / `ema_state` are state dicts (tied and wrapped names are
    handled by `state_dict_for_save`); `train_state` (optimizer state and
    extras) is pickled into state.pt together with `step` and `tokens_seen`; `arrays` (large numpy
    state) go into `<name>.npy` files of their own. Afterwards only the `keep_last`
    newest step directories are kept (None keeps all); the one just written
    is never deleted, and `on_prune` is told of every folder removed.
    `name` saves a milestone instead (`chck_10M`): same files, its own folder,
    `latest` and pruning untouched. Returns the checkpoint directory.
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    for key in arrays or {}:
        if not _ARRAY_NAME.match(key):
            raise ValueError(f"array names are lower-case identifiers, got {key!r}")
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(ckpt_root)

    milestone = name is not None
    if milestone and not _MILESTONE_DIR.match(name):
        raise ValueError(f"milestone names look like chck_10M, got {name!r}")
    name = name or step_dir_name(step)
    final = ckpt_root / name
    tmp = ckpt_root / f"{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        files = [MODEL_FILE]
        _save_safetensors(state_dict_for_save(model_state), tmp / MODEL_FILE)
        if ema_state is not None:
            files.append(EMA_FILE)
            _save_safetensors(state_dict_for_save(ema_state), tmp / EMA_FILE)
        files.append(STATE_FILE)
        _save_torch({**(train_state or {}), "step": step, "tokens_seen": tokens_seen}, tmp / STATE_FILE)
        for key, a in (arrays or {}).items():
            files.append(f"{key}.npy")
            _save_array(a, tmp / f"{key}.npy")
        files.append(CONFIG_FILE)
        _write_text_synced(tmp / CONFIG_FILE, yaml.safe_dump(_plain(config), sort_keys=False))
        meta = {
            "step": step,
            "tokens_seen": tokens_seen,
            "time": time.time(),
            "files": {f: _sha256(tmp / f) for f in files},
        }
        # meta.json is written last: a directory without it is never complete.
        _write_text_synced(tmp / META_FILE, json.dumps(meta, indent=2) + "\n")
        _fsync_dir(tmp)
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    if milestone:
        return final
    _atomic_write_text(ckpt_root / LATEST_FILE, name + "\n")
    if keep_last is not None:
        for d in _prune(ckpt_root, keep_last, final):
            if on_prune is not None:
                on_prune(d)
    return final


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path) -> Path:
    """Find the checkpoint directory from a run dir, a checkpoints/ dir, a step dir, or a folder
    that holds exactly one run (a `gptbert quickstart --out` folder: the run is in train/).

    Run and checkpoints directories use `checkpoints/latest`; if that file is
    missing or names a directory that is gone, the newest step directory with
    a meta.json is used.
    """
    p = Path(path)
    if not p.exists():
        raise input_error(p, "checkpoint directory does not exist")
    if not p.is_dir():
        raise input_error(p, "is not a directory (expected a run, checkpoints/ or step_XXXXXXX/ directory)")
    if _TEMP_DIR.match(p.name):
        raise input_error(p, "is the temporary directory of an interrupted save, not a checkpoint")
    if _STEP_DIR.match(p.name) or (p / META_FILE).exists():
        return p
    if not (p / "checkpoints").is_dir() and not (p / LATEST_FILE).is_file() and not _step_dirs(p):
        # A folder that holds one run below it, e.g. a `gptbert quickstart --out` folder (run in train/).
        runs = sorted(c for c in p.iterdir() if (c / "checkpoints").is_dir())
        if len(runs) > 1:
            raise input_error(p, f"holds several runs ({', '.join(r.name for r in runs)}); name one of them")
        if runs:
            p = runs[0]
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"

    latest = p / LATEST_FILE
    if latest.is_file():
        name = latest.read_bytes().decode("utf-8", errors="replace").strip()  # a damaged pointer is ignored
        if _STEP_DIR.match(name) and (p / name).is_dir():
            return p / name
    complete = [d for _, d in _step_dirs(p) if (d / META_FILE).is_file()] if p.is_dir() else []
    if complete:
        return complete[-1]
    raise input_error(p, "no checkpoint found (expected a 'latest' file or step_XXXXXXX/ directories)")


def _check_safetensors_structure(path: Path) -> None:
    """Cheap validation of the safetensors layout, so truncation gets a clear message."""
    problem = "is truncated or not a safetensors file"
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            if size < 8:
                raise ValueError
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError
            header = json.loads(f.read(header_len))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        if 8 + header_len + max(ends, default=0) != size:
            raise ValueError
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError):
        raise input_error(path, problem) from None


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Tensor]:
    _check_safetensors_structure(path)
    try:
        return safetensors.torch.load_file(str(path), device=str(map_location))
    except Exception:
        raise input_error(path, "is truncated or not a safetensors file") from None


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


@dataclass
class Checkpoint:
    """A loaded, checksum-verified checkpoint."""

    path: Path  # the step folder
    model: dict[str, Tensor]  # raw weights
    ema: dict[str, Tensor] | None  # EMA weights, when the run kept them
    state: dict[str, Any]  # optimizer state, step, tokens_seen, extras
    config: dict[str, Any]  # the run config as saved (sections model, objective, train)
    meta: dict[str, Any]  # step, tokens_seen, time, file checksums
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # <name>.npy, read-only memory maps

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def tokens_seen(self) -> int:
        return int(self.meta.get("tokens_seen", 0))

    @property
    def run_dir(self) -> Path:
        """The run folder: the parent of checkpoints/."""
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else self.path.parent

    def model_config(self) -> ModelConfig:
        """The validated model section of config.yaml."""
        where = self.path / CONFIG_FILE
        if not isinstance(self.config.get("model"), dict):
            raise input_error(where, "has no 'model' section")
        try:
            mc = config_from_dict({"model": self.config["model"]}, str(where)).model
            mc.validate(f"{where}: model")
        except GPTBertError as e:
            raise GPTBertError(str(e)) from None
        return mc


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint (a run folder, its checkpoints/ folder or a step folder).

    Every file listed in meta.json is checked against its sha256 before it is
    parsed; problems raise GPTBertError naming the file.
    """
    d = resolve_checkpoint(path)

    meta_path = d / META_FILE
    if not meta_path.is_file():
        raise input_error(meta_path, "missing (incomplete or not a checkpoint directory)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = meta["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (ValueError, KeyError, TypeError) as e:
        raise input_error(meta_path, f"is not valid checkpoint metadata ({_one_line(e)})") from None

    for name in REQUIRED_FILES:
        if name not in files:
            raise input_error(meta_path, f"does not list {name}")
    for name, digest in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            raise input_error(meta_path, f"lists an invalid file name {name!r}")
        f = d / name
        if not f.is_file():
            raise input_error(f, "missing")
        if name.endswith(".safetensors"):
            _check_safetensors_structure(f)
        if _sha256(f) != digest:
            raise input_error(f, "is corrupted (checksum mismatch)")

    model = _load_safetensors(d / MODEL_FILE, map_location)
    ema = _load_safetensors(d / EMA_FILE, map_location) if EMA_FILE in files else None
    try:
        # Safe to unpickle: the checksum above matched (see module docstring).
        state = torch.load(d / STATE_FILE, map_location=map_location, weights_only=False)
    except Exception as e:
        raise input_error(d / STATE_FILE, f"cannot be read ({_one_line(e)})") from None
    try:
        config = yaml.safe_load((d / CONFIG_FILE).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise input_error(d / CONFIG_FILE, f"is not valid YAML ({_one_line(e)})") from None

    if not isinstance(config, dict):
        raise input_error(d / CONFIG_FILE, "is not a mapping of config sections")
    if not isinstance(state, dict):
        raise input_error(d / STATE_FILE, "does not hold a training-state dict")
    arrays = {}
    for name in files:
        if name.endswith(".npy"):
            try:
                arrays[name[:-4]] = np.load(d / name, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise input_error(d / name, f"is not a numpy array file ({_one_line(e)})") from None
    return Checkpoint(path=d, model=model, ema=ema, state=state, config=config, meta=meta, arrays=arrays)

