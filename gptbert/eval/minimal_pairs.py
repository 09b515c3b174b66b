"""Zero-shot minimal-pair tasks: BLiMP, the BLiMP supplement and EWoK.

A task is a folder (or a zip, or one file) of `.jsonl` files, one file per
paradigm / sub-task / domain, in any of these formats (one pair per line):

  BLiMP        {"sentence_good", "sentence_bad", "UID", "linguistics_term", ...}
  supplement   {"sentence_good", "sentence_bad", ...}            (sub-task = file name)
  EWoK         {"Context1", "Target1", "Target2", "Domain", ...}  (good = Target1 after Context1)

and the EWoK-core CSV (`ewok_core_1.0.csv`: Domain, Context1, Context2,
Target1, Target2), which gives two pairs per row: (Context1: Target1 over
Target2) and (Context2: Target2 over Target1) - the same as the BabyLM
`ewok_filtered` files, where every item is followed by its swapped copy.

Named tasks are looked up under the data folder (`../shared/data/eval`):
blimp_filtered, blimp_fast, blimp (original BLiMP), supplement_filtered,
supplement_fast, ewok_filtered, ewok_fast (from the password zip
`ewok/ewok_babylm_filtered_and_fast.zip`) and ewok_core (`ewok_core_1.0.zip`).
EWoK's terms forbid plain-text copies: the zips are read straight into
memory, nothing is extracted to disk, and EWoK sentences are written to the
predictions file only when asked for explicitly.

Scores (`scoring.py`): a pair is correct when the good sentence's summed
log-probability is strictly higher; ties are wrong (ties="correct" counts them
as right, the official BabyLM 2025 rule). Averages follow the paper
(paper.md section 5): BLiMP = mean of the paradigm accuracies (not of the
phenomenon columns), EWoK = mean of the domain accuracies, supplement = mean
of its 5 sub-tasks; in general the mean over the task's files.

EWoK scoring (`ewok_scoring`): "full" scores every token of context + target
(the GPT-BERT paper's way, the default of `gptbert eval`); "target" scores the
target after the context only (the BabyLM 2025 pipeline's default, which a
submission must follow). In causal mode the two rank pairs the same way (the
context tokens cannot see the target, so their log-probs are shared and
cancel); under bidirectional attention (mntp, fused) the masked context tokens
see the candidate target and the rankings differ. Prefix mode always scores
the target (the context is its bidirectional prefix).
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GPTBertError
from ..io import iter_jsonl
from ..paths import eval_dir
from .scoring import Scores, SentenceScorer, best_temperature, pair_correct

DEFAULT_EWOK_PASSWORD = "ewok"
EWOK_SCORING = ("full", "target")

# name -> (folder or zip under the data dir, member folder inside the zip or None)
NAMED_TASKS: dict[str, tuple[str, str | None]] = {
    "blimp_filtered": ("blimp_filtered", None),
    "blimp_fast": ("blimp_fast", None),
    "blimp": ("blimp", None),
    "supplement_filtered": ("supplement_filtered", None),
    "supplement_fast": ("supplement_fast", None),
    "ewok_filtered": ("ewok/ewok_babylm_filtered_and_fast.zip", "ewok_filtered/"),
    "ewok_fast": ("ewok/ewok_babylm_filtered_and_fast.zip", "ewok_fast/"),
    "ewok_core": ("ewok/ewok_core_1.0.zip", "ewok_core_1.0/"),
}


@dataclass
class Pair:
    subtask: str  # paradigm / sub-task / domain: the file's name
    phenomenon: str  # BLiMP linguistics_term; EWoK domain; otherwise the sub-task
    index: int  # 0-based line (pair) number within its file: the submission id is f"{subtask}_{index}"
    good: str
    bad: str
    context: str = ""


@dataclass
class Task:
    name: str
    kind: str  # "blimp", "supplement", "ewok" or "pairs"
    source: str
    pairs: list[Pair]
    subtasks: list[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        """Top-level key of the BabyLM 2024 submission file."""
        return {"blimp": "blimp", "supplement": "blimp_supplement", "ewok": "ewok"}.get(self.kind, self.name)

    @property
    def has_context(self) -> bool:
        return any(p.context for p in self.pairs)


# ---------------------------------------------------------------------------
# Reading


def _parse_jsonl_pairs(text: str, where: str, stem: str) -> list[Pair]:
    pairs: list[Pair] = []
    for lineno, rec in iter_jsonl(text.splitlines(), where):
        index = len(pairs)
        if any(k in rec for k in ("Context1", "Target1", "Target2")):  # EWoK
            for k in ("Context1", "Target1", "Target2"):
                if not isinstance(rec.get(k), str):
                    raise GPTBertError(f"{where}:{lineno}: missing field '{k}' (an EWoK item needs Context1, Target1, Target2)")
            domain = str(rec.get("Domain") or stem)
            pairs.append(Pair(stem, domain, index, rec["Target1"], rec["Target2"], rec["Context1"]))
        else:
            for k in ("sentence_good", "sentence_bad"):
                if not isinstance(rec.get(k), str):
                    raise GPTBertError(f"{where}:{lineno}: missing field '{k}' (a minimal pair needs sentence_good and sentence_bad)")
            phenomenon = str(rec.get("linguistics_term") or stem)
            pairs.append(Pair(stem, phenomenon, index, rec["sentence_good"], rec["sentence_bad"]))
    return pairs


def _parse_ewok_csv(text: str, where: str) -> list[Pair]:
    reader = csv.DictReader(io.StringIO(text))
    need = ("Domain", "Context1", "Context2", "Target1", "Target2")
    missing = [k for k in need if k not in (reader.fieldnames or [])]
    if missing:
        raise GPTBertError(f"{where}: missing column '{missing[0]}' (EWoK CSV needs {', '.join(need)})")
    pairs: list[Pair] = []
    counters: dict[str, int] = {}
    for lineno, rec in enumerate(reader, start=2):
        for k in need:
            if not rec.get(k):
                raise GPTBertError(f"{where}:{lineno}: missing field '{k}'")
        d = rec["Domain"]
        for ctx, good, bad in ((rec["Context1"], rec["Target1"], rec["Target2"]),
                               (rec["Context2"], rec["Target2"], rec["Target1"])):
            i = counters.get(d, 0)
            counters[d] = i + 1
            pairs.append(Pair(d, d, i, good, bad, ctx))
    return pairs


def _kind_for(name: str, pairs: Sequence[Pair]) -> str:
    n = name.lower()
    if "supplement" in n:
        return "supplement"
    if "ewok" in n or (pairs and all(p.context for p in pairs)):
        return "ewok"
    if "blimp" in n:
        return "blimp"
    return "pairs"


def _read_zip(path: Path, member_dir: str | None, password: str) -> list[tuple[str, str, str]]:
    """(where, stem, text) of the .jsonl/.csv members, read into memory (never extracted)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise GPTBertError(f"{path}: not a readable zip file ({e})") from None
    out = []
    with zf:
        names = sorted(n for n in zf.namelist()
                       if n.endswith((".jsonl", ".csv")) and (member_dir is None or n.startswith(member_dir)))
        for n in names:
            try:
                data = zf.read(n, pwd=password.encode("utf-8"))
            except RuntimeError as e:
                if "password" in str(e).lower():
                    raise GPTBertError(f"{path}: wrong password for '{n}' (pass --ewok-password; the EWoK terms of use give it)") from None
                raise GPTBertError(f"{path}: cannot read '{n}' ({e})") from None
            except (zipfile.BadZipFile, zlib.error) as e:
                # ZipCrypto's 1-byte check lets ~1/256 wrong passwords through; the CRC then fails.
                raise GPTBertError(f"{path}: wrong password for '{n}' or corrupted zip ({e})") from None
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise GPTBertError(f"{path}: '{n}' is not UTF-8 text (wrong password?)") from None
            out.append((f"{path}:{n}", Path(n).stem, text))
    if not out:
        inside = f" under '{member_dir}'" if member_dir else ""
        raise GPTBertError(f"{path}: no .jsonl or .csv files{inside}")
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GPTBertError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise GPTBertError(f"{path}: cannot be read ({e.strerror})") from None


