"""import-hf (the official released GPT-BERT layout) and the generate command. No transformers needed,
except for the test that imports one of our exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptbert.checkpoint import load_checkpoint, save_checkpoint, state_dict_for_save
from gptbert.config import ModelConfig, RunConfig
from gptbert.errors import GPTBertError
from gptbert.cli import build_parser
from gptbert.convert.import_hf import import_hf
from gptbert.pretrained import load
from gptbert.generate import apply_repetition_penalty, generate_ids, generate_text
from gptbert.model import GPTBERT, attention_mask
from gptbert.tokenizer import BOS_ID, train_tokenizer
from helpers import SENTENCES, load_model, write_official_layout



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with one checkpoint (raw weights + different EMA weights)."""
    root = tmp_path_factory.mktemp("hf_import")
    tok = train_tokenizer(SENTENCES * 40, 300, root / "tokenizer.json")
    # max_position 64 (not the default 512): keeps the (P, P) position tables small, and checks that
    # a non-default value travels through the official config.json
    mc = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=48, dropout=0, attention_dropout=0, max_position=64)
    torch.manual_seed(1)
    model = GPTBERT(mc)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    raw = state_dict_for_save(model)
    ema = {k: v + 0.01 * torch.randn_like(v) for k, v in raw.items()}
    rc = RunConfig(model=mc)
    rc.train.tokenizer = str(root / "tokenizer.json")
    save_checkpoint(root / "run", step=3, tokens_seen=999, model_state=raw, ema_state=ema, config=rc.to_dict())
    return {"root": root, "run": root / "run", "tok": root / "tokenizer.json", "mc": mc}


def official_shapes(V, d, L, H_ffn, K, P) -> dict[str, tuple]:
    """Key -> shape of a GPT-BERT checkpoint as the official modeling code (model_extra.py /
    modeling_ltgbert.py) stores it, written down independently of our model code."""
    shapes = {
        "embedding.word_embedding.weight": (V, d),
        "embedding.relative_embedding": (2 * K - 1, d),
        "embedding.relative_layer_norm.weight": (d,),
        "embedding.relative_layer_norm.bias": (d,),
        "classifier.nonlinearity.1.weight": (d, d),
        "classifier.nonlinearity.1.bias": (d,),
        "classifier.nonlinearity.5.weight": (V, d),
        "classifier.nonlinearity.5.bias": (V,),
    }
    for i in range(L):
        a = f"transformer.attention_layers.{i}."
        shapes.update({a + "in_proj_qk.weight": (2 * d, d), a + "in_proj_qk.bias": (2 * d,),
                       a + "in_proj_vg.weight": (2 * d, d), a + "in_proj_vg.bias": (2 * d,),
                       a + "out_proj.weight": (d, d), a + "out_proj.bias": (d,), a + "position_indices": (P, P)})
        shapes[f"transformer.mlp_layers.{i}.mlp.1.weight"] = (2 * H_ffn, d)
        shapes[f"transformer.mlp_layers.{i}.mlp.4.weight"] = (d, H_ffn)
    for b in range(2 * L):
        shapes[f"transformer.dwa_modules.alphas.{b}"] = (b + 2,)
    return shapes


def _logits(model, ids, causal):
    with torch.no_grad():
        return model(ids, attention_mask(torch.zeros_like(ids), causal))


IDS = torch.tensor([[BOS_ID, 30, 31, 40, 120, 7, 250, 16], [BOS_ID, 99, 98, 97, 96, 95, 94, 93]])


def test_official_layout_roundtrip_identical_logits(run, tmp_path):
    ours, _, _ = load_model(run["run"])
    official = write_official_layout(ours, run["tok"], tmp_path / "official")
    mc = run["mc"]
    sd = torch.load(official / "pytorch_model.bin", weights_only=True)
    expected = official_shapes(mc.vocab_size, 32, 2, 48, mc.position_buckets, mc.max_position)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    cfg = json.loads((official / "config.json").read_text())
    assert {cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")} \
        == {32, 2, 4, 48}
    assert cfg["position_bucket_size"] == 32 and cfg["max_position_embeddings"] == 64

    ckpt_dir = import_hf(official, tmp_path / "imported")
    assert ckpt_dir.name == "step_0000000"
    back, ck, which = load_model(tmp_path / "imported")
    assert which == "raw" and ck.ema is None
    assert Path(ck.config["train"]["tokenizer"]).is_file()
    for causal in (True, False):
        assert torch.equal(_logits(back, IDS, causal), _logits(ours, IDS, causal))


def test_import_safetensors_with_prefix_and_official_eps(run, tmp_path):
    """A safetensors file whose keys carry a wrapper prefix, with the released layer_norm_eps=1e-7."""
    import safetensors.torch

    mc = ModelConfig(**{**run["mc"].__dict__, "layer_norm_eps": 1e-7})
    ours = GPTBERT(mc).eval()
    src = write_official_layout(ours, run["tok"], tmp_path / "src", safetensors=True)
    sd = safetensors.torch.load_file(str(src / "model.safetensors"))
    safetensors.torch.save_file({"model." + k: v for k, v in sd.items()}, str(src / "model.safetensors"))
    import_hf(src, tmp_path / "imp")
    back, _, _ = load_model(tmp_path / "imp")
    assert back.config.layer_norm_eps == 1e-7
    assert torch.equal(_logits(back, IDS, True), _logits(ours, IDS, True))


def _official(run, tmp_path, name="bad") -> tuple[Path, dict]:
    ours, _, _ = load_model(run["run"])
    d = write_official_layout(ours, run["tok"], tmp_path / name)
    return d, torch.load(d / "pytorch_model.bin", weights_only=True)


def test_import_errors(run, tmp_path):
    d, sd = _official(run, tmp_path)
    sd["classifier.nonlinearity.5.weight"] = sd["classifier.nonlinearity.5.weight"] + 1
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(GPTBertError, match="untied head"):
        import_hf(d, tmp_path / "o1")

    d, sd = _official(run, tmp_path, "missing")
    del sd["transformer.mlp_layers.1.mlp.4.weight"]
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(GPTBertError, match="missing weight 'transformer.mlp_layers.1.mlp.4.weight'"):
        import_hf(d, tmp_path / "o2")

    d, sd = _official(run, tmp_path, "finetuned")  # a classifier checkpoint: head.*, no LM head
    sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    sd["head.nonlinearity.5.weight"] = torch.zeros(2, 32)
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(GPTBertError, match="no language-model head"):
        import_hf(d, tmp_path / "o3")

    d, _ = _official(run, tmp_path, "vocab")
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] += 8
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GPTBertError, match="tokenizer has .* tokens but the model config expects"):
        import_hf(d, tmp_path / "o4")

    d, _ = _official(run, tmp_path, "noconfig")
    (d / "config.json").write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(GPTBertError, match="missing field 'vocab_size'"):
        import_hf(d, tmp_path / "o5")
    (d / "config.json").unlink()
    with pytest.raises(GPTBertError, match="config.json: missing"):
        import_hf(d, tmp_path / "o5")
    with pytest.raises(GPTBertError, match="does not exist"):
        import_hf(tmp_path / "nothing", tmp_path / "o6")

    d, _ = _official(run, tmp_path, "noweights")
    (d / "pytorch_model.bin").unlink()
    with pytest.raises(GPTBertError, match="no weights found"):
        import_hf(d, tmp_path / "o7")


