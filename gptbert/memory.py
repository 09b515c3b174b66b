"""How a CPU run's process holds its heap: keep freed pages within a phase, hand them back between.

Within a phase (training steps of one shape, scoring batches), `keep_freed_pages()` keeps the pages
of freed tensors mapped, so that the next step reuses them instead of faulting fresh zeroed pages
in from the kernel. Between phases, glibc's allocator keeps memory that Python and PyTorch freed,
ready for reuse: after the calibration steps of `quickstart` (row lengths up to 4x the first one)
and after training, that freed memory stays in the process's RSS through the phases that follow,
and a DataLoader worker forked meanwhile inherits it too. `release()` asks glibc to return it
(`malloc_trim`), and `HeapTrimmer` decides when. Elsewhere (macOS, musl) all of this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys

try:
    import resource
except ImportError:  # Windows
    resource = None


def _glibc_function(name: str):
    """`name` from the C library when it is glibc on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None


def release() -> bool:
    """Collect garbage, then return free heap pages to the OS. True if malloc_trim ran."""
    gc.collect()
    trim = _glibc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


# glibc's mallopt parameters (malloc.h) and the values keep_freed_pages sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 256 << 20}
_USER_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def keep_freed_pages() -> bool:
    """Serve tensors of up to 1 GB from the heap and keep freed heap pages mapped. True if set.

    Why: by default glibc gives every block above a threshold (128 KB, rising to at most 32 MB as
    such blocks are freed) its own mmap, returned to the kernel when freed, and trims the heap's
    top whenever 128 KB of it are free. A training step frees and re-allocates gigabytes of
    activations, so each step faults its whole working set back in, page by page, zeroed by the
    kernel. On the 2-core development VMs that was up to a third of a step's CPU time
    (measurements: docs/performance.md, "Page faults: the allocator"). The heap still shrinks:
    `HeapTrimmer` trims when it grows, and `release()` between phases. Calling it again (the CLI
    and `train()` both do) sets the same values.

    It changes the whole process's allocator (one call is enough; forked DataLoader workers inherit
    it). It does nothing when the environment sets `GPTBERT_KEEP_FREED_PAGES=0` (glibc's defaults)
    or any of glibc's own knobs (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
    `MALLOC_TOP_PAD_`, `MALLOC_MMAP_MAX_`, a `glibc.malloc` tunable in `GLIBC_TUNABLES`): a user's
    own allocator settings win.
    """
    if os.environ.get("GPTBERT_KEEP_FREED_PAGES", "1") == "0":
        return False
    if any(k in os.environ for k in _USER_MALLOC_ENV) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all([mallopt(param, value) == 1 for param, value in _KEEP.items()])


def padded_count(n: int, smallest: int = 128) -> int:
    """n rounded up to a size from a short list: a multiple of 128, or of 1/16 of n's power of two.

    A training step's largest tensors are (N, V) logits and their loss at the N target positions,
    and N changes every step (random masks, causal rows). glibc serves each new size from fresh
    heap space when no freed block fits, so the heap grew ~30 MB a step, the trimmer handed it back
    every few steps and the next steps faulted it in again. Padding N to one of a few sizes (at
    most 1/16 more positions, or 127) lets each step reuse the last one's blocks
    (docs/performance.md, "Page faults: target counts").
    """
    quantum = max(smallest, 1 << max(0, n.bit_length() - 5))
    return -(-n // quantum) * quantum


def rss_mb() -> float:
    """Resident memory of this process now, in MB (0 where /proc is missing)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    """Highest resident memory this process has had so far, in MB (what `/usr/bin/time -v` reports)."""
    if resource is None:  # not POSIX
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KB on Linux


class HeapTrimmer:
    """Decides, after each training step, whether to hand the freed heap back (`release`).

    A trim costs about a second on a CPU run (the pages are faulted back in by the next step), so
    trimming every step is out; trimming every N steps lets the heap grow by however much N steps
    fragment it (about 1 GB per 50 steps in an hour-long `cpu-quick` run). Instead this trims when
    the resident memory at the end of a step is more than `slack_mb` above the reference: the RSS
    after the first step that follows a trim, which is the step's own working set plus what it
    could not reuse. So the heap never holds more than ~`slack_mb` of stale blocks, and a run whose
    heap does not grow never pays for a trim. A change of tensor shapes (`shape_changed`, the
    length schedule's phases) trims at once: none of the old blocks fits the new tensors well.
    """

    def __init__(self, slack_mb: float = 512.0):
        self.slack_mb = slack_mb
        self.reference_mb: float | None = None  # None: the next step sets it
        self.trims = 0

    def after_step(self, shape_changed: bool = False) -> bool:
        """Call at the end of every step. True if it trimmed."""
        now = rss_mb()
        if not shape_changed:
            if self.reference_mb is None:
                self.reference_mb = now
                return False
            if now <= self.reference_mb + self.slack_mb:
                return False
        release()
        self.trims += 1
        self.reference_mb = None
        return True
