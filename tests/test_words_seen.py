"""Words seen during training: exact counts per row, milestone checkpoints, and the max_words budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_config
from gptbert.checkpoint import load_checkpoint
from gptbert.data import TrainBatches, samples_before, step_shape
from gptbert.train import train
from gptbert.words import WordTable, count_words

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_epoch_of_stream_windows_sees_every_word_once(prepared, tmp_path):
    """Stream packing without ramps: the windows of an epoch tile the stream, so their words add up to the
    words of the stream they cover, counted on the text itself."""
    cfg = tiny_config(prepared["data"], tmp_path, prepared["vocab_size"], packing="stream", batch_ramp=False,
                      seq_schedule=False)
    b = TrainBatches(prepared["data"], cfg)
    T = cfg.train.seq_length
    n_windows = (b.tokens.shape[0] - 1) // T
    lay = b.layout(np.arange(n_windows), T)
    got = int(b.row_words(lay).sum())
    table = WordTable.load(prepared["data"] / "word_table.npy")
    covered = np.asarray(b.tokens[1:n_windows * T + 1])
    assert got == count_words(covered, table, int(b.tokens[0]))
    meta = json.loads((prepared["data"] / "meta.json").read_text())
    tail = np.asarray(b.tokens[n_windows * T + 1:])  # the < T tokens after the last whole window
    head = count_words(np.asarray(b.tokens[:1]), table)  # the stream's first token (<s>: no word)
    assert got + head + count_words(tail, table, int(b.tokens[n_windows * T])) == meta["train_words"]


def test_micro_batches_carry_the_words_of_their_rows(prepared, tmp_path):
    cfg = tiny_config(prepared["data"], tmp_path, prepared["vocab_size"])  # official packing, ramp
    b = TrainBatches(prepared["data"], cfg)
    for step in (0, 7, 19):
        shape = step_shape(step, cfg)
        lay = b.layout(samples_before(step, cfg) + np.arange(shape.rows), shape.seq_length)
        per_row = b.row_words(lay)
        # brute force: count each row's chunks one by one, each with the corpus token before it
        brute = np.zeros(shape.rows, dtype=np.int64)
        table = WordTable.load(prepared["data"] / "word_table.npy")
        for r, src, n in zip(lay.row, lay.src, lay.length):
            brute[r] += count_words(np.asarray(b.tokens[src:src + n]), table, int(b.tokens[src - 1]) if src else None)
        assert per_row.tolist() == brute.tolist()
        assert sum(mb.words for mb in b[step]) == int(per_row.sum()) > 0


def test_milestones_and_word_budget(prepared, tmp_path, monkeypatch):
    import gptbert.train as train_mod

    # 1M-word milestones are out of reach of a test: let every milestone be 500 words instead.
    monkeypatch.setattr(train_mod, "milestones_crossed",
                        lambda before, after: [m for m in range(1, 1001) if before < m * 500 <= after])
    cfg = tiny_config(prepared["data"], tmp_path / "run", prepared["vocab_size"], max_steps=40, keep_last=1,
                      save_every=2, max_words=3000)
    res = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    words = [r["words_seen"] for r in rows]
    assert res.words_seen == words[-1] >= 3000 > words[-2]  # stopped by the budget, right after crossing it
    assert res.steps == rows[-1]["step"] < 40 and res.stopped == "word budget"
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith("chck_"))
    assert names == sorted(f"chck_{m}M" for m in range(1, 7))  # 500 ... 3000 words
    for m in range(1, 7):
        ck = load_checkpoint(tmp_path / "run" / "checkpoints" / f"chck_{m}M")
        step = ck.step
        assert words[step - 2] < m * 500 <= words[step - 1]  # saved right after the step that crossed it
    assert load_checkpoint(tmp_path / "run").state["words_seen"] == res.words_seen
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert len(steps) == 1  # keep_last pruned the step folders, never the milestones


def test_word_budget_fit_is_exact(prepared, tmp_path):
    """`schedule_words` counts exactly what the trainer counts, and `fit_steps_to_words` gives the
    fewest steps that reach the budget (the average-ratio estimate alone may fall short)."""
    from gptbert.calibrate import fit_steps_to_words, schedule_words, words_per_row_token

    cfg = tiny_config(prepared["data"], tmp_path / "run", prepared["vocab_size"], max_steps=12,
                      seq_schedule=True, batch_ramp=True)
    res = train(cfg)
    assert schedule_words(cfg) == res.words_seen > 0  # the same rows, the same count
    cfg.train.max_words = 4321
    ratio = words_per_row_token(cfg)
    n = fit_steps_to_words(cfg, ratio)
    for k, reaches in ((n, True), (n - 1, False)):
        trial = tiny_config(prepared["data"], tmp_path / "x", prepared["vocab_size"], max_steps=k,
                            seq_schedule=True, batch_ramp=True)
        assert (schedule_words(trial) >= 4321) is reaches
