"""The ablation switches travel through the Hugging Face export and import: each switched architecture's
export gives our model's logits (causal and bidirectional), and `import-hf` gives back the same model."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5.0")

from transformers import AutoModelForCausalLM, AutoModelForMaskedLM  # noqa: E402

from gptbert.checkpoint import save_checkpoint, state_dict_for_save  # noqa: E402
from gptbert.config import ModelConfig, RunConfig  # noqa: E402
from gptbert.convert.export_hf import export_hf  # noqa: E402
from gptbert.convert.import_hf import import_hf  # noqa: E402
from gptbert.model import GPTBERT, attention_mask  # noqa: E402
from gptbert.pretrained import load  # noqa: E402
from gptbert.tokenizer import train_tokenizer  # noqa: E402
from helpers import SENTENCES  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("gate,weighting", [(False, True), (True, False), (False, False)])
def test_switched_architectures_export_and_import(tmp_path, gate, weighting):
    tok = train_tokenizer(SENTENCES * 40, 300, tmp_path / "tokenizer.json")
    mc = ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
                     dropout=0, attention_dropout=0, attention_gate=gate, layer_weighting=weighting)
    torch.manual_seed(0)
    model = GPTBERT(mc)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    keys = set(model.state_dict())
    assert any(".in_proj_vg." in k for k in keys) == gate and any(".in_proj_v." in k for k in keys) == (not gate)
    assert any(k.startswith("transformer.dwa_modules") for k in keys) == weighting
    rc = RunConfig(model=mc)
    rc.train.tokenizer = str(tmp_path / "tokenizer.json")
    save_checkpoint(tmp_path / "run", step=1, tokens_seen=1, model_state=state_dict_for_save(model),
                    config=rc.to_dict())
    out = export_hf(tmp_path / "run", tmp_path / "hf", mlm_logits_layout="mntp")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["attention_gate"] is gate and cfg["layer_weighting"] is weighting

    ids = torch.tensor([tok.encode(SENTENCES[0]).ids, tok.encode(SENTENCES[4]).ids[:len(tok.encode(SENTENCES[0]).ids)]])
    seg = torch.zeros_like(ids)
    model.eval()
    with torch.no_grad():
        causal = model(ids, attention_mask(seg, True))
        bidir = model(ids, attention_mask(seg, False))
        hf_c = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()(ids).logits
        hf_m = AutoModelForMaskedLM.from_pretrained(out, trust_remote_code=True).eval()(ids).logits
    torch.testing.assert_close(hf_c, causal, atol=1e-5, rtol=0)
    torch.testing.assert_close(hf_m, bidir, atol=1e-5, rtol=0)

    import_hf(out, tmp_path / "back")
    back = load(tmp_path / "back").model
    assert back.config.attention_gate is gate and back.config.layer_weighting is weighting
    with torch.no_grad():
        torch.testing.assert_close(back(ids, attention_mask(seg, False)), bidir, atol=0, rtol=0)
