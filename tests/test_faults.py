"""Nothing lost: one run per folder, preemption, kill -9, full disks, non-finite steps, world-size invariance.

Fault injection runs real `gptbert` processes on a tiny model. The process-heavy tests (preemption by
signal, the kill -9 loop of 20 kills, full disks, world sizes 1/2/4) are in the slow tier
(`pytest -m slow`); the default tier keeps the kill -9 loop of 5 kills, the run-folder guard, name
checks and non-finite steps.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from gptbert.checkpoint import load_checkpoint
from gptbert.cli import main
from gptbert.errors import GPTBertError
from gptbert.train import DivergedError, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(prepared, out: Path, steps: int = 30, **extra) -> list[str]:
    """`gptbert train` flags of a tiny fp32 run without dropout."""
    a = {"train.data": prepared["data"], "train.out_dir": out, "train.max_steps": steps, "train.seq_length": 32,
         "train.global_batch_tokens": 32 * 32, "train.micro_batch_size": 8, "train.precision": "fp32",
         "train.num_workers": 0, "train.log_every": 1, "train.eval_rows": 8, "train.progress": "false",
         "train.tensorboard": "false", "train.ema_decay": 0.9, "model.vocab_size": prepared["vocab_size"],
         "model.hidden_size": 32, "model.num_layers": 2, "model.num_heads": 4, "model.intermediate_size": 48,
         "model.dropout": 0, "model.attention_dropout": 0, "objective.causal_ratio": 0.25}
    a.update(extra)
    return [x for k, v in a.items() for x in (f"--{k}", str(v))]


def _curve(run: Path, stem: str = "metrics") -> list[tuple]:
    rows = [json.loads(line) for line in (run / f"{stem}.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss_masked"], r["loss_causal"]) for r in rows]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "gptbert.cli", *map(str, args)]


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> Path:
    """An uninterrupted 30-step run: what every interrupted-and-resumed run must reproduce."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    assert main(["train", *_args(prepared, out)]) == 0
    return out


def _same_as_reference(run: Path, reference: Path, tol: float = 1e-6) -> None:
    a, b = _curve(reference), _curve(run)
    assert [r[0] for r in b] == list(range(1, 31))
    assert max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra[1:], rb[1:])) <= tol
    wa = load_file(reference / "checkpoints" / "step_0000030" / "model.safetensors")
    wb = load_file(run / "checkpoints" / "step_0000030" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=tol, rtol=0) for k in wa)


# ---------------------------------------------------------------------------
# 1. A run folder belongs to one run


