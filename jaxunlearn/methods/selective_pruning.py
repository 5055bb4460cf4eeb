"""Selective pruning (Pochinkov & Schoots; METHODS.md): prune the MLP neurons most specific
to the forget set, `score = stat(D_f) / (stat(D_r) + 1e-3)`, top `frac` of each group's
neurons globally across its layers, with MANU's pruning transform."""

from __future__ import annotations

from typing import Any

from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.manu import gather_stats, select
from jaxunlearn.methods.prune_io import mask_artifacts, mask_summary
from jaxunlearn.stats.activations import derived
from jaxunlearn.transforms import prune_neurons

STATS = {"abs": "mean_abs", "freq": "pos_freq", "rms": "rms", "var": "var"}

DEFAULTS: dict[str, Any] = {
    "frac": 0.1,                  # fraction of each group's neurons to prune
    "stat": "abs",                # abs (mean |z|) | freq (fraction z > 0) | rms | var
    "modality": "multi",          # multi | text: the single modality the statistics use
    "groups": ["language"],       # language and/or vision (vision needs modality multi)
    "eps": 1e-3,
    "activation_site": "post",    # post | pre
    "token_scope": "all",         # all | answer | image
    "retain_size": "all",         # all | forget
    "batch_size": None,
    "seed": 0,
    "progress": True,
}


def selective_scores(forget: dict, retain: dict, stat: str, eps: float = 1e-3):
    """stat(D_f) / (stat(D_r) + eps) per neuron of one group's raw statistics."""
    if stat not in STATS:
        raise ValueError(f"unknown selective pruning stat {stat!r}; use one of {sorted(STATS)}")
    return derived(forget)[STATS[stat]] / (derived(retain)[STATS[stat]] + eps)


@register("selective_pruning", DEFAULTS,
          description="Selective pruning: prune forget-specific MLP neurons (one modality)")
def selective_pruning(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """Statistics on one modality, ratio score, top-frac per group, pruning."""
    mod = cfg["modality"]
    if mod not in ("multi", "text"):
        raise ValueError(f"selective pruning modality must be multi or text, got {mod!r}")
    groups = list(cfg["groups"])
    if "vision" in groups and mod == "text":
        raise ValueError("vision neurons see no text-only data; use modality: multi or "
                         "groups: [language]")
    stats = gather_stats(model, data, cfg, 0.0, modalities=(mod,))
    scores = {g: selective_scores(stats[("forget", mod)][g], stats[("retain", mod)][g],
                                  cfg["stat"], float(cfg["eps"])) for g in groups}
    masks = select(scores, float(cfg["frac"]))
    params = prune_neurons(model.params, masks, model.family)
    meta = {"method": "selective_pruning", "model_type": model.hf_config.get("model_type"),
            "frac": cfg["frac"], "stat": cfg["stat"], "modality": mod,
            "activation_site": cfg["activation_site"], "token_scope": cfg["token_scope"]}
    return MethodResult(params, {"pruned": mask_summary(masks)},
                        mask_artifacts(masks, scores, meta))
