"""Hugging Face export: every Auto class against our model, KV-cache generation, offline loading."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5.0")

from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from gptbert.errors import GPTBertError  # noqa: E402
from gptbert.convert.export_hf import export_hf, export_sequence_classifier  # noqa: E402
from gptbert.generate import SUPPRESSED_IDS, generate_ids  # noqa: E402
from gptbert.model import attention_mask  # noqa: E402
from gptbert.tokenizer import BOS_ID, MASK_ID, PAD_ID, load_tokenizer  # noqa: E402
from helpers import SENTENCES, load_model  # noqa: E402
from hf_models import blimp_pairs, tiny_run  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_export")
    run = tiny_run(root)
    out = export_hf(run, root / "export")
    model, _, which = load_model(run)
    assert which == "ema"
    return {"root": root, "run": run, "dir": out, "ours": model, "tok": load_tokenizer(root / "tokenizer.json")}


def _batch(hf_tok, side="right"):
    hf_tok.padding_side = side
    return hf_tok(["The cat sat", "Two birds sang near the river after lunch."], padding=True, return_tensors="pt")


def _ours(model, ids, am, causal):
    seg = (am == 0).long()  # padding is its own segment
    with torch.no_grad():
        return model(ids, attention_mask(seg, causal)), model.encode(ids, attention_mask(seg, causal))


def test_export_folder_contents(exported):
    d = exported["dir"]
    for name in ("config.json", "configuration_gpt_bert.py", "modeling_gpt_bert.py", "model.safetensors",
                 "tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md"):
        assert (d / name).is_file(), name
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "gpt_bert" and cfg["mlm_logits_layout"] == "mntp"  # the official layout
    assert set(cfg["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM",
                                    "AutoModelForSequenceClassification"}
    for name in ("configuration_gpt_bert.py", "modeling_gpt_bert.py"):  # self-contained: torch + transformers
        tree = ast.parse((d / name).read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert roots <= {"__future__", "math", "torch", "transformers"}, roots
    card = (d / "README.md").read_text()
    assert "| optimizer steps | 7 |" in card and "12,345" in card and "0.0625" in card and "ema" in card.lower()
    assert "--backend mntp" in card and "--backend mlm" in card

    # EMA weights by default, fp32, tied output matrix stored once
    from safetensors.torch import load_file

    from gptbert.checkpoint import load_checkpoint

    w = load_file(str(d / "model.safetensors"))
    ck = load_checkpoint(exported["run"])
    key = "embedding.word_embedding.weight"
    assert torch.equal(w[key], ck.ema[key]) and not torch.equal(w[key], ck.model[key])
    assert all(t.dtype == torch.float32 for t in w.values())
    assert "classifier.nonlinearity.5.weight" not in w


def test_export_raw_and_refuses_non_empty(exported, tmp_path):
    zero_shot = {"tasks": {"blimp_fast": {"causal": {"T1": {"average": 61.234}, "n_pairs": 9,
                                                     "best_T": {"average": 63.0, "temperature": 1.5}}}},
                 "lambada": {"causal": {"accuracy": 12.5, "seconds": 3.0}}}
    glue = {"tasks": {"rte": {"best_epoch": 2, "n_train": 100, "results": {}}}, "scores": {"rte": 55.0, "boolq": None},
            "glue_score": {"score": 60.1}}
    (tmp_path / "zs.json").write_text(json.dumps(zero_shot))
    (tmp_path / "ft.json").write_text(json.dumps(glue))
    out = export_hf(exported["run"], tmp_path / "raw", raw=True, mlm_logits_layout="aligned",
                    results=[tmp_path / "zs.json", tmp_path / "ft.json"])
    card = (out / "README.md").read_text()
    for row in ("| blimp_fast (causal) | accuracy, T=1 | 61.23 |", "| blimp_fast (causal) | accuracy, best T=1.5 | 63.00 |",
                "| LAMBADA (causal) | accuracy | 12.50 |", "| rte | score | 55.00 |", "| boolq | score | unavailable |",
                "| GLUE score | mean | 60.10 |"):
        assert row in card, row
    assert "n_pairs" not in card and "seconds" not in card and "best_epoch" not in card
    assert "raw trained weights" in card
    from safetensors.torch import load_file

    from gptbert.checkpoint import load_checkpoint

    key = "transformer.attention_layers.0.in_proj_qk.weight"
    assert torch.equal(load_file(str(out / "model.safetensors"))[key], load_checkpoint(exported["run"]).model[key])
    assert json.loads((out / "config.json").read_text())["mlm_logits_layout"] == "aligned"
    assert "--backend mlm" in card
    with pytest.raises(GPTBertError, match="not empty"):
        export_hf(exported["run"], out)
    export_hf(exported["run"], out, force=True)  # replaces it
    assert json.loads((out / "config.json").read_text())["mlm_logits_layout"] == "mntp"


def test_tokenizer_contract(exported):
    hf_tok = AutoTokenizer.from_pretrained(exported["dir"], trust_remote_code=True)
    tok = exported["tok"]
    assert hf_tok.is_fast
    assert (hf_tok.bos_token_id, hf_tok.mask_token_id, hf_tok.pad_token_id) == (BOS_ID, MASK_ID, PAD_ID)
    assert hf_tok.unk_token == "<unk>" and hf_tok.eos_token == "</s>" and hf_tok.cls_token == "<s>"
    for s in SENTENCES + ["Unseen wörds, 123!"]:
        enc = hf_tok(s, return_offsets_mapping=True)
        assert enc["input_ids"] == tok.encode(s).ids  # same ids as our tokenizer, <s> first
        assert hf_tok.decode(enc["input_ids"], skip_special_tokens=True) == s
        for (a, b), t in zip(enc["offset_mapping"], enc.tokens()):
            assert not s[a:b].startswith(" ")  # offsets never include the leading space
    # After the first word, a token's span is exactly its text without the space (ltgoslo/gpt-bert#2).
    # (The first word's tokens start one character late: the prepended space maps onto character 0.)
    s = "The cat sat on the warm mat."
    enc = hf_tok(s, return_offsets_mapping=True)
    later = [(t, s[a:b]) for (a, b), t, w in zip(enc["offset_mapping"], enc.tokens(), enc.word_ids()) if w and w > 0]
    assert later and all(span == t.replace("Ġ", " ").lstrip(" ") for t, span in later)


def test_causal_lm_logits_match_on_padded_batch(exported):
    d, ours = exported["dir"], exported["ours"]
    lm = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
    assert isinstance(lm, transformers.GenerationMixin)
    hf_tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
    for side in ("right", "left"):
        b = _batch(hf_tok, side)
        with torch.no_grad():
            got = lm(**b, use_cache=False).logits
        for row in range(2):  # each row alone, unpadded, through our model
            keep = b["attention_mask"][row].bool()
            ids = b["input_ids"][row][keep][None]
            ref, _ = _ours(ours, ids, torch.ones_like(ids), True)
            assert (got[row][keep] - ref[0]).abs().max() < TOL
        # and the padded batch through our model (padding as its own segment)
        ref, _ = _ours(ours, b["input_ids"], b["attention_mask"], True)
        keep = b["attention_mask"].bool()
        assert (got[keep] - ref[keep]).abs().max() < TOL
        assert torch.isfinite(got).all()


def test_masked_lm_aligned_and_mntp_layouts(exported):
    d, ours = exported["dir"], exported["ours"]
    hf_tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
    b = _batch(hf_tok)
    b["input_ids"][1, 3] = MASK_ID
    ref, _ = _ours(ours, b["input_ids"], b["attention_mask"], False)
    keep = b["attention_mask"].bool()

    raw = AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True).eval()  # the export default: mntp
    assert raw.config.mlm_logits_layout == "mntp"
    aligned = AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True, mlm_logits_layout="aligned").eval()
    with torch.no_grad():
        la, lr = aligned(**b).logits, raw(**b).logits
    assert (lr[keep] - ref[keep]).abs().max() < TOL  # mntp: row i scores token i+1
    assert (la[:, 1:][keep[:, 1:]] - ref[:, :-1][keep[:, 1:]]).abs().max() < TOL  # aligned: row i scores token i
    # row 0 (no GPT-BERT prediction) is uniform: finite, every token log(1/V), so no scorer reading it gets -inf
    V = la.shape[-1]
    assert torch.isfinite(la).all() and torch.isfinite(lr).all()
    assert torch.allclose(la[:, 0].log_softmax(-1), torch.full((2, V), -torch.log(torch.tensor(float(V)))))
    # the mask at position 3 is read at row 3 (aligned) = our row 2
    assert (la[1, 3] - ref[1, 2]).abs().max() < TOL
    # same loss in both layouts, = our MNTP loss on the masked position
    labels = torch.full_like(b["input_ids"], -100)
    labels[1, 3] = 42
    with torch.no_grad():
        l1, l2 = aligned(**b, labels=labels).loss, raw(**b, labels=labels).loss
    expect = torch.nn.functional.cross_entropy(ref[1, 2][None], torch.tensor([42]))
    assert abs(l1 - expect) < TOL and abs(l2 - expect) < TOL


def test_automodel_hidden_states_and_masks(exported):
    d, ours = exported["dir"], exported["ours"]
    hf_tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
    base = AutoModel.from_pretrained(d, trust_remote_code=True).eval()
    b = _batch(hf_tok)
    _, hidden = _ours(ours, b["input_ids"], b["attention_mask"], False)
    keep = b["attention_mask"].bool()
    with torch.no_grad():
        out = base(**b, output_hidden_states=True)
        square = keep[:, :, None] & keep[:, None, :]  # (B, S, S): 1 = query i may attend key j
        out3 = base(input_ids=b["input_ids"], attention_mask=square.long())
    assert not hasattr(out, "logits") or getattr(out, "logits", None) is None
    assert (out.last_hidden_state[keep] - hidden[keep]).abs().max() < TOL
    assert (out3.last_hidden_state[keep] - hidden[keep]).abs().max() < TOL
    assert len(out.hidden_states) == 1 + 2 and torch.equal(out.hidden_states[-1], out.last_hidden_state)


def test_sequence_classification_head_and_finetuned_roundtrip(exported, tmp_path):
    d, ours = exported["dir"], exported["ours"]
    clf = AutoModelForSequenceClassification.from_pretrained(d, trust_remote_code=True, num_labels=3).eval()
    hf_tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
    b = _batch(hf_tok)
    _, hidden = _ours(ours, b["input_ids"], b["attention_mask"], False)
    with torch.no_grad():
        logits = clf(**b).logits
        assert torch.allclose(logits, clf.head(hidden[:, 0]), atol=TOL)
        loss = clf(**b, labels=torch.tensor([0, 2])).loss
    assert logits.shape == (2, 3) and torch.isfinite(loss)
    # "fine-tune" (perturb the head), save, load back: lossless
    with torch.no_grad():
        clf.head.nonlinearity[5].bias.add_(1.0)
    clf.save_pretrained(tmp_path / "ft")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft", trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.equal(again(**b).logits, clf(**b).logits)


def test_export_fine_tuned_sequence_classifier(exported, tmp_path):
    ours = exported["ours"]
    d = ours.config.hidden_size
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Sequential(torch.nn.LayerNorm(d, elementwise_affine=False), torch.nn.Linear(d, d),
                               torch.nn.GELU(), torch.nn.LayerNorm(d, elementwise_affine=False),
                               torch.nn.Dropout(0.0), torch.nn.Linear(d, 3))
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    # the layout of gptbert.eval.finetune.SequenceClassifier: backbone.* + head.{1,5}.*
    state = {**{f"backbone.{k}": v for k, v in ours.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()}}
    out = export_sequence_classifier(state, ours.config, exported["root"] / "tokenizer.json", tmp_path / "clf",
                                     ["entailment", "neutral", "contradiction"])
    clf = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    assert clf.config.id2label[2] == "contradiction" and clf.config.architectures == ["GPTBertForSequenceClassification"]
    hf_tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    b = _batch(hf_tok)
    _, hidden = _ours(ours, b["input_ids"], b["attention_mask"], False)
    with torch.no_grad():
        assert (clf(**b).logits - head(hidden[:, 0])).abs().max() < TOL


def test_generate_with_and_without_cache_equal(exported):
    d, ours = exported["dir"], exported["ours"]
    lm = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
    hf_tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True, padding_side="left")
    b = hf_tok(["The cat sat on", "Two birds sang near the"], padding=True, return_tensors="pt")
    assert (b["attention_mask"] == 0).any()  # one row is left-padded
    kw = dict(max_new_tokens=20, min_new_tokens=20, do_sample=False, repetition_penalty=1.5)
    with torch.no_grad():
        cached = lm.generate(**b, use_cache=True, **kw)
        plain = lm.generate(**b, use_cache=False, **kw)
    assert cached.shape[1] == b["input_ids"].shape[1] + 20
    assert torch.equal(cached, plain)
    # each row = our own greedy loop on the unpadded prompt (same penalty, same suppressed tokens)
    assert lm.generation_config.suppress_tokens == list(SUPPRESSED_IDS)  # from generation_config.json
    sup = SUPPRESSED_IDS + (1, 2)  # min_new_tokens keeps the stop ids <s> and </s> out as well
    for row in range(2):
        p = b["input_ids"][row][b["attention_mask"][row].bool()].tolist()
        assert generate_ids(ours, p, 20, repetition_penalty=1.5, suppress_ids=sup) == cached[row, -20:].tolist()


def test_kv_cache_step_by_step_matches_full_forward(exported):
    lm = AutoModelForCausalLM.from_pretrained(exported["dir"], trust_remote_code=True).eval()
    ids = torch.randint(16, 300, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = lm(ids, use_cache=False).logits
        out = lm(ids[:, :5], use_cache=True)
        steps = [out.logits]
        cache = out.cache
        for t in range(5, 13, 4):  # chunks of 4, then 4
            out = lm(ids[:, t:t + 4], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    assert cache.get_seq_length() == 13
    assert (torch.cat(steps, 1) - full).abs().max() < TOL


def test_save_pretrained_roundtrip_lossless(exported, tmp_path):
    lm = AutoModelForCausalLM.from_pretrained(exported["dir"], trust_remote_code=True)
    lm.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "modeling_gpt_bert.py").is_file()
    lm2 = AutoModelForCausalLM.from_pretrained(tmp_path / "again", trust_remote_code=True)
    s1, s2 = lm.state_dict(), lm2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert lm2.classifier.nonlinearity[5].weight is lm2.embedding.word_embedding.weight
    cfg = AutoConfig.from_pretrained(tmp_path / "again", trust_remote_code=True)
    assert cfg.model_type == "gpt_bert" and cfg.tie_word_embeddings


def test_fresh_offline_process_without_gptbert(exported, tmp_path):
    """The folder alone is enough: HF_HUB_OFFLINE=1, a new interpreter, `import gptbert` made impossible."""
    d, ours = exported["dir"], exported["ours"]
    ids = torch.tensor([[BOS_ID, 40, 41, 42, 43, 44, 45]])
    ref, _ = _ours(ours, ids, torch.ones_like(ids), True)
    torch.save({"ids": ids, "ref": ref}, tmp_path / "ref.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["gptbert"] = None  # any `import gptbert` now fails
        import torch
        from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                                  AutoModelForSequenceClassification, AutoTokenizer)
        d = {str(d)!r}
        r = torch.load({str(tmp_path / "ref.pt")!r})
        lm = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
        AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True)
        AutoModel.from_pretrained(d, trust_remote_code=True)
        AutoModelForSequenceClassification.from_pretrained(d, trust_remote_code=True)
        tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
        with torch.no_grad():
            err = (lm(r["ids"]).logits - r["ref"]).abs().max().item()
            g = lm.generate(**tok("The cat", return_tensors="pt"), max_new_tokens=3, do_sample=False)
        assert not [m for m in sys.modules if m and m.startswith("gptbert.")]
        print("ERR", err, "GEN", g.shape[1])
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"),
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": ""}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("ERR")][0].split()
    assert float(line[1]) < TOL and int(line[3]) > 3


def test_export_errors_are_one_line(tmp_path, exported):
    with pytest.raises(GPTBertError, match="does not exist|not a checkpoint|missing"):
        export_hf(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(GPTBertError, match="tokenizer file does not exist"):
        export_hf(exported["run"], tmp_path / "out2", tokenizer=tmp_path / "missing.json")


# ---------------------------------------------------------------------------
# Ecosystem adapters: minicons and lm-evaluation-harness (skipped when not installed)

def _reference_scores(model, tok, sentence: str) -> tuple[float, float]:
    """Sentence log-probability with our model: causal (<s> + sentence) and MNTP pseudo-log-likelihood."""
    ids = torch.tensor([tok.encode(sentence).ids])
    n = ids.shape[1]
    with torch.no_grad():
        lp = model(ids, attention_mask(torch.zeros_like(ids), True))[0, :-1].log_softmax(-1)
        causal = lp.gather(-1, ids[0, 1:, None]).sum().item()
        copies = ids.repeat(n - 1, 1)
        pos = torch.arange(1, n)
        copies[torch.arange(n - 1), pos] = MASK_ID
        logits = model(copies, attention_mask(torch.zeros_like(copies), False))
        pll = logits[torch.arange(n - 1), pos - 1].log_softmax(-1).gather(-1, ids[0, 1:, None]).sum().item()
    return causal, pll


def _gptbert_eval_scores(model, tok, sentences, mode):
    """`gptbert eval`'s sentence scores (T = 1), or None where that module is not there (yet)."""
    try:
        from gptbert.eval.scoring import SentenceScorer
    except ImportError:
        return None
    return list(SentenceScorer(model, tok, temperatures=(1.0,)).score_texts(sentences, mode).column(1.0))


