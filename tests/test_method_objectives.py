"""The gradient methods run the tested objectives: each method's reported per-step loss (the
value its jitted step minimised) equals the `objectives.gradient` function that
tests/test_objectives.py checks against NumPy, evaluated here outside the method on the same
batches and parameters.

Most runs use `lr: 0`, so every step sees the starting parameters and several batches (and
both phases of `grad_diff`'s alternate order) are checked in one run. The KL term is zero at
the starting parameters, so `ga_klr` is checked at its second step against the parameters of a
one-step run; NPO uses a different (oracle) reference so that its value depends on the logits.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxunlearn.checkpoint.hf import model_from_config
from jaxunlearn.demo.tiny import TinyWorldConfig, build_world
from jaxunlearn.methods import common
from jaxunlearn.methods.base import UnlearnData, get_method, resolve_options, run_method
from jaxunlearn.objectives import gradient as G
from jaxunlearn.objectives.refusals import with_refusals
from jaxunlearn.train import TrainConfig

FROZEN = TrainConfig(lr=0.0, schedule="constant", batch_size=4, max_steps=2, subset="llm",
                     progress=False)
RTOL, ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def world():
    bench, tok, hf_config, pipe = build_world(TinyWorldConfig())
    model = model_from_config(hf_config, seed=0)
    oracle = model_from_config(hf_config, seed=1)
    data = UnlearnData(tok, pipe, bench.split("forget_10")[:1], bench.split("retain_90")[:2])
    return model, oracle, data


def logits(model, params, batch):
    return common.logits_of(model.graphdef, params, batch, dtype=model.compute_dtype)


def batches(name, options, data, tcfg, steps):
    """The (phase, batch) sequence of the method's first epoch, rebuilt from its data helpers."""
    opts = resolve_options(get_method(name), options)
    forget = common.records(data, "forget", opts, tcfg)
    if name == "idk":
        forget = with_refusals(forget, opts.refusal_seed)
    if name in ("ga",) or (name == "npo" and opts.retain_weight == 0):
        out = [("forget", b) for b in common.stream(data, forget, tcfg, 0)]
    elif name in ("grad_diff", "kl_min") and opts.order == "alternate":
        retain = common.records(data, "retain", opts, tcfg)
        out = ([("ascent", b) for b in common.stream(data, forget, tcfg, 0, 0)]
               + [("descent", b) for b in common.stream(data, retain, tcfg, 0, 1)])
    else:
        retain = common.records(data, "retain", opts, tcfg)
        out = [("pair", b) for b in common.paired(data, forget, retain, tcfg, 0)]
    return out[:steps]


def objective(name, options, model, params, ref_params, phase, batch):
    """The tested objective of `name` on `batch` at `params` (reference: `ref_params`)."""
    x = lambda b: logits(model, params, b)
    ref = lambda b: logits(model, ref_params, b)
    o = options
    sc = o.get("label_scope", "answer")
    red, form = o.get("kl_reduction", "token_mean"), o.get("form", "sequence")
    if name == "ga":
        return G.ga(x(batch), batch, sc)
    if name == "grad_diff" and phase == "pair":
        f, r = batch["forget"], batch["retain"]
        return G.grad_diff(x(f), f, x(r), r, o["gamma"], o["alpha"], sc)
    if name == "grad_diff":
        return o["gamma"] * G.ga(x(batch), batch, sc) if phase == "ascent" else \
            o["alpha"] * G.nll(x(batch), batch, sc)
    if name in ("kl_min", "ga_klr") and phase == "ascent":
        return G.ga(x(batch), batch, sc)
    if name in ("kl_min", "ga_klr") and phase == "descent":
        return G.nll_kl(x(batch), ref(batch), batch, o.get("kl_weight", 1.0), red, sc)
    if name in ("kl_min", "ga_klr"):
        f, r = batch["forget"], batch["retain"]
        return G.ga_kl(x(f), f, x(r), ref(r), r, o.get("kl_weight", 1.0), red, sc)
    if name == "npo" and phase == "pair":
        f, r = batch["forget"], batch["retain"]
        return G.npo_retain(x(f), ref(f), f, x(r), r, o["beta"], o["retain_weight"], sc, form)
    if name == "npo":
        return G.npo_from_logits(x(batch), ref(batch), batch, o["beta"], sc, form)
    if name == "idk":
        f, r = batch["forget"], batch["retain"]
        return G.idk(x(f), f, x(r), r, o["retain_weight"], sc)
    raise AssertionError(name)


