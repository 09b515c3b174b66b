"""`gptbert sweep`: a 2 x 2 tiny grid end to end, resume, parallel jobs, bad specs, budgets, tables, figures."""

from __future__ import annotations

import json
import shutil
import statistics
import struct
import zlib
from pathlib import Path

import pytest

from gptbert import sweep as sw
from gptbert.sweep_cells import mean_std
from gptbert.cli import build_parser, main
from gptbert.config import load_config
from gptbert.eval.linechart import Panel, line_panels_png, nice_ticks
from gptbert.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

RATIOS = "objective.causal_ratio=1:1,1:3"


def _tasks(root: Path) -> tuple[Path, Path]:
    """A two-paradigm BLiMP-format task and a 4-passage LAMBADA file (sentences written for these tests)."""
    blimp = root / "blimp_mini"
    blimp.mkdir(parents=True, exist_ok=True)
    pairs = {
        "agreement": [("The dog chased the ball .", "The dog chase the ball ."),
                      ("Two birds sang near the river .", "Two birds sings near the river ."),
                      ("We carried some bread .", "We carries some bread ."),
                      ("My sister painted the letter .", "My sister paint the letter .")],
        "word_order": [("The cat found a red kite .", "The cat a red kite found ."),
                       ("They liked the small house .", "They the small house liked ."),
                       ("You wanted the ball again .", "You the ball wanted again ."),
                       ("The teacher forgot the letter .", "Forgot the teacher the letter .")],
    }
    for uid, items in pairs.items():
        with open(blimp / f"{uid}.jsonl", "w", encoding="utf-8") as f:
            for good, bad in items:
                f.write(json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": uid,
                                    "linguistics_term": uid}) + "\n")
    lam = root / "lambada_mini.jsonl"
    with open(lam, "w", encoding="utf-8") as f:
        for prompt, answer in [("The dog chased the ball in the {answer} .", "garden"),
                               ("My sister painted the old {answer} .", "house"),
                               ("Two birds sang near the {answer} .", "river"),
                               ("We carried some {answer} to the teacher .", "bread")]:
            f.write(json.dumps({"prompt": prompt, "answer": answer}) + "\n")
    return blimp, lam


