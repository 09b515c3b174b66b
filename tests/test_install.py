"""A non-editable install works from any folder: presets ship inside the package, data defaults are explicit.

Regression: after `pip install .` (not -e) the quickstart's default preset resolved to a path in the
source checkout that the installed package does not have.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_corpus

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The project built as a wheel and installed (without dependencies) into a fresh target folder."""
    root = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPTBERT_DATA")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    build = _run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                  "-w", str(root / "wheel"), "-q"], root, env)
    assert build.returncode == 0, build.stderr[-2000:]
    wheels = list((root / "wheel").glob("gptbert-*.whl"))
    assert len(wheels) == 1
    inst = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(root / "site"), "-q",
                 str(wheels[0])], root, env)
    assert inst.returncode == 0, inst.stderr[-2000:]
    env["PYTHONPATH"] = str(root / "site")  # ahead of the editable install of the checkout
    env["OMP_NUM_THREADS"] = "1"
    outside = root / "elsewhere"  # not the repo, no ../shared/data next to it
    outside.mkdir()
    return {"root": root, "site": root / "site", "env": env, "cwd": outside}


def test_wheel_ships_the_presets(installed):
    site = installed["site"]
    shipped = sorted(p.name for p in (site / "gptbert" / "configs").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (REPO / "gptbert" / "configs").glob("*.yaml"))  # every preset ships
    assert {"cpu-quick.yaml", "small-10m.yaml", "base-100m.yaml", "tiny-cpu.yaml"} <= set(shipped)
    res = _run([sys.executable, "-c", "import gptbert, gptbert.config as c; print(gptbert.__file__); "
                "print(c.load_config('small-10m').train.max_steps)"], installed["cwd"], installed["env"])
    assert res.returncode == 0, res.stderr
    where, steps = res.stdout.split()
    assert where.startswith(str(site)) and steps == "7812"


def test_quickstart_and_eval_from_outside_the_repo(installed):
    cwd, env = installed["cwd"], installed["env"]
    cli = [sys.executable, "-m", "gptbert.cli"]
    # Without data and without a flag or $GPTBERT_DATA, the error names both ways to give it.
    res = _run([*cli, "quickstart", "--out", "qs"], cwd, {**env, "HOME": str(cwd)})
    if not (cwd.parent / "shared" / "data").exists():
        assert res.returncode == 2 and "--data" in res.stderr and "GPTBERT_DATA" in res.stderr, res.stderr

    write_corpus(cwd / "corpus", n_lines=3000)
    tasks = cwd / "tasks" / "mini"
    tasks.mkdir(parents=True)
    with open(tasks / "agreement.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"sentence_good": f"The dog saw the ball {i} .", "sentence_bad": f"The dog see the ball {i} ."}) + "\n")
    # The default preset (cpu-quick) must be found inside the installed package; shrunk to stay quick.
    tiny = ["--model.vocab_size", "300", "--model.hidden_size", "64", "--model.num_layers", "2", "--model.num_heads", "2",
            "--model.intermediate_size", "128", "--train.micro_batch_size", "16", "--train.global_batch_tokens", "1024"]
    res = _run([*cli, "quickstart", "--data", "corpus", "--out", "qs", "--minutes", "0.2", *tiny,
                "--train.progress", "false", "--train.num_workers", "0", "--eval-tasks", str(tasks),
                "--eval-data", "tasks"], cwd, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[4/4] done" in res.stdout and "mini" in res.stdout, res.stdout
    ck = json.loads((cwd / "qs" / "eval" / "results.json").read_text())
    assert set(ck["tasks"]["mini"]) == {"causal", "mntp", "fused"}
    plan = json.loads((cwd / "qs" / "budget.json").read_text())  # the plan the run folder follows
    legs = plan["legs"]
    if plan["first_leg_steps"] is None:  # one leg: as first planned
        assert len(legs) == 1 and plan["steps"] == plan["planned_steps"] >= 1
    else:  # planned again after each leg; each leg resumed the one before
        assert legs[0]["to_step"] == plan["first_leg_steps"] and legs[0]["plan_steps"] == plan["planned_steps"]
        for a, b in zip(legs, legs[1:]):
            assert b["from_step"] == a["to_step"] and b["plan_steps"] == a["next_plan_steps"]
        assert (cwd / "qs" / "train" / "checkpoints" / f"step_{legs[-1]['from_step']:07d}").is_dir()
    assert legs[-1]["to_step"] == plan["trained_steps"] and legs[-1]["plan_steps"] == plan["steps"]
    assert f"max_steps: {plan['steps']}\n" in (cwd / "qs" / "train" / "config.yaml").read_text()

    res = _run([*cli, "eval", "qs", "--tasks", str(tasks), "--modes", "causal", "--out", "ev", "--no-progress",
                "--precision", "fp32", "--data-dir", "tasks"], cwd, env)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads((cwd / "ev" / "results.json").read_text())
    assert r["model"]["weights"] == "ema" and r["tasks"]["mini"]["causal"]["n_pairs"] == 6
