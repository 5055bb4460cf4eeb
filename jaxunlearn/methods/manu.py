"""MANU — modality-aware neuron unlearning (METHODS.md, "MANU").

Stage 1 scores each MLP neuron's importance on a dataset from activation statistics of the
two modalities (`multi` = image + prompt, `text` = named person, no image); stage 2 ranks
`S_n = I(D_f, n) / (I(D_r, n) + eps)` and prunes the top `alpha` fraction of each group
(language MLP neurons, vision MLP neurons), exactly floor(alpha * N) per group, ties broken by
the lower flat index (layer * N + neuron).

`formulation: official` follows the published MANU code instead: per-neuron `mean|z|`,
`freq(|z| > 0.1)`, unbiased `std` and `rms`, from `text` data for language MLPs and from
`multi` data for vision MLPs, and `S_n = sum_k w_k * (stat_k(D_f) / (stat_k(D_r) + 1e-5) - 1)`
with w = {abs: 2, freq: 0, var: 2, rms: 2}.

Quirks of the published code (`official_quirks: true`, off by default): it pools the
statistics of all layers (and of both towers) into one ranking, so the top-alpha selection is
global over language and vision neurons together instead of per group; and it masks the
*output rows of every MLP Linear*, which for the down/fc2 projection zeroes output channel n
of the hidden state instead of neuron n's row (see `transforms.prune_neurons(quirks=True)`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.prune_io import mask_artifacts, mask_summary
from jaxunlearn.stats.activations import dataset_stats, derived
from jaxunlearn.transforms import prune_neurons

KINDS = ("abs", "freq", "var", "rms")
PAPER_WEIGHTS = {"abs": 1.0, "freq": 1.0, "var": 1.0, "rms": 1.0}
OFFICIAL_WEIGHTS = {"abs": 2.0, "freq": 0.0, "var": 2.0, "rms": 2.0}
OFFICIAL_EPS = 1e-5

DEFAULTS: dict[str, Any] = {
    "alpha": 0.02,                # fraction of each group's neurons to prune
    "formulation": "paper",       # paper | official
    "weights": None,              # {abs, freq, var, rms}; None: the formulation's weights
    "tau": None,                  # |z| > tau threshold; None: 0.01 (paper) / 0.1 (official)
    "eps": 1e-8,
    "activation_site": "post",    # post | pre
    "token_scope": "all",         # all | answer | image
    "groups": ["language", "vision"],
    "official_quirks": False,     # reproduce the published code's pooling / row masking
    "retain_size": "all",         # all | forget (few-shot D_r^few: as many records as D_f)
    "batch_size": None,           # statistics batch size; None: the pipeline's
    "seed": 0,
    "progress": True,
}


def _single(d: Mapping[str, np.ndarray], kind: str, official: bool) -> np.ndarray:
    if kind == "abs":
        return d["mean_abs"]
    if kind == "freq":
        return d["freq"]
    if kind == "var":
        return d["std"] if official else np.sqrt(d["var"])
    return d["rms"]


def importance_paper(multi: Mapping[str, np.ndarray], text: Mapping[str, np.ndarray] | None,
                     weights: Mapping[str, float], eps: float = 1e-8) -> np.ndarray:
    """I(D, n) of one group from its `multi` and `text` statistics (raw sums, as returned by
    `neuron_stats`). `text=None` (vision neurons): each I_k is the `multi` statistic alone."""
    a = derived(multi)
    if text is None:
        return sum(float(weights.get(k, 0.0)) * _single(a, k, False) for k in KINDS)
    b = derived(text)
    pairs = {"abs": (a["mean_abs"], b["mean_abs"]), "freq": (a["F"], b["F"]),
             "var": (a["var"], b["var"]), "rms": (a["rms"], b["rms"])}
    return sum(float(weights.get(k, 0.0)) * np.abs(x - y) / (x + y + eps)
               for k, (x, y) in pairs.items())


def scores_paper(stats: Mapping[tuple[str, str], Mapping], weights, eps: float,
                 groups) -> dict[str, np.ndarray]:
    """S_n = I(D_f) / (I(D_r) + eps) per group; `stats[(which, modality)][group]`."""
    out = {}
    for g in groups:
        text_f = stats[("forget", "text")][g] if g == "language" else None
        text_r = stats[("retain", "text")][g] if g == "language" else None
        i_f = importance_paper(stats[("forget", "multi")][g], text_f, weights, eps)
        i_r = importance_paper(stats[("retain", "multi")][g], text_r, weights, eps)
        out[g] = i_f / (i_r + eps)
    return out


def scores_official(stats: Mapping[tuple[str, str], Mapping], weights,
                    groups) -> dict[str, np.ndarray]:
    """The published code's score: language from `text`, vision from `multi` statistics."""
    out = {}
    for g in groups:
        mod = "text" if g == "language" else "multi"
        f, r = derived(stats[("forget", mod)][g]), derived(stats[("retain", mod)][g])
        out[g] = sum(float(weights.get(k, 0.0))
                     * (_single(f, k, True) / (_single(r, k, True) + OFFICIAL_EPS) - 1.0)
                     for k in KINDS)
    return out


