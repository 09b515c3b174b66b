"""Computing the zero-shot pieces of one loaded checkpoint with the 2025 rules, and where their data is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import paths
from ..eval.finetune import GLUE_TASKS
from ..eval.forward import EvalModel
from ..eval.minimal_pairs import NAMED_TASKS, evaluate_task, load_task
from ..eval.scoring import SentenceScorer
from ..eval.tasks2025 import entity_tracking, reading, wug
from ..eval.tasks2025 import run as run2025
from ..eval.tasks2025.aoa import CONTEXTS, aoa_surprisal, load_cdi_contexts
from ..eval.tasks2025.common import text_report
from ..eval.tasks2025.comps import NAMED as COMPS_NAMED
from .options import SubmissionOptions
from .tasks import PAIR_TASKS, revision_words


def _accuracy_report(accs: dict[str, float]) -> str:
    avg = float(np.mean(list(accs.values()))) if accs else float("nan")
    return text_report("ACCURACY", 1.0, accs, avg)


# ---------------------------------------------------------------------------
# Computing pieces (one loaded checkpoint)


class Evaluator:
    """Computes the zero-shot pieces of one loaded checkpoint with the 2025 rules."""

    def __init__(self, model, tokenizer, opts: SubmissionOptions, data: DataPaths):
        self.model, self.tokenizer, self.opts, self.data = model, tokenizer, opts, data
        self.scorer = SentenceScorer(EvalModel(model, opts.precision), tokenizer, temperatures=(1.0,),
                                     max_tokens=opts.max_tokens, progress=opts.progress)

    def pairs(self, name: str) -> tuple[dict, str, dict]:
        """BLiMP / supplement / EWoK: predictions keyed by file (= the official UID / domain)."""
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
        spec = f"comps={self.data.comps}" if name == "comps" else name
        loaded_name, data, dataset = run2025.load(spec, self.data.dir_2025, self.opts.limit)
        res = run2025.evaluate(self.scorer, loaded_name, data, self.opts.backend, dataset=dataset, ties="correct",
                               limit=self.opts.limit)
        summary = {k: v for k, v in res.summary.items() if isinstance(v, (int, float, str)) or v is None}
        return res.predictions, res.report, res.report_file, summary

    def aoa_records(self, revision: str) -> list[dict]:
        """This checkpoint's surprisal of every CDI word in every context (the official record layout)."""
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
        return Path(self.comps_dir) if self.comps_dir else self.dir_2025 / COMPS_NAMED["comps"][0]

    @property
    def glue_dir(self) -> Path:
        return paths.glue_dir(self.glue)

    def aoa_words(self, limit: int | None):
        if self._aoa is None or self._aoa[0] != limit:
            self._aoa = [limit, load_cdi_contexts(self.dir_2025 / CONTEXTS, 0, limit)]
        return self._aoa[1]

    def where(self, task: str) -> Path:
        """The data a piece is computed from (recorded with it)."""
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
