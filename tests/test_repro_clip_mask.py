"""MMUnlearner's published order of clipping and masking (Z1zs/MMUnlearner,
`baselines/MLLMU_manifold.py::main`: forget step `-forget_alpha * loss`, backward,
`accelerator.clip_grad_norm_(model.parameters(), max_norm=1.0)` over the FULL gradient, THEN
`p.grad *= grad_mask[name]`, `optimizer.step()`), against NumPy on handcrafted gradients:
`formulation: official` = clip-then-mask (`grad_mask` of the train step), `formulation:
paper` = the mask inside the loss, i.e. mask-then-clip. The two differ whenever the masked-out
entries carry gradient norm.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxunlearn.methods import common
from jaxunlearn.train.state import init_state, make_optimizer
from jaxunlearn.train.step import make_train_step

C = {"a.q_proj.kernel": np.array([[3.0, -4.0, 0.5], [1.0, 2.0, -2.0]], np.float32),
     "b.norm.weight": np.array([0.5, -1.5, 2.5], np.float32)}  # the constant gradients
MASK = {"a.q_proj.kernel": np.array([[1, 0, 1], [0, 1, 0]], bool)}
P0 = {k: np.ones_like(v) for k, v in C.items()}


def _numpy(order: str) -> dict:
    """One SGD step (lr 1) with global-norm clip 1 in the given order."""
    m = {k: MASK.get(k, np.ones_like(v, bool)).astype(np.float64) for k, v in C.items()}
    g = {k: v.astype(np.float64) for k, v in C.items()}
    if order == "mask_then_clip":
        g = {k: g[k] * m[k] for k in g}
    norm = np.sqrt(sum(np.sum(v ** 2) for v in g.values()))
    g = {k: v * min(1.0, 1.0 / norm) for k, v in g.items()}
    if order == "clip_then_mask":
        g = {k: g[k] * m[k] for k in g}
    return {k: P0[k] - g[k] for k in g}


def _ours(order: str) -> dict:
    def loss(params, frozen, batch):
        p = common.gate(params, frozen["mask"]) if order == "mask_then_clip" else params
        return sum(jnp.sum(p[k] * C[k]) for k in C), {}

    opt = make_optimizer(1.0, schedule="constant", optimizer="sgd")
    gm = (lambda frozen, batch: frozen["mask"]) if order == "clip_then_mask" else None
    step = make_train_step(loss, opt, clip_norm=1.0, grad_mask=gm, donate=False)
    state = init_state({k: jnp.asarray(v) for k, v in P0.items()}, opt)
    state, _ = step(state, {"mask": MASK}, {"x": jnp.zeros((1,))})
    return {k: np.asarray(v) for k, v in state.params.items()}


def test_clip_then_mask_equals_the_published_order_and_differs_from_mask_then_clip():
    for order in ("clip_then_mask", "mask_then_clip"):
        ref, got = _numpy(order), _ours(order)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, err_msg=f"{order} {k}")
    a, b = _numpy("clip_then_mask"), _numpy("mask_then_clip")
    assert not np.allclose(a["b.norm.weight"], b["b.norm.weight"])
    # masked-out entries never move in either order
    off = ~MASK["a.q_proj.kernel"]
    assert np.all(_ours("clip_then_mask")["a.q_proj.kernel"][off] == 1.0)


def test_mmunlearner_official_passes_the_mask_after_the_clip(tiny_vanilla, monkeypatch):
    """The official formulation hands its saliency mask to the driver as `grad_mask`
    (ascent batches masked, descent batches not); the paper formulation does not."""
    from jaxunlearn.methods import mmunlearner as mmu
    from jaxunlearn.methods.base import UnlearnData, run_method

    model, tok, bench, pipe = tiny_vanilla
    data = UnlearnData(tok, pipe, bench.split("forget_10"), bench.split("retain_90"),
                       others=bench.split("retain_90"))
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(*args, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(mmu.common, "fit_method", fake_fit)
    train = {"subset": "llm", "progress": False, "batch_size": 4}
    for form in ("official", "paper"):
        seen.clear()
        try:
            run_method("mmunlearner", model, data, {"formulation": form, "saliency": "zeros"},
                       train=train)
        except Stop:
            pass
        gm = seen["grad_mask"]
        if form == "paper":
            assert gm is None
            continue
        mask = seen["frozen_extra"]["mask"]
        for flag, expect in ((1.0, False), (0.0, True)):
            out = gm({"mask": mask}, {"ascent": np.full((4,), flag, np.float32)})
            assert set(out) == set(mask)
            assert all(bool(np.all(np.asarray(v) == expect)) for v in out.values())
