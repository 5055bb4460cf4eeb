"""SMFA — sculpted memory forgetting adapter (docs/methods.md, "smfa").

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

import dataclasses

import jax
import numpy as np

from jaxunlearn.methods import common
from jaxunlearn.methods.base import DataOptions, MethodResult, UnlearnData, register
from jaxunlearn.objectives.refusals import with_refusals
from jaxunlearn.train.driver import TrainConfig, make_setup
from jaxunlearn.train.finetune import finetune
from jaxunlearn.train.lora import lora_delta
from jaxunlearn.train.typed import field
from jaxunlearn.transforms import CRITERIA, add_delta, param_delta, sculpt, sculpt_masks


@dataclasses.dataclass(frozen=True)
class SMFAOptions(DataOptions):
    retain_size: str = field("forget", "D_r^few: forget = as many retain records as forget "
                             "records; all = every retain record", choices=("all", "forget"))
    modality: str = field("both", "which training QA: both, multi or text",
                          choices=("both", "multi", "text"))
    k: float = field(1.0, "R criterion strength: mask where k*rho*|dW_a| < |dW_f|")
    criteria: str = field("both", "masking criteria: both (C and R), C, R or none (plain MFA)",
                          choices=CRITERIA)
    sculpt_eps: float = field(1e-8, "eps in rho = ||dW_f|| / (||dW_a|| + eps)")
    refusal_seed: int = field(0, "which refusals replace the forget answers")
    anchor_epochs: int | None = field(None, "epochs of the retaining anchor (null: "
                                      "train.epochs)")


def finetune_delta(model, data: UnlearnData, tcfg: TrainConfig, recs: list[dict], *,
                   epochs: int, salt: int, desc: str) -> tuple[dict, dict]:
    """Cross-entropy fine-tune (`train.finetune`) from the model's weights on `recs`;
    returns ({param path: fp32 delta}, training report)."""
    tcfg = dataclasses.replace(tcfg, epochs=epochs)
    steps = len(common.stream(data, recs, tcfg, 0, salt))
    res = finetune(model, lambda e: common.stream(data, recs, tcfg, e, salt), tcfg,
                   steps_per_epoch=steps, desc=desc, progress=tcfg.progress)
    if res.lora is not None:
        delta = lora_delta(res.lora, tcfg.lora_config())
    else:
        trained = sorted(make_setup(model, tcfg).trainable)
        delta = param_delta(res.params, model.params, paths=trained)
    rep = {k: res.report[k] for k in ("steps", "seconds", "trainable_params", "final_loss")}
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


@register("smfa", SMFAOptions,
          description="SMFA: refusal adapter sculpted by a retaining anchor")
def smfa(model, data: UnlearnData, opts: SMFAOptions, tcfg: TrainConfig) -> MethodResult:
    """MFA on D_f^idk + D_r^few, retaining anchor on D_r^few, C/R sculpting, merge."""
    forget = with_refusals(common.records(data, "forget", opts, tcfg), opts.refusal_seed)
    retain = common.records(data, "retain", opts, tcfg)
    epochs = tcfg.epochs
    anchor_epochs = opts.anchor_epochs if opts.anchor_epochs is not None else epochs
    d_f, rep_f = finetune_delta(model, data, tcfg, forget + retain, epochs=epochs, salt=0,
                                desc="smfa mfa")
    d_a, rep_a = finetune_delta(model, data, tcfg, retain, epochs=anchor_epochs, salt=1,
                                desc="smfa anchor")
    params, rep = sculpt_and_merge(model.params, d_f, d_a, k=opts.k, criteria=opts.criteria,
                                   eps=opts.sculpt_eps)
    report = {"mfa": rep_f, "anchor": rep_a, "masked_fraction": rep["masked_fraction"],
              "rho": rep["rho"], "masked_per_tensor": rep["masked_per_tensor"],
              "refusals": sorted({r["answer"] for r in forget})}
    return MethodResult(params, report)
