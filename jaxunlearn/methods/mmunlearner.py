"""MMUnlearner (METHODS.md): Fisher-masked gradient ascent on the forget set interleaved
with unmasked descent on the retain set.

Masks (ratio >= threshold, default 1) over the parameters this run can change:
- vision tower + projector: `F(D_f^multi) / F(D_r^multi)`;
- language model: `F(D_f^multi) / F(D_r^multi ∪ text-only QA of all profiles)` (forget,
  retain and `data.others`).
Schedule per epoch: a descent step on every retain batch; after every `ascent_every` retain
steps (default floor(|D_r| / |D_f|) in batches) one masked ascent step on the next forget
batch. Gradients are clipped to norm `clip_norm` (1). The ascent's gradient is gated by the
mask (`common.gate`), so masked-out entries get exactly zero forget gradient. A mask with
LoRA needs `mask_lora: merged` (the gate then acts on the merged kernels).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.objectives import gradient as G
from jaxunlearn.stats import fisher as F
from jaxunlearn.train import subsets

SALIENCY = ("fisher", "ones", "zeros")

DEFAULTS = common.with_common(subset="all", modality="multi", fisher_threshold=1.0,
                              ascent_every=0, forget_weight=1.0, saliency="fisher", eps=1e-12)


def _is_language(path: str) -> bool:
    return subsets.in_subset(path, "llm", 0)


def saliency_masks(model, data: UnlearnData, keys: list[str],
                   cfg: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The vision and language masks over `keys` (None for `saliency: ones`)."""
    mode = cfg["saliency"]
    if mode not in SALIENCY:
        raise ValueError(f"unknown saliency {mode!r}; use one of {SALIENCY}")
    if mode == "ones":
        return None
    if mode == "zeros":
        return {k: np.zeros(model.params[k].shape, bool) for k in keys}
    gd, dt, p = model.graphdef, model.compute_dtype, model.params

    def batches(recs):
        return common.stream(data, recs, cfg, 0)

    f_f = F.empirical_fisher(gd, p, batches(data.records("forget", "multi")), keys, dtype=dt)
    f_r = F.empirical_fisher(gd, p, batches(data.records("retain", "multi")), keys, dtype=dt)
    lang = [k for k in keys if _is_language(k)]
    vis = [k for k in keys if not _is_language(k)]
    mask: dict[str, np.ndarray] = {}
    thr, eps = float(cfg["fisher_threshold"]), float(cfg["eps"])
    if vis:
        mask.update(F.saliency_mask({k: f_f.sums[k] / f_f.batches for k in vis},
                                    {k: f_r.sums[k] / f_r.batches for k in vis}, thr, eps))
    if lang:
        text = [r for which in ("forget", "retain", "others")
                if getattr(data, which) for r in data.records(which, "text")]
        f_t = (F.empirical_fisher(gd, p, batches(text), lang, dtype=dt) if text
               else F.Fisher({k: 0.0 for k in lang}, 0))
        union = F.Fisher({k: f_r.sums[k] for k in lang}, f_r.batches) + f_t
        mask.update(F.saliency_mask({k: f_f.sums[k] / f_f.batches for k in lang},
                                    union.mean(), thr, eps))
    return mask


@register("mmunlearner", DEFAULTS)
def mmunlearner(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """Fisher-masked ascent on D_f every k retain steps; descent on D_r every step."""
    if cfg["modality"] != "multi":
        raise ValueError("mmunlearner trains on multimodal data (D_f^multi, D_r^multi); "
                         "leave modality: multi")
    setup = common.make_setup(model, cfg)
    if (setup.lora_cfg is not None and cfg["saliency"] != "ones"
            and cfg["mask_lora"] != "merged"):
        raise ValueError("mmunlearner's saliency mask cannot apply to LoRA adapter weights; set "
                         "mask_lora: merged (mask the merged kernels) or train without LoRA")
    mask = saliency_masks(model, data, setup.merged_keys(), cfg)
    common.check_mask(mask, setup, cfg, "mmunlearner saliency mask")
    gd, dtype, remat = model.graphdef, model.compute_dtype, bool(cfg["remat"])
    w = float(cfg["forget_weight"])

    def loss(params, frozen, batch):
        """Masked ascent on rows flagged `ascent` = 1, plain descent otherwise (one compile)."""
        up = batch["ascent"][0]
        m = frozen.get("mask")
        if m is not None:
            m = {k: jnp.logical_or(v, up < 0.5) for k, v in m.items()}
        full = common.gate(setup.policy(params, frozen["base"]), m)
        nll = G.nll(common.logits_of(gd, full, batch, dtype=dtype, remat=remat), batch)
        return jnp.where(up > 0.5, -w, 1.0) * nll, {"nll": nll}

    forget = common.records(data, "forget", cfg)
    retain = common.records(data, "retain", cfg)
    n_f = len(common.stream(data, forget, cfg, 0, 0))
    n_r = len(common.stream(data, retain, cfg, 0, 1))
    every = int(cfg["ascent_every"]) or max(n_r // max(n_f, 1), 1)

    def schedule(epoch):
        fb = common.stream(data, forget, cfg, epoch, 0)
        for i, rb in enumerate(common.stream(data, retain, cfg, epoch, 1)):
            yield "descent", common.flagged(rb, "ascent", 0.0)
            if (i + 1) % every == 0:
                yield "ascent", common.flagged(fb[((i + 1) // every - 1) % len(fb)], "ascent", 1.0)

    extra = {"mask": mask} if mask is not None else {}
    result = common.train(setup, cfg, {"ascent": loss, "descent": loss}, schedule,
                          n_r + n_r // every, frozen_extra=extra, desc="mmunlearner")
    result.report["ascent_every"] = every
    result.report["mask_fraction"] = F.mask_fraction(mask) if mask is not None else 1.0
    result.artifacts["saliency_mask"] = mask
    return result
