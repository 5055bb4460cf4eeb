"""`npo`: negative preference optimisation (docs/methods.md), loss
`objectives.gradient.npo_from_logits` (`npo_retain` with `retain_weight` > 0). The
reference is the starting model (evaluated inside the step) or an oracle's parameters."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.common import (HYPER, GradientOptions, GradientRun, forget_only, hyper,
                                      no_retain, paired_run)
from jaxunlearn.objectives import gradient as G
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.typed import field


def _oracle_params(spec: Any) -> dict:
    """Parameters of the oracle reference: a Model, a parameter dict or a checkpoint dir."""
    if spec is None:
        raise ValueError("npo reference: oracle needs `oracle`: a checkpoint directory (or Model) "
                         "fine-tuned on the retain set with the vanilla recipe")
    if hasattr(spec, "params"):
        return dict(spec.params)
    if isinstance(spec, Mapping):
        return dict(spec)
    from jaxunlearn.checkpoint.hf import load_pretrained

    return dict(load_pretrained(spec).params)


@dataclasses.dataclass(frozen=True)
class NPOOptions(GradientOptions):
    beta: float = field(0.1, "NPO temperature beta (> 0)", above=0.0)
    reference: str = field("vanilla", "reference model: vanilla (the starting model) or "
                           "oracle (a model fine-tuned on the retain set, see oracle)",
                           choices=("vanilla", "oracle"))
    oracle: Any = field(None, "reference: oracle: its HF checkpoint directory (or a Model)")
    retain_weight: float = field(0.0, "weight of NLL(D_r) added to the NPO loss (0: none)")
    form: str = field("sequence", "sequence: per-sequence log-probability sums inside the "
                      "log-sigmoid (NPO paper, open-unlearning); batch_mean: one batch-mean "
                      "token NLL per model inside it (MLLMU-Bench's NPO)", choices=G.NPO_FORMS)


@register("npo", NPOOptions, needs_retain=False)
def npo(model, data: UnlearnData, opts: NPOOptions, tcfg: TrainConfig) -> MethodResult:
    """Negative preference optimisation on D_f (+ retain_weight * NLL(D_r) when > 0)."""
    alpha = opts.retain_weight
    scope, form = opts.label_scope, opts.form
    if alpha <= 0:
        no_retain(opts, "npo with retain_weight 0")
    if opts.oracle is not None and opts.reference != "oracle":
        raise ValueError("method.options.oracle is only read with reference: oracle; set "
                         "reference: oracle or remove oracle")
    run = GradientRun(model, opts, tcfg)
    extra: dict[str, Any] = hyper(beta=opts.beta, retain_weight=alpha)
    if opts.reference == "oracle":
        extra["ref_full"] = _oracle_params(opts.oracle)
        if set(extra["ref_full"]) != set(model.params):
            raise ValueError("the npo oracle has different parameters than the model")
    with_ref = opts.reference == "vanilla"

    if alpha > 0:
        if not data.retain:
            raise ValueError("npo retain_weight > 0 needs retain data, but the retain set is empty")

        def loss(params, frozen, batch):
            f, r = batch["forget"], batch["retain"]
            xf, xr = run.policy_logits(params, frozen, f), run.policy_logits(params, frozen, r)
            ref = run.ref_logits(frozen, f)
            beta = frozen[HYPER]["beta"]
            value = G.npo_retain(xf, ref, f, xr, r, beta, frozen[HYPER]["retain_weight"], scope,
                                 form)
            return value, {"npo": G.npo_from_logits(xf, ref, f, beta, scope, form),
                           "retain_nll": G.nll(xr, r, scope)}

        return paired_run(run, data, loss, "npo", with_ref=with_ref, frozen_extra=extra)

    def loss_f(params, frozen, batch):
        value = G.npo_from_logits(run.policy_logits(params, frozen, batch),
                                  run.ref_logits(frozen, batch), batch, frozen[HYPER]["beta"],
                                  scope, form)
        return value, {"npo": value}

    return forget_only(run, data, loss_f, "npo", with_ref=with_ref, frozen_extra=extra)
