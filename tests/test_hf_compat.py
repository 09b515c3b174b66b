"""The export under the transformers the ecosystem pins (4.51.3, BabyLM 2025 pipeline) and under 5.x; position_ids.

* transformers 4.51.3 (with tokenizers 0.21.1 and huggingface_hub 0.31.0, the pipeline's pins) is
  installed once into a cache folder (~/.cache/gptbert-tests/tf-4.51.3-..., or $GPTBERT_TEST_CACHE) and the
  export is loaded there in a subprocess that cannot import gptbert: logits of every head against our
  model (1e-5, fp32), generate() tokens with and without the KV cache, the cache step by step against a
  full recompute, position_ids packing, the tokenizer without trust_remote_code, the BabyLM 2025 scoring
  contract and minicons. The test skips only when the package registry cannot be reached.
* position_ids: honoured by every head (relative positions are position differences), so packed texts
  score as each text alone; with the KV cache too.
* AutoTokenizer needs no remote code.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5.0")

from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from gptbert.convert.export_hf import export_hf  # noqa: E402
from gptbert.eval.scoring import SentenceScorer  # noqa: E402
from gptbert.generate import SUPPRESSED_IDS, generate_ids  # noqa: E402
from gptbert.model import attention_mask  # noqa: E402
from gptbert.pretrained import load  # noqa: E402
from gptbert.tokenizer import BOS_ID, EOS_ID, MASK_ID  # noqa: E402
from helpers import SENTENCES  # noqa: E402
from hf_models import BLIMP_FAST, blimp_pairs, tiny_run  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
TESTS_DIR = Path(__file__).resolve().parent
# What babylm/evaluation-pipeline-2025 pins (requirements.txt).
OLD_STACK = {"transformers": "4.51.3", "tokenizers": "0.21.1", "huggingface_hub": "0.31.0"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_compat")
    run = tiny_run(root)
    exports = {layout: export_hf(run, root / f"export-{layout}", mlm_logits_layout=layout)
               for layout in ("mntp", "aligned")}
    pre = load(run)
    return {"root": root, "run": run, "dir": exports["mntp"], "exports": exports, "ours": pre.model,
            "tok": pre.tokenizer}


def _ours_logits(model, ids, causal, position_ids=None, mask=None):
    if mask is None:
        mask = attention_mask(torch.zeros_like(ids), causal)
    with torch.no_grad():
        hidden = model.encode(ids, mask, position_ids)
        return model.head(hidden), hidden


# ---------------------------------------------------------------------------
# position_ids


def _packed(tok, texts):
    """One row holding each text (`<s>` + tokens) in turn: ids, position ids restarting at 0, the block-diagonal
    (1, T, T) mask, and each text's slice."""
    rows = [tok.encode(t).ids for t in texts]
    ids = torch.tensor([sum(rows, [])])
    pos = torch.tensor([[i for r in rows for i in range(len(r))]])
    seg = torch.tensor([[k for k, r in enumerate(rows) for _ in r]])
    spans, start = [], 0
    for r in rows:
        spans.append(slice(start, start + len(r)))
        start += len(r)
    return rows, ids, pos, seg, spans


