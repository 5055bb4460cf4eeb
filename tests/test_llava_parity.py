"""LLaVA-1.5 port vs transformers (fp32): logits, greedy generation, export round trip."""

import numpy as np
import pytest
import torch

import jaxunlearn as ju
from hf_fixtures import hf_positions, llava_batch, save_hf_llava, tiny_llava_config

CONFIGS = {
    "gqa_untied_l-2_default": dict(gqa=True, tied=False, feature_layer=-2, strategy="default"),
    "mha_tied_list_full": dict(gqa=False, tied=True, feature_layer=[-3, -1], strategy="full"),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hf_llava(request, tmp_path_factory):
    cfg = tiny_llava_config(**CONFIGS[request.param])
    path = tmp_path_factory.mktemp(request.param)
    model = save_hf_llava(cfg, path)
    return cfg, model, path


def hf_logits(model, ids, mask, pix):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    pixel_values=torch.tensor(pix),
                    position_ids=torch.tensor(hf_positions(mask)))
    return out.logits.numpy()


def test_logits_parity(hf_llava):
    cfg, hf, path = hf_llava
    ids, mask, pix = llava_batch(cfg)
    model = ju.load_pretrained(path)
    ours = np.asarray(model.logits(ids, mask, pix))
    ref = hf_logits(hf, ids, mask, pix)
    valid = mask.astype(bool)
    err = np.abs(ours - ref)[valid].max()
    assert err <= 1e-4, err


def test_right_padding_matches_left_padding(hf_llava):
    cfg, _, path = hf_llava
    model = ju.load_pretrained(path)
    ids, mask, pix = llava_batch(cfg, left_pad=(4,), batch=1)
    n = int(mask.sum())
    right_ids = np.zeros_like(ids)
    right_mask = np.zeros_like(mask)
    right_ids[0, :n] = ids[0, -n:]
    right_mask[0, :n] = 1
    left = np.asarray(model.logits(ids, mask, pix))[0, -n:]
    right = np.asarray(model.logits(right_ids, right_mask, pix))[0, :n]
    np.testing.assert_allclose(left, right, atol=1e-5)


def test_greedy_generation_parity(hf_llava):
    cfg, hf, path = hf_llava
    ids, mask, pix = llava_batch(cfg, seed=1)
    model = ju.load_pretrained(path)
    ours = ju.generate(model, ids, mask, pix, max_new_tokens=16, eos_token_id=2, pad_token_id=0)
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          pixel_values=torch.tensor(pix), max_new_tokens=16, do_sample=False,
                          eos_token_id=2, pad_token_id=0)
    ref = ref[:, ids.shape[1]:].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)
    # max_new_tokens is a runtime bound inside one cache capacity: a shorter request reuses
    # the program and stops exactly at its bound (no EOS, so every row runs to it)
    from jax import default_backend

    from jaxunlearn.modeling.generate import _compiled_generate

    long = ju.generate(model, ids, mask, pix, max_new_tokens=16, eos_token_id=[], pad_token_id=0)
    programs = _compiled_generate(default_backend())._cache_size()
    short = ju.generate(model, ids, mask, pix, max_new_tokens=5, eos_token_id=[], pad_token_id=0)
    assert _compiled_generate(default_backend())._cache_size() == programs
    assert long.shape == (ids.shape[0], 16) and short.shape == (ids.shape[0], 5)
    np.testing.assert_array_equal(short, long[:, :5])


def test_export_round_trip_and_legacy_layout(hf_llava, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from jaxunlearn.modeling.llava import LLAVA_LEGACY_EXPORT

    cfg, _, path = hf_llava
    ids, mask, pix = llava_batch(cfg, seed=2)
    model = ju.load_pretrained(path)
    ours = np.asarray(model.logits(ids, mask, pix))
    out = ju.save_pretrained(model, tmp_path / "export", max_shard_bytes=60_000)
    assert (out / "model.safetensors.index.json").is_file()  # sharded above the threshold
    reloaded, info = LlavaForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref = hf_logits(reloaded.eval(), ids, mask, pix)
    valid = mask.astype(bool)
    assert np.abs(ref - ours)[valid].max() <= 1e-5
    legacy = ju.save_pretrained(model, tmp_path / "legacy", key_renames=LLAVA_LEGACY_EXPORT)
    from safetensors import safe_open
    with safe_open(str(legacy / "model.safetensors"), "np") as f:
        keys = list(f.keys())
    assert any(k.startswith("language_model.model.") for k in keys)
    assert any(k.startswith("vision_tower.vision_model.") for k in keys)
    again = ju.load_pretrained(legacy)
    np.testing.assert_array_equal(np.asarray(again.logits(ids, mask, pix)), ours)
