"""VKD — visual knowledge distillation (METHODS.md): forget a person's *visual* knowledge by
training only the vision side (vision MLPs, default the deeper half, + projector) with the
LLM frozen.

1. Prune vision neurons by `I_u = mean_abs(D_vqa^f) / (mean_abs(D_vqa^r) + eps)` (text-only
   sets contribute 0 to vision neurons, so they drop out of the denominator).
2. Fisher saliency mask `m = F(D_vqa^f) / (F(D_qa^f ∪ D_vqa^r ∪ D_qa^r) + eps) >= d_F` over
   the trainable parameters. Text-only batches have exactly zero gradient with respect to
   vision-side parameters, so they enter the union's mean as batches of zeros (counted, not
   run).
3. Train `-alpha * NLL(D_vqa^f)` (gradient gated by m) `+ NLL(D_vqa^r) + beta * MSE(student
   projector output, teacher projector output)` on D_vqa^r. The text-only terms
   `NLL(D_qa^f) + NLL(D_qa^r)` of the paper's loss have zero gradient while the LLM is frozen
   and are therefore not computed.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.modeling.model import cast_floating, merge
from jaxunlearn.objectives import gradient as G
from jaxunlearn.objectives.distill import feature_mse
from jaxunlearn.stats import fisher as F
from jaxunlearn.train import subsets
from jaxunlearn.train.finetune import model_inputs

SALIENCY = ("fisher", "ones", "zeros")

DEFAULTS = common.with_common(
    subset="projector+vision_mlp", deeper_half=True, alpha=1.25, beta=0.3, lr=1e-5,
    modality="multi", prune_threshold=None, prune_fraction=0.01, fisher_threshold=1.0,
    saliency="fisher", eps=1e-8,
)


def projector_output(graphdef: Any, params: Mapping[str, jax.Array], batch: dict,
                     dtype: Any = None) -> jax.Array:
    """The projector's image features for a multimodal batch (any family)."""
    module = merge(graphdef, cast_floating(dict(params), dtype))
    inputs = model_inputs(batch)
    pix = inputs["pixel_values"].astype(dtype or jnp.float32)
    if hasattr(module, "visual"):  # Qwen-VL: host-prepared vision inputs
        vision = {k: v for k, v in inputs.items() if k.startswith("vision_")}
        return module.image_features(pix, vision)
    return module.image_features(pix)


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


def prune_mask(model, data: UnlearnData, cfg: Mapping[str, Any]) -> np.ndarray | None:
    """Vision neurons to prune ([layers, neurons] bool) or None when pruning is off."""
    from jaxunlearn.stats.activations import dataset_stats, derived

    if cfg["prune_threshold"] is None and not cfg["prune_fraction"]:
        return None
    kw = {"progress": False, "batch_size": int(cfg["batch_size"])}
    sf = derived(dataset_stats(model, data, "forget", "multi", **kw)["vision"])["mean_abs"]
    sr = derived(dataset_stats(model, data, "retain", "multi", **kw)["vision"])["mean_abs"]
    i_u = sf / (sr + float(cfg["eps"]))
    return select_top(i_u, threshold=cfg["prune_threshold"], fraction=cfg["prune_fraction"])


def fisher_mask(model, data: UnlearnData, keys: list[str], cfg: Mapping[str, Any],
                params: dict) -> dict[str, np.ndarray]:
    """m = [F(D_vqa^f) / (F(D_qa^f ∪ D_vqa^r ∪ D_qa^r) + eps) >= d_F] over `keys`."""
    if cfg["saliency"] not in SALIENCY:
        raise ValueError(f"unknown saliency {cfg['saliency']!r}; use one of {SALIENCY}")
    if cfg["saliency"] != "fisher":
        fill = cfg["saliency"] == "ones"
        return {k: np.full(params[k].shape, fill) for k in keys}

    def batches(which, modality):
        return common.stream(data, common.records(data, which, cfg, modality), cfg, 0)

    f_f = F.empirical_fisher(model.graphdef, params, batches("forget", "multi"), keys,
                             dtype=model.compute_dtype)
    f_r = F.empirical_fisher(model.graphdef, params, batches("retain", "multi"), keys,
                             dtype=model.compute_dtype)
    n_text = sum(len(batches(w, "text")) for w in ("forget", "retain")
                 if any(r["image"] is None for r in data.records(w)))
    union = F.Fisher(f_r.sums, f_r.batches + n_text)  # text batches: zero vision gradients
    return F.saliency_mask(f_f.mean(), union.mean(), float(cfg["fisher_threshold"]),
                           float(cfg["eps"]))