def test_packed_texts_score_as_each_text_alone(exported):
    """Three texts in one row (restarting position ids, block-diagonal mask) give every head the logits, and
    hence the scores, of each text alone; and equal `GPTBERT.encode` with the same position ids."""
    d, ours, tok = exported["dir"], exported["ours"], exported["tok"]
    texts = SENTENCES[:3]
    rows, ids, pos, seg, spans = _packed(tok, texts)
    block = seg[:, :, None] == seg[:, None, :]  # (1, T, T): 1 = may attend
    lm = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
    mlm = AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True).eval()  # mntp layout
    aligned = AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True, mlm_logits_layout="aligned").eval()
    base = AutoModel.from_pretrained(d, trust_remote_code=True).eval()
    with torch.no_grad():
        c_packed = lm(ids, attention_mask=block.long(), position_ids=pos, use_cache=False).logits
        m_packed = mlm(ids, attention_mask=block.long(), position_ids=pos).logits
        a_packed = aligned(ids, attention_mask=block.long(), position_ids=pos).logits
        h_packed = base(ids, attention_mask=block.long(), position_ids=pos).last_hidden_state
    # parity with our model on the same packed row
    ref_c, _ = _ours_logits(ours, ids, True, pos, attention_mask(seg, True))
    ref_m, ref_h = _ours_logits(ours, ids, False, pos, attention_mask(seg, False))
    assert (c_packed - ref_c).abs().max() < TOL and (m_packed - ref_m).abs().max() < TOL
    assert (h_packed - ref_h).abs().max() < TOL
    for r, sp in zip(rows, spans):
        alone = torch.tensor([r])
        with torch.no_grad():
            c = lm(alone, use_cache=False).logits[0]
            m = mlm(alone).logits[0]
            a = aligned(alone).logits[0]
            h = base(alone).last_hidden_state[0]
        assert (c_packed[0, sp] - c).abs().max() < TOL
        assert (m_packed[0, sp] - m).abs().max() < TOL
        assert (a_packed[0, sp][1:] - a[1:]).abs().max() < TOL  # row 0 of a text is the previous text's last row
        assert (h_packed[0, sp] - h).abs().max() < TOL
        # the sentence score (sum of causal log-probs) of the packed row = the text alone = `gptbert eval`
        tgt = alone[0, 1:]
        packed_score = c_packed[0, sp][:-1].log_softmax(-1).gather(-1, tgt[:, None]).sum().item()
        alone_score = c[:-1].log_softmax(-1).gather(-1, tgt[:, None]).sum().item()
        assert abs(packed_score - alone_score) < 1e-4
    text_scores = SentenceScorer(ours, tok, precision="fp32", temperatures=(1.0,)).score_texts(texts, "causal")
    for k, (r, sp) in enumerate(zip(rows, spans)):
        tgt = torch.tensor(r[1:])
        s = c_packed[0, sp][:-1].log_softmax(-1).gather(-1, tgt[:, None]).sum().item()
        assert abs(s - text_scores.column(1.0)[k]) < 1e-4


def test_position_ids_are_used_not_ignored(exported):
    d, ours, tok = exported["dir"], exported["ours"], exported["tok"]
    ids = torch.tensor([tok.encode(SENTENCES[3]).ids])
    T = ids.shape[1]
    lm = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
    mlm = AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True).eval()
    default = torch.arange(T)[None]
    spread = default * 3  # distances x3: a different model input
    for model, causal in ((lm, True), (mlm, False)):
        kw = {"use_cache": False} if causal else {}
        with torch.no_grad():
            plain = model(ids, **kw).logits
            shifted = model(ids, position_ids=default + 11, **kw).logits  # only differences matter
            spread_out = model(ids, position_ids=spread, **kw).logits
        assert (plain - shifted).abs().max() < TOL
        assert (spread_out - plain).abs().max() > 1e-3
        ref, _ = _ours_logits(ours, ids, causal, spread)
        assert (spread_out - ref).abs().max() < TOL
    with pytest.raises(ValueError, match="position_ids"):
        lm(ids, position_ids=default[:, :-1], use_cache=False)


def test_kv_cache_keeps_explicit_positions(exported):
    """Prefill with explicit (offset, packed) position ids, then decode with and without position ids: the
    same logits as one full forward."""
    d, tok = exported["dir"], exported["tok"]
    lm = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
    rows, ids, pos, seg, spans = _packed(tok, SENTENCES[:2])
    T = ids.shape[1]
    block = (seg[:, :, None] == seg[:, None, :]).long()
    with torch.no_grad():
        full = lm(ids, attention_mask=block, position_ids=pos, use_cache=False).logits
        cut = spans[1].start + 3  # inside the second text
        out = lm(ids[:, :cut], attention_mask=block[:, :cut, :cut], position_ids=pos[:, :cut], use_cache=True)
        steps, cache = [out.logits], out.cache
        for t in range(cut, T):  # one token at a time, alternately with and without position_ids
            kw = {"position_ids": pos[:, t:t + 1]} if t % 2 else {}
            out = lm(ids[:, t:t + 1], attention_mask=block[:, t:t + 1, :t + 1], cache=cache, use_cache=True, **kw)
            cache = out.cache
            steps.append(out.logits)
    assert cache.get_seq_length() == T
    assert (torch.cat(steps, 1) - full).abs().max() < TOL


