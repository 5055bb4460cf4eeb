"""Neuron statistics vs a NumPy reference from HF PyTorch activations (forward hooks)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import jaxunlearn as ju
from hf_fixtures import hf_positions, llava_batch, save_hf_llava, tiny_llava_config
from jaxunlearn.parallel.mesh import make_mesh
from jaxunlearn.stats.activations import derived, merge_stats, neuron_stats, neuron_stats_multi

TAU = 0.01


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = tiny_llava_config(feature_layer=-1)  # every CLIP layer runs (HF runs all of them)
    path = tmp_path_factory.mktemp("stats_llava")
    hf = save_hf_llava(cfg, path)
    ids, mask, pix = llava_batch(cfg, batch=4, left_pad=(0, 5, 2, 3), length=24)
    ex = np.array([1, 1, 1, 0], np.int32)
    loss = np.zeros(ids.shape, np.float32)
    loss[:, -5:] = 1.0
    loss[1, -2:] = 0.0
    text_ids = np.where(ids == cfg.image_token_index, 7, ids)
    multi = {"input_ids": ids, "attention_mask": mask, "pixel_values": pix,
             "loss_mask": loss, "example_mask": ex}
    text = {"input_ids": text_ids, "attention_mask": mask, "loss_mask": loss, "example_mask": ex}
    return cfg, hf, ju.load_pretrained(path), {"multi": multi, "text": text}


def capture(hf, batch: dict) -> dict:
    """{(group, site): {layer: activation array}} from torch forward hooks."""
    acts: dict = {}
    hooks = []

    def put(key, layer, value):
        acts.setdefault(key, {})[layer] = value.detach().numpy().astype(np.float64)

    for name, mod in hf.named_modules():
        m = re.search(r"layers\.(\d+)\.mlp\.(down_proj|fc2|gate_proj|fc1)$", name)
        if not m:
            continue
        group = "vision" if "vision" in name else "language"
        layer = int(m.group(1))
        if m.group(2) in ("down_proj", "fc2"):
            hooks.append(mod.register_forward_pre_hook(
                lambda _m, inp, g=group, i=layer: put((g, "post"), i, inp[0])))
        else:
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, out, g=group, i=layer: put((g, "pre"), i, out)))
    kw = {"input_ids": torch.tensor(batch["input_ids"]),
          "attention_mask": torch.tensor(batch["attention_mask"]),
          "position_ids": torch.tensor(hf_positions(batch["attention_mask"]))}
    if "pixel_values" in batch:
        kw["pixel_values"] = torch.tensor(batch["pixel_values"])
    with torch.no_grad():
        hf(**kw)
    for h in hooks:
        h.remove()
    return acts


def reference(acts: dict, weights: np.ndarray, tau: float) -> dict:
    """NumPy statistics from full activations {layer: [..., N]} and 0/1 weights [...]."""
    layers = sorted(acts)
    w = [np.broadcast_to(weights.reshape(weights.shape + (1,) * (acts[i].ndim - 1 - weights.ndim)),
                         acts[i].shape[:-1]).astype(np.float64)[..., None] for i in layers]
    z = [acts[i] for i in layers]
    return {"n": np.array([wi.sum() for wi in w]),
            "S1": np.stack([(wi * np.abs(zi)).reshape(-1, zi.shape[-1]).sum(0) for wi, zi in zip(w, z)]),
            "Sz": np.stack([(wi * zi).reshape(-1, zi.shape[-1]).sum(0) for wi, zi in zip(w, z)]),
            "S2": np.stack([(wi * zi ** 2).reshape(-1, zi.shape[-1]).sum(0) for wi, zi in zip(w, z)]),
            "F": np.stack([(wi * (np.abs(zi) > tau)).reshape(-1, zi.shape[-1]).sum(0) for wi, zi in zip(w, z)]),
            "P": np.stack([(wi * (zi > 0)).reshape(-1, zi.shape[-1]).sum(0) for wi, zi in zip(w, z)])}


def assert_stats_close(ours: dict, ref: dict, rtol: float = 1e-4) -> None:
    np.testing.assert_array_equal(ours["n"], ref["n"])
    for k in ("F", "P"):
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)
    for k in ("S1", "Sz", "S2"):
        scale = np.abs(ref[k]).max() + 1e-12
        np.testing.assert_allclose(ours[k], ref[k], rtol=rtol, atol=rtol * scale * 1e-2, err_msg=k)


@pytest.mark.parametrize("modality", ["multi", "text"])
def test_stats_match_hf_hooks(world, modality):
    cfg, hf, model, batches = world
    batch = batches[modality]
    acts = capture(hf, batch)
    valid = (batch["attention_mask"] > 0) & (batch["example_mask"][:, None] > 0)
    scopes = {"all": valid, "answer": valid & (batch["loss_mask"] > 0),
              "image": valid & (batch["input_ids"] == cfg.image_token_index)}
    variants = [(site, scope, TAU) for site in ("post", "pre") for scope in scopes]
    results = neuron_stats_multi(model, [batch], variants, progress=False)
    for (site, scope, _), ours in zip(variants, results):
        w = scopes[scope]
        assert_stats_close(ours["language"], reference(acts[("language", site)], w, TAU))
        if modality == "multi":
            ref_v = reference(acts[("vision", site)], batch["example_mask"], TAU)
            assert_stats_close(ours["vision"], ref_v)
        else:
            assert not ours["vision"]["n"].any() and not ours["vision"]["S2"].any()
        if scope == "image" and modality == "text":
            assert not ours["language"]["n"].any()


def test_blank_images_do_not_count(world):
    """Rows without image tokens (blank images of text-only rows, PipelineConfig.blank_images)
    add nothing to the vision statistics; the language statistics are unchanged."""
    cfg, _, model, batches = world
    text = batches["text"]
    blank = {**text, "pixel_values": np.zeros_like(batches["multi"]["pixel_values"])}
    ref, got = (neuron_stats(model, [b], progress=False) for b in (text, blank))
    assert not got["vision"]["n"].any() and not got["vision"]["S1"].any()
    for k in ref["language"]:
        np.testing.assert_allclose(got["language"][k], ref["language"][k], rtol=1e-6, err_msg=k)
    # a batch mixing image rows and a text row counts the image rows only (images in the
    # forward pass's order: the k-th image feeds the k-th row holding image tokens, then zeros)
    multi = batches["multi"]
    mixed = {k: v.copy() for k, v in multi.items()}
    mixed["input_ids"][1] = text["input_ids"][1]
    mixed["pixel_values"] = np.concatenate([multi["pixel_values"][[0, 2, 3]],
                                            np.zeros_like(multi["pixel_values"][:1])])
    only = {**multi, "example_mask": multi["example_mask"] * np.array([1, 0, 1, 1], np.int32)}
    got_v = neuron_stats(model, [mixed], progress=False)["vision"]
    ref_v = neuron_stats(model, [only], progress=False)["vision"]
    for k in ref_v:
        np.testing.assert_allclose(got_v[k], ref_v[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_mesh_and_accumulation_match_single_batch(world):
    cfg, hf, model, batches = world
    batch = batches["multi"]
    one = neuron_stats(model, [batch], progress=False)
    mesh = make_mesh({"data": 2, "tensor": 4})
    sharded = neuron_stats(model, [batch], mesh=mesh, progress=False)
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    split = neuron_stats(model, halves, progress=False)
    parts = merge_stats(neuron_stats(model, halves[:1], progress=False),
                        neuron_stats(model, halves[1:], progress=False))
    for other in (sharded, split, parts):
        for g in one:
            for k in one[g]:
                if k in ("n", "F", "P"):
                    np.testing.assert_array_equal(one[g][k], other[g][k])
                else:
                    np.testing.assert_allclose(one[g][k], other[g][k], rtol=1e-5, atol=1e-6)


def test_unused_vision_layer_has_no_statistics(tmp_path):
    cfg = tiny_llava_config(feature_layer=-2)
    save_hf_llava(cfg, tmp_path)
    model = ju.load_pretrained(tmp_path)
    ids, mask, pix = llava_batch(cfg)
    st = neuron_stats(model, [{"input_ids": ids, "attention_mask": mask, "pixel_values": pix}],
                      progress=False)
    assert st["vision"]["n"][-1] == 0 and (st["vision"]["n"][:-1] > 0).all()
    assert not derived(st["vision"])["rms"][-1].any()


def test_derived_statistics():
    stats = {"n": np.array([4, 0]), "S1": np.array([[4.0, 2.0], [1.0, 1.0]]),
             "Sz": np.array([[0.0, 2.0], [1.0, 1.0]]), "S2": np.array([[4.0, 1.0], [1.0, 1.0]]),
             "F": np.array([[4, 1], [1, 1]]), "P": np.array([[2, 2], [1, 1]])}
    d = derived(stats)
    np.testing.assert_allclose(d["mean_abs"], [[1.0, 0.5], [0, 0]])
    np.testing.assert_allclose(d["freq"], [[1.0, 0.25], [0, 0]])
    np.testing.assert_allclose(d["pos_freq"], [[0.5, 0.5], [0, 0]])
    np.testing.assert_allclose(d["var"], [[1.0, 0.0], [0, 0]])
    np.testing.assert_allclose(d["rms"], [[1.0, 0.5], [0, 0]])
    np.testing.assert_allclose(d["std"], [[np.sqrt(4 / 3), 0.0], [0, 0]])
