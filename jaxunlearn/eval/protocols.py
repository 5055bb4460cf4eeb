"""Evaluation protocols: MLLMU-Bench, PULSE, S-MLLMUn and the relearning attack.

A protocol is registered by name with a typed, frozen options dataclass (every field has a
``help`` text) and runs as ``fn(evaluator, study, options) -> ProtocolResult``: the
:class:`~jaxunlearn.eval.evaluate.Evaluator` holds the model, tokenizer, pipeline, settings,
judge and generate function; the :class:`Study` names the benchmark, the unlearning method
with its options and training config (``train:``) and the output directory. Protocols
unlearn through :func:`unlearn` (:func:`jaxunlearn.methods.base.run_method`) and fine-tune
(PULSE fine-tuned knowledge, the relearning attack) through the project's training driver
(:func:`jaxunlearn.train.finetune.finetune`). Options are validated by
:func:`jaxunlearn.train.typed.build` and documented by :func:`describe_protocols`.

Registered names: ``mllmu``, ``pulse/finetuned``, ``pulse/pretrained``, ``pulse/sequential``,
``pulse/update_target``, ``smllmun``, ``utility``, ``relearn`` and ``clear``; the CLI's
``pulse`` picks a scenario with the option ``scenario`` (default ``sequential``), see
:func:`resolve_protocol`.

Protocol names in records: ``mllmu/<forget split>``, ``pulse_ft``, ``pulse_pt``,
``sequential``, ``update_target``, ``smllmun`` and ``relearn``. Steps: 0 is the model before
unlearning, 1 after (``sequential``: request k; ``relearn``: epoch e). Given ``out_dir`` a
protocol writes ``report.json``, ``report.md`` and PNG plots there
(:func:`jaxunlearn.eval.report.write_protocol_report`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxunlearn.data.schema import Benchmark, Profile
from jaxunlearn.data.templates import PROMPTING_SYSTEM
from jaxunlearn.eval import clear_eval as CE
from jaxunlearn.eval import clear_rules as CR
from jaxunlearn.eval import mllmu_eval as ME
from jaxunlearn.eval import report as R
from jaxunlearn.eval.evaluate import EvalSet, Evaluator, benchmark_sets, complement_split
from jaxunlearn.eval.mllmu_eval import DEMO_IMAGES_ERROR
from jaxunlearn.eval.records import MODALITIES, make_record, select
from jaxunlearn.eval.report import step_table, write_protocol_report
from jaxunlearn.eval.tasks import (
    TASK_RUNNERS,
    Tag,
    run_classification,
    run_likelihood_classification,
)
from jaxunlearn.eval.utility import UtilityOptions, require_judge, run_utility, utility_markdown
from jaxunlearn.train.finetune import TrainConfig, finetune
from jaxunlearn.train.typed import build, check_value, describe, field

Records = list[dict]


# ------------------------------------------------------------------------ registry

@dataclasses.dataclass(frozen=True)
class Study:
    """What a protocol works on besides the evaluator."""

    benchmark: Benchmark
    method: str                        # unlearning method (relearn: label of the model)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # method.options
    train: TrainConfig = TrainConfig()  # train: the method's training; relearn: the attack
    forget_split: str = "forget_10"    # relearn: the split the model unlearned
    out_dir: str | os.PathLike | None = None  # report.json, report.md, plots


@dataclasses.dataclass
class ProtocolResult:
    """Records (with ``protocol`` and ``step``), the written report files and, for
    ``pulse/finetuned`` the fine-tuned model, for ``relearn`` the relearned one."""

    records: Records
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    model: Any = None


ProtocolFn = Callable[[Evaluator, Study, Any], ProtocolResult]


@dataclasses.dataclass(frozen=True)
class ProtocolSpec:
    """A registered protocol: its function, options class and one-line summary."""

    name: str
    run: ProtocolFn
    options: type
    summary: str


PROTOCOLS: dict[str, ProtocolSpec] = {}
DEFAULT_PULSE_SCENARIO = "sequential"


def register_protocol(name: str, options: type):
    """Decorator registering ``fn(evaluator, study, options)`` under ``name`` (``group`` or
    ``group/scenario``) with its frozen options dataclass."""
    if not (dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen):
        raise TypeError(f"options of protocol {name!r} must be a frozen dataclass")

    def wrap(fn: ProtocolFn) -> ProtocolFn:
        summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        PROTOCOLS[name] = ProtocolSpec(name, fn, options, summary)
        return fn
    return wrap


def protocol_names() -> list[str]:
    """The command-line protocol names (``pulse`` stands for its scenarios)."""
    return list(dict.fromkeys(n.split("/")[0] for n in PROTOCOLS))


def pulse_scenarios() -> list[str]:
    """The PULSE scenarios (``protocol.options.scenario`` of ``pulse``)."""
    return [n.split("/", 1)[1] for n in PROTOCOLS if n.startswith("pulse/")]


def _closest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; use one of {', '.join(valid)}"


def resolve_protocol(name: str, options: Mapping[str, Any] | None = None
                     ) -> tuple[ProtocolSpec, Any]:
    """(spec, typed options) of a protocol from its name and ``protocol.options``.

    ``pulse`` takes the option ``scenario`` (one of :func:`pulse_scenarios`, default
    ``sequential``). Unknown keys, wrong types and invalid values raise one ValueError.
    """
    options = dict(options or {})
    if name == "pulse":
        scenario = options.pop("scenario", DEFAULT_PULSE_SCENARIO)
        if scenario not in pulse_scenarios():
            raise ValueError(f"protocol.options.scenario {scenario!r} is not a PULSE scenario"
                             + _closest(str(scenario), pulse_scenarios()))
        name = f"pulse/{scenario}"
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}{_closest(name, protocol_names())}")
    spec = PROTOCOLS[name]
    return spec, build(spec.options, options, "protocol.options")


def run_protocol(name: str, ev: Evaluator, study: Study,
                 options: Mapping[str, Any] | Any = None) -> ProtocolResult:
    """Run a registered protocol (``pulse/<scenario>`` or ``pulse`` with ``scenario``);
    ``options``: a mapping (validated) or the protocol's options object."""
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        spec = PROTOCOLS[name] if name in PROTOCOLS else resolve_protocol(name)[0]
        if not isinstance(options, spec.options):
            raise TypeError(f"protocol {spec.name} takes {spec.options.__name__}, "
                            f"got {type(options).__name__}")
        return spec.run(ev, study, options)
    spec, opts = resolve_protocol(name, options)
    return spec.run(ev, study, opts)


