"""The CPU's name for benchmark headers: every speed number here is only meaningful next to it."""

from __future__ import annotations


def cpu_name() -> str:
    """Model name and matrix ISA from /proc/cpuinfo, e.g. "AMD EPYC (avx512_bf16, no AMX)"."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        import platform

        return platform.processor() or "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "CPU")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(isa) or 'no AVX-512'}{'' if 'amx_bf16' in flags else ', no AMX'})"
