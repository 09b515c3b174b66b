"""`gptbert submission`: the BabyLM 2025 results tree, size checks, collection, the collated JSON.

The paths and keys below were read from the official babylm/evaluation-pipeline-2025
`evaluation_pipeline/collate_preds.py` (what it opens and checks) and written here as constants,
so that the tree our command writes is checked against them, not against our own tables.
A fabricated run (two tiny random milestone checkpoints and a final one) is scored with
--limit 1 on the real BabyLM data (skipped when ../shared/data is absent).
"""

from __future__ import annotations

import csv
import json
import math
import random
import zipfile

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from gptbert.checkpoint import save_checkpoint, state_dict_for_save
from gptbert.cli import main
from gptbert.config import ModelConfig, RunConfig
from gptbert.model import GPTBERT
from gptbert.tokenizer import save_tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

# --- what collate_preds.py reads, below results/<model>/<revision>/ ------------------------------
FAST_FILES = {  # every chck_NM revision (_check_validity_of_dir(fast=True), get_revision_fast_eval_metrics)
    "blimp_fast": "zero_shot/{b}/blimp/blimp_fast/predictions.json",
    "supplement_fast": "zero_shot/{b}/blimp/supplement_fast/predictions.json",
    "ewok_fast": "zero_shot/{b}/ewok/ewok_fast/predictions.json",
    "entity_tracking_fast": "zero_shot/{b}/entity_tracking/entity_tracking_fast/predictions.json",
    "wug_adj": "zero_shot/{b}/wug_adj/wug_adj_nominalization/predictions.json",
    "wug_past": "zero_shot/{b}/wug_past/wug_past_tense/predictions.json",
    "reading": "zero_shot/{b}/reading/predictions.json",
}
FULL_FILES = {  # revision main (collate_full_eval_preds)
    "blimp": "zero_shot/{b}/blimp/blimp_filtered/predictions.json",
    "blimp_supplement": "zero_shot/{b}/blimp/supplement_filtered/predictions.json",
    "ewok": "zero_shot/{b}/ewok/ewok_filtered/predictions.json",
    "entity_tracking": "zero_shot/{b}/entity_tracking/entity_tracking/predictions.json",
    "wug_adj": "zero_shot/{b}/wug_adj/wug_adj_nominalization/predictions.json",
    "wug_past": "zero_shot/{b}/wug_past/wug_past_tense/predictions.json",
    "comps": "zero_shot/{b}/comps/comps/predictions.json",
    "reading": "zero_shot/{b}/reading/predictions.json",
    "aoa": "zero_shot/{b}/AoA_word/surprisal.json",
}
GLUE = ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")
FINETUNE_FILE = "finetune/{t}/predictions.json"
COLLATED = "all_full_preds_and_fast_scores_{b}.json"  # in results/<model>/
STRICT_SMALL = [f"chck_{i}M" for i in range(1, 10)] + [f"chck_{i * 10}M" for i in range(1, 11)]
FAST_KEYS = ["blimp", "blimp_supplement", "ewok", "entity_tracking", "wug_adj", "wug_past", "reading"]
COLLATED_KEYS = ["blimp", "blimp_supplement", "ewok", "entity_tracking", "wug_adj", "wug_past", "comps", "reading",
                 "aoa", "glue", "fast_eval_results"]
COMPS_SIZES = {"base": 49340, "wugs_dist_before": 13896, "wugs_dist_in_between": 13896, "wugs": 13896}
AOA_SIZE = 8005
EWOK_ZIP = SHARED_DATA / "eval" / "ewok" / "ewok_babylm_filtered_and_fast.zip"
D2025 = SHARED_DATA / "babylm2025"
READING_CSV = D2025 / "reading" / "fast_eval" / "reading" / "reading_data.csv"
WUG_FILE = D2025 / "wug_adj_nominalization" / "fast_eval" / "wug_adj_nominalization" / "wug_adj_nominalization.jsonl"
ET_FAST = D2025 / "entity_tracking" / "fast_eval" / "entity_tracking_fast" / "regular.jsonl"