# ------------------------------------------------------------------------ typed options

TASKS_HELP = "tasks evaluated: classification, generation, cloze"
MAX_PROFILES_HELP = "cap on the retain (and celebrity) profiles evaluated; null = all"


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ValueError(f"protocol.options.{key} {message}")


def _check_tasks(tasks: Sequence[str]) -> None:
    _check(bool(tasks), "tasks", "must name at least one task")
    for t in tasks:
        _check(t in TASK_RUNNERS, "tasks", f"names {t!r}; use {', '.join(TASK_RUNNERS)}")


def _positive_or_none(value: int | None, key: str) -> None:
    _check(value is None or value >= 1, key, f"must be at least 1 or null, got {value}")


UTILITY_HELP = ("options of the utility protocol (e.g. {benchmarks: [mmbench], mmbench_tsv: "
                "...}): general-utility benchmarks on the model before and after each "
                "unlearning step; null = off")


def _utility_options(value: dict | None) -> UtilityOptions | None:
    return None if value is None else build(UtilityOptions, value, "protocol.options.utility")


@dataclasses.dataclass(frozen=True)
class MllmuOptions:
    forget_splits: tuple[str, ...] = field(
        ("forget_5", "forget_10", "forget_15"),
        "forget splits, each unlearned from the input model (retain = its complement)")
    tasks: tuple[str, ...] = field(("classification", "generation", "cloze"), TASKS_HELP)
    max_profiles: int | None = field(None, MAX_PROFILES_HELP)
    unlearn: bool = field(True, "unlearn each forget split and evaluate before (step 0) and "
                                "after (step 1); false = evaluate the input model only (step "
                                "0), as eval.py does on a checkpoint")
    seed: int = field(0, "seed of eval.py's random draws: the few-shot demonstration profiles "
                         "and one test image per profile (eval.py never seeds them)")
    max_new_tokens: int = field(50, "new tokens of every benchmark answer, greedy (eval.py: "
                                    "50)")
    few_shot_images: bool = field(False, "give image demonstrations their images, as eval.py "
                                         "does for LLaVA; true is refused (the model port takes "
                                         "one image per prompt); false = image demonstrations "
                                         "as text-only ones")
    project_metrics: bool = field(True, "also the project's own evaluation beside the "
                                        "benchmark's: its prompts, option likelihood, "
                                        "no_letter, degeneration, NLL (eval: settings)")
    utility: dict | None = field(None, UTILITY_HELP)

    def __post_init__(self) -> None:
        _check(bool(self.forget_splits), "forget_splits", "must name at least one split")
        for s in self.forget_splits:
            complement_split(s)
        _check_tasks(self.tasks)
        _positive_or_none(self.max_profiles, "max_profiles")
        _check(self.max_new_tokens >= 1, "max_new_tokens",
               f"must be at least 1, got {self.max_new_tokens}")
        _check(not self.few_shot_images, "few_shot_images", "true: " + DEMO_IMAGES_ERROR)
        _utility_options(self.utility)


@dataclasses.dataclass(frozen=True)
class PulseFinetunedOptions:
    forget_split: str = field("pulse_ft_forget", "the profiles that are unlearned")
    retain_split: str = field("pulse_ft_retain", "the profiles that must stay")
    finetune: dict | None = field(None, "train: keys of a fine-tune on both splits before "
                                        "unlearning (e.g. {lr: 1e-4, epochs: 3}); null = the "
                                        "model already knows them")
    tasks: tuple[str, ...] = field(("classification",), TASKS_HELP)

    def __post_init__(self) -> None:
        if self.finetune is not None:
            build(TrainConfig, self.finetune, "protocol.options.finetune")
        _check_tasks(self.tasks)


@dataclasses.dataclass(frozen=True)
class PulsePretrainedOptions:
    threshold: float = field(0.75, "per-profile accuracy needed to count as known")
    forget_fraction: float = field(0.5, "share of the known profiles that is unlearned")
    scoring: str = field("likelihood", "how known profiles are found: option likelihood or "
                         "generated letter", choices=("likelihood", "letter"))
    candidates: str | None = field(None, "split of candidate profiles; null = celebrities")
    tasks: tuple[str, ...] = field(("classification",), TASKS_HELP)

    def __post_init__(self) -> None:
        _check(0 < self.forget_fraction < 1, "forget_fraction",
               f"must be in (0, 1), got {self.forget_fraction}")
        _check_tasks(self.tasks)


