"""MMUnlearner (docs/methods.md): Fisher-masked gradient ascent on the forget set interleaved
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

`formulation: official` follows the published code (Z1zs/MMUnlearner,
`data_process/SFRon.py::Mask_Our.prepare_weight_saliency_mask` and
`baselines/MLLMU_manifold.py::main`): the mask is `(F_f + 1e-15) / (F_r + 1e-15) >= threshold`
(entries where both Fisher values are 0 are salient), only tensors whose path contains
`proj`, `fc`, `linear`, `mlp` or `qkv` are masked (the others ascend unmasked), and the ascent
step runs at retain iterations `i % k == 0`, before that iteration's retain step, on the next
forget batch until the forget batches run out (no wrap-around). Use it with
`label_scope: all_tokens` (the published collators label every non-pad token; the Fisher
statistics then use the same labels). As published, the full ascent gradient is clipped
first and then masked (`driver.fit`'s `grad_mask`; `formulation: paper` masks inside the loss,
before the clip). Under LoRA the mask acts on the merged kernels through the gate, so it
precedes the clip there (the adapter's gradient has no kernel-shaped entries to mask).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, TrainingOptions, UnlearnData, register
from jaxunlearn.modeling.model import model_inputs
from jaxunlearn.objectives import gradient as G
from jaxunlearn.stats import fisher as F
from jaxunlearn.train import subsets
from jaxunlearn.train.driver import DROPOUT_KEY, TrainConfig
from jaxunlearn.train.typed import field

SALIENCY = ("fisher", "ones", "zeros")
# baselines/MLLMU_manifold.py::main keeps a mask entry only when its name contains one of these
OFFICIAL_KEYWORDS = ("proj", "fc", "linear", "mlp", "qkv")
OFFICIAL_EPS = 1e-15


def official_masked(path: str) -> bool:
    """Whether the published training script keeps the mask of tensor `path`."""
    return any(k in path for k in OFFICIAL_KEYWORDS)


def official_saliency_mask(f_forget: dict, f_retain: dict,
                           threshold: float = 1.0) -> dict[str, np.ndarray]:
    """The published mask: `(F_f + 1e-15) / (F_r + 1e-15) >= threshold` for the tensors
    `official_masked` keeps (the others are left out, i.e. their ascent is unmasked)."""
    out = {}
    for k, ff in f_forget.items():
        if not official_masked(k):
            continue
        ff = np.asarray(ff, np.float64)
        fr = np.asarray(f_retain[k], np.float64)
        out[k] = (ff + OFFICIAL_EPS) / (fr + OFFICIAL_EPS) >= threshold
    return out


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
    eps: float = field(1e-12, "denominator epsilon of the Fisher ratio (paper formulation; "
                       "official uses 1e-15 in numerator and denominator)")
    formulation: str = field("paper", "paper (F_f / (F_r + eps) >= threshold on every tensor, "
                             "ascent after every k retain steps) or official (the published "
                             "code: see docs/methods.md)", choices=("paper", "official"))
    label_scope: str = field("answer", "which tokens are labels (losses and Fisher): answer, "
                             "or all_tokens (every non-pad token, as the published code)",
                             choices=G.LABEL_SCOPES)


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

    split = None
    if opts.label_scope == "all_tokens":
        def split(b):  # every non-pad token of the real rows is a label (G.label_weights)
            rows = np.asarray(b["example_mask"], np.float32)[:, None]
            am = np.asarray(b["attention_mask"], np.float32)
            prev = np.concatenate([np.zeros_like(am[:, :1]), am[:, :-1]], axis=1)
            return model_inputs(b), {"input_ids": b["input_ids"], "loss_mask": am * prev * rows}

    def fisher(recs, ks, desc):
        return F.empirical_fisher(gd, p, batches(recs), ks, dtype=dt, split_inputs=split,
                                  logical_axes=model.logical_axes, desc=f"fisher {desc}")

    f_f = fisher(common.records(data, "forget", opts, tcfg), keys, "forget")
    f_r = fisher(common.records(data, "retain", opts, tcfg), keys, "retain")
    lang = [k for k in keys if _is_language(k)]
    vis = [k for k in keys if not _is_language(k)]
    mask: dict[str, np.ndarray] = {}
    thr, eps = opts.fisher_threshold, opts.eps

    def ratio_mask(ff, fr):
        if opts.formulation == "official":
            return official_saliency_mask(ff, fr, thr)
        return F.saliency_mask(ff, fr, thr, eps)

    if vis:
        mask.update(ratio_mask({k: f_f.sums[k] / f_f.batches for k in vis},
                               {k: f_r.sums[k] / f_r.batches for k in vis}))
    if lang:
        text = [r for which in ("forget", "retain", "others")
                if getattr(data, which) for r in data.records(which, "text")]
        f_t = (fisher(text, lang, "text") if text else F.Fisher({k: 0.0 for k in lang}, 0))
        union = F.Fisher({k: f_r.sums[k] for k in lang}, f_r.batches) + f_t
        mask.update(ratio_mask({k: f_f.sums[k] / f_f.batches for k in lang}, union.mean()))
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
    scope = opts.label_scope
    if opts.formulation == "official" and opts.eps != 1e-12:
        raise ValueError("method.options.eps is not read by formulation: official (it uses "
                         "1e-15); remove eps or use formulation: paper")
    gate_user = user if setup.lora_cfg is not None else None
    # official (no LoRA): clip the full gradient, then mask it (MLLMU_manifold.py::main)
    clip_then_mask = opts.formulation == "official" and setup.lora_cfg is None

    def phase_mask(frozen, batch):
        """The saliency mask on ascent batches, all-pass on descent batches."""
        up = batch["ascent"][0]
        return {k: jnp.logical_or(v, up < 0.5) for k, v in frozen.get("mask", {}).items()}

    def loss(params, frozen, batch):
        """Masked ascent on rows flagged `ascent` = 1, plain descent otherwise (one compile)."""
        up = batch["ascent"][0]
        m = None if clip_then_mask or "mask" not in frozen else phase_mask(frozen, batch)
        full = common.gate(setup.policy(params, frozen["base"], frozen.get(DROPOUT_KEY)),
                           frozen.get("user"))
        full = common.gate(full, m)
        nll = G.nll(common.logits_of(gd, full, batch, dtype=dtype, remat=remat), batch, scope)
        return jnp.where(up > 0.5, -frozen[common.HYPER]["forget_weight"], 1.0) * nll, {"nll": nll}

    forget = common.records(data, "forget", opts, tcfg)
    retain = common.records(data, "retain", opts, tcfg)
    n_f = len(common.stream(data, forget, tcfg, 0, 0))
    n_r = len(common.stream(data, retain, tcfg, 0, 1))
    every = opts.ascent_every or max(n_r // max(n_f, 1), 1)

    official = opts.formulation == "official"

    def schedule(epoch):
        fb = common.stream(data, forget, tcfg, epoch, 0)
        for i, rb in enumerate(common.stream(data, retain, tcfg, epoch, 1)):
            if official and i % every == 0 and i // every < len(fb):
                yield "ascent", common.flagged(fb[i // every], "ascent", 1.0)
            yield "descent", common.flagged(rb, "ascent", 0.0)
            if not official and (i + 1) % every == 0:
                yield "ascent", common.flagged(fb[((i + 1) // every - 1) % len(fb)], "ascent", 1.0)

    n_ascent = min(len(range(0, n_r, every)), n_f) if official else n_r // every

    extra = {**common.hyper(forget_weight=opts.forget_weight),
             **({"mask": mask} if mask is not None else {}),
             **({"user": gate_user} if gate_user else {})}
    result = common.fit_method(setup, tcfg, {"ascent": loss, "descent": loss}, schedule,
                          n_r + n_ascent, frozen_extra=extra,
                          update_mask=user if setup.lora_cfg is None else None,
                          desc="mmunlearner",
                          grad_mask=phase_mask if clip_then_mask and mask is not None else None)
    result.report["ascent_every"] = every
    result.report["formulation"] = opts.formulation
    result.report["mask_fraction"] = F.mask_fraction(mask) if mask is not None else 1.0
    if mask is not None:
        result.param_masks["saliency_mask"] = mask
    if user is not None:
        result.param_masks["mask"] = user
    return result