needs_data = pytest.mark.skipif(not (SHARED_DATA / "eval" / "blimp_fast").is_dir() or not D2025.is_dir()
                                or not EWOK_ZIP.is_file(),
                                reason="../shared/data (BabyLM eval data and babylm2025/) is absent")


def _jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def _ewok(member_dir):
    """{domain: records} of the EWoK zip's folder, read in memory (never extracted)."""
    out = {}
    with zipfile.ZipFile(EWOK_ZIP) as z:
        for n in sorted(z.namelist()):
            if n.startswith(member_dir) and n.endswith(".jsonl"):
                text = z.read(n, pwd=b"ewok").decode("utf-8")
                out[n.rsplit("/", 1)[1][:-6]] = [json.loads(x) for x in text.splitlines() if x.strip()]
    return out


def _make_run(root, milestones=(1, 2)):
    rng = random.Random(0)
    words = ["the", "dog", "cat", "sees", "likes", "a", "bird", "runs", "box", "contains", "is", "was", "not"]
    tok = train_tokenizer([" ".join(rng.choice(words) for _ in range(6)) + "." for _ in range(200)], 300)
    save_tokenizer(tok, root / "tokenizer.json")
    mc = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=2,
                     intermediate_size=32, dropout=0.0, attention_dropout=0.0)
    rc = RunConfig(model=mc)
    rc.train.tokenizer = str(root / "tokenizer.json")
    run = root / "run"
    for step, m in enumerate([*milestones, None], start=1):
        torch.manual_seed(step)
        sd = state_dict_for_save(GPTBERT(mc))
        save_checkpoint(run, step=step, tokens_seen=step, model_state=sd, config=rc.to_dict(), keep_last=1)
        if m is not None:
            save_checkpoint(run, step=step, tokens_seen=step, model_state=sd, config=rc.to_dict(), name=f"chck_{m}M")
    return run


def _reading_rows():
    with open(READING_CSV, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _external_pieces(rev_dir, b, seed=0):
    """Complete WUG-adjective and reading predictions, as if made elsewhere (random numbers)."""
    rng = np.random.default_rng(seed)
    wug = _jsonl(WUG_FILE)
    preds = [{"id": f"wug_adj_{i}", "pred": r["sentences"].split("\t")[0], "prob": float(rng.random())}
             for i, r in enumerate(wug)]
    f = rev_dir / FAST_FILES["wug_adj"].format(b=b)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"wug_adj": {"predictions": preds}}))
    rows = _reading_rows()
    preds = [{"id": i, "pred": float(rng.uniform(1, 15)),
              "prev_pred": float(rng.uniform(1, 15)) if r["prev_item"] else float("nan")} for i, r in enumerate(rows)]
    f = rev_dir / FAST_FILES["reading"].format(b=b)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"reading": {"predictions": preds}}))


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread):
    if not (SHARED_DATA / "eval" / "blimp_fast").is_dir() or not D2025.is_dir() or not EWOK_ZIP.is_file():
        pytest.skip("../shared/data (BabyLM eval data and babylm2025/) is absent")
    root = tmp_path_factory.mktemp("submission")
    run = _make_run(root)
    out = root / "sub"
    model_dir = out / "results" / "tiny"
    _external_pieces(model_dir / "chck_2M", "causal")
    argv = ["submission", str(run), "--out", str(out), "--backend", "causal", "--model-name", "tiny", "--limit", "1",
            "--skip-finetune", "--precision", "fp32", "--device", "cpu", "--no-progress"]
    status = main(argv)
    return {"run": run, "out": out, "model_dir": model_dir, "argv": argv, "status": status}


