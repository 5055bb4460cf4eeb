"""Evaluate a model on named sets of profiles: sets x tasks x modalities -> result records.

An :class:`Evaluator` holds everything an evaluation needs: the model, its tokenizer and data
pipeline, the settings (:class:`~jaxunlearn.eval.tasks.EvalConfig`), the judge and the
generate function (:func:`jaxunlearn.generate`, compiled once per shape and reused by every
evaluation). Tasks and protocols take it instead of those pieces one by one.

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
from jaxunlearn.eval.spmd import on_mesh
from jaxunlearn.eval.tasks import (
    EvalConfig,
    GenerateFn,
    Tag,
    TaskResult,
    run_nll,
    run_qa_generation,
    run_task,
)


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
        retain_split = complement_split(forget_split)
    forget = benchmark.split(forget_split)
    cap = (lambda ps: ps[:max_profiles]) if max_profiles else (lambda ps: ps)
    sets = {"forget": EvalSet(forget), "test": EvalSet(forget, "test"),
            "retain": EvalSet(cap(benchmark.split(retain_split)))}
    if celebrity_split in benchmark.splits and benchmark.splits[celebrity_split]:
        sets["celebrity"] = EvalSet(cap(benchmark.split(celebrity_split)))
    return sets


def complement_split(forget_split: str) -> str:
    """``forget_<pct>`` -> ``retain_<100-pct>`` (the MLLMU-Bench naming); CLEAR's
    ``forgetNN[+tofu]`` -> ``retain(100-NN)[+tofu]``."""
    from jaxunlearn.data.clear import complement

    if str(forget_split).startswith("forget") and complement(forget_split):
        return complement(forget_split)
    head, _, pct = forget_split.rpartition("_")
    if head != "forget" or not pct.isdigit() or not 0 < int(pct) < 100:
        raise ValueError(f"split {forget_split!r} has no retain complement; use a "
                         "forget_<percent> split such as forget_10")
    return f"retain_{100 - int(pct)}"


@dataclasses.dataclass
class EvalResult:
    """Records and per-question predictions keyed ``"set/task/modality"``."""

    records: list[dict]
    predictions: dict[str, list[dict]]


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """Model, tokenizer, pipeline, settings, judge and generate function of an evaluation.

    ``generate_fn`` defaults to :func:`jaxunlearn.generate` (same signature; tests pass a
    fake). Evaluators are immutable: :meth:`with_model` / :meth:`with_settings` return new
    ones, so a protocol evaluates the model before and after unlearning with one setup.
    """

    model: Any
    tokenizer: Any
    pipeline: PipelineConfig
    settings: EvalConfig = EvalConfig()
    judge: Any = None
    generate_fn: GenerateFn | None = None

    def __post_init__(self) -> None:
        if self.generate_fn is None:
            from jaxunlearn.modeling.generate import generate

            object.__setattr__(self, "generate_fn", generate)
        # several processes: the parameters on the command mesh, once per evaluator
        object.__setattr__(self, "model", on_mesh(self.model))

    @property
    def task_pipeline(self) -> PipelineConfig:
        """The pipeline with the settings' length buckets (what the tasks batch with)."""
        return self.settings.pipeline(self.pipeline)

    def with_model(self, model: Any, *, system_prompt: str | None = None) -> Evaluator:
        """The same evaluation on ``model``; ``system_prompt`` (e.g. the prompting
        baseline's) replaces the settings' one when given."""
        ev = dataclasses.replace(self, model=model)
        return ev.with_settings(system_prompt=system_prompt) if system_prompt else ev

    def with_settings(self, **changes: Any) -> Evaluator:
        """The same evaluation with some :class:`EvalConfig` fields changed."""
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, **changes))

    def task(self, kind: str, profiles: Sequence[Profile], tag: Tag, *,
             which: str = "eval") -> TaskResult:
        """One task (``classification``, ``generation``, ``cloze``) on ``profiles``."""
        return run_task(kind, self, profiles, tag, which=which)

    def nll(self, profiles: Sequence[Profile], tag: Tag) -> TaskResult:
        """Mean answer-token NLL on the profiles' training QA (task ``qa``)."""
        return run_nll(self, profiles, tag)

    def qa_generation(self, profiles: Sequence[Profile], tag: Tag, task: str, *,
                      source: str = "train") -> TaskResult:
        """Free generation on training / understanding QA pairs, recorded as ``task``."""
        return run_qa_generation(self, profiles, tag, task, source=source)

    def evaluate(self, sets: SetsLike, *, tasks: Sequence[str] = TASKS,
                 modalities: Sequence[str] = MODALITIES, method: str = "vanilla",
                 protocol: str | None = None, step: int | None = None,
                 nll: bool = True) -> EvalResult:
        """``tasks`` x ``modalities`` on every set (``{name: profiles | EvalSet}``).

        Per (set, modality): classification ``accuracy`` / ``no_letter`` (+
        ``likelihood_accuracy`` when ``settings.likelihood``), generation ``rouge1/2/L`` +
        ``degeneration`` (+ judge metrics), cloze ``accuracy`` + ``degeneration``, and
        ``qa``/``nll`` unless ``nll=False``. Records carry ``method``, ``protocol``, ``step``.
        """
        records: list[dict] = []
        predictions: dict[str, list[dict]] = {}
        for set_name, es in as_eval_sets(sets).items():
            for modality in modalities:
                tag = Tag(method, set_name, modality, protocol, step)
                for kind in tasks:
                    res = self.task(kind, es.profiles, tag, which=es.which)
                    records += res.records
                    predictions[f"{set_name}/{kind}/{modality}"] = res.predictions
                if nll:
                    records += self.nll(es.profiles, tag).records
        return EvalResult(records, predictions)

    def records(self, sets: SetsLike, **kw: Any) -> list[dict]:
        """The records of :meth:`evaluate` (same keyword arguments)."""
        return self.evaluate(sets, **kw).records


__all__ = ["EvalConfig", "EvalResult", "EvalSet", "Evaluator", "TaskResult", "as_eval_sets",
           "benchmark_sets", "complement_split"]
