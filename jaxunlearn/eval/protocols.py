"""Evaluation protocols: MLLMU-Bench, PULSE, S-MLLMUn and the relearning attack.

Each protocol runs a registered unlearning method through :func:`methods.base.run_method`,
evaluates before and after (or after every step) with :mod:`jaxunlearn.eval.evaluate`, and
returns result records carrying ``protocol`` and ``step``. Given ``out_dir`` it also writes
``report.json`` (:func:`report.write_run_report`), ``report.md`` and PNG plots there.

Protocol names in records: ``mllmu/<forget split>``, ``pulse_ft``, ``pulse_pt``,
``sequential``, ``update_target``, ``smllmun`` and ``relearn``. Steps: 0 is the model before
unlearning, 1 after (``sequential``: request k; ``relearn``: epoch e).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxunlearn.data.pipeline import PipelineConfig, qa_records
from jaxunlearn.data.schema import Benchmark, Profile
from jaxunlearn.data.templates import PROMPTING_SYSTEM
from jaxunlearn.eval import report as R
from jaxunlearn.eval._atomic import atomic_write_text
from jaxunlearn.eval.evaluate import EvalSet, benchmark_sets, evaluate
from jaxunlearn.eval.records import MODALITIES, make_record, select
from jaxunlearn.eval.tasks import EvalConfig, GenerateFn, Tag, run_qa_generation
from jaxunlearn.train.finetune import TrainConfig

Records = list[dict]
UNSCALED = frozenset({"nll", "fact", "meaningful", "factuality"})  # shown as they are


# ------------------------------------------------------------------------ shared pieces

def model_fingerprint(model: Any, sample: int = 4096) -> str:
    """A short hash of parameter names, shapes, dtypes and a strided sample of each value."""
    h = hashlib.sha256()
    for name in sorted(model.params):
        v = model.params[name]
        h.update(f"{name}:{tuple(v.shape)}:{v.dtype}".encode())
        flat = np.asarray(v).reshape(-1)
        h.update(np.ascontiguousarray(flat[:: max(1, flat.size // sample)]).tobytes())
    return h.hexdigest()[:16]


def unlearn(method: str, model: Any, tokenizer: Any, pipe: PipelineConfig,
            forget: Sequence[Profile], retain: Sequence[Profile], *,
            overrides: Mapping | None = None,
            others: Sequence[Profile] = ()) -> tuple[Any, dict]:
    """Run ``method`` on ``forget`` / ``retain``; returns (edited model, method report)."""
    from jaxunlearn.methods.base import UnlearnData, run_method

    data = UnlearnData(tokenizer, pipe, list(forget), list(retain), list(others))
    new_model, report, _ = run_method(method, model, data, dict(overrides or {}))
    return new_model, report


def _system_prompt(method: str, report: Mapping, cfg: EvalConfig) -> EvalConfig:
    """The prompting baseline answers with its system prompt at evaluation."""
    prompt = report.get("system_prompt") or (PROMPTING_SYSTEM if method == "prompting" else None)
    return dataclasses.replace(cfg, system_prompt=prompt) if prompt else cfg


def _strip(records: Sequence[Mapping], method: str | None = None) -> Records:
    """Records without protocol/step (for the main-table layout), optionally renamed."""
    return [{k: v for k, v in r.items() if k not in ("protocol", "step")}
            | ({"method": method} if method else {}) for r in records]


def step_table(records: Sequence[Mapping], protocol: str, *, task: str = "classification",
               metrics: Sequence[str] = ("accuracy", "likelihood_accuracy"),
               step_label: str = "Step") -> str:
    """Markdown with one row per step: (set, modality, metric) columns for one task
    (shares in %, scores in :data:`UNSCALED` as they are)."""
    rows = [r for r in select(records, protocol=protocol, task=task)
            if r.get("step") is not None and r["metric"] in metrics]
    if not rows:
        return ""
    cols = list(dict.fromkeys((r["method"], r["set"], r["modality"], r["metric"])
                              for r in rows))
    steps = sorted({r["step"] for r in rows})
    head = [f"{m} {s} {mod} {met}" for m, s, mod, met in cols]
    lines = [f"| {step_label} | " + " | ".join(head) + " |", "|---|" + "---:|" * len(cols)]
    for st in steps:
        cells = []
        for m, s, mod, met in cols:
            v = [r["value"] for r in rows if r["step"] == st and r["method"] == m
                 and r["set"] == s and r["modality"] == mod and r["metric"] == met]
            scale = 1.0 if met in UNSCALED else 100.0
            cells.append(f"{scale * v[0]:.{1 if scale > 1 else 3}f}" if v else "–")
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_protocol_report(out_dir: str | os.PathLike | None, protocol: str, config: Mapping,
                          model: Any, records: Sequence[Mapping], markdown: str,
                          plots: Sequence[tuple[str, Any, dict]] = ()) -> dict[str, Path]:
    """Write report.json, report.md and plots (``(file name, plot fn, kwargs)``) to
    ``out_dir``; plots without data are skipped. Returns the written paths."""
    if out_dir is None:
        return {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, fn, kw in plots:
        try:
            fn(records, out / name, **kw)
        except ValueError:  # nothing to plot for this view
            continue
        paths[name] = out / name
    md = out / "report.md"
    atomic_write_text(md, f"# {protocol}\n\n{markdown}")
    paths["report.md"] = md
    paths["report.json"] = R.write_run_report(out, {"protocol": protocol, **config},
                                              model_fingerprint(model), records)
    return paths


def _eval(model: Any, tokenizer: Any, pipe: PipelineConfig, sets: Mapping[str, Any], *,
          cfg: EvalConfig, method: str, protocol: str, step: int | None,
          tasks: Sequence[str], judge: Any = None, nll: bool = True,
          generate_fn: GenerateFn | None = None) -> Records:
    return evaluate(model, tokenizer, None, pipe, sets, tasks=tasks, cfg=cfg, judge=judge,
                    method=method, protocol=protocol, step=step, nll=nll,
                    generate_fn=generate_fn).records


def _cap(profiles: Sequence[Profile], n: int | None) -> list[Profile]:
    return list(profiles[:n]) if n else list(profiles)


def _config(**kw: Any) -> dict:
    return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
            for k, v in kw.items()}


# ------------------------------------------------------------------------ MLLMU-Bench

def mllmu_protocol(model: Any, tokenizer: Any, benchmark: Benchmark, pipe: PipelineConfig,
                   method: str, *, overrides: Mapping | None = None,
                   forget_splits: Sequence[str] = ("forget_5", "forget_10", "forget_15"),
                   tasks: Sequence[str] = ("classification", "generation", "cloze"),
                   cfg: EvalConfig | None = None, judge: Any = None,
                   max_profiles: int | None = None, out_dir: str | os.PathLike | None = None,
                   generate_fn: GenerateFn | None = None) -> Records:
    """For each forget split: unlearn it (retain = its complement), evaluate vanilla and the
    unlearned model on Forget / Test / Retain / Celebrity x tasks x {multi, text}."""
    cfg = cfg or EvalConfig()
    records: Records = []
    md = []
    for split in forget_splits:
        proto = f"mllmu/{split}"
        sets = benchmark_sets(benchmark, split, max_profiles=max_profiles)
        pct = int(split.rsplit("_", 1)[1])
        retain_train = benchmark.split(f"retain_{100 - pct}")
        before = _eval(model, tokenizer, pipe, sets, cfg=cfg, method="vanilla", protocol=proto,
                       step=0, tasks=tasks, judge=judge, generate_fn=generate_fn)
        new, rep = unlearn(method, model, tokenizer, pipe, sets["forget"].profiles,
                           retain_train, overrides=overrides)
        after = _eval(new, tokenizer, pipe, sets, cfg=_system_prompt(method, rep, cfg),
                      method=method, protocol=proto, step=1, tasks=tasks, judge=judge,
                      generate_fn=generate_fn)
        records += before + after
        md.append(f"## {split}\n\n" + R.markdown_table(_strip(before + after)))
    plots = [(f"tradeoff_{s}.png", _plot_main(R.plot_tradeoff, f"mllmu/{s}"), {})
             for s in forget_splits]
    plots += [(f"modality_{s}.png", _plot_main(R.plot_modality_bars, f"mllmu/{s}"), {})
              for s in forget_splits]
    write_protocol_report(out_dir, "mllmu", _config(method=method, overrides=overrides,
                                                    forget_splits=list(forget_splits), eval=cfg),
                          model, records, "\n".join(md), plots)
    return records


def _plot_main(fn, protocol: str):
    """A plot function drawing the main-table view of one protocol's records."""
    def plot(records, path, **kw):
        return fn(_strip(select(records, protocol=protocol)), path, **kw)
    return plot