CASES = [
    ("ga", {}),
    ("grad_diff", {"gamma": 0.7, "alpha": 1.3}),
    ("grad_diff", {"gamma": 0.7, "alpha": 1.3, "order": "alternate", "modality": "multi"}),
    ("kl_min", {"kl_reduction": "sequence_sum"}),
    ("npo", {"beta": 0.4, "reference": "oracle"}),
    ("npo", {"beta": 0.4, "reference": "oracle", "retain_weight": 0.6}),
    ("idk", {"retain_weight": 0.8}),
    # MLLMU-Bench reproduction settings (label_scope all_tokens, KL_Min's alternate
    # NLL + batchmean-KL retain step, NPO's batch-mean form)
    ("ga", {"label_scope": "all_tokens"}),
    ("grad_diff", {"gamma": 1.0, "alpha": 1.0, "order": "alternate", "modality": "multi",
                   "label_scope": "all_tokens"}),
    ("kl_min", {"kl_reduction": "batchmean", "order": "alternate", "modality": "multi",
                "label_scope": "all_tokens"}),
    ("npo", {"beta": 0.4, "reference": "oracle", "form": "batch_mean",
             "label_scope": "all_tokens"}),
    ("idk", {"retain_weight": 0.8, "label_scope": "all_tokens"}),
]


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_method_loss_is_the_objective(world, name, options):
    model, oracle, data = world
    tcfg = FROZEN
    if options.get("order") == "alternate":  # every step of the epoch: ascent then descent
        tcfg = dataclasses.replace(FROZEN, max_steps=0)
    run_opts = {**options, "oracle": oracle} if options.get("reference") == "oracle" else options
    res = run_method(name, model, data, run_opts, train=tcfg)
    ref_params = oracle.params if options.get("reference") == "oracle" else model.params
    expected = batches(name, options, data, tcfg, res.report["steps"])
    assert res.report["phases"] == [p for p, _ in expected]
    if options.get("order") == "alternate":
        assert {"ascent", "descent"} <= set(res.report["phases"])
    for got, (phase, batch) in zip(res.report["losses"], expected):
        want = float(objective(name, options, model, model.params, ref_params, phase, batch))
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} {phase}")


def test_ga_klr_loss_is_the_objective_after_a_step(world):
    """Step 2 of ga_klr (KL > 0) against the parameters after step 1 of the same run."""
    model, _, data = world
    options = {"kl_weight": 0.5, "kl_reduction": "sequence_sum"}
    moving = dataclasses.replace(FROZEN, lr=1e-2, max_steps=1)
    p1 = run_method("ga_klr", model, data, options, train=moving).params
    res = run_method("ga_klr", model, data, options,
                     train=dataclasses.replace(moving, max_steps=2))
    _, batch = batches("ga_klr", options, data, moving, 2)[1]
    r = batch["retain"]
    kl = float(G.kl_ref_theta(logits(model, p1, r), logits(model, model.params, r), r,
                              "sequence_sum"))
    assert kl > 1e-3  # the KL term is live at this step
    np.testing.assert_allclose(res.report["history"][1]["kl"], kl, rtol=1e-4)
    want = float(objective("ga_klr", options, model, p1, model.params, "pair", batch))
    np.testing.assert_allclose(res.report["losses"][1], want, rtol=RTOL, atol=ATOL)