def _mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@needs_data
def test_tree_layout_and_keys_are_what_collate_preds_reads(built):
    assert built["status"] == 3  # incomplete: --limit, 17 milestones absent, no COMPS, no fine-tuning
    md, b = built["model_dir"], "causal"
    for rev in ("chck_1M", "chck_2M"):
        for task, rel in FAST_FILES.items():
            assert (md / rev / rel.format(b=b)).is_file(), (rev, task)
    for key, rel in FULL_FILES.items():
        assert (md / "main" / rel.format(b=b)).is_file() == (key != "comps"), key
    blimp = json.loads((md / "chck_1M" / FAST_FILES["blimp_fast"].format(b=b)).read_text())
    stems = sorted(p.stem for p in (SHARED_DATA / "eval" / "blimp_fast").glob("*.jsonl"))
    assert sorted(blimp) == stems and len(stems) == 67
    first = _jsonl(SHARED_DATA / "eval" / "blimp_fast" / "adjunct_island.jsonl")[0]
    (p,) = blimp["adjunct_island"]["predictions"]
    assert p["id"] == "adjunct_island_0" and p["pred"] in (first["sentence_good"], first["sentence_bad"])
    ewok = json.loads((md / "chck_1M" / FAST_FILES["ewok_fast"].format(b=b)).read_text())
    gold = _ewok("ewok_fast/")
    assert sorted(ewok) == sorted(gold) and len(gold) == 11
    for dom, v in ewok.items():  # the pipeline's EWoK completion: " " + Target
        assert v["predictions"][0]["pred"] in (" " + gold[dom][0]["Target1"], " " + gold[dom][0]["Target2"])
    et = json.loads((md / "chck_1M" / FAST_FILES["entity_tracking_fast"].format(b=b)).read_text())
    assert sorted(et) == [f"regular_{k}_ops" for k in range(6)]
    wug = json.loads((md / "chck_1M" / FAST_FILES["wug_past"].format(b=b)).read_text())
    assert list(wug) == ["wug_past"] and set(wug["wug_past"]["predictions"][0]) == {"id", "pred", "prob"}
    reading = json.loads((md / "chck_1M" / FAST_FILES["reading"].format(b=b)).read_text())
    assert set(reading["reading"]["predictions"][0]) == {"id", "pred", "prev_pred"}
    assert (md / "chck_1M" / "zero_shot/causal/blimp/blimp_fast/best_temperature_report.txt").is_file()
    full_et = json.loads((md / "main" / FULL_FILES["entity_tracking"].format(b=b)).read_text())
    assert len(full_et) == 18
    aoa = json.loads((md / "main" / FULL_FILES["aoa"].format(b=b)).read_text())
    assert {r["step"] for r in aoa["results"]} == {"chck_1M", "chck_2M"}
    assert {"step", "target_word", "context_id", "surprisal"} <= set(aoa["results"][0])
    # the collated file: only the marked-incomplete name, the official keys in the official order
    assert not (md / COLLATED.format(b=b)).exists()
    col = json.loads((md / COLLATED.format(b=b).replace(".json", ".incomplete.json")).read_text())
    assert list(col)[:len(COLLATED_KEYS)] == COLLATED_KEYS and "gptbert_incomplete" in col
    assert col["comps"] is None and col["glue"] == {}
    assert list(col["fast_eval_results"]) == FAST_KEYS
    assert all(len(v) == len(STRICT_SMALL) for v in col["fast_eval_results"].values())
    assert col["fast_eval_results"]["blimp"][2] is None  # chck_3M: no such checkpoint


@needs_data
def test_report_names_every_missing_piece_and_the_command(built, capsys):
    out = built["out"]
    report = (out / "report_causal.md").read_text()
    assert "INCOMPLETE" in report and "SUBSET" in report
    assert "comps: missing" in report and "--comps COMPS_DIR" in report
    assert "--tasks boolq,mnli,mrpc,multirc,qqp,rte,wsc" in report and "skipped (--skip-finetune)" in report
    assert "chck_3M..chck_100M (17 revisions)" in report and "no milestone checkpoint" in report
    record = json.loads((out / "submission_causal.json").read_text())
    assert record["complete"] is False and record["subset"] is True
    assert record["runs"][-1]["options"]["limit"] == 1 and record["runs"][-1]["options"]["backend"] == "causal"
    by = {(p["revision"], p["task"]): p for p in record["pieces"]}
    assert by[("chck_1M", "blimp_fast")]["status"] == "subset"
    assert "1 of 200" in by[("chck_1M", "blimp_fast")]["detail"]
    assert by[("chck_2M", "wug_adj")]["status"] == "ok" and by[("chck_2M", "wug_adj")]["made_by"] == "external"
    assert by[("main", "boolq")]["status"] == "missing"