# ------------------------------------------------------------------------ PULSE

def _before_after(model: Any, tokenizer: Any, pipe: PipelineConfig, method: str,
                  forget: Sequence[Profile], retain: Sequence[Profile], sets: Mapping, *,
                  protocol: str, overrides: Mapping | None, cfg: EvalConfig,
                  tasks: Sequence[str], judge: Any,
                  generate_fn: GenerateFn | None) -> tuple[Records, Any]:
    before = _eval(model, tokenizer, pipe, sets, cfg=cfg, method=method, protocol=protocol,
                   step=0, tasks=tasks, judge=judge, generate_fn=generate_fn)
    new, rep = unlearn(method, model, tokenizer, pipe, forget, retain, overrides=overrides)
    after = _eval(new, tokenizer, pipe, sets, cfg=_system_prompt(method, rep, cfg),
                  method=method, protocol=protocol, step=1, tasks=tasks, judge=judge,
                  generate_fn=generate_fn)
    return before + after, new


def pulse_finetuned(model: Any, tokenizer: Any, benchmark: Benchmark, pipe: PipelineConfig,
                    method: str, *, overrides: Mapping | None = None,
                    train_cfg: TrainConfig | None = None,
                    forget_split: str = "pulse_ft_forget", retain_split: str = "pulse_ft_retain",
                    tasks: Sequence[str] = ("classification",), cfg: EvalConfig | None = None,
                    judge: Any = None, out_dir: str | os.PathLike | None = None,
                    generate_fn: GenerateFn | None = None) -> tuple[Records, Any]:
    """PULSE fine-tuned knowledge: fine-tune on the N profiles of both splits (skipped when
    ``train_cfg`` is None, i.e. ``model`` already knows them), unlearn ``forget_split``.

    Returns (records with steps 0 = fine-tuned, 1 = unlearned, the fine-tuned model).
    """
    from jaxunlearn.demo.vanilla import train_on_qa

    cfg = cfg or EvalConfig()
    forget, retain = benchmark.split(forget_split), benchmark.split(retain_split)
    if train_cfg is not None:
        recs = qa_records([*forget, *retain], pipe.family, "train")
        model, _ = train_on_qa(model, recs, tokenizer, pipe, train_cfg, progress=cfg.progress,
                               desc="pulse fine-tune")
    sets = {"forget": forget, "retain": retain}
    records, _ = _before_after(model, tokenizer, pipe, method, forget, retain, sets,
                               protocol="pulse_ft", overrides=overrides, cfg=cfg, tasks=tasks,
                               judge=judge, generate_fn=generate_fn)
    write_protocol_report(out_dir, "pulse_ft",
                          _config(method=method, overrides=overrides, eval=cfg,
                                  train=train_cfg, forget_split=forget_split),
                          model, records, step_table(records, "pulse_ft"),
                          _modality_plots("pulse_ft", method))
    return records, model


