"""VKD — visual knowledge distillation (docs/methods.md): forget a person's *visual* knowledge by
training only the vision side (vision MLPs, default the deeper half, + projector) with the
LLM frozen.

1. Prune vision neurons by `I_u = mean_abs(D_vqa^f) / (mean_abs(D_vqa^r) + eps)` (text-only
   sets contribute 0 to vision neurons, so they drop out of the denominator).
2. Fisher saliency mask `m = F(D_vqa^f) / (F(D_qa^f + D_vqa^r + D_qa^r) + eps) >= d_F` over
   the trainable parameters, on the vanilla (unpruned) weights theta_0 (paper Eqs. 9-11).
   The denominator is the squared gradient of the *sum* of the three losses (Eq. 10); the
   text-only losses have exactly zero gradient with respect to vision-side parameters, so it
   equals F(D_vqa^r). Both Fishers are empirical (mean over batches of squared batch
   gradients).
3. Train `-alpha * NLL(D_vqa^f)` (gradient gated by m) `+ NLL(D_vqa^r) + beta * ||student
   projector output - teacher projector output||^2` on D_vqa^r (`distill`: mean over the
   feature elements, default, or the paper's squared norm). The text-only terms
   `NLL(D_qa^f) + NLL(D_qa^r)` of the paper's loss have zero gradient while the LLM is frozen
   and are therefore not computed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, TrainingOptions, UnlearnData, register
from jaxunlearn.modeling.model import image_features, model_inputs
from jaxunlearn.objectives import gradient as G
from jaxunlearn.objectives.distill import DISTILL_REDUCTIONS, feature_mse
from jaxunlearn.stats import fisher as F
from jaxunlearn.train import subsets
from jaxunlearn.train.driver import DROPOUT_KEY, TrainConfig
from jaxunlearn.train.typed import field

SALIENCY = ("fisher", "ones", "zeros")


@dataclasses.dataclass(frozen=True)
class VKDOptions(TrainingOptions):
    """VKD's keys; train it with a vision-side `train.subset` (the paper:
    `projector+vision_mlp` with `deeper_half: true`)."""

    modality: str = field("multi", "VKD trains on VQA (image) data only: multi",
                          choices=("multi",))
    alpha: float = field(1.25, "weight of the forget term -NLL(D_vqa^f)")
    beta: float = field(0.3, "weight of the projector-feature distillation on D_vqa^r")
    prune_threshold: float | None = field(None, "d_I: prune vision neurons with I_u >= d_I "
                                          "(null: use prune_fraction)")
    prune_fraction: float = field(0.01, "top fraction of vision neurons by I_u to prune "
                                  "(0: no pruning)")
    fisher_threshold: float = field(1.0, "d_F: saliency mask = Fisher ratio >= d_F")
    saliency: str = field("fisher", "forget-gradient mask: fisher, ones (no mask) or zeros",
                          choices=SALIENCY)
    eps: float = field(1e-8, "denominator epsilon of I_u and the Fisher ratio")
    distill: str = field("mean", "distillation term: mean (||f - t||^2 / (tokens * D), "
                         "beta independent of the model size) or squared_norm (||f - t||^2 "
                         "as the paper's Eq. 4)", choices=DISTILL_REDUCTIONS)


def projector_output(graphdef: Any, params: Mapping[str, jax.Array], batch: dict,
                     dtype: Any = None) -> tuple[jax.Array, jax.Array]:
    """The projector's image features for a multimodal batch (any family) and the weights of
    the real ones: `jaxunlearn.modeling.model.image_features`."""
    inputs = model_inputs(batch)
    if "example_mask" in batch:
        inputs["example_mask"] = batch["example_mask"]
    return image_features(graphdef, params, inputs, dtype)


def select_top(scores: np.ndarray, *, threshold: float | None, fraction: float) -> np.ndarray:
    """Bool mask: `scores >= threshold`, or the top `fraction` (ties by index, exactly
    floor(fraction * N) entries)."""
    flat = np.asarray(scores, np.float64).ravel()
    if threshold is not None:
        return (flat >= float(threshold)).reshape(scores.shape)
    k = int(np.floor(float(fraction) * flat.size))
    out = np.zeros(flat.size, bool)
    if k > 0:
        out[np.lexsort((np.arange(flat.size), -flat))[:k]] = True
    return out.reshape(scores.shape)


def prune_mask(model, data: UnlearnData, opts: VKDOptions,
               tcfg: TrainConfig) -> np.ndarray | None:
    """Vision neurons to prune ([layers, neurons] bool) or None when pruning is off."""
    from jaxunlearn.stats.activations import dataset_stats, derived

    if opts.prune_threshold is None and not opts.prune_fraction:
        return None
    kw = {"progress": False, "batch_size": tcfg.batch_size}
    forget = common.records(data, "forget", opts, tcfg)
    retain = common.records(data, "retain", opts, tcfg)
    sf = derived(dataset_stats(model, data, "forget", "multi", records=forget,
                               **kw)["vision"])["mean_abs"]
    sr = derived(dataset_stats(model, data, "retain", "multi", records=retain,
                               **kw)["vision"])["mean_abs"]
    i_u = sf / (sr + opts.eps)
    return select_top(i_u, threshold=opts.prune_threshold, fraction=opts.prune_fraction)


def fisher_mask(model, data: UnlearnData, keys: list[str], opts: VKDOptions, tcfg: TrainConfig,
                params: dict) -> dict[str, np.ndarray]:
    """m = [F(D_vqa^f) / (F(D_qa^f + D_vqa^r + D_qa^r) + eps) >= d_F] over `keys`, at
    `params` (the vanilla weights); the text-only losses add zero vision gradient."""
    if opts.saliency != "fisher":
        fill = opts.saliency == "ones"
        return {k: np.full(params[k].shape, fill) for k in keys}

    def batches(which, modality):
        return common.stream(data, common.records(data, which, opts, tcfg, modality), tcfg, 0)

    f_f = F.empirical_fisher(model.graphdef, params, batches("forget", "multi"), keys,
                             dtype=model.compute_dtype, logical_axes=model.logical_axes,
                             desc="fisher forget/multi")
    f_r = F.empirical_fisher(model.graphdef, params, batches("retain", "multi"), keys,
                             dtype=model.compute_dtype, logical_axes=model.logical_axes,
                             desc="fisher retain/multi")
    return F.saliency_mask(f_f.mean(), f_r.mean(), opts.fisher_threshold, opts.eps)


def bounded(new: dict, old: Mapping, mask: Mapping[str, Any] | None) -> dict:
    """`new` with every entry outside `mask` reset to `old` (the user mask bounds all edits)."""
    if mask is None:
        return new
    out = dict(new)
    for k, m in mask.items():
        if k in out and out[k] is not old[k]:
            out[k] = jnp.where(jnp.asarray(m, bool), out[k], old[k])
    return out


@register("vkd", VKDOptions)
def vkd(model, data: UnlearnData, opts: VKDOptions, tcfg: TrainConfig) -> MethodResult:
    """Vision-only unlearning with feature distillation, pruning and a Fisher mask."""
    setup = common.make_setup(model, tcfg)
    llm = [k for k in setup.merged_keys() if subsets.in_subset(k, "llm", 0)]
    if llm:
        raise ValueError(f"vkd keeps the LLM frozen but train.subset {tcfg.subset!r} trains "
                         f"{llm[0]}...; set train.subset to a vision-side subset "
                         "(projector+vision_mlp with train.deeper_half: true, vision, "
                         "projector)")
    user = common.load_mask(opts.mask)
    common.check_mask_lora(opts, setup, True)
    common.check_mask(user, setup, opts)
    pruned = prune_mask(model, data, opts, tcfg)
    params = dict(model.params)
    keep: dict[str, Any] = {}
    if pruned is not None and pruned.any():
        from jaxunlearn.transforms import neuron_masks_to_param_masks, prune_neurons

        params = bounded(prune_neurons(params, {"vision": pruned}, model.family),
                         model.params, user)
        keep = {k: v for k, v in neuron_masks_to_param_masks(
            params, {"vision": pruned}, model.family).items() if k in setup.trainable}
        setup = common.make_setup(model.replace(params=params), tcfg)
    update_mask = _and_masks(keep, user if setup.lora_cfg is None else None) or None
    keys = setup.merged_keys()
    mask = fisher_mask(model, data, keys, opts, tcfg, dict(model.params))  # vanilla theta_0
    common.check_mask(mask, setup, opts, "vkd saliency mask")
    gate_user = user if setup.lora_cfg is not None else None
    gd, dtype, remat = model.graphdef, model.compute_dtype, tcfg.remat

    def loss(trainable, frozen, batch):
        f, r = batch["forget"], batch["retain"]
        full = common.gate(setup.policy(trainable, frozen["base"], frozen.get(DROPOUT_KEY)),
                           frozen.get("user"))
        lf = G.nll(common.logits_of(gd, common.gate(full, frozen["mask"]), f, dtype=dtype,
                                    remat=remat), f)
        lr = G.nll(common.logits_of(gd, full, r, dtype=dtype, remat=remat), r)
        teacher, rows = projector_output(gd, {**frozen["base"], **frozen["teacher"]}, r, dtype)
        student, _ = projector_output(gd, full, r, dtype)
        dist = feature_mse(student, teacher, rows, opts.distill)
        w = frozen[common.HYPER]
        return -w["alpha"] * lf + lr + w["beta"] * dist, {"forget_nll": lf, "retain_nll": lr,
                                                          "distill": dist}

    forget = common.records(data, "forget", opts, tcfg)
    retain = common.records(data, "retain", opts, tcfg)
    n = len(common.paired(data, forget, retain, tcfg, 0))
    schedule = lambda e: (("pair", b) for b in common.paired(data, forget, retain, tcfg, e))  # noqa: E731
    # the teacher: the original (unpruned) vision tower + projector over the frozen LLM
    teacher = {k: v for k, v in model.params.items() if not subsets.in_subset(k, "llm", 0)}
    extra = {"teacher": teacher, "mask": mask, **common.hyper(alpha=opts.alpha, beta=opts.beta),
             **({"user": gate_user} if gate_user else {})}
    result = common.fit_method(setup, tcfg, {"pair": loss}, schedule, n, frozen_extra=extra,
                          update_mask=update_mask, desc="vkd")
    result.report["mask_fraction"] = F.mask_fraction(mask)
    result.report["pruned"] = int(np.sum(pruned)) if pruned is not None else 0
    if pruned is not None:
        result.neuron_masks = {"vision": pruned}
        result.neuron_meta = {"method": "vkd", "model_type": model.hf_config.get("model_type"),
                              "note": "pruned before training; the exported model holds them"}
    result.param_masks["saliency_mask"] = mask
    if user is not None:
        result.param_masks["mask"] = user
    return result


def _and_masks(a: Mapping[str, Any], b: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Elementwise AND of two {path: mask} dicts (a path in one only keeps that one)."""
    out = {k: np.asarray(v, bool) for k, v in a.items()}
    for k, v in (b or {}).items():
        v = np.asarray(v, bool)
        out[k] = np.logical_and(out[k], v) if k in out else v
    return out