@dataclasses.dataclass(frozen=True)
class PulseSequentialOptions:
    k: int | None = field(None, "number of requests: the pulse_seq_* splits re-split into k "
                                "parts; null = one request per pulse_seq_* split")
    retain_split: str = field("retain_85", "retain profiles (method input and evaluation)")
    max_profiles: int | None = field(None, MAX_PROFILES_HELP)
    generality: bool = field(True, "image-understanding ROUGE-L on the retain profiles after "
                                   "every request")
    tasks: tuple[str, ...] = field(("classification",), TASKS_HELP)
    utility: dict | None = field(None, UTILITY_HELP)

    def __post_init__(self) -> None:
        _positive_or_none(self.k, "k")
        _positive_or_none(self.max_profiles, "max_profiles")
        _check_tasks(self.tasks)
        _utility_options(self.utility)


def _subset_choices() -> tuple[str, ...]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}["subset"].metadata["choices"]


@dataclasses.dataclass(frozen=True)
class UpdateTargetOptions:
    targets: tuple[str, ...] = field(("projector+llm", "llm", "vision", "vision_mlp", "all"),
                                     "trainable subsets compared (train.subset), one run each")
    forget_split: str = field("forget_10", "the profiles that are unlearned")
    max_profiles: int | None = field(None, MAX_PROFILES_HELP)
    tasks: tuple[str, ...] = field(("classification",), TASKS_HELP)

    def __post_init__(self) -> None:
        _check(bool(self.targets), "targets", "must name at least one subset")
        for t in self.targets:
            check_value("protocol.options.targets", t, str, _subset_choices())
        complement_split(self.forget_split)
        _positive_or_none(self.max_profiles, "max_profiles")
        _check_tasks(self.tasks)


@dataclasses.dataclass(frozen=True)
class SmllmunOptions:
    forget_split: str = field("forget_10", "the profiles that are unlearned")
    max_profiles: int | None = field(None, MAX_PROFILES_HELP)

    def __post_init__(self) -> None:
        complement_split(self.forget_split)
        _positive_or_none(self.max_profiles, "max_profiles")


@dataclasses.dataclass(frozen=True)
class ClearOptions:
    forget_split: str = field("forget10", "CLEAR forget split unlearned (retain = its "
                                          "complement, e.g. retain90); the forget tasks read "
                                          "forgetNN_perturbed")
    tasks: tuple[str, ...] = field(CR.TASKS, "CLEAR tasks (config/mm/eval.yaml): real_faces, "
                                             "real_world, retain, retain_facerec, forget, "
                                             "forget_facerec")
    unlearn: bool = field(True, "unlearn forget_split and evaluate before (step 0) and after "
                                "(step 1); false = evaluate the input model only (step 0)")
    max_rows: int | None = field(CR.DS_SIZE, "first rows of each task (eval.yaml ds_size: "
                                             "300); null = all")
    max_new_tokens: int = field(CR.MAX_NEW_TOKENS, "new tokens of each generated answer, "
                                                   "greedy (eval.yaml: 300)")
    generate_with_image: bool = field(False, "give the generation the image; false = text "
                                             "only, as mm/eval.py's re-tokenised prompt does")
    seed: int = field(0, "seed of the caption-question draw (mm/eval.py: unseeded "
                         "random.choice)")
    retain_result: str | None = field(None, "the gold (retain-trained) model's "
                                            "eval_log_aggregated.json for the forget quality "
                                            "(KS p-value, JS); null = not computed")

    def __post_init__(self) -> None:
        _check(self.forget_split.startswith("forget"), "forget_split",
               f"{self.forget_split!r} is not a CLEAR forget split (forget01, forget05, "
               "forget10, or their +tofu variants)")
        complement_split(self.forget_split)
        _check(bool(self.tasks), "tasks", "must name at least one task")
        for t in self.tasks:
            _check(t in CR.TASKS, "tasks", f"names {t!r}; use {', '.join(CR.TASKS)}")
        _positive_or_none(self.max_rows, "max_rows")
        _check(self.max_new_tokens >= 1, "max_new_tokens",
               f"must be at least 1, got {self.max_new_tokens}")


@dataclasses.dataclass(frozen=True)
class RelearnOptions:
    fraction: float = field(0.1, "share of the forget split's training QA the attacker "
                                 "fine-tunes on (for train.epochs epochs)")
    seed: int = field(0, "seed of that sample")
    tasks: tuple[str, ...] = field(("classification",), TASKS_HELP)

    def __post_init__(self) -> None:
        _check(0 < self.fraction <= 1, "fraction", f"must be in (0, 1], got {self.fraction}")
        _check_tasks(self.tasks)


def options_table(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) of every option of an options class."""
    return [(name, d["type"], d["default"], d["help"] + (
        f" ({' / '.join(d['choices'])})" if "choices" in d else ""))
        for name, d in describe(cls).items()]


def _yaml(value: Any) -> str:
    """A default as it is written in a YAML config."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def describe_protocols() -> str:
    """Markdown: every protocol, its summary and its options (name, type, default, help);
    configs/README.md carries it under "## Protocol options" (a test keeps them equal)."""
    out = []
    for name, spec in PROTOCOLS.items():
        head = (f"### pulse, `scenario: {name.split('/', 1)[1]}`" if name.startswith("pulse/")
                else f"### `{name}`")
        lines = [head, "", spec.summary.replace("``", "`"), "",
                 "| option | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{n}` | {t} | `{_yaml(d)}` | {h} |"
                  for n, t, d, h in options_table(spec.options)]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


