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