def profile_accuracy(model: Any, tokenizer: Any, profiles: Sequence[Profile],
                     pipe: PipelineConfig, *, modality: str = "multi",
                     scoring: str = "likelihood", cfg: EvalConfig | None = None,
                     generate_fn: GenerateFn | None = None) -> dict[str, float]:
    """Classification accuracy per profile id (``scoring``: ``likelihood`` or ``letter``)."""
    from jaxunlearn.eval.tasks import run_classification, run_likelihood_classification

    cfg = cfg or EvalConfig()
    tag = Tag("probe", "candidates", modality)
    if scoring == "likelihood":
        res = run_likelihood_classification(model, tokenizer, profiles, pipe, tag, cfg=cfg)
    elif scoring == "letter":
        res = run_classification(model, tokenizer, profiles, pipe, tag, cfg=cfg,
                                 generate_fn=generate_fn)
    else:
        raise ValueError(f"scoring must be 'likelihood' or 'letter', got {scoring!r}")
    hits: dict[str, list[bool]] = {p.id: [] for p in profiles}
    for pred in res.predictions:
        hits[pred["profile_id"]].append(bool(pred["correct"]))
    return {pid: float(np.mean(h)) for pid, h in hits.items() if h}


def select_known_profiles(model: Any, tokenizer: Any, profiles: Sequence[Profile],
                          pipe: PipelineConfig, *, threshold: float = 0.75,
                          modality: str = "multi", scoring: str = "likelihood",
                          cfg: EvalConfig | None = None) -> tuple[list[Profile], dict[str, float]]:
    """Profiles the model already answers at or above ``threshold`` accuracy, and all scores."""
    acc = profile_accuracy(model, tokenizer, profiles, pipe, modality=modality,
                           scoring=scoring, cfg=cfg)
    return [p for p in profiles if acc.get(p.id, 0.0) >= threshold], acc


