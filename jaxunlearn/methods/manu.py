"""MANU — modality-aware neuron unlearning (docs/methods.md, "manu").

`formulation: paper` (default): stage 1 scores each MLP neuron's importance on a dataset from
activation statistics of the two modalities (`multi` = image + prompt, `text` = named
person, no image); stage 2 ranks `S_n = I(D_f, n) / (I(D_r, n) + eps)` and prunes the top
`alpha` fraction of each group (language MLP neurons, vision MLP neurons), exactly
floor(alpha * N) per group, ties broken by the lower flat index (layer * N + neuron).

`formulation: official` is the published pipeline of franciscoliu/MANU
(`prune/prune_incremental.py::iterative_pruning` with `prune/prune_utility.py` and
`prune/activation_collect.py`; facts in docs/sources/method-reproductions.md): the output of
every MLP Linear (fc1 / fc2, or gate / up / down) of every layer is pooled per Linear name,
reduced per position over layers x examples (`jaxunlearn.stats.linear_outputs`), vision from
the multimodal data and language from the text data, the retain set limited to as many
batches as the forget set; `score = sum_k w_k * (stat_k(D_f) / (stat_k(D_r) + 1e-5) - 1)`;
per tower one threshold over its Linears (each counted once per pruned layer), ties at the
threshold kept; each Linear's output channels zeroed by its own mask in the last three layers
of the tower only.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from jaxunlearn.methods.base import DataOptions, MethodResult, UnlearnData, register
from jaxunlearn.methods.prune_io import mask_summary
from jaxunlearn.stats.activations import dataset_stats, derived
from jaxunlearn.stats.linear_outputs import linear_names, tower_stats
from jaxunlearn.train.typed import field
from jaxunlearn.transforms import linear_shapes, prune_neurons

KINDS = ("abs", "freq", "var", "rms")
PAPER_WEIGHTS = {"abs": 1.0, "freq": 1.0, "var": 1.0, "rms": 1.0}
OFFICIAL_WEIGHTS = {"abs": 2.0, "freq": 0.0, "var": 2.0, "rms": 2.0}
OFFICIAL_EPS = 1e-5
OFFICIAL_TAU = 0.1
OFFICIAL_BATCH = 4     # prune_incremental.py --batch_size default (and the README's)
OFFICIAL_LAYERS = 3    # the fixed keys name the last three layers of each tower
OFFICIAL_CHUNK = 10    # collect_feedforward_activations(chunk_size=10)

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
    activation_site: str | None = field(None, "paper: activation read, post (after the "
                                        "nonlinearity / gate product) or pre (null: post); "
                                        "refused under official (every Linear's output)",
                                        choices=("post", "pre"))
    token_scope: str | None = field(None, "paper: tokens the statistics cover, all, answer or "
                                    "image (null: all); refused under official (every "
                                    "position)", choices=("all", "answer", "image"))
    retain_size: str | None = field(None, "paper: retain records, all or forget (null: all); "
                                    "refused under official (as many batches as the forget "
                                    "set)", choices=("all", "forget"))
    batch_size: int | None = field(None, "statistics batch size (null: the pipeline's under "
                                   "paper, speed only; 4 under official, where it changes "
                                   "the per-position statistics)")
    seed: int | None = field(None, "paper: seed of the few-shot retain sample (only with "
                             "retain_size: forget); official: seed of the data order and "
                             "of the retain batches (null: 0)")
    alpha: float = field(0.02, "fraction of each group's neurons to prune (official: of its "
                         "Linears' output channels x pruned layers)")
    formulation: str = field("paper", "paper (the MANU paper's score) or official (the "
                             "published pipeline)", choices=("paper", "official"))
    weights: dict | None = field(None, "{abs, freq, var, rms} weights (null: the "
                                 "formulation's)")
    tau: float | None = field(None, "|z| > tau threshold of the freq statistic (null: 0.01 "
                              "paper / 0.1 official); refused when the freq weight is 0")
    eps: float | None = field(None, "denominator epsilon of the paper score (null: 1e-8); "
                              "refused under official (which uses 1e-5)")
    groups: list[str] = field(["language", "vision"], "neuron groups (towers) scored and "
                              "pruned")


def _single(d: Mapping[str, np.ndarray], kind: str) -> np.ndarray:
    """One paper statistic of a neuron (`var`: the biased standard deviation)."""
    if kind == "abs":
        return d["mean_abs"]
    if kind == "freq":
        return d["freq"]
    if kind == "var":
        return np.sqrt(d["var"])
    return d["rms"]


def importance_paper(multi: Mapping[str, np.ndarray], text: Mapping[str, np.ndarray] | None,
                     weights: Mapping[str, float], eps: float = 1e-8) -> np.ndarray:
    """I(D, n) of one group from its `multi` and `text` statistics (raw sums, as returned by
    `neuron_stats`). `text=None` (vision neurons): each I_k is the `multi` statistic alone."""
    a = derived(multi)
    if text is None:
        return sum(float(weights.get(k, 0.0)) * _single(a, k) for k in KINDS)
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


def select(scores: Mapping[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """Top-alpha of each group separately."""
    return {g: top_fraction(s, alpha) for g, s in scores.items()}


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
    if official:
        for key, why in (("eps", "its score uses 1e-5"),
                         ("activation_site", "it reads every MLP Linear's output"),
                         ("token_scope", "it reads every position of the batch"),
                         ("retain_size", "its retain set is as many batches as the forget "
                          "set")):
            if getattr(opts, key) is not None:
                raise ValueError(f"method.options.{key} is not read by formulation: official "
                                 f"({why}); remove {key} or use formulation: paper")
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


# ----------------------------------------------------------------------------- official

def official_records(data: UnlearnData, modality: str, batch_size: int,
                     seed: int) -> tuple[list[dict], list[dict]]:
    """(forget, retain) records of one modality in a seeded shuffled order (the published
    loaders shuffle); the retain records fill as many batches as the forget records do."""
    rng = np.random.default_rng(seed)
    forget = data.records("forget", modality)
    if not forget:
        raise ValueError(f"formulation: official needs {modality} forget QA (the "
                         f"{'vision' if modality == 'multi' else 'language'} statistics)")
    forget = [forget[int(i)] for i in rng.permutation(len(forget))]
    retain = data.records("retain", modality)
    n = -(-len(forget) // batch_size) * batch_size
    retain = [retain[int(i)] for i in rng.permutation(len(retain))[:n]]
    return forget, retain


def combined_scores(forget: Mapping[str, Mapping[str, np.ndarray]],
                    retain: Mapping[str, Mapping[str, np.ndarray]],
                    weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Per Linear: sum_k w_k * (forget_k / (retain_k + 1e-5) - 1) (float32, as published)."""
    out = {}
    for name in forget:
        total = np.zeros_like(np.asarray(forget[name]["abs"], np.float32))
        for k in KINDS:
            f = np.asarray(forget[name][k], np.float32)
            r = np.asarray(retain[name][k], np.float32)
            total = total + np.float32(weights.get(k, 0.0)) * (
                f / (r + np.float32(OFFICIAL_EPS)) - np.float32(1.0))
        out[name] = total
    return out


