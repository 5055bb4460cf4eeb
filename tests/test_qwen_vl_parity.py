"""Qwen2-VL / Qwen2.5-VL ports vs transformers (fp32): logits on a batch with two image sizes
and left padding, greedy generation, export round trip, legacy layout, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jaxunlearn as ju

IMG, VID, VSTART, VEND = 120, 121, 122, 123
PATCH, MERGE, TPATCH = 4, 2, 2
# (t, h, w) in patches: image A 8x12 patches (4x6 merged = 24 tokens), image B 6x4 (6 tokens)
GRID_A, GRID_B = (1, 8, 12), (1, 6, 4)


def tiny_config(model_type: str):
    text = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [2, 3, 3]})
    common = dict(image_token_id=IMG, video_token_id=VID, vision_start_token_id=VSTART,
                  vision_end_token_id=VEND, tie_word_embeddings=False)
    if model_type == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2,
                      patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TPATCH,
                      rope_parameters={"rope_type": "axial", "rope_theta": 1000.0})
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    from transformers import Qwen2_5_VLConfig

    # window 16 px = 2x2 merged tokens: image A splits into 2x3 windows, B into 2x1 (uneven);
    # block 1 uses full attention, blocks 0 and 2 window attention
    vision = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64,
                  patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TPATCH,
                  window_size=16, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)


def save_hf(model_type: str, out_dir, seed: int = 0):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(tiny_config(model_type)).eval()
    with torch.no_grad():  # HF norms start at ones / zeros: perturb so their weights matter
        for name, p in model.named_parameters():
            if "norm" in name or "ln_q" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out_dir)
    return model


def batch(seed: int = 0, length: int = 48, rows=((GRID_A,), (GRID_B,), (GRID_B, GRID_A))):
    """Default rows: image A; image B with more left padding; images B and A."""
    rng = np.random.default_rng(seed)
    pads = [10, 24, 0]
    ids = np.zeros((3, length), np.int64)
    mask = np.zeros((3, length), np.int64)
    grids = []
    for r, (images, pad) in enumerate(zip(rows, pads)):
        seq = [1]
        for g in images:
            n = g[0] * g[1] * g[2] // MERGE ** 2
            seq += [VSTART] + [IMG] * n + [VEND] + list(rng.integers(3, 100, size=2))
            grids.append(g)
        seq += list(rng.integers(3, 100, size=length - pad - len(seq)))
        assert len(seq) == length - pad
        ids[r, pad:] = seq
        mask[r, pad:] = 1
    grid = np.asarray(grids, np.int64)
    n_patches = int(np.prod(grid, axis=1).sum())
    pix = rng.normal(size=(n_patches, 3 * TPATCH * PATCH * PATCH)).astype(np.float32)
    return ids, mask, pix, grid


def hf_kwargs(ids, mask, pix, grid):
    return dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                pixel_values=torch.tensor(pix), image_grid_thw=torch.tensor(grid),
                mm_token_type_ids=torch.tensor((ids == IMG).astype(np.int64)))


def hf_logits(model, ids, mask, pix, grid):
    with torch.no_grad():
        return model(**hf_kwargs(ids, mask, pix, grid)).logits.numpy()


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def hf_qwen(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model = save_hf(request.param, path)
    return request.param, model, path, ju.load_pretrained(path)


def test_logits_parity(hf_qwen):
    _, hf, _, model = hf_qwen
    ids, mask, pix, grid = batch()
    ours = np.asarray(model.logits(ids, mask, pix, image_grid_thw=grid))
    ref = hf_logits(hf, ids, mask, pix, grid)
    err = np.abs(ours - ref)[mask.astype(bool)].max()
    assert err <= 1e-4, err


def test_window_attention_is_exercised(hf_qwen):
    model_type, _, _, model = hf_qwen
    if model_type != "qwen2_5_vl":
        pytest.skip("windows exist only in Qwen2.5-VL")
    _, mask, pix, grid = batch()
    ids = batch()[0]
    inputs = model.host_inputs(ids, mask, pix, {"image_grid_thw": grid})
    windows = np.asarray(inputs["vision_windows"])
    segments = np.asarray(inputs["vision_segments"])
    assert len(np.unique(windows[segments == 0])) == 6    # image A: 2 x 3 windows
    assert len(np.unique(windows[segments == 1])) == 2    # image B: 2 x 1 windows
    assert model.config.vision.fullatt_block_indexes == (1,)
    perm = np.asarray(inputs["vision_perm"])
    assert not np.array_equal(perm, np.arange(len(perm)))  # patches really reordered


def test_new_image_sizes_reuse_the_compilation(hf_qwen):
    from jaxunlearn.modeling.model import _jit_logits

    _, hf, _, model = hf_qwen
    ids, mask, pix, grid = batch()
    np.asarray(model.logits(ids, mask, pix, image_grid_thw=grid))
    compiled = _jit_logits._cache_size()
    # other image sizes (odd merged grids, 3 windows across) in the same 256-patch bucket
    ids, mask, pix, grid = batch(seed=4, rows=[[(1, 10, 10)], [(1, 4, 8)], [(1, 4, 4), (1, 8, 8)]])
    inputs = model.host_inputs(ids, mask, pix, {"image_grid_thw": grid})
    assert inputs["pixel_values"].shape[0] == 256 and "image_grid_thw" not in inputs
    ours = np.asarray(model.logits(ids, mask, pix, image_grid_thw=grid))
    assert _jit_logits._cache_size() == compiled
    err = np.abs(ours - hf_logits(hf, ids, mask, pix, grid))[mask.astype(bool)].max()
    assert err <= 1e-4, err


def test_greedy_generation_parity(hf_qwen):
    _, hf, _, model = hf_qwen
    ids, mask, pix, grid = batch(seed=1)
    ours = ju.generate(model, ids, mask, pix, max_new_tokens=16, eos_token_id=2, pad_token_id=0,
                       image_grid_thw=grid)
    with torch.no_grad():
        ref = hf.generate(**hf_kwargs(ids, mask, pix, grid), max_new_tokens=16, do_sample=False,
                          eos_token_id=2, pad_token_id=0)
    ref = ref[:, ids.shape[1]:].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


def test_export_round_trip_and_legacy_layout(hf_qwen, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    from jaxunlearn.modeling.qwen_vl import QWEN_VL_INMEMORY_EXPORT

    _, _, path, model = hf_qwen
    ids, mask, pix, grid = batch(seed=2)
    ours = np.asarray(model.logits(ids, mask, pix, image_grid_thw=grid))
    out = ju.save_pretrained(model, tmp_path / "export")
    with safe_open(str(out / "model.safetensors"), "np") as f, \
            safe_open(str(path / "model.safetensors"), "np") as g:
        assert sorted(f.keys()) == sorted(g.keys())  # the layout transformers writes
    reloaded, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref = hf_logits(reloaded.eval(), ids, mask, pix, grid)
    assert np.abs(ref - ours)[mask.astype(bool)].max() <= 1e-5
    legacy = ju.save_pretrained(model, tmp_path / "legacy", key_renames=QWEN_VL_INMEMORY_EXPORT)
    with safe_open(str(legacy / "model.safetensors"), "np") as f:
        keys = list(f.keys())
    assert any(k.startswith("model.language_model.") for k in keys)
    assert any(k.startswith("model.visual.") for k in keys)
    again = ju.load_pretrained(legacy)
    np.testing.assert_array_equal(np.asarray(again.logits(ids, mask, pix, image_grid_thw=grid)),
                                  ours)


@pytest.mark.parametrize("case", ["grid_vs_tokens", "grid_vs_pixels", "too_small", "no_grid"])
def test_bad_inputs_raise_clear_errors(hf_qwen, case):
    _, _, _, model = hf_qwen
    ids, mask, pix, grid = batch()
    expect = {"grid_vs_tokens": "does not match input_ids",
              "grid_vs_pixels": "does not match pixel_values",
              "too_small": "too small", "no_grid": "need image_grid_thw"}[case]
    if case == "grid_vs_tokens":  # same patch and token totals, images in the wrong order
        grid = np.asarray([GRID_B, GRID_A, GRID_B, GRID_A])
    elif case == "grid_vs_pixels":
        pix = pix[:-16]
    elif case == "too_small":
        grid = grid.copy()
        grid[0] = (1, 1, 96)
    else:
        grid = None
    with pytest.raises(ValueError, match=expect) as err:
        model.logits(ids, mask, pix, image_grid_thw=grid)
    assert "\n" not in str(err.value)


def test_text_only_generation_parity(hf_qwen):
    _, hf, _, model = hf_qwen
    ids, mask = np.full((2, 12), 0, np.int64), np.zeros((2, 12), np.int64)
    ids[0, 3:] = np.arange(5, 14)
    mask[0, 3:] = 1
    ids[1] = np.arange(30, 42)
    mask[1] = 1
    ours = ju.generate(model, ids, mask, max_new_tokens=16, eos_token_id=2, pad_token_id=0)
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          max_new_tokens=16, do_sample=False, eos_token_id=2, pad_token_id=0)
    np.testing.assert_array_equal(ours, ref[:, ids.shape[1]:].numpy())


# Qwen/Qwen2.5-VL-7B-Instruct config.json as published on the Hub (flat text keys, legacy
# rope_scaling, in_chans): it must parse to the same model as models/qwen2.5-vl-7b.yaml
HUB_QWEN2_5_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
    "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 3584,
    "initializer_range": 0.02, "intermediate_size": 18944, "max_position_embeddings": 128000,
    "max_window_layers": 28, "model_type": "qwen2_5_vl", "num_attention_heads": 28,
    "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
    "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280,
                      "intermediate_size": 3420, "num_heads": 16, "in_chans": 3,
                      "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
                      "spatial_patch_size": 14, "window_size": 112,
                      "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                      "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 152064,
}


def test_hub_flat_config_matches_preset():
    from pathlib import Path

    import yaml

    from jaxunlearn.modeling.qwen_vl import QwenVLConfig

    preset = yaml.safe_load((Path(__file__).parents[1] / "models/qwen2.5-vl-7b.yaml").read_text())
    assert QwenVLConfig.from_hf(HUB_QWEN2_5_VL_7B) == QwenVLConfig.from_hf(preset["hf_config"])
