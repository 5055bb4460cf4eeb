"""IDK: teach refusals on the forget prompts while keeping the (few-shot) retain set."""

from __future__ import annotations

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.gradient_methods import GradientRun
from jaxunlearn.objectives import gradient as G
from jaxunlearn.objectives.refusals import with_refusals


@register("idk", common.with_common(retain_size="forget", refusal_seed=0, retain_weight=1.0))
def idk(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """NLL(D_f^idk) + NLL(D_r^few): forget answers replaced by sampled refusals."""
    run = GradientRun(model, cfg)
    forget = with_refusals(common.records(data, "forget", cfg), int(cfg["refusal_seed"]))
    retain = common.records(data, "retain", cfg)
    alpha = float(cfg["retain_weight"])

    def loss(params, frozen, batch):
        f, r = batch["forget"], batch["retain"]
        lf = G.nll(run.policy_logits(params, frozen, f), f)
        lr = G.nll(run.policy_logits(params, frozen, r), r)
        return lf + alpha * lr, {"idk_nll": lf, "retain_nll": lr}

    n = len(common.paired(data, forget, retain, cfg, 0))
    schedule = lambda e: (("pair", b) for b in common.paired(data, forget, retain, cfg, e))
    result = run.run({"pair": loss}, schedule, n, desc="idk")
    result.artifacts["refusals"] = sorted({r["answer"] for r in forget})
    return result
