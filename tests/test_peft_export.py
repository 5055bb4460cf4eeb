"""PEFT export for every family: a LoRA on the LLM linears with random non-zero A and B,
written by `save_peft_adapter`, loads with `peft.PeftModel.from_pretrained` onto the HF model
with every adapter tensor matched (no missing, no unexpected), and the PEFT model's logits
equal the Flax model with the adapter merged (<= 1e-4)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import jaxunlearn as ju
from hf_fixtures import hf_positions, llava_batch, save_hf_llava, tiny_llava_config
from jaxunlearn.checkpoint.peft import save_peft_adapter
from jaxunlearn.train import lora as lora_lib

FAMILIES = ["llava", "llava_onevision", "qwen2_vl", "qwen2_5_vl"]


def _build(family: str, path):
    """(HF model, our inputs as (ids, mask, pix, extra), HF forward kwargs)."""
    if family == "llava":
        cfg = tiny_llava_config(text_layers=2, vision_layers=2)
        hf = save_hf_llava(cfg, path)
        ids, mask, pix = llava_batch(cfg, seed=3)
        kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                      pixel_values=torch.tensor(pix), position_ids=torch.tensor(hf_positions(mask)))
        return hf, (ids, mask, pix, {}), kwargs
    if family == "llava_onevision":
        from test_onevision_parity import SIZES, batch, tiny_config
        from transformers import LlavaOnevisionForConditionalGeneration

        cfg = tiny_config(layer=-1, ratio="anyres_max_9", tied=False, head=False)
        torch.manual_seed(0)
        hf = LlavaOnevisionForConditionalGeneration(cfg).eval()
        hf.save_pretrained(path)
        ids, mask, pix, sizes, _ = batch(cfg, [[SIZES[0]], [SIZES[1]]], left_pad=(0, 4))
        kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                      pixel_values=torch.tensor(pix), image_sizes=torch.tensor(sizes),
                      position_ids=torch.tensor(hf_positions(mask)))
        return hf, (ids, mask, pix, {"image_sizes": sizes}), kwargs
    from test_qwen_vl_parity import batch, hf_kwargs, save_hf

    hf = save_hf(family, path)
    ids, mask, pix, grid = batch()
    return hf, (ids, mask, pix, {"image_grid_thw": grid}), hf_kwargs(ids, mask, pix, grid)


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_adapter_loads_and_matches(family, tmp_path):
    from peft import PeftModel

    hf, (ids, mask, pix, extra), kwargs = _build(family, tmp_path / "base")
    model = ju.load_pretrained(tmp_path / "base")
    assert model.hf_config["model_type"] == family
    lcfg = lora_lib.LoraConfig(rank=4, alpha=8.0, dropout=0.05)  # dropout: training only
    adapter = lora_lib.init_lora(model.params, lcfg, seed=0)
    adapter = {k: (v + 0.05 * jax.random.normal(jax.random.key(i), v.shape)
                   if k.endswith("lora_b") else v) for i, (k, v) in enumerate(adapter.items())}
    merged = model.replace(params=lora_lib.merge(model.params, adapter, lcfg))
    ours = np.asarray(merged.logits(ids, mask, pix, **extra))

    out = save_peft_adapter(adapter, lcfg, model, tmp_path / "adapter")
    written = load_file(str(out / "adapter_model.safetensors"))
    assert len(written) == len(adapter)
    assert json.loads((out / "adapter_config.json").read_text())["lora_dropout"] == 0.05
    with torch.no_grad():
        plain = hf(**kwargs).logits.numpy()  # before PEFT injects its layers in place
        peft_model = PeftModel.from_pretrained(hf, out).eval()
        ref = peft_model(**kwargs).logits.numpy()
    # every injected LoRA tensor comes from the file and every file tensor was used
    state = {k: v for k, v in peft_model.state_dict().items() if ".lora_" in k}
    expected = {k.replace(".weight", ".default.weight"): v for k, v in written.items()}
    assert sorted(state) == sorted(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(state[k].numpy(), v)
    valid = mask.astype(bool)
    assert np.abs(plain - ours)[valid].max() > 1e-2  # the adapter really changes the model
    err = np.abs(ref - ours)[valid].max()
    assert err <= 1e-4, err


def test_unknown_target_is_an_error(tmp_path):
    cfg = tiny_llava_config(text_layers=1, vision_layers=1)
    save_hf_llava(cfg, tmp_path / "base")
    model = ju.load_pretrained(tmp_path / "base")
    lcfg = lora_lib.LoraConfig(rank=2, alpha=2.0)
    adapter = {"nowhere.proj.lora_a": np.zeros((4, 2)), "nowhere.proj.lora_b": np.zeros((2, 4))}
    with pytest.raises(ValueError, match="no HF module name"):
        save_peft_adapter(adapter, lcfg, model, tmp_path / "adapter")
    with pytest.raises(ValueError, match="no `\\*.lora_a` arrays"):
        save_peft_adapter({}, lcfg, model, tmp_path / "adapter")