def threshold_select(scores: Mapping[str, np.ndarray], alpha: float,
                     copies: int) -> tuple[dict[str, np.ndarray], float]:
    """The published top-k of one tower: every Linear's scores counted `copies` times (one
    key per pruned layer), k = int(alpha * total), threshold = the k-th largest, and every
    score >= threshold selected (ties kept). NaN scores are never selected."""
    flat = np.concatenate([np.ravel(s) for s in scores.values()] * copies)
    k = int(alpha * flat.size)
    if k < 1:
        raise ValueError(f"method.options.alpha {alpha} selects nothing under formulation: "
                         f"official (int(alpha * {flat.size}) = 0 output channels); raise alpha")
    flat = np.nan_to_num(flat.astype(np.float32), nan=-np.inf)
    thr = np.sort(flat)[::-1][k - 1]
    return {n: np.nan_to_num(s, nan=-np.inf) >= thr for n, s in scores.items()}, float(thr)


def official(model, data: UnlearnData, opts: ManuOptions, weights: Mapping[str, float],
             tau: float) -> tuple[dict, dict, dict]:
    """(masks {group.linear: bool [layers, C]}, scores {group.linear: [C]}, report) of the
    published pipeline."""
    if data.pipeline.padding_side != "right":
        raise ValueError("formulation: official reads statistics per sequence position of "
                         "right-padded batches (as published); use PipelineConfig(padding_side="
                         "'right')")
    if not 0.0 < opts.alpha <= 1.0:
        raise ValueError(f"method.options.alpha must be in (0, 1], got {opts.alpha}")
    bs = opts.batch_size or OFFICIAL_BATCH
    seed = opts.seed or 0
    shapes = linear_shapes(model.params)
    masks, scores, report = {}, {}, {"batch_size": bs, "thresholds": {}, "layers": {}}
    plan = []
    for group in opts.groups:
        names = linear_names(model.params, group)
        layers = shapes[f"{group}.{names[0]}"][0]
        copies = min(OFFICIAL_LAYERS, layers)
        total = copies * sum(shapes[f"{group}.{n}"][1] for n in names)
        if int(opts.alpha * total) < 1:
            raise ValueError(f"method.options.alpha {opts.alpha} selects nothing under "
                             f"formulation: official (int(alpha * {total}) = 0 {group} output "
                             "channels); raise alpha")
        plan.append((group, names, layers, copies))
    for group, names, layers, copies in plan:
        modality = "multi" if group == "vision" else "text"
        forget, retain = official_records(data, modality, bs, seed)
        stats = {}
        for which, recs in (("forget", forget), ("retain", retain)):
            ds = data.dataset(recs, shuffle=False, batch_size=bs)
            stats[which] = tower_stats(model, ds, group, tau=tau, chunk=OFFICIAL_CHUNK,
                                       progress=opts.progress, desc=f"{which}/{group}")
        s = combined_scores(stats["forget"], stats["retain"], weights)
        sel, thr = threshold_select(s, opts.alpha, copies)
        for name in names:
            full = np.zeros(shapes[f"{group}.{name}"], bool)
            full[layers - copies:] = sel[name]
            masks[f"{group}.{name}"] = full
            scores[f"{group}.{name}"] = s[name].astype(np.float64)
        report["thresholds"][group] = thr
        report["layers"][group] = list(range(layers - copies, layers))
        report[f"{group}_batches"] = {"forget": -(-len(forget) // bs),
                                      "retain": -(-len(retain) // bs)}
    return masks, scores, report


@register("manu", ManuOptions, trains=False,
          description="MANU: prune modality-aware forget-specific MLP neurons")
def manu(model, data: UnlearnData, opts: ManuOptions, tcfg) -> MethodResult:
    """MANU: statistics, importance, selection, pruning (paper or published pipeline)."""
    weights = _check_options(opts)
    is_official = opts.formulation == "official"
    tau = float(opts.tau) if opts.tau is not None else (OFFICIAL_TAU if is_official else 0.01)
    meta = {"method": "manu", "model_type": model.hf_config.get("model_type"),
            "formulation": opts.formulation, "alpha": opts.alpha, "tau": tau,
            "weights": dict(weights)}
    if is_official:
        masks, scores, extra = official(model, data, opts, weights, tau)
        meta.update(batch_size=extra["batch_size"], layers=extra["layers"])
        report = {"pruned": mask_summary(masks), "tau": tau, "weights": dict(weights), **extra}
    else:
        opts = dataclasses.replace(opts, activation_site=opts.activation_site or "post",
                                   token_scope=opts.token_scope or "all",
                                   retain_size=opts.retain_size or "all")
        eps = float(opts.eps) if opts.eps is not None else PAPER_EPS
        stats = gather_stats(model, data, opts, tau)
        scores = scores_paper(stats, weights, eps, list(opts.groups))
        masks = select(scores, opts.alpha)
        meta.update(activation_site=opts.activation_site, token_scope=opts.token_scope)
        report = {"pruned": mask_summary(masks), "tau": tau, "weights": dict(weights)}
    params = prune_neurons(model.params, masks, model.family)
    return MethodResult(params, report, neuron_masks=masks, neuron_scores=scores,
                        neuron_meta=meta)