def test_generate_left_padding_with_position_ids(exported):
    """generate() passes position ids computed from the attention mask (left padding): each row = the unpadded
    prompt alone, with and without the cache."""
    d = exported["dir"]
    lm = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
    hf_tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True, padding_side="left")
    prompts = ["The cat sat on", "Where is the dog going? Home,"]
    b = hf_tok(prompts, padding=True, return_tensors="pt")
    assert (b["attention_mask"] == 0).any()
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    with torch.no_grad():
        batch = lm.generate(**b, use_cache=True, **kw)
        for row, p in enumerate(prompts):
            alone = lm.generate(**hf_tok(p, return_tensors="pt"), use_cache=False, **kw)
            assert batch[row, -8:].tolist() == alone[0, -8:].tolist()
        # beam search expands and reorders the cache along the batch: the kept positions follow
        beams = dict(num_beams=3, num_return_sequences=2, **kw)
        assert torch.equal(lm.generate(**b, use_cache=True, **beams), lm.generate(**b, use_cache=False, **beams))


# ---------------------------------------------------------------------------
# The tokenizer needs no remote code


def test_tokenizer_config_names_a_portable_class_and_loads_without_remote_code(exported, monkeypatch):
    d, tok = exported["dir"], exported["tok"]
    assert json.loads((d / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"

    def no_prompt(*a, **k):
        raise AssertionError("AutoTokenizer asked whether to run custom code")

    monkeypatch.setattr(builtins, "input", no_prompt)
    # transformers 5 reads the model config first (custom code: it would ask); False is enough for a tokenizer
    # that needs no code. transformers 4.51 needs no argument at all (checked in the 4.51 subprocess below).
    hf_tok = AutoTokenizer.from_pretrained(d, trust_remote_code=False)
    assert hf_tok.is_fast and hf_tok.mask_token_id == MASK_ID and hf_tok.bos_token_id == BOS_ID
    for s in SENTENCES:
        assert hf_tok(s)["input_ids"] == tok.encode(s).ids


# ---------------------------------------------------------------------------
# transformers 4.51.3 in a separate folder


def _cache_root() -> Path:
    return Path(os.environ.get("GPTBERT_TEST_CACHE", "~/.cache/gptbert-tests")).expanduser()


def _index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        try:
            url = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            url = ""
    return url or "https://pypi.org/simple"


def _registry_reachable() -> tuple[bool, str]:
    url = _index_url().rstrip("/") + "/transformers/"
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            r.read(64)
        return True, url
    except Exception as e:  # noqa: BLE001 - any failure to reach it is "unreachable"
        return False, f"{url}: {e}"


def old_stack_dir() -> Path:
    """transformers 4.51.3 + tokenizers + huggingface_hub, installed once (no dependencies: the rest comes
    from this environment) into a cache folder keyed by the versions; reused by later runs."""
    key = "-".join(f"{k}-{v}" for k, v in OLD_STACK.items())
    target = _cache_root() / key
    if (target / "INSTALLED").is_file():
        return target
    ok, where = _registry_reachable()
    if not ok:
        pytest.skip(f"the package registry is unreachable ({where}); cannot install transformers "
                    f"{OLD_STACK['transformers']} to test the export under it")
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--target", str(tmp), *(f"{k}=={v}" for k, v in OLD_STACK.items())]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"installing {OLD_STACK} failed although {where} answers:\n{res.stderr[-3000:]}")
    (tmp / "INSTALLED").write_text(json.dumps(OLD_STACK) + "\n")
    try:
        tmp.rename(target)
    except OSError:  # another process installed it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


OLD_STACK_SCRIPT = r'''
import builtins, json, sys, time
sys.modules["gptbert"] = None  # the folder alone: any `import gptbert` fails
t0 = time.time()
import torch
import transformers
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                          AutoModelForSequenceClassification, AutoProcessor, AutoTokenizer)
from hf_pipeline_contract import pipeline_scores

ref = torch.load(sys.argv[1])
d, d_aligned = ref["dir"], ref["dir_aligned"]
out = {"versions": {"transformers": transformers.__version__}}
import tokenizers, huggingface_hub
out["versions"].update(tokenizers=tokenizers.__version__, huggingface_hub=huggingface_hub.__version__)

prompts = []
def no_prompt(*a, **k):
    prompts.append(a)
    return "n"
builtins.input = no_prompt
tok = AutoTokenizer.from_pretrained(d)  # no trust_remote_code
out["tokenizer"] = {"class": type(tok).__name__, "prompts": len(prompts),
                    "ids": [tok(s)["input_ids"] for s in ref["sentences"]],
                    "offsets": [[list(o) for o in tok(s, return_offsets_mapping=True)["offset_mapping"]]
                                for s in ref["sentences"]]}
proc = AutoProcessor.from_pretrained(d, padding_side="right", trust_remote_code=True)  # as the pipeline loads it
out["processor"] = type(proc).__name__
builtins.input = lambda *a, **k: (_ for _ in ()).throw(AssertionError("prompt"))

def max_err(a, b):
    return (a - b).abs().max().item()

lm = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
mlm = AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True).eval()
aligned = AutoModelForMaskedLM.from_pretrained(d_aligned, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(d, trust_remote_code=True).eval()
AutoModelForSequenceClassification.from_pretrained(d, trust_remote_code=True, num_labels=3)
err = {}
with torch.no_grad():
    for side in ("right", "left"):  # padded batch, every real position against our model on the row alone
        tok.padding_side = side
        b = tok(ref["sentences"], padding=True, return_tensors="pt")
        got = lm(**b, use_cache=False).logits
        e = 0.0
        for row, r in enumerate(ref["causal"]):
            keep = b["attention_mask"][row].bool()
            e = max(e, max_err(got[row][keep], r))
        err[f"causal_{side}_padded"] = e
    ids, masked = ref["masked_ids"], ref["bidirectional"]
    err["mlm_mntp"] = max_err(mlm(ids).logits, masked)
    la = aligned(ids).logits
    err["mlm_aligned"] = max_err(la[:, 1:], masked[:, :-1])
    out["aligned_row0_finite"] = bool(torch.isfinite(la[:, 0]).all()) and la[:, 0].min().item() > -1e4
    err["automodel_hidden"] = max_err(base(ids).last_hidden_state, ref["hidden"])
    # KV cache: chunks of 5, 4, 4 against the full forward
    full_ids = ref["cache_ids"]
    full = lm(full_ids, use_cache=False).logits
    o = lm(full_ids[:, :5], use_cache=True)
    cache = getattr(o, "past_key_values", None) or getattr(o, "cache", None)
    parts = [o.logits]
    for t in range(5, full_ids.shape[1], 4):
        o = lm(full_ids[:, t:t + 4], past_key_values=cache, use_cache=True)
        cache = getattr(o, "past_key_values", None) or getattr(o, "cache", None)
        parts.append(o.logits)
    err["kv_cache_vs_full"] = max_err(torch.cat(parts, 1), full)
    err["full_vs_ours"] = max_err(full, ref["cache_ref"])
    out["cache_len"] = cache.get_seq_length()
    # packed texts with restarting position ids and a block-diagonal mask = each text alone
    err["packed_vs_alone"] = max_err(
        lm(ref["packed_ids"], attention_mask=ref["packed_mask"], position_ids=ref["packed_pos"],
           use_cache=False).logits, ref["packed_ref"])
    # generate, left padding, greedy, repetition penalty (generation_config.json: suppress_tokens, eos)
    tok.padding_side = "left"
    g = tok(ref["gen_prompts"], padding=True, return_tensors="pt")
    kw = dict(max_new_tokens=ref["gen_n"], min_new_tokens=ref["gen_n"], do_sample=False, repetition_penalty=1.5)
    out["generate_cached"] = lm.generate(**g, use_cache=True, **kw)[:, -ref["gen_n"]:].tolist()
    out["generate_uncached"] = lm.generate(**g, use_cache=False, **kw)[:, -ref["gen_n"]:].tolist()
out["errors"] = err

# the BabyLM 2025 scoring contract, per backend, with the matching layout
if ref["pairs_sentences"]:
    tok.padding_side = "right"
    out["pipeline"] = {
        "causal": pipeline_scores(lm, tok, ref["pairs_sentences"], "causal"),
        "mntp": pipeline_scores(mlm, tok, ref["pairs_sentences"], "mntp"),
        "mlm": pipeline_scores(aligned, tok, ref["pairs_sentences"], "mlm"),
    }
    try:
        from minicons import scorer
    except Exception as e:  # noqa: BLE001
        out["minicons"] = {"error": f"{type(e).__name__}: {e}"}
    else:
        total = lambda x: x.sum(0).item()
        inc = scorer.IncrementalLMScorer(d, "cpu", trust_remote_code=True)  # loads its tokenizer itself
        m = scorer.MaskedLMScorer(d, "cpu", trust_remote_code=True, mlm_logits_layout="aligned")
        s = ref["pairs_sentences"]
        out["minicons"] = {
            "incremental": inc.sequence_score(s, reduction=total, bos_token=False),
            "incremental_bos": inc.sequence_score(s, reduction=total, bos_token=True),
            "masked": m.sequence_score(s, reduction=total, PLL_metric="original"),
        }
out["seconds"] = time.time() - t0
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def old_stack_run(exported, tmp_path_factory):
    """Runs OLD_STACK_SCRIPT under transformers 4.51.3 on the export; returns (its JSON output, the references)."""
    t_install = time.time()
    stack = old_stack_dir()
    t_install = time.time() - t_install
    root = tmp_path_factory.mktemp("old_stack")
    ours, tok = exported["ours"], exported["tok"]
    ref: dict = {"dir": str(exported["exports"]["mntp"]), "dir_aligned": str(exported["exports"]["aligned"]),
                 "sentences": SENTENCES[:4]}
    ref["causal"] = [_ours_logits(ours, torch.tensor([tok.encode(s).ids]), True)[0][0] for s in ref["sentences"]]
    masked = torch.tensor([tok.encode(SENTENCES[4]).ids])
    masked[0, 3] = MASK_ID
    ref["masked_ids"] = masked
    ref["bidirectional"], ref["hidden"] = _ours_logits(ours, masked, False)
    ref["cache_ids"] = torch.randint(16, ours.config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    ref["cache_ref"] = _ours_logits(ours, ref["cache_ids"], True)[0]
    rows, ids, pos, seg, spans = _packed(tok, SENTENCES[:3])
    ref["packed_ids"], ref["packed_pos"] = ids, pos
    ref["packed_mask"] = (seg[:, :, None] == seg[:, None, :]).long()
    ref["packed_ref"] = torch.cat([_ours_logits(ours, torch.tensor([r]), True)[0] for r in rows], dim=1)
    ref["gen_prompts"], ref["gen_n"] = ["The cat sat on", "Two birds sang near the"], 12
    pairs = blimp_pairs(n_files=3, per_file=2, stride=20) if BLIMP_FAST.is_dir() else []
    ref["pairs_sentences"] = [p[k] for p in pairs for k in ("sentence_good", "sentence_bad")]
    torch.save(ref, root / "ref.pt")
    script = root / "old_stack.py"
    script.write_text(OLD_STACK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stack), str(TESTS_DIR)]), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(root / "hf_home"), "OMP_NUM_THREADS": "1",
           "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    res = subprocess.run([sys.executable, str(script), str(root / "ref.pt")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    out["install_seconds"], out["subprocess_seconds"] = t_install, time.time() - t0
    print(f"\ntransformers {OLD_STACK['transformers']}: install/reuse {t_install:.1f}s, "
          f"subprocess {out['subprocess_seconds']:.1f}s")
    return out, ref, pairs


def test_old_stack_versions_and_tokenizer(old_stack_run, exported):
    out, ref, _ = old_stack_run
    assert out["versions"] == OLD_STACK
    t = out["tokenizer"]
    assert t["class"] == "PreTrainedTokenizerFast" and t["prompts"] == 0  # no trust_remote_code, no prompt
    assert out["processor"] == "PreTrainedTokenizerFast"
    hf5 = AutoTokenizer.from_pretrained(exported["dir"], trust_remote_code=True)
    for s, ids, offsets in zip(ref["sentences"], t["ids"], t["offsets"]):
        assert ids == exported["tok"].encode(s).ids  # = our tokenizer, <s> first
        assert offsets == [list(o) for o in hf5(s, return_offsets_mapping=True)["offset_mapping"]]


def test_old_stack_logits_match_our_model(old_stack_run):
    out, _, _ = old_stack_run
    for name, err in out["errors"].items():
        assert err < TOL, (name, err)
    assert out["aligned_row0_finite"] and out["cache_len"] == 13


def test_old_stack_generate_matches(old_stack_run, exported):
    out, ref, _ = old_stack_run
    assert out["generate_cached"] == out["generate_uncached"]
    ours, tok = exported["ours"], exported["tok"]
    sup = SUPPRESSED_IDS + (BOS_ID, EOS_ID)  # min_new_tokens keeps the stop ids out as well
    expect = [generate_ids(ours, tok.encode(p).ids, ref["gen_n"], repetition_penalty=1.5, suppress_ids=sup)
              for p in ref["gen_prompts"]]
    assert out["generate_cached"] == expect
    # and transformers 5 generates the same tokens
    lm = AutoModelForCausalLM.from_pretrained(exported["dir"], trust_remote_code=True).eval()
    hf_tok = AutoTokenizer.from_pretrained(exported["dir"], trust_remote_code=True, padding_side="left")
    g = hf_tok(ref["gen_prompts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        new = lm.generate(**g, max_new_tokens=ref["gen_n"], min_new_tokens=ref["gen_n"], do_sample=False,
                          repetition_penalty=1.5)
    assert new[:, -ref["gen_n"]:].tolist() == expect


def test_old_stack_pipeline_contract_and_minicons(old_stack_run, exported):
    out, ref, pairs = old_stack_run
    if not pairs:
        pytest.skip(f"{BLIMP_FAST} not found (the shared evaluation data lives next to the repository)")
    sentences = ref["pairs_sentences"]
    scorer = SentenceScorer(exported["ours"], exported["tok"], precision="fp32", temperatures=(1.0,))
    ours = {m: [float(x) for x in scorer.score_texts(sentences, m).column(1.0)] for m in ("causal", "mntp")}
    for backend, mode in (("causal", "causal"), ("mntp", "mntp"), ("mlm", "mntp")):
        got = out["pipeline"][backend]
        assert max(abs(g - r) for g, r in zip(got, ours[mode])) < 1e-3, backend
        assert all((got[2 * i] > got[2 * i + 1]) == (ours[mode][2 * i] > ours[mode][2 * i + 1])
                   for i in range(len(pairs)))
    mc = out["minicons"]
    assert "error" not in mc, mc
    assert max(abs(g - r) for g, r in zip(mc["incremental"], ours["causal"])) < 1e-3
    assert max(abs(g - r) for g, r in zip(mc["masked"], ours["mntp"])) < 1e-3
    # bos_token=True puts a second <s> in front: different scores
    assert max(abs(g - r) for g, r in zip(mc["incremental_bos"], ours["causal"])) > 1e-2