# ------------------------------------------------------------------------ shared pieces

def unlearn(ev: Evaluator, method: str, forget: Sequence[Profile], retain: Sequence[Profile],
            *, options: Mapping[str, Any] | None = None,
            train: TrainConfig | Mapping[str, Any] | None = None,
            others: Sequence[Profile] = ()) -> tuple[Evaluator, dict]:
    """Run ``method`` (its ``options``, training config ``train``) on ``forget`` / ``retain``
    from ``ev.model``; returns (the evaluator on the edited model, the method's report).

    The prompting baseline's system prompt goes into the returned evaluator's settings.
    """
    from jaxunlearn.methods.base import UnlearnData, run_method

    data = UnlearnData(ev.tokenizer, ev.pipeline, list(forget), list(retain), list(others))
    result = run_method(method, ev.model, data, dict(options or {}), train=train)
    report = result.report
    prompt = report.get("system_prompt") or (PROMPTING_SYSTEM if method == "prompting" else None)
    return ev.with_model(result.model(ev.model), system_prompt=prompt), report


def _unlearn(ev: Evaluator, study: Study, forget: Sequence[Profile],
             retain: Sequence[Profile], **train_changes: Any) -> Evaluator:
    """:func:`unlearn` with the study's method, options and training config."""
    train = dataclasses.replace(study.train, **train_changes) if train_changes else study.train
    return unlearn(ev, study.method, forget, retain, options=study.options, train=train)[0]


def finetune_on_qa(ev: Evaluator, records: Sequence[dict], train: TrainConfig, *,
                   desc: str = "finetune", log_path: str | os.PathLike | None = None,
                   on_epoch: Callable[[int, Any], None] | None = None) -> Any:
    """``ev.model`` fine-tuned on QA ``records`` (both modalities, reshuffled each epoch,
    ``train.batch_size`` per batch) by the project's training driver
    (:func:`jaxunlearn.train.finetune`); ``on_epoch(epoch, model)`` runs after each epoch."""
    from jaxunlearn.data.pipeline import make_mixed_dataset

    pipe = dataclasses.replace(ev.pipeline, batch_size=train.batch_size)

    def batches(epoch: int):
        return make_mixed_dataset(records, ev.tokenizer,
                                  dataclasses.replace(pipe, seed=pipe.seed + epoch))

    hook = None if on_epoch is None else (
        lambda epoch, params: on_epoch(epoch, ev.model.replace(params=params)))
    result = finetune(ev.model, batches, train, steps_per_epoch=len(batches(0)),
                      log_path=log_path, desc=desc, on_epoch=hook)
    return ev.model.replace(params=result.params)


def _cap(profiles: Sequence[Profile], n: int | None) -> list[Profile]:
    return list(profiles[:n]) if n else list(profiles)


def _config(study: Study, opts: Any, ev: Evaluator, **extra: Any) -> dict:
    """The report's config: method, its options and training config, the protocol options,
    eval settings and ``extra`` (dataclasses as dicts)."""
    extra = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
             for k, v in extra.items()}
    return {"method": study.method, "method_options": dict(study.options),
            "train": dataclasses.asdict(study.train), **dataclasses.asdict(opts),
            "eval": dataclasses.asdict(ev.settings), **extra}


def _out(study: Study, name: str) -> Path | None:
    """``out_dir/name`` (the directory created), or None without an output directory."""
    if study.out_dir is None:
        return None
    Path(study.out_dir).mkdir(parents=True, exist_ok=True)
    return Path(study.out_dir) / name


# ------------------------------------------------------------------------ MLLMU-Bench

