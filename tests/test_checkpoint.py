"""Checkpoint save/load round trips, tied weights, pruning, corruption and crash safety."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

import gptbert.checkpoint as ckpt
from gptbert.checkpoint import (
    load_checkpoint,
    load_model_weights,
    resolve_checkpoint,
    save_checkpoint,
    state_dict_for_save,
)
from gptbert.errors import GPTBertError
from gptbert.optim import EMA, Lamb, param_groups


class TiedLM(nn.Module):
    def __init__(self, vocab: int = 11, dim: int = 4, tie: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        if tie:
            self.head.weight = self.emb.weight
        self.register_buffer("scale", torch.tensor([2.0]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(ids))) * self.scale


CONFIG = {"model": {"vocab_size": 11, "hidden": 4}, "train": {"lr": 0.01, "betas": (0.9, 0.98)}}


def trained_setup(seed: int = 0) -> tuple[TiedLM, Lamb, EMA]:
    torch.manual_seed(seed)
    model = TiedLM()
    opt = Lamb(param_groups(model, 0.1), lr=0.01)
    ema = EMA(model, decay=0.9)
    for _ in range(2):
        model(torch.tensor([[1, 2, 3]])).logsumexp(-1).sum().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)
    return model, opt, ema


def save(run_dir, step: int, model: nn.Module, opt=None, ema=None, **kw):
    train_state = {"optimizer": opt.state_dict() if opt else {}, "extra": {"epoch": 3}}
    return save_checkpoint(
        run_dir,
        step=step,
        model_state=model.state_dict(),
        ema_state=ema.state_dict() if ema else None,
        train_state=train_state,
        config=CONFIG,
        tokens_seen=step * 100,
        **kw,
    )


def test_round_trip(tmp_path):
    model, opt, ema = trained_setup()
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    path = save_checkpoint(
        tmp_path, step=42, model_state=model.state_dict(), ema_state=ema.state_dict(),
        train_state={"optimizer": opt.state_dict(), "rng": rng}, config=CONFIG, tokens_seen=4200,
    )
    assert path == tmp_path / "checkpoints" / "step_0000042"
    assert sorted(os.listdir(path)) == sorted(
        ["model.safetensors", "ema.safetensors", "state.pt", "config.yaml", "meta.json"]
    )

    loaded = load_checkpoint(tmp_path)
    assert loaded.path == path
    for name, t in model.state_dict().items():
        if name != "head.weight":  # tied alias, stored once
            assert torch.equal(loaded.model[name], t), name
    for name, t in ema.state_dict().items():
        assert torch.equal(loaded.ema[name], t), name
    assert loaded.meta["step"] == 42 and loaded.meta["tokens_seen"] == 4200
    assert set(loaded.meta["files"]) == {"model.safetensors", "ema.safetensors", "state.pt", "config.yaml"}
    assert loaded.config == {"model": {"vocab_size": 11, "hidden": 4}, "train": {"lr": 0.01, "betas": [0.9, 0.98]}}
    state = loaded.state
    assert state["step"] == 42 and state["tokens_seen"] == 4200
    assert torch.equal(state["rng"]["torch"], rng["torch"])
    assert state["rng"]["python"] == rng["python"]

    # Resuming: model + optimizer + EMA restored give the same next step.
    model2 = TiedLM(tie=True)
    load_model_weights(model2, loaded.model, path / "model.safetensors")
    opt2 = Lamb(param_groups(model2, 0.1), lr=0.01)
    opt2.load_state_dict(state["optimizer"])
    ema2 = EMA(model2, decay=0.9)
    ema2.load_state_dict(loaded.ema)
    for m, o, e in ((model, opt, ema), (model2, opt2, ema2)):
        m(torch.tensor([[4, 5]])).sum().backward()
        o.step()
        e.update(m)
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), n
    assert all(torch.equal(ema.shadow[k], ema2.shadow[k]) for k in ema.shadow)


def test_tied_weights_saved_once_and_restored_tied(tmp_path):
    model, _, _ = trained_setup()
    assert list(state_dict_for_save(model)) == ["scale", "emb.weight", "norm.weight", "norm.bias"]  # head.weight dropped
    path = save(tmp_path, 1, model)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["emb.weight", "norm.bias", "norm.weight", "scale"]

    fresh = TiedLM()
    load_model_weights(fresh, load_checkpoint(path).model, path / "model.safetensors")
    assert fresh.head.weight is fresh.emb.weight
    assert torch.equal(fresh.head.weight, model.emb.weight)

    # An untied model really needs head.weight: the alias rule must not hide it.
    with pytest.raises(GPTBertError, match=r"model\.safetensors: missing key 'head\.weight'"):
        load_model_weights(TiedLM(tie=False), load_checkpoint(path).model, path / "model.safetensors")


def test_shared_storage_views_and_wrapper_prefixes():
    fused = torch.arange(6.0).reshape(3, 2)
    state = {"module._orig_mod.q": fused[0], "module._orig_mod.k": fused[1], "module.v": fused[2].to(torch.bfloat16)}
    out = state_dict_for_save(state)
    assert list(out) == ["q", "k", "v"]
    assert out["v"].dtype == torch.float32
    assert out["q"].untyped_storage().data_ptr() != out["k"].untyped_storage().data_ptr()
    assert torch.equal(out["k"], torch.tensor([2.0, 3.0]))


def test_shape_mismatch_names_file_and_key(tmp_path):
    model, _, _ = trained_setup()
    path = save(tmp_path, 1, model)
    weights = load_checkpoint(path).model
    with pytest.raises(GPTBertError) as err:
        load_model_weights(TiedLM(vocab=13), weights, path / "model.safetensors")
    msg = str(err.value)
    assert "model.safetensors" in msg and "'emb.weight'" in msg and "(11, 4)" in msg and "(13, 4)" in msg
    assert "\n" not in msg


def test_latest_pointer_and_resolve(tmp_path):
    model, _, _ = trained_setup()
    save(tmp_path, 10, model)
    p20 = save(tmp_path, 20, model)
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_0000020"
    assert resolve_checkpoint(tmp_path) == p20
    assert resolve_checkpoint(root) == p20
    assert resolve_checkpoint(root / "step_0000010") == root / "step_0000010"
    assert load_checkpoint(root / "step_0000010").meta["step"] == 10
    assert not [p for p in os.listdir(root) if ".tmp-" in p]


def test_keep_last_prunes_oldest(tmp_path):
    model, _, _ = trained_setup()
    for step in (1, 2, 3, 4, 5):
        save(tmp_path, step, model, keep_last=2)
    root = tmp_path / "checkpoints"
    assert sorted(p for p in os.listdir(root) if p.startswith("step_")) == ["step_0000004", "step_0000005"]
    # Saving an older step keeps the one just written even though it is not among the newest.
    save(tmp_path, 3, model, keep_last=1)
    assert (root / "step_0000003").is_dir() and (root / "latest").read_text().strip() == "step_0000003"
    save(tmp_path, 6, model, keep_last=None)
    assert len([p for p in os.listdir(root) if p.startswith("step_")]) == 3


def test_resave_same_step_replaces_it(tmp_path):
    model, _, _ = trained_setup()
    save(tmp_path, 7, model)
    with torch.no_grad():
        model.norm.weight.fill_(3.0)
    save(tmp_path, 7, model)
    assert torch.all(load_checkpoint(tmp_path).model["norm.weight"] == 3.0)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_0000007"]


def test_flipped_byte_is_reported_as_corrupted(tmp_path):
    model, _, _ = trained_setup()
    path = save(tmp_path, 1, model)
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data, the header stays valid
    f.write_bytes(bytes(data))
    with pytest.raises(GPTBertError, match=r"model\.safetensors: is corrupted \(checksum mismatch\)"):
        load_checkpoint(tmp_path)


def test_truncated_files(tmp_path):
    model, _, ema = trained_setup()
    path = save(tmp_path, 1, model, ema=ema)
    f = path / "ema.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(GPTBertError, match=r"ema\.safetensors: is truncated or not a safetensors file"):
        load_checkpoint(tmp_path)

    path = save(tmp_path, 2, model)
    s = path / "state.pt"
    s.write_bytes(s.read_bytes()[:100])
    with pytest.raises(GPTBertError, match=r"state\.pt: is corrupted"):
        load_checkpoint(tmp_path)


def test_missing_things(tmp_path):
    with pytest.raises(GPTBertError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(GPTBertError, match="no checkpoint found"):
        load_checkpoint(tmp_path)
    model, _, _ = trained_setup()
    path = save(tmp_path, 1, model)
    (path / "config.yaml").unlink()
    with pytest.raises(GPTBertError, match=r"config\.yaml: missing"):
        load_checkpoint(path)
    (path / "meta.json").unlink()
    with pytest.raises(GPTBertError, match=r"meta\.json: missing"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "target, fail_on_call",
    [
        ("_save_safetensors", 2),  # while writing ema.safetensors
        ("_save_torch", 1),  # while writing state.pt
        ("_write_text_synced", 2),  # while writing meta.json
        ("_move_into_place", 1),  # right before the rename
        ("_atomic_write_text", 1),  # new dir complete, `latest` not yet updated
    ],
)
def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch, target, fail_on_call):
    model, opt, ema = trained_setup()
    good = save(tmp_path, 10, model, opt, ema)
    good_weights = load_checkpoint(good).model

    real = getattr(ckpt, target)
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, target, crashing)
    with torch.no_grad():
        model.norm.weight.fill_(5.0)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 20, model, opt, ema)
    monkeypatch.undo()

    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_0000010"
    loaded = load_checkpoint(tmp_path)
    assert loaded.path == good
    assert all(torch.equal(loaded.model[k], v) for k, v in good_weights.items())
    assert not [p for p in os.listdir(root) if ".tmp-" in p]
    if target != "_atomic_write_text":
        assert not (root / "step_0000020").exists()


def test_killed_save_leftovers_are_never_valid(tmp_path):
    model, _, _ = trained_setup()
    good = save(tmp_path, 10, model)
    root = tmp_path / "checkpoints"
    # A save killed by SIGKILL leaves its temp dir; a copied dir may lack meta.json.
    tmp_dir = root / "step_0000030.tmp-999999999"
    tmp_dir.mkdir()
    (tmp_dir / "model.safetensors").write_bytes(b"partial")
    incomplete = root / "step_0000040"
    incomplete.mkdir()
    (incomplete / "model.safetensors").write_bytes(b"partial")

    assert resolve_checkpoint(tmp_path) == good
    (root / "latest").write_text("step_0000099\n")  # dangling pointer: newest complete dir instead
    assert resolve_checkpoint(tmp_path) == good
    (root / "latest").unlink()  # even without the pointer, only complete dirs are candidates
    assert resolve_checkpoint(tmp_path) == good
    with pytest.raises(GPTBertError, match="interrupted save"):
        load_checkpoint(tmp_dir)
    with pytest.raises(GPTBertError, match=r"step_0000040/meta\.json: missing"):
        load_checkpoint(incomplete)

    # The next save removes the dead process's temp dir.
    save(tmp_path, 50, model, keep_last=None)
    assert not tmp_dir.exists()


def test_meta_lists_checksums(tmp_path):
    model, _, _ = trained_setup()
    path = save(tmp_path, 3, model)
    meta = json.loads((path / "meta.json").read_text())
    assert set(meta) == {"step", "tokens_seen", "time", "files"}
    assert meta["files"]["model.safetensors"] == ckpt._sha256(path / "model.safetensors")


def test_arrays_are_files_of_their_own(tmp_path):
    """Large state arrays (the mask counts) are written as <name>.npy, checksummed, and come back
    as read-only memory maps with the same values; a flipped byte in one is reported."""
    model, _, _ = trained_setup()
    counts = (np.arange(100_003) * 7919 % 65536).astype(np.uint16)
    path = save(tmp_path, 3, model, arrays={"mask_counts": counts})
    assert (path / "mask_counts.npy").stat().st_size == counts.nbytes + 128  # the .npy header, then the raw bytes
    loaded = load_checkpoint(path)
    assert "mask_counts.npy" in loaded.meta["files"]
    a = loaded.arrays["mask_counts"]
    assert isinstance(a, np.memmap) and not a.flags.writeable and a.dtype == np.uint16
    assert np.array_equal(a, counts)
    with pytest.raises(ValueError, match="lower-case identifiers"):
        save(tmp_path, 4, model, arrays={"../x": counts})
    del a, loaded
    with open(path / "mask_counts.npy", "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(GPTBertError, match=r"mask_counts\.npy.*checksum"):
        load_checkpoint(path)
