"""One piece of a submission: its file, layout and count checks, the checkpoint it was made from, writing it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import EMA_FILE, META_FILE, MODEL_FILE
from ..errors import GPTBertError
from ..io import atomic_write_text, sha256_file
from .tasks import AOA_SIZE, TaskSpec

PIECE_META = "gptbert_piece.json"


@dataclass
class Piece:
    revision: str
    spec: TaskSpec
    path: Path
    status: str = "missing"
    detail: str = ""
    meta: dict | None = None  # our gptbert_piece.json, when it belongs to this predictions file
    counts: dict[str, int] = field(default_factory=dict)
    action: str = ""  # computed / collected / "" (nothing done)
    why_not: str = ""  # why it was not computed this time
    makeable: bool = True  # False: no command can make it (no such checkpoint in the run)
    extra_args: tuple[str, ...] = ()  # arguments the command to make it also needs

    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return f"{self.revision}/{self.task}"


def load_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def layout_problem(data, fields: Sequence[str]) -> str | None:
    """Why `data` is not an official predictions file ({key: {"predictions": [{"id", "pred", ...}]}}), or None."""
    if not isinstance(data, dict) or not data:
        return "not a JSON object of sub-tasks"
    for k, v in data.items():
        if not isinstance(v, dict) or not isinstance(v.get("predictions"), list):
            return f"sub-task '{k}' has no 'predictions' list"
        for i, p in enumerate(v["predictions"]):
            if not isinstance(p, dict):
                return f"'{k}' prediction {i} is not an object"
            for f in fields:
                if f not in p:
                    return f"'{k}' prediction {i} has no '{f}'"
    return None


def compare_counts(counts: dict[str, int], expected: dict[str, int], what: str = "sub-tasks") -> str | None:
    """None when the keys (compared case-insensitively, as collate_preds does) and their counts are
    exactly the expected ones; else one line naming every difference ("N of M items")."""
    got = {k.lower(): (k, n) for k, n in counts.items()}
    want = {k.lower(): (k, n) for k, n in expected.items()}
    parts = []
    absent = [want[k][0] for k in want if k not in got]
    extra = [got[k][0] for k in got if k not in want]
    wrong = [(want[k][0], got[k][1], want[k][1]) for k in want if k in got and got[k][1] != want[k][1]]
    have = sum(min(got[k][1], want[k][1]) for k in want if k in got)
    total = sum(n for _, n in want.values())
    if not (absent or extra or wrong):
        return None
    parts.append(f"{have:,} of {total:,} items")

    def some(xs):
        return ", ".join(xs[:4]) + (f", ... ({len(xs)} in all)" if len(xs) > 4 else "")

    if wrong:
        parts.append(some([f"{k} {n:,} of {m:,}" for k, n, m in wrong]))
    if absent:
        parts.append(f"no {what} {some(absent)}")
    if extra:
        parts.append(f"unexpected {what} {some(extra)}")
    return "; ".join(parts)


def check_file(path: Path, spec: TaskSpec, revisions: Sequence[str]) -> tuple[str, str, dict[str, int]]:
    """(status, detail, counts) of one predictions file (or AoA surprisal file) against its sizes."""
    if not path.is_file():
        return "missing", "", {}
    try:
        data = load_json(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return "invalid", f"not readable JSON ({' '.join(str(e).split())[:100]})", {}
    if spec.name == "aoa":
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) and "step" in r and "surprisal" in r
                                                    for r in results):
            return "invalid", "not an AoA surprisal file (a 'results' list of records with step and surprisal)", {}
        counts: dict[str, int] = {}
        for r in results:
            counts[str(r["step"])] = counts.get(str(r["step"]), 0) + 1
        problem = compare_counts(counts, {r: AOA_SIZE for r in revisions}, "checkpoints")
    else:
        problem = layout_problem(data, spec.fields)
        if problem:
            return "invalid", problem, {}
        counts = {k: len(v["predictions"]) for k, v in data.items()}
        problem = compare_counts(counts, spec.sizes)
    return ("short", problem, counts) if problem else ("ok", "", counts)


def read_piece_meta(path: Path) -> dict | None:
    """Our record of how a predictions file was made, if it belongs to that very file."""
    meta_path = path.parent / PIECE_META
    if not meta_path.is_file() or not path.is_file():
        return None
    try:
        meta = load_json(meta_path)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("file") != path.name or meta.get("sha256") != sha256_file(path):
        return None
    return meta


def checkpoint_identity(folder: Path, weights: str) -> dict:
    """What makes two checkpoints the same model: the sha256 of the weights file used (from meta.json)."""
    try:
        meta = load_json(folder / META_FILE)
    except (OSError, ValueError) as e:
        raise GPTBertError(f"{folder / META_FILE}: cannot be read ({e})") from None
    files = meta.get("files") or {}
    name = EMA_FILE if weights == "ema" and EMA_FILE in files else MODEL_FILE
    return {"checkpoint": str(folder), "step": meta.get("step"), "tokens_seen": meta.get("tokens_seen"),
            "weights": "ema" if name == EMA_FILE else "raw", "sha256": files.get(name)}


def same_model(a: dict | None, b: dict | None) -> bool:
    return bool(a and b) and a.get("sha256") == b.get("sha256") and a.get("weights") == b.get("weights")


# ---------------------------------------------------------------------------
# Writing one piece


def dump_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def write_piece(path: Path, predictions: dict, *, report: str = "", report_file: str = "best_temperature_report.txt",
                meta: dict, extra_files: dict[str, str] | None = None) -> None:
    """The predictions file, the official run's report, and our gptbert_piece.json, each atomically.
    The meta names the predictions file's sha256, so a file replaced later by hand is seen as foreign."""
    text = dump_json(predictions)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = dict(extra_files or {})
    if report:
        side[report_file] = report
    for name, content in side.items():
        atomic_write_text(path.parent / name, content)
    atomic_write_text(path, text)
    meta = {**meta, "file": path.name, "sha256": sha256_file(path)}
    atomic_write_text(path.parent / PIECE_META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
