"""Planning and running a submission: which pieces to compute or collect, computing them (see report.py for the rest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from ..checkpoint import resolve_checkpoint
from ..convert.revisions import milestone_folders
from ..errors import GPTBertError
from ..eval.finetune import (
    GLUE_TASKS,
    FinetuneConfig,
    finetune_task,
    read_examples,
    task_files,
)
from ..eval.tasks2025.aoa import HUMAN, curve_fitness, load_cdi_human
from ..io import atomic_write_text
from ..pretrained import load
from .evaluator import DataPaths, Evaluator
from .options import SubmissionOptions, check_model_name, default_model_name
from .pieces import (
    Piece,
    check_file,
    checkpoint_identity,
    dump_json,
    load_json,
    read_piece_meta,
    same_model,
    write_piece,
)
from .report import Outcome, SubmissionReport, subset_note
from .tasks import (
    AOA_TASK,
    FAST_TASKS,
    FINETUNE_TASKS,
    FULL_TASKS,
    MAIN,
    PAIR_TASKS,
    TRACKS,
)


class Submission(SubmissionReport):
    """Plans, computes and collates one submission (see the package docstring)."""

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
            stale = [r for r, ident in made.items() if not same_model(ident, self.identity(r))]
        else:
            stale = [] if same_model((p.meta.get("recipe") or {}).get("model"), self.identity(p.revision)) \
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
            meta = read_partial_meta(f)
            if self.opts.recompute or meta is None or meta.get("recipe") != self._aoa_recipe(r):
                out.append(r)
        return out

    def _aoa_partial(self, revision: str) -> Path:
        return self.out / "work" / self.model_name / self.opts.backend / "aoa" / f"{revision}.json"

    def _aoa_recipe(self, revision: str) -> dict:
        return {"model": self.identity(revision), "limit": self.opts.limit, "precision": self.opts.precision,
                "backend": self.opts.backend, "data": str(self.data.where("aoa"))}

    def _load(self, revision: str):
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
            atomic_write_text(f, dump_json({"recipe": self._aoa_recipe(revision), "records": records}))
            self.log(f"{revision}: AoA surprisals computed ({len(records)} contexts, {time.perf_counter() - t0:.1f}s)")
        for p in [w for w in work if w.spec.group == "finetune"]:
            t0 = time.perf_counter()
            self._compute_finetune(pre, p)
            p.action = "computed"
            self.log(f"{revision}: fine-tuning {p.task} done ({time.perf_counter() - t0:.0f}s)")

    def _meta(self, p: Piece, seconds: float, summary: dict) -> dict:
        return {"gptbert_version": __version__, "piece": p.task, "revision": p.revision,
                "backend": self.opts.backend, "recipe": self.recipe(p), "subset": subset_note(self.opts.limit),
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
            meta = read_partial_meta(self._aoa_partial(r))
            if meta is None or r not in self.milestones or meta.get("recipe") != self._aoa_recipe(r):
                continue
            records += load_json(self._aoa_partial(r))["records"]
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
        try:
            ages, human = load_cdi_human(self.data.dir_2025 / HUMAN)
        except GPTBertError as e:
            return {"score": None, "note": str(e)}
        fit = curve_fitness(records, ages, human)
        return {"score": fit["curve_fitness"], "metric": "Pearson r of model vs child AoA (numpy sigmoid fits)",
                "n_words": fit["n_words"]}


def read_partial_meta(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = load_json(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("records"), list) else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    """Plan, compute what is selected and missing, collate and report (see the package docstring)."""
    return Submission(opts, log).run()
