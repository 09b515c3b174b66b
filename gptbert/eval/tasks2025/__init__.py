"""The BabyLM 2025 zero-shot tasks beyond BLiMP and EWoK, scored by the official 2025 rules.

  entity_tracking  Kim & Schuster 2023: which option completes "Box N contains ..." (accuracy
                   per file x number of operations; full = 3 files, fast = `regular`)
  wug              Hofmann et al. 2024 (adjective nominalization), Weissweiler et al. 2023 (past
                   tense): Spearman's rho of P(first alternative) with the human ratio
  comps            Misra et al. 2023: property knowledge, accuracy per file (data not shipped)
  reading          de Varda et al. 2023: eye-tracking and self-paced reading times from surprisal
  aoa              Chang & Bergen 2022: words' learning curves over milestone checkpoints vs
                   children's age of acquisition (several checkpoints: `evaluate_aoa`)
  stats            numpy Spearman / Pearson / OLS R^2 / sigmoid fits
  common           the official token split, tie rules, official-format output (`write_official`)
  run              `run_tasks_2025`: tasks x modes for one checkpoint (used by `gptbert eval`)

Every task runs in the causal, mntp, fused and prefix modes of `scoring.SentenceScorer`
(causal and mntp are the official `--backend causal` / `--backend mntp`).
The official rules were read from babylm/evaluation-pipeline-2025 (sentence_zero_shot/,
reading/, AoA_word/, utils.py, collate_preds.py, calculate_results_from_pred.py);
each module's docstring names the files it follows.
"""

from .aoa import evaluate_aoa, milestone_checkpoints
from .common import TIE_RULES, TaskResult, official_backend, write_official
from .run import TASKS, is_task_2025, run_tasks_2025

__all__ = ["TASKS", "TIE_RULES", "TaskResult", "evaluate_aoa", "is_task_2025", "milestone_checkpoints",
           "official_backend", "run_tasks_2025", "write_official"]