def test_minicons_scorers_agree_with_our_scores(exported):
    scorer = pytest.importorskip("minicons.scorer")
    d, ours, tok = exported["dir"], exported["ours"], exported["tok"]
    hf_tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
    causal = scorer.IncrementalLMScorer(AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True),
                                        "cpu", tokenizer=hf_tok)
    masked = scorer.MaskedLMScorer(AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True,
                                                                        mlm_logits_layout="aligned"),
                                   "cpu", tokenizer=hf_tok)
    sentences = [s for p in blimp_pairs(2, 1) for s in (p["sentence_good"], p["sentence_bad"])]
    total = lambda x: x.sum(0).item()  # noqa: E731
    got_c = causal.sequence_score(sentences, reduction=total, bos_token=False)  # the tokenizer adds <s> itself
    # minicons 0.3.39 encodes strings for MaskedLMScorer with `batch_encode_plus`, which transformers 5
    # removed; a BatchEncoding (what that call would have produced) goes through the same scoring path.
    enc = hf_tok(sentences, padding="longest", return_attention_mask=True)
    got_m = masked.sequence_score(enc, reduction=total, PLL_metric="original")
    for s, c, m in zip(sentences, got_c, got_m):
        ref_c, ref_m = _reference_scores(ours, tok, s)
        assert abs(c - ref_c) < 1e-3 and abs(m - ref_m) < 1e-3, s
    for mode, got in (("causal", got_c), ("mntp", got_m)):  # = `gptbert eval`'s scores
        ev = _gptbert_eval_scores(ours, tok, sentences, mode)
        assert ev is None or all(abs(a - b) < 1e-3 for a, b in zip(got, ev)), mode


