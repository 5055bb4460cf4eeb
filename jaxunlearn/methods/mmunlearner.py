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

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, TrainingOptions, UnlearnData, register
from jaxunlearn.objectives import gradient as G
from jaxunlearn.stats import fisher as F
from jaxunlearn.train import subsets
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.typed import field

SALIENCY = ("fisher", "ones", "zeros")


@dataclasses.dataclass(frozen=True)
class MMUnlearnerOptions(TrainingOptions):
    modality: str = field("multi", "MMUnlearner trains on multimodal data only: multi",
                          choices=("multi",))
    fisher_threshold: float = field(1.0, "saliency mask = Fisher ratio >= threshold")
    ascent_every: int = field(0, "one masked ascent step after every k retain steps (0: "
                              "floor(|D_r| / |D_f|) in batches)")
    forget_weight: float = field(1.0, "weight of the ascent term")
    saliency: str = field("fisher", "ascent-gradient mask: fisher, ones (no mask) or zeros",
                          choices=SALIENCY)
    eps: float = field(1e-12, "denominator epsilon of the Fisher ratio")


def _is_language(path: str) -> bool:
    return subsets.in_subset(path, "llm", 0)


def saliency_masks(model, data: UnlearnData, keys: list[str], opts: MMUnlearnerOptions,
                   tcfg: TrainConfig) -> dict[str, np.ndarray] | None:
    """The vision and language masks over `keys` (None for `saliency: ones`)."""
    mode = opts.saliency
    if mode == "ones":
        return None
    if mode == "zeros":
        return {k: np.zeros(model.params[k].shape, bool) for k in keys}
    gd, dt, p = model.graphdef, model.compute_dtype, model.params

    def batches(recs):
        return common.stream(data, recs, tcfg, 0)

    f_f = F.empirical_fisher(gd, p, batches(common.records(data, "forget", opts, tcfg)), keys,
                             dtype=dt)
    f_r = F.empirical_fisher(gd, p, batches(common.records(data, "retain", opts, tcfg)), keys,
                             dtype=dt)
    lang = [k for k in keys if _is_language(k)]
    vis = [k for k in keys if not _is_language(k)]
    mask: dict[str, np.ndarray] = {}
    thr, eps = opts.fisher_threshold, opts.eps
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


@register("mmunlearner", MMUnlearnerOptions)
def mmunlearner(model, data: UnlearnData, opts: MMUnlearnerOptions,
                tcfg: TrainConfig) -> MethodResult:
    """Fisher-masked ascent on D_f every k retain steps; descent on D_r every step."""
    setup = common.make_setup(model, tcfg)
    user = common.load_mask(opts.mask)
    if (setup.lora_cfg is not None and (opts.saliency != "ones" or user is not None)
            and opts.mask_lora != "merged"):
        raise ValueError("mmunlearner's saliency mask cannot apply to LoRA adapter weights; set "
                         "method.options.mask_lora: merged (mask the merged kernels) or train "
                         "without LoRA")
    common.check_mask_lora(opts, setup, opts.saliency != "ones" or user is not None)
    common.check_mask(user, setup, opts)
    mask = saliency_masks(model, data, setup.merged_keys(), opts, tcfg)
    common.check_mask(mask, setup, opts, "mmunlearner saliency mask")
    gd, dtype, remat = model.graphdef, model.compute_dtype, tcfg.remat
    w = opts.forget_weight
    gate_user = user if setup.lora_cfg is not None else None

    def loss(params, frozen, batch):
        """Masked ascent on rows flagged `ascent` = 1, plain descent otherwise (one compile)."""
        up = batch["ascent"][0]
        m = frozen.get("mask")
        if m is not None:
            m = {k: jnp.logical_or(v, up < 0.5) for k, v in m.items()}
        full = common.gate(setup.policy(params, frozen["base"]), frozen.get("user"))
        full = common.gate(full, m)
        nll = G.nll(common.logits_of(gd, full, batch, dtype=dtype, remat=remat), batch)
        return jnp.where(up > 0.5, -w, 1.0) * nll, {"nll": nll}

    forget = common.records(data, "forget", opts, tcfg)
    retain = common.records(data, "retain", opts, tcfg)
    n_f = len(common.stream(data, forget, tcfg, 0, 0))
    n_r = len(common.stream(data, retain, tcfg, 0, 1))
    every = opts.ascent_every or max(n_r // max(n_f, 1), 1)

    def schedule(epoch):
        fb = common.stream(data, forget, tcfg, epoch, 0)
        for i, rb in enumerate(common.stream(data, retain, tcfg, epoch, 1)):
            yield "descent", common.flagged(rb, "ascent", 0.0)
            if (i + 1) % every == 0:
                yield "ascent", common.flagged(fb[((i + 1) // every - 1) % len(fb)], "ascent", 1.0)

    extra = {**({"mask": mask} if mask is not None else {}),
             **({"user": gate_user} if gate_user else {})}
    result = common.fit_method(setup, tcfg, {"ascent": loss, "descent": loss}, schedule,
                          n_r + n_r // every, frozen_extra=extra,
                          update_mask=user if setup.lora_cfg is None else None,
                          desc="mmunlearner")
    result.report["ascent_every"] = every
    result.report["mask_fraction"] = F.mask_fraction(mask) if mask is not None else 1.0
    if mask is not None:
        result.param_masks["saliency_mask"] = mask
    if user is not None:
        result.param_masks["mask"] = user
    return result