def pulse_pretrained(model: Any, tokenizer: Any, benchmark: Benchmark, pipe: PipelineConfig,
                     method: str, *, overrides: Mapping | None = None, threshold: float = 0.75,
                     forget_fraction: float = 0.5, candidates: Sequence[Profile] | None = None,
                     scoring: str = "likelihood", tasks: Sequence[str] = ("classification",),
                     cfg: EvalConfig | None = None, judge: Any = None,
                     out_dir: str | os.PathLike | None = None,
                     generate_fn: GenerateFn | None = None) -> Records:
    """PULSE pre-trained knowledge: keep the candidates (default: celebrities) the model
    answers at >= ``threshold``, unlearn the first ``forget_fraction`` of them, keep the rest."""
    cfg = cfg or EvalConfig()
    pool = list(benchmark.celebrities if candidates is None else candidates)
    known, acc = select_known_profiles(model, tokenizer, pool, pipe, threshold=threshold,
                                       scoring=scoring, cfg=cfg)
    if len(known) < 2:
        raise ValueError(f"pulse_pretrained: only {len(known)} of {len(pool)} candidate profiles "
                         f"reach accuracy {threshold}; lower threshold= or pass candidates=")
    k = min(max(1, round(len(known) * forget_fraction)), len(known) - 1)
    forget, retain = known[:k], known[k:]
    records, _ = _before_after(model, tokenizer, pipe, method, forget, retain,
                               {"forget": forget, "retain": retain}, protocol="pulse_pt",
                               overrides=overrides, cfg=cfg, tasks=tasks, judge=judge,
                               generate_fn=generate_fn)
    write_protocol_report(out_dir, "pulse_pt",
                          _config(method=method, overrides=overrides, eval=cfg,
                                  threshold=threshold, selection=acc,
                                  forget=[p.id for p in forget], retain=[p.id for p in retain]),
                          model, records, step_table(records, "pulse_pt"),
                          _modality_plots("pulse_pt", method))
    return records


def _modality_plots(protocol: str, method: str) -> list[tuple[str, Any, dict]]:
    """Multi-vs-text bars of the forget set after unlearning (vanilla = step 0)."""
    def plot(records, path, **kw):
        rows = select(records, protocol=protocol)
        last = max(r["step"] for r in rows)
        main = (_strip([r for r in rows if r["step"] == 0], "vanilla")
                + _strip([r for r in rows if r["step"] == last], method))
        return R.plot_modality_bars(main, path, **kw)
    return [("modality_forget.png", plot, {"metric": "likelihood_accuracy"}),
            ("modality_forget_letter.png", plot, {})]


