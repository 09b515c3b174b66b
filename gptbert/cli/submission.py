"""`gptbert submission RUN --out DIR`: the BabyLM 2025 results tree and collated submission JSON.

Exit statuses: 0 the submission in DIR is complete (the official-name collated JSON is
written); 3 it is not complete yet (expected after --only, --skip-finetune, --limit or with
missing data / checkpoints: what exists is written, the report names every missing or short
piece and the command that makes it); 2 bad input, before any work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import paths
from ..distributed import pick_device
from ..submission import ALL_TASK_NAMES, BACKENDS, GROUPS, MAIN, TRACKS, SubmissionOptions, build_submission

INCOMPLETE = 3  # the submission is not complete (documented in README "Command line")


def _split(s: str | None) -> tuple[str, ...] | None:
    if s is None:
        return None
    return tuple(x.strip() for x in s.split(",") if x.strip())


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "submission",
        help="BabyLM 2025 submission: fast evaluation of every milestone, full evaluation and GLUE fine-tuning "
             "of the final model, the official results tree and collated JSON",
        description="Runs or collects every piece of a BabyLM 2025 submission for RUN: the fast evaluations "
                    "(BLiMP-fast, supplement-fast, EWoK-fast, entity-tracking-fast, WUG adjectives and past tense, "
                    "reading) of every milestone checkpoint chck_NM of the track, and for the final model (revision "
                    "main) the full evaluation (BLiMP, supplement, EWoK, entity tracking, WUG, COMPS, reading), AoA "
                    "over all milestones and the GLUE fine-tuning predictions (BoolQ, MNLI, MRPC, MultiRC, QQP, RTE, "
                    "WSC). Writes DIR/results/<model>/<revision>/zero_shot/<backend>/... and .../main/finetune/... in "
                    "the layout the official collate_preds.py reads, then the collated "
                    "DIR/results/<model>/all_full_preds_and_fast_scores_<backend>.json, DIR/report_<backend>.md and "
                    "DIR/submission_<backend>.json. Scored by the 2025 rules: T=1, ties count as correct, EWoK "
                    "target-only. A piece that is already complete in DIR is collected, not recomputed: build a "
                    "submission step by step, resume it after a crash, or copy in predictions made elsewhere. "
                    "Exit status 0 when the submission is complete, 3 when pieces are missing or short (all of "
                    "them named in the report with the command that makes them), 2 on bad input. "
                    "Fine-tuning MNLI and QQP (10,000 training rows, 20,215 QQP predictions) takes many hours on a "
                    "CPU: use --skip-finetune or --only fast,full,aoa there, and run --only finetune on a GPU. "
                    "The tree holds EWoK targets in plain text (as the official pipeline's does): do not publish it.")
    s.add_argument("run", help="run folder (or its quickstart folder / checkpoints/ folder) with milestone "
                               "checkpoints chck_NM; its newest checkpoint is the final model (revision main)")
    s.add_argument("--out", required=True, help="submission folder: new, empty, or an earlier submission folder "
                                                "(complete pieces there are collected)")
    s.add_argument("--backend", choices=BACKENDS, default="mntp",
                   help="the 2025 pipeline backend to score with and to name in the tree: mntp (default, GPT-BERT's "
                        "masked next-token prediction) or causal")
    s.add_argument("--track", choices=tuple(TRACKS), default="strict-small",
                   help="which milestones the submission needs: strict-small (chck_1M..chck_10M, chck_20M..chck_100M; "
                        "default) or strict (..chck_90M, chck_100M..chck_1000M)")
    s.add_argument("--model-name", help="the model's folder under DIR/results/ (default: the name of RUN's folder)")
    s.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated parts to compute: {', '.join(GROUPS)} (default: all; the others are "
                        "only checked and collected)")
    s.add_argument("--skip-finetune", action="store_true",
                   help="do not fine-tune (MNLI and QQP take many hours on a CPU); their pieces stay missing")
    s.add_argument("--revisions", help=f"comma-separated revisions to work on (chck_NM of the track, {MAIN}; "
                                       "default: all)")
    s.add_argument("--tasks", help=f"comma-separated pieces to work on ({', '.join(ALL_TASK_NAMES)}; default: all)")
    s.add_argument("--limit", type=int,
                   help="a quick trial: only the first N items of every sub-task (fine-tuning: N random training and "
                        "validation rows); pieces it cuts short (fine-tuned ones always) are flagged 'subset' and "
                        "are never complete")
    s.add_argument("--recompute", action="store_true", help="recompute the selected pieces even when complete")
    s.add_argument("--comps", help="folder of the official COMPS files (evaluation_data/full_eval/comps; not in "
                                   "../shared/data; default: <data root>/babylm2025/comps/full_eval/comps)")
    s.add_argument("--data-dir", help=f"BLiMP / supplement / EWoK folder (default: <data root>/eval, {paths.DEFAULTS_HELP})")
    s.add_argument("--data-dir-2025", help="BabyLM 2025 task data (default: <data root>/babylm2025)")
    s.add_argument("--glue-dir", help="folder of <task>.train.jsonl / <task>.valid.jsonl (default: <data root>/eval/"
                                      "glue_filtered)")
    s.add_argument("--multirc-train", help="MultiRC training file (default: superglue_original/multirc.train.jsonl "
                                           "next to --glue-dir)")
    s.add_argument("--ewok-password", default="ewok", help="password of the EWoK zips (from the EWoK terms of use)")
    s.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights (default: EMA)")
    s.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto (default): bf16 where the hardware has bf16 matmuls (GPUs, CPUs with AVX-512 or AMX), else fp32; bf16: transformer in bf16 (log-probs and sums stay fp32); fp32: everything fp32")
    s.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    s.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per forward pass (default 4096)")
    s.add_argument("--seed", type=int, default=42, help="fine-tuning seed (head init, data order)")
    s.add_argument("--finetune-track", choices=("auto", "10M", "100M"), default="auto",
                   help="column of the paper's Table 4 for fine-tuning (auto: by model size)")
    s.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    s.set_defaults(fn=cmd_submission)


def cmd_submission(args: argparse.Namespace) -> int:
    opts = SubmissionOptions(
        run=args.run, out=args.out, backend=args.backend, track=args.track, model_name=args.model_name,
        only=_split(args.only) or (), skip_finetune=args.skip_finetune, revisions=_split(args.revisions),
        tasks=_split(args.tasks), limit=args.limit, recompute=args.recompute, comps=args.comps,
        data_dir=args.data_dir, data_dir_2025=args.data_dir_2025, glue_dir=args.glue_dir,
        multirc_train=args.multirc_train, ewok_password=args.ewok_password, raw=args.raw, precision=args.precision,
        device="cpu", max_tokens=args.max_tokens, seed=args.seed, finetune_track=args.finetune_track,
        progress=args.progress)
    opts.check()  # names and numbers before the device is touched
    opts.device = str(pick_device(args.device))
    out = build_submission(opts, log=lambda s: print(s, file=sys.stderr))
    print(out.text)
    if not out.complete:
        print(f"incomplete: see {Path(out.report)} (exit status {INCOMPLETE})", file=sys.stderr)
        return INCOMPLETE
    return 0
