"""Precision contexts: bf16 autocast, and which library runs fp32 matmuls on the CPU.

`autocast(device, precision)` is the one place that decides what runs in bf16:
training, validation, evaluation, fine-tuning and the budget calibration all
call it. Under bf16 the weights stay fp32 (autocast casts matmul inputs), and
the model keeps its residual stream and layer-weight sums in fp32 itself.

fp32 matmuls. PyTorch sends fp32 matmuls on the CPU to MKL's sgemm, which
takes a slow code path on CPUs that are not Intel's; oneDNN's own fp32 kernel
(`brg_matmul:avx512_core`) is much faster there (docs/performance.md has the
measurements). PyTorch only routes fp32 matmuls to oneDNN when its "fpmath
mode" lets them use bf16 (`torch.backends.mkldnn.matmul.fp32_precision =
"bf16"`). oneDNN then picks a bf16 kernel only where it has one for fp32
inputs with implicit down-conversion, i.e. on AMX CPUs; elsewhere it runs true
fp32 (the results agree with sgemm to ~1e-6 relative, only the summation order
differs). So `fp32_matmul_via_onednn` switches it on only when the CPU has no
AMX: fp32 stays fp32. bf16 autocast runs do not need it.
"""

from __future__ import annotations

import contextlib
import functools

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True if /proc/cpuinfo lists AMX tiles (or cannot be read: then assume it might)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return True


def onednn_fp32_is_exact() -> bool:
    """oneDNN may take fp32 matmuls here without rounding them to bf16."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.backends.mkldnn, "matmul")
            and hasattr(torch.backends.mkldnn.matmul, "fp32_precision") and not cpu_has_amx())


class fp32_matmul_via_onednn:
    """Context manager (also usable as start()/stop()): fp32 CPU matmuls through oneDNN while active.

    enabled=False, or a CPU where that could round to bf16, makes it a no-op.
    `force=True` sets the mode even with AMX (bf16 inputs, fp32 accumulation):
    evaluation in bf16 mode uses that for its fp32 output head.
    """

    def __init__(self, enabled: bool = True, force: bool = False):
        self.active = enabled and (force or onednn_fp32_is_exact())
        self.saved: str | None = None

    def start(self) -> "fp32_matmul_via_onednn":
        if self.active:
            try:
                self.saved = torch.backends.mkldnn.matmul.fp32_precision
                torch.backends.mkldnn.matmul.fp32_precision = "bf16"
            except (AttributeError, RuntimeError):
                self.active = False
        return self

    def stop(self) -> None:
        if self.active and self.saved is not None:
            torch.backends.mkldnn.matmul.fp32_precision = self.saved
            self.saved = None

    def __enter__(self) -> "fp32_matmul_via_onednn":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False


@functools.lru_cache(maxsize=8)
def bf16_is_native(device_type: str) -> bool:
    """Does this device run bf16 matmuls in hardware-backed kernels?

    CUDA: the GPU supports bf16. CPU: oneDNN has bf16 kernels (AVX-512 or AMX; PyTorch asks oneDNN).
    On a CPU with AVX2 only (e.g. an AMD EPYC of the Zen 3 generation) bf16 matmuls fall back to a
    plain single-threaded loop, many times slower than fp32 (docs/performance.md has the numbers).
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"auto" -> "bf16" where the device runs bf16 matmuls natively (bf16_is_native), else "fp32".
    Every other value is returned as given (an explicit "bf16" stays bf16, however slow)."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_native(torch.device(device).type) else "fp32"


def precision_note(precision: str, device: torch.device | str) -> str | None:
    """One line for the user when the precision was chosen for them or will be slow; None otherwise."""
    kind = torch.device(device).type
    if precision == "auto" and not bf16_is_native(kind):
        why = " (no AVX-512/AMX)" if kind == "cpu" else ""
        return f"precision auto -> fp32: this {kind.upper()} has no native bf16 matmuls{why}"
    if precision == "bf16" and kind == "cpu" and not bf16_is_native(kind):
        return ("precision bf16 on a CPU without native bf16 matmuls (no AVX-512/AMX): expect it to run many "
                "times slower than fp32; precision auto picks fp32 here")
    return None


def autocast(device: torch.device | str, precision: str):
    """bf16 autocast for precision "bf16" (or "auto" where bf16 is native) on CPU and CUDA; a no-op
    context otherwise (fp32, fp64)."""
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    if precision == "bf16" and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
