"""Gradient-based baselines: `ga`, `grad_diff`, `kl_min`, `ga_klr`, `npo` (METHODS.md).

Each builds its loss(es) from `objectives.gradient` and runs `common.train`. Reference
models (KL, NPO) are evaluated inside the jitted step from the frozen starting parameters
(see `methods/common.py`). An optional `mask` restricts which entries move: through the
update mask for full-parameter training, through gradient gating of the merged kernels
under LoRA (`mask_lora: merged`).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.objectives import gradient as G
from jaxunlearn.objectives.nll import sequence_logprob


class GradientRun:
    """Forward passes of the policy and the reference for one run."""

    def __init__(self, model, cfg: Mapping[str, Any]):
        self.setup = common.make_setup(model, cfg)
        self.cfg = cfg
        self.mask = common.load_mask(cfg["mask"])
        common.check_mask(self.mask, self.setup, cfg)
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
                                remat=bool(self.cfg["remat"]))

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
        return common.train(self.setup, self.cfg, losses, schedule, steps_per_epoch,
                            frozen_extra=extra, update_mask=self.update_mask(), desc=desc)


def forget_only(ctx: GradientRun, data: UnlearnData, loss, desc: str, **run_kw) -> MethodResult:
    forget = common.records(data, "forget", ctx.cfg)
    n = len(common.stream(data, forget, ctx.cfg, 0))
    schedule = lambda e: (("forget", b) for b in common.stream(data, forget, ctx.cfg, e))
    return ctx.run({"forget": loss}, schedule, n, desc=desc, **run_kw)


def paired_run(ctx: GradientRun, data: UnlearnData, loss, desc: str, **run_kw) -> MethodResult:
    forget = common.records(data, "forget", ctx.cfg)
    retain = common.records(data, "retain", ctx.cfg)
    n = len(common.paired(data, forget, retain, ctx.cfg, 0))
    schedule = lambda e: (("pair", b) for b in common.paired(data, forget, retain, ctx.cfg, e))
    return ctx.run({"pair": loss}, schedule, n, desc=desc, **run_kw)


# ----------------------------------------------------------------------------- GA

@register("ga", common.with_common(), needs_retain=False)
def ga(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """Gradient ascent on the forget set: minimise -NLL(D_f)."""
    ctx = GradientRun(model, cfg)

    def loss(params, frozen, batch):
        value = G.ga(ctx.policy_logits(params, frozen, batch), batch)
        return value, {"forget_nll": -value}

    return forget_only(ctx, data, loss, "ga")


# ----------------------------------------------------------------------------- GradDiff

@register("grad_diff", common.with_common(gamma=1.0, alpha=1.0, schedule="joint"))
def grad_diff(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """-gamma*NLL(D_f) + alpha*NLL(D_r): `joint` pairs batches; `alternate` does an ascent
    pass over D_f then a descent pass over D_r per epoch (MLLMU-Bench)."""
    ctx = GradientRun(model, cfg)
    gamma, alpha = float(cfg["gamma"]), float(cfg["alpha"])
    mode = cfg["schedule"]
    if mode == "joint":
        def loss(params, frozen, batch):
            f, r = batch["forget"], batch["retain"]
            lf = G.nll(ctx.policy_logits(params, frozen, f), f)
            lr = G.nll(ctx.policy_logits(params, frozen, r), r)
            return -gamma * lf + alpha * lr, {"forget_nll": lf, "retain_nll": lr}

        return paired_run(ctx, data, loss, "grad_diff")
    if mode != "alternate":
        raise ValueError(f"unknown grad_diff schedule {mode!r}; use joint or alternate")

    def step_loss(params, frozen, batch):
        """-gamma * NLL on rows flagged `ascent` = 1, alpha * NLL otherwise (one compile)."""
        nll = G.nll(ctx.policy_logits(params, frozen, batch), batch)
        return jnp.where(batch["ascent"][0] > 0.5, -gamma, alpha) * nll, {"nll": nll}

    forget = common.records(data, "forget", cfg)
    retain = common.records(data, "retain", cfg)

    def schedule(epoch):
        for b in common.stream(data, forget, cfg, epoch, 0):
            yield "ascent", common.flagged(b, "ascent", 1.0)
        for b in common.stream(data, retain, cfg, epoch, 1):
            yield "descent", common.flagged(b, "ascent", 0.0)

    n = len(common.stream(data, forget, cfg, 0)) + len(common.stream(data, retain, cfg, 0, 1))
    return ctx.run({"ascent": step_loss, "descent": step_loss}, schedule, n, desc="grad_diff")


# ----------------------------------------------------------------------------- KL

def _ga_kl(model, data: UnlearnData, cfg: dict, lam: float, desc: str) -> MethodResult:
    ctx = GradientRun(model, cfg)
    reduction = cfg["kl_reduction"]
    if reduction not in G.KL_REDUCTIONS:
        raise ValueError(f"unknown kl_reduction {reduction!r}; use one of {G.KL_REDUCTIONS}")

    def loss(params, frozen, batch):
        f, r = batch["forget"], batch["retain"]
        lf = G.nll(ctx.policy_logits(params, frozen, f), f)
        kl = G.kl_ref_theta(ctx.policy_logits(params, frozen, r), ctx.ref_logits(frozen, r), r,
                            reduction)
        return -lf + lam * kl, {"forget_nll": lf, "kl": kl}

    return paired_run(ctx, data, loss, desc, with_ref=True)


@register("kl_min", common.with_common(kl_reduction="token_mean"))
def kl_min(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """-NLL(D_f) + KL(p_ref || p_theta) on D_r (MLLMU-Bench's KL baseline)."""
    return _ga_kl(model, data, cfg, 1.0, "kl_min")


@register("ga_klr", common.with_common(kl_weight=1.0, kl_reduction="token_mean"))
def ga_klr(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """-NLL(D_f) + lam * KL(p_ref || p_theta) on D_r (PULSE's GA+KLR)."""
    return _ga_kl(model, data, cfg, float(cfg["kl_weight"]), "ga_klr")


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


@register("npo", common.with_common(beta=0.1, reference="vanilla", oracle=None,
                                    retain_weight=0.0), needs_retain=False)
def npo(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """Negative preference optimisation on D_f (+ retain_weight * NLL(D_r) when > 0)."""
    ctx = GradientRun(model, cfg)
    beta, alpha = float(cfg["beta"]), float(cfg["retain_weight"])
    if beta <= 0:
        raise ValueError(f"npo beta must be > 0, got {beta}")
    extra: dict[str, Any] = {}
    if cfg["reference"] == "oracle":
        extra["ref_full"] = _oracle_params(cfg["oracle"])
        if set(extra["ref_full"]) != set(model.params):
            raise ValueError("the npo oracle has different parameters than the model")
    elif cfg["reference"] != "vanilla":
        raise ValueError(f"unknown npo reference {cfg['reference']!r}; use vanilla or oracle")
    with_ref = cfg["reference"] == "vanilla"

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
