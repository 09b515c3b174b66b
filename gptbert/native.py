"""Small C kernels, compiled on first use with the system C compiler and loaded with ctypes.

Some elementwise work runs far below the machine's speed in eager PyTorch on a 2-core CPU:
each op is its own pass through memory, and a few CPU kernels are not vectorised at all (the
tanh form of GELU took 5x as long as the exact one on an AMX Xeon, `docs/performance.md`).
A few dozen lines of C, compiled with `-O3 -march=native`, do such work in one pass.

`library(name, source, signatures)` builds `source` once per machine into a cache folder
(`$GPTBERT_CACHE/native`, else `~/.cache/gptbert/native`), keyed by the source, the
compiler, the flags and the CPU's flags; it needs no torch headers, so this takes well under
a second. It returns None, and the caller uses its torch path (same math), where there is no
C compiler, on Windows, when the build or the load fails, or with GPTBERT_NATIVE=0.
`parallel(run, n)` splits n rows over torch's thread count with Python threads (a ctypes
call releases the GIL), so the kernels use the cores torch would.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

# -fassociative-math lets sums use vector accumulators; -ffinite-math-only lets clamps be vector
# max/min (GCC 12 vectorises neither without them). The kernels clamp their inputs themselves.
# -ffp-contract=fast: under -std=c99 GCC would not fuse a * b + c into one FMA, so every polynomial
# (exp, tanh) took twice the instructions (the sweep's kernel ran 1.2-1.4x slower without it).
FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
         "-fassociative-math", "-fno-signed-zeros", "-ffinite-math-only", "-ffp-contract=fast", "-std=c99"]



def _vector_flags(cpu_flags: str) -> list[str]:
    """GCC vectorises with 256-bit registers even where -march=native has AVX-512 (its tuning for
    Intel server cores); 512-bit ones made the sweep's kernel 1.3x faster on an AMX Xeon and a
    training step ~4% faster (docs/performance.md, 2026-12-03). Zen 4 splits them in two halves."""
    return ["-mprefer-vector-width=512"] if "avx512f" in cpu_flags.split() else []


_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}
_pools: dict[int, ThreadPoolExecutor] = {}  # by worker count


def enabled() -> bool:
    return os.environ.get("GPTBERT_NATIVE", "1") != "0"


def _cpu_flags() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cache_dir() -> Path:
    root = os.environ.get("GPTBERT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                          or os.path.expanduser("~/.cache"), "gptbert")
    return Path(root) / "native"


def _build(name: str, source: str, signatures: Mapping[str, tuple[list, object]]) -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or sys.platform == "win32":
        return None
    flags = [*FLAGS, *_vector_flags(_cpu_flags())]
    key = hashlib.sha256("\0".join([source, cc, *flags, _cpu_flags(), platform.machine()]).encode()).hexdigest()
    lib_path = cache_dir() / f"{name}-{key[:16]}.so"
    if not lib_path.is_file():
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
            src = Path(tmp) / f"{name}.c"
            src.write_text(source)
            out = Path(tmp) / f"{name}.so"
            done = subprocess.run([cc, *flags, str(src), "-o", str(out)], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"gptbert: compiling the native {name} kernel failed ({cc}); using the torch path:\n"
                      f"{done.stderr[-2000:]}", file=sys.stderr)
                return None
            os.replace(out, lib_path)  # atomic: a concurrent process sees the old file or the whole new one
    lib = ctypes.CDLL(str(lib_path))
    for fn, (argtypes, restype) in signatures.items():
        getattr(lib, fn).argtypes = argtypes
        getattr(lib, fn).restype = restype
    return lib


def library(name: str, source: str, signatures: Mapping[str, tuple[list, object]]) -> ctypes.CDLL | None:
    """The compiled `source` (functions typed by `signatures`: name -> (argtypes, restype)), built on
    first use; None where native code is off or cannot be built (the caller's torch path runs)."""
    if not enabled():
        return None
    if name in _libs:  # built (or failed) already: no lock on the hot path (every GeGLU and dropout call)
        return _libs[name]
    with _lock:
        if name not in _libs:
            try:
                _libs[name] = _build(name, source, signatures)
            except OSError as e:  # unwritable cache, a library that will not load: the torch path still works
                print(f"gptbert: native {name} kernel unavailable ({e}); using the torch path", file=sys.stderr)
                _libs[name] = None
        return _libs[name]


def parallel(run: Callable[[int, int], None], n: int, min_rows: int = 1) -> None:
    """run(lo, hi) over [0, n) in torch.get_num_threads() contiguous slices of at least min_rows rows."""
    workers = max(1, min(torch.get_num_threads(), n // max(1, min_rows)))
    if workers == 1:
        run(0, n)
        return
    with _lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gptbert-native")
        pool = _pools[workers]
    step = -(-n // workers)
    list(pool.map(lambda lo: run(lo, min(n, lo + step)), range(0, n, step)))
