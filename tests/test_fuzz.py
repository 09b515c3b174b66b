"""Property-based tests of every reader of user files: only GPTBertError (one line, naming the problem) escapes.

200 cases each in the default tier; `pytest -m slow` runs 10,000 each.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptbert.checkpoint import load_checkpoint, save_checkpoint
from gptbert.config import load_config
from gptbert.corpus import read_documents
from gptbert.errors import GPTBertError
from gptbert.eval.finetune import GLUE_TASKS, read_examples
from gptbert.eval.lambada import load_lambada
from gptbert.eval.minimal_pairs import load_task

FAST, SLOW = 200, 10_000
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
                derandomize=True)

# Text that looks like the files we read: JSON fragments, CSV, YAML, with damage mixed in.
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["sentence_good", "sentence_bad", "Context1", "Target1", "Target2", "Domain", "UID",
                         "prompt", "answer", "label", "text", "premise", "hypothesis", "question", "passage",
                         "model", "train", "lr", "x"]), inner, max_size=5),
    max_leaves=8)
_jsonl = st.lists(st.one_of(_json_value.map(json.dumps), st.text(max_size=40)), max_size=6).map("\n".join)
_bytes = st.one_of(st.binary(max_size=300), _jsonl.map(lambda s: s.encode("utf-8", "surrogatepass")))


def _only_our_error(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except GPTBertError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "Traceback" not in msg, msg
    # anything else escaping fails the test


def _file(data: bytes, name: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    p = d / name
    p.write_bytes(data)
    return p


def _cleanup(p: Path) -> None:
    shutil.rmtree(p.parent, ignore_errors=True)


def _corpus(data: bytes):
    for suffix in (".txt", ".jsonl"):
        p = _file(data, "c" + suffix)
        try:
            _only_our_error(lambda: list(read_documents(p, max_doc_lines=4, max_line_chars=200)))
        finally:
            _cleanup(p)


def _pairs(data: bytes):
    for name in ("task.jsonl", "task.csv", "task.zip"):
        p = _file(data, name)
        try:
            _only_our_error(load_task, p)
        finally:
            _cleanup(p)


def _glue(data: bytes):
    for task in ("rte", "multirc", "wsc"):
        p = _file(data, f"{task}.train.jsonl")
        try:
            _only_our_error(read_examples, p, GLUE_TASKS[task])
        finally:
            _cleanup(p)
    p = _file(data, "lambada.jsonl")
    try:
        _only_our_error(load_lambada, p)
    finally:
        _cleanup(p)


def _config(text: str):
    p = _file(text.encode("utf-8", "surrogatepass"), "c.yaml")
    try:
        _only_our_error(load_config, p)
    finally:
        _cleanup(p)


_CKPT_TEMPLATE: Path | None = None


def _template() -> Path:
    """One small valid checkpoint that each case damages a copy of."""
    global _CKPT_TEMPLATE
    if _CKPT_TEMPLATE is None:
        root = Path(tempfile.mkdtemp(prefix="fuzz-ckpt-"))
        lin = torch.nn.Linear(3, 2)
        save_checkpoint(root / "run", step=1, tokens_seen=8, model_state=lin.state_dict(),
                        ema_state=lin.state_dict(), config={"model": {"vocab_size": 32}}, train_state={"x": 1})
        _CKPT_TEMPLATE = root / "run"
    return _CKPT_TEMPLATE


def _checkpoint(which: int, where: int, data: bytes, truncate: bool):
    src = _template()
    d = Path(tempfile.mkdtemp(prefix="fuzz-run-")) / "run"
    shutil.copytree(src, d)
    step = d / "checkpoints" / "step_0000001"
    files = sorted(p for p in step.iterdir()) + [d / "checkpoints" / "latest"]
    f = files[which % len(files)]
    raw = f.read_bytes()
    pos = where % (len(raw) + 1)
    f.write_bytes(raw[:pos] + data if truncate else raw[:pos] + data + raw[pos + len(data):])
    try:
        _only_our_error(load_checkpoint, d)
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


@pytest.mark.parametrize("n", [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)])
def test_readers_only_raise_our_error(n):
    @settings(max_examples=n, **SETTINGS)
    @given(_bytes)
    def corpus_and_tasks(data):
        _corpus(data)
        _pairs(data)
        _glue(data)

    corpus_and_tasks()


@pytest.mark.parametrize("n", [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)])
def test_config_loader_only_raises_our_error(n):
    yaml_like = st.one_of(
        st.text(max_size=80),
        st.dictionaries(st.sampled_from(["model", "train", "objective", "other"]),
                        st.dictionaries(st.sampled_from(["lr", "max_steps", "vocab_size", "hidden_size", "preset",
                                                         "seq_length", "causal_ratio", "zzz"]),
                                        st.one_of(st.integers(-3, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                                                  st.booleans(), st.none()), max_size=4), max_size=3).map(json.dumps))

    @settings(max_examples=n, **SETTINGS)
    @given(yaml_like)
    def run(text):
        _config(text)

    run()


@pytest.mark.parametrize("n", [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)])
def test_checkpoint_loader_only_raises_our_error(n):
    @settings(max_examples=n, **SETTINGS)
    @given(st.integers(0, 10), st.integers(0, 10**6), st.binary(min_size=0, max_size=16), st.booleans())
    def run(which, where, data, truncate):
        _checkpoint(which, where, data, truncate)

    run()
