"""A BabyLM 2025 submission from one run folder: `gptbert submission RUN --out DIR`.

What the organisers' scripts read (babylm/evaluation-pipeline-2025,
`evaluation_pipeline/collate_preds.py`, read and re-implemented here, not copied)
is a *results tree* and one collated JSON made from it:

    DIR/results/<model>/<revision>/zero_shot/<backend>/blimp/blimp_fast/predictions.json
                                                      /blimp/supplement_fast/predictions.json
                                                      /ewok/ewok_fast/predictions.json
                                                      /entity_tracking/entity_tracking_fast/predictions.json
                                                      /wug_adj/wug_adj_nominalization/predictions.json
                                                      /wug_past/wug_past_tense/predictions.json
                                                      /reading/predictions.json
            for every milestone revision of the track (strict-small: chck_1M..chck_9M, chck_10M..chck_100M;
            strict: chck_1M..chck_9M, chck_10M..chck_90M, chck_100M..chck_1000M), and for revision `main`:
    DIR/results/<model>/main/zero_shot/<backend>/blimp/blimp_filtered/predictions.json
                                                /blimp/supplement_filtered/predictions.json
                                                /ewok/ewok_filtered/predictions.json
                                                /entity_tracking/entity_tracking/predictions.json
                                                /wug_adj/wug_adj_nominalization/predictions.json
                                                /wug_past/wug_past_tense/predictions.json
                                                /comps/comps/predictions.json
                                                /reading/predictions.json
                                                /AoA_word/surprisal.json      (every milestone's surprisals)
    DIR/results/<model>/main/finetune/{boolq,mnli,mrpc,multirc,qqp,rte,wsc}/predictions.json
    DIR/results/<model>/all_full_preds_and_fast_scores_<backend>.json      (the collated submission)

A predictions file maps each sub-task (BLiMP paradigm, supplement file, EWoK domain,
`regular_<k>_ops`, `wug_adj`, `reading`, GLUE task, ...) to {"predictions": [{"id":
"<key>_<i>", "pred": ...}]} in data order; `pred` is the chosen sentence (BLiMP), the
chosen target with the space the pipeline puts before it (EWoK: " " + Target), the chosen
option (entity tracking), the chosen sentence plus `prob` (WUG), the surprisal plus
`prev_pred` (reading) or the label (GLUE). Each zero-shot folder we write also gets a
report in the layout of the official run's (`best_temperature_report.txt` with the accuracy
per UID; reading, AoA: `report.txt`; GLUE: `results.txt`) and a `gptbert_piece.json` (how it
was made; see below). Neither is read by the collation. The tree and the collated JSON hold
EWoK targets in plain text, as the official pipeline's do: send them, do not publish them.

The rules of the 2025 pipeline: `--backend causal` or `mntp` (our scoring modes of the
same names; GPT-BERT's natural one, and the default, is mntp), T = 1 (no temperature
sweep), a tie counts as correct (torch.max keeps the first, correct, candidate), EWoK
scores the target only. The collated JSON holds the full predictions of `main` under
blimp, blimp_supplement, ewok, entity_tracking, wug_adj, wug_past, comps, reading, aoa
(surprisal.json) and glue (the seven tasks' dicts merged), then `fast_eval_results`: per
task, one entry per milestone (in revision order) computed the way the official
collation does: accuracy per sub-task as a fraction (BLiMP and supplement: `pred` equals
`sentence_good`; EWoK: `Target1`; entity tracking: `options[0]`; both sides stripped,
predictions zipped with the data in file order), Spearman's rho of `prob` with the human
ratio (WUG), and for reading {"spr", "rt"}: the share of the baseline's unexplained
variance that surprisal explains (self-paced with spill-over; eye tracking averaged
over four measures), as a fraction.

Sizes. Before collating, every piece is checked the way collate_preds.py checks it and
more strictly (it only checks the sub-tasks a file has; we also name missing and
unexpected ones): BLiMP-fast 200 per paradigm, supplement-fast 50 per file, EWoK-fast
100 per domain, entity-tracking-fast the item count of each `regular_<k>_ops` split,
reading 1,726 words, WUG 200 (adjectives) / 50 (past tense); the full sets by their
official item counts (BLIMP_SIZES, ... below; equal to the line counts of the BabyLM
2025 data), AoA 8,005 records for every milestone of the track, GLUE the size of each
validation file. A piece's status is one of
    ok       present, every size right
    missing  no file (the report says why and which command makes it)
    short    present but some sub-task has the wrong number of items ("N of M items")
    subset   short because it was made with --limit (a trial, never a submission)
    invalid  not readable or not in the official layout
    stale    made by gptbert from another checkpoint than the run's current one

Runs or collects. A piece that is ok is collected, never recomputed (so a submission
can be built step by step, resumed after a crash - every file is written atomically -
or assembled from predictions made elsewhere, e.g. by the official pipeline on a GPU:
copy them into the tree). A piece is computed when it is selected (--only, --revisions,
--tasks, --skip-finetune) and missing, invalid, stale or incomplete; an incomplete piece
that gptbert made with exactly the inputs this run would use (same checkpoint weights,
--limit, data, precision) is kept instead, since recomputing it would give the same
file. --recompute recomputes the selected pieces anyway. AoA is assembled from one
surprisal file per milestone (DIR/work/<model>/<backend>/aoa/<revision>.json), computed
while that milestone is loaded for its fast evaluation, so it resumes per checkpoint too.

Completeness. The collated JSON is written under the official name only when every
piece is ok and nothing was limited; otherwise what exists is collated into
`all_full_preds_and_fast_scores_<backend>.incomplete.json` (missing pieces null, plus a
`gptbert_incomplete` key listing the problems), any earlier official-name file is
removed, and `build` reports complete=False (the CLI exits with status 3). The report
(DIR/report_<backend>.md, and a shorter one on stdout) lists every required piece with
its status and, for each missing or incomplete one, the exact command that would make
it. DIR/submission_<backend>.json records every invocation's options, the status of
every piece and the fast metrics.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import __version__, paths
from .checkpoint import EMA_FILE, META_FILE, MODEL_FILE, resolve_checkpoint
from .convert.revisions import milestone_folders
from .errors import GPTBertError
from .eval.report import table
from .io import atomic_write_text, sha256_file
from .words import MILESTONES_M, milestone_name

BACKENDS = ("causal", "mntp")
TRACKS = {
    "strict-small": [milestone_name(m) for m in MILESTONES_M if m <= 100],
    "strict": [milestone_name(m) for m in MILESTONES_M],
}
GROUPS = ("fast", "full", "aoa", "finetune")
MAIN = "main"
PIECE_META = "gptbert_piece.json"

# Item counts the official collation checks (collate_preds.py); each equals the number of lines
# of the BabyLM 2025 evaluation file (tests/test_submission.py checks them against ../shared/data).
BLIMP_SIZES = {
    "adjunct_island": 928, "anaphor_gender_agreement": 971, "anaphor_number_agreement": 931,
    "animate_subject_passive": 895, "animate_subject_trans": 923, "causative": 818, "complex_NP_island": 846,
    "coordinate_structure_constraint_complex_left_branch": 906,
    "coordinate_structure_constraint_object_extraction": 949, "determiner_noun_agreement_1": 929,
    "determiner_noun_agreement_2": 931, "determiner_noun_agreement_irregular_1": 681,
    "determiner_noun_agreement_irregular_2": 820, "determiner_noun_agreement_with_adj_2": 941,
    "determiner_noun_agreement_with_adj_irregular_1": 718, "determiner_noun_agreement_with_adj_irregular_2": 840,
    "determiner_noun_agreement_with_adjective_1": 933, "distractor_agreement_relational_noun": 788,
    "distractor_agreement_relative_clause": 871, "drop_argument": 920, "ellipsis_n_bar_1": 802,
    "ellipsis_n_bar_2": 828, "existential_there_object_raising": 812, "existential_there_quantifiers_1": 930,
    "existential_there_quantifiers_2": 911, "existential_there_subject_raising": 924,
    "expletive_it_object_raising": 759, "inchoative": 855, "intransitive": 868,
    "irregular_past_participle_adjectives": 961, "irregular_past_participle_verbs": 942,
    "irregular_plural_subject_verb_agreement_1": 804, "irregular_plural_subject_verb_agreement_2": 892,
    "left_branch_island_echo_question": 947, "left_branch_island_simple_question": 951,
    "matrix_question_npi_licensor_present": 929, "npi_present_1": 909, "npi_present_2": 914,
    "only_npi_licensor_present": 882, "only_npi_scope": 837, "passive_1": 840, "passive_2": 903,
    "principle_A_c_command": 946, "principle_A_case_1": 912, "principle_A_case_2": 915, "principle_A_domain_1": 914,
    "principle_A_domain_2": 915, "principle_A_domain_3": 941, "principle_A_reconstruction": 967,
    "regular_plural_subject_verb_agreement_1": 890, "regular_plural_subject_verb_agreement_2": 945,
    "sentential_negation_npi_licensor_present": 919, "sentential_negation_npi_scope": 871,
    "sentential_subject_island": 961, "superlative_quantifiers_1": 979, "superlative_quantifiers_2": 986,
    "tough_vs_raising_1": 948, "tough_vs_raising_2": 920, "transitive": 868, "wh_island": 960,
    "wh_questions_object_gap": 859, "wh_questions_subject_gap": 898, "wh_questions_subject_gap_long_distance": 857,
    "wh_vs_that_no_gap": 861, "wh_vs_that_no_gap_long_distance": 875, "wh_vs_that_with_gap": 919,
    "wh_vs_that_with_gap_long_distance": 910,
}
SUPPLEMENT_SIZES = {"hypernym": 842, "qa_congruence_easy": 64, "qa_congruence_tricky": 165,
                    "subject_aux_inversion": 3867, "turn_taking": 280}
EWOK_SIZES = {"agent-properties": 2210, "material-dynamics": 770, "material-properties": 170,
              "physical-dynamics": 120, "physical-interactions": 556, "physical-relations": 818,
              "quantitative-properties": 314, "social-interactions": 294, "social-properties": 328,
              "social-relations": 1548, "spatial-relations": 490}
ET_SIZES = {f"{f}_{k}_ops": n for f, ns in (("regular", (606, 607, 606, 606, 568, 159)),
                                            ("ambiref", (607, 607, 604, 604, 615, 187)),
                                            ("move_contents", (605, 606, 605, 606, 529, 156)))
            for k, n in enumerate(ns)}
COMPS_SIZES = {"base": 49340, "wugs": 13896, "wugs_dist_before": 13896, "wugs_dist_in_between": 13896}
GLUE_SIZES = {"boolq": 1635, "mnli": 4908, "mrpc": 204, "multirc": 2424, "qqp": 20215, "rte": 139, "wsc": 52}
READING_SIZE = 1726
WUG_SIZES = {"wug_adj": 200, "wug_past": 50}
AOA_SIZE = 8005
FAST_SIZES = {"blimp_fast": 200, "supplement_fast": 50, "ewok_fast": 100}


@dataclass(frozen=True)
class TaskSpec:
    """One kind of piece: where collate_preds reads it and what it must hold."""

    name: str  # ours: blimp_fast, ..., aoa, boolq
    group: str  # fast, full, aoa or finetune
    rel: str  # below results/<model>/<revision>/ ("{b}" = backend)
    key: str  # its key in the collated JSON (fast: in fast_eval_results)
    sizes: dict[str, int]  # items per top-level key (AoA: records per revision)
    fields: tuple[str, ...] = ("id", "pred")  # what every prediction needs

    def path(self, backend: str) -> str:
        return self.rel.format(b=backend)


def _zs(rel: str) -> str:
    return "zero_shot/{b}/" + rel


FAST_TASKS = [
    TaskSpec("blimp_fast", "fast", _zs("blimp/blimp_fast/predictions.json"), "blimp",
             {k: 200 for k in BLIMP_SIZES}),
    TaskSpec("supplement_fast", "fast", _zs("blimp/supplement_fast/predictions.json"), "blimp_supplement",
             {k: 50 for k in SUPPLEMENT_SIZES}),
    TaskSpec("ewok_fast", "fast", _zs("ewok/ewok_fast/predictions.json"), "ewok", {k: 100 for k in EWOK_SIZES}),
    TaskSpec("entity_tracking_fast", "fast", _zs("entity_tracking/entity_tracking_fast/predictions.json"),
             "entity_tracking", {k: v for k, v in ET_SIZES.items() if k.startswith("regular_")}),
    TaskSpec("wug_adj", "fast", _zs("wug_adj/wug_adj_nominalization/predictions.json"), "wug_adj",
             {"wug_adj": WUG_SIZES["wug_adj"]}, ("id", "pred", "prob")),
    TaskSpec("wug_past", "fast", _zs("wug_past/wug_past_tense/predictions.json"), "wug_past",
             {"wug_past": WUG_SIZES["wug_past"]}, ("id", "pred", "prob")),
    TaskSpec("reading", "fast", _zs("reading/predictions.json"), "reading", {"reading": READING_SIZE},
             ("id", "pred", "prev_pred")),
]
FULL_TASKS = [
    TaskSpec("blimp_filtered", "full", _zs("blimp/blimp_filtered/predictions.json"), "blimp", BLIMP_SIZES),
    TaskSpec("supplement_filtered", "full", _zs("blimp/supplement_filtered/predictions.json"), "blimp_supplement",
             SUPPLEMENT_SIZES),
    TaskSpec("ewok_filtered", "full", _zs("ewok/ewok_filtered/predictions.json"), "ewok", EWOK_SIZES),
    TaskSpec("entity_tracking", "full", _zs("entity_tracking/entity_tracking/predictions.json"), "entity_tracking",
             ET_SIZES),
    TaskSpec("wug_adj", "full", _zs("wug_adj/wug_adj_nominalization/predictions.json"), "wug_adj",
             {"wug_adj": WUG_SIZES["wug_adj"]}, ("id", "pred", "prob")),
    TaskSpec("wug_past", "full", _zs("wug_past/wug_past_tense/predictions.json"), "wug_past",
             {"wug_past": WUG_SIZES["wug_past"]}, ("id", "pred", "prob")),
    TaskSpec("comps", "full", _zs("comps/comps/predictions.json"), "comps", COMPS_SIZES),
    TaskSpec("reading", "full", _zs("reading/predictions.json"), "reading", {"reading": READING_SIZE},
             ("id", "pred", "prev_pred")),
]
AOA_TASK = TaskSpec("aoa", "aoa", _zs("AoA_word/surprisal.json"), "aoa", {})
FINETUNE_TASKS = [TaskSpec(t, "finetune", f"finetune/{t}/predictions.json", t, {t: n}) for t, n in GLUE_SIZES.items()]
ALL_TASK_NAMES = list(dict.fromkeys(t.name for t in [*FAST_TASKS, *FULL_TASKS, AOA_TASK, *FINETUNE_TASKS]))
PAIR_TASKS = {"blimp_fast", "supplement_fast", "ewok_fast", "blimp_filtered", "supplement_filtered", "ewok_filtered"}
FULL_ORDER = ("blimp", "blimp_supplement", "ewok", "entity_tracking", "wug_adj", "wug_past", "comps", "reading", "aoa")
FAST_ORDER = ("blimp", "blimp_supplement", "ewok", "entity_tracking", "wug_adj", "wug_past", "reading")


def revision_words(revision: str) -> int:
    """chck_20M -> 20_000_000."""
    return int(revision[len("chck_"):-1]) * 1_000_000


# ---------------------------------------------------------------------------
# Options


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
    precision: str = "bf16"
    device: str = "cpu"
    max_tokens: int = 4096
    seed: int = 42
    finetune_track: str = "auto"
    progress: bool = False

    def check(self) -> None:
        """Names and numbers, before anything is loaded."""
        from .errors import did_you_mean

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


# ---------------------------------------------------------------------------
# Pieces and their checks


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


def _load_json(path: Path):
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
        data = _load_json(path)
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
        meta = _load_json(meta_path)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("file") != path.name or meta.get("sha256") != sha256_file(path):
        return None
    return meta


def checkpoint_identity(folder: Path, weights: str) -> dict:
    """What makes two checkpoints the same model: the sha256 of the weights file used (from meta.json)."""
    try:
        meta = _load_json(folder / META_FILE)
    except (OSError, ValueError) as e:
        raise GPTBertError(f"{folder / META_FILE}: cannot be read ({e})") from None
    files = meta.get("files") or {}
    name = EMA_FILE if weights == "ema" and EMA_FILE in files else MODEL_FILE
    return {"checkpoint": str(folder), "step": meta.get("step"), "tokens_seen": meta.get("tokens_seen"),
            "weights": "ema" if name == EMA_FILE else "raw", "sha256": files.get(name)}


def _same_model(a: dict | None, b: dict | None) -> bool:
    return bool(a and b) and a.get("sha256") == b.get("sha256") and a.get("weights") == b.get("weights")


# ---------------------------------------------------------------------------
# Writing one piece


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def write_piece(path: Path, predictions: dict, *, report: str = "", report_file: str = "best_temperature_report.txt",
                meta: dict, extra_files: dict[str, str] | None = None) -> None:
    """The predictions file, the official run's report, and our gptbert_piece.json, each atomically.
    The meta names the predictions file's sha256, so a file replaced later by hand is seen as foreign."""
    text = _dump(predictions)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = dict(extra_files or {})
    if report:
        side[report_file] = report
    for name, content in side.items():
        atomic_write_text(path.parent / name, content)
    atomic_write_text(path, text)
    meta = {**meta, "file": path.name, "sha256": sha256_file(path)}
    atomic_write_text(path.parent / PIECE_META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def _accuracy_report(accs: dict[str, float]) -> str:
    from .eval.tasks2025.common import text_report

    avg = float(np.mean(list(accs.values()))) if accs else float("nan")
    return text_report("ACCURACY", 1.0, accs, avg)


# ---------------------------------------------------------------------------
# Computing pieces (one loaded checkpoint)


class Evaluator:
    """Computes the zero-shot pieces of one loaded checkpoint with the 2025 rules."""

    def __init__(self, model, tokenizer, opts: SubmissionOptions, data: DataPaths):
        from .eval.forward import EvalModel
        from .eval.scoring import SentenceScorer

        self.model, self.tokenizer, self.opts, self.data = model, tokenizer, opts, data
        self.scorer = SentenceScorer(EvalModel(model, opts.precision), tokenizer, temperatures=(1.0,),
                                     max_tokens=opts.max_tokens, progress=opts.progress)

    def pairs(self, name: str) -> tuple[dict, str, dict]:
        """BLiMP / supplement / EWoK: predictions keyed by file (= the official UID / domain)."""
        from .eval.minimal_pairs import evaluate_task, load_task

        task = load_task(name, self.data.eval_dir, password=self.opts.ewok_password, limit=self.opts.limit)
        res = evaluate_task(self.scorer, task, self.opts.backend, ties="correct", ewok_scoring="target")
        col = res.column(1.0)
        preds: dict[str, dict] = {}
        for p, c in zip(task.pairs, col):
            text = p.good if c else p.bad
            if task.kind == "ewok":
                text = " " + text  # the pipeline's completion: " " + Target
            preds.setdefault(p.subtask, {"predictions": []})["predictions"].append(
                {"id": f"{p.subtask}_{p.index}", "pred": text})
        accs = res.accuracy_at(col)
        summary = {"score": float(np.mean(list(accs.values()))), "metric": "accuracy (%), mean over sub-tasks",
                   "n_items": len(task.pairs), "n_ties": int(res.ties.sum())}
        return preds, _accuracy_report(accs), summary

    def task2025(self, name: str) -> tuple[dict, str, str, dict]:
        """Entity tracking, WUG, reading, COMPS through tasks2025 (the official rules)."""
        from .eval.tasks2025 import run as run2025

        spec = f"comps={self.data.comps}" if name == "comps" else name
        loaded_name, data, dataset = run2025.load(spec, self.data.dir_2025, self.opts.limit)
        res = run2025.evaluate(self.scorer, loaded_name, data, self.opts.backend, dataset=dataset, ties="correct",
                               limit=self.opts.limit)
        summary = {k: v for k, v in res.summary.items() if isinstance(v, (int, float, str)) or v is None}
        return res.predictions, res.report, res.report_file, summary

    def aoa_records(self, revision: str) -> list[dict]:
        """This checkpoint's surprisal of every CDI word in every context (the official record layout)."""
        from .eval.tasks2025.aoa import aoa_surprisal

        words = self.data.aoa_words(self.opts.limit)
        s = aoa_surprisal(self.scorer, words, self.opts.backend, 1.0)
        records, k = [], 0
        n_words = revision_words(revision)
        for word, contexts in words:
            for i, c in enumerate(contexts):
                records.append({"step": revision, "word_count": n_words, "target_word": word, "context_id": i,
                                "context": c, "surprisal": float(s[k])})
                k += 1
        return records


@dataclass
class DataPaths:
    """Where every task's data is (resolved lazily: a collect-only run needs none of it)."""

    eval_root: str | None
    root_2025: str | None
    glue: str | None
    comps_dir: str | None
    multirc: str | None
    _aoa: list | None = None

    @property
    def eval_dir(self) -> Path:
        return paths.eval_dir(self.eval_root)

    @property
    def dir_2025(self) -> Path:
        return paths.babylm2025_dir(self.root_2025)

    @property
    def comps(self) -> Path:
        from .eval.tasks2025.comps import NAMED

        return Path(self.comps_dir) if self.comps_dir else self.dir_2025 / NAMED["comps"][0]

    @property
    def glue_dir(self) -> Path:
        return paths.glue_dir(self.glue)

    def aoa_words(self, limit: int | None):
        from .eval.tasks2025.aoa import CONTEXTS, load_cdi_contexts

        if self._aoa is None or self._aoa[0] != limit:
            self._aoa = [limit, load_cdi_contexts(self.dir_2025 / CONTEXTS, 0, limit)]
        return self._aoa[1]

    def where(self, task: str) -> Path:
        """The data a piece is computed from (recorded with it)."""
        from .eval.finetune import GLUE_TASKS
        from .eval.minimal_pairs import NAMED_TASKS
        from .eval.tasks2025 import entity_tracking, reading, wug
        from .eval.tasks2025.aoa import CONTEXTS

        if task in PAIR_TASKS:
            return self.eval_dir / NAMED_TASKS[task][0]
        if task.startswith("entity_tracking"):
            return self.dir_2025 / entity_tracking.NAMED[task][0]
        if task.startswith("wug"):
            return self.dir_2025 / wug.NAMED[task][0]
        if task == "reading":
            return self.dir_2025 / reading.NAMED["reading"]
        if task == "comps":
            return self.comps
        if task == "aoa":
            return self.dir_2025 / CONTEXTS
        if task in GLUE_TASKS:
            return self.glue_dir
        raise KeyError(task)


# ---------------------------------------------------------------------------
# The fast metrics, as the official collation computes them


def _accuracy_by_key(preds: dict, gold: dict[str, list[str]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, v in preds.items():
        answers = gold.get(key)
        if answers is None:
            out[key] = None
            continue
        pairs = list(zip(v["predictions"], answers))
        ok = sum(1 for p, g in pairs if (p["pred"].strip() if isinstance(p["pred"], str) else p["pred"]) == g.strip())
        out[key] = ok / len(pairs) if pairs else None
    return out


class FastGold:
    """The fast sets' answers (what the official collation compares predictions with), read once."""

    def __init__(self, data: DataPaths, password: str):
        self.data, self.password = data, password
        self._cache: dict[str, object] = {}

    def get(self, task: str):
        if task not in self._cache:
            try:
                self._cache[task] = self._load(task)
            except GPTBertError as e:
                self._cache[task] = e
        got = self._cache[task]
        if isinstance(got, GPTBertError):
            raise got
        return got

    def _load(self, task: str):
        if task in ("blimp_fast", "supplement_fast", "ewok_fast"):
            from .eval.minimal_pairs import load_task

            t = load_task(task, self.data.eval_dir, password=self.password)
            gold: dict[str, list[str]] = {}
            for p in t.pairs:  # BLiMP / supplement: sentence_good; EWoK: Target1
                gold.setdefault(p.subtask, []).append(p.good)
            return gold
        if task == "entity_tracking_fast":
            from .eval.tasks2025.entity_tracking import load_entity_tracking

            gold = {}
            for it in load_entity_tracking(self.data.where(task)):
                if it.subtask.startswith("regular_"):  # the official reads the `regular` file only
                    gold.setdefault(it.subtask, []).append(it.preds[0])
            return gold
        if task in ("wug_adj", "wug_past"):
            from .eval.tasks2025.wug import load_wug

            return [it.extra["ratio"] for it in load_wug(self.data.where(task), task)]
        if task == "reading":
            from .eval.tasks2025.reading import load_reading

            return load_reading(self.data.where(task))
        raise KeyError(task)


def fast_metric(task: str, preds: dict, gold: FastGold):
    """One revision's entry of fast_eval_results for one task (None when it cannot be computed)."""
    if task in ("blimp_fast", "supplement_fast", "ewok_fast", "entity_tracking_fast"):
        return _accuracy_by_key(preds, gold.get(task))
    if task in ("wug_adj", "wug_past"):
        from .eval.tasks2025.stats import spearman

        ratios = gold.get(task)
        out = {}
        for key, v in preds.items():
            probs = [float(p["prob"]) for p in v["predictions"]]
            n = min(len(probs), len(ratios))
            out[key] = float(spearman(probs[:n], ratios[:n])) if n >= 2 else None  # NaN if constant, as scipy
        return out
    if task == "reading":
        from .eval.tasks2025.reading import ReadingData, reading_scores

        data: ReadingData = gold.get(task)
        rows = preds.get("reading", {}).get("predictions", [])
        n = min(len(rows), len(data))
        if n == 0:
            return None
        sub = ReadingData(data.items[:n], data.words[:n], data.prev_items[:n], data.prev_words[:n],
                          {k: v[:n] for k, v in data.columns.items()})
        pred = np.array([_num(r["pred"]) for r in rows[:n]])
        prev = np.array([_num(r["prev_pred"]) for r in rows[:n]])
        s = reading_scores(sub, pred, prev)
        return {"spr": _frac(s["self_paced_reading"]), "rt": _frac(s["eye_tracking"])}
    raise KeyError(task)


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _frac(v: float) -> float:
    return float(v) / 100.0  # ours are x 100, the official collation's are fractions (NaN stays NaN)


# ---------------------------------------------------------------------------
# The whole submission


@dataclass
class Outcome:
    complete: bool
    subset: bool
    pieces: list[Piece]
    collated: Path
    report: Path
    record: Path
    fast_eval_results: dict
    aoa_score: dict | None = None
    text: str = ""  # the stdout report


class Submission:
    """Plans, computes and collates one submission (see the module docstring)."""

    def __init__(self, opts: SubmissionOptions, log: Callable[[str], None] = lambda s: None):
        opts.check()
        self.opts, self.log = opts, log
        self.out = Path(opts.out)
        claim_submission_dir(self.out)
        self.final = resolve_checkpoint(opts.run)
        self.milestones = {d.name: d for d in milestone_folders(opts.run)}
        self.model_name = opts.model_name or default_model_name(opts.run)
        check_model_name(self.model_name)
        self.results_root = self.out / "results" / self.model_name
        self.revisions = TRACKS[opts.track]
        self.weights = "raw" if opts.raw else "ema"
        self.data = DataPaths(opts.data_dir, opts.data_dir_2025, opts.glue_dir, opts.comps, opts.multirc_train)
        self.identities: dict[str, dict] = {}
        self.pieces = self._plan()
        self.started = time.time()

    # -- planning

    def folder(self, revision: str) -> Path | None:
        return self.final if revision == MAIN else self.milestones.get(revision)

    def identity(self, revision: str) -> dict | None:
        folder = self.folder(revision)
        if folder is None:
            return None
        if revision not in self.identities:
            self.identities[revision] = checkpoint_identity(folder, self.weights)
        return self.identities[revision]

    def _plan(self) -> list[Piece]:
        b = self.opts.backend
        pieces = [Piece(r, s, self.results_root / r / s.path(b)) for r in self.revisions for s in FAST_TASKS]
        pieces += [Piece(MAIN, s, self.results_root / MAIN / s.path(b)) for s in FULL_TASKS]
        pieces.append(Piece(MAIN, AOA_TASK, self.results_root / MAIN / AOA_TASK.path(b)))
        pieces += [Piece(MAIN, s, self.results_root / MAIN / s.path(b)) for s in FINETUNE_TASKS]
        for p in pieces:
            self._check(p)
        return pieces

    def _check(self, p: Piece) -> None:
        p.status, p.detail, p.counts = check_file(p.path, p.spec, self.revisions)
        p.meta = read_piece_meta(p.path) if p.status != "missing" else None
        if p.meta is None:
            return
        limit = (p.meta.get("recipe") or {}).get("limit")
        if limit is not None and p.status == "short":
            p.status = "subset"
            p.detail = f"made with --limit {limit}: {p.detail}"
        elif limit is not None and p.status == "ok" and p.spec.group == "finetune":
            p.status = "subset"  # every validation row predicted, but trained on a subset
            p.detail = f"made with --limit {limit}: trained on {limit} rows only"
        if p.spec.name == "aoa":
            made = (p.meta.get("recipe") or {}).get("checkpoints") or {}
            stale = [r for r, ident in made.items() if not _same_model(ident, self.identity(r))]
        else:
            stale = [] if _same_model((p.meta.get("recipe") or {}).get("model"), self.identity(p.revision)) \
                else [p.revision]
        if stale and p.status in ("ok", "short", "subset"):
            p.status = "stale"
            p.detail = f"made from another checkpoint than the run's {', '.join(stale)} now"

    def selected(self, p: Piece) -> tuple[bool, str]:
        o = self.opts
        if p.spec.group not in o.only:
            return False, f"not selected (--only {','.join(o.only)})"
        if p.spec.group == "finetune" and o.skip_finetune:
            return False, "skipped (--skip-finetune)"
        if o.revisions is not None and p.revision not in o.revisions:
            return False, f"not selected (--revisions {','.join(o.revisions)})"
        if o.tasks is not None and p.task not in o.tasks:
            return False, f"not selected (--tasks {','.join(o.tasks)})"
        return True, ""

    def recipe(self, p: Piece) -> dict:
        o = self.opts
        base = {"limit": o.limit, "precision": o.precision, "backend": o.backend}
        try:
            base["data"] = str(self.data.where(p.task))
        except GPTBertError:
            base["data"] = None
        if p.spec.group == "finetune":
            return {**base, "model": self.identity(MAIN), "seed": o.seed, "track": o.finetune_track,
                    "multirc_train": o.multirc_train}
        if p.spec.name == "aoa":
            return {**base, "checkpoints": {r: self.identity(r) for r in self.revisions if r in self.milestones}}
        return {**base, "model": self.identity(p.revision), "ties": "correct", "ewok_scoring": "target",
                "temperature": 1.0}

    def needs_work(self, p: Piece) -> bool:
        """Whether to compute a selected piece (see "Runs or collects")."""
        if self.opts.recompute:
            return True
        if p.status == "ok":
            return False
        # an incomplete piece made from the very inputs this run would use: the same file again
        return not (p.status in ("short", "subset") and p.meta and p.meta.get("recipe") == self.recipe(p))

    def unmakeable(self, p: Piece) -> str | None:
        """Why no run of this command can make the piece now (no checkpoint, no data), or None."""
        if p.spec.group == "aoa":
            return None if self.milestones else "the run has no milestone checkpoints (chck_1M, ...)"
        if self.folder(p.revision) is None:
            p.makeable = False
            return "the run has no milestone checkpoint of this name (train further, with --train.milestones true)"
        if p.task == "comps":
            try:
                where = self.data.comps
            except GPTBertError as e:
                return str(e)
            if not where.exists():
                p.extra_args = ("--comps", "COMPS_DIR")
                return (f"no COMPS data at {where} (not in ../shared/data): pass --comps DIR, the official "
                        "evaluation_data/full_eval/comps folder")
        if p.spec.group == "finetune":
            from .eval.finetune import GLUE_TASKS, task_files

            try:
                glue = self.data.glue_dir
            except GPTBertError as e:
                return str(e)
            train, _ = task_files(GLUE_TASKS[p.task], glue, self._multirc_train(glue))
            if train is None:
                p.extra_args = ("--glue-dir", "GLUE_DIR")
                return (f"no training file {glue / (p.task + '.train.jsonl')}: pass --glue-dir with the BabyLM "
                        f"{p.task}.train.jsonl")
        return None

    def _multirc_train(self, glue: Path) -> Path | None:
        if self.opts.multirc_train:
            return Path(self.opts.multirc_train)
        d = glue.parent / "superglue_original" / "multirc.train.jsonl"
        return d if d.is_file() else None

    # -- running

    def run(self) -> Outcome:
        todo: dict[str, list[Piece]] = {}
        for p in self.pieces:
            ok, why = self.selected(p)
            if not ok:
                p.why_not = why
                continue
            if not self.needs_work(p):
                if p.status == "ok":
                    p.action = "collected"
                else:
                    p.action = "kept"
                    p.why_not = "made with the inputs this run would use (pass --recompute to redo it)"
                continue
            reason = self.unmakeable(p)
            if reason:
                p.why_not = reason
                continue
            todo.setdefault(p.revision, []).append(p)
        aoa = next(p for p in self.pieces if p.spec.name == "aoa")
        aoa_revisions = self._aoa_todo() if aoa in todo.get(MAIN, []) else []
        for revision in [*self.revisions, MAIN]:
            work = [p for p in todo.get(revision, []) if p.spec.name != "aoa"]
            need_aoa = revision in aoa_revisions
            if work or need_aoa:
                self._run_revision(revision, work, need_aoa)
        if aoa in todo.get(MAIN, []):
            self._assemble_aoa(aoa)
        for p in self.pieces:
            if p.action == "computed":  # the others are as checked when planning
                self._check(p)
        return self._finish()

    def _aoa_todo(self) -> list[str]:
        """Milestones whose AoA surprisals must be computed (missing or made otherwise)."""
        out = []
        for r in self.revisions:
            if r not in self.milestones:
                continue
            f = self._aoa_partial(r)
            meta = _read_partial_meta(f)
            if self.opts.recompute or meta is None or meta.get("recipe") != self._aoa_recipe(r):
                out.append(r)
        return out

    def _aoa_partial(self, revision: str) -> Path:
        return self.out / "work" / self.model_name / self.opts.backend / "aoa" / f"{revision}.json"

    def _aoa_recipe(self, revision: str) -> dict:
        return {"model": self.identity(revision), "limit": self.opts.limit, "precision": self.opts.precision,
                "backend": self.opts.backend, "data": str(self.data.where("aoa"))}

    def _load(self, revision: str):
        from .pretrained import load

        folder = self.folder(revision)
        pre = load(folder, weights=self.weights, device=self.opts.device)
        return pre

    def _run_revision(self, revision: str, work: list[Piece], need_aoa: bool) -> None:
        t_load = time.perf_counter()
        pre = self._load(revision)
        self.log(f"{revision}: loaded {pre.source} ({pre.weights} weights, step {pre.step}) "
                 f"in {time.perf_counter() - t_load:.1f}s")
        ev = Evaluator(pre.model, pre.tokenizer, self.opts, self.data)
        for p in [w for w in work if w.spec.group != "finetune"]:
            t0 = time.perf_counter()
            self._compute_zero_shot(ev, p)
            p.action = "computed"
            self.log(f"{revision}: {p.task} computed ({time.perf_counter() - t0:.1f}s)")
        if need_aoa:
            t0 = time.perf_counter()
            records = ev.aoa_records(revision)
            f = self._aoa_partial(revision)
            f.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(f, _dump({"recipe": self._aoa_recipe(revision), "records": records}))
            self.log(f"{revision}: AoA surprisals computed ({len(records)} contexts, {time.perf_counter() - t0:.1f}s)")
        for p in [w for w in work if w.spec.group == "finetune"]:
            t0 = time.perf_counter()
            self._compute_finetune(pre, p)
            p.action = "computed"
            self.log(f"{revision}: fine-tuning {p.task} done ({time.perf_counter() - t0:.0f}s)")

    def _meta(self, p: Piece, seconds: float, summary: dict) -> dict:
        return {"gptbert_version": __version__, "piece": p.task, "revision": p.revision,
                "backend": self.opts.backend, "recipe": self.recipe(p), "subset": _subset_note(self.opts.limit),
                "created": _now(), "seconds": round(seconds, 3), "summary": summary}

    def _compute_zero_shot(self, ev: Evaluator, p: Piece) -> None:
        t0 = time.perf_counter()
        if p.task in PAIR_TASKS:
            preds, report, summary = ev.pairs(p.task)
            report_file = "best_temperature_report.txt"
        else:
            preds, report, report_file, summary = ev.task2025(p.task)
        write_piece(p.path, preds, report=report, report_file=report_file,
                    meta=self._meta(p, time.perf_counter() - t0, summary))

    def _compute_finetune(self, pre, p: Piece) -> None:
        from .eval.finetune import GLUE_TASKS, FinetuneConfig, finetune_task, read_examples, task_files

        task = GLUE_TASKS[p.task]
        glue = self.data.glue_dir
        train_path, valid_paths = task_files(task, glue, self._multirc_train(glue))
        primary = task.valid[0]  # the set the pipeline predicts (mnli: matched only)
        train = read_examples(train_path, task)
        valid = {primary: read_examples(valid_paths[primary], task)}
        o = self.opts
        cfg = FinetuneConfig(precision=o.precision, seed=o.seed, max_train_examples=o.limit,
                             max_eval_examples=o.limit, track=o.finetune_track, progress=o.progress)
        t0 = time.perf_counter()
        res = finetune_task(pre.model, pre.tokenizer, task, train, valid, cfg, self.opts.device)
        preds = {p.task: res["predictions"][primary]}
        metrics = res["results"][primary]
        results_txt = "\n".join(f"{k}: {v}" for k, v in metrics.items() if k != "n")
        summary = {"score": metrics["value"], "metric": metrics["metric"], "accuracy": metrics["accuracy"],
                   "n_items": metrics["n"], "n_train": res["n_train"], "best_epoch": res["best_epoch"],
                   "hparams": res["hparams"]}
        write_piece(p.path, preds, meta=self._meta(p, time.perf_counter() - t0, summary),
                    extra_files={"results.txt": results_txt + "\n"})

    def _assemble_aoa(self, p: Piece) -> None:
        """surprisal.json from the milestones' surprisal files (those that exist)."""
        records, made = [], {}
        for r in self.revisions:
            meta = _read_partial_meta(self._aoa_partial(r))
            if meta is None or r not in self.milestones or meta.get("recipe") != self._aoa_recipe(r):
                continue
            records += _load_json(self._aoa_partial(r))["records"]
            made[r] = self.identity(r)
        if not records:
            p.why_not = p.why_not or "no milestone surprisals to assemble"
            return
        official = {"metadata": {"model_name": self.model_name, "use_bos_only": False,
                                 "total_steps": len(self.revisions), "completed_steps": len(made)},
                    "results": records}
        summary = self._aoa_score(records)
        write_piece(p.path, official, report=f"AoA curve fitness (Pearson r): {summary.get('score')}\n",
                    report_file="report.txt", meta={**self._meta(p, 0.0, summary)})
        p.action = "computed"
        self.log(f"main: AoA assembled from {len(made)} milestones ({len(records)} records)")

    def _aoa_score(self, records: list[dict]) -> dict:
        from .eval.tasks2025.aoa import HUMAN, curve_fitness, load_cdi_human

        try:
            ages, human = load_cdi_human(self.data.dir_2025 / HUMAN)
        except GPTBertError as e:
            return {"score": None, "note": str(e)}
        fit = curve_fitness(records, ages, human)
        return {"score": fit["curve_fitness"], "metric": "Pearson r of model vs child AoA (numpy sigmoid fits)",
                "n_words": fit["n_words"]}

    # -- collating and reporting

    def _finish(self) -> Outcome:
        pieces = self.pieces
        complete = all(p.status == "ok" for p in pieces)
        subset = any(p.status == "subset" for p in pieces)
        fast, fast_problems = self._fast_eval_results()
        collated = self._collate(fast, complete and not fast_problems, fast_problems)
        complete = complete and not fast_problems
        outcome = Outcome(complete, subset, pieces, collated, self.out / f"report_{self.opts.backend}.md",
                          self.out / f"submission_{self.opts.backend}.json", fast)
        aoa = next(p for p in pieces if p.spec.name == "aoa")
        outcome.aoa_score = (aoa.meta or {}).get("summary") if aoa.status in ("ok", "short", "subset") else None
        text_short, text_full = self._report(outcome, fast_problems)
        atomic_write_text(outcome.report, text_full)
        self._record(outcome, fast_problems)
        outcome.text = text_short
        return outcome

    def _fast_eval_results(self) -> tuple[dict, list[str]]:
        gold = FastGold(self.data, self.opts.ewok_password)
        out = {k: [] for k in FAST_ORDER}
        failed: dict[str, tuple[str, list[str]]] = {}
        for r in self.revisions:
            for spec in FAST_TASKS:
                p = self._piece(r, spec.name, "fast")
                value = None
                if p.status in ("ok", "short", "subset", "stale"):
                    try:
                        value = fast_metric(spec.name, _load_json(p.path), gold)
                    except GPTBertError as e:
                        failed.setdefault(spec.name, (str(e), []))[1].append(r)
                out[spec.key].append(value)
        problems = [f"{_span(revs)}: {task}: fast metric not computed: {e}" for task, (e, revs) in failed.items()]
        return out, problems

    def _piece(self, revision: str, task: str, group: str | None = None) -> Piece:
        return next(p for p in self.pieces if p.revision == revision and p.task == task
                    and (group is None or p.spec.group == group))

    def _collate(self, fast: dict, complete: bool, fast_problems: list[str]) -> Path:
        """all_full_preds_and_fast_scores_<backend>.json (complete) or .incomplete.json (what exists)."""
        full: dict = {}
        for key in FULL_ORDER:
            spec = AOA_TASK if key == "aoa" else next(s for s in FULL_TASKS if s.key == key)
            p = self._piece(MAIN, spec.name, spec.group)
            full[key] = _load_json(p.path) if p.status in ("ok", "short", "subset", "stale") else None
        full["glue"] = {}
        for spec in FINETUNE_TASKS:
            p = self._piece(MAIN, spec.name, "finetune")
            if p.status in ("ok", "short", "subset", "stale"):
                full["glue"] |= _load_json(p.path)
        full["fast_eval_results"] = fast
        official = self.results_root / f"all_full_preds_and_fast_scores_{self.opts.backend}.json"
        incomplete = official.with_name(official.stem + ".incomplete.json")
        self.results_root.mkdir(parents=True, exist_ok=True)
        if complete:
            atomic_write_text(official, _dump(full))
            incomplete.unlink(missing_ok=True)
            return official
        full["gptbert_incomplete"] = {
            "note": "NOT A SUBMISSION: some pieces are missing, short or limited (see report_<backend>.md); "
                    "missing pieces are null",
            "subset": _subset_note(self.opts.limit),
            "revisions": self.revisions,
            "problems": [f"{p.label}: {p.status}" + (f" ({p.detail})" if p.detail else "")
                         for p in self.pieces if p.status != "ok"] + fast_problems,
        }
        atomic_write_text(incomplete, _dump(full))
        official.unlink(missing_ok=True)  # an earlier complete file would no longer describe this tree
        return incomplete

    def command(self, revisions: Sequence[str], tasks: Sequence[str], extra: Sequence[str] = ()) -> str:
        """The exact command that makes these pieces (the options this run was given that matter)."""
        o = self.opts
        args = ["gptbert", "submission", o.run, "--out", o.out]
        if o.backend != "mntp":
            args += ["--backend", o.backend]
        if o.track != "strict-small":
            args += ["--track", o.track]
        if o.model_name:
            args += ["--model-name", o.model_name]
        for flag, v in (("--data-dir", o.data_dir), ("--data-dir-2025", o.data_dir_2025), ("--glue-dir", o.glue_dir),
                        ("--multirc-train", o.multirc_train), ("--comps", o.comps)):
            if v and flag not in extra:
                args += [flag, v]
        if o.raw:
            args.append("--raw")
        if o.precision != "bf16":
            args += ["--precision", o.precision]
        args += ["--revisions", ",".join(revisions), "--tasks", ",".join(dict.fromkeys(tasks))]
        args += list(extra)
        return " ".join(shlex.quote(a) if a not in ("COMPS_DIR", "GLUE_DIR") else a for a in args)

    def _problems(self) -> list[tuple[str, list[str], list[str], str, str | None]]:
        """(status line, revisions, tasks, reason, command) for the pieces that are not ok, grouped."""
        groups: dict[tuple, list[Piece]] = {}
        for p in self.pieces:
            if p.status == "ok":
                continue
            detail = p.detail if p.status != "missing" else ""
            key = (p.status, detail if p.status != "subset" else "made with --limit", p.why_not,
                   p.spec.group == "fast")
            groups.setdefault(key, []).append(p)
        out = []
        for (status, detail, why, _), ps in groups.items():
            revisions = list(dict.fromkeys(p.revision for p in ps))
            tasks = list(dict.fromkeys(p.task for p in ps))
            cmd = None
            if all(p.makeable for p in ps):
                cmd = self.command(revisions, tasks, ps[0].extra_args)
            out.append((status + (f": {detail}" if detail else ""), revisions, tasks, why, cmd))
        return out

    def _report(self, outcome: Outcome, fast_problems: list[str]) -> tuple[str, str]:
        o = self.opts
        n_ok = sum(p.status == "ok" for p in self.pieces)
        state = "COMPLETE" if outcome.complete else "INCOMPLETE"
        if outcome.subset:
            state += ", SUBSET (--limit: a trial, not a submission)"
        head = (f"submission {state}: {n_ok} of {len(self.pieces)} pieces ok; model '{self.model_name}', "
                f"backend {o.backend}, track {o.track} ({len(self.revisions)} milestones + main)")
        by_rev = []
        for r in [*self.revisions, MAIN]:
            ps = [p for p in self.pieces if p.revision == r]
            count = {s: sum(p.status == s for p in ps) for s in ("ok", "missing", "short", "subset", "invalid", "stale")}
            done = sum(p.action == "computed" for p in ps)
            collected = sum(p.action == "collected" for p in ps)
            ck = "yes" if self.folder(r) is not None else "NO"
            by_rev.append([r, ck, str(len(ps)), *[str(count[s]) for s in count], str(done), str(collected)])
        rev_table = table(["revision", "checkpoint", "pieces", "ok", "missing", "short", "subset", "invalid", "stale",
                           "computed", "collected"], by_rev)
        problems = self._problems()
        lines = []
        for status, revisions, tasks, why, cmd in problems:
            revs = _span(revisions)
            lines.append(f"- {revs}: {', '.join(tasks)}: {status}" + (f" - {why}" if why else ""))
            lines.append(f"    {'-> ' + cmd if cmd else '-> no command can make it'}")
        lines += [f"- {x}" for x in fast_problems]
        where = [f"collated: {outcome.collated}", f"report:   {outcome.report}", f"record:   {outcome.record}"]
        metrics = self._metrics_table(outcome)
        short = "\n".join([head, "", rev_table, ""] + (["problems:", *lines, ""] if lines else []) + where)
        full_rows = []
        for p in self.pieces:
            full_rows.append(f"| {p.revision} | {p.task} | {p.status} | {_md(p.detail)} | {p.action or '-'} | "
                             f"{_md(p.why_not) or '-'} | `{p.path.relative_to(self.out)}` |")
        full = "\n".join([
            f"# gptbert submission ({state})", "",
            f"run: `{o.run}` (final checkpoint `{self.final}`), {self.weights} weights  ",
            f"model name: `{self.model_name}`, backend `{o.backend}`, track `{o.track}`  ",
            "rules: T=1, ties count as correct, EWoK scores the target only (the 2025 pipeline's)  ",
            f"options: `{json.dumps(self._options())}`", "",
            *([f"**SUBSET**: {_subset_note(o.limit) or 'some pieces were made with --limit'}", ""]
              if outcome.subset else []),
            "## Revisions", "", "```", rev_table, "```", "",
            "## Problems and the commands that fix them", "",
            *(lines or ["none"]), "",
            "## Fast metrics (fast_eval_results; accuracies as fractions, WUG Spearman rho, reading R2 shares)", "",
            "```", metrics, "```", "",
            *([f"AoA curve fitness (Pearson r, numpy sigmoid fits): {outcome.aoa_score.get('score')}", ""]
              if outcome.aoa_score else []),
            "## Every piece", "",
            "| revision | piece | status | detail | this run | why not made | file |",
            "|---|---|---|---|---|---|---|", *full_rows, "",
            *where, ""])
        return short + "\n\nfast metrics:\n" + metrics, full

    def _metrics_table(self, outcome: Outcome) -> str:
        rows = []
        fr = outcome.fast_eval_results
        for i, r in enumerate(self.revisions):
            row = [r]
            for key in FAST_ORDER:
                v = fr[key][i]
                if v is None:
                    row.append("-")
                elif key == "reading":
                    row.append(f"{_f(v['spr'])}/{_f(v['rt'])}")
                else:
                    vals = [x for x in v.values() if x is not None]
                    row.append(_f(float(np.mean(vals))) if vals else "-")
            rows.append(row)
        return table(["revision", "blimp", "suppl.", "ewok", "entity", "wug_adj", "wug_past", "reading spr/rt"], rows)

    def _options(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.opts).items()}

    def _record(self, outcome: Outcome, fast_problems: list[str]) -> None:
        """submission_<backend>.json: this invocation appended to the earlier ones, every piece's status."""
        previous = []
        if outcome.record.is_file():
            try:
                previous = _load_json(outcome.record).get("runs", [])
            except (OSError, ValueError, AttributeError):
                previous = []
        run = {"started": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
               "seconds": round(time.time() - self.started, 1), "gptbert_version": __version__,
               "options": self._options(), "subset": _subset_note(self.opts.limit),
               "computed": [p.label for p in self.pieces if p.action == "computed"],
               "collected": [p.label for p in self.pieces if p.action == "collected"]}
        record = {
            "model_name": self.model_name, "backend": self.opts.backend, "track": self.opts.track,
            "run": self.opts.run, "final_checkpoint": str(self.final),
            "milestones_found": sorted(self.milestones, key=revision_words),
            "complete": outcome.complete, "subset": outcome.subset,
            "collated": str(outcome.collated),
            "rules": {"temperature": 1.0, "ties": "correct", "ewok_scoring": "target"},
            "pieces": [{"revision": p.revision, "task": p.task, "group": p.spec.group, "status": p.status,
                        "detail": p.detail, "file": str(p.path.relative_to(self.out)), "made_by":
                            "gptbert" if p.meta else ("external" if p.status != "missing" else None),
                        "this_run": p.action or None, "why_not": p.why_not or None} for p in self.pieces],
            "problems": [{"status": s, "revisions": r, "tasks": t, "why": w, "command": c}
                         for s, r, t, w, c in self._problems()] + [{"status": x} for x in fast_problems],
            "fast_eval_results": outcome.fast_eval_results, "aoa": outcome.aoa_score,
            "runs": previous + [run],
        }
        atomic_write_text(outcome.record, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def _read_partial_meta(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = _load_json(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("records"), list) else None


def _subset_note(limit: int | None) -> str | None:
    return None if limit is None else (f"--limit {limit}: only the first {limit} items of every sub-task "
                                       f"(fine-tuning: {limit} random training and validation rows); not a submission")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _md(s: str) -> str:
    return s.replace("|", "\\|")


def _span(revisions: list[str]) -> str:
    if len(revisions) <= 3:
        return ", ".join(revisions)
    return f"{revisions[0]}..{revisions[-1]} ({len(revisions)} revisions)"


ALLOWED_IN_DIR = ("results", "work")


def claim_submission_dir(out: Path) -> None:
    """DIR is new, empty, or a submission folder (results/, work/, submission_*.json, report_*.md):
    anything else there is refused before any work."""
    if not out.exists():
        return
    if not out.is_dir():
        raise GPTBertError(f"{out}: exists and is not a folder")
    for entry in out.iterdir():
        n = entry.name
        if n in ALLOWED_IN_DIR and entry.is_dir():
            continue
        if (n.startswith("submission_") and n.endswith(".json")) or (n.startswith("report_") and n.endswith(".md")):
            continue
        if n.startswith("."):  # temporary files of an interrupted write
            continue
        raise GPTBertError(f"{out}: holds '{n}', which is not part of a submission folder (results/, work/, "
                           "submission_*.json, report_*.md); choose another --out")


def build_submission(opts: SubmissionOptions, log: Callable[[str], None] = lambda s: None) -> Outcome:
    """Plan, compute what is selected and missing, collate and report (see the module docstring)."""
    return Submission(opts, log).run()