@register("vkd", DEFAULTS)
def vkd(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """Vision-only unlearning with feature distillation, pruning and a Fisher mask."""
    if cfg["modality"] != "multi":
        raise ValueError("vkd trains on multimodal (VQA) data only; leave modality: multi")
    setup = common.make_setup(model, cfg)
    llm = [k for k in setup.merged_keys() if subsets.in_subset(k, "llm", 0)]
    if llm:
        raise ValueError(f"vkd keeps the LLM frozen but this config trains {llm[0]}...; use a "
                         "vision-side subset (projector+vision_mlp, vision, projector)")
    artifacts: dict[str, Any] = {}
    pruned = prune_mask(model, data, cfg)
    params = dict(model.params)
    update_mask = None
    if pruned is not None and pruned.any():
        from jaxunlearn.transforms import neuron_masks_to_param_masks, prune_neurons

        params = prune_neurons(params, {"vision": pruned}, model.family)
        keep = neuron_masks_to_param_masks(params, {"vision": pruned}, model.family)
        update_mask = {k: v for k, v in keep.items() if k in setup.trainable}  # stay pruned
        setup = common.make_setup(model.replace(params=params), cfg)
    artifacts["pruned_neurons"] = pruned
    keys = setup.merged_keys()
    mask = fisher_mask(model, data, keys, cfg, params)
    artifacts["saliency_mask"] = mask
    common.check_mask(mask, setup, cfg, "vkd saliency mask")
    alpha, beta = float(cfg["alpha"]), float(cfg["beta"])
    gd, dtype, remat = model.graphdef, model.compute_dtype, bool(cfg["remat"])

    def loss(trainable, frozen, batch):
        f, r = batch["forget"], batch["retain"]
        full = setup.policy(trainable, frozen["base"])
        lf = G.nll(common.logits_of(gd, common.gate(full, frozen["mask"]), f, dtype=dtype,
                                    remat=remat), f)
        lr = G.nll(common.logits_of(gd, full, r, dtype=dtype, remat=remat), r)
        teacher = projector_output(gd, {**frozen["base"], **frozen["teacher"]}, r, dtype)
        student = projector_output(gd, full, r, dtype)
        rows = r.get("example_mask") if teacher.shape[0] == r["input_ids"].shape[0] else None
        dist = feature_mse(student, teacher, rows)
        return -alpha * lf + lr + beta * dist, {"forget_nll": lf, "retain_nll": lr,
                                                 "distill": dist}

    forget = common.records(data, "forget", cfg)
    retain = common.records(data, "retain", cfg)
    n = len(common.paired(data, forget, retain, cfg, 0))
    schedule = lambda e: (("pair", b) for b in common.paired(data, forget, retain, cfg, e))
    # the teacher: the original (unpruned) vision tower + projector over the frozen LLM
    teacher = {k: v for k, v in model.params.items() if not subsets.in_subset(k, "llm", 0)}
    result = common.train(setup, cfg, {"pair": loss}, schedule, n,
                          frozen_extra={"teacher": teacher, "mask": mask},
                          update_mask=update_mask, desc="vkd")
    result.report["mask_fraction"] = F.mask_fraction(mask)
    result.report["pruned"] = int(np.sum(pruned)) if pruned is not None else 0
    result.artifacts.update(artifacts)
    return result
