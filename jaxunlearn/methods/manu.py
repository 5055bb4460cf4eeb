"""MANU — modality-aware neuron unlearning (docs/methods.md, "manu").

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

import dataclasses
from typing import Mapping

import numpy as np

from jaxunlearn.methods.base import DataOptions, MethodResult, UnlearnData, register
from jaxunlearn.methods.prune_io import mask_summary
from jaxunlearn.stats.activations import dataset_stats, derived
from jaxunlearn.train.typed import field
from jaxunlearn.transforms import prune_neurons

KINDS = ("abs", "freq", "var", "rms")
PAPER_WEIGHTS = {"abs": 1.0, "freq": 1.0, "var": 1.0, "rms": 1.0}
OFFICIAL_WEIGHTS = {"abs": 2.0, "freq": 0.0, "var": 2.0, "rms": 2.0}
OFFICIAL_EPS = 1e-5

PAPER_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class StatsOptions(DataOptions):
    """Keys of the methods that score neurons from activation statistics."""

    activation_site: str = field("post", "activation read: post (after the nonlinearity / "
                                 "gate product) or pre", choices=("post", "pre"))
    token_scope: str = field("all", "tokens the statistics cover: all, answer or image",
                             choices=("all", "answer", "image"))
    batch_size: int | None = field(None, "statistics batch size (null: the pipeline's); "
                                   "speed only")
    seed: int | None = field(None, "seed of the few-shot retain sample (only with "
                             "retain_size: forget; null: 0)")
    progress: bool = field(True, "show progress bars")


def stats_seed(opts: StatsOptions) -> int:
    """The retain-sample seed; setting it without a retain sample is refused."""
    if opts.seed is not None and opts.retain_size != "forget":
        raise ValueError("method.options.seed only draws the few-shot retain sample; set "
                         "retain_size: forget or remove seed")
    return opts.seed or 0


@dataclasses.dataclass(frozen=True)
class ManuOptions(StatsOptions):
    alpha: float = field(0.02, "fraction of each group's neurons to prune")
    formulation: str = field("paper", "paper (the MANU paper's score) or official (the "
                             "published code's)", choices=("paper", "official"))
    weights: dict | None = field(None, "{abs, freq, var, rms} weights (null: the "
                                 "formulation's)")
    tau: float | None = field(None, "|z| > tau threshold of the freq statistic (null: 0.01 "
                              "paper / 0.1 official); refused when the freq weight is 0")
    eps: float | None = field(None, "denominator epsilon of the paper score (null: 1e-8); "
                              "refused under official (which uses 1e-5)")
    groups: list[str] = field(["language", "vision"], "neuron groups scored and pruned")
    official_quirks: bool = field(False, "official only: reproduce the published code's "
                                  "pooled ranking and row masking")


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


def _check_options(opts: ManuOptions) -> dict[str, float]:
    """The formulation's weights; options that would do nothing are refused."""
    bad = set(opts.groups) - {"language", "vision"}
    if bad or not opts.groups:
        raise ValueError(f"method.options.groups must be a non-empty subset of [language, "
                         f"vision], got {opts.groups}")
    if opts.weights is not None and set(opts.weights) - set(KINDS):
        raise ValueError(f"method.options.weights keys must be among {KINDS}, got "
                         f"{sorted(opts.weights)}")
    official = opts.formulation == "official"
    weights = opts.weights or (OFFICIAL_WEIGHTS if official else PAPER_WEIGHTS)
    if official and opts.eps is not None:
        raise ValueError("method.options.eps is not read by formulation: official (its score "
                         "uses 1e-5); remove eps or use formulation: paper")
    if opts.official_quirks and not official:
        raise ValueError("method.options.official_quirks only applies to formulation: "
                         "official; remove it or set formulation: official")
    if opts.tau is not None and not float(weights.get("freq", 0.0)):
        raise ValueError("method.options.tau only affects the freq statistic, whose weight is "
                         "0 here; set weights.freq > 0 or remove tau")
    return dict(weights)


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


def gather_stats(model, data: UnlearnData, opts: StatsOptions, tau: float,
                 modalities=("multi", "text")) -> dict[tuple[str, str], dict]:
    """Neuron statistics of forget / retain x modality."""
    out = {}
    seed = stats_seed(opts)
    for which in ("forget", "retain"):
        for mod in modalities:
            recs = (data.records("forget", mod) if which == "forget"
                    else retain_records(data, mod, opts.retain_size, seed))
            out[(which, mod)] = dataset_stats(
                model, data, which, mod, records=recs, batch_size=opts.batch_size,
                site=opts.activation_site, token_scope=opts.token_scope, tau=tau,
                progress=opts.progress)
    return out


@register("manu", ManuOptions, trains=False,
          description="MANU: prune modality-aware forget-specific MLP neurons")
def manu(model, data: UnlearnData, opts: ManuOptions, tcfg) -> MethodResult:
    """MANU: statistics, importance, per-group top-alpha selection, pruning."""
    weights = _check_options(opts)
    official = opts.formulation == "official"
    tau = float(opts.tau) if opts.tau is not None else (0.1 if official else 0.01)
    eps = float(opts.eps) if opts.eps is not None else PAPER_EPS
    groups = list(opts.groups)
    stats = gather_stats(model, data, opts, tau)
    scores = (scores_official(stats, weights, groups) if official
              else scores_paper(stats, weights, eps, groups))
    quirks = official and opts.official_quirks
    masks = select(scores, opts.alpha, pooled=quirks)
    params = prune_neurons(model.params, masks, model.family, quirks=quirks)
    meta = {"method": "manu", "model_type": model.hf_config.get("model_type"),
            "formulation": opts.formulation, "alpha": opts.alpha, "tau": tau,
            "weights": dict(weights), "activation_site": opts.activation_site,
            "token_scope": opts.token_scope, "official_quirks": quirks}
    report = {"pruned": mask_summary(masks), "tau": tau, "weights": dict(weights)}
    return MethodResult(params, report, neuron_masks=masks, neuron_scores=scores,
                        neuron_meta=meta)
