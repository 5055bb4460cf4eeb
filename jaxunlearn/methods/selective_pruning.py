"""Selective pruning (Pochinkov & Schoots; docs/methods.md): prune the MLP neurons most specific
to the forget set, `score = stat(D_f) / (stat(D_r) + 1e-3)`, top `frac` of each group's
neurons globally across its layers, with MANU's pruning transform."""

from __future__ import annotations

import dataclasses

from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.manu import StatsOptions, gather_stats, select
from jaxunlearn.methods.prune_io import mask_summary
from jaxunlearn.stats.activations import derived
from jaxunlearn.train.typed import field
from jaxunlearn.transforms import prune_neurons

STATS = {"abs": "mean_abs", "freq": "pos_freq", "rms": "rms", "var": "var"}


@dataclasses.dataclass(frozen=True)
class SelectivePruningOptions(StatsOptions):
    frac: float = field(0.1, "fraction of each group's neurons to prune")
    stat: str = field("abs", "statistic: abs (mean |z|), freq (fraction z > 0), rms or var",
                      choices=tuple(STATS))
    modality: str = field("multi", "the single modality the statistics use: multi or text",
                          choices=("multi", "text"))
    groups: list[str] = field(["language"], "language and/or vision (vision needs modality "
                              "multi)")
    eps: float = field(1e-3, "denominator epsilon of the score")


def selective_scores(forget: dict, retain: dict, stat: str, eps: float = 1e-3):
    """stat(D_f) / (stat(D_r) + eps) per neuron of one group's raw statistics."""
    if stat not in STATS:
        raise ValueError(f"unknown selective pruning stat {stat!r}; use one of {sorted(STATS)}")
    return derived(forget)[STATS[stat]] / (derived(retain)[STATS[stat]] + eps)


@register("selective_pruning", SelectivePruningOptions, trains=False,
          description="Selective pruning: prune forget-specific MLP neurons (one modality)")
def selective_pruning(model, data: UnlearnData, opts: SelectivePruningOptions,
                      tcfg) -> MethodResult:
    """Statistics on one modality, ratio score, top-frac per group, pruning."""
    mod = opts.modality
    groups = list(opts.groups)
    if not groups or set(groups) - {"language", "vision"}:
        raise ValueError(f"method.options.groups must be a non-empty subset of [language, "
                         f"vision], got {groups}")
    if "vision" in groups and mod == "text":
        raise ValueError("vision neurons see no text-only data; use modality: multi or "
                         "groups: [language]")
    stats = gather_stats(model, data, opts, 0.0, modalities=(mod,))
    scores = {g: selective_scores(stats[("forget", mod)][g], stats[("retain", mod)][g],
                                  opts.stat, opts.eps) for g in groups}
    masks = select(scores, opts.frac)
    params = prune_neurons(model.params, masks, model.family)
    meta = {"method": "selective_pruning", "model_type": model.hf_config.get("model_type"),
            "frac": opts.frac, "stat": opts.stat, "modality": mod,
            "activation_site": opts.activation_site, "token_scope": opts.token_scope}
    return MethodResult(params, {"pruned": mask_summary(masks)}, neuron_masks=masks,
                        neuron_scores=scores, neuron_meta=meta)
