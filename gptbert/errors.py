"""User-facing errors.

Anything the user can fix (a bad corpus file, a bad config value, a corrupted
checkpoint) raises `GPTBertError`. The CLI prints its message on one line and
exits with status 2, without a traceback. The message always names the file
(or config key) and the problem.
"""

from __future__ import annotations

from pathlib import Path


class GPTBertError(Exception):
    """An error caused by the user's input, reported without a traceback."""


def input_error(path: str | Path, problem: str) -> GPTBertError:
    """Build the standard one-line message: '<path>: <problem>'."""
    return GPTBertError(f"{path}: {problem}")
