"""gptbert.memory.release gives freed heap memory back (glibc), which quickstart relies on between phases."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gptbert.memory import padded_count

CHILD = """
import os
from gptbert.memory import release, rss_mb
blocks = [os.urandom(1000) for _ in range(300_000)]  # ~300 MB of small heap blocks
keep = blocks[-1]  # one live block at the top of the heap: glibc cannot shrink the heap by itself
del blocks
before = rss_mb()
ran = release()
print(before, rss_mb(), ran)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_release_returns_freed_heap_to_the_os():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    before, after, ran = float(out[0]), float(out[1]), out[2]
    assert ran == "True"
    assert before > 250  # the freed blocks were still resident
    assert before - after > 200, (before, after)


def _fake_rss(monkeypatch, values):
    """memory.rss_mb returns `values` one by one; memory.release only counts its calls."""
    from gptbert import memory

    it = iter(values)
    calls = []
    monkeypatch.setattr(memory, "rss_mb", lambda: next(it))
    monkeypatch.setattr(memory, "release", lambda: calls.append(1) or True)
    return memory, calls


def test_heap_trimmer_trims_when_rss_grows_past_the_slack(monkeypatch):
    memory, calls = _fake_rss(monkeypatch, [3000, 3200, 3500, 3501, 2900, 3300, 3399, 3400.5])
    trimmer = memory.HeapTrimmer(slack_mb=500)
    # step 1 sets the reference (3000); 3200 and 3500 are within 500 MB of it; 3501 is not: trim.
    assert [trimmer.after_step() for _ in range(4)] == [False, False, False, True]
    # the step after a trim sets a new reference (2900); 3300, 3399 stay; 3400.5 trims again
    assert [trimmer.after_step() for _ in range(4)] == [False, False, False, True]
    assert trimmer.trims == len(calls) == 2


def test_heap_trimmer_trims_at_a_shape_change_and_then_resets(monkeypatch):
    memory, calls = _fake_rss(monkeypatch, [3000, 3100, 5000, 5400, 5600])
    trimmer = memory.HeapTrimmer(slack_mb=500)
    assert trimmer.after_step() is False  # reference 3000
    assert trimmer.after_step(shape_changed=True) is True  # 3100, but the shapes changed
    # the new phase's first step sets the reference (5000): its larger working set is not growth
    assert [trimmer.after_step() for _ in range(3)] == [False, False, True]  # 5400 stays, 5600 trims
    assert len(calls) == 2


KEEP_CHILD = """
import resource, sys
import torch
from gptbert.memory import keep_freed_pages

kept = keep_freed_pages() if sys.argv[1] == "keep" else None
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(256, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 256))
x = torch.randn(4096, 256)  # 32 MB hidden activations, as a small training step's
faults = []
for step in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).square().mean().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sum(faults[2:]))  # steps 3-8: the first two set the heap up
"""


def _keep_child(mode: str, **env) -> tuple[str, int]:
    """(what keep_freed_pages returned, minor page faults of 6 training steps) in a fresh process."""
    out = subprocess.run([sys.executable, "-c", KEEP_CHILD, mode], capture_output=True, text=True, check=True,
                         env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
                              "OMP_NUM_THREADS": "1", **env}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_keep_freed_pages_stops_most_page_faults_of_repeated_steps():
    _, default = _keep_child("default")
    kept, after = _keep_child("keep")
    assert kept == "True"
    # glibc's default maps each large activation afresh: ~35k faults (140 MB of pages) a step here
    assert default > 6 * 20_000, default
    assert after < default / 4, (default, after)  # the freed pages were reused


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_keep_freed_pages_leaves_a_users_malloc_settings_alone():
    kept, after = _keep_child("keep", MALLOC_MMAP_THRESHOLD_="131072")
    assert kept == "False"
    assert after > 6 * 20_000, after  # still fresh mappings each step: the user's setting holds
    kept, after = _keep_child("keep", GPTBERT_KEEP_FREED_PAGES="0")
    assert kept == "False"
    assert after > 6 * 20_000, after  # glibc's defaults


def test_padded_count_uses_few_sizes_and_pads_little():
    assert [padded_count(n) for n in (0, 1, 128, 129, 700, 2047, 2048, 2049, 4097, 70_000)] == \
        [0, 128, 128, 256, 768, 2048, 2048, 2176, 4352, 73_728]
    sizes = {padded_count(n) for n in range(1, 8193)}
    assert len(sizes) == 16 + 16 + 16  # multiples of 128 up to 4096, then of 256 up to 8192
    for n in range(1, 100_000, 7):
        p = padded_count(n)
        assert n <= p <= n + max(127, n // 16) and padded_count(p) == p