def _base_yaml(root: Path, vocab_size: int) -> Path:
    p = root / "tiny.yaml"
    p.write_text(
        f"model: {{vocab_size: {vocab_size}, hidden_size: 32, num_layers: 2, num_heads: 4, intermediate_size: 48,"
        " dropout: 0.0, attention_dropout: 0.0}\n"
        "train: {global_batch_tokens: 512, micro_batch_size: 8, seq_length: 32, lr: 0.01, precision: fp32,"
        " num_workers: 0, log_every: 1, eval_rows: 16, tensorboard: false, ema_decay: 0.9}\n", encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def setup(prepared, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sweep")
    blimp, lam = _tasks(root)
    base = _base_yaml(root, prepared["vocab_size"])
    common = ["--config", base, "--prepared", prepared["data"], "--eval-tasks", f"{blimp},{lam}",
              "--eval-precision", "fp32", "--device", "cpu"]
    return dict(root=root, common=[str(a) for a in common], base=base, blimp=blimp, data=prepared["data"])


def _grid(setup, out: Path, *extra) -> list[str]:
    return ["sweep", "--out", str(out), *setup["common"], "--axis", RATIOS, "--seeds", "0,1", "--steps", "6",
            *map(str, extra)]


@pytest.fixture(scope="module")
def grid(setup) -> Path:
    """The 2 ratios x 2 seeds grid, run once in this process (--jobs 1)."""
    out = setup["root"] / "grid"
    assert main(_grid(setup, out)) == 0
    return out


def _sweep_json(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def _mtimes(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "cells").rglob("*")
            if p.is_file() and p.name in ("model.safetensors", "ema.safetensors", "result.json", "results.json")}


# ---------------------------------------------------------------------------
# The grid end to end


def test_every_cell_trained_and_evaluated(grid):
    s = _sweep_json(grid)
    assert s["complete"] and len(s["cells"]) == 4
    assert [c["labels"][0] for c in s["cells"]] == ["1:1", "1:1", "1:3", "1:3"]
    assert {c["seed"] for c in s["cells"]} == {0, 1}
    for c in s["cells"]:
        cell = grid / "cells" / c["id"]
        assert c["status"] == "done" and c["steps"] == 6
        assert (cell / "train" / "checkpoints" / "step_0000006" / "ema.safetensors").is_file()
        assert (cell / "eval" / "results.json").is_file()
        assert c["overrides"]["objective.causal_ratio"] in (0.5, 0.25)
        cfg = load_config(cell / "config.yaml")
        assert cfg.train.seed == c["seed"] and cfg.objective.causal_ratio == c["overrides"]["objective.causal_ratio"]
    assert s["budget"] == {"kind": "steps", "amount": 6.0, "steps_per_cell": [6]}


def test_sweep_json_equals_each_cells_own_files(grid):
    for c in _sweep_json(grid)["cells"]:
        cell = grid / "cells" / c["id"]
        m = c["metrics"]
        val = [json.loads(line) for line in (cell / "train" / "validation.jsonl").read_text().splitlines()][-1]
        assert val["step"] == 6
        assert m["val_loss_masked"] == val["val_loss_masked"] and m["val_loss_causal"] == val["val_loss_causal"]
        meta = json.loads((cell / "train" / "checkpoints" / "step_0000006" / "meta.json").read_text())
        assert c["tokens_seen"] == meta["tokens_seen"]
        res = json.loads((cell / "eval" / "results.json").read_text())
        assert res["model"]["weights"] == "ema" and res["model"]["step"] == 6
        for mode in ("causal", "mntp", "fused"):
            r = res["tasks"]["blimp_mini"][mode]
            assert m[f"blimp_mini/{mode}"] == r["T1"]["average"]
            assert m[f"blimp_mini/{mode}/best_T"] == r["best_T"]["average"]
        for mode in ("causal", "mntp"):
            assert m[f"lambada/{mode}"] == res["lambada"][mode]["accuracy"]
            assert m[f"lambada/{mode}/perplexity"] == res["lambada"][mode]["perplexity"]
        assert "lambada/fused" not in m  # LAMBADA has no fused mode


def test_mean_and_std_over_seeds_by_hand(grid):
    s = _sweep_json(grid)
    cells = {c["id"]: c for c in s["cells"]}
    assert [st["labels"] for st in s["settings"]] == [["1:1"], ["1:3"]]
    for st in s["settings"]:
        assert st["n"] == 2 and st["seeds"] == [0, 1]
        for key in ("val_loss_masked", "val_loss_causal", "blimp_mini/mntp", "lambada/causal/perplexity"):
            a, b = (cells[i]["metrics"][key] for i in st["cells"])
            assert st["mean"][key] == pytest.approx((a + b) / 2, abs=1e-12)
            assert st["std"][key] == pytest.approx(abs(a - b) / 2 ** 0.5, abs=1e-12)  # sample std (n-1)
            assert st["std"][key] == pytest.approx(statistics.stdev([a, b]), abs=1e-12)
    assert mean_std([3.0]) == (3.0, None)


def _png_size(path: Path) -> tuple[int, int]:
    """Check the PNG signature, read IHDR, and decode IDAT to the expected number of bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 2)
            size = (w, h)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert size is not None and size[0] > 100 and size[1] > 100
    assert len(zlib.decompress(idat)) == size[1] * (1 + 3 * size[0])
    return size


def test_tables_and_figure(grid):
    md = (grid / "sweep.md").read_text()
    assert "## Validation loss" in md and "## blimp_mini (accuracy %, T=1)" in md and "## LAMBADA" in md
    assert "| causal:masked | causal | mntp | fused |" in md
    s = _sweep_json(grid)
    st = s["settings"][0]
    row = f"{st['mean']['blimp_mini/mntp']:.1f} ± {st['std']['blimp_mini/mntp']:.1f}"
    assert row in md
    assert "4 of 4 done" in md
    _png_size(grid / "figure2.png")


# ---------------------------------------------------------------------------
# Resume


def test_resume_skips_finished_cells(grid, capsys):
    before = _mtimes(grid)
    assert main(["sweep", "--spec", str(grid / "spec.yaml")]) == 0
    assert "4 done, 0 to evaluate, 0 to train" in capsys.readouterr().out
    assert _mtimes(grid) == before


def test_new_eval_options_evaluate_again_without_training(setup, grid, tmp_path, capsys):
    out = tmp_path / "reeval"
    shutil.copytree(grid, out)
    before = _mtimes(out)
    assert main(_grid(setup, out, "--eval-modes", "causal,mntp")) == 0
    assert "0 done, 4 to evaluate, 0 to train" in capsys.readouterr().out
    after = _mtimes(out)
    weights = [k for k in before if k.endswith(".safetensors")]
    assert weights and all(after[k] == before[k] for k in weights)  # not retrained
    assert all(after[k] != before[k] for k in before if k.endswith("results.json"))
    s = _sweep_json(out)
    assert s["eval"]["modes"] == ["causal", "mntp"] and all("blimp_mini/fused" not in c["metrics"] for c in s["cells"])
    assert not list(out.glob("cells/*/eval/predictions_fused.json"))  # the old evaluation's files are gone


def test_interrupted_cell_continues_from_its_checkpoint(setup, grid, tmp_path, capsys):
    out = tmp_path / "moved"
    shutil.copytree(grid, out)  # a sweep folder can move: paths are rewritten, the config hashes exclude them
    s = _sweep_json(grid)
    victim = s["cells"][1]
    cell = out / "cells" / victim["id"]
    for name in ("result.json", "train.json", "attempts.jsonl"):
        (cell / name).unlink()
    shutil.rmtree(cell / "train")
    shutil.rmtree(cell / "eval")
    # the first 3 of 6 steps, as a sweep that was stopped there would have left them
    cfg = load_config(cell / "config.yaml")
    cfg.train.out_dir = str(cell / "train")
    train(cfg, max_steps_to_run=3)
    before = _mtimes(out)
    assert main(["sweep", "--spec", str(grid / "spec.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 done, 0 to evaluate, 1 to train" in printed
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if victim["id"] not in k} == \
        {k: v for k, v in before.items() if victim["id"] not in k}  # the other cells were not touched
    attempts = [json.loads(line) for line in (cell / "attempts.jsonl").read_text().splitlines()]
    assert [(a["from_step"], a["to_step"]) for a in attempts] == [(3, 6)]
    again = {c["id"]: c for c in _sweep_json(out)["cells"]}[victim["id"]]
    assert again["resumed"] is True
    assert again["metrics"] == pytest.approx(victim["metrics"], rel=1e-6, abs=1e-9)  # resume is exact


@pytest.mark.slow  # heavy: in `pytest -m slow` (README), not the default CI tier
def test_jobs_2_gives_the_same_numbers(setup, grid, tmp_path, capsys):
    """Seed 0 of the grid as 2 worker processes at once (each with OMP_NUM_THREADS=1, like this process)."""
    out = tmp_path / "parallel"
    assert main(_grid(setup, out, "--jobs", "2", "--seeds", "0")) == 0
    printed = capsys.readouterr().out
    assert printed.count("started (log:") == 2
    one = {c["id"]: c for c in _sweep_json(grid)["cells"] if c["seed"] == 0}
    two = {c["id"]: c for c in _sweep_json(out)["cells"]}
    assert one.keys() == two.keys()  # ids are derived from the overrides and the seed
    for cid in one:
        assert two[cid]["metrics"] == pytest.approx(one[cid]["metrics"], rel=1e-6, abs=1e-9)
        assert (out / "cells" / cid / "log.txt").is_file()


# ---------------------------------------------------------------------------
# Rows (Table 2), budgets


def test_ablation_rows_table2(setup, tmp_path):
    out = tmp_path / "rows"
    args = ["sweep", "--out", str(out), "--config", str(setup["base"]), "--prepared", str(setup["data"]),
            "--eval-tasks", str(setup["blimp"]), "--eval-modes", "causal,mntp", "--no-temperature-sweep",
            "--eval-precision", "fp32", "--device", "cpu", "--steps", "4",
            "--row", "GPT-BERT", "--row", "w/o mask scheduling: objective.mask_p_start=0.15",
            "--row", "w/o batch scheduling: train.batch_ramp=false, train.seq_schedule=false"]
    assert main(args) == 0
    s = _sweep_json(out)
    assert [c["labels"][0] for c in s["cells"]] == ["GPT-BERT", "w/o mask scheduling", "w/o batch scheduling"]
    assert s["cells"][0]["id"].startswith("base-s0-")
    assert s["cells"][2]["tokens_seen"] > s["cells"][0]["tokens_seen"]  # full batch from step 0, same steps
    md = (out / "sweep.md").read_text()
    assert "## Ablations (Table 2 shape" in md
    base, other = s["settings"][0]["mean"], s["settings"][1]["mean"]
    assert f"| w/o mask scheduling | {other['val_loss_masked'] - base['val_loss_masked']:+.3f} |" in md
    assert f"| GPT-BERT | {base['val_loss_masked']:.3f} |" in md
    _png_size(out / "table2.png")
    assert not (out / "figure2.png").exists()


def test_minutes_give_every_cell_the_same_steps(setup, prepared):
    spec = sw.spec_from_options({"out": str(setup["root"] / "minutes"), "config": str(setup["base"]),
                                 "axis": [RATIOS, "train.batch_ramp=true,false"], "minutes": 0.05,
                                 "eval_tasks": ""})
    cal = sw.calibrate(spec, 0.05)
    assert cal["steps"] >= 1 and cal["minutes"] == 0.05 and "torch_threads" in cal["measured_with"]
    cells = sw.build_cells(spec, prepared["data"], prepared["tokenizer"], sw.cell_steps(spec, cal))
    assert len(cells) == 4 and {c.config.train.max_steps for c in cells} == {cal["steps"]}


def test_minutes_each_times_every_cell_config_on_its_own(setup, prepared, monkeypatch):
    """--minutes-each: one timing per distinct config (seeds share it), each cell gets its config's steps,
    and a restarted sweep reuses the timings it has instead of timing again."""
    calls = []

    def fake_budget(cfg, seconds):  # deterministic: a 1-layer model "runs" twice as fast as a 2-layer one
        calls.append((cfg.model.num_layers, cfg.train.seed, seconds))
        return int(seconds) * (4 // cfg.model.num_layers)

    monkeypatch.setattr(sw, "steps_for_budget", fake_budget)
    spec = sw.spec_from_options({"out": str(setup["root"] / "each"), "config": str(setup["base"]),
                                 "axis": ["model.num_layers=1,2"], "seeds": "0,1", "minutes_each": 0.5,
                                 "eval_tasks": ""})
    assert spec.budget == ("minutes_each", 0.5) and spec.to_yaml_dict()["minutes_each"] == 0.5
    placeholders = sw.build_cells(spec, prepared["data"], prepared["tokenizer"], None, check_only=True)
    cal = sw.calibrate_each(spec, placeholders, 0.5, log=lambda s: None)
    assert sorted(c[0] for c in calls) == [1, 2] and all(c[2] == 30.0 for c in calls)  # one timing per config
    assert cal["kind"] == "minutes_each" and sorted(cal["steps"].values()) == [60, 120]
    assert sw.calibration_fits(spec, cal, placeholders)
    cells = sw.build_cells(spec, prepared["data"], prepared["tokenizer"], sw.cell_steps(spec, cal))
    assert {(c.config.model.num_layers, c.seed): c.config.train.max_steps for c in cells} == \
        {(1, 0): 120, (1, 1): 120, (2, 0): 60, (2, 1): 60}
    assert sorted(len(v) for v in cal["cells"].values()) == [2, 2]
    # Restarted with one more cell: only the new config is timed, the others keep their counts.
    calls.clear()
    spec3 = sw.spec_from_options({**spec.to_yaml_dict(), "axis": ["model.num_layers=1,2,4"], "overrides": {}})
    more = sw.build_cells(spec3, prepared["data"], prepared["tokenizer"], None, check_only=True)
    assert not sw.calibration_fits(spec3, cal, more) and sw.calibration_fits(spec3, cal)
    cal3 = sw.calibrate_each(spec3, more, 0.5, cal, log=lambda s: None)
    assert [c[0] for c in calls] == [4] and sorted(cal3["steps"].values()) == [30, 60, 120]
    # Another budget is not this calibration's.
    other = sw.spec_from_options({**spec.to_yaml_dict(), "overrides": {}, "minutes_each": 0.7})
    assert not sw.calibration_fits(other, cal)
    minutes = sw.spec_from_options({**spec.to_yaml_dict(), "overrides": {}, "minutes_each": None, "minutes": 0.5})
    assert not sw.calibration_fits(minutes, cal)


def test_minutes_each_end_to_end(setup, tmp_path, capsys):
    """The real timing through the command line: calibration.json, each cell's steps, the report."""
    out = tmp_path / "each"
    rc = main(["sweep", "--out", str(out), "--config", str(setup["base"]), "--prepared", str(setup["data"]),
               "--eval-tasks", "", "--axis", "model.num_layers=1,2", "--minutes-each", "0.02"])
    assert rc == 0, capsys.readouterr().err
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["kind"] == "minutes_each" and len(cal["steps"]) == 2 and all(n >= 1 for n in cal["steps"].values())
    s = _sweep_json(out)
    layers = {c["overrides"]["model.num_layers"]: c for c in s["cells"]}
    for c in s["cells"]:
        assert c["status"] == "done"
        cfg = load_config(str(out / "cells" / c["id"] / "config.yaml"))
        assert cfg.train.max_steps == cal["steps"][sw.timing_key(cfg)]
    assert sorted(s["budget"]["steps_per_cell"]) == sorted(set(cal["steps"].values()))
    md = (out / "sweep.md").read_text()
    assert "each cell config timed on its own" in md and "budget 0.02 minutes (each config timed) per cell" in md
    assert set(layers) == {1, 2}
    # A second start trains nothing and times nothing.
    before = (out / "calibration.json").read_text()
    assert main(["sweep", "--spec", str(out / "spec.yaml")]) == 0
    assert (out / "calibration.json").read_text() == before


def test_tokens_budget(setup, prepared):
    spec = sw.spec_from_options({"out": str(setup["root"] / "tokens"), "config": str(setup["base"]),
                                 "axis": ["train.batch_ramp=true,false"], "tokens": 5000, "eval_tasks": ""})
    cells = sw.build_cells(spec, prepared["data"], prepared["tokenizer"], sw.cell_steps(spec, None))
    from gptbert.data import step_shape

    for c in cells:
        n = c.config.train.max_steps
        total = sum(step_shape(s, c.config).tokens for s in range(n))
        assert total >= 5000
        c.config.train.max_steps = n - 1
        assert sum(step_shape(s, c.config).tokens for s in range(n - 1)) < 5000
    assert cells[0].config.train.max_steps > cells[1].config.train.max_steps  # the ramp reads fewer tokens per step


# ---------------------------------------------------------------------------
# Names, ids, bad specs


def test_ratio_names_and_labels():
    for text, r, label in [("causal-only", 1.0, "causal-only"), ("1:1", 0.5, "1:1"), ("1:7", 0.125, "1:7"),
                           ("1:15", 0.0625, "1:15"), ("masked-only", 0.0, "masked-only"), ("3:1", 0.75, "3:1"),
                           ("0.125", 0.125, "1:7"), ("0.3", 0.3, "0.3")]:
        assert sw.ratio_value(text) == r and sw.ratio_label(r) == label
    axis = sw.parse_axis("objective.causal_ratio=causal-only,1:1,1:7,1:15,masked-only")
    assert [e.overrides["objective.causal_ratio"] for e in axis.entries] == [1.0, 0.5, 0.125, 0.0625, 0.0]
    row = sw.parse_row("w/o layer weights: model.dropout=0.0, train.batch_ramp=false")
    assert row.label == "w/o layer weights" and row.overrides == {"model.dropout": "0.0", "train.batch_ramp": "false"}
    assert sw.parse_row("GPT-BERT").overrides == {}


def test_cell_ids_are_stable(setup, prepared):
    def ids(axis):
        spec = sw.spec_from_options({"out": "x", "config": str(setup["base"]), "axis": [axis], "steps": 2,
                                     "seeds": "0,1", "eval_tasks": ""})
        return [c.id for c in sw.build_cells(spec, prepared["data"], prepared["tokenizer"], None, check_only=True)]

    a = ids("objective.causal_ratio=1:7")
    assert a == ids("objective.causal_ratio=0.125") == ids("objective.causal_ratio=0.1250")
    assert a[0] != a[1] and a[0].startswith("causal_ratio_0.125-s0-")
    assert sw.cell_id({"train.batch_ramp": False}, 0) == sw.cell_id({"train.batch_ramp": False}, 0)


@pytest.mark.parametrize("extra, needles", [
    (["--axis", "objective.bogus=1,2", "--steps", "2"], ["--axis objective.bogus=1,2", "unknown config key"]),
    (["--row", "x: model.layer_weightin=false", "--steps", "2"], ["--row 'x: model.layer_weightin=false'",
                                                                   "unknown config key 'model.layer_weightin'"]),
    (["--axis", "objective.causal_ratio=1:1,2", "--steps", "2"], ["objective.causal_ratio", "must be in [0, 1]"]),
    (["--axis", "train.batch_ramp=true,maybe", "--steps", "2"], ["train.batch_ramp", "expected bool"]),
    (["--row", "a: train.seed=3", "--steps", "2"], ["use --seeds"]),
    (["--axis", "model.vocab_size=300,400", "--steps", "2"], ["cannot vary between cells"]),
    (["--axis", RATIOS], ["exactly one budget"]),
    (["--axis", RATIOS, "--steps", "2", "--minutes", "1"], ["exactly one budget"]),
    (["--axis", RATIOS, "--minutes", "1", "--minutes-each", "1"], ["exactly one budget"]),
    (["--axis", RATIOS, "--minutes-each", "0"], ["--minutes-each: expected a positive number"]),
    (["--steps", "2"], ["nothing to sweep"]),
    (["--axis", RATIOS, "--steps", "2", "--eval-tasks", "blimp_fats"], ["unknown task 'blimp_fats'"]),
    (["--axis", RATIOS, "--steps", "2", "--eval-modes", "causal,mtnp"], ["unknown scoring mode 'mtnp'"]),
    (["--axis", RATIOS, "--steps", "2", "--train.max_steps", "9"], ["train.max_steps", "--steps"]),
])
def test_bad_specs_are_refused_before_any_work(setup, tmp_path, capsys, extra, needles):
    out = tmp_path / "never"
    rc = main(["sweep", "--out", str(out), "--config", str(setup["base"]), "--prepared", str(setup["data"]),
               "--eval-tasks", str(setup["blimp"]), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists()


def test_a_folder_that_is_not_a_sweep_is_refused(setup, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    rc = main(_grid(setup, tmp_path / "busy"))
    assert rc == 2 and "not a sweep folder" in capsys.readouterr().err


def test_dry_run_writes_nothing(setup, tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(_grid(setup, out, "--dry-run")) == 0
    printed = capsys.readouterr().out
    assert "4 cells" in printed and printed.count("6 steps") == 4
    assert not out.exists()


def test_help_documents_every_option():
    parser = build_parser().commands["sweep"]
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "cell"):
            assert action.help and len(action.help) > 10, action.option_strings
    text = " ".join(parser.format_help().split())
    assert "--axis" in text and "1:15 = 0.0625" in text and "--cell" not in text


# ---------------------------------------------------------------------------
# The line chart


def test_line_chart_png(tmp_path):
    assert nice_ticks(0.0, 1.0) == [0.0, 0.5, 1.0] and nice_ticks(40.0, 80.0) == [40.0, 50.0, 60.0, 70.0, 80.0]
    ticks = nice_ticks(47.3, 83.1)
    assert ticks[0] <= 47.3 and ticks[-1] >= 83.1 and len(ticks) <= 7
    x = ["causal-only", "1:1", "1:7", "1:15", "masked-only"]
    panels = [Panel("blimp (%)", {"causal": [60, 62, 61, 59, 52], "mntp": [50, 63, None, 67, 66]},
                    {"mntp": [1.0, 2.0, None, 1.5, 0.5]}, reference=50.0, limits=(0.0, 100.0)),
              Panel("validation loss", {"causal": [4.5, 4.6, 4.8, 5.0, 7.0]}, fmt="{:.2f}"),
              Panel("empty", {"causal": [None] * 5})]
    w, h = _png_size(line_panels_png(tmp_path / "f.png", "title", x, panels, note="a note"))
    assert w > 2 * 230 and h > 2 * 150


@pytest.mark.slow
def test_torchrun_launcher(setup, grid, tmp_path):
    """Each cell's training under torchrun with 2 gloo processes (DDP); evaluation in the sweep's process."""
    out = tmp_path / "ddp"
    args = _grid(setup, out, "--seeds", "0", "--launcher", "torchrun", "--nproc", "2", "--eval-tasks", "")
    args[args.index(RATIOS)] = "objective.causal_ratio=1:1"
    assert main(args) == 0
    s = _sweep_json(out)
    assert s["complete"] and all(c["steps"] == 6 for c in s["cells"])
    one = {c["id"]: c for c in _sweep_json(grid)["cells"] if c["seed"] == 0}
    for c in s["cells"]:
        # rows are spread over 2 ranks in whole micro-batches, so the data differ from 1 process: close, not equal
        assert abs(c["metrics"]["val_loss_masked"] - one[c["id"]]["metrics"]["val_loss_masked"]) < 0.5
        assert (out / "cells" / c["id"] / "train" / "checkpoints" / "step_0000006").is_dir()


def _synthetic(report_temperature: str = "t1") -> dict:
    """A sweep.json-shaped dict with two dimensions (an axis and rows) and made-up numbers."""
    import itertools

    ratios, rows = ["1:1", "1:7"], ["GPT-BERT", "w/o gate"]
    settings = []
    for i, (r, w) in enumerate(itertools.product(ratios, rows)):
        mean = {"val_loss_masked": 4.0 + i / 10, "val_loss_causal": 5.0 - i / 10}
        for mode in ("causal", "mntp"):
            mean[f"blimp/{mode}"] = 60.0 + i
            mean[f"blimp/{mode}/best_T"] = 70.0 + i
            mean[f"supp/{mode}/best_T"] = 55.0 + i
            mean[f"supp/{mode}/blimp_T"] = 52.0 + i
            mean[f"supp/{mode}"] = 50.0 + i
        settings.append({"labels": [r, w], "n": 1, "mean": mean, "std": {k: None for k in mean}})
    return {"dimensions": [{"name": "objective.causal_ratio", "title": "causal:masked", "labels": ratios},
                           {"name": "row", "title": "setting", "labels": rows}],
            "settings": settings, "eval": {"tasks": ["blimp", "supp"], "modes": ["causal", "mntp"], "precision": "fp32",
                                           "limit": None, "temperature_sweep": True},
            "report_temperature": report_temperature, "spec": {"table_mode": "mntp", "seeds": "0"},
            "budget": {"kind": "steps", "amount": 4, "steps_per_cell": [4]}, "calibration": None,
            "base": {"config": "tiny", "overrides": {}, "params": 12345}, "cells": [], "complete": True}


def test_report_with_two_dimensions_and_best_temperature(tmp_path):
    from gptbert.sweep_report import markdown, write_figures

    md = markdown(_synthetic())
    assert "| causal:masked / setting | causal | mntp |" in md
    assert "| 1:7 / w/o gate | **63.0** | **63.0** |" in md  # T=1, the best of its column in bold
    assert "### 1:1" in md and "### 1:7" in md  # one Table 2 per ratio
    assert "| w/o gate | +0.100 | -0.100 | +1.0 | +1.0 |" in md
    best = markdown(_synthetic("best"))
    assert "| 1:7 / w/o gate | **73.0** | **73.0** |" in best  # best T
    assert "## supp (accuracy %, best T (supplement: BLiMP's T))" in best and "| 1:1 / GPT-BERT | 52.0 |" in best
    names = sorted(p.name for p in write_figures(_synthetic(), tmp_path))
    assert names == ["figure2_GPT-BERT.png", "figure2_w_o_gate.png", "table2_1_1.png", "table2_1_7.png"]
    for n in names:
        _png_size(tmp_path / n)