def pulse_sequential(model: Any, tokenizer: Any, benchmark: Benchmark, pipe: PipelineConfig,
                     method: str, *, k: int | None = None,
                     parts: Sequence[Sequence[Profile]] | None = None,
                     retain_split: str = "retain_85", overrides: Mapping | None = None,
                     tasks: Sequence[str] = ("classification",), cfg: EvalConfig | None = None,
                     max_profiles: int | None = None, generality: bool = True,
                     judge: Any = None, out_dir: str | os.PathLike | None = None,
                     generate_fn: GenerateFn | None = None) -> Records:
    """PULSE sustainability: K unlearning requests in turn, evaluated before and after each.

    ``parts`` defaults to the benchmark's ``pulse_seq_1`` .. ``pulse_seq_K`` splits (all of
    them, or the union re-split into ``k`` parts). Each evaluation (steps 0..K) covers
    ``forget`` (all parts), ``forgotten`` (parts requested so far, from step 1), ``retain``
    (capped by ``max_profiles``) and, with ``generality``, image-understanding ROUGE-L on
    the retain profiles (set ``generality``, task ``image_understanding``).
    """
    cfg = cfg or EvalConfig()
    if parts is None:
        names = sorted((s for s in benchmark.splits if s.startswith("pulse_seq_")),
                       key=lambda s: int(s.rsplit("_", 1)[1]))
        parts = [benchmark.split(s) for s in names]
        if k is not None and k != len(parts):
            pool = [p for part in parts for p in part]
            if k > len(pool):
                raise ValueError(f"pulse_sequential: k={k} parts but only {len(pool)} profiles")
            parts = [list(x) for x in np.array_split(np.array(pool, dtype=object), k)]
    parts = [list(p) for p in parts]
    if not parts or any(not p for p in parts):
        raise ValueError("pulse_sequential: every request needs at least one profile")
    all_forget = [p for part in parts for p in part]
    retain = benchmark.split(retain_split)
    retain_eval = _cap(retain, max_profiles)
    records: Records = []
    current, eval_cfg = model, cfg
    for step in range(len(parts) + 1):
        if step:
            current, rep = unlearn(method, current, tokenizer, pipe, parts[step - 1], retain,
                                   overrides=overrides)
            eval_cfg = _system_prompt(method, rep, cfg)
        sets: dict[str, Any] = {"forget": all_forget, "retain": retain_eval}
        if step:
            sets["forgotten"] = [p for part in parts[:step] for p in part]
        records += _eval(current, tokenizer, pipe, sets, cfg=eval_cfg, method=method,
                         protocol="sequential", step=step, tasks=tasks, judge=judge,
                         generate_fn=generate_fn)
        if generality:
            tag = Tag(method, "generality", "multi", "sequential", step)
            records += run_qa_generation(current, tokenizer, retain_eval, pipe, tag,
                                         "image_understanding", source="understanding",
                                         cfg=eval_cfg, generate_fn=generate_fn).records
    md = step_table(records, "sequential", step_label="Request")
    if generality:
        md += "\n" + step_table(records, "sequential", task="image_understanding",
                                metrics=("rougeL",), step_label="Request")
    plots = [(f"sequential_{mod}_{met}.png", R.plot_sequential,
              {"method": method, "modality": mod, "metric": met})
             for mod in MODALITIES for met in ("accuracy", "likelihood_accuracy")]
    write_protocol_report(out_dir, "sequential",
                          _config(method=method, overrides=overrides, eval=cfg,
                                  parts=[[p.id for p in part] for part in parts]),
                          model, records, md, plots)
    return records


def update_target_sweep(model: Any, tokenizer: Any, benchmark: Benchmark, pipe: PipelineConfig,
                        method: str, *, targets: Sequence[str] = ("projector+llm", "llm",
                                                                  "vision", "vision_mlp", "all"),
                        subset_key: str = "subset", forget_split: str = "forget_10",
                        overrides: Mapping | None = None,
                        tasks: Sequence[str] = ("classification",),
                        cfg: EvalConfig | None = None, max_profiles: int | None = None,
                        out_dir: str | os.PathLike | None = None,
                        generate_fn: GenerateFn | None = None) -> Records:
    """Run ``method`` once per trainable subset (config key ``subset_key``); methods are
    labelled ``method[target]``. Step 0 is vanilla, step 1 each unlearned model."""
    cfg = cfg or EvalConfig()
    sets = benchmark_sets(benchmark, forget_split, max_profiles=max_profiles)
    sets.pop("test", None)
    pct = int(forget_split.rsplit("_", 1)[1])
    retain_train = benchmark.split(f"retain_{100 - pct}")
    records = _eval(model, tokenizer, pipe, sets, cfg=cfg, method="vanilla",
                    protocol="update_target", step=0, tasks=tasks, generate_fn=generate_fn)
    for target in targets:
        new, rep = unlearn(method, model, tokenizer, pipe, sets["forget"].profiles,
                           retain_train, overrides={**(overrides or {}), subset_key: target})
        records += _eval(new, tokenizer, pipe, sets, cfg=_system_prompt(method, rep, cfg),
                         method=f"{method}[{target}]", protocol="update_target", step=1,
                         tasks=tasks, generate_fn=generate_fn)
    main = _strip(records)
    md = R.markdown_table(main) if any(r["task"] in ("classification", "generation", "cloze")
                                       for r in main) else ""
    plots = [("tradeoff.png", _plot_main(R.plot_tradeoff, "update_target"),
              {"metric": "likelihood_accuracy"}),
             ("modality_forget.png", _plot_main(R.plot_modality_bars, "update_target"),
              {"metric": "likelihood_accuracy"})]
    write_protocol_report(out_dir, "update_target",
                          _config(method=method, targets=list(targets), overrides=overrides,
                                  eval=cfg), model, records, md, plots)
    return records


