"""Saliency masks of MMUnlearner (paper and official) and VKD on handcrafted Fisher values,
zeros included: mask entries and which tensors are masked.

Official MMUnlearner, read from Z1zs/MMUnlearner: `data_process/SFRon.py::Mask_Our.
prepare_weight_saliency_mask` (`(forget + 1e-15) / (preserve + 1e-15) >= threshold`) and
`baselines/MLLMU_manifold.py::main` (mask entries whose name contains none of `proj`, `fc`,
`linear`, `mlp`, `qkv` are dropped, so those tensors ascend unmasked). VKD: the paper's
Eqs. 9-11 (Fisher of the vanilla model; the denominator is the squared gradient of
L_qa^f + L_vqa^r + L_qa^r, whose text terms have no vision gradient).
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxunlearn.checkpoint.hf import model_from_config
from jaxunlearn.demo.tiny import TinyWorldConfig, build_world
from jaxunlearn.methods import mmunlearner as MMU
from jaxunlearn.methods import vkd as VKD
from jaxunlearn.methods.base import UnlearnData, get_method, resolve_options
from jaxunlearn.stats import fisher as F
from jaxunlearn.train import TrainConfig

KEYWORDS = ("proj", "fc", "linear", "mlp", "qkv")


def np_official(ff: dict, fr: dict, thr: float) -> dict:
    return {k: (np.asarray(ff[k], np.float64) + 1e-15) / (np.asarray(fr[k], np.float64) + 1e-15)
            >= thr for k in ff if any(w in k for w in KEYWORDS)}


FF = {"language_model.layers.0.mlp.up_proj.kernel": np.array([[0.0, 2.0], [1.0, 0.0]]),
      "vision_tower.encoder.layers.0.mlp.fc1.bias": np.array([0.0, 3.0, 1e-16]),
      "multi_modal_projector.linear_1.kernel": np.array([[0.5, 0.0]]),
      "language_model.layers.0.input_layernorm.weight": np.array([0.0, 4.0]),
      "language_model.embed_tokens.weight": np.array([[1.0, 0.0]])}
FR = {"language_model.layers.0.mlp.up_proj.kernel": np.array([[0.0, 1.0], [2.0, 3.0]]),
      "vision_tower.encoder.layers.0.mlp.fc1.bias": np.array([1.0, 0.0, 0.0]),
      "multi_modal_projector.linear_1.kernel": np.array([[0.5, 0.0]]),
      "language_model.layers.0.input_layernorm.weight": np.array([0.0, 1.0]),
      "language_model.embed_tokens.weight": np.array([[0.0, 0.0]])}


def test_official_mmunlearner_mask_on_handcrafted_fisher():
    got = MMU.official_saliency_mask(FF, FR, 1.0)
    want = np_official(FF, FR, 1.0)
    assert set(got) == set(want) == {"language_model.layers.0.mlp.up_proj.kernel",
                                     "vision_tower.encoder.layers.0.mlp.fc1.bias",
                                     "multi_modal_projector.linear_1.kernel"}
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # both zero -> (1e-15 / 1e-15) = 1 >= 1: salient; F_f = 0 < F_r: not salient
    assert got["language_model.layers.0.mlp.up_proj.kernel"].tolist() == [[True, True],
                                                                          [False, False]]
    assert got["multi_modal_projector.linear_1.kernel"].tolist() == [[True, True]]
    assert got["vision_tower.encoder.layers.0.mlp.fc1.bias"].tolist() == [False, True, True]


def test_paper_mask_treats_both_zero_as_not_salient():
    got = F.saliency_mask(FF, FR, 1.0, 1e-12)
    assert set(got) == set(FF)  # every tensor is masked
    assert got["language_model.layers.0.mlp.up_proj.kernel"].tolist() == [[False, True],
                                                                          [False, False]]
    assert got["language_model.embed_tokens.weight"].tolist() == [[True, False]]


@pytest.fixture(scope="module")
def world():
    bench, tok, hf_config, pipe = build_world(TinyWorldConfig())
    model = model_from_config(hf_config, seed=0)
    data = UnlearnData(tok, pipe, bench.split("forget_10")[:1], bench.split("retain_90")[:2],
                       others=bench.split("retain_90")[2:3])
    return model, data


def _fake_fisher(values: list[tuple[float, int]], calls: list):
    """empirical_fisher stand-in: call i returns `values[i]` (fill, batches) for every key."""
    def fake(graphdef, params, batches, keys, *, dtype=None, split_inputs=None, **kw):
        fill, n = values[len(calls)]
        calls.append({"keys": list(keys), "params": params, "split": split_inputs})
        sums = {k: np.full(np.shape(params[k]), fill * n, np.float64) for k in keys}
        # a zero corner in every tensor: F_f = F_r = 0 there
        for v in sums.values():
            v.reshape(-1)[0] = 0.0
        return F.Fisher(sums, n)
    return fake


def test_mmunlearner_official_masks_only_named_tensors(world, monkeypatch):
    model, data = world
    keys = sorted(model.params)
    calls: list = []
    # forget F = 2, retain F = 1, text F = 4 (language union: (1*2 + 4*1) / 3 = 2)
    monkeypatch.setattr(F, "empirical_fisher", _fake_fisher([(2.0, 2), (1.0, 2), (4.0, 1)],
                                                            calls))
    opts = resolve_options(get_method("mmunlearner"),
                           {"formulation": "official", "label_scope": "all_tokens"})
    mask = MMU.saliency_masks(model, data, keys, opts, TrainConfig(batch_size=4))
    assert set(mask) == {k for k in keys if any(w in k for w in KEYWORDS)}
    assert "language_model.embed_tokens.weight" not in mask
    assert "vision_tower.encoder.layers.0.layer_norm1.weight" not in mask
    for m in mask.values():
        assert m.reshape(-1)[0]  # both zero: salient in the official form
        assert m.reshape(-1)[1:].all()  # 2 / 1 >= 1 (vision); 2 / 2 >= 1 (language)
    assert calls[0]["split"] is not None  # all_tokens labels reach the Fisher statistics
    calls.clear()
    paper = MMU.saliency_masks(model, data, keys, resolve_options(get_method("mmunlearner"), {}),
                               TrainConfig(batch_size=4))
    assert set(paper) == set(keys)
    assert not any(m.reshape(-1)[0] for m in paper.values())


def test_vkd_fisher_denominator_and_vanilla_weights(world, monkeypatch):
    model, data = world
    keys = [k for k in model.params if k.startswith(("vision_tower", "multi_modal"))]
    calls: list = []
    # F_f = 1.0, F_r = 1.25: ratio 0.8 < 1 with the paper's denominator F(D_vqa^r); it would
    # pass if the text-only batches diluted the denominator (counted as zero batches)
    monkeypatch.setattr(F, "empirical_fisher", _fake_fisher([(1.0, 1), (1.25, 1)], calls))
    opts = resolve_options(get_method("vkd"), {"fisher_threshold": 0.9})
    mask = VKD.fisher_mask(model, data, keys, opts, TrainConfig(batch_size=4),
                           dict(model.params))
    assert set(mask) == set(keys)
    for m in mask.values():
        assert not m.reshape(-1)[0]  # both zero: 0 / (0 + eps) < d_F
        assert not m.reshape(-1)[1:].any()  # 1 / 1.25 = 0.8 < 0.9
    assert len(calls) == 2  # no Fisher over the text-only sets


def test_distill_squared_norm_is_the_sum():
    import jax.numpy as jnp

    from jaxunlearn.objectives.distill import feature_mse

    s = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 10
    t = np.ones((2, 3, 4), np.float32)
    rows = np.array([1.0, 0.0], np.float32)
    want = np.sum((s[0] - t[0]) ** 2)
    np.testing.assert_allclose(feature_mse(jnp.asarray(s), jnp.asarray(t), rows, "squared_norm"),
                               want, rtol=1e-6)
    np.testing.assert_allclose(feature_mse(jnp.asarray(s), jnp.asarray(t), rows, "mean"),
                               want / 12, rtol=1e-6)


def test_mmunlearner_official_schedule_ascends_before_the_retain_step(world):
    """MLLMU_manifold.py::main: at retain iteration i with i % k == 0 the ascent step on the
    next forget batch comes first; no wrap-around once the forget batches run out."""
    from jaxunlearn.methods import common
    from jaxunlearn.methods.base import run_method

    model, data = world
    tcfg = TrainConfig(lr=0.0, schedule="constant", batch_size=2, subset="all", progress=False)
    opts = {"formulation": "official", "label_scope": "all_tokens", "saliency": "ones"}
    res = run_method("mmunlearner", model, data, opts, train=tcfg)
    o = resolve_options(get_method("mmunlearner"), opts)
    n_f = len(common.stream(data, common.records(data, "forget", o, tcfg), tcfg, 0, 0))
    n_r = len(common.stream(data, common.records(data, "retain", o, tcfg), tcfg, 0, 1))
    k = max(n_r // n_f, 1)
    want = []
    for i in range(n_r):
        if i % k == 0 and i // k < n_f:
            want.append("ascent")
        want.append("descent")
    assert res.report["phases"] == want
    assert res.report["formulation"] == "official"