def load_task(spec: str | Path, data_dir: str | Path | None = None, *, password: str = DEFAULT_EWOK_PASSWORD,
              limit: int | None = None, name: str | None = None) -> Task:
    """Load a named task (see NAMED_TASKS) or a folder / .jsonl / .csv / .zip of minimal pairs.

    limit: keep only the first `limit` pairs of every sub-task (quick runs).
    """
    spec_str = str(spec)
    key = spec_str.replace("-", "_")
    member = None
    if key in NAMED_TASKS and not Path(spec_str).exists():
        data_dir = eval_dir(data_dir)
        rel, member = NAMED_TASKS[key]
        path = Path(data_dir) / rel
        name = name or key
        if not path.exists():
            raise GPTBertError(f"{path}: task '{key}' not found (is --data-dir right?)")
    else:
        path = Path(spec_str)
        if not path.exists():
            known = ", ".join(NAMED_TASKS)
            raise GPTBertError(f"{path}: no such task folder or file (named tasks: {known}, lambada)")
        name = name or (path.stem if path.is_file() else path.name)

    sources: list[tuple[str, str, str]] = []  # (where, stem, text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".csv") and p.is_file())
        zips = sorted(p for p in path.iterdir() if p.suffix == ".zip")
        if not files and zips:
            for z in zips:
                sources.extend(_read_zip(z, None, password))
        elif not files:
            raise GPTBertError(f"{path}: empty task folder (no .jsonl files of minimal pairs)")
        for f in files:
            sources.append((str(f), f.stem, _read_text(f)))
    elif path.suffix == ".zip":
        sources = _read_zip(path, member, password)
    else:
        sources = [(str(path), path.stem, _read_text(path))]

    pairs: list[Pair] = []
    for where, stem, text in sources:
        got = _parse_ewok_csv(text, where) if where.endswith(".csv") else _parse_jsonl_pairs(text, where, stem)
        if limit is not None:
            by_sub: dict[str, int] = {}
            kept = []
            for p in got:
                if by_sub.get(p.subtask, 0) < limit:
                    kept.append(p)
                    by_sub[p.subtask] = by_sub.get(p.subtask, 0) + 1
            got = kept
        pairs.extend(got)
    if not pairs:
        raise GPTBertError(f"{path}: no minimal pairs found (all files are empty)")
    subtasks = list(OrderedDict.fromkeys(p.subtask for p in pairs))
    return Task(name, _kind_for(name, pairs), str(path), pairs, subtasks)


