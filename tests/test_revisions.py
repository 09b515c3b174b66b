"""Milestone checkpoints (chck_NM) survive keep_last, export as one HF folder per hub revision, and push."""

from __future__ import annotations

import json
import random

import pytest
import torch

from gptbert.checkpoint import save_checkpoint, state_dict_for_save
from gptbert.cli import main
from gptbert.config import ModelConfig, RunConfig
from gptbert.convert.revisions import milestone_folders, push_commands, push_revisions
from gptbert.model import GPTBERT
from gptbert.tokenizer import save_tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _run_with_milestones(root):
    rng = random.Random(0)
    words = ["the", "dog", "cat", "sees", "likes", "a", "bird", "runs"]
    tok = train_tokenizer([" ".join(rng.choice(words) for _ in range(6)) + "." for _ in range(200)], 280)
    save_tokenizer(tok, root / "tokenizer.json")
    mc = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=2,
                     intermediate_size=32, dropout=0.0, attention_dropout=0.0)
    rc = RunConfig(model=mc)
    rc.train.tokenizer = str(root / "tokenizer.json")
    run = root / "run"
    removed = []
    for step in range(1, 6):
        torch.manual_seed(step)
        sd = state_dict_for_save(GPTBERT(mc))
        save_checkpoint(run, step=step, tokens_seen=step, model_state=sd, config=rc.to_dict(), keep_last=1,
                        on_prune=removed.append)
        if step in (2, 4):
            save_checkpoint(run, step=step, tokens_seen=step, model_state=sd, config=rc.to_dict(),
                            name=f"chck_{step // 2}M")
    return run, removed


def test_milestones_survive_keep_last_and_export_as_revisions(tmp_path, capsys):
    pytest.importorskip("transformers", minversion="5.0")
    run, removed = _run_with_milestones(tmp_path)
    assert [d.name for d in removed] == ["step_0000001", "step_0000002", "step_0000003", "step_0000004"]
    assert [d.name for d in milestone_folders(run)] == ["chck_1M", "chck_2M"]
    assert main(["export", str(run), str(tmp_path / "hf"), "--all-checkpoints"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["chck_1M", "chck_2M", "main"]
    for name, step in (("chck_1M", 2), ("chck_2M", 4), ("main", 5)):
        card = (tmp_path / "hf" / name / "README.md").read_text()
        assert f"| optimizer steps | {step} |" in card
    assert "--revision chck_2M" in out and "huggingface-cli upload" in out
    cmds = push_commands(tmp_path / "hf", "me/model")
    assert cmds[-1] == f"huggingface-cli upload me/model {tmp_path / 'hf' / 'main'} ."


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("repo", repo_id))

    def create_branch(self, repo_id, branch, **kw):
        self.calls.append(("branch", branch))

    def upload_folder(self, repo_id, folder_path, revision, **kw):
        self.calls.append(("upload", revision, json.loads((folder_path and open(f"{folder_path}/x.json").read()))))


def test_push_revisions_creates_one_branch_per_milestone(tmp_path):
    for name in ("chck_1M", "chck_10M", "main"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.json").write_text(json.dumps(name))
    api = FakeApi()
    assert push_revisions(tmp_path, "me/model", api=api) == ["chck_10M", "chck_1M", "main"]
    assert api.calls == [("repo", "me/model"), ("branch", "chck_10M"), ("upload", "chck_10M", "chck_10M"),
                         ("branch", "chck_1M"), ("upload", "chck_1M", "chck_1M"), ("upload", None, "main")]


def test_eval_aoa_over_the_milestones(tmp_path, capsys):
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "babylm2025" / "aoa").is_dir():
        pytest.skip("../shared/data/babylm2025 is absent")
    run, _ = _run_with_milestones(tmp_path)
    out = tmp_path / "aoa"
    assert main(["eval-aoa", str(run), "--modes", "causal", "--limit", "1", "--out", str(out), "--precision",
                 "fp32", "--device", "cpu"]) == 0
    official = json.loads((out / "zero_shot" / "causal" / "AoA_word" / "surprisal.json").read_text())
    steps = {r["step"] for r in official["results"]}
    assert steps == {"chck_1M", "chck_2M"}
    res = json.loads((out / "results.json").read_text())
    assert res["aoa"]["causal"]["checkpoints"] == ["chck_1M", "chck_2M"] and not res["aoa"]["causal"]["complete"]
    assert main(["eval-aoa", str(run), "--modes", "causal,fused", "--out", str(tmp_path / "x")]) == 2