@register_protocol("mllmu", MllmuOptions)
def mllmu_protocol(ev: Evaluator, study: Study, opts: MllmuOptions) -> ProtocolResult:
    """MLLMU-Bench: per forget split, unlearn it (retain = its complement) and evaluate the
    input and unlearned models on Forget / Test / Retain / Celebrity x tasks x modality.

    The headline is the benchmark's own evaluation (``eval.py``: its prompts, demonstrations,
    extraction and scoring; :mod:`jaxunlearn.eval.mllmu_eval`), in records with metrics
    ``bench_*`` and in ``<split>_<model>_final_evaluation_results.json`` with ``eval.py``'s keys
    (percent); with ``project_metrics`` the project's evaluation is reported beside it.
    """
    if ev.settings.few_shot and not opts.project_metrics:
        raise ValueError("eval.few_shot is read only by the project's metrics; the benchmark's "
                         "evaluation uses eval.py's own demonstrations: remove eval.few_shot "
                         "or set protocol.options.project_metrics: true")
    if opts.utility is not None:
        require_judge(_utility_options(opts.utility), ev)
    bench = study.benchmark
    records: Records = []
    md = []
    extra_paths = {}
    for split in opts.forget_splits:
        proto = f"mllmu/{split}"
        models = [("vanilla", 0, ev)]
        if opts.unlearn:
            models.append((study.method, 1,
                           _unlearn(ev, study, bench.split(split),
                                    bench.split(complement_split(split)))))
        tables, rows, project, utility_notes = {}, {}, [], {}
        for label, step, e in models:
            result = ME.evaluate_benchmark(e, bench, split, tasks=opts.tasks, seed=opts.seed,
                                           max_new_tokens=opts.max_new_tokens,
                                           max_profiles=opts.max_profiles)
            records += ME.bench_records(result, label, protocol=proto, step=step)
            tables[label], rows[label] = result.table, result.rows
            if study.out_dir is not None:
                extra_paths.update(ME.write_results(study.out_dir, f"{split}_{label}", result))
            if opts.project_metrics:
                sets = benchmark_sets(bench, split, max_profiles=opts.max_profiles)
                project += e.records(sets, tasks=opts.tasks, method=label, protocol=proto,
                                     step=step)
            if opts.utility is not None:
                utility = run_utility(e, _utility_options(opts.utility), method=label,
                                      protocol=proto, step=step)
                records += utility.records
                utility_notes.update(utility.notes)
        records += project
        block = (f"## {split}\n\n### MLLMU-Bench (eval.py)\n\n" + ME.markdown(tables, rows)
                 + "\nAccuracy in %, ROUGE / BLEU means in [0, 1] (as eval.py writes them); "
                 "n = scored questions (demonstration profiles excluded).\n")
        if project:
            block += ("\n### Project metrics (its own prompts)\n\n"
                      + R.markdown_table(R.strip_protocol(project)))
        if utility_notes:
            block += "\n### General utility\n\n" + utility_markdown(
                select(records, protocol=proto), utility_notes)
        md.append(block)
    plots = []
    if opts.project_metrics:
        plots = [(f"tradeoff_{s}.png", R.main_view_plot(R.plot_tradeoff, f"mllmu/{s}"), {})
                 for s in opts.forget_splits]
        plots += [(f"modality_{s}.png", R.main_view_plot(R.plot_modality_bars, f"mllmu/{s}"),
                   {}) for s in opts.forget_splits]
    if opts.utility is not None:
        plots += [(f"utility_{s}.png", R.plot_utility_forgetting,
                   {"protocol": f"mllmu/{s}", "forget_metric": "bench_accuracy"})
                  for s in opts.forget_splits]
    paths = write_protocol_report(study.out_dir, "mllmu", _config(study, opts, ev), ev.model,
                                  records, "\n".join(md), plots)
    return ProtocolResult(records, {**extra_paths, **paths})


# ------------------------------------------------------------------------ PULSE

def _before_after(ev: Evaluator, study: Study, forget: Sequence[Profile],
                  retain: Sequence[Profile], *, protocol: str,
                  tasks: Sequence[str]) -> Records:
    """Forget / retain records before (step 0) and after (step 1) unlearning ``forget``."""
    sets = {"forget": list(forget), "retain": list(retain)}
    before = ev.records(sets, tasks=tasks, method=study.method, protocol=protocol, step=0)
    after_ev = _unlearn(ev, study, forget, retain)
    return before + after_ev.records(sets, tasks=tasks, method=study.method, protocol=protocol,
                                     step=1)


@register_protocol("pulse/finetuned", PulseFinetunedOptions)
def pulse_finetuned(ev: Evaluator, study: Study,
                    opts: PulseFinetunedOptions) -> ProtocolResult:
    """PULSE fine-tuned knowledge: the model learns the profiles of both splits (by the
    fine-tune of option ``finetune``, or before), then unlearns ``forget_split``.

    Steps: 0 = fine-tuned, 1 = unlearned; the result's model is the fine-tuned one.
    """
    bench = study.benchmark
    forget, retain = bench.split(opts.forget_split), bench.split(opts.retain_split)
    if opts.finetune is not None:
        from jaxunlearn.data.pipeline import qa_records

        recipe = build(TrainConfig, opts.finetune, "protocol.options.finetune")
        qa = qa_records([*forget, *retain], ev.pipeline.family, "train")
        ev = ev.with_model(finetune_on_qa(ev, qa, recipe, desc="pulse fine-tune",
                                          log_path=_out(study, "finetune_metrics.jsonl")))
    records = _before_after(ev, study, forget, retain, protocol="pulse_ft", tasks=opts.tasks)
    paths = write_protocol_report(study.out_dir, "pulse_ft", _config(study, opts, ev),
                                  ev.model, records, step_table(records, "pulse_ft"),
                                  R.modality_plots("pulse_ft", study.method))
    return ProtocolResult(records, paths, ev.model)


def profile_accuracy(ev: Evaluator, profiles: Sequence[Profile], *, modality: str = "multi",
                     scoring: str = "likelihood") -> dict[str, float]:
    """Classification accuracy per profile id (``scoring``: ``likelihood`` or ``letter``)."""
    tag = Tag("probe", "candidates", modality)
    if scoring == "likelihood":
        res = run_likelihood_classification(ev, profiles, tag)
    elif scoring == "letter":
        res = run_classification(ev, profiles, tag)
    else:
        raise ValueError(f"scoring must be 'likelihood' or 'letter', got {scoring!r}")
    hits: dict[str, list[bool]] = {p.id: [] for p in profiles}
    for pred in res.predictions:
        hits[pred["profile_id"]].append(bool(pred["correct"]))
    return {pid: float(np.mean(h)) for pid, h in hits.items() if h}


def select_known_profiles(ev: Evaluator, profiles: Sequence[Profile], *,
                          threshold: float = 0.75, modality: str = "multi",
                          scoring: str = "likelihood") -> tuple[list[Profile], dict[str, float]]:
    """Profiles the model already answers at or above ``threshold`` accuracy, and all scores."""
    acc = profile_accuracy(ev, profiles, modality=modality, scoring=scoring)
    return [p for p in profiles if acc.get(p.id, 0.0) >= threshold], acc


