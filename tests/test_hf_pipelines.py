"""Contract tests: an export, scored the way the BabyLM 2025 pipeline scores it, reproduces `gptbert eval`.

For each pipeline backend (causal, mlm, mntp) the test re-implements, in a few lines
(`hf_pipeline_contract.py`), how babylm/evaluation-pipeline-2025's `sentence_zero_shot` runner scores
a BLiMP sentence with `AutoModelForCausalLM` / `AutoModelForMaskedLM` and `return_offsets_mapping`,
and asserts that the export gives `gptbert eval`'s scores, pair by pair, in the matching mode:

  pipeline backend   export layout          gptbert eval mode
  causal             any                    causal
  mntp               mntp (the default)     mntp
  mlm                aligned                mntp

A backend that does not match the layout must give wrong but finite scores, never ties by
construction (an earlier aligned layout gave every sentence -3.4e38 under `--backend mntp`, so the
pipeline's tie-break made every pair "correct"). Also here: `gptbert eval` on HF folders (ours in both
layouts, and the officially released layout), and what the model card and `gptbert export` tell a user.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5.0")

from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from gptbert.cli import main  # noqa: E402
from gptbert.convert.export_hf import export_hf  # noqa: E402
from gptbert.eval.scoring import SentenceScorer  # noqa: E402
from gptbert.pretrained import load  # noqa: E402
from helpers import REPO, write_official_layout  # noqa: E402
from hf_models import blimp_pairs, tiny_run  # noqa: E402
from hf_pipeline_contract import pipeline_scores, scored_tokens  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

pytestmark = pytest.mark.usefixtures("one_thread")

# pipeline backend -> (export layout it reads, `gptbert eval` mode it must reproduce)
MATCHING = {"causal": ("mntp", "causal"), "mntp": ("mntp", "mntp"), "mlm": ("aligned", "mntp")}
SCORE_TOL = 1e-3  # summed fp32 log-probabilities of ~50 tokens


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_pipelines")
    run = tiny_run(root)
    exports = {layout: export_hf(run, root / f"export-{layout}", mlm_logits_layout=layout)
               for layout in ("mntp", "aligned")}
    pre = load(run)
    pairs = blimp_pairs(n_files=4, per_file=3, stride=16)  # 4 paradigms spread over BLiMP, 3 pairs each
    sentences = [p[k] for p in pairs for k in ("sentence_good", "sentence_bad")]
    scorer = SentenceScorer(pre.model, pre.tokenizer, precision="fp32", temperatures=(1.0,))
    ours = {mode: [float(x) for x in scorer.score_texts(sentences, mode).column(1.0)] for mode in ("causal", "mntp")}
    return {"root": root, "run": run, "exports": exports, "pairs": pairs, "sentences": sentences, "ours": ours}


def _load(path, backend, **kw):
    cls = AutoModelForCausalLM if backend == "causal" else AutoModelForMaskedLM
    return cls.from_pretrained(path, trust_remote_code=True, **kw).eval()


def _pair_agreement(a: list[float], b: list[float]) -> tuple[int, int]:
    """(pairs whose decision good > bad is the same under both score lists, pairs)."""
    n = len(a) // 2
    return sum((a[2 * i] > a[2 * i + 1]) == (b[2 * i] > b[2 * i + 1]) for i in range(n)), n


def test_pipeline_scores_every_token_gptbert_eval_scores(setup):
    """The offsets-based token selection of the pipeline picks exactly the sentence tokens after `<s>`."""
    tok = AutoTokenizer.from_pretrained(setup["exports"]["mntp"], trust_remote_code=True)
    for s in setup["sentences"]:
        for backend in ("causal", "mlm", "mntp"):
            ids, idx = scored_tokens(tok, s, backend)
            assert ids[0] == tok.bos_token_id and idx == list(range(1, len(ids))), (backend, s)


@pytest.mark.parametrize("backend", ["causal", "mntp", "mlm"])
def test_pipeline_backend_reproduces_gptbert_eval(setup, backend):
    layout, mode = MATCHING[backend]
    d = setup["exports"][layout]
    tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
    got = pipeline_scores(_load(d, backend), tok, setup["sentences"], backend, batch_size=16)
    ref = setup["ours"][mode]
    worst = max(abs(g - r) for g, r in zip(got, ref))
    assert worst < SCORE_TOL, (backend, worst)
    agree, n = _pair_agreement(got, ref)
    assert agree == n == len(setup["pairs"])


@pytest.mark.parametrize("backend,layout", [("mntp", "aligned"), ("mlm", "mntp")])
def test_mismatched_backend_is_finite_and_never_ties(setup, backend, layout):
    """The wrong backend for a layout reads the wrong rows: the scores are wrong, but finite and distinct."""
    d = setup["exports"][layout]
    tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
    got = pipeline_scores(_load(d, backend), tok, setup["sentences"], backend, batch_size=16)
    n_tokens = [len(scored_tokens(tok, s, backend)[1]) for s in setup["sentences"]]
    vocab = len(tok)
    for g, n in zip(got, n_tokens):
        assert math.isfinite(g) and g > -50 * n * math.log(vocab), g  # nothing near finfo.min
    assert all(got[2 * i] != got[2 * i + 1] for i in range(len(got) // 2))
    assert got != pytest.approx(setup["ours"]["mntp"], abs=SCORE_TOL)  # and it is not the right answer


def test_masked_lm_logits_finite_in_both_layouts(setup):
    tok = AutoTokenizer.from_pretrained(setup["exports"]["mntp"], trust_remote_code=True)
    b = tok(setup["sentences"][:4], padding=True, return_tensors="pt")
    b["input_ids"][:, 2] = tok.mask_token_id
    for layout, d in setup["exports"].items():
        with torch.no_grad():
            logits = _load(d, "mlm")(**b).logits
        assert torch.isfinite(logits).all() and logits.min() > -1e4, layout


# ---------------------------------------------------------------------------
# `gptbert eval` on Hugging Face folders


def _eval_cli(model_dir, tasks, out) -> dict:
    assert main(["eval", str(model_dir), "--tasks", str(tasks), "--modes", "causal,mntp", "--out", str(out),
                 "--precision", "fp32", "--device", "cpu", "--no-progress", "--no-sweep", "--no-charts"]) == 0
    return {mode: json.loads((out / f"predictions_{mode}.json").read_text()) for mode in ("causal", "mntp")}


def test_gptbert_eval_accepts_hf_folders(setup, tmp_path):
    """`gptbert eval <folder>` on our exports (both layouts) and on the official released layout gives the
    run's own predictions."""
    tasks = tmp_path / "blimp_mini"
    tasks.mkdir()
    with open(tasks / "mini.jsonl", "w", encoding="utf-8") as f:
        for p in setup["pairs"]:
            f.write(json.dumps(p) + "\n")
    ref = _eval_cli(setup["run"], tasks, tmp_path / "run")
    pre = load(setup["run"])
    official = write_official_layout(pre.model, pre.tokenizer_path, tmp_path / "official")
    folders = {**setup["exports"], "official": official}
    for name, folder in folders.items():
        got = _eval_cli(folder, tasks, tmp_path / f"eval-{name}")
        assert got == ref, name
        res = json.loads((tmp_path / f"eval-{name}" / "results.json").read_text())
        assert res["model"]["weights"] == "hf", name


