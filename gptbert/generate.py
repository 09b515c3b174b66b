"""Text generation with our model (causal mask; no transformers needed).

Greedy decoding with a repetition penalty gives exactly the tokens of
transformers' `generate(do_sample=False, repetition_penalty=...)` on the
exported model (tests/test_hf_export.py checks it). The paper recommends a
repetition penalty of 1.5 for GPT-BERT.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer

from .errors import GPTBertError
from .model import GPTBERT, attention_mask
from .tokenizer import BOS_ID, EOS_ID

# Never generated: <unk>, <pad>, <mask> and the 11 spare specials (<s> and </s> end a continuation).
SUPPRESSED_IDS = (0, 3, 4) + tuple(range(5, 16))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty, as transformers' RepetitionPenaltyLogitsProcessor: for every token already in the
    sequence, a positive logit is divided by `penalty` and a negative one multiplied by it."""
    if penalty == 1.0:
        return logits
    picked = logits.gather(-1, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return logits.scatter(-1, seen, picked)


@torch.no_grad()
def generate_ids(
    model: GPTBERT,
    prompt_ids: list[int],
    max_new_tokens: int = 50,
    greedy: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.5,
    stop_ids: tuple[int, ...] = (),
    suppress_ids: tuple[int, ...] = (),
    seed: int | None = None,
) -> list[int]:
    """Continue `prompt_ids` with our GPTBERT (causal mask); returns the new token ids.

    Greedy decoding with the same repetition penalty gives exactly the tokens
    of transformers' `generate(do_sample=False, repetition_penalty=...)` on the
    exported model (pass `suppress_ids=SUPPRESSED_IDS`, which the export's
    generation_config.json sets as `suppress_tokens`). The context is cut to
    the model's longest sequence.
    """
    if not prompt_ids:
        raise GPTBertError("generate: the prompt encodes to no tokens")
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    limit = model.config.max_position
    new: list[int] = []
    for _ in range(max_new_tokens):
        ctx = ids[:, -limit:]
        mask = attention_mask(torch.zeros_like(ctx), True)
        logits = model(ctx, mask)[:, -1].float()  # (1, V)
        logits = apply_repetition_penalty(logits, ids, repetition_penalty)
        if suppress_ids:
            logits[:, list(suppress_ids)] = float("-inf")
        if greedy:
            nxt = int(logits.argmax(-1))
        else:
            logits = logits / max(temperature, 1e-6)
            if top_k and top_k > 0:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p < 1.0:
                sorted_logits, order = torch.sort(logits, descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest set reaching top_p
                logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
            probs = logits.softmax(-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
        if nxt in stop_ids:
            break
        new.append(nxt)
    return new


def generate_text(model: GPTBERT, tok: Tokenizer, prompt: str, **kw) -> str:
    """The continuation of `prompt` (text only, without the prompt)."""
    prompt_ids = tok.encode(prompt).ids  # "<s> ..." (the post-processor adds <s>)
    kw.setdefault("stop_ids", (BOS_ID, EOS_ID))
    kw.setdefault("suppress_ids", SUPPRESSED_IDS)
    new = generate_ids(model, prompt_ids, **kw)
    full = tok.decode(prompt_ids + new, skip_special_tokens=True)
    head = tok.decode(prompt_ids, skip_special_tokens=True)
    return full[len(head):] if full.startswith(head) else tok.decode(new, skip_special_tokens=True)

