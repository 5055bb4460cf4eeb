"""`grad_diff`: gradient difference (docs/methods.md), loss `objectives.gradient.grad_diff`
(`order: joint`) or, per phase, `objectives.gradient.ga` / `nll` (`order: alternate`)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.common import HYPER, GradientOptions, GradientRun, hyper, paired_run
from jaxunlearn.objectives import gradient as G
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.typed import field


@dataclasses.dataclass(frozen=True)
class GradDiffOptions(GradientOptions):
    gamma: float = field(1.0, "weight of -NLL(D_f)")
    alpha: float = field(1.0, "weight of NLL(D_r)")
    order: str = field("joint", "joint: paired forget / retain batches; alternate: an ascent "
                       "pass over D_f then a descent pass over D_r per epoch (MLLMU-Bench)",
                       choices=("joint", "alternate"))


@register("grad_diff", GradDiffOptions)
def grad_diff(model, data: UnlearnData, opts: GradDiffOptions,
              tcfg: TrainConfig) -> MethodResult:
    """-gamma*NLL(D_f) + alpha*NLL(D_r): `joint` pairs batches; `alternate` does an ascent
    pass over D_f then a descent pass over D_r per epoch (MLLMU-Bench)."""
    run = GradientRun(model, opts, tcfg)
    scope = opts.label_scope
    weights = hyper(gamma=opts.gamma, alpha=opts.alpha)
    if opts.order == "joint":
        def loss(params, frozen, batch):
            f, r = batch["forget"], batch["retain"]
            xf, xr = run.policy_logits(params, frozen, f), run.policy_logits(params, frozen, r)
            w = frozen[HYPER]
            value = G.grad_diff(xf, f, xr, r, w["gamma"], w["alpha"], scope)
            return value, {"forget_nll": G.nll(xf, f, scope), "retain_nll": G.nll(xr, r, scope)}

        return paired_run(run, data, loss, "grad_diff", frozen_extra=weights)

    def step_loss(params, frozen, batch):
        """gamma * GA on rows flagged `ascent` = 1, alpha * NLL otherwise (one compile)."""
        x = run.policy_logits(params, frozen, batch)
        nll, w = G.nll(x, batch, scope), frozen[HYPER]
        value = jnp.where(batch["ascent"][0] > 0.5, w["gamma"] * G.ga(x, batch, scope),
                          w["alpha"] * nll)
        return value, {"nll": nll}

    forget = run.records(data, "forget")
    retain = run.records(data, "retain")

    def schedule(epoch):
        for b in common.stream(data, forget, tcfg, epoch, 0):
            yield "ascent", common.flagged(b, "ascent", 1.0)
        for b in common.stream(data, retain, tcfg, epoch, 1):
            yield "descent", common.flagged(b, "ascent", 0.0)

    n = len(common.stream(data, forget, tcfg, 0)) + len(common.stream(data, retain, tcfg, 0, 1))
    return run.run({"ascent": step_loss, "descent": step_loss}, schedule, n,
                   frozen_extra=weights, desc="grad_diff")
