"""Evaluation of GPT-BERT checkpoints: the BabyLM zero-shot suite and (Super)GLUE fine-tuning.

  scoring        SentenceScorer: causal / mntp / fused / prefix log-probs with a temperature sweep
  minimal_pairs  BLiMP, BLiMP supplement, EWoK loaders and per-paradigm/phenomenon/domain accuracy
  lambada        LAMBADA exact match and perplexity (causal, masked, prefix)
  tasks2025      BabyLM 2025 tasks: entity tracking, WUG, COMPS, reading, AoA (official rules)
  finetune       GLUE fine-tuning with the paper's classifier and Table 4 hyperparameters
  metrics        accuracy, F1, MCC (numpy) and the paper's GLUE average
  suite, report  `gptbert eval` orchestration, results.json, tables, predictions, PNG charts
  lm_eval_adapter  the lm-evaluation-harness model `gpt-bert` for exported folders

Models and tokenizers are loaded by `gptbert.pretrained.load`; the command line is in `gptbert.cli`.
"""

from .metrics import accuracy, f1_binary, glue_score, matthews_corrcoef
from .scoring import MODES, SWEEP_TEMPERATURES, Scores, SentenceScorer, pair_correct

__all__ = [
    "MODES",
    "SWEEP_TEMPERATURES",
    "Scores",
    "SentenceScorer",
    "accuracy",
    "f1_binary",
    "glue_score",
    "matthews_corrcoef",
    "pair_correct",
]