@register_protocol("pulse/pretrained", PulsePretrainedOptions)
def pulse_pretrained(ev: Evaluator, study: Study,
                     opts: PulsePretrainedOptions) -> ProtocolResult:
    """PULSE pre-trained knowledge: keep the candidates the model answers at >= ``threshold``,
    unlearn the first ``forget_fraction`` of them, keep the rest."""
    bench = study.benchmark
    pool = list(bench.celebrities if opts.candidates is None else bench.split(opts.candidates))
    known, acc = select_known_profiles(ev, pool, threshold=opts.threshold,
                                       scoring=opts.scoring)
    if len(known) < 2:
        raise ValueError(f"pulse pretrained: only {len(known)} of {len(pool)} candidate "
                         f"profiles reach accuracy {opts.threshold}; lower "
                         "protocol.options.threshold or pick protocol.options.candidates")
    k = min(max(1, round(len(known) * opts.forget_fraction)), len(known) - 1)
    forget, retain = known[:k], known[k:]
    records = _before_after(ev, study, forget, retain, protocol="pulse_pt", tasks=opts.tasks)
    config = _config(study, opts, ev, selection=acc, forget=[p.id for p in forget],
                     retain=[p.id for p in retain])
    paths = write_protocol_report(study.out_dir, "pulse_pt", config, ev.model, records,
                                  step_table(records, "pulse_pt"),
                                  R.modality_plots("pulse_pt", study.method))
    return ProtocolResult(records, paths)


def sequential_parts(benchmark: Benchmark, k: int | None = None) -> list[list[Profile]]:
    """The ``pulse_seq_1`` .. ``pulse_seq_K`` splits, or their union re-split into ``k``."""
    names = sorted((s for s in benchmark.splits if s.startswith("pulse_seq_")),
                   key=lambda s: int(s.rsplit("_", 1)[1]))
    parts = [benchmark.split(s) for s in names]
    if k is not None and k != len(parts):
        pool = [p for part in parts for p in part]
        if k > len(pool):
            raise ValueError(f"protocol.options.k={k} parts but only {len(pool)} profiles in "
                             "the pulse_seq_* splits")
        parts = [list(x) for x in np.array_split(np.array(pool, dtype=object), k)]
    parts = [list(p) for p in parts]
    if not parts or any(not p for p in parts):
        raise ValueError("pulse sequential: every request needs at least one profile (the "
                         "benchmark needs pulse_seq_* splits)")
    return parts


@register_protocol("pulse/sequential", PulseSequentialOptions)
def pulse_sequential(ev: Evaluator, study: Study,
                     opts: PulseSequentialOptions) -> ProtocolResult:
    """PULSE sustainability: K unlearning requests in turn, evaluated before and after each.

    Each evaluation (steps 0..K) covers ``forget`` (all parts), ``forgotten`` (parts
    requested so far, from step 1), ``retain`` (capped by ``max_profiles``) and, with
    ``generality``, image-understanding ROUGE-L on the retain profiles (set ``generality``).
    """
    if opts.utility is not None:
        require_judge(_utility_options(opts.utility), ev)
    parts = sequential_parts(study.benchmark, opts.k)
    all_forget = [p for part in parts for p in part]
    retain = study.benchmark.split(opts.retain_split)
    retain_eval = _cap(retain, opts.max_profiles)
    method = study.method
    records: Records = []
    utility_notes: dict[str, str] = {}
    current = ev
    for step in range(len(parts) + 1):
        if step:
            current = _unlearn(current, study, parts[step - 1], retain)
        sets: dict[str, Any] = {"forget": all_forget, "retain": retain_eval}
        if step:
            sets["forgotten"] = [p for part in parts[:step] for p in part]
        records += current.records(sets, tasks=opts.tasks, method=method,
                                   protocol="sequential", step=step)
        if opts.generality:
            tag = Tag(method, "generality", "multi", "sequential", step)
            records += current.qa_generation(retain_eval, tag, "image_understanding",
                                             source="understanding").records
        if opts.utility is not None:
            utility = run_utility(current, _utility_options(opts.utility), method=method,
                                  protocol="sequential", step=step)
            records += utility.records
            utility_notes.update(utility.notes)
    md = step_table(records, "sequential", step_label="Request")
    if opts.generality:
        md += "\n" + step_table(records, "sequential", task="image_understanding",
                                metrics=("rougeL",), step_label="Request")
    if utility_notes:
        md += "\n## General utility\n\n" + utility_markdown(records, utility_notes)
    plots = [(f"sequential_{mod}_{met}.png", R.plot_sequential,
              {"method": method, "modality": mod, "metric": met})
             for mod in MODALITIES for met in ("accuracy", "likelihood_accuracy")]
    if opts.utility is not None:
        plots.append(("utility_forgetting.png", R.plot_utility_forgetting,
                      {"protocol": "sequential"}))
    config = _config(study, opts, ev, parts=[[p.id for p in part] for part in parts])
    paths = write_protocol_report(study.out_dir, "sequential", config, ev.model, records, md,
                                  plots)
    return ProtocolResult(records, paths)


