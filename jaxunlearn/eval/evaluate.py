"""Evaluate a model on named sets of profiles: sets x tasks x modalities -> result records.

The MLLMU-Bench sets are ``forget`` (eval questions of the forget profiles), ``test`` (test
questions of the forget profiles: transformed images, paraphrased questions), ``retain`` and
``celebrity``. Besides the tasks, every set gets the mean answer-token NLL on its profiles'
training QA (task ``qa``, metric ``nll``; methods are compared by forget NLL too) and the
degeneration share of its free answers (always); judge scores are added when a judge is set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from jaxunlearn.data.pipeline import PipelineConfig
from jaxunlearn.data.schema import Benchmark, Profile
from jaxunlearn.eval.records import MODALITIES, TASKS
from jaxunlearn.eval.tasks import EvalConfig, GenerateFn, Tag, TaskResult, run_nll, run_task


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Profiles and which of their questions to ask (``eval`` or ``test``)."""

    profiles: Sequence[Profile]
    which: str = "eval"

    def __post_init__(self) -> None:
        if self.which not in ("eval", "test"):
            raise ValueError(f"EvalSet.which must be 'eval' or 'test', got {self.which!r}")


SetsLike = Mapping[str, "EvalSet | Sequence[Profile]"]


def as_eval_sets(sets: SetsLike) -> dict[str, EvalSet]:
    """Normalise ``{name: profiles | EvalSet}``; plain profiles of set ``test`` ask test
    questions, every other set its eval questions."""
    out = {}
    for name, value in sets.items():
        if isinstance(value, EvalSet):
            out[name] = value
        else:
            out[name] = EvalSet(list(value), "test" if name == "test" else "eval")
    return out


def benchmark_sets(benchmark: Benchmark, forget_split: str = "forget_10",
                   retain_split: str | None = None, *, max_profiles: int | None = None,
                   celebrity_split: str = "celebrity") -> dict[str, EvalSet]:
    """The four MLLMU-Bench sets of a forget split (``retain_split`` defaults to its
    complement ``retain_{100-pct}``); ``max_profiles`` caps retain / celebrity sizes."""
    if retain_split is None:
        pct = int(forget_split.rsplit("_", 1)[1])
        retain_split = f"retain_{100 - pct}"
    forget = benchmark.split(forget_split)
    cap = (lambda ps: ps[:max_profiles]) if max_profiles else (lambda ps: ps)
    sets = {"forget": EvalSet(forget), "test": EvalSet(forget, "test"),
            "retain": EvalSet(cap(benchmark.split(retain_split)))}
    if celebrity_split in benchmark.splits and benchmark.splits[celebrity_split]:
        sets["celebrity"] = EvalSet(cap(benchmark.split(celebrity_split)))
    return sets


@dataclasses.dataclass
class EvalResult:
    """Records and per-question predictions keyed ``"set/task/modality"``."""

    records: list[dict]
    predictions: dict[str, list[dict]]


def evaluate(model: Any, tokenizer: Any, benchmark: Benchmark | None,
             pipeline_cfg: PipelineConfig, sets: SetsLike | None = None, *,
             tasks: Sequence[str] = TASKS, modalities: Sequence[str] = MODALITIES,
             system_prompt: str | None = None, judge: Any = None,
             cfg: EvalConfig | None = None, method: str = "vanilla",
             protocol: str | None = None, step: int | None = None, nll: bool = True,
             generate_fn: GenerateFn | None = None) -> EvalResult:
    """Run ``tasks`` x ``modalities`` on every set; see :func:`evaluate_model`."""
    cfg = cfg or EvalConfig()
    if system_prompt is not None:
        cfg = dataclasses.replace(cfg, system_prompt=system_prompt)
    if sets is None:
        if benchmark is None:
            raise ValueError("evaluate: pass sets= or a benchmark to take the default sets from")
        sets = benchmark_sets(benchmark)
    records: list[dict] = []
    predictions: dict[str, list[dict]] = {}
    for set_name, es in as_eval_sets(sets).items():
        for modality in modalities:
            tag = Tag(method, set_name, modality, protocol, step)
            for kind in tasks:
                res = run_task(kind, model, tokenizer, es.profiles, pipeline_cfg, tag,
                               which=es.which, cfg=cfg, judge=judge, generate_fn=generate_fn)
                records += res.records
                predictions[f"{set_name}/{kind}/{modality}"] = res.predictions
            if nll:
                records += run_nll(model, tokenizer, es.profiles, pipeline_cfg, tag,
                                   cfg=cfg).records
    return EvalResult(records, predictions)


def evaluate_model(model: Any, tokenizer: Any, benchmark: Benchmark | None,
                   pipeline_cfg: PipelineConfig, sets: SetsLike | None = None, *,
                   tasks: Sequence[str] = TASKS, modalities: Sequence[str] = MODALITIES,
                   system_prompt: str | None = None, judge: Any = None,
                   cfg: EvalConfig | None = None, method: str = "vanilla",
                   protocol: str | None = None, step: int | None = None, nll: bool = True,
                   generate_fn: GenerateFn | None = None) -> list[dict]:
    """Result records of ``model`` on ``sets`` (default: :func:`benchmark_sets` of
    ``benchmark``, forget_10) x ``tasks`` x ``modalities``.

    Per (set, modality): classification ``accuracy`` / ``no_letter`` (+ ``likelihood_accuracy``
    when ``cfg.likelihood``), generation ``rouge1/2/L`` + ``degeneration`` (+ judge metrics),
    cloze ``accuracy`` + ``degeneration``, and ``qa``/``nll`` unless ``nll=False``.
    ``system_prompt`` (e.g. the prompting baseline's) overrides ``cfg.system_prompt``.
    """
    return evaluate(model, tokenizer, benchmark, pipeline_cfg, sets, tasks=tasks,
                    modalities=modalities, system_prompt=system_prompt, judge=judge, cfg=cfg,
                    method=method, protocol=protocol, step=step, nll=nll,
                    generate_fn=generate_fn).records


__all__ = ["EvalResult", "EvalSet", "TaskResult", "as_eval_sets", "benchmark_sets", "evaluate",
           "evaluate_model"]
