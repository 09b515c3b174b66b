"""Where the data is when the user does not say: every data default in one place.

gptbert never downloads data at run time. It reads a *data root* laid out as

    <root>/pretrain/      a BabyLM-format corpus (text files) for `quickstart` / `tokenizer` / `prepare`
    <root>/eval/          BLiMP, supplement, EWoK, LAMBADA, glue_filtered/, superglue_original/
    <root>/babylm2025/    the BabyLM 2025 zero-shot tasks (entity tracking, WUG, reading, AoA)

(the BabyLM organisers' downloads, see README "Data"). The root is, in order:
the `--data-dir` flag of a command (or a more specific flag such as `--data`),
the `GPTBERT_DATA` environment variable, then `../shared/data` seen from the
working directory and from the source checkout (the layout of this project's
development machines). When none exists, the error names both ways to set it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import GPTBertError

ENV_VAR = "GPTBERT_DATA"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the checkout, for an editable install


def _candidates() -> list[Path]:
    return [Path.cwd().parent / "shared" / "data", Path("shared") / "data", _SOURCE_ROOT.parent / "shared" / "data"]


def data_root(explicit: str | Path | None = None, flag: str = "--data-dir") -> Path:
    """The data root: `explicit`, else $GPTBERT_DATA, else the first `../shared/data` that exists.
    `flag` is the command-line flag named in the error when none is found."""
    if explicit:
        p = Path(explicit)
        if not p.is_dir():
            raise GPTBertError(f"{p}: data folder does not exist")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise GPTBertError(f"{p}: data folder named by ${ENV_VAR} does not exist")
        return p
    for p in _candidates():
        if p.is_dir():
            return p
    raise GPTBertError(f"no data folder found: pass {flag} or set {ENV_VAR}=DIR "
                       f"(a folder with pretrain/, eval/, babylm2025/; looked at {', '.join(map(str, _candidates()))})")


def data_path(sub: str, explicit: str | Path | None = None, flag: str = "--data-dir") -> Path:
    """A folder or file under the data root (`explicit`, the value of `flag`, wins when given)."""
    if explicit:
        return Path(explicit)
    return data_root(flag=flag) / sub


def pretrain_dir(explicit=None) -> Path:
    """The corpus folder of `quickstart`, `tokenizer` and `prepare` (flag `--data`)."""
    return data_path("pretrain", explicit, "--data DIR")


def eval_dir(explicit=None) -> Path:
    """BLiMP, supplement, EWoK, LAMBADA (flag `--data-dir` of `gptbert eval`)."""
    return data_path("eval", explicit, "--data-dir DIR")


def glue_dir(explicit=None) -> Path:
    """The BabyLM (Super)GLUE files (flag `--glue-dir` of `gptbert finetune`)."""
    return data_path("eval/glue_filtered", explicit, "--glue-dir DIR")


def babylm2025_dir(explicit=None) -> Path:
    """The BabyLM 2025 zero-shot tasks."""
    return data_path("babylm2025", explicit, "--data-dir DIR")


DEFAULTS_HELP = f"${ENV_VAR}, else ../shared/data"
