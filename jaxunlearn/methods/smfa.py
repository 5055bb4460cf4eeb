"""SMFA — sculpted memory forgetting adapter (METHODS.md, "SMFA").

1. MFA: fine-tune from W_o on D_f^idk (forget prompts, answers replaced by refusals from
   `jaxunlearn.objectives.refusals`) together with D_r^few; dW_f = W_f - W_o.
2. Retaining anchor: fine-tune from W_o on D_r^few alone; dW_a.
3. Per tensor: rho = ||dW_f||_F / (||dW_a||_F + eps), C = [dW_a * dW_f < 0],
   R = [k * rho * |dW_a| < |dW_f|], M = C & R (`criteria`: both | C | R | none);
   W = W_o + dW_f * (1 - M).
With LoRA the deltas are the merged `scale * A @ B` (`train.lora.lora_delta`); with full
fine-tuning they are the differences of the trainable subset's tensors.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxunlearn.methods import common
from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.objectives.refusals import with_refusals
from jaxunlearn.train.finetune import make_nll_loss
from jaxunlearn.train.lora import lora_delta
from jaxunlearn.transforms import CRITERIA, add_delta, param_delta, sculpt, sculpt_masks

DEFAULTS: dict[str, Any] = common.with_common(
    k=1.0,                 # R criterion strength: mask where k*rho*|dW_a| < |dW_f|
    criteria="both",       # both (C and R) | C | R | none (plain MFA)
    sculpt_eps=1e-8,       # eps in rho
    retain_size="forget",  # D_r^few: as many retain records as forget records
    refusal_seed=0,        # which refusals replace the forget answers
    anchor_epochs=None,    # epochs of the retaining anchor; None: same as `epochs`
    lora=True, lora_rank=8, lora_alpha=16.0, lr=1e-4, epochs=3,
)


def finetune_delta(model, data: UnlearnData, cfg: dict, recs: list[dict], *, epochs: int,
                   salt: int, desc: str) -> tuple[dict, dict]:
    """Cross-entropy fine-tune from the model's weights on `recs`; returns
    ({param path: fp32 delta}, training report)."""
    cfg = {**cfg, "epochs": epochs}
    setup = common.make_setup(model, cfg)
    nll = make_nll_loss(model.graphdef, dtype=model.compute_dtype, remat=bool(cfg["remat"]),
                        lora_cfg=setup.lora_cfg)

    def loss(params, frozen, batch):
        return nll(params, frozen["base"], batch)

    steps = len(common.stream(data, recs, cfg, 0, salt))
    schedule = lambda e: (("nll", b) for b in common.stream(data, recs, cfg, e, salt))  # noqa: E731
    res = common.train(setup, cfg, {"nll": loss}, schedule, steps, desc=desc)
    if setup.lora_cfg is not None:
        delta = lora_delta(res.artifacts["lora"], setup.lora_cfg)
    else:
        delta = param_delta(res.params, model.params, paths=sorted(setup.trainable))
    rep = {k: res.report[k] for k in ("steps", "seconds", "trainable_params")}
    rep["final_loss"] = res.report["losses"][-1] if res.report["losses"] else None
    return delta, rep


def sculpt_and_merge(params: dict, delta_f: dict, delta_a: dict, *, k: float, criteria: str,
                     eps: float) -> tuple[dict, dict]:
    """W_o + sculpted dW_f, and a report of masked fractions and rho per tensor."""
    masks, rhos = sculpt_masks(delta_f, delta_a, k=k, criteria=criteria, eps=eps)
    new = add_delta(params, sculpt(delta_f, masks))
    sizes = {p: int(np.size(m)) for p, m in masks.items()}
    counts = {p: int(jax.device_get(m.sum())) for p, m in masks.items()}
    total = max(sum(sizes.values()), 1)
    report = {"masked_fraction": sum(counts.values()) / total,
              "masked_per_tensor": {p: counts[p] / max(sizes[p], 1) for p in masks},
              "rho": rhos}
    return new, report


@register("smfa", DEFAULTS, description="SMFA: refusal adapter sculpted by a retaining anchor")
def smfa(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """MFA on D_f^idk + D_r^few, retaining anchor on D_r^few, C/R sculpting, merge."""
    if cfg["criteria"] not in CRITERIA:
        raise ValueError(f"unknown SMFA criteria {cfg['criteria']!r}; use one of {CRITERIA}")
    if cfg["mask"] is not None:
        raise ValueError("smfa does not take a parameter mask; leave mask: null")
    forget = with_refusals(common.records(data, "forget", cfg), int(cfg["refusal_seed"]))
    retain = common.records(data, "retain", cfg)
    epochs = int(cfg["epochs"])
    anchor_epochs = int(cfg["anchor_epochs"]) if cfg["anchor_epochs"] is not None else epochs
    d_f, rep_f = finetune_delta(model, data, cfg, forget + retain, epochs=epochs, salt=0,
                                desc="smfa mfa")
    d_a, rep_a = finetune_delta(model, data, cfg, retain, epochs=anchor_epochs, salt=1,
                                desc="smfa anchor")
    params, rep = sculpt_and_merge(model.params, d_f, d_a, k=float(cfg["k"]),
                                   criteria=cfg["criteria"], eps=float(cfg["sculpt_eps"]))
    report = {"mfa": rep_f, "anchor": rep_a, "masked_fraction": rep["masked_fraction"],
              "rho": rep["rho"], "masked_per_tensor": rep["masked_per_tensor"]}
    return MethodResult(params, report, {"refusals": sorted({r["answer"] for r in forget})})
