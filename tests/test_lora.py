"""LoRA: merged export equals unmerged Flax logits; the PEFT adapter loads onto the HF model."""

import jax
import numpy as np
import pytest
import torch

import jaxunlearn as ju
from hf_fixtures import hf_positions, llava_batch, save_hf_llava, tiny_llava_config
from jaxunlearn.train import lora as lora_lib


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = tiny_llava_config(text_layers=2, vision_layers=2)
    path = tmp_path_factory.mktemp("base")
    save_hf_llava(cfg, path)
    model = ju.load_pretrained(path)
    lcfg = lora_lib.LoraConfig(rank=4, alpha=8.0)
    adapter = lora_lib.init_lora(model.params, lcfg, seed=0)
    # B starts at zero; give it values so the adapter changes the model
    adapter = {k: (v + 0.05 * jax.random.normal(jax.random.key(i), v.shape)
                   if k.endswith("lora_b") else v) for i, (k, v) in enumerate(adapter.items())}
    return cfg, path, model, lcfg, adapter


def test_targets_and_merge_unmerge(setup):
    _, _, model, lcfg, adapter = setup
    targets = lora_lib.target_paths(model.params, lcfg)
    assert len(targets) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    merged = lora_lib.merge(model.params, adapter, lcfg)
    back = lora_lib.unmerge(merged, adapter, lcfg)
    for k in model.params:
        np.testing.assert_allclose(np.asarray(back[k]), np.asarray(model.params[k]), atol=1e-6)
    untouched = "vision_tower.encoder.layers.0.mlp.fc1.kernel"
    assert np.array_equal(np.asarray(merged[untouched]), np.asarray(model.params[untouched]))


def test_merged_export_equals_unmerged_logits(setup, tmp_path):
    from transformers import LlavaForConditionalGeneration

    cfg, _, model, lcfg, adapter = setup
    ids, mask, pix = llava_batch(cfg)
    # unmerged: the adapter applied inside the loss path
    from jaxunlearn.modeling.model import forward_logits
    from jaxunlearn.train.finetune import full_params

    inputs = model.host_inputs(ids, mask, pix)
    unmerged = np.asarray(forward_logits(model.graphdef, full_params(adapter, model.params, lcfg),
                                         inputs))
    out = ju.save_pretrained(model.replace(params=lora_lib.merge(model.params, adapter, lcfg)),
                             tmp_path / "merged")
    hf = LlavaForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 pixel_values=torch.tensor(pix),
                 position_ids=torch.tensor(hf_positions(mask))).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(ref - unmerged)[valid].max() <= 1e-4


def test_peft_adapter_loads_onto_hf_model(setup, tmp_path):
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    cfg, path, model, lcfg, adapter = setup
    ids, mask, pix = llava_batch(cfg, seed=3)
    ours = np.asarray(model.replace(params=lora_lib.merge(model.params, adapter, lcfg))
                      .logits(ids, mask, pix))
    from jaxunlearn.checkpoint.peft import save_peft_adapter

    adapter_dir = save_peft_adapter(adapter, lcfg, model, tmp_path / "adapter")
    base = LlavaForConditionalGeneration.from_pretrained(path).eval()
    inputs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  pixel_values=torch.tensor(pix), position_ids=torch.tensor(hf_positions(mask)))
    with torch.no_grad():
        plain = base(**inputs).logits.numpy()  # before PEFT injects its layers in place
        peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
        ref = peft_model(**inputs).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(plain - ours)[valid].max() > 1e-2  # the adapter really changes the model
    assert np.abs(ref - ours)[valid].max() <= 1e-4