def test_a_run_folder_belongs_to_one_run(prepared, reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = (run / "metrics.jsonl").read_bytes()
    # Training into a folder that holds another run is refused before any work...
    assert main(["train", *_args(prepared, run, steps=5)]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_bytes() == before
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000030"
    # ...--overwrite clears it first (and only a run folder: never an arbitrary directory)...
    assert main(["train", *_args(prepared, run, steps=5), "--overwrite"]) == 0
    assert [r[0] for r in _curve(run)] == [1, 2, 3, 4, 5] and not (run / "checkpoints" / "step_0000030").exists()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "thesis.tex").write_text("precious")
    assert main(["train", *_args(prepared, junk, steps=5), "--overwrite"]) == 2
    assert "not a run folder" in capsys.readouterr().err and (junk / "thesis.tex").exists()
    # ...and --resume auto continues the newest complete checkpoint, or starts fresh when there is none.
    fresh = tmp_path / "fresh"
    assert main(["train", *_args(prepared, fresh, steps=3), "--resume", "auto"]) == 0
    assert [r[0] for r in _curve(fresh)] == [1, 2, 3]


def test_eval_and_quickstart_outputs_are_not_mixed(tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.json").write_text("{}")
    # refused before the (missing) model is even looked at
    assert main(["eval", str(tmp_path / "no-model"), "--out", str(out), "--tasks", "blimp_fast"]) == 2
    assert "--force" in capsys.readouterr().err
    qs = tmp_path / "qs"
    (qs / "train").mkdir(parents=True)
    assert main(["quickstart", "--out", str(qs), "--data", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_names_are_checked_before_any_work(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["finetune", str(tmp_path / "nothing-here"), "--tasks", "rte,colaa"]) == 2
    err = capsys.readouterr().err
    assert "colaa" in err and "did you mean 'cola'" in err and time.perf_counter() - t0 < 5
    assert main(["eval", str(tmp_path), "--modes", "causal,mtnp"]) == 2
    assert "did you mean 'mntp'" in capsys.readouterr().err
    assert main(["train", "--config", "tiny-cpu", "--train.lr", "abc"]) == 2
    assert capsys.readouterr().err.strip() == "error: --train.lr: expected float, got 'abc'"
    with pytest.raises(SystemExit) as e:  # argparse abbreviations are off: no silent --train.max_steps
        main(["train", "--config", "tiny-cpu", "--train.max_step", "20"])
    assert e.value.code == 2 and "did you mean '--train.max_steps'" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# 2. Preemption: SIGTERM / Ctrl-C finish the step, save, print the resume command


def _wait_for_steps(run: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        f = run / "metrics.jsonl"
        if f.exists() and len(f.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("training did not start")


@pytest.mark.slow  # heavy (a real process per signal): in `pytest -m slow`
@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)])
def test_preemption_saves_and_resumes_exactly(prepared, reference, tmp_path, sig, group):
    """group: the signal goes to the whole process group (a scheduler's preemption, a terminal's
    Ctrl-C), data-loader workers included; they must leave it to the training process."""
    run = tmp_path / "run"
    extra = ["--train.num_workers", "1"] if group else []
    proc = subprocess.Popen(_cli("train", *_args(prepared, run), *extra), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=group)
    _wait_for_steps(run, 3, proc)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    step = load_checkpoint(run).step
    assert 3 <= step < 30 and f"stopped by {signal.Signals(sig).name} after step {step}" in err
    resume_cmd = err.strip().splitlines()[-1].split()
    assert resume_cmd[:2] == ["gptbert", "train"] and resume_cmd[-2:] == ["--resume", "auto"]
    res = subprocess.run(_cli(*resume_cmd[1:]), env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    _same_as_reference(run, reference)


def test_second_ctrl_c_aborts_at_once():
    """The first SIGINT only sets the flag the loop reads at the next step; the second raises at once."""
    from gptbert.train import _StopSignals

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in some pytest-xdist workers
    with _StopSignals() as sig:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes
        assert sig.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before  # restored


# ---------------------------------------------------------------------------
# 3a. kill -9 at random moments, checkpoint writes included


def _kill_loop(prepared, reference, run: Path, kills: int, seed: int) -> int:
    rng = random.Random(seed)
    args = _args(prepared, run, **{"train.save_every": 2})
    killed = 0
    while killed < kills:
        proc = subprocess.Popen(_cli("train", *args, "--resume", "auto"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(1.0, 4.0))
        if proc.poll() is not None:  # finished before the kill: the run is complete
            break
        proc.kill()  # SIGKILL: no handler runs, files are left as they are
        proc.wait()
        killed += 1
        # The newest complete checkpoint always loads; partial folders are never taken for complete.
        if (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step_*")):
            ck = load_checkpoint(run)
            assert (ck.path / "meta.json").is_file() and ck.path.name.startswith("step_")
    res = subprocess.run(_cli("train", *args, "--resume", "auto"), env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    _same_as_reference(run, reference)
    return killed


def test_kill_9_loop(prepared, reference, tmp_path):
    assert _kill_loop(prepared, reference, tmp_path / "run", kills=5, seed=1) >= 3


@pytest.mark.slow
def test_kill_9_loop_20(prepared, reference, tmp_path):
    assert _kill_loop(prepared, reference, tmp_path / "run", kills=20, seed=2) >= 15


# ---------------------------------------------------------------------------
# 3b. A full disk (a file-size limit): a clear error, earlier outputs intact


def _limited(limit: int):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # heavy: in `pytest -m slow` (README), not the default CI tier
def test_full_disk_during_prepare_save_and_export(prepared, reference, tmp_path):
    env = _env()
    # prepare: the new train.bin does not fit; the earlier prepared folder stays as it was
    out = tmp_path / "data"
    shutil.copytree(prepared["data"], out)
    before = _tree(out)
    res = subprocess.run(_cli("prepare", "--data", prepared["corpus"], "--tokenizer", prepared["tokenizer"],
                              "--out", out), env=env, capture_output=True, text=True, preexec_fn=_limited(20_000))
    assert res.returncode == 74 and res.stderr.count("\n") == 1 and "full" in res.stderr, res.stderr
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    # checkpoint save: resuming a run whose next checkpoint cannot be written keeps the last one loadable
    run = tmp_path / "run"
    assert main(["train", *_args(prepared, run, steps=4)]) == 0
    ck_before = _tree(run / "checkpoints")
    res = subprocess.run(_cli("train", *_args(prepared, run, steps=6), "--resume", "auto"), env=env,
                         capture_output=True, text=True, preexec_fn=_limited(60_000))
    assert res.returncode == 74 and "full" in res.stderr.splitlines()[-1], res.stderr[-2000:]
    assert _tree(run / "checkpoints") == ck_before
    assert load_checkpoint(run).step == 4
    # export: a full disk while writing the folder leaves the earlier export untouched
    pytest.importorskip("transformers", minversion="5.0")
    exp = tmp_path / "hf"
    assert main(["export", str(reference), str(exp)]) == 0
    before = _tree(exp)
    res = subprocess.run(_cli("export", reference, exp, "--force"), env=env, capture_output=True, text=True,
                         preexec_fn=_limited(30_000))
    assert res.returncode == 74 and "full" in res.stderr, res.stderr[-2000:]
    assert _tree(exp) == before and sorted(p.name for p in tmp_path.iterdir()) == ["data", "hf", "run"]


# ---------------------------------------------------------------------------
# 3c. Non-finite loss or gradient


def test_non_finite_steps_are_skipped_then_stop(prepared, tmp_path, monkeypatch):
    import gptbert.train as train_mod

    real = train_mod.hybrid_loss
    poisoned = {4, 5, 9, 10, 11, 12, 13, 14}  # 1-based steps whose loss is NaN
    calls = {"step": 0}

    def loss(*args, **kw):
        value, sums = real(*args, **kw)
        return (value * float("nan") if calls["step"] in poisoned else value), sums

    real_step = train_mod._step

    def step(run, s, *args, **kw):
        calls["step"] = s + 1
        return real_step(run, s, *args, **kw)

    monkeypatch.setattr(train_mod, "hybrid_loss", loss)
    monkeypatch.setattr(train_mod, "_step", step)
    cfg = tiny_config(prepared["data"], tmp_path / "run", prepared["vocab_size"], max_steps=30, save_every=2,
                      max_bad_steps=5)
    with pytest.raises(DivergedError, match="5 steps in a row had a non-finite gradient"):
        train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[4]["skipped_steps"] == 2 and rows[7]["skipped_steps"] == 2  # steps 4 and 5 skipped, 6-8 fine
    ck = load_checkpoint(tmp_path / "run")
    assert ck.state["skipped_steps"] >= 2 and all(bool(torch.isfinite(t).all()) for t in ck.model.values())
    assert ck.step <= 13  # the last save before the 5th bad step in a row (13), never a NaN model


# ---------------------------------------------------------------------------
# 3d. World-size invariance (gloo on CPU), gradient accumulation and the batch ramp


@pytest.mark.slow  # heavy: in `pytest -m slow` (README), not the default CI tier
def test_world_size_invariance(prepared, tmp_path):
    """1, 2 and 4 processes: the same 30-step loss curve (fp64, dropout off) to 1e-5."""
    common = _args(prepared, tmp_path / "x", **{"train.batch_ramp": "true", "train.precision": "fp64"})
    curves = {}
    for n, micro in ((1, 8), (2, 4), (4, 2)):  # 4 rows x 1..4 processes -> gradient accumulation
        out = tmp_path / f"w{n}"
        args = [*_strip(_strip(common, "--train.out_dir"), "--train.micro_batch_size"), "--train.out_dir", str(out),
                "--train.micro_batch_size", str(micro)]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"] if n > 1 \
            else [sys.executable]
        res = subprocess.run([*launcher, "-m", "gptbert.cli", "train", *args], env=_env(), capture_output=True,
                             text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        curves[n] = _curve(out)
    assert [r[0] for r in curves[1]] == list(range(1, 31))
    for n in (2, 4):
        worst = max(abs(x - y) for ra, rb in zip(curves[1], curves[n]) for x, y in zip(ra[1:], rb[1:]))
        assert worst <= 1e-5, (n, worst)


def _strip(args: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        out.append(a)
    return out


def test_errors_name_the_source(tmp_path):
    with pytest.raises(GPTBertError, match=r"^--train.max_steps: must be positive \(or 0 with a max_words budget, which then sets it\)$"):
        from gptbert.config import load_config

        load_config("tiny-cpu", {"train.max_steps": 0})
