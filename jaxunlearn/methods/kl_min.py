"""`kl_min`: -NLL(D_f) + KL(p_ref || p_theta) on D_r (METHODS.md), loss
`objectives.gradient.ga_kl`; `ga_kl_run` is shared with `ga_klr`."""

from __future__ import annotations

import dataclasses

from jaxunlearn.methods.base import MethodResult, TrainingOptions, UnlearnData, register
from jaxunlearn.methods.common import GradientRun, paired_run
from jaxunlearn.objectives import gradient as G
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.typed import field


@dataclasses.dataclass(frozen=True)
class KLMinOptions(TrainingOptions):
    kl_reduction: str = field("token_mean", "KL reduction: token_mean (mean over answer "
                              "tokens) or sequence_sum (sum per sequence, mean over rows)",
                              choices=G.KL_REDUCTIONS)


def ga_kl_run(model, data: UnlearnData, opts: KLMinOptions, tcfg: TrainConfig, lam: float,
              desc: str) -> MethodResult:
    """Train `G.ga_kl` with weight `lam` on paired forget / retain batches; the reference is
    the starting model, evaluated inside the step."""
    run = GradientRun(model, opts, tcfg)
    reduction = opts.kl_reduction

    def loss(params, frozen, batch):
        f, r = batch["forget"], batch["retain"]
        xf, xr = run.policy_logits(params, frozen, f), run.policy_logits(params, frozen, r)
        ref = run.ref_logits(frozen, r)
        value = G.ga_kl(xf, f, xr, ref, r, lam, reduction)
        return value, {"forget_nll": G.nll(xf, f),
                       "kl": G.kl_ref_theta(xr, ref, r, reduction)}

    return paired_run(run, data, loss, desc, with_ref=True)


@register("kl_min", KLMinOptions)
def kl_min(model, data: UnlearnData, opts: KLMinOptions, tcfg: TrainConfig) -> MethodResult:
    """-NLL(D_f) + KL(p_ref || p_theta) on D_r (MLLMU-Bench's KL baseline)."""
    return ga_kl_run(model, data, opts, tcfg, 1.0, "kl_min")
