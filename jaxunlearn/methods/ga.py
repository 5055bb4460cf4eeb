"""`ga`: gradient ascent on the forget set (docs/methods.md), loss `objectives.gradient.ga`."""

from __future__ import annotations

import dataclasses

from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.common import GradientOptions, GradientRun, forget_only, no_retain
from jaxunlearn.objectives import gradient as G
from jaxunlearn.train.driver import TrainConfig


@dataclasses.dataclass(frozen=True)
class GAOptions(GradientOptions):
    """`ga` has only the shared gradient-method options."""


@register("ga", GAOptions, needs_retain=False)
def ga(model, data: UnlearnData, opts: GAOptions, tcfg: TrainConfig) -> MethodResult:
    """Gradient ascent on the forget set: minimise -NLL(D_f)."""
    no_retain(opts, "ga")
    run = GradientRun(model, opts, tcfg)

    def loss(params, frozen, batch):
        value = G.ga(run.policy_logits(params, frozen, batch), batch, opts.label_scope)
        return value, {"forget_nll": -value}

    return forget_only(run, data, loss, "ga")
