"""`idk`: teach refusals on the forget prompts while keeping the (few-shot) retain set
(docs/methods.md), loss `objectives.gradient.idk`."""

from __future__ import annotations

import dataclasses

from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.common import HYPER, GradientOptions, GradientRun, hyper, paired_run
from jaxunlearn.objectives import gradient as G
from jaxunlearn.objectives.refusals import with_refusals
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.typed import field


@dataclasses.dataclass(frozen=True)
class IDKOptions(GradientOptions):
    retain_size: str = field("forget", "retain records: all, or forget = as many as the forget "
                             "set has (few-shot D_r^few)", choices=("all", "forget"))
    refusal_seed: int = field(0, "which refusals replace the forget answers")
    retain_weight: float = field(1.0, "weight of NLL(D_r)")


@register("idk", IDKOptions)
def idk(model, data: UnlearnData, opts: IDKOptions, tcfg: TrainConfig) -> MethodResult:
    """NLL(D_f^idk) + NLL(D_r^few): forget answers replaced by sampled refusals."""
    run = GradientRun(model, opts, tcfg)
    forget = with_refusals(run.records(data, "forget"), opts.refusal_seed)
    scope = opts.label_scope

    def loss(params, frozen, batch):
        f, r = batch["forget"], batch["retain"]
        xf, xr = run.policy_logits(params, frozen, f), run.policy_logits(params, frozen, r)
        value = G.idk(xf, f, xr, r, frozen[HYPER]["retain_weight"], scope)
        return value, {"idk_nll": G.nll(xf, f, scope), "retain_nll": G.nll(xr, r, scope)}

    result = paired_run(run, data, loss, "idk", forget=forget,
                        frozen_extra=hyper(retain_weight=opts.retain_weight))
    result.report["refusals"] = sorted({r["answer"] for r in forget})
    return result