def test_import_our_own_export(run, tmp_path):
    pytest.importorskip("transformers", minversion="5.0")
    from gptbert.convert.export_hf import export_hf

    out = export_hf(run["run"], tmp_path / "export")
    import_hf(out, tmp_path / "back")
    ours, _, _ = load_model(run["run"])  # EMA weights: what the export holds
    back, _, _ = load_model(tmp_path / "back")
    for causal in (True, False):
        assert torch.equal(_logits(back, IDS, causal), _logits(ours, IDS, causal))


# ---------------------------------------------------------------------------
# generate


def _cli(argv):
    return build_parser().parse_args(argv)


def test_generate_greedy_sampling_and_penalty(run):
    model, _, _ = load_model(run["run"])
    prompt = [BOS_ID, 30, 31, 40]
    g = generate_ids(model, prompt, 10, repetition_penalty=1.0)
    assert len(g) == 10
    # greedy = argmax of our own forward pass, step by step
    ids = list(prompt)
    for _ in range(10):
        ids.append(int(_logits(model, torch.tensor([ids]), True)[0, -1].argmax()))
    assert ids[len(prompt):] == g
    # top-k 1 sampling is greedy; seeded sampling is reproducible; a tiny top-p is greedy
    assert generate_ids(model, prompt, 10, greedy=False, top_k=1, repetition_penalty=1.0, seed=3) == g
    s1 = generate_ids(model, prompt, 10, greedy=False, temperature=2.0, seed=5)
    assert s1 == generate_ids(model, prompt, 10, greedy=False, temperature=2.0, seed=5)
    assert generate_ids(model, prompt, 10, greedy=False, top_p=1e-6, repetition_penalty=1.0) == g
    # suppressed ids never appear; stop ids end the continuation (and are not returned)
    assert g[0] not in generate_ids(model, prompt, 10, repetition_penalty=1.0, suppress_ids=(g[0],))
    assert generate_ids(model, prompt, 10, repetition_penalty=1.0, stop_ids=(g[0],)) == []


def test_repetition_penalty_matches_ctrl_rule():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 1.0, 0.5]]))


def test_generate_cli(run, capsys):
    args = _cli(["generate", str(run["run"]), "The cat", "--max-new-tokens", "8"])
    assert args.repetition_penalty == 1.5 and not args.sample
    args.fn(args)
    out = capsys.readouterr().out
    assert out.startswith("The cat") and out.endswith("\n")
    pre = load(run["run"])
    assert out == "The cat" + generate_text(pre.model, pre.tokenizer, "The cat", max_new_tokens=8) + "\n"

    args = _cli(["generate", str(run["run"]), "The cat", "--sample", "--temperature", "0.7", "--top-k", "20",
                 "--seed", "4", "--raw", "--no-stop"])
    args.fn(args)
    first = capsys.readouterr().out
    args.fn(args)
    assert capsys.readouterr().out == first
    for bad in (["--temperature", "0"], ["--max-new-tokens", "0"], ["--top-p", "1.5"]):
        args = _cli(["generate", str(run["run"]), "x", *bad])
        with pytest.raises(GPTBertError):
            args.fn(args)


def test_import_and_export_cli_parsers(run, tmp_path, capsys):
    args = _cli(["import-hf", str(tmp_path / "none"), str(tmp_path / "out")])
    with pytest.raises(GPTBertError, match="does not exist"):
        args.fn(args)
    args = _cli(["export", str(run["run"]), str(tmp_path / "e"), "--raw", "--mlm-layout", "mntp"])
    assert args.raw and args.mlm_layout == "mntp" and args.fn.__name__ == "cmd_export"
    ours, _, _ = load_model(run["run"])
    d = write_official_layout(ours, run["tok"], tmp_path / "off")
    args = _cli(["import-hf", str(d), str(tmp_path / "run2")])
    args.fn(args)
    assert "step_0000000" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run2").meta["step"] == 0
    # generate works on the imported run
    args = _cli(["generate", str(tmp_path / "run2"), "Two birds", "--max-new-tokens", "3"])
    args.fn(args)
    assert capsys.readouterr().out.startswith("Two birds")