def test_lm_eval_adapter_local_task(exported, tmp_path):
    pytest.importorskip("lm_eval", minversion="0.4.10")
    import lm_eval
    from lm_eval.api.instance import Instance
    from lm_eval.tasks import TaskManager

    from gptbert.eval.lm_eval_adapter import GPTBertLM

    d, ours, tok = exported["dir"], exported["ours"], exported["tok"]
    pairs = blimp_pairs(n_files=3, per_file=1)
    refs = [(_reference_scores(ours, tok, p["sentence_good"]), _reference_scores(ours, tok, p["sentence_bad"]))
            for p in pairs]

    # loglikelihood (empty context = BOS) and loglikelihood_rolling in all three modes
    reqs = [Instance("loglikelihood", {}, ("", p[k]), 0) for p in pairs for k in ("sentence_good", "sentence_bad")]
    rolling = [Instance("loglikelihood_rolling", {}, (p["sentence_good"],), 0) for p in pairs[:1]]
    flat = [r for pair in refs for r in pair]
    for mode, pick, n in (("causal", lambda r: r[0], None), ("mntp", lambda r: r[1], None),
                          ("fused", lambda r: r[0] + r[1], 1)):
        lm = GPTBertLM(pretrained=str(d), mode=mode, batch_size=64)
        got = [s for s, _ in lm.loglikelihood(reqs[:n], disable_tqdm=True)]
        assert all(abs(g - pick(r)) < 1e-3 for g, r in zip(got, flat)), mode
        roll = lm.loglikelihood_rolling(rolling, disable_tqdm=True)
        assert all(abs(g - pick(r[0])) < 1e-3 for g, r in zip(roll, refs)), mode
    # a context: log p(continuation | <s> context)
    ctx_req = Instance("loglikelihood", {}, ("The cat", " sat on the mat."), 0)
    full = tok.encode("The cat sat on the mat.").ids
    n_ctx = len(tok.encode("The cat").ids)
    with torch.no_grad():
        lp = ours(torch.tensor([full]), attention_mask(torch.zeros(1, len(full), dtype=torch.long), True))[0]
        expect = lp[:-1].log_softmax(-1).gather(-1, torch.tensor(full[1:])[:, None])[n_ctx - 1:].sum().item()
    causal_lm = GPTBertLM(pretrained=str(d))
    assert abs(causal_lm.loglikelihood([ctx_req], disable_tqdm=True)[0][0] - expect) < 1e-3
    # generate_until = greedy HF generate, cut at the stop string
    gen = causal_lm.generate_until(
        [Instance("generate_until", {}, ("The cat", {"until": ["\n\n"], "max_gen_toks": 5}), 0)], disable_tqdm=True)
    assert isinstance(gen[0], str)

    # end to end: a local BLiMP task through lm_eval.simple_evaluate = our causal accuracy on the same items
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "blimp_local.yaml").write_text(textwrap.dedent(f"""
        task: gptbert_blimp_local
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
          cache_dir: {tmp_path / "datasets"}
        test_split: test
        output_type: multiple_choice
        doc_to_text: ""
        doc_to_target: 0
        doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
    """), encoding="utf-8")
    res = lm_eval.simple_evaluate(model="gpt-bert", model_args=f"pretrained={d},mode=causal",
                                  tasks=["gptbert_blimp_local"],
                                  task_manager=TaskManager(include_path=str(tmp_path / "tasks"),
                                                           include_defaults=False))
    acc = res["results"]["gptbert_blimp_local"]["acc,none"]
    assert acc == pytest.approx(sum(g[0] > b[0] for g, b in refs) / len(refs))
    ev = _gptbert_eval_scores(ours, tok, [p[k] for p in pairs for k in ("sentence_good", "sentence_bad")], "causal")
    if ev is not None:  # the same accuracy as `gptbert eval` on the same items (ties count as wrong there)
        assert acc == pytest.approx(sum(ev[2 * i] > ev[2 * i + 1] for i in range(len(pairs))) / len(pairs))