# ---------------------------------------------------------------------------
# Evaluating


@dataclass
class PairResult:
    """Per-pair correctness of one task in one mode, for every temperature."""

    task: Task
    mode: str
    temperatures: tuple[float, ...]
    correct: np.ndarray  # (n_pairs, K) bool
    correct_greedy: np.ndarray  # (n_pairs,) bool: the T -> 0 limit
    ties: np.ndarray  # (n_pairs,) bool: exact ties at T = 1 (or the first temperature)
    good: Scores
    bad: Scores
    ties_rule: str = "wrong"  # how an exact tie counts: "wrong" (default) or "correct" (official 2025)
    ewok_scoring: str | None = None  # EWoK tasks: "full" (context + target) or "target"

    def accuracy_at(self, column: np.ndarray, by: str = "subtask") -> dict[str, float]:
        """Percent accuracy per sub-task (or per phenomenon) for one column of correctness."""
        groups: dict[str, list[bool]] = OrderedDict()
        for p, c in zip(self.task.pairs, column):
            groups.setdefault(getattr(p, by), []).append(bool(c))
        return {k: 100.0 * sum(v) / len(v) for k, v in groups.items()}

    def average_at(self, column: np.ndarray) -> float:
        """The paper's average: mean of the sub-task accuracies."""
        acc = self.accuracy_at(column)
        return float(np.mean(list(acc.values())))

    def column(self, temperature: float) -> np.ndarray:
        if temperature == 0:
            return self.correct_greedy
        for j, t in enumerate(self.temperatures):
            if abs(t - temperature) < 1e-9:
                return self.correct[:, j]
        raise KeyError(f"temperature {temperature} was not scored")

    def sweep(self) -> dict[float, float]:
        """Average accuracy at every temperature of the sweep, plus T -> 0 (key 0.0)."""
        curve = {0.0: self.average_at(self.correct_greedy)}
        for j, t in enumerate(self.temperatures):
            curve[t] = self.average_at(self.correct[:, j])
        return curve

    def best_temperature(self) -> tuple[float, float]:
        return best_temperature(self.sweep())

    def summary(self, temperature: float) -> dict:
        col = self.column(temperature)
        return {
            "temperature": temperature,
            "average": self.average_at(col),
            "pairs_accuracy": 100.0 * float(np.mean(col)),
            "subtasks": self.accuracy_at(col, "subtask"),
            "phenomena": self.accuracy_at(col, "phenomenon"),
        }

    def predictions(self, temperature: float) -> dict[str, dict]:
        """BabyLM 2024 submission entries {subtask: {"predictions": [{"id", "pred"}]}}.

        `pred` is the sentence (EWoK: the target) the model prefers; on a tie
        the bad one under ties="wrong" and the good one under ties="correct", so
        the file scores exactly as our accuracy does.
        """
        col = self.column(temperature)
        out: dict[str, dict] = OrderedDict()
        for p, c in zip(self.task.pairs, col):
            out.setdefault(p.subtask, {"predictions": []})["predictions"].append(
                {"id": f"{p.subtask}_{p.index}", "pred": p.good if c else p.bad})
        return out