def _ols_r2(y, cols):
    X = np.column_stack([np.ones(len(y)), *cols])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    return 1 - resid @ resid / ((y - y.mean()) @ (y - y.mean()))


def _share(df, y, base, extra):
    """(R2 with pred - R2 without) / (1 - R2 without), each fit on the rows where its variables are present."""
    def fit(terms):
        names = sorted({n for t in terms for n in t.split(":")} | {y})
        keep = np.all([~np.isnan(df[n]) for n in names], axis=0)
        cols = [np.prod([df[n][keep] for n in t.split(":")], axis=0) for t in terms]
        return _ols_r2(df[y][keep], cols)
    r0, r1 = fit(base), fit(base + extra)
    return (r1 - r0) / (1 - r0)


def _pairwise(names):
    return list(names) + [f"{a}:{b}" for i, a in enumerate(names) for b in names[i + 1:]]


def _rank(x):
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@needs_data
def test_fast_metrics_equal_a_brute_force_recomputation(built):
    md, b = built["model_dir"], "causal"
    col = json.loads((md / COLLATED.format(b=b).replace(".json", ".incomplete.json")).read_text())
    fast = col["fast_eval_results"]
    ewok_gold = _ewok("ewok_fast/")
    et_gold = {}
    for r in _jsonl(ET_FAST):
        et_gold.setdefault(f"regular_{r['numops']}_ops", []).append(r["options"][0])
    for i, rev in enumerate(("chck_1M", "chck_2M")):
        def load(task, rev=rev):
            return json.loads((md / rev / FAST_FILES[task].format(b=b)).read_text())

        for task, key, folder in (("blimp_fast", "blimp", "blimp_fast"), ("supplement_fast", "blimp_supplement",
                                                                          "supplement_fast")):
            for sub, v in load(task).items():
                data = _jsonl(SHARED_DATA / "eval" / folder / f"{sub}.jsonl")
                pairs = list(zip(v["predictions"], data))
                assert fast[key][i][sub] == sum(p["pred"].strip() == d["sentence_good"].strip()
                                                for p, d in pairs) / len(pairs)
        for sub, v in load("ewok_fast").items():
            pairs = list(zip(v["predictions"], ewok_gold[sub]))
            assert fast["ewok"][i][sub] == sum(p["pred"].strip() == d["Target1"].strip() for p, d in pairs) / len(pairs)
        for sub, v in load("entity_tracking_fast").items():
            pairs = list(zip(v["predictions"], et_gold[sub]))
            assert fast["entity_tracking"][i][sub] == sum(p["pred"].strip() == g.strip() for p, g in pairs) / len(pairs)
    # chck_2M holds complete external WUG-adjective and reading predictions (random numbers)
    wug = json.loads((md / "chck_2M" / FAST_FILES["wug_adj"].format(b=b)).read_text())["wug_adj"]["predictions"]
    human = [r["ratio"] for r in _jsonl(WUG_FILE)]
    probs = [p["prob"] for p in wug]
    rho = np.corrcoef(_rank(probs), _rank(human))[0, 1]
    assert fast["wug_adj"][1]["wug_adj"] == pytest.approx(rho, abs=1e-12)
    try:
        from scipy.stats import spearmanr
    except ImportError:
        pass
    else:
        assert fast["wug_adj"][1]["wug_adj"] == pytest.approx(spearmanr(probs, human)[0], abs=1e-12)
    preds = json.loads((md / "chck_2M" / FAST_FILES["reading"].format(b=b)).read_text())["reading"]["predictions"]
    rows = _reading_rows()

    def num(v):
        return float(v) if v not in ("", "NA") else math.nan
    df = {k: np.array([num(r[k]) for r in rows]) for k in ("Subtlex_log10", "length", "context_length",
                                                           "prev_length", "RTfirstfix", "RTfirstpass", "RTgopast",
                                                           "RTrightbound", "self_paced_reading_time")}
    df["pred"] = np.array([p["pred"] for p in preds])
    df["prev_pred"] = np.array([p["prev_pred"] for p in preds])
    base = _pairwise(["Subtlex_log10", "length", "context_length"])
    rt = np.mean([_share(df, dv, base, ["pred"]) for dv in ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")])
    spr = _share(df, "self_paced_reading_time",
                 _pairwise(["Subtlex_log10", "length", "context_length", "prev_length", "prev_pred"]), ["pred"])
    assert fast["reading"][1]["rt"] == pytest.approx(rt, rel=1e-9, abs=1e-12)
    assert fast["reading"][1]["spr"] == pytest.approx(spr, rel=1e-9, abs=1e-12)


@needs_data
def test_existing_pieces_are_collected_not_recomputed(built, capsys):
    out, md = built["out"], built["model_dir"]
    before = _mtimes(md)
    capsys.readouterr()
    assert main(built["argv"]) == 3
    err = capsys.readouterr().err
    assert "computed" not in err.replace("not computed", "")  # nothing scored again
    after = _mtimes(md)
    for p, t in before.items():
        if p.name in ("predictions.json", "surprisal.json", "gptbert_piece.json"):
            assert after[p] == t, p
    record = json.loads((out / "submission_causal.json").read_text())
    assert len(record["runs"]) == 2 and record["runs"][-1]["computed"] == []
    assert "chck_2M/reading" in record["runs"][-1]["collected"]
    # a short file made elsewhere is named with its counts; fine-tuning writes the pipeline's format
    f = md / "chck_1M" / FAST_FILES["supplement_fast"].format(b="causal")
    data = json.loads(f.read_text())
    data["hypernym"]["predictions"] = []
    f.write_text(json.dumps(data))
    (f.parent / "gptbert_piece.json").unlink()
    status = main(["submission", str(built["run"]), "--out", str(out), "--backend", "causal", "--model-name", "tiny",
                   "--only", "finetune", "--tasks", "rte", "--limit", "2", "--precision", "fp32", "--device", "cpu",
                   "--no-progress"])
    assert status == 3
    text = capsys.readouterr().out
    assert "supplement_fast: short: 4 of 250 items; hypernym 0 of 50" in text
    rte = json.loads((md / "main" / FINETUNE_FILE.format(t="rte")).read_text())
    assert list(rte) == ["rte"] and [p["id"] for p in rte["rte"]["predictions"]] == ["rte_0", "rte_1"]
    assert all(isinstance(p["pred"], int) for p in rte["rte"]["predictions"])
    record = json.loads((out / "submission_causal.json").read_text())
    by = {(p["revision"], p["task"]): p for p in record["pieces"]}
    assert by[("main", "rte")]["status"] == "subset" and by[("chck_1M", "supplement_fast")]["status"] == "short"


def _fabricate_complete(md, b):
    """Every piece of a strict-small submission, with the official item counts, as if made elsewhere."""
    def write(rel, obj):
        f = md / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(obj))

    def from_files(folder, field, space=""):
        return {p.stem: {"predictions": [{"id": f"{p.stem}_{i}", "pred": space + r[field]}
                                         for i, r in enumerate(_jsonl(p))]}
                for p in sorted(folder.glob("*.jsonl"))}

    def from_ewok(member):
        return {d: {"predictions": [{"id": f"{d}_{i}", "pred": " " + r["Target1"]} for i, r in enumerate(rs)]}
                for d, rs in _ewok(member).items()}

    def et(folder):
        out = {}
        for p in sorted(folder.glob("*.jsonl")):
            for r in _jsonl(p):
                k = f"{p.stem}_{r['numops']}_ops"
                preds = out.setdefault(k, {"predictions": []})["predictions"]
                preds.append({"id": f"{k}_{len(preds)}", "pred": r["options"][0]})
        return out

    def wug(task, folder):
        rs = _jsonl(next(folder.glob("*.jsonl")))
        return {task: {"predictions": [{"id": f"{task}_{i}", "pred": r["sentences"].split("\t")[0],
                                        "prob": 0.5 + 0.001 * i} for i, r in enumerate(rs)]}}

    rows = _reading_rows()
    reading = {"reading": {"predictions": [{"id": i, "pred": 5.0 + (i % 7), "prev_pred": 4.0 + (i % 5)}
                                           for i in range(len(rows))]}}
    ev = SHARED_DATA / "eval"
    fast = {"blimp_fast": from_files(ev / "blimp_fast", "sentence_good"),
            "supplement_fast": from_files(ev / "supplement_fast", "sentence_good"),
            "ewok_fast": from_ewok("ewok_fast/"),
            "entity_tracking_fast": et(D2025 / "entity_tracking/fast_eval/entity_tracking_fast"),
            "wug_adj": wug("wug_adj", D2025 / "wug_adj_nominalization/fast_eval/wug_adj_nominalization"),
            "wug_past": wug("wug_past", D2025 / "wug_past_tense/fast_eval/wug_past_tense"),
            "reading": reading}
    for rev in STRICT_SMALL:
        for task, rel in FAST_FILES.items():
            write(f"{rev}/{rel.format(b=b)}", fast[task])
    full = {"blimp": from_files(ev / "blimp_filtered", "sentence_good"),
            "blimp_supplement": from_files(ev / "supplement_filtered", "sentence_good"),
            "ewok": from_ewok("ewok_filtered/"),
            "entity_tracking": et(D2025 / "entity_tracking/full_eval/entity_tracking"),
            "wug_adj": fast["wug_adj"], "wug_past": fast["wug_past"], "reading": reading,
            "comps": {k: {"predictions": [{"id": f"{k}_{i}", "pred": "x"} for i in range(n)]}
                      for k, n in COMPS_SIZES.items()},
            "aoa": {"metadata": {}, "results": [{"step": rev, "target_word": "w", "context_id": i, "surprisal": 1.0}
                                                for rev in STRICT_SMALL for i in range(AOA_SIZE)]}}
    for key, rel in FULL_FILES.items():
        write(f"main/{rel.format(b=b)}", full[key])
    for t in GLUE:
        n = len(_jsonl(ev / "glue_filtered" / f"{t}.valid.jsonl"))
        write(f"main/{FINETUNE_FILE.format(t=t)}", {t: {"predictions": [{"id": f"{t}_{i}", "pred": 0}
                                                                        for i in range(n)]}})


@needs_data
def test_complete_tree_is_collated_under_the_official_name(built, tmp_path, capsys):
    out = tmp_path / "sub"
    md = out / "results" / "tiny"
    _fabricate_complete(md, "mntp")
    argv = ["submission", str(built["run"]), "--out", str(out), "--model-name", "tiny", "--device", "cpu"]
    assert main(argv) == 0
    assert "submission COMPLETE: 149 of 149 pieces ok" in capsys.readouterr().out
    col = json.loads((md / COLLATED.format(b="mntp")).read_text())
    assert list(col) == COLLATED_KEYS and sorted(col["glue"]) == sorted(GLUE)
    assert all(len(v) == 19 for v in col["fast_eval_results"].values())
    assert all(acc == 1.0 for rev in col["fast_eval_results"]["blimp"] for acc in rev.values())
    assert col["fast_eval_results"]["wug_adj"][0]["wug_adj"] == pytest.approx(
        np.corrcoef(np.arange(200), _rank([r["ratio"] for r in _jsonl(WUG_FILE)]))[0, 1])
    assert not (md / COLLATED.format(b="mntp").replace(".json", ".incomplete.json")).exists()
    # one missing piece: the official name goes, the report names it
    (md / "chck_5M" / FAST_FILES["reading"].format(b="mntp")).unlink()
    assert main(argv) == 3
    text = capsys.readouterr().out
    assert "chck_5M: reading: missing - the run has no milestone checkpoint" in text
    assert not (md / COLLATED.format(b="mntp")).exists()
    assert (md / COLLATED.format(b="mntp").replace(".json", ".incomplete.json")).is_file()


# --- no model, no data ---------------------------------------------------------------------------


def test_size_check_names_short_missing_and_unexpected_subtasks(tmp_path):
    from gptbert.submission import FAST_TASKS, check_file

    spec = next(s for s in FAST_TASKS if s.name == "supplement_fast")
    f = tmp_path / "predictions.json"
    preds = {k: {"predictions": [{"id": f"{k}_{i}", "pred": "x"} for i in range(50)]}
             for k in ("hypernym", "qa_congruence_easy", "qa_congruence_tricky", "subject_aux_inversion")}
    preds["hypernym"]["predictions"] = preds["hypernym"]["predictions"][:3]
    preds["bogus"] = {"predictions": []}
    f.write_text(json.dumps(preds))
    status, detail, _ = check_file(f, spec, [])
    assert status == "short"
    assert detail == "153 of 250 items; hypernym 3 of 50; no sub-tasks turn_taking; unexpected sub-tasks bogus"
    f.write_text(json.dumps({"hypernym": {"predictions": [{"id": 1}]}}))
    assert check_file(f, spec, [])[:2] == ("invalid", "'hypernym' prediction 0 has no 'pred'")
    assert check_file(tmp_path / "none.json", spec, [])[0] == "missing"


def test_bad_input_is_refused_before_any_work(tmp_path, capsys):
    run = _make_run(tmp_path, milestones=(1,))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for extra in (["--out", str(foreign)], ["--out", str(tmp_path / "o"), "--tasks", "blimp_fats"],
                  ["--out", str(tmp_path / "o"), "--model-name", "my.model"],
                  ["--out", str(tmp_path / "o"), "--revisions", "chck_200M"],
                  ["--out", str(tmp_path / "o"), "--only", "fast,glue"]):
        assert main(["submission", str(run), *extra]) == 2, extra
    err = capsys.readouterr().err
    assert "notes.txt" in err and "did you mean 'blimp_fast'" in err and "Path(name).stem" in err
    assert not (tmp_path / "o").exists() and (foreign / "notes.txt").read_text() == "mine"


def test_help_says_cpu_finetuning_takes_hours(capsys):
    with pytest.raises(SystemExit):
        main(["submission", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "many hours on a CPU" in text and "--skip-finetune" in text and "exit status" in text.lower()


@needs_data
def test_size_tables_equal_the_data():
    from gptbert import submission as s

    def count(folder):
        return {p.stem: len(_jsonl(p)) for p in folder.glob("*.jsonl")}

    assert count(SHARED_DATA / "eval" / "blimp_filtered") == s.BLIMP_SIZES
    assert count(SHARED_DATA / "eval" / "supplement_filtered") == s.SUPPLEMENT_SIZES
    assert {k: len(v) for k, v in _ewok("ewok_filtered/").items()} == s.EWOK_SIZES
    assert set(count(SHARED_DATA / "eval" / "blimp_fast").values()) == {200}
    assert {k: len(v) for k, v in _ewok("ewok_fast/").items()} == {k: 100 for k in s.EWOK_SIZES}
    assert {t: len(_jsonl(SHARED_DATA / "eval" / "glue_filtered" / f"{t}.valid.jsonl")) for t in GLUE} == s.GLUE_SIZES
    assert len(_reading_rows()) == s.READING_SIZE and len(_jsonl(WUG_FILE)) == s.WUG_SIZES["wug_adj"]


def test_model_card_flags_subset_results(tmp_path):
    from gptbert.convert.model_card import _eval_block

    limited = {"subset": "only the first 5 items of every sub-task (--limit): not comparable with full-task numbers",
               "tasks": {"blimp_fast": {"causal": {"T1": {"average": 61.234}, "n_pairs": 9,
                                                   "best_T": {"average": 63.0, "temperature": 1.5}}}}}
    full = {"subset": None, "scores": {"rte": 55.0}}
    (tmp_path / "a.json").write_text(json.dumps(limited))
    (tmp_path / "b.json").write_text(json.dumps(full))
    block = _eval_block(tmp_path / "run" / "checkpoints" / "step_1", [tmp_path / "a.json", tmp_path / "b.json"])
    assert ("| blimp_fast (causal) | accuracy, T=1 | 61.23 (subset: only the first 5 items of every sub-task "
            "(--limit): not comparable with full-task numbers) |") in block
    assert "| rte | score | 55.00 |" in block
