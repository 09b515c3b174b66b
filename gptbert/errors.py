"""User-facing errors.

Anything the user can fix (a bad corpus file, a bad config value, a corrupted
checkpoint) raises `GPTBertError`. The CLI prints its message on one line and
exits with status 2, without a traceback. The message always names the file
(or config key) and the problem.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class GPTBertError(Exception):
    """An error caused by the user's input, reported without a traceback."""


def input_error(path: str | Path, problem: str) -> GPTBertError:
    """Build the standard one-line message: '<path>: <problem>'."""
    return GPTBertError(f"{path}: {problem}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when one of `choices` is close to `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