def test_fresh_model_gets_gpt_bert_init():
    """A model built from a config (nothing loaded) is initialised as GPT-BERT is, not by the generic init."""
    import math

    from gptbert.hf.configuration_gpt_bert import GPTBertConfig
    from gptbert.hf.modeling_gpt_bert import GPTBertForCausalLM

    torch.manual_seed(0)
    m = GPTBertForCausalLM(GPTBertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=3,
                                         num_attention_heads=4, intermediate_size=256))
    for a in m.transformer.dwa_modules.alphas:  # a plain residual stack at step 0
        assert a[-1].item() == 1.0 and not a[:-1].any()
    std = math.sqrt(2.0 / (5 * 128)) * 0.8796  # trunc-normal at +-2 std has 0.88 of the std
    for i, ff in enumerate(m.transformer.mlp_layers):
        assert ff.mlp[1].weight.std().item() == pytest.approx(std * math.sqrt(1 / (2 * (i + 1))), rel=0.05)
    w = m.embedding.word_embedding.weight
    assert w.std().item() == pytest.approx(std, rel=0.05) and w.abs().max() <= 2 * std / 0.8796 + 1e-6
    assert m.classifier.nonlinearity[5].weight is w and not m.classifier.nonlinearity[5].bias.any()


def test_text_bpb_bench_same_number_both_ways(exported, tmp_path):
    """bench/text_bpb.py: our scorer and the HF causal path give the same bits per byte for one model."""
    import importlib.util
    import math
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("text_bpb", Path(__file__).parents[1] / "bench" / "text_bpb.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    csv_file = tmp_path / "s.csv"
    csv_file.write_text('text\n"the dog ran , then slept ."\n\nA bird sang.\nthe end\n', encoding="utf-8")
    lines = bench.read_lines(csv_file, first=2)
    assert lines == ["the dog ran , then slept .", "A bird sang."]
    ours, n_ours = bench.gptbert_logprobs(str(exported["run"]), lines)
    hf, n_hf = bench.hf_logprobs(str(exported["dir"]), str(exported["dir"] / "tokenizer.json"), lines, BOS_ID,
                                 trust_remote_code=True)
    assert n_ours == n_hf == sum(len(exported["tok"].encode(l, add_special_tokens=False).ids) for l in lines)
    assert all(x < 0 for x in ours)
    assert ours == pytest.approx(hf, rel=1e-5)
    n_bytes = len("the dog ran , then slept .") + len("A bird sang.")
    assert bench.bits_per_byte(ours, lines) == pytest.approx(-sum(ours) / math.log(2) / n_bytes, rel=1e-12)


def test_in_process_registration_without_remote_code(exported, tmp_path):
    """Runs last: registration stays for the rest of the process."""
    from gptbert.hf import register
    from gptbert.hf.modeling_gpt_bert import GPTBertForCausalLM

    register()
    register()  # idempotent
    lm = AutoModelForCausalLM.from_pretrained(exported["dir"])  # no trust_remote_code: our installed classes
    assert type(lm) is GPTBertForCausalLM
    # saving from the installed classes still gives a self-contained folder
    lm.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "modeling_gpt_bert.py").is_file()
    assert (tmp_path / "saved" / "configuration_gpt_bert.py").is_file()
    assert len(json.loads((tmp_path / "saved" / "config.json").read_text())["auto_map"]) == 5