# ------------------------------------------------------------------------ S-MLLMUn

SMLLMUN_TASKS: tuple[tuple[str, str, str], ...] = (
    ("image_memory", "multi", "train"),
    ("text_memory", "text", "train"),
    ("image_understanding", "multi", "understanding"),
)


def smllmun_eval(model: Any, tokenizer: Any, sets: Mapping[str, Sequence[Profile]],
                 pipe: PipelineConfig, *, method: str, step: int | None = None,
                 protocol: str | None = "smllmun", cfg: EvalConfig | None = None,
                 judge: Any = None, generate_fn: GenerateFn | None = None) -> Records:
    """Image memory (multimodal training QA), text memory (text-only training QA) and image
    understanding (``understanding_qa``) per set: ROUGE-1/2/L and degeneration always;
    judge ``fact`` and ``meaningful`` scores (0-10) when a judge is set."""
    cfg = cfg or EvalConfig()
    if judge is not None:
        cfg = dataclasses.replace(cfg, judge_metrics=("fact", "meaningful"))
    out: Records = []
    for set_name, profiles in sets.items():
        for task, modality, source in SMLLMUN_TASKS:
            tag = Tag(method, set_name, modality, protocol, step)
            out += run_qa_generation(model, tokenizer, list(profiles), pipe, tag, task,
                                     source=source, cfg=cfg, judge=judge,
                                     generate_fn=generate_fn).records
    return out


def smllmun_protocol(model: Any, tokenizer: Any, benchmark: Benchmark, pipe: PipelineConfig,
                     method: str, *, forget_split: str = "forget_10",
                     overrides: Mapping | None = None, cfg: EvalConfig | None = None,
                     judge: Any = None, max_profiles: int | None = None,
                     out_dir: str | os.PathLike | None = None,
                     generate_fn: GenerateFn | None = None) -> Records:
    """Unlearn ``forget_split``; S-MLLMUn scores of forget and retain before (0) / after (1)."""
    cfg = cfg or EvalConfig()
    forget = benchmark.split(forget_split)
    pct = int(forget_split.rsplit("_", 1)[1])
    retain = benchmark.split(f"retain_{100 - pct}")
    sets = {"forget": forget, "retain": _cap(retain, max_profiles)}
    records = smllmun_eval(model, tokenizer, sets, pipe, method=method, step=0, cfg=cfg,
                           judge=judge, generate_fn=generate_fn)
    new, rep = unlearn(method, model, tokenizer, pipe, forget, retain, overrides=overrides)
    records += smllmun_eval(new, tokenizer, sets, pipe, method=method, step=1,
                            cfg=_system_prompt(method, rep, cfg), judge=judge,
                            generate_fn=generate_fn)
    md = "\n".join(step_table(records, "smllmun", task=t, metrics=m)
                   for t, _, _ in SMLLMUN_TASKS
                   for m in (("rougeL", "degeneration", "fact", "meaningful"),))
    write_protocol_report(out_dir, "smllmun",
                          _config(method=method, overrides=overrides, eval=cfg,
                                  forget_split=forget_split), model, records,
                          md + "\n(ROUGE-L and degeneration in %, judge scores 0-10.)\n")
    return records


# ------------------------------------------------------------------------ relearning

