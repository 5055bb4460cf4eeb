"""Gradient-based baselines: `ga`, `grad_diff`, `kl_min`, `ga_klr`, `npo` (METHODS.md).

Each builds its loss(es) from `objectives.gradient` and trains through `common.fit_method`
(`train.driver.fit`). Reference models (KL, NPO) are evaluated inside the jitted step from
the frozen starting parameters (see `methods/common.py`). An optional `mask` restricts which
entries move: through the update mask for full-parameter training, through gradient gating
of the merged kernels under LoRA (`mask_lora: merged`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, TrainingOptions, UnlearnData, register
from jaxunlearn.objectives import gradient as G
from jaxunlearn.objectives.nll import sequence_logprob
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.typed import field


class GradientRun:
    """Forward passes of the policy and the reference for one run."""

    def __init__(self, model, opts: TrainingOptions, tcfg: TrainConfig):
        self.setup = common.make_setup(model, tcfg)
        self.opts, self.tcfg = opts, tcfg
        self.mask = common.load_mask(opts.mask)
        common.check_mask_lora(opts, self.setup, self.mask is not None)
        common.check_mask(self.mask, self.setup, opts)
        self.gate_all = self.mask is not None and self.setup.lora_cfg is not None

    def policy_logits(self, params: dict, frozen: dict, batch: dict) -> jax.Array:
        full = self.setup.policy(params, frozen["base"])
        if self.gate_all:
            full = common.gate(full, frozen["mask"])
        return self._logits(full, batch)

    def ref_logits(self, frozen: dict, batch: dict) -> jax.Array:
        if "ref_full" in frozen:
            full = frozen["ref_full"]
        else:
            full = self.setup.reference(frozen["base"], frozen["ref"])
        return jax.lax.stop_gradient(self._logits(full, batch))

    def _logits(self, full: dict, batch: dict) -> jax.Array:
        m = self.setup.model
        return common.logits_of(m.graphdef, full, batch, dtype=m.compute_dtype,
                                remat=self.tcfg.remat)

    def records(self, data: UnlearnData, which: str) -> list[dict]:
        return common.records(data, which, self.opts, self.tcfg)

    def frozen_extra(self, with_ref: bool = False) -> dict:
        extra: dict[str, Any] = {}
        if with_ref:
            extra["ref"] = self.setup.reference_part()
        if self.gate_all:
            extra["mask"] = self.mask
        return extra

    def update_mask(self) -> dict | None:
        return None if self.gate_all else self.mask

    def run(self, losses, schedule, steps_per_epoch: int, *, with_ref: bool = False,
            frozen_extra: dict | None = None, desc: str = "unlearn") -> MethodResult:
        extra = {**self.frozen_extra(with_ref), **(frozen_extra or {})}
        result = common.fit_method(self.setup, self.tcfg, losses, schedule, steps_per_epoch,
                              frozen_extra=extra, update_mask=self.update_mask(), desc=desc)
        if self.mask is not None:
            result.param_masks["mask"] = self.mask
        return result


def no_retain(opts: TrainingOptions, name: str) -> None:
    """A method that reads no retain data refuses `retain_size`."""
    if opts.retain_size != "all":
        raise ValueError(f"{name} reads no retain data, so method.options.retain_size has no "
                         "effect; leave it at all")


def forget_only(ctx: GradientRun, data: UnlearnData, loss, desc: str, **run_kw) -> MethodResult:
    forget = ctx.records(data, "forget")
    n = len(common.stream(data, forget, ctx.tcfg, 0))
    schedule = lambda e: (("forget", b) for b in common.stream(data, forget, ctx.tcfg, e))
    return ctx.run({"forget": loss}, schedule, n, desc=desc, **run_kw)


def paired_run(ctx: GradientRun, data: UnlearnData, loss, desc: str, **run_kw) -> MethodResult:
    forget = ctx.records(data, "forget")
    retain = ctx.records(data, "retain")
    n = len(common.paired(data, forget, retain, ctx.tcfg, 0))
    schedule = lambda e: (("pair", b) for b in common.paired(data, forget, retain, ctx.tcfg, e))
    return ctx.run({"pair": loss}, schedule, n, desc=desc, **run_kw)


# ----------------------------------------------------------------------------- GA

@dataclasses.dataclass(frozen=True)
class GAOptions(TrainingOptions):
    """`ga` has only the shared training options."""


@register("ga", GAOptions, needs_retain=False)
def ga(model, data: UnlearnData, opts: GAOptions, tcfg: TrainConfig) -> MethodResult:
    """Gradient ascent on the forget set: minimise -NLL(D_f)."""
    no_retain(opts, "ga")
    ctx = GradientRun(model, opts, tcfg)

    def loss(params, frozen, batch):
        value = G.ga(ctx.policy_logits(params, frozen, batch), batch)
        return value, {"forget_nll": -value}

    return forget_only(ctx, data, loss, "ga")


# ----------------------------------------------------------------------------- GradDiff

@dataclasses.dataclass(frozen=True)
class GradDiffOptions(TrainingOptions):
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
    ctx = GradientRun(model, opts, tcfg)
    gamma, alpha = opts.gamma, opts.alpha
    if opts.order == "joint":
        def loss(params, frozen, batch):
            f, r = batch["forget"], batch["retain"]
            lf = G.nll(ctx.policy_logits(params, frozen, f), f)
            lr = G.nll(ctx.policy_logits(params, frozen, r), r)
            return -gamma * lf + alpha * lr, {"forget_nll": lf, "retain_nll": lr}

        return paired_run(ctx, data, loss, "grad_diff")

    def step_loss(params, frozen, batch):
        """-gamma * NLL on rows flagged `ascent` = 1, alpha * NLL otherwise (one compile)."""
        nll = G.nll(ctx.policy_logits(params, frozen, batch), batch)
        return jnp.where(batch["ascent"][0] > 0.5, -gamma, alpha) * nll, {"nll": nll}

    forget = ctx.records(data, "forget")
    retain = ctx.records(data, "retain")

    def schedule(epoch):
        for b in common.stream(data, forget, tcfg, epoch, 0):
            yield "ascent", common.flagged(b, "ascent", 1.0)
        for b in common.stream(data, retain, tcfg, epoch, 1):
            yield "descent", common.flagged(b, "ascent", 0.0)

    n = len(common.stream(data, forget, tcfg, 0)) + len(common.stream(data, retain, tcfg, 0, 1))
    return ctx.run({"ascent": step_loss, "descent": step_loss}, schedule, n, desc="grad_diff")


# ----------------------------------------------------------------------------- KL

def _ga_kl(model, data: UnlearnData, opts, tcfg: TrainConfig, lam: float,
           desc: str) -> MethodResult:
    ctx = GradientRun(model, opts, tcfg)
    reduction = opts.kl_reduction

    def loss(params, frozen, batch):
        f, r = batch["forget"], batch["retain"]
        lf = G.nll(ctx.policy_logits(params, frozen, f), f)
        kl = G.kl_ref_theta(ctx.policy_logits(params, frozen, r), ctx.ref_logits(frozen, r), r,
                            reduction)
        return -lf + lam * kl, {"forget_nll": lf, "kl": kl}

    return paired_run(ctx, data, loss, desc, with_ref=True)


@dataclasses.dataclass(frozen=True)
class KLMinOptions(TrainingOptions):
    kl_reduction: str = field("token_mean", "KL reduction: token_mean (mean over answer "
                              "tokens) or sequence_sum (sum per sequence, mean over rows)",
                              choices=G.KL_REDUCTIONS)


@dataclasses.dataclass(frozen=True)
class GaKlrOptions(KLMinOptions):
    kl_weight: float = field(1.0, "lambda: weight of KL(p_ref || p_theta) on D_r")


@register("kl_min", KLMinOptions)
def kl_min(model, data: UnlearnData, opts: KLMinOptions, tcfg: TrainConfig) -> MethodResult:
    """-NLL(D_f) + KL(p_ref || p_theta) on D_r (MLLMU-Bench's KL baseline)."""
    return _ga_kl(model, data, opts, tcfg, 1.0, "kl_min")


@register("ga_klr", GaKlrOptions)
def ga_klr(model, data: UnlearnData, opts: GaKlrOptions, tcfg: TrainConfig) -> MethodResult:
    """-NLL(D_f) + lam * KL(p_ref || p_theta) on D_r (PULSE's GA+KLR)."""
    return _ga_kl(model, data, opts, tcfg, opts.kl_weight, "ga_klr")


# ----------------------------------------------------------------------------- NPO

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
class NPOOptions(TrainingOptions):
    beta: float = field(0.1, "NPO temperature beta (> 0)")
    reference: str = field("vanilla", "reference model: vanilla (the starting model) or "
                           "oracle (a model fine-tuned on the retain set, see oracle)",
                           choices=("vanilla", "oracle"))
    oracle: Any = field(None, "reference: oracle: its HF checkpoint directory (or a Model)")
    retain_weight: float = field(0.0, "weight of NLL(D_r) added to the NPO loss (0: none)")


@register("npo", NPOOptions, needs_retain=False)
def npo(model, data: UnlearnData, opts: NPOOptions, tcfg: TrainConfig) -> MethodResult:
    """Negative preference optimisation on D_f (+ retain_weight * NLL(D_r) when > 0)."""
    beta, alpha = opts.beta, opts.retain_weight
    if beta <= 0:
        raise ValueError(f"method.options.beta: npo beta must be > 0, got {beta}")
    if alpha <= 0:
        no_retain(opts, "npo with retain_weight 0")
    if opts.oracle is not None and opts.reference != "oracle":
        raise ValueError("method.options.oracle is only read with reference: oracle; set "
                         "reference: oracle or remove oracle")
    ctx = GradientRun(model, opts, tcfg)
    extra: dict[str, Any] = {}
    if opts.reference == "oracle":
        extra["ref_full"] = _oracle_params(opts.oracle)
        if set(extra["ref_full"]) != set(model.params):
            raise ValueError("the npo oracle has different parameters than the model")
    with_ref = opts.reference == "vanilla"

    def npo_term(params, frozen, f):
        lp = sequence_logprob(ctx.policy_logits(params, frozen, f), f)
        ref = sequence_logprob(ctx.ref_logits(frozen, f), f)
        return G.npo(lp, ref, f, beta)

    if alpha > 0:
        if not data.retain:
            raise ValueError("npo retain_weight > 0 needs retain data, but the retain set is empty")

        def loss(params, frozen, batch):
            f, r = batch["forget"], batch["retain"]
            ln = npo_term(params, frozen, f)
            lr = G.nll(ctx.policy_logits(params, frozen, r), r)
            return ln + alpha * lr, {"npo": ln, "retain_nll": lr}

        return paired_run(ctx, data, loss, "npo", with_ref=with_ref, frozen_extra=extra)

    def loss_f(params, frozen, batch):
        ln = npo_term(params, frozen, batch)
        return ln, {"npo": ln}

    return forget_only(ctx, data, loss_f, "npo", with_ref=with_ref, frozen_extra=extra)