# ---------------------------------------------------------------------------
# What the user is told


def test_card_and_export_message_name_the_matching_backend(setup, tmp_path, capsys):
    for layout, backend in (("mntp", "mntp"), ("aligned", "mlm")):
        card = (setup["exports"][layout] / "README.md").read_text()
        assert f"uses the **{layout}** layout" in card and f"`--backend {backend}`" in card
        assert main(["export", str(setup["run"]), str(tmp_path / layout), "--mlm-layout", layout]) == 0
        printed = capsys.readouterr().out
        assert f"--backend {backend} for masked scoring" in printed, printed
    assert main(["export", str(setup["run"]), str(tmp_path / "default")]) == 0
    assert "--backend mntp for masked scoring" in capsys.readouterr().out


def test_documented_commands_exist(setup):
    """Every `python -m MODULE` in the model card and the README names a module that exists."""
    texts = {"card": (setup["exports"]["mntp"] / "README.md").read_text(), "README": (REPO / "README.md").read_text()}
    for where, text in texts.items():
        modules = set(re.findall(r"python -m ([\w.]+)", text))
        assert "gptbert.eval.lm_eval_adapter" in modules, where
        for m in modules:
            if m.startswith("gptbert"):
                assert importlib.util.find_spec(m) is not None, (where, m)
