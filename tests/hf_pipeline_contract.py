"""How the BabyLM 2025 evaluation pipeline scores a sentence, re-implemented in a few lines for the tests.

babylm/evaluation-pipeline-2025 @ bf55c11, `evaluation_pipeline/sentence_zero_shot` (dataset.py,
compute_results.py), for BLiMP-style items (the completion is the whole sentence, so the scored
tokens are those whose character span ends after character 0, found with `return_offsets_mapping`):

  causal  AutoModelForCausalLM on `<s> sentence` (right-padded batch): logit row i-1 scores token i
  mlm     AutoModelForMaskedLM, one copy per scored token with that token replaced by `<mask>`
          (copies right-padded into batches): logit row i scores token i
  mntp    as mlm, but logit row i-1 scores token i (the pipeline subtracts 1 from the index)

Sentence score = sum of log_softmax(logits)[token] over the scored tokens; the pipeline picks the
sentence with the larger score (`torch.max`, so a tie goes to the first, the good sentence).

Self-contained (torch only, no gptbert): the transformers 4.51 subprocess test imports it too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BACKENDS = ("causal", "mlm", "mntp")


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    am = torch.zeros((len(rows), T), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        am[b, : len(r)] = 1
    return ids, am


def scored_tokens(tokenizer, sentence: str, backend: str) -> tuple[list[int], list[int]]:
    """(input ids with `<s>`, indices of the tokens the pipeline scores) for one BLiMP sentence."""
    enc = tokenizer(sentence, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    has_bos = tokenizer.cls_token_id is not None or tokenizer.bos_token_id is not None
    idx = [i for i, (_, end) in enumerate(offsets) if end > 0]  # completion starts at character 0
    if backend == "causal":
        idx = [i for i in idx if i > 0]  # row i-1 predicts token i: the first token has no row
    elif backend == "mntp":
        idx = [i for i in idx if i != 0 or has_bos]
    return ids, idx


@torch.no_grad()
def pipeline_scores(model, tokenizer, sentences: list[str], backend: str, batch_size: int = 64) -> list[float]:
    """Sentence log-probabilities as the 2025 pipeline computes them with `backend` (fp32, T = 1)."""
    if backend not in BACKENDS:
        raise ValueError(backend)
    pad = tokenizer.pad_token_id
    scores = []
    if backend == "causal":
        prepared = [scored_tokens(tokenizer, s, backend) for s in sentences]
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start:start + batch_size]
            ids, am = _pad([p[0] for p in chunk], pad)
            logits = model(input_ids=ids[:, :-1], attention_mask=am[:, :-1]).logits.float()
            lp = F.log_softmax(logits, dim=-1)
            for b, (row, idx) in enumerate(chunk):
                scores.append(sum(lp[b, i - 1, row[i]].item() for i in idx))
        return scores
    mask_id = tokenizer.mask_token_id
    copies, reads, targets, owner = [], [], [], []  # the copies of all sentences, padded together
    for k, s in enumerate(sentences):
        row, idx = scored_tokens(tokenizer, s, backend)
        for i in idx:
            c = list(row)
            c[i] = mask_id
            copies.append(c)
            reads.append(i if backend == "mlm" else i - 1)
            targets.append(row[i])
            owner.append(k)
    totals = [0.0] * len(sentences)
    for start in range(0, len(copies), batch_size):
        ids, am = _pad(copies[start:start + batch_size], pad)
        logits = model(input_ids=ids, attention_mask=am).logits.float()
        r = torch.tensor(reads[start:start + batch_size])
        t = torch.tensor(targets[start:start + batch_size])
        lp = F.log_softmax(logits[torch.arange(len(r)), r], dim=-1).gather(-1, t[:, None])[:, 0]
        for k, v in zip(owner[start:start + batch_size], lp.tolist()):
            totals[k] += v
    return totals
