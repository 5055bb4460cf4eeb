"""Pure parameter transforms: pruning, masks, deltas, SMFA sculpting."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.checkpoint.hf import model_from_config
from jaxunlearn.transforms import (
    add_delta, apply_masks, group_shapes, mlp_layout, neuron_masks_to_param_masks, param_delta,
    prune_neurons, sculpt, sculpt_masks,
)


TINY = {
    "model_type": "llava", "image_token_index": 127, "vision_feature_layer": -1,
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32,
                      "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                      "image_size": 28, "patch_size": 14},
    "text_config": {"model_type": "llama", "vocab_size": 128, "hidden_size": 64,
                    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "mlp_bias": True},
}


@functools.lru_cache(maxsize=1)
def tiny_model():
    model = model_from_config(TINY, seed=1)
    # non-zero biases so their pruning is visible
    params = {k: v + 0.1 if k.endswith(".bias") else v for k, v in model.params.items()}
    return model.replace(params=params)


def random_masks(shapes, seed=0, p=0.2):
    rng = np.random.default_rng(seed)
    return {g: rng.random(s) < p for g, s in shapes.items()}


def test_layout_and_shapes():
    model = tiny_model()
    layout = mlp_layout(model.params, "llava")
    assert [s.prefix for s in layout["language"]] == ["language_model.layers.0.mlp",
                                                     "language_model.layers.1.mlp"]
    assert layout["vision"][0].inputs == ("fc1",) and layout["vision"][0].output == "fc2"
    assert group_shapes(model.params) == {"language": (2, 96), "vision": (3, 64)}


def test_pruned_neurons_contribute_nothing_and_rest_is_bit_identical():
    model = tiny_model()
    masks = random_masks(group_shapes(model.params))
    pruned = prune_neurons(model.params, masks, "llava")
    edited = set(neuron_masks_to_param_masks(model.params, masks))
    for k, v in model.params.items():
        if k not in edited:
            assert pruned[k] is v
    keep = neuron_masks_to_param_masks(model.params, masks)
    for k in edited:  # untouched entries of edited tensors are bit-identical
        a, b = np.asarray(model.params[k]), np.asarray(pruned[k])
        np.testing.assert_array_equal(a[keep[k]], b[keep[k]])
        assert not b[~keep[k]].any()
    orig, new = model.module(), model.module(pruned)
    rng = np.random.default_rng(0)
    for group, layers_o, layers_n in (
            ("language", orig.language_model.layers, new.language_model.layers),
            ("vision", orig.vision_tower.encoder.layers, new.vision_tower.encoder.layers)):
        for i, (lo, ln) in enumerate(zip(layers_o, layers_n)):
            d = lo.mlp.gate_proj.kernel.shape[0] if group == "language" else lo.mlp.fc1.kernel.shape[0]
            x = jnp.asarray(rng.normal(size=(2, 5, d)), jnp.float32)
            got = ln.mlp(x)
            if group == "language":
                z = lo.mlp.act(lo.mlp.gate_proj(x)) * lo.mlp.up_proj(x)
                ref = lo.mlp.down_proj(jnp.where(masks[group][i], 0.0, z))
            else:
                z = lo.mlp.act(lo.mlp.fc1(x))
                ref = lo.mlp.fc2(jnp.where(masks[group][i], 0.0, z))
            np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6)


def test_prune_rejects_wrong_shape():
    model = tiny_model()
    with pytest.raises(ValueError, match="mask has shape"):
        prune_neurons(model.params, {"language": np.zeros((2, 5), bool)})


def test_per_linear_masks_zero_output_channels():
    model = tiny_model()
    masks = {"language.down_proj": np.zeros((2, 64), bool), "language.up_proj": np.zeros((2, 96), bool)}
    masks["language.down_proj"][1, 3] = True
    masks["language.up_proj"][0, 80] = True
    out = prune_neurons(model.params, masks)
    down = np.asarray(out["language_model.layers.1.mlp.down_proj.kernel"])
    assert not down[:, 3].any() and down[3].any()  # column (output channel) 3, not row 3
    assert not np.asarray(out["language_model.layers.0.mlp.up_proj.kernel"])[:, 80].any()
    assert np.asarray(out["language_model.layers.0.mlp.gate_proj.kernel"])[:, 80].any()
    same = out["language_model.layers.0.mlp.down_proj.kernel"]
    assert same is model.params["language_model.layers.0.mlp.down_proj.kernel"]
    with pytest.raises(ValueError, match="names no Linear"):
        prune_neurons(model.params, {"language.fc1": np.zeros((2, 96), bool)})
    with pytest.raises(ValueError, match="output channels"):
        prune_neurons(model.params, {"language.down_proj": np.zeros((2, 96), bool)})


def test_apply_masks_delta_roundtrip():
    p = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3, jnp.bfloat16)}
    m = apply_masks(p, {"a": np.array([[True, False, True], [False, True, True]])})
    np.testing.assert_array_equal(np.asarray(m["a"]), [[0, 0, 2], [0, 4, 5]])
    assert m["b"] is p["b"]
    f = apply_masks(p, {"a": np.full((2, 3), 0.5, np.float32)})
    np.testing.assert_allclose(np.asarray(f["a"]), np.arange(6.0).reshape(2, 3) / 2)
    q = {"a": p["a"] + 2.0, "b": p["b"] * 3}
    d = param_delta(q, p)
    back = add_delta(p, d)
    np.testing.assert_array_equal(np.asarray(back["a"]), np.asarray(q["a"]))
    assert back["b"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="shape"):
        apply_masks(p, {"a": np.ones((3, 2), bool)})


def test_sculpt_masks_follow_definitions():
    df = {"w": jnp.array([[1.0, -2.0], [3.0, 0.5]]), "v": jnp.array([1.0, 1.0])}
    da = {"w": jnp.array([[-1.0, -1.0], [-0.1, -4.0]]), "v": jnp.array([-1.0, 2.0])}
    # rho_w = ||df|| / ||da|| = sqrt(14.25) / sqrt(18.01)
    rho = np.sqrt(14.25) / np.sqrt(18.01)
    m, rhos = sculpt_masks(df, da, k=1.0)
    np.testing.assert_allclose(rhos["w"], rho, rtol=1e-6)
    c = np.array([[True, False], [True, True]])
    r = rho * np.abs(np.asarray(da["w"])) < np.abs(np.asarray(df["w"]))
    np.testing.assert_array_equal(np.asarray(m["w"]), c & r)
    assert np.asarray(m["w"]).tolist() == [[True, False], [True, False]]
    mc, _ = sculpt_masks(df, da, criteria="C")
    np.testing.assert_array_equal(np.asarray(mc["w"]), c)
    mr, _ = sculpt_masks(df, da, criteria="R")
    np.testing.assert_array_equal(np.asarray(mr["w"]), r)
    # k = 0: every conflicting entry is masked
    m0, _ = sculpt_masks(df, da, k=0.0)
    np.testing.assert_array_equal(np.asarray(m0["w"]), c)
    np.testing.assert_array_equal(np.asarray(m0["v"]), [True, False])
    # criteria off: nothing masked, sculpting is the identity
    mn, _ = sculpt_masks(df, da, criteria="none")
    out = sculpt(df, mn)
    for k in df:
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(df[k]))
    sculpted = sculpt(df, m)
    np.testing.assert_array_equal(np.asarray(sculpted["w"]), [[0.0, -2.0], [0.0, 0.5]])
    with pytest.raises(ValueError, match="criteria"):
        sculpt_masks(df, da, criteria="CR")
