"""`jaxunlearn demo`: the whole job offline on a tiny LLaVA.

Stages (each writes its output atomically; a rerun skips finished stages, `--fresh` redoes):
1. data       synthetic benchmark (MLLMU-Bench layout) in OUT/data
2. tokenizer  BPE trained on the benchmark, names as single tokens, in OUT/tokenizer
3. pretrain   tiny LLaVA from scratch on celebrity QA + image-understanding QA ("pre-trained
              knowledge"), OUT/models/base
4. vanilla    fine-tuned on the fictitious profiles' QA (celebrity QA replayed), OUT/models/vanilla
              A model this small does not carry a fact from one question format to another,
              so pre-training and fine-tuning also include the evaluation questions in their
              own formats (`formats`: classification, generation, cloze), with the
              classification options in a new random order every epoch (no letter can be
              memorised; `classification_repeats` orders of each question per epoch,
              answered as `classification_answer` says) and, with `distractors: people`,
              other people's facts as the wrong options (a multimodal question needs the
              image). The Test set (paraphrased
              questions, transformed images) is never trained on.
5. unlearn    each method on the forget_10 split, OUT/models/<method> (HF exports); the
              forget (and retain) set a method sees is all of its people's training data in
              every trained format (`UnlearnData.question_kinds`). With `sweep` (the full
              demo), each method with a grid in `grids` runs over it (`eval.sweep.run_sweep`:
              one compiled train step per grid, every point evaluated on `sweep_tasks`) and the
              point the `selection` rule picks is the method's model; the sweep's files are in
              OUT/models/<method>/sweep. `--quick` runs single points (`methods`): the points
              the full demo's sweeps selected (`METHOD_NOTES` says which grid and rule)
6. evaluate   every model on Forget / Test / Retain / Celebrity x tasks x modality;
              classification also with rotated options (`circular_accuracy`: correct in all
              4 rotations); vanilla also on the controls (forget images replaced by a black
              image or another person's image)
7. report     OUT/report/{report.json, report.md, *.png}: the benchmark table, the demo
              table (rotation-robust classification and cloze) with the target check, and
              every method's setting and how it was chosen; after sweeps also every method's
              frontier overlaid, one figure per modality (frontier_multi.png,
              frontier_text.png) and OUT/report/frontiers/ (`jaxunlearn report`'s overlay);
              the tables are printed
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from jaxunlearn.demo.tiny import TinyWorldConfig, tiny_llava_hf_config

# The embedded default; configs/demo.yaml states the same values with every key documented
# (a test keeps the two equal). `quick` holds what `--quick` replaces.
_WORLD = dataclasses.asdict(TinyWorldConfig(seed=0, n_profiles=20, n_celebrities=8,
                                            image_size=32, patch=8, vocab_size=1024,
                                            text_layers=2, text_hidden=128, batch_size=16))
# method -> settings for the tiny model: the method's options and its `train:` keys in one
# flat mapping (`methods.base.split_settings` tells them apart). Method defaults are set for 7B
# models; a 1M-parameter model trained from scratch needs larger steps.
_GRAD = {"batch_size": 8, "progress": False, "schedule": "constant", "subset": "llm"}
METHODS = {
    "ga": {**_GRAD, "lr": 7.5e-4, "epochs": 1},
    "grad_diff": {**_GRAD, "lr": 1.5e-3, "epochs": 1},
    "kl_min": {**_GRAD, "lr": 1.5e-3, "epochs": 1},
    "npo": {**_GRAD, "lr": 5e-4, "epochs": 1},
    "idk": {**_GRAD, "lr": 7.5e-4, "epochs": 1},
    # the paper formulation barely separates forget from retain neurons on a model this small
    "manu": {"alpha": 0.03, "formulation": "official", "progress": False},
    # SMFA trains a LoRA adapter (r = 8, alpha = 16) on the LLM
    "smfa": {**_GRAD, "subset": "all", "lora": True, "lora_rank": 8, "lora_alpha": 16.0,
             "lr": 3e-3, "epochs": 4},
    # vision-only: prune 20% of the vision neurons by I_u, then a long, strong forget term
    "vkd": {**_GRAD, "subset": "projector+vision_mlp", "deeper_half": True, "lr": 3e-2,
            "epochs": 30, "alpha": 5.0, "prune_fraction": 0.2},
}
# method -> the grid the full demo sweeps (on top of the method's entry in METHODS): 2-4
# points, each a runtime value of the compiled train step (lr, epochs, loss weights) or, for
# MANU, of the pruning; the `selection` rule below picks the point.
GRIDS = {
    "ga": {"lr": [5e-4, 7.5e-4, 1e-3, 1.5e-3]},
    "grad_diff": {"lr": [5e-4, 7.5e-4, 1e-3, 1.5e-3]},
    "kl_min": {"lr": [5e-4, 7.5e-4, 1e-3, 1.5e-3]},
    "npo": {"lr": [5e-4, 7.5e-4, 1e-3, 1.5e-3]},
    "idk": {"lr": [5e-4, 7.5e-4, 1e-3, 1.5e-3]},
    "manu": {"alpha": [0.03, 0.1, 0.2]},
    "smfa": {"lr": [3e-3, 1e-2, 3e-2]},
    "vkd": {"lr": [1e-2, 3e-2]},
}
# the selection rule of the sweeps (`eval.sweep.SelectionRule`): the largest drop of the forget
# set's `metric` (mean over both modalities) among the points whose retain and celebrity
# scores keep `keep` x vanilla's
SELECTION = {"metric": "cloze/accuracy", "keep": 0.9, "guards": ["retain", "celebrity"]}
# method -> where its single point in METHODS (what `--quick` runs) comes from: the point the
# full demo's sweep selected (`jaxunlearn demo`, 2026-11-30; cloze accuracy, mean of both
# modalities, vanilla -> selected point)
_SEL = "selected by the full demo's sweep (rule: largest forget cloze drop with retain and " \
       "celebrity >= 0.9 x vanilla, mean of both modalities) over "
METHOD_NOTES = {
    "ga": _SEL + "lr 5e-4, 7.5e-4, 1e-3, 1.5e-3: lr 7.5e-4 (forget 1.00 -> .75, retain .94 -> "
                 ".94, celebrity .94 -> .91)",
    "grad_diff": _SEL + "lr 5e-4, 7.5e-4, 1e-3, 1.5e-3: lr 1.5e-3 (forget 1.00 -> .38, retain "
                        ".94 -> .94, celebrity .94 -> .84, just above .9 x .94)",
    "kl_min": _SEL + "lr 5e-4, 7.5e-4, 1e-3, 1.5e-3: lr 1.5e-3 (forget 1.00 -> .50, retain "
                     ".94 -> .91, celebrity .94 -> .91)",
    "npo": _SEL + "lr 5e-4, 7.5e-4, 1e-3, 1.5e-3: lr 5e-4 (forget 1.00 -> .75, retain .94 -> "
                  ".94, celebrity .94 -> .94)",
    "idk": _SEL + "lr 5e-4, 7.5e-4, 1e-3, 1.5e-3: lr 7.5e-4 (forget 1.00 -> .88, retain .94 -> "
                  ".94, celebrity .94 -> .94)",
    "manu": _SEL + "alpha 0.03, 0.1, 0.2: alpha 0.03 (forget 1.00 -> 1.00: every alpha that "
                   "forgets lowers retain and celebrity as much)",
    "smfa": _SEL + "lr 3e-3, 1e-2, 3e-2 (4 epochs): lr 3e-3 (forget 1.00 -> .62, retain .94 -> "
                   ".91, celebrity .94 -> .91)",
    "vkd": _SEL + "lr 1e-2, 3e-2 (30 epochs): lr 3e-2 (forget 1.00 -> .88, retain .94 -> .94, "
                  "celebrity .94 -> .94)",
}
DEMO_DEFAULTS = {
    "world": _WORLD,
    "n_eval": [3, 3, 2],
    "pretrain_epochs": 10,
    "vanilla_epochs": 60,
    "lr": 3e-3,
    "warmup_steps": 10,
    "bucket_size": 144,
    "group_by_length": 0,
    "answer_tokens": 64,
    "blank_images": True,
    "distractors": "people",
    "formats": ["classification", "generation", "cloze"],
    "classification_repeats": 1,
    "classification_answer": "letter",
    "rotations": True,
    "likelihood": False,
    "eval_profiles": 8,
    "max_questions": 24,
    "run": list(METHODS),
    "methods": METHODS,
    "sweep": True,
    "grids": GRIDS,
    "selection": SELECTION,
    "sweep_tasks": ["cloze"],
    "quick": {
        "sweep": False,
        "world": {**_WORLD, "n_profiles": 10, "n_celebrities": 4, "vocab_size": 768},
        "n_eval": [2, 2, 1],
        "bucket_size": 152,  # the smaller vocabulary makes the longest prompt 149 tokens
        "pretrain_epochs": 3,
        "vanilla_epochs": 12,
        "eval_profiles": 4,
        "max_questions": 8,
    },
}


def demo_setting(config: str | Path | None = None, overrides: Sequence[str] = (),
                 quick: bool = False) -> dict:
    """The demo's resolved setting: embedded default <- YAML file <- (with `quick`) the
    `quick:` section <- dotted overrides. Unknown keys and methods are errors."""
    from jaxunlearn.config import apply_overrides, load_config, merge_into
    from jaxunlearn.methods.base import available, get_method

    # every registered method has an entry (its defaults unless tuned above); the options
    # inside an entry are checked by the method registry, not by the config loader
    names = available()
    defaults = {**DEMO_DEFAULTS, "methods": {n: dict(METHODS.get(n, {})) for n in names},
                "grids": {n: dict(GRIDS.get(n, {})) for n in names}}
    free_form = frozenset((sec, n) for sec in ("methods", "grids") for n in names)
    # order: defaults <- file <- quick.* overrides <- quick section (with --quick) <- the rest
    # of the overrides, so `--quick vanilla_epochs=12` means 12
    quick_overrides = [o for o in overrides if o.strip().startswith("quick.")]
    cfg = load_config(config, quick_overrides, defaults=defaults, free_form=free_form)
    quick_part = cfg.pop("quick")
    if quick:
        cfg = merge_into(cfg, quick_part, free_form=free_form)
    cfg = apply_overrides(cfg, [o for o in overrides if o not in quick_overrides], free_form)
    from jaxunlearn.methods.base import resolve_options, split_settings
    from jaxunlearn.train import TrainConfig
    from jaxunlearn.train.driver import check_checkpointing
    from jaxunlearn.train.typed import build

    reps = cfg["classification_repeats"]
    if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1:
        raise ValueError(f"classification_repeats must be an integer >= 1, got {reps!r}")
    from jaxunlearn.data.pipeline import CLASSIFICATION_ANSWERS
    if cfg["classification_answer"] not in CLASSIFICATION_ANSWERS:
        raise ValueError(f"classification_answer must be one of {', '.join(CLASSIFICATION_ANSWERS)}"
                         f", got {cfg['classification_answer']!r}")
    for name in cfg["run"]:
        spec = get_method(name)  # one clear error for an unknown method (each has an entry)
        options, train = split_settings(name, cfg["methods"][name])
        resolve_options(spec, options)  # unknown / mistyped keys fail before any stage runs
        check_checkpointing(build(TrainConfig, train, f"methods.{name}"), checkpointed=False,
                            where=f"methods.{name}")
        if cfg["sweep"] and cfg["grids"][name]:
            from jaxunlearn.eval.sweep import grid_points
            try:
                grid_points(name, cfg["grids"][name], options, train)
            except ValueError as e:
                raise ValueError(f"grids.{name}: {e}") from None
    if cfg["sweep"]:
        _selection_rule(cfg)
    return cfg


def _selection_rule(setting: dict):
    """The sweeps' `SelectionRule` from the setting's `selection` (one error naming it)."""
    from jaxunlearn.eval.sweep import SelectionRule

    sel = setting["selection"]
    try:
        rule = SelectionRule(metric=sel["metric"], keep=float(sel["keep"]),
                             guards=tuple(sel["guards"]))
    except (ValueError, TypeError) as e:
        raise ValueError(f"selection: {e}") from None
    if rule.task not in setting["sweep_tasks"]:
        raise ValueError(f"selection.metric {rule.metric} needs task {rule.task!r} in "
                         f"sweep_tasks {setting['sweep_tasks']}")
    return rule


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _done(path: Path) -> bool:
    return (path / ".done").is_file()


def _finish(tmp: Path, final: Path) -> None:
    (tmp / ".done").write_text("ok")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _check_same_setting(path: Path, setting: dict) -> None:
    """Record the setting of a new run; refuse to resume a run made with another one."""
    text = json.dumps(setting, sort_keys=True, indent=1)
    if path.is_file():
        if path.read_text() != text:
            raise ValueError(f"{path.parent} holds a demo run made with another setting; rerun "
                             "with --fresh or choose another --out")
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fresh_tmp(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def run_demo(out: str | Path, quick: bool = False, fresh: bool = False,
             setting: dict | None = None) -> dict:
    """Run (or resume) the demo in `out`; returns the report dict.

    `setting` is a resolved `demo_setting(...)` (default: the embedded one, quick or full).
    A rerun resumes only with the same setting; `fresh` starts over."""
    from transformers import AutoTokenizer

    from jaxunlearn.checkpoint.hf import load_pretrained, model_from_config, save_pretrained
    from jaxunlearn.data.mllmu import load_mllmu
    from jaxunlearn.data.pipeline import PipelineConfig, qa_records, trained_question_records
    from jaxunlearn.data.processors import ClipImageConfig
    from jaxunlearn.data.synthetic import SynthConfig, write_synthetic
    from jaxunlearn.data.tokenizer import benchmark_tokenizer
    from jaxunlearn.demo.vanilla import train_on_qa
    from jaxunlearn.train import TrainConfig

    setting = demo_setting(quick=quick) if setting is None else setting
    methods = {name: setting["methods"][name] for name in setting["run"]}
    w = TinyWorldConfig(**setting["world"])
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_setting(out / "demo_setting.json", {**setting, "quick_flag": quick})
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, path: Path, build) -> Path:
        if _done(path):
            _log(f"{name}: done earlier ({path})")
            return path
        _log(f"{name} ...")
        t0 = time.perf_counter()
        tmp = _fresh_tmp(path)
        build(tmp)
        _finish(tmp, path)
        timings[name] = time.perf_counter() - t0
        _log(f"{name}: {timings[name]:.1f} s")
        return path

    # 1-2. data and tokenizer
    synth = SynthConfig(seed=w.seed, n_profiles=w.n_profiles, n_celebrities=w.n_celebrities,
                        image_size=w.image_size, n_eval=tuple(setting["n_eval"]),
                        distractors=setting["distractors"])
    kinds = tuple(setting["formats"])
    reps, answer = setting["classification_repeats"], setting["classification_answer"]
    data_dir = stage("data", out / "data", lambda tmp: write_synthetic(tmp, synth))
    bench = load_mllmu(data_dir)
    tok_dir = stage("tokenizer", out / "tokenizer",
                    lambda tmp: benchmark_tokenizer(bench, tmp, vocab_size=w.vocab_size))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    hf_config = tiny_llava_hf_config(tok, w)
    pipe = PipelineConfig(family="llava", batch_size=w.batch_size,
                          image_token_count=hf_config["image_seq_length"],
                          image=ClipImageConfig(w.image_size, w.image_size),
                          bucket_size=setting["bucket_size"], max_length=256, seed=w.seed,
                          group_by_length=setting["group_by_length"],
                          answer_tokens=setting["answer_tokens"],
                          blank_images=setting["blank_images"])
    tcfg = TrainConfig(lr=setting["lr"], warmup_steps=setting["warmup_steps"], clip_norm=1.0)

    def save_model(model, tmp):
        save_pretrained(model, tmp / "hf")
        tok.save_pretrained(tmp / "hf")

    # 3. pre-training: celebrities + image understanding
    def build_base(tmp):
        model = model_from_config(hf_config, seed=w.seed)
        fixed = (qa_records(bench.celebrities, "llava", "train")
                 + qa_records([*bench.profiles, *bench.celebrities], "llava", "understanding"))

        def recs(epoch):  # classification options in a new order every epoch
            return fixed + trained_question_records(bench.celebrities, "llava", kinds,
                                                    seed=1000 * w.seed + epoch, repeats=reps,
                                                    classification_answer=answer)
        model, _ = train_on_qa(model, recs, tok, pipe,
                               dataclasses.replace(tcfg, epochs=setting["pretrain_epochs"]),
                               desc="pretrain")
        save_model(model, tmp)

    base_dir = stage("pretrain", out / "models" / "base", build_base)

    # 4. vanilla: fictitious profiles (+ celebrity replay)
    def build_vanilla(tmp):
        model = load_pretrained(base_dir / "hf")
        people = [*bench.profiles, *bench.celebrities]
        fixed = qa_records(people, "llava", "train")

        def recs(epoch):
            return fixed + trained_question_records(people, "llava", kinds,
                                                    seed=1000 * w.seed + 500 + epoch,
                                                    repeats=reps, classification_answer=answer)
        model, _ = train_on_qa(model, recs, tok, pipe,
                               dataclasses.replace(tcfg, epochs=setting["vanilla_epochs"]),
                               desc="vanilla", log_path=tmp / "metrics.jsonl")
        save_model(model, tmp)

    vanilla_dir = stage("vanilla", out / "models" / "vanilla", build_vanilla)
    vanilla = load_pretrained(vanilla_dir / "hf")

    # 5. unlearning (full demo: a sweep per method, its selected point kept)
    from jaxunlearn.eval.evaluate import Evaluator, benchmark_sets
    from jaxunlearn.eval.tasks import EvalConfig
    from jaxunlearn.methods.base import UnlearnData, run_method, split_settings

    data = UnlearnData(tok, dataclasses.replace(pipe, batch_size=8), bench.split("forget_10"),
                       bench.split("retain_90"), [*bench.profiles, *bench.celebrities],
                       question_kinds=kinds, classification_answer=answer)
    sets = benchmark_sets(bench, "forget_10", "retain_90", max_profiles=setting["eval_profiles"])
    evaluator = Evaluator(vanilla, tok, pipe, EvalConfig(max_questions=setting["max_questions"],
                                                         batch_size=16,
                                                         rotations=setting["rotations"],
                                                         likelihood=setting["likelihood"]))
    sweep_ref: list[dict] = []  # the vanilla model's sweep records, evaluated once

    def sweep_method(tmp: Path, name: str, overrides: dict) -> dict:
        """Sweep `name` over its grid into tmp/sweep; the selected point's result."""
        from jaxunlearn.eval.sweep import grid_points, run_sweep

        options, train = split_settings(name, overrides)
        points = grid_points(name, setting["grids"][name], options, train)
        rule = _selection_rule(setting)
        kept: dict[int, object] = {}
        sweep_sets = {k: v for k, v in sets.items() if k != "test"}
        res = run_sweep(evaluator, name, points, sweep_sets, data, rule=rule,
                        tasks=setting["sweep_tasks"], out_dir=_mkdir(tmp / "sweep"),
                        log=lambda line: _log(f"  {line}"), reference=sweep_ref or None,
                        on_point=lambda i, r: kept.__setitem__(i, r))
        if not sweep_ref:
            sweep_ref.extend(r for r in res.records if r["method"] == "vanilla")
        doc = res.doc
        chosen = doc["selected"]
        how = "selected by the rule"
        if chosen is None:  # no point keeps the guards: show the one that keeps them best
            chosen = max(doc["points"], key=lambda p: (
                min(p["scores"].get(g, {}).get("mean", 0.0) for g in rule.guards),
                -p["scores"][rule.forget]["mean"]))["index"]
            how = "no point met the rule's guards; the one keeping retain / celebrity best"
        shown = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in points[chosen]["settings"].items())
        grid = ", ".join(f"{k} {v}" for k, v in setting["grids"][name].items())
        result = kept[chosen]
        result.report["sweep"] = {"grid": setting["grids"][name], "rule": rule.describe(),
                                  "selected": doc["selected"], "used": chosen,
                                  "settings": points[chosen]["settings"],
                                  "note": f"sweep over {grid} ({len(points)} points; rule: "
                                          f"{rule.describe()}): {shown}, {how}"}
        return result

    method_reports = {}
    for name, overrides in methods.items():
        def build_method(tmp, name=name, overrides=overrides):
            if setting["sweep"] and setting["grids"].get(name):
                result = sweep_method(tmp, name, overrides)
            else:
                options, train = split_settings(name, overrides)
                result = run_method(name, vanilla, data, options, train=train)
            save_model(result.model(vanilla), tmp)
            result.save(tmp)
            (tmp / "unlearn_report.json").write_text(json.dumps(result.report, indent=2,
                                                                default=str))
        path = stage(f"unlearn {name}", out / "models" / name, build_method)
        method_reports[name] = json.loads((path / "unlearn_report.json").read_text())

    # 6. evaluation
    records = []
    for name in ["vanilla", *methods]:
        path = out / "eval" / f"{name}.json"
        if path.is_file() and not fresh:
            records += json.loads(path.read_text())
            continue
        t0 = time.perf_counter()
        model = vanilla if name == "vanilla" else load_pretrained(out / "models" / name / "hf")
        system = method_reports.get(name, {}).get("system_prompt")
        recs = evaluator.with_model(model, system_prompt=system).records(sets, method=name)
        if name == "vanilla":
            from jaxunlearn.demo.summary import control_records
            recs += control_records(evaluator, bench.split("forget_10"),
                                    bench.split("retain_90"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(recs))
        os.replace(tmp, path)
        records += recs
        timings[f"eval {name}"] = time.perf_counter() - t0
        _log(f"evaluated {name} in {timings[f'eval {name}']:.1f} s")

    # 7. report
    report = write_demo_report(out / "report", records, vanilla, setting, method_reports,
                               timings, quick,
                               sweeps={n: out / "models" / n / "sweep" for n in methods
                                       if (out / "models" / n / "sweep" / "sweep.json")
                                       .is_file()})
    _log(f"total {time.perf_counter() - t_start:.1f} s; report in {out / 'report'}")
    print(report["markdown"])
    return report


def write_demo_report(report_dir: Path, records, model, setting, method_reports, timings,
                      quick, sweeps: dict[str, Path] | None = None) -> dict:
    """report.json / report.md / figures in `report_dir`; with `sweeps` (method -> sweep
    directory) also every method's frontier overlaid, one figure per modality."""
    from jaxunlearn.eval import plots
    from jaxunlearn.eval.report import markdown_table, model_fingerprint, write_run_report

    report_dir.mkdir(parents=True, exist_ok=True)
    config = {"quick": quick, **setting,
              "methods": {k: {"options": v.get("options"), "train": v.get("train")}
                          for k, v in method_reports.items()},
              "timings_s": timings}
    write_run_report(report_dir, config, model_fingerprint(model), records)
    from jaxunlearn.demo.summary import demo_table

    settings, notes = {}, {}
    for m, rep in method_reports.items():
        chosen = {k.split(".")[-1]: v for k, v in rep.get("sweep", {}).get("settings", {}).items()}
        settings[m] = {**setting["methods"][m], **chosen}
        notes[m] = rep["sweep"]["note"] if "sweep" in rep else METHOD_NOTES.get(m, "")
    demo_md = demo_table(records, settings, notes)
    if sweeps:
        demo_md += "\n" + _frontier_figures(report_dir, sweeps)
    md = demo_md + "\n## Benchmark tables (single option order)\n\n" + markdown_table(
        records, vanilla="vanilla")
    (report_dir / "report.md").write_text("# jaxunlearn demo\n\n" + md)
    for modality in ("multi", "text"):
        try:
            plots.plot_tradeoff(records, report_dir / f"tradeoff_{modality}.png",
                                modality=modality, task="classification",
                                metric="circular_accuracy" if setting["rotations"]
                                else "accuracy")
        except ValueError:
            pass
    try:
        plots.plot_modality_bars(records, report_dir / "forget_modality.png", set_name="forget",
                                 task="classification", metric="accuracy")
    except ValueError:
        pass
    return {"records": records, "markdown": md, "dir": str(report_dir)}


def _frontier_figures(report_dir: Path, sweeps: dict[str, Path]) -> str:
    """Every method's sweep frontier overlaid: `frontiers/` (`jaxunlearn report`'s overlay,
    all modalities) and one figure per modality, `frontier_<modality>.png`; returns the
    markdown of the selected points."""
    from jaxunlearn.eval.plots import plot_frontiers
    from jaxunlearn.eval.sweep import overlay_frontiers

    over = overlay_frontiers(list(sweeps.values()), report_dir / "frontiers")
    paths = []
    for mod in ("multi", "text"):
        data = {label: {mod: fr[mod]} for label, fr in over["data"].items() if mod in fr}
        if data:
            path = report_dir / f"frontier_{mod}.png"
            plot_frontiers(data, path, title=f"sweep frontiers, {mod} (selected points ringed)")
            paths.append(path.name)
    return ("## Sweeps: frontiers and selected points\n\n"
            f"Figures: {', '.join(paths)} (forget against retain score of every grid point, "
            "the starting model as a star); every sweep's files are in models/<method>/sweep."
            "\n\n" + over["markdown"])
