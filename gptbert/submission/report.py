"""Collating and reporting a submission: the fast metrics, the collated JSON, the report and the record."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import GPTBertError
from ..eval.report import table
from ..io import atomic_write_text
from .fast_metrics import FastGold, fast_metric
from .pieces import Piece, dump_json, load_json
from .tasks import (
    AOA_TASK,
    FAST_ORDER,
    FAST_TASKS,
    FINETUNE_TASKS,
    FULL_ORDER,
    FULL_TASKS,
    MAIN,
    revision_words,
)


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


class SubmissionReport:
    """The collating and reporting half of Submission (build.py), on the pieces it planned and ran."""

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
                        value = fast_metric(spec.name, load_json(p.path), gold)
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
            full[key] = load_json(p.path) if p.status in ("ok", "short", "subset", "stale") else None
        full["glue"] = {}
        for spec in FINETUNE_TASKS:
            p = self._piece(MAIN, spec.name, "finetune")
            if p.status in ("ok", "short", "subset", "stale"):
                full["glue"] |= load_json(p.path)
        full["fast_eval_results"] = fast
        official = self.results_root / f"all_full_preds_and_fast_scores_{self.opts.backend}.json"
        incomplete = official.with_name(official.stem + ".incomplete.json")
        self.results_root.mkdir(parents=True, exist_ok=True)
        if complete:
            atomic_write_text(official, dump_json(full))
            incomplete.unlink(missing_ok=True)
            return official
        full["gptbert_incomplete"] = {
            "note": "NOT A SUBMISSION: some pieces are missing, short or limited (see report_<backend>.md); "
                    "missing pieces are null",
            "subset": subset_note(self.opts.limit),
            "revisions": self.revisions,
            "problems": [f"{p.label}: {p.status}" + (f" ({p.detail})" if p.detail else "")
                         for p in self.pieces if p.status != "ok"] + fast_problems,
        }
        atomic_write_text(incomplete, dump_json(full))
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
        if o.precision != "auto":
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
            *([f"**SUBSET**: {subset_note(o.limit) or 'some pieces were made with --limit'}", ""]
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
                previous = load_json(outcome.record).get("runs", [])
            except (OSError, ValueError, AttributeError):
                previous = []
        run = {"started": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
               "seconds": round(time.time() - self.started, 1), "gptbert_version": __version__,
               "options": self._options(), "subset": subset_note(self.opts.limit),
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


def subset_note(limit: int | None) -> str | None:
    return None if limit is None else (f"--limit {limit}: only the first {limit} items of every sub-task "
                                       f"(fine-tuning: {limit} random training and validation rows); not a submission")


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _md(s: str) -> str:
    return s.replace("|", "\\|")


def _span(revisions: list[str]) -> str:
    if len(revisions) <= 3:
        return ", ".join(revisions)
    return f"{revisions[0]}..{revisions[-1]} ({len(revisions)} revisions)"