def top_fraction(scores: np.ndarray, alpha: float) -> np.ndarray:
    """Bool mask of the floor(alpha * N) highest scores (N = scores.size); ties -> lower index."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha / frac must be in [0, 1], got {alpha}")
    flat = np.nan_to_num(np.asarray(scores, np.float64).ravel(), nan=-np.inf)
    k = int(np.floor(alpha * flat.size + 1e-9))
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.size, bool)
    mask[order[:k]] = True
    return mask.reshape(np.shape(scores))


def select(scores: Mapping[str, np.ndarray], alpha: float, pooled: bool = False) -> dict[str, np.ndarray]:
    """Top-alpha per group, or over all groups together (`pooled`, the official quirk)."""
    if not pooled:
        return {g: top_fraction(s, alpha) for g, s in scores.items()}
    names = list(scores)
    flat = np.concatenate([np.ravel(scores[g]) for g in names])
    mask = top_fraction(flat, alpha)
    out, start = {}, 0
    for g in names:
        size = np.size(scores[g])
        out[g] = mask[start:start + size].reshape(np.shape(scores[g]))
        start += size
    return out


def _check_cfg(cfg: Mapping[str, Any]) -> None:
    if cfg["formulation"] not in ("paper", "official"):
        raise ValueError(f"unknown MANU formulation {cfg['formulation']!r}; use paper or official")
    bad = set(cfg["groups"]) - {"language", "vision"}
    if bad or not cfg["groups"]:
        raise ValueError(f"MANU groups must be a non-empty subset of [language, vision], got "
                         f"{cfg['groups']}")
    if cfg["weights"] is not None and set(cfg["weights"]) - set(KINDS):
        raise ValueError(f"MANU weights keys must be among {KINDS}, got {sorted(cfg['weights'])}")


def retain_records(data: UnlearnData, modality: str, size: str, seed: int) -> list[dict]:
    """Retain records of one modality; `size: forget` keeps as many as the forget set has."""
    recs = data.records("retain", modality)
    if size == "forget":
        n = len(data.records("forget", modality))
        idx = np.random.default_rng(seed + 17).permutation(len(recs))[:n]
        recs = [recs[int(i)] for i in sorted(idx)]
    elif size != "all":
        raise ValueError(f"unknown retain_size {size!r}; use all or forget")
    return recs


def gather_stats(model, data: UnlearnData, cfg: Mapping[str, Any], tau: float,
                 modalities=("multi", "text")) -> dict[tuple[str, str], dict]:
    """Neuron statistics of forget / retain x modality."""
    out = {}
    for which in ("forget", "retain"):
        for mod in modalities:
            recs = (data.records("forget", mod) if which == "forget"
                    else retain_records(data, mod, cfg["retain_size"], int(cfg["seed"])))
            out[(which, mod)] = dataset_stats(
                model, data, which, mod, records=recs, batch_size=cfg["batch_size"],
                site=cfg["activation_site"], token_scope=cfg["token_scope"], tau=tau,
                progress=bool(cfg["progress"]))
    return out


@register("manu", DEFAULTS, description="MANU: prune modality-aware forget-specific MLP neurons")
def manu(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """MANU: statistics, importance, per-group top-alpha selection, pruning."""
    _check_cfg(cfg)
    official = cfg["formulation"] == "official"
    weights = cfg["weights"] or (OFFICIAL_WEIGHTS if official else PAPER_WEIGHTS)
    tau = float(cfg["tau"]) if cfg["tau"] is not None else (0.1 if official else 0.01)
    groups = list(cfg["groups"])
    stats = gather_stats(model, data, cfg, tau)
    scores = (scores_official(stats, weights, groups) if official
              else scores_paper(stats, weights, float(cfg["eps"]), groups))
    masks = select(scores, float(cfg["alpha"]), pooled=official and bool(cfg["official_quirks"]))
    params = prune_neurons(model.params, masks, model.family,
                           quirks=official and bool(cfg["official_quirks"]))
    meta = {"method": "manu", "model_type": model.hf_config.get("model_type"),
            "formulation": cfg["formulation"], "alpha": cfg["alpha"], "tau": tau,
            "weights": dict(weights), "activation_site": cfg["activation_site"],
            "token_scope": cfg["token_scope"],
            "official_quirks": official and bool(cfg["official_quirks"])}
    report = {"pruned": mask_summary(masks), "tau": tau, "weights": dict(weights)}
    return MethodResult(params, report, mask_artifacts(masks, scores, meta))