@register_protocol("pulse/update_target", UpdateTargetOptions)
def update_target_sweep(ev: Evaluator, study: Study,
                        opts: UpdateTargetOptions) -> ProtocolResult:
    """Update targets: the method once per trainable subset (``train.subset``), labelled
    ``method[target]``; step 0 is the input model, step 1 each unlearned one."""
    bench = study.benchmark
    sets = benchmark_sets(bench, opts.forget_split, max_profiles=opts.max_profiles)
    sets.pop("test", None)
    retain_train = bench.split(complement_split(opts.forget_split))
    records = ev.records(sets, tasks=opts.tasks, method="vanilla", protocol="update_target",
                         step=0)
    for target in opts.targets:
        after = _unlearn(ev, study, sets["forget"].profiles, retain_train, subset=target)
        records += after.records(sets, tasks=opts.tasks, method=f"{study.method}[{target}]",
                                 protocol="update_target", step=1)
    main = R.strip_protocol(records)
    md = R.markdown_table(main) if any(r["task"] in ("classification", "generation", "cloze")
                                       for r in main) else ""
    plots = [("tradeoff.png", R.main_view_plot(R.plot_tradeoff, "update_target"),
              {"metric": "likelihood_accuracy"}),
             ("modality_forget.png", R.main_view_plot(R.plot_modality_bars, "update_target"),
              {"metric": "likelihood_accuracy"})]
    paths = write_protocol_report(study.out_dir, "update_target", _config(study, opts, ev),
                                  ev.model, records, md, plots)
    return ProtocolResult(records, paths)


# ------------------------------------------------------------------------ S-MLLMUn

SMLLMUN_TASKS: tuple[tuple[str, str, str], ...] = (
    ("image_memory", "multi", "train"),
    ("text_memory", "text", "train"),
    ("image_understanding", "multi", "understanding"),
)


def smllmun_eval(ev: Evaluator, sets: Mapping[str, Sequence[Profile]], *, method: str,
                 step: int | None = None, protocol: str | None = "smllmun") -> Records:
    """Image memory (multimodal training QA), text memory (text-only training QA) and image
    understanding (``understanding_qa``) per set: ROUGE-1/2/L and degeneration always;
    judge ``fact`` and ``meaningful`` scores (0-10) when the evaluator has a judge."""
    if ev.judge is not None:
        ev = ev.with_settings(judge_metrics=("fact", "meaningful"))
    out: Records = []
    for set_name, profiles in sets.items():
        for task, modality, source in SMLLMUN_TASKS:
            tag = Tag(method, set_name, modality, protocol, step)
            out += ev.qa_generation(list(profiles), tag, task, source=source).records
    return out


@register_protocol("smllmun", SmllmunOptions)
def smllmun_protocol(ev: Evaluator, study: Study, opts: SmllmunOptions) -> ProtocolResult:
    """S-MLLMUn: unlearn ``forget_split``; image memory, text memory and image understanding
    scores of forget and retain before (0) and after (1)."""
    bench = study.benchmark
    forget = bench.split(opts.forget_split)
    retain = bench.split(complement_split(opts.forget_split))
    sets = {"forget": forget, "retain": _cap(retain, opts.max_profiles)}
    records = smllmun_eval(ev, sets, method=study.method, step=0)
    after = _unlearn(ev, study, forget, retain)
    records += smllmun_eval(after, sets, method=study.method, step=1)
    md = "\n".join(step_table(records, "smllmun", task=t,
                              metrics=("rougeL", "degeneration", "fact", "meaningful"))
                   for t, _, _ in SMLLMUN_TASKS)
    paths = write_protocol_report(study.out_dir, "smllmun", _config(study, opts, ev), ev.model,
                                  records,
                                  md + "\n(ROUGE-L and degeneration in %, judge scores 0-10.)\n")
    return ProtocolResult(records, paths)


# ------------------------------------------------------------------------ general utility

@register_protocol("utility", UtilityOptions)
def utility_protocol(ev: Evaluator, study: Study, opts: UtilityOptions) -> ProtocolResult:
    """General utility: MMBench (circular), MMMU, MM-Vet and LLaVA-Bench from local files,
    each scored by its authors' rule and reported with its n (the last two need a judge).

    The model is evaluated as given (method ``vanilla``, step 0); ``mllmu`` and
    ``pulse/sequential`` run it after each unlearning step with their option ``utility``.
    """
    result = run_utility(ev, opts)
    md = utility_markdown(result.records, result.notes)
    config = _config(study, opts, ev, notes=result.notes)
    paths = write_protocol_report(study.out_dir, "utility", config, ev.model, result.records,
                                  md)
    out = _out(study, "utility_rows.json")
    if out is not None:
        import json

        out.write_text(json.dumps(result.rows, indent=1, default=str), encoding="utf-8")
        paths["utility_rows.json"] = out
    return ProtocolResult(result.records, paths)


# ------------------------------------------------------------------------ CLEAR

@register_protocol("clear", ClearOptions)
def clear_protocol(ev: Evaluator, study: Study, opts: ClearOptions) -> ProtocolResult:
    """CLEAR: unlearn ``forget_split`` (retain = its complement) and evaluate the input and
    unlearned models as ``mm/eval.py`` + ``mm/calculate_metrics.py`` do: ROUGE recall, Prob.
    and Truth Ratio per task, Model Utility, and with ``retain_result`` the forget quality.

    Records: task ``clear``, set = the CLEAR task (``forget``, ``forget_facerec``, ``retain``,
    ``retain_facerec``, ``real_faces``, ``real_world``) or ``all`` for the summary metrics;
    the per-item logs go to ``<out>/<model>/eval_*.json`` with the authors' keys.
    """
    bench = study.benchmark
    split = opts.forget_split
    gold = CE.load_gold(opts.retain_result) if opts.retain_result else None
    proto = f"clear/{split}"
    models = [("vanilla", 0, ev)]
    if opts.unlearn:
        models.append((study.method, 1, _unlearn(ev, study, bench.split(split),
                                                 bench.split(complement_split(split)))))
    records: Records = []
    results, paths = {}, {}
    for label, step, e in models:
        result = CE.evaluate_clear(e, bench, split, tasks=opts.tasks, seed=opts.seed,
                                   max_rows=opts.max_rows, max_new_tokens=opts.max_new_tokens,
                                   generate_with_image=opts.generate_with_image, gold=gold)
        records += CE.clear_records(result, label, protocol=proto, step=step)
        results[label] = result
        if study.out_dir is not None:
            paths.update(CE.write_logs(study.out_dir, label, result))
    md = (f"## {split}\n\n" + CE.markdown(results)
          + "\nProb., ROUGE (ROUGE-L recall) and Truth Ratio as mm/calculate_metrics.py "
          "computes them; n = evaluated rows.\n")
    paths.update(write_protocol_report(study.out_dir, "clear", _config(study, opts, ev),
                                       ev.model, records, md))
    return ProtocolResult(records, paths)


