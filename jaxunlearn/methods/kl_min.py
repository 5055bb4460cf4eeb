"""`kl_min`: -NLL(D_f) + KL(p_ref || p_theta) on D_r (docs/methods.md), loss
`objectives.gradient.ga_kl` (`order: joint`) or, per phase, `objectives.gradient.ga` /
`nll_kl` (`order: alternate`, MLLMU-Bench's KL_Min); `ga_kl_run` is shared with `ga_klr`."""

from __future__ import annotations

import dataclasses

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.common import HYPER, GradientOptions, GradientRun, hyper, paired_run
from jaxunlearn.objectives import gradient as G
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.typed import field


@dataclasses.dataclass(frozen=True)
class KLMinOptions(GradientOptions):
    kl_reduction: str = field("token_mean", "KL reduction: token_mean (mean over labelled "
                              "tokens), sequence_sum (sum per sequence, mean over rows) or "
                              "batchmean (sum over every position incl. prompt / padding / last "
                              "token, divided by the rows; MLLMU-Bench's KL_Min)",
                              choices=G.KL_REDUCTIONS)
    order: str = field("joint", "joint: -NLL(D_f) + lam*KL(D_r) on paired batches; alternate: "
                       "an ascent pass -NLL(D_f) then a retain pass NLL(D_r) + lam*KL(D_r) per "
                       "epoch (MLLMU-Bench's KL_Min)", choices=("joint", "alternate"))


def ga_kl_run(model, data: UnlearnData, opts: KLMinOptions, tcfg: TrainConfig, lam: float,
              desc: str) -> MethodResult:
    """Train `G.ga_kl` with weight `lam` on paired forget / retain batches (`order: joint`), or
    alternate `G.ga` on D_f and `G.nll_kl` on D_r (`order: alternate`); the reference is the
    starting model, evaluated inside the step; `lam` is a runtime value (`common.hyper`)."""
    run = GradientRun(model, opts, tcfg)
    reduction, scope = opts.kl_reduction, opts.label_scope
    weights = hyper(lam=lam)

    if opts.order == "joint":
        def loss(params, frozen, batch):
            f, r = batch["forget"], batch["retain"]
            xf, xr = run.policy_logits(params, frozen, f), run.policy_logits(params, frozen, r)
            ref = run.ref_logits(frozen, r)
            value = G.ga_kl(xf, f, xr, ref, r, frozen[HYPER]["lam"], reduction, scope)
            return value, {"forget_nll": G.nll(xf, f, scope),
                           "kl": G.kl_ref_theta(xr, ref, r, reduction, scope)}

        return paired_run(run, data, loss, desc, with_ref=True, frozen_extra=weights)

    def ascent(params, frozen, batch):
        value = G.ga(run.policy_logits(params, frozen, batch), batch, scope)
        return value, {"forget_nll": -value}

    def descent(params, frozen, batch):
        x, ref = run.policy_logits(params, frozen, batch), run.ref_logits(frozen, batch)
        value = G.nll_kl(x, ref, batch, frozen[HYPER]["lam"], reduction, scope)
        return value, {"retain_nll": G.nll(x, batch, scope),
                       "kl": G.kl_ref_theta(x, ref, batch, reduction, scope)}

    forget = run.records(data, "forget")
    retain = run.records(data, "retain")

    def schedule(epoch):
        for b in common.stream(data, forget, tcfg, epoch, 0):
            yield "ascent", b
        for b in common.stream(data, retain, tcfg, epoch, 1):
            yield "descent", b

    n = len(common.stream(data, forget, tcfg, 0)) + len(common.stream(data, retain, tcfg, 0, 1))
    return run.run({"ascent": ascent, "descent": descent}, schedule, n, with_ref=True,
                   frozen_extra=weights, desc=desc)


@register("kl_min", KLMinOptions)
def kl_min(model, data: UnlearnData, opts: KLMinOptions, tcfg: TrainConfig) -> MethodResult:
    """-NLL(D_f) + KL(p_ref || p_theta) on D_r (MLLMU-Bench's KL baseline)."""
    return ga_kl_run(model, data, opts, tcfg, 1.0, "kl_min")
