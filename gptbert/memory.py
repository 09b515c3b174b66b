"""Give freed heap memory back to the operating system between the phases of a long command.

Why: glibc's allocator keeps memory that Python and PyTorch freed, ready for reuse. After the
calibration steps of `quickstart` (row lengths up to 4x the first one) and after training, that
freed memory stays in the process's RSS through the phases that follow, and a DataLoader worker
forked meanwhile inherits it too. `release()` asks glibc to return it (`malloc_trim`); elsewhere
(macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

try:
    import resource
except ImportError:  # Windows
    resource = None


def release() -> bool:
    """Collect garbage, then return free heap pages to the OS. True if malloc_trim ran."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


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
