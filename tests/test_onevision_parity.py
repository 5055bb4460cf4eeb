"""LLaVA-OneVision port vs transformers (fp32): AnyRes logits, greedy generation, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jaxunlearn as ju
from jaxunlearn.modeling import llava_onevision as ov

IMG, VID = 127, 126
PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56], [28, 84]]
CONFIGS = {
    # interpolation path (anyres_max_1), last layer, head kept, untied
    "max1_last_untied": dict(layer=-1, ratio="anyres_max_1", tied=False, head=True),
    # no interpolation, two feature layers, no head, tied embeddings
    "max9_layers_tied": dict(layer=[-3, -1], ratio="anyres_max_9", tied=True, head=False),
}
# (height, width) of the images: wide, tall, square-ish, tiny
SIZES = [(30, 90), (61, 29), (50, 47), (9, 13)]


def tiny_config(layer, ratio: str, tied: bool, head: bool):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4, image_size=28, patch_size=14,
                                vision_use_head=head)
    text = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                       max_position_embeddings=512, rope_theta=5000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=tied, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                                image_token_index=IMG, video_token_index=VID,
                                vision_feature_layer=layer, vision_feature_select_strategy="full",
                                image_grid_pinpoints=PINPOINTS, vision_aspect_ratio=ratio,
                                tie_word_embeddings=tied)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hf_ov(request, tmp_path_factory):
    from transformers import LlavaOnevisionForConditionalGeneration

    cfg = tiny_config(**CONFIGS[request.param])
    path = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # HF initialises norms to ones / zeros: perturb them
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return cfg, model, path, ju.load_pretrained(path)


def batch(config, images_per_row, seed: int = 0, left_pad=(0, 5, 2), length: int | None = None):
    """Left-padded rows, each `[bos, t, t, <image>*n, ..., t, t]` per image, random pixels
    padded to the batch's largest crop count (as the HF processor does)."""
    rng = np.random.default_rng(seed)
    oc = ov.OneVisionConfig.from_hf(config.to_dict())
    per_sample = [len(r) for r in images_per_row]
    multi = [n != 1 for n in per_sample for _ in range(n)]
    sizes = [s for r in images_per_row for s in r]
    rows = []
    k = 0
    for r in images_per_row:
        row = [1, *rng.integers(3, VID, size=2)]
        for size in r:
            row += [IMG] * ov.num_image_tokens(oc, size, multi[k]) + list(rng.integers(3, VID, 2))
            k += 1
        rows.append(row)
    length = length or max(len(r) for r in rows) + max(left_pad)
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for b, row in enumerate(rows):
        pad = length - len(row)
        assert pad >= left_pad[b % len(left_pad)]
        ids[b, pad:], mask[b, pad:] = row, 1
    counts = [ov.num_crops(oc, s, m) for s, m in zip(sizes, multi)]
    pix = np.zeros((len(sizes), max(counts), 3, 28, 28), np.float32)
    for i, c in enumerate(counts):
        pix[i, :c] = rng.normal(size=(c, 3, 28, 28))
    return ids, mask, pix, np.asarray(sizes, np.int64), np.asarray(per_sample, np.int64)


def hf_logits(model, ids, mask, pix, sizes, per_sample=None):
    pos = np.where(mask == 1, np.cumsum(mask, -1) - 1, 0)
    extra = {} if per_sample is None else {"batch_num_images": torch.tensor(per_sample)}
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    pixel_values=torch.tensor(pix), image_sizes=torch.tensor(sizes),
                    position_ids=torch.tensor(pos), **extra)
    return out.logits.numpy()


def test_logits_parity_mixed_aspect_ratios(hf_ov):
    cfg, hf, _, model = hf_ov
    ids, mask, pix, sizes, _ = batch(cfg, [[SIZES[0]], [SIZES[1]], [SIZES[2]]])
    ours = np.asarray(model.logits(ids, mask, pix, image_sizes=sizes))
    ref = hf_logits(hf, ids, mask, pix, sizes)
    err = np.abs(ours - ref)[mask.astype(bool)].max()
    assert err <= 1e-4, err


