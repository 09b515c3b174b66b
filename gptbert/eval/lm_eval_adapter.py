"""lm-evaluation-harness adapter for exported GPT-BERT folders (registry name `gpt-bert`).

Needs `lm-eval` (tested: 0.4.13) and transformers (the export's remote code loads under 4.51+ and
5.x; tested here with 5.24); imports neither torch code from gptbert nor anything else of ours, so it
works on any export folder.

Modes (`mode=` in `--model_args`):
  causal  (default)  log p(continuation | <s> context), causal mask, position i-1 predicts token i
  mntp               GPT-BERT pseudo-log-likelihood: each continuation token is replaced by <mask>
                     in its own copy (one token at a time), bidirectional attention, and its
                     log-probability is read from the output one position earlier (MNTP)
  fused              causal + mntp, summed

`loglikelihood`, `loglikelihood_rolling` (all three modes) and
`generate_until` (causal, greedy unless `do_sample` is given) are supported.

lm-eval finds models registered by imported modules only, so the command line
is:

    python -m gptbert.eval.lm_eval_adapter --model gpt-bert \\
        --model_args pretrained=OUT_DIR,mode=causal --tasks blimp

and from Python: `import gptbert.eval.lm_eval_adapter` then
`lm_eval.simple_evaluate(model="gpt-bert", model_args="pretrained=OUT_DIR", ...)`.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

MODES = ("causal", "mntp", "fused")


@register_model("gpt-bert", "gpt_bert")
class GPTBertLM(TemplateLM):
    backend = "causal"  # context + continuation are tokenized together, then split

    def __init__(
        self,
        pretrained: str,
        mode: str = "causal",
        batch_size: int | str = 16,
        max_batch_size: int | None = None,
        device: str | None = None,
        dtype: str = "float32",
        max_length: int | None = None,
        trust_remote_code: bool = True,
        **kwargs,
    ) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        if mode not in MODES:
            raise ValueError(f"gpt-bert: mode must be one of {MODES}, got {mode!r}")
        self.pretrained = str(pretrained)
        self.mode = mode
        try:
            self.batch_size = max(1, int(batch_size))
        except (TypeError, ValueError):  # "auto": a fixed size is fine on CPU-sized models
            self.batch_size = 16
        if not device or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"  # lm-eval's CLI default is cuda
        self._device = torch.device(device)
        self._dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.trust_remote_code = bool(trust_remote_code) if not isinstance(trust_remote_code, str) \
            else trust_remote_code.lower() in ("1", "true", "yes")
        self.tokenizer = AutoTokenizer.from_pretrained(self.pretrained, trust_remote_code=self.trust_remote_code)
        self._models: dict[str, torch.nn.Module] = {}
        cfg = self._model("causal" if mode != "mntp" else "mntp").config
        self._max_length = int(max_length) if max_length else int(cfg.max_position_embeddings)
        self.mask_token_id = self.tokenizer.mask_token_id
        self.bos_token_id = self.tokenizer.bos_token_id

    # -- models ----------------------------------------------------------------

    def _model(self, kind: str):
        if kind not in self._models:
            from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

            if kind == "causal":
                m = AutoModelForCausalLM.from_pretrained(
                    self.pretrained, trust_remote_code=self.trust_remote_code, dtype=self._dtype)
            else:  # raw MNTP layout: row i scores token i+1, as GPT-BERT was trained
                m = AutoModelForMaskedLM.from_pretrained(
                    self.pretrained, trust_remote_code=self.trust_remote_code, dtype=self._dtype,
                    mlm_logits_layout="mntp")
            self._models[kind] = m.to(self._device).eval()
        return self._models[kind]

    # -- TemplateLM interface --------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return self.bos_token_id  # GPT-BERT documents start with <s>

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return 256

    @property
    def device(self):
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Token ids of `string`; `<s>` only when add_special_tokens is True (it is added when scoring)."""
        return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # -- scoring ----------------------------------------------------------------------

    def _full(self, context_enc: list[int], continuation_enc: list[int]) -> tuple[list[int], int]:
        """(<s> + context + continuation) cut to max_length from the left, and where the continuation starts."""
        full = list(context_enc) + list(continuation_enc)
        if not full or full[0] != self.bos_token_id:
            full = [self.bos_token_id] + full
        if len(full) > self.max_length:
            full = full[-self.max_length:]
        return full, len(full) - len(continuation_enc)

    @torch.no_grad()
    def _causal_scores(self, items: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        model = self._model("causal")
        out: list[tuple[float, bool] | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            T = max(len(items[i][0]) for i in idx)
            ids = torch.full((len(idx), T), self.tokenizer.pad_token_id, dtype=torch.long)
            am = torch.zeros((len(idx), T), dtype=torch.long)
            for r, i in enumerate(idx):
                seq = items[i][0]
                ids[r, :len(seq)] = torch.tensor(seq)
                am[r, :len(seq)] = 1
            logp = F.log_softmax(model(ids.to(self.device), attention_mask=am.to(self.device),
                                       use_cache=False).logits.float(), dim=-1).cpu()
            for r, i in enumerate(idx):
                seq, start = items[i]
                tgt = torch.tensor(seq[start:])
                lp = logp[r, start - 1:len(seq) - 1]
                out[i] = (float(lp.gather(-1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all()))
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _mntp_scores(self, items: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """One copy per continuation token with that token masked; all copies of all items batched."""
        model = self._model("mntp")
        rows = [(i, p) for i, (seq, start) in enumerate(items) for p in range(start, len(seq))]
        rows.sort(key=lambda r: -len(items[r[0]][0]))
        total = [0.0] * len(items)
        greedy = [True] * len(items)
        for s in range(0, len(rows), self.batch_size):
            chunk = rows[s:s + self.batch_size]
            T = max(len(items[i][0]) for i, _ in chunk)
            ids = torch.full((len(chunk), T), self.tokenizer.pad_token_id, dtype=torch.long)
            am = torch.zeros((len(chunk), T), dtype=torch.long)
            for r, (i, p) in enumerate(chunk):
                seq = items[i][0]
                ids[r, :len(seq)] = torch.tensor(seq)
                ids[r, p] = self.mask_token_id
                am[r, :len(seq)] = 1
            logits = model(ids.to(self.device), attention_mask=am.to(self.device)).logits
            pos = torch.tensor([p - 1 for _, p in chunk])
            tgt = torch.tensor([items[i][0][p] for i, p in chunk])
            lp = F.log_softmax(logits[torch.arange(len(chunk)), pos.to(logits.device)].float(), dim=-1).cpu()
            for r, (i, _) in enumerate(chunk):
                total[i] += float(lp[r, tgt[r]])
                greedy[i] = greedy[i] and bool(lp[r].argmax() == tgt[r])
        return list(zip(total, greedy))

    def _score(self, items: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        if self.mode == "causal":
            return self._causal_scores(items)
        if self.mode == "mntp":
            return self._mntp_scores(items)
        c, m = self._causal_scores(items), self._mntp_scores(items)
        return [(a + b, ga and gb) for (a, ga), (b, gb) in zip(c, m)]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        items = [self._full(ctx, cont) for _, ctx, cont in requests]
        results = self._score(items)
        for (key, _, _), res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Total log-probability of each string (pseudo-log-likelihood in mntp mode), `<s>` as the prefix."""
        out = []
        for (string,) in [req.args for req in requests]:
            tokens = self.tok_encode(string)
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1)]
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows]) if windows else []
            total = sum(s for s, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            out.append(total)
        return out

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        model = self._model("causal")
        out = []
        for context, gen_kwargs in [req.args for req in requests]:
            kw = dict(gen_kwargs or {})
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kw.pop("max_gen_toks", self.max_gen_toks))
            kw.setdefault("do_sample", False)
            if not kw["do_sample"]:
                kw.pop("temperature", None)
                kw.pop("top_p", None)
                kw.pop("top_k", None)
            ids = [self.bos_token_id] + self.tok_encode(context)
            ids = ids[-(self.max_length - max_new):] if max_new < self.max_length else ids[-1:]
            x = torch.tensor([ids], device=self.device)
            g = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, **kw)
            text = self.tok_decode(g[0, len(ids):].tolist())
            for stop in until:
                if stop and stop in text:
                    text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out


def main(argv: list[str] | None = None) -> None:
    """`lm_eval`'s command line, with the `gpt-bert` model registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
