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
official item counts (BLIMP_SIZES, ... in tasks.py; equal to the line counts of the BabyLM
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
surprisal file per milestone (in DIR: work/<model>/<backend>/aoa/<revision>.json), computed
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

Files: tasks.py (the pieces, their paths and official item counts), options.py (the options),
pieces.py (one piece: its checks, its identity, writing it), evaluator.py (computing the
zero-shot pieces of one loaded checkpoint), fast_metrics.py (fast_eval_results as the official
collation computes them), build.py (planning, running: Submission, build_submission),
report.py (collating, the report and the record).
"""

from __future__ import annotations

from .build import ALLOWED_IN_DIR, Submission, build_submission, claim_submission_dir
from .evaluator import DataPaths, Evaluator
from .fast_metrics import FastGold, fast_metric
from .options import SubmissionOptions, check_model_name, default_model_name
from .pieces import (
    PIECE_META,
    Piece,
    check_file,
    checkpoint_identity,
    compare_counts,
    layout_problem,
    read_piece_meta,
    write_piece,
)
from .report import Outcome
from .tasks import (
    ALL_TASK_NAMES,
    AOA_SIZE,
    AOA_TASK,
    BACKENDS,
    BLIMP_SIZES,
    COMPS_SIZES,
    ET_SIZES,
    EWOK_SIZES,
    FAST_ORDER,
    FAST_SIZES,
    FAST_TASKS,
    FINETUNE_TASKS,
    FULL_ORDER,
    FULL_TASKS,
    GLUE_SIZES,
    GROUPS,
    MAIN,
    PAIR_TASKS,
    READING_SIZE,
    SUPPLEMENT_SIZES,
    TRACKS,
    WUG_SIZES,
    TaskSpec,
    revision_words,
)

__all__ = [
    "ALLOWED_IN_DIR", "ALL_TASK_NAMES", "AOA_SIZE", "AOA_TASK", "BACKENDS", "BLIMP_SIZES", "COMPS_SIZES",
    "ET_SIZES", "EWOK_SIZES", "FAST_ORDER", "FAST_SIZES", "FAST_TASKS", "FINETUNE_TASKS", "FULL_ORDER",
    "FULL_TASKS", "GLUE_SIZES", "GROUPS", "MAIN", "PAIR_TASKS", "PIECE_META", "READING_SIZE", "SUPPLEMENT_SIZES",
    "TRACKS", "WUG_SIZES", "DataPaths", "Evaluator", "FastGold", "Outcome", "Piece", "Submission",
    "SubmissionOptions", "TaskSpec", "build_submission", "check_file", "check_model_name", "checkpoint_identity",
    "claim_submission_dir", "compare_counts", "default_model_name", "fast_metric", "layout_problem",
    "read_piece_meta", "revision_words", "write_piece",
]
