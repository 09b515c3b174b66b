"""Process-group setup: one process, or DDP under torchrun, with no code changes.

`torchrun --nproc_per_node=N gptbert train ...` sets RANK / WORLD_SIZE /
LOCAL_RANK; we then join a process group (NCCL on CUDA, gloo on CPU) and wrap
the model in DistributedDataParallel. Without those variables everything runs
in one process. The model itself never knows (parallelism wraps the model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """auto -> cuda:<local_rank> if available, else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return dev


def setup(device: str = "auto") -> Dist:
    """Join the torchrun process group if there is one; choose the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Sum a few numbers over all ranks (float64, so token counts stay exact)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def wrap_model(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """DDP around the model when distributed; the bare model otherwise."""
    if not d.enabled:
        return model
    return DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


# ---------------------------------------------------------------------------
# Wrappers: DDP puts the model under `.module`, torch.compile under `._orig_mod`.

_WRAPPER_ATTRS = ("module", "_orig_mod")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model under any (Distributed)DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def clean_param_name(name: str) -> str:
    """Strip wrapper prefixes: 'module._orig_mod.layers.0.w' -> 'layers.0.w'.

    A leading 'module.' comes from DDP; '_orig_mod.' from torch.compile, which
    can also appear in the middle when only a submodule was compiled.
    """
    parts = name.split(".")
    while len(parts) > 1 and parts[0] in _WRAPPER_ATTRS:
        parts = parts[1:]
    return ".".join(p for p in parts if p != "_orig_mod")
