"""The options of one `gptbert submission` invocation and the model name it writes under."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import GPTBertError, did_you_mean
from .tasks import ALL_TASK_NAMES, BACKENDS, GROUPS, MAIN, TRACKS


@dataclass
class SubmissionOptions:
    run: str
    out: str
    backend: str = "mntp"
    track: str = "strict-small"
    model_name: str | None = None
    only: tuple[str, ...] = GROUPS
    skip_finetune: bool = False
    revisions: tuple[str, ...] | None = None  # only these revisions (None: all)
    tasks: tuple[str, ...] | None = None  # only these pieces (None: all)
    limit: int | None = None
    recompute: bool = False
    comps: str | None = None
    data_dir: str | None = None
    data_dir_2025: str | None = None
    glue_dir: str | None = None
    multirc_train: str | None = None
    ewok_password: str = "ewok"
    raw: bool = False
    precision: str = "auto"
    device: str = "cpu"
    max_tokens: int = 4096
    seed: int = 42
    finetune_track: str = "auto"
    progress: bool = False

    def check(self) -> None:
        """Names and numbers, before anything is loaded."""
        if self.backend not in BACKENDS:
            raise GPTBertError(f"--backend: '{self.backend}' is not one of {', '.join(BACKENDS)} "
                               "(the 2025 pipeline's backends that GPT-BERT's scoring modes reproduce)")
        if self.track not in TRACKS:
            raise GPTBertError(f"--track: '{self.track}' is not one of {', '.join(TRACKS)}")
        for g in self.only:
            if g not in GROUPS:
                raise GPTBertError(f"--only: unknown part '{g}'{did_you_mean(g, GROUPS)} (choose from {', '.join(GROUPS)})")
        if not self.only:
            raise GPTBertError("--only: nothing selected")
        for r in self.revisions or ():
            if r != MAIN and r not in TRACKS[self.track]:
                raise GPTBertError(f"--revisions: '{r}' is not a revision of the {self.track} track "
                                   f"({TRACKS[self.track][0]}..{TRACKS[self.track][-1]}, main)"
                                   f"{did_you_mean(r, [*TRACKS[self.track], MAIN])}")
        for t in self.tasks or ():
            if t not in ALL_TASK_NAMES:
                raise GPTBertError(f"--tasks: unknown piece '{t}'{did_you_mean(t, ALL_TASK_NAMES)} "
                                   f"(choose from {', '.join(ALL_TASK_NAMES)})")
        if self.limit is not None and self.limit < 1:
            raise GPTBertError("--limit must be >= 1")
        if self.max_tokens < 16:
            raise GPTBertError("--max-tokens must be >= 16")
        if self.model_name is not None:
            check_model_name(self.model_name)


def check_model_name(name: str) -> str:
    """collate_preds.py looks under results/<Path(model).stem>/: the name must survive that."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or Path(name).stem != name:
        raise GPTBertError(f"--model-name: '{name}' cannot name the results folder (the official collation reads "
                           f"results/<Path(name).stem>/, which would be '{Path(name).stem}'); use a plain name "
                           "without '/' or a '.suffix'")
    return name


def default_model_name(run: str | Path) -> str:
    """The name of the folder given (the run folder, or the quickstart folder above it)."""
    p = Path(run).resolve()
    if p.name == "checkpoints":
        p = p.parent
    name = p.name.replace(".", "-")
    return name or "model"