def relearning_attack(model: Any, tokenizer: Any, forget: Sequence[Profile],
                      pipe: PipelineConfig, *, method: str = "unlearned",
                      fraction: float = 0.1, epochs: int = 5,
                      train_cfg: TrainConfig | None = None, seed: int = 0,
                      tasks: Sequence[str] = ("classification",),
                      cfg: EvalConfig | None = None, out_dir: str | os.PathLike | None = None,
                      generate_fn: GenerateFn | None = None) -> tuple[Records, Any]:
    """Relearning attack: fine-tune on ``fraction`` of the forget set's training QA (a seeded
    sample, both modalities) for ``epochs`` epochs with the vanilla recipe, evaluating the
    forget set after every epoch (step 0 = before).

    Adds ``AG`` records (``after - before``, step None) for each accuracy metric of each
    modality: ``AG`` for ``accuracy`` (multi = VQA, text = QA), ``AG_<metric>`` otherwise.
    Training uses the vanilla recipe's pieces (answer NLL, ``train_cfg``'s optimizer,
    subset, LoRA) with one jitted step and one optimizer state across all epochs.
    Returns (records, relearned model).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"relearning fraction must be in (0, 1], got {fraction}")
    cfg = cfg or EvalConfig()
    train_cfg = train_cfg or TrainConfig()
    pool = qa_records(forget, pipe.family, "train")
    if not pool:
        raise ValueError("relearning_attack: the forget profiles have no training QA")
    n = max(1, math.ceil(fraction * len(pool)))
    pick = np.random.default_rng(seed).permutation(len(pool))[:n]
    subset = [pool[int(i)] for i in sorted(pick)]
    sets = {"forget": list(forget)}
    records = _eval(model, tokenizer, pipe, sets, cfg=cfg, method=method, protocol="relearn",
                    step=0, tasks=tasks, generate_fn=generate_fn)
    trainer = _EpochTrainer(model, subset, tokenizer, pipe, train_cfg, epochs, cfg.progress)
    current = model
    for epoch in range(1, epochs + 1):
        current = trainer.epoch(epoch)
        records += _eval(current, tokenizer, pipe, sets, cfg=cfg, method=method,
                         protocol="relearn", step=epoch, tasks=tasks, generate_fn=generate_fn)
    records += relearning_gain(records, method)
    md = step_table(records, "relearn", step_label="Epoch")
    ag = [r for r in records if r["metric"].startswith("AG")]
    md += "\n" + "\n".join(f"- AG {r['modality']} {r['metric']}: {100 * r['value']:+.1f} points"
                           for r in ag) + "\n"
    plots = [(f"relearn_{mod}_{met}.png", R.plot_relearning, {"modality": mod, "metric": met})
             for mod in MODALITIES for met in ("accuracy", "likelihood_accuracy")]
    write_protocol_report(out_dir, "relearn",
                          _config(method=method, fraction=fraction, epochs=epochs,
                                  train=train_cfg, eval=cfg, n_relearn_qa=n), model, records,
                          md, plots)
    return records, current


class _EpochTrainer:
    """The vanilla fine-tuning recipe, one epoch per call, state kept between calls."""

    def __init__(self, model: Any, records: Sequence[dict], tokenizer: Any,
                 pipe: PipelineConfig, cfg: TrainConfig, epochs: int, progress: bool):
        from jaxunlearn.data.pipeline import make_mixed_dataset
        from jaxunlearn.train import lora as lora_lib
        from jaxunlearn.train import subsets
        from jaxunlearn.train.finetune import make_nll_loss
        from jaxunlearn.train.state import init_state, make_optimizer
        from jaxunlearn.train.step import make_train_step

        self.model, self.cfg, self.progress = model, cfg, progress
        self.lora = cfg.lora_config()
        self.batches = lambda e: make_mixed_dataset(
            records, tokenizer, dataclasses.replace(pipe, seed=pipe.seed + e))
        if self.lora is not None:
            trainable, self.frozen = lora_lib.init_lora(model.params, self.lora, cfg.seed), \
                model.params
        else:
            trainable, self.frozen = subsets.split_params(
                model.params, subsets.trainable_mask(model.params, cfg.subset, cfg.deeper_half))
        total = max(epochs * len(self.batches(0)), 1)
        opt = make_optimizer(cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps,
                             total_steps=total, weight_decay=cfg.weight_decay)
        self.state = init_state(trainable, opt, cfg.seed)
        loss = make_nll_loss(model.graphdef, dtype=model.compute_dtype, remat=cfg.remat,
                             lora_cfg=self.lora)
        self.step = make_train_step(loss, opt, grad_accum=cfg.grad_accum,
                                    clip_norm=cfg.clip_norm)

    def epoch(self, epoch: int) -> Any:
        """Train one more epoch; the model after it."""
        from jaxunlearn.train.finetune import full_params
        from jaxunlearn.train.loop import run_epochs

        self.state, _ = run_epochs(self.step, self.state, self.frozen,
                                   lambda _: self.batches(epoch), epochs=1,
                                   desc=f"relearn {epoch}", progress=self.progress)
        return self.model.replace(params=full_params(dict(self.state.params), self.frozen,
                                                     self.lora))


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


__all__ = ["EvalSet", "model_fingerprint", "mllmu_protocol", "profile_accuracy",
           "pulse_finetuned", "pulse_pretrained", "pulse_sequential", "relearning_attack",
           "relearning_gain", "select_known_profiles", "smllmun_eval", "smllmun_protocol",
           "step_table", "unlearn", "update_target_sweep", "write_protocol_report"]