def test_multi_image_rows_and_static_shapes(hf_ov):
    """batch_num_images (multi-image rows use the base crop + newline); the jitted forward
    compiles once for the same (batch, length, n_images) whatever the image sizes."""
    from jaxunlearn.modeling.model import _jit_logits

    cfg, hf, _, model = hf_ov
    ids, mask, pix, sizes, per = batch(cfg, [[SIZES[3]], [SIZES[0], SIZES[1]]], seed=3,
                                       left_pad=(3, 0), length=64)
    ours = np.asarray(model.logits(ids, mask, pix, image_sizes=sizes, batch_num_images=per))
    ref = hf_logits(hf, ids, mask, pix, sizes, per)
    assert np.abs(ours - ref)[mask.astype(bool)].max() <= 1e-4
    before = _jit_logits._cache_size()
    # other sizes (one so thin that unpadding leaves no grid row, as HF allows): same compile
    ids2, mask2, pix2, sizes2, per2 = batch(cfg, [[(1, 200)], [SIZES[1], SIZES[3]]], seed=4,
                                            left_pad=(3, 0), length=64)
    ours2 = np.asarray(model.logits(ids2, mask2, pix2, image_sizes=sizes2, batch_num_images=per2))
    assert _jit_logits._cache_size() == before
    ref2 = hf_logits(hf, ids2, mask2, pix2, sizes2, per2)
    assert np.abs(ours2 - ref2)[mask2.astype(bool)].max() <= 1e-4


def test_greedy_generation_parity(hf_ov):
    cfg, hf, _, model = hf_ov
    ids, mask, pix, sizes, _ = batch(cfg, [[SIZES[1]], [SIZES[0]]], seed=1, left_pad=(0, 4))
    ours = ju.generate(model, ids, mask, pix, image_sizes=sizes, max_new_tokens=16,
                       eos_token_id=2, pad_token_id=0)
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          pixel_values=torch.tensor(pix), image_sizes=torch.tensor(sizes),
                          max_new_tokens=16, do_sample=False, eos_token_id=2, pad_token_id=0)
    ref = ref[:, ids.shape[1]:].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


def test_export_round_trip_and_legacy_layout(hf_ov, tmp_path):
    from safetensors import safe_open
    from transformers import LlavaOnevisionForConditionalGeneration

    cfg, _, _, model = hf_ov
    ids, mask, pix, sizes, _ = batch(cfg, [[SIZES[2]], [SIZES[0]]], seed=2, left_pad=(0, 3))
    ours = np.asarray(model.logits(ids, mask, pix, image_sizes=sizes))
    out = ju.save_pretrained(model, tmp_path / "export", max_shard_bytes=60_000)
    assert (out / "model.safetensors.index.json").is_file()
    reloaded, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref = hf_logits(reloaded.eval(), ids, mask, pix, sizes)
    assert np.abs(ref - ours)[mask.astype(bool)].max() <= 1e-5
    legacy = ju.save_pretrained(model, tmp_path / "legacy", key_renames=ov.ONEVISION_LEGACY_EXPORT)
    with safe_open(str(legacy / "model.safetensors"), "np") as f:
        keys = list(f.keys())
    assert any(k.startswith("vision_tower.vision_model.encoder.") for k in keys)
    assert "image_newline" in keys
    again = ju.load_pretrained(legacy)
    np.testing.assert_array_equal(np.asarray(again.logits(ids, mask, pix, image_sizes=sizes)), ours)


def test_siglip_tower_and_head(hf_ov):
    """The tower's post-layernorm output and (when present) the attention-pooling head."""
    cfg, hf, _, model = hf_ov
    pix = np.random.default_rng(5).normal(size=(2, 3, 28, 28)).astype(np.float32)
    with torch.no_grad():
        out = hf.model.vision_tower(torch.tensor(pix))
    last, pooled = model.module().vision_tower(pix)
    np.testing.assert_allclose(np.asarray(last), out.last_hidden_state.numpy(), atol=1e-5)
    if cfg.vision_config.vision_use_head:
        np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=1e-5)
    else:
        assert pooled is None


def test_token_mismatch_is_a_clear_error(hf_ov):
    cfg, _, _, model = hf_ov
    ids, mask, pix, sizes, _ = batch(cfg, [[SIZES[0]]], left_pad=(2,))
    ids[0, np.flatnonzero(ids[0] == IMG)[0]] = 5
    with pytest.raises(ValueError, match="image tokens do not match"):
        model.logits(ids, mask, pix, image_sizes=sizes)
    with pytest.raises(ValueError, match="needs image_sizes"):
        model.logits(ids, mask, pix)