def evaluate_task(scorer: SentenceScorer, task: Task, mode: str, cache: dict[str, Scores] | None = None, *,
                  ties: str = "wrong", ewok_scoring: str = "full") -> PairResult:
    """Score every pair of `task` in `mode` (good and bad sentences batched together).

    cache: scores of this task by mode, filled as modes are computed: fused
    reuses causal + mntp, and prefix without any context is causal (keep one
    cache per ewok_scoring). ties: "wrong" or "correct" (see the module
    docstring); ewok_scoring: "full" or "target" for tasks with a context.
    """
    if ewok_scoring not in EWOK_SCORING:
        raise ValueError(f"unknown EWoK scoring {ewok_scoring!r} (choose from {', '.join(EWOK_SCORING)})")
    full = task.has_context and ewok_scoring == "full" and mode != "prefix"
    n = len(task.pairs)
    cache = {} if cache is None else cache
    if mode not in cache:
        if mode == "fused" and "causal" in cache and "mntp" in cache:
            cache[mode] = cache["causal"] + cache["mntp"]
        elif mode == "prefix" and not task.has_context and "causal" in cache:
            cache[mode] = cache["causal"]
        elif full:  # context + target as one scored text, joined as the official full_sentence_scores does
            texts = [" ".join(filter(None, (p.context, p.good))) for p in task.pairs] + \
                    [" ".join(filter(None, (p.context, p.bad))) for p in task.pairs]
            cache[mode] = scorer.score_texts(texts, mode, desc=task.name)
        else:
            texts = [p.good for p in task.pairs] + [p.bad for p in task.pairs]
            contexts = [p.context for p in task.pairs] * 2 if task.has_context else None
            cache[mode] = scorer.score_texts(texts, mode, contexts, desc=task.name)
    scores = cache[mode]
    good, bad = scores.take(np.arange(n)), scores.take(np.arange(n, 2 * n))
    correct = pair_correct(good.logprob, bad.logprob, ties)
    correct_greedy = pair_correct(good.greedy_gap, bad.greedy_gap, ties)
    j1 = min(range(len(scores.temperatures)), key=lambda j: abs(scores.temperatures[j] - 1.0))
    tied = good.logprob[:, j1] == bad.logprob[:, j1]
    return PairResult(task, mode, scores.temperatures, correct, correct_greedy, tied, good, bad, ties,
                      (ewok_scoring if mode != "prefix" else "target") if task.has_context else None)


def task_result_dict(res: PairResult, calibrated: float | None = None) -> dict:
    """JSON-ready summary: T=1, best T (chosen on this task itself), T->0, the sweep,
    and optionally a temperature calibrated elsewhere (the paper calibrates on BLiMP)."""
    best_t, _ = res.best_temperature()
    out = {
        "task": res.task.name,
        "kind": res.task.kind,
        "source": res.task.source,
        "mode": res.mode,
        "n_pairs": len(res.task.pairs),
        "n_subtasks": len(res.task.subtasks),
        "ties_at_T1": int(res.ties.sum()),
        "ties": res.ties_rule,
        "T1": res.summary(1.0) if any(abs(t - 1.0) < 1e-9 for t in res.temperatures) else None,
        "best_T": {**res.summary(best_t), "note": "temperature chosen on this task itself (as the paper does for BLiMP)"},
        "greedy_limit": {"temperature": 0.0, "average": res.average_at(res.correct_greedy)},
        "sweep": {f"{t:g}": v for t, v in sorted(res.sweep().items())},
    }
    if res.ewok_scoring is not None:
        out["ewok_scoring"] = res.ewok_scoring
    if calibrated is not None:
        try:
            out["calibrated_T"] = {**res.summary(calibrated), "note": "temperature calibrated on BLiMP"}
        except KeyError:
            pass
    return out
