"""Shared fixtures: a small synthetic corpus, its tokenizer and prepared shards."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (`-n 2`, the README's test command) each worker runs on one thread, and so do
    # the processes its tests start: two single-threaded workers on two cores, instead of OpenMP
    # threads of two processes spinning against each other (which slows both by far more than 2x).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_SUBJECTS = ["the dog", "a cat", "my sister", "the old man", "two birds", "the teacher", "we", "you", "they"]
_VERBS = ["saw", "liked", "found", "painted", "chased", "wanted", "carried", "forgot"]
_OBJECTS = ["the ball", "a red kite", "the small house", "some bread", "the letter", "a green frog"]
_TAILS = ["", " yesterday", " in the garden", " after lunch", " again", " near the river"]


def synthetic_lines(n: int, seed: int = 0) -> list[str]:
    """Simple English-like sentences written for these tests (no external text)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)} ."
        lines.append(s[0].upper() + s[1:])
    return lines


def write_corpus(folder: Path, n_lines: int = 6000, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = synthetic_lines(n_lines, seed)
    # Dialogue-style file and a plain file, with blank lines between short "documents".
    with open(folder / "stories.txt", "w", encoding="utf-8") as f:
        for i, line in enumerate(lines[: n_lines // 2]):
            f.write(line + ("\n\n" if i % 7 == 6 else "\n"))
    with open(folder / "dialogue.train", "w", encoding="utf-8") as f:
        for i, line in enumerate(lines[n_lines // 2:]):
            f.write(("A:\t" if i % 2 == 0 else "B:\t") + line + "\n")
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads that
    wait on each other make tiny-model tests ~10x slower; the setting is restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> dict:
    """A synthetic corpus with a 400-token tokenizer, prepared into shards."""
    from gptbert.corpus import find_corpus_files, prepare_corpus, read_documents
    from gptbert.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("prepared")
    corpus = write_corpus(root / "corpus")
    tok = train_tokenizer((d for f in find_corpus_files(corpus) for d in read_documents(f)), 400, root / "tokenizer.json")
    stats = prepare_corpus(corpus, root / "tokenizer.json", root / "data", val_fraction=0.05, seed=0)
    return dict(root=root, corpus=corpus, tokenizer=root / "tokenizer.json", data=root / "data",
                vocab_size=tok.get_vocab_size(), stats=stats)


def tiny_config(data: Path, out: Path, vocab_size: int, **train_overrides):
    """A 2-layer GPT-BERT run config for tests (fp32, no dropout, no workers)."""
    from gptbert.config import ModelConfig, ObjectiveConfig, RunConfig, TrainConfig

    train = dict(data=str(data), out_dir=str(out), max_steps=20, global_batch_tokens=16 * 32, micro_batch_size=8,
                 seq_length=32, lr=0.01, precision="fp32", num_workers=0, log_every=1, eval_rows=16,
                 progress=False, tensorboard=False, ema_decay=0.9)
    train.update(train_overrides)
    cfg = RunConfig(
        model=ModelConfig(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
                          dropout=0.0, attention_dropout=0.0),
        objective=ObjectiveConfig(causal_ratio=0.25),
        train=TrainConfig(**train),
    )
    return cfg.validate()


# ---------------------------------------------------------------------------
# The fast tier: `python -m pytest -m unit` (well under a minute on 2 cores, run alone). A test is a
# unit test when its module is listed here and it is not one of the heavier tests below; everything
# else (training runs, subprocesses, wheel builds, transformers exports, fuzzing) is in the full suite.

UNIT_MODULES = {
    "test_layers", "test_objectives", "test_optim", "test_precision", "test_model", "test_eval_scoring",
    "test_eval_minimal_pairs", "test_eval_lambada", "test_checkpoint", "test_tokenizer", "test_corpus",
    "test_words", "test_words_seen", "test_finetune", "test_eval_cli", "test_cli", "test_data", "test_config",
    "test_memory",
}
NOT_UNIT = (
    "test_parameter_counts", "test_metrics_equal_scikit_learn", "test_finetune_end_to_end", "real_corpus",
    "real_rte", "test_bf16_and_fp32", "trained_checkpoint", "test_real_corpus_counts", "test_no_traceback",
    "test_corrupted_checkpoint_on_resume",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in UNIT_MODULES and not any(k in item.nodeid for k in NOT_UNIT) and "slow" not in item.keywords:
            item.add_marker(pytest.mark.unit)