# ------------------------------------------------------------------------ relearning

@register_protocol("relearn", RelearnOptions)
def relearning_attack(ev: Evaluator, study: Study, opts: RelearnOptions) -> ProtocolResult:
    """Relearning attack: fine-tune the (unlearned) model on ``fraction`` of the training QA
    of ``data.forget_split`` with the ``train:`` recipe, evaluating those profiles after
    every epoch (step e; step 0 = before).

    ``study.forget_split`` is the split the model unlearned; ``study.method`` labels the
    records. One training run of ``train.epochs`` epochs (one optimizer state and schedule)
    through the project's driver, evaluated from its end-of-epoch hook. Adds ``AG`` records
    (``after - before``, step None) for each accuracy metric of each modality: ``AG`` for
    ``accuracy``, ``AG_<metric>`` otherwise. The result's model is the relearned one.
    """
    from jaxunlearn.data.pipeline import qa_records

    train = study.train
    forget = study.benchmark.split(study.forget_split)
    pool = qa_records(forget, ev.pipeline.family, "train")
    if not pool:
        raise ValueError(f"relearn: the {study.forget_split} profiles have no training QA")
    n = max(1, math.ceil(opts.fraction * len(pool)))
    pick = np.random.default_rng(opts.seed).permutation(len(pool))[:n]
    subset = [pool[int(i)] for i in sorted(pick)]
    sets = {"forget": list(forget)}
    method = study.method
    records = ev.records(sets, tasks=opts.tasks, method=method, protocol="relearn", step=0)

    def after_epoch(epoch: int, model: Any) -> None:
        records.extend(ev.with_model(model).records(sets, tasks=opts.tasks, method=method,
                                                    protocol="relearn", step=epoch + 1))

    relearned = finetune_on_qa(ev, subset, train, desc="relearn", on_epoch=after_epoch,
                               log_path=_out(study, "relearn_metrics.jsonl"))
    records += relearning_gain(records, method)
    md = step_table(records, "relearn", step_label="Epoch")
    ag = [r for r in records if r["metric"].startswith("AG")]
    md += "\n" + "\n".join(f"- AG {r['modality']} {r['metric']}: {100 * r['value']:+.1f} points"
                           for r in ag) + "\n"
    plots = [(f"relearn_{mod}_{met}.png", R.plot_relearning, {"modality": mod, "metric": met})
             for mod in MODALITIES for met in ("accuracy", "likelihood_accuracy")]
    config = _config(study, opts, ev, forget_split=study.forget_split, epochs=train.epochs,
                     n_relearn_qa=n)
    paths = write_protocol_report(study.out_dir, "relearn", config, ev.model, records, md, plots)
    return ProtocolResult(records, paths, relearned)


def relearning_gain(records: Sequence[Mapping], method: str,
                    metrics: Sequence[str] = ("accuracy", "likelihood_accuracy")) -> Records:
    """``AG = value(last epoch) - value(epoch 0)`` per (set, task, modality, metric)."""
    out: Records = []
    rows = [r for r in select(records, protocol="relearn", method=method)
            if r.get("step") is not None and r["metric"] in metrics]
    keys = dict.fromkeys((r["set"], r["task"], r["modality"], r["metric"]) for r in rows)
    for s, task, mod, met in keys:
        pts = sorted((r["step"], r["value"], r["n"]) for r in rows
                     if (r["set"], r["task"], r["modality"], r["metric"]) == (s, task, mod, met))
        if len(pts) < 2 or pts[0][0] != 0:
            continue
        name = "AG" if met == "accuracy" else f"AG_{met}"
        out.append(make_record(method, s, task, mod, name, pts[-1][1] - pts[0][1], pts[-1][2],
                               protocol="relearn"))
    return out


__all__ = ["EvalSet", "Evaluator", "PROTOCOLS", "ProtocolResult", "ProtocolSpec", "Study",
           "ClearOptions", "MllmuOptions", "clear_protocol", "PulseFinetunedOptions", "PulsePretrainedOptions",
           "PulseSequentialOptions", "RelearnOptions", "SmllmunOptions", "UpdateTargetOptions",
           "describe_protocols", "finetune_on_qa", "mllmu_protocol",
           "options_table", "profile_accuracy", "protocol_names",
           "pulse_finetuned", "pulse_pretrained", "pulse_scenarios", "pulse_sequential",
           "register_protocol", "relearning_attack", "relearning_gain", "resolve_protocol",
           "run_protocol", "select_known_profiles", "sequential_parts", "smllmun_eval",
           "smllmun_protocol", "unlearn", "update_target_sweep", "utility_protocol"]
