"""The work behind the CLI's experiment commands (finetune, unlearn, evaluate, sweep,
protocol, convert). Each writes into `output.dir` and prints where."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from jaxunlearn import session
from jaxunlearn.checkpoint.atomic import (apply_umask, is_empty_dir, refuse_existing,
                                          replace_directory)
from jaxunlearn.parallel import distributed


# keys that do not change a run's results: a resume may differ in them
_VOLATILE = {"output.overwrite", "train.progress", "eval.progress"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and not (prefix + k).endswith(("options", "judge")):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _record(cfg: dict) -> dict:
    """The config as stored in `config.json` (JSON types)."""
    return json.loads(json.dumps(cfg, default=str))


def config_diff(stored: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two configs (volatile keys ignored)."""
    a, b = _flat(stored), _flat(new)
    return sorted(k for k in set(a) | set(b) if k not in _VOLATILE and a.get(k) != b.get(k))


def _stored_config(d: Path) -> dict | None:
    try:
        doc = json.loads((d / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _differ(keys: list[str], stored: dict, new: dict) -> str:
    a, b = _flat(stored), _flat(new)
    shown = [f"{k} ({a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r})" for k in keys[:6]]
    return ", ".join(shown) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")


def _refuse_inputs_inside(out: Path, cfg: dict) -> None:
    """`output.dir` must not be the working directory (or above it), nor hold an input."""
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if not out.name or target == cwd or target in cwd.parents:
        raise ValueError(f"output.dir {out} is the working directory or above it; name a "
                         "directory of its own (e.g. runs/NAME)")
    inputs = {"model.checkpoint": cfg["model"].get("checkpoint"),
              "data.dir": cfg["data"].get("dir"), "data.tokenizer": cfg["data"].get("tokenizer")}
    for key, value in inputs.items():
        if value and (Path(value).resolve() == target or target in Path(value).resolve().parents):
            raise ValueError(f"output.dir {out} holds {key} {value}, which the run reads; "
                             "choose another output.dir")


def _resumable(work: Path) -> bool:
    return _stored_config(work) is not None and (
        ((work / "checkpoints").is_dir() and any((work / "checkpoints").iterdir()))
        or (work / "points.jsonl").is_file())  # a sweep's finished points


def check_output(cfg: dict, command: str) -> Path:
    """Refuse what `run_directory` would refuse, before anything is loaded; returns the
    working directory `.<name>.partial`."""
    out = Path(cfg["output"]["dir"])
    record = {**_record(cfg), "command": command}
    overwrite = bool(cfg["output"].get("overwrite"))
    _refuse_inputs_inside(out, cfg)
    work = out.with_name(f".{out.name}.partial")
    if out.exists() and not overwrite and not is_empty_dir(out):
        stored = _stored_config(out)
        if stored is None:
            raise ValueError(f"output.dir {out} is not empty and holds no jaxunlearn run "
                             "(no config.json); choose another output.dir or pass "
                             "--overwrite to replace it")
        diff = config_diff(stored, record)
        if not diff:
            raise ValueError(f"output.dir {out} already holds this finished run (same "
                             "config); pass --overwrite to redo it or choose another "
                             "output.dir")
        raise ValueError(f"output.dir {out} holds another run (keys that differ: "
                         f"{_differ(diff, stored, record)}); choose another output.dir or "
                         "pass --overwrite to replace it")
    if work.exists() and not overwrite and _resumable(work):
        stored = _stored_config(work)
        diff = config_diff(stored, record)
        if diff:
            raise ValueError(f"{work} holds an interrupted run of another config (keys "
                             f"that differ: {_differ(diff, stored, record)}); restore "
                             "those values to resume it, or pass --overwrite to start over")
    return work


@contextlib.contextmanager
def run_directory(cfg: dict, command: str) -> Iterator[Path]:
    """The working directory of a run: `.<output.dir name>.partial` beside `output.dir`,
    renamed to `output.dir` once the command completes (never a half-written `output.dir`).
    With several processes all of them wait for each other here, and process 0 alone
    creates, writes and renames the directory (the others write only their logs).

    Call it after validation: it writes `config.json` first. A non-empty `output.dir` is
    refused unless `output.overwrite` (then it is replaced whole at the end); an interrupted
    run (`.partial` with checkpoints) is resumed only when its stored config equals this one,
    otherwise one error lists the keys that differ."""
    out = Path(cfg["output"]["dir"])
    record = {**_record(cfg), "command": command}
    overwrite = bool(cfg["output"].get("overwrite"))
    work = check_output(cfg, command)
    resume = work.exists() and not overwrite and _resumable(work)
    distributed.barrier("run_directory:checked")  # every process decided before any change
    if distributed.is_primary():
        if work.exists() and not resume:
            shutil.rmtree(work)
        elif resume:
            print(f"resuming the interrupted run in {work}", file=sys.stderr)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "config.json").is_file():
            _atomic_json(work / "config.json", record)
    distributed.barrier("run_directory:ready")
    yield work
    distributed.barrier("run_directory:written")
    if distributed.is_primary():
        apply_umask(work)
        replace_directory(work, out)
    distributed.barrier("run_directory:renamed")


def _save_model(model, tok, out: Path) -> Path:
    from jaxunlearn.checkpoint.hf import save_pretrained

    path = save_pretrained(model, out / "model")
    if tok is not None:
        tok.save_pretrained(path)
    return path


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _on_mesh(fn):
    """Run a command with its mesh current (`session.command_mesh`; its config is the first
    dict argument)."""
    @functools.wraps(fn)
    def run(*args, **kw):
        cfg = kw["cfg"] if "cfg" in kw else next(a for a in args if isinstance(a, dict))
        with session.command_mesh(cfg):
            return fn(*args, **kw)
    return run


@_on_mesh
def finetune_command(cfg: dict) -> Path:
    """Vanilla fine-tuning on the training QA of every fictitious profile."""
    from jaxunlearn.data.pipeline import make_mixed_dataset, qa_records
    from jaxunlearn.train.finetune import finetune

    tcfg = session.train_config(cfg, checkpointed=True)  # config errors before loading
    check_output(cfg, "finetune")
    model = session.load_model(cfg)
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.with_batch(session.pipeline_for(model, cfg), cfg["train"]["batch_size"])
    # several processes: each reads its rows of every batch
    from jaxunlearn.parallel.mesh import current, process_rows

    pipe = dataclasses.replace(pipe, rows=process_rows(current(), pipe.batch_size))
    records = qa_records(bench.profiles, model.family, "train")
    if not records:
        raise ValueError("the benchmark has no training QA (no fictitious profiles); check "
                         "data.dir or data.synthetic.n_profiles")

    def batches(epoch):
        return make_mixed_dataset(records, tok, dataclasses.replace(pipe, seed=pipe.seed + epoch))

    with run_directory(cfg, "finetune") as out:
        result = finetune(model, batches, tcfg, steps_per_epoch=len(batches(0)),
                          log_path=out / "metrics.jsonl", checkpoint_dir=out / "checkpoints")
        model = model.replace(params=result.params)
        session.check_finite_model(model, "the fine-tuned model")
        if distributed.is_primary():
            _save_model(model, tok, out)
            if result.lora is not None:
                from jaxunlearn.methods.base import save_lora

                save_lora(result.lora, tcfg.lora_config(), out / "lora")
            _atomic_json(out / "finetune_report.json", result.report)
    path = Path(cfg["output"]["dir"]) / "model"
    print(summary("finetune", result.report, path))
    return path


def summary(command: str, report: dict, path: Path, extra: str = "") -> str:
    """One short end-of-run line: steps, time, first and last loss, where the output is."""
    parts = []
    if report.get("steps") is not None:
        total = report.get("total_steps")
        resumed = report.get("resumed_at") or 0
        parts.append(f"{report['steps']}{f'/{total}' if total else ''} steps"
                     + (f" (resumed at step {resumed})" if resumed else ""))
    if report.get("seconds") is not None:
        parts.append(f"{report['seconds']:.1f}s")
    first, last = report.get("first_loss"), report.get("final_loss")
    if first is not None and last is not None:
        parts.append(f"loss {first:.4f} -> {last:.4f}")
    if extra:
        parts.append(extra)
    return f"{command}: {', '.join(parts) + '; ' if parts else ''}written to {path}"


def _nll_change(history: list | None) -> str:
    """forget / retain NLL at the first and the last step, where the method logs them."""
    if not history:
        return ""
    out = []
    for key in ("forget_nll", "retain_nll"):
        vals = [h[key] for h in history if isinstance(h, dict) and key in h]
        if vals:
            out.append(f"{key.replace('_nll', '')} NLL {vals[0]:.4f} -> {vals[-1]:.4f}")
    return ", ".join(out)


@_on_mesh
def unlearn_command(cfg: dict, model_dir: str | None = None) -> Path:
    """Run `method.name` with `method.options` (and the `train:` section for methods that
    train) on forget_split / retain_split. Writes the `MethodResult` files (result.json,
    neuron_masks.npz, param_masks.npz, lora/; see `methods.base`) and the HF model in model/."""
    from jaxunlearn.methods.base import get_method, resolve_options, run_method

    spec = get_method(cfg["method"]["name"])  # fail fast: unknown method, options, train keys
    options = resolve_options(spec, cfg["method"]["options"])
    train = session.train_config(cfg, trains=spec.trains)
    session.split_pair(cfg)  # fail fast: a forget / retain pair that does not match
    cfg = _with_model(cfg, model_dir)
    check_output(cfg, "unlearn")
    model = session.load_model(cfg)
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.pipeline_for(model, cfg)
    data = session.unlearn_data(bench, tok, pipe, cfg)
    with run_directory(cfg, "unlearn") as out:
        t0 = time.perf_counter()
        result = run_method(spec.name, model, data, options, train=train)
        if result.params is not None:
            session.check_finite_model(result.model(model), f"the model unlearned by {spec.name}")
        if distributed.is_primary():
            result.save(out)
            _atomic_json(out / "unlearn_report.json", result.report)
            if cfg["output"]["export_hf"]:
                _save_model(result.model(model), tok, out)
    final = Path(cfg["output"]["dir"])
    report = {"seconds": time.perf_counter() - t0, **result.report}
    print(summary(f"unlearn {spec.name}", report,
                  final / "model" if cfg["output"]["export_hf"] else final,
                  _nll_change(result.report.get("history"))))
    return final


def _with_model(cfg: dict, model_dir: str | None) -> dict:
    """`cfg` with `--model` folded into model.checkpoint (so config.json records it)."""
    if not model_dir:
        return cfg
    return {**cfg, "model": {**cfg["model"], "checkpoint": str(model_dir)}}


def convert_command(direction: str, src: str, out: str, base: str | None = None,
                    overwrite: bool = False) -> Path:
    """hf-to-flax (orbax params + config), flax-to-hf, peft (jaxunlearn LoRA -> PEFT dir).
    An existing non-empty `out` is refused unless `overwrite` (then replaced whole).
    Conversion is host work of one process: it is refused under a multi-process launcher."""
    if distributed.process_count() > 1:
        raise ValueError("convert runs in one process (it converts files and computes "
                         "nothing); run it without a multi-process launcher")
    return _convert(direction, src, out, base, overwrite)


def _convert(direction: str, src: str, out: str, base: str | None, overwrite: bool) -> Path:

    from jaxunlearn.checkpoint.atomic import atomic_directory
    from jaxunlearn.checkpoint.hf import SIDE_FILES, load_pretrained, save_pretrained

    if direction not in ("hf-to-flax", "flax-to-hf", "peft"):
        raise ValueError(f"unknown conversion {direction!r}; use hf-to-flax, flax-to-hf or peft")
    src_p, out_p = Path(src), Path(out)
    refuse_existing(out_p, overwrite, "output directory")
    if out_p.resolve() == src_p.resolve():
        raise ValueError(f"output directory {out_p} is the source; choose another one")
    if direction == "hf-to-flax":
        model = load_pretrained(src_p)
        with atomic_directory(out_p) as tmp:
            ckptr = _single_process_checkpointer()
            ckptr.save((tmp / "params").absolute(), model.params)
            ckptr.wait_until_finished()
            shutil.copy2(src_p / "config.json", tmp / "config.json")
            for name in SIDE_FILES:
                if (src_p / name).is_file():
                    shutil.copy2(src_p / name, tmp / name)
    elif direction == "flax-to-hf":
        if not (src_p / "params").is_dir() or not (src_p / "config.json").is_file():
            raise FileNotFoundError(f"{src_p} is not a jaxunlearn Flax directory (params/ + "
                                    "config.json); make one with `convert hf-to-flax`")
        from jaxunlearn.checkpoint.hf import model_from_config

        hf_config = json.loads((src_p / "config.json").read_text())
        template = model_from_config(hf_config)
        params = _single_process_checkpointer().restore((src_p / "params").absolute(),
                                                        template.params)
        model = template.replace(params=dict(params), source_dir=str(src_p))
        save_pretrained(model, out_p)
    elif direction == "peft":
        from jaxunlearn.checkpoint.peft import save_peft_adapter
        from jaxunlearn.methods.base import load_lora

        if base is None:
            raise ValueError("convert peft needs --base HF_MODEL_DIR (the model the adapter "
                             "was trained on)")
        lora, lcfg = load_lora(src_p)  # a lora/ dir, or a finetune / unlearn output dir
        save_peft_adapter(lora, lcfg, load_pretrained(base), out_p)
    else:
        raise ValueError(f"unknown conversion {direction!r}")
    print(f"wrote {out_p}")
    return out_p


def _single_process_checkpointer():
    """The orbax checkpointer of `convert` (one process)."""
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


# ----------------------------------------------------------------------------- evaluation

_EVAL_EXTRA = ("sets", "tasks", "modalities", "max_profiles", "judge")


def eval_config(cfg: dict):
    """EvalConfig from the `eval:` section (its non-EvalConfig keys removed), validated."""
    from jaxunlearn.eval.tasks import EvalConfig
    from jaxunlearn.train.typed import build

    return build(EvalConfig, {k: v for k, v in cfg["eval"].items() if k not in _EVAL_EXTRA},
                 "eval")


def judge_from(cfg: dict):
    """The LLM judge of `eval.judge` (or the JAXUNLEARN_JUDGE_* environment), or None."""
    from jaxunlearn.eval.judge import Judge

    return Judge.from_env_or_config(cfg["eval"].get("judge") or None)


def evaluator_for(cfg: dict, model_dir: str | None = None):
    """(Evaluator, benchmark) of an experiment config: model, tokenizer, pipeline, `eval:`
    settings and judge."""
    from jaxunlearn.eval.evaluate import Evaluator

    settings, judge = eval_config(cfg), judge_from(cfg)  # config errors before loading
    model = session.load_model(cfg, model_dir)
    name = model_dir or cfg["model"].get("checkpoint") or cfg["model"]["preset"]
    session.check_finite_model(model, f"the model {name}")
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.pipeline_for(model, cfg)
    return Evaluator(model, tok, pipe, settings, judge), bench


@_on_mesh
def evaluate_command(cfg: dict, model_dir: str | None = None, name: str = "model") -> Path:
    """Evaluate one model on the MLLMU-Bench sets of `data.forget_split`."""
    from jaxunlearn.eval.evaluate import benchmark_sets
    from jaxunlearn.eval.report import markdown_table, model_fingerprint, write_run_report

    forget_split, retain_split = session.split_pair(cfg)  # config errors before loading
    check_output(_with_model(cfg, model_dir), "evaluate")
    ev, bench = evaluator_for(cfg, model_dir)
    sets = benchmark_sets(bench, forget_split, retain_split,
                          max_profiles=cfg["eval"]["max_profiles"])
    unknown = set(cfg["eval"]["sets"]) - set(sets)
    if unknown:
        raise ValueError(f"eval.sets names {sorted(unknown)}; available: {sorted(sets)}")
    sets = {k: v for k, v in sets.items() if k in cfg["eval"]["sets"]}
    with run_directory(_with_model(cfg, model_dir), "evaluate") as out:
        records = ev.records(sets, tasks=cfg["eval"]["tasks"],
                             modalities=cfg["eval"]["modalities"], method=name)
        md = markdown_table(records, vanilla=name)
        if distributed.is_primary():
            write_run_report(out, cfg, model_fingerprint(ev.model), records)
            (out / "report.md").write_text(md)
    print(md)
    return Path(cfg["output"]["dir"])


# `eval:` keys that only `evaluate` reads; a protocol has its own (protocol.options)
_PROTOCOL_UNREAD = {"sets": "the protocol's sets", "tasks": "protocol.options.tasks",
                    "modalities": "both modalities", "max_profiles":
                    "protocol.options.max_profiles"}


@_on_mesh
def protocol_command(name: str, cfg: dict, model_dir: str | None = None) -> Path:
    """Run an evaluation protocol; writes report.json / report.md / plots to output.dir."""
    from jaxunlearn.config import DEFAULTS
    from jaxunlearn.eval.protocols import Study, resolve_protocol

    spec, options = resolve_protocol(name, cfg["protocol"]["options"])  # fail fast
    for key, instead in _PROTOCOL_UNREAD.items():
        if cfg["eval"][key] != DEFAULTS["eval"][key]:
            raise ValueError(f"eval.{key} is read by `evaluate`, not by `protocol` (which "
                             f"uses {instead}); remove it")
    unread = ["retain_split", "force_split_pair"] + (["forget_split"] if spec.name != "relearn"
                                                     else [])
    data = dict(cfg["data"])
    if data["retain_split"] is not None and not data["force_split_pair"]:
        try:  # configs may write out the pair that null stands for: not a setting
            if session.split_pair({"data": {**data, "retain_split": None}})[1] \
                    == data["retain_split"]:
                data["retain_split"] = None
        except ValueError:  # forget_split has no pair: retain_split is a setting
            pass
    for key in unread:  # the protocols name their splits in protocol.options
        if data[key] != DEFAULTS["data"][key]:
            raise ValueError(f"data.{key} is not read by protocol {spec.name}; its splits are "
                             f"protocol.options (see configs/README.md); remove it")
    from jaxunlearn.methods.base import get_method, resolve_options

    trains = spec.name == "relearn" or get_method(cfg["method"]["name"]).trains
    train = session.train_config(cfg, trains=trains)  # the method's; relearn: the attacker's
    if spec.name != "relearn":
        resolve_options(get_method(cfg["method"]["name"]), cfg["method"]["options"])
    elif cfg["method"]["options"]:  # relearn attacks an unlearned model; method.name labels it
        raise ValueError("method.options is not read by protocol relearn (it fine-tunes an "
                         "already unlearned model with train:); remove it")
    check_output(_with_model(cfg, model_dir), f"protocol {spec.name}")
    ev, bench = evaluator_for(cfg, model_dir)
    with run_directory(_with_model(cfg, model_dir), f"protocol {spec.name}") as out:
        # several processes: all train and evaluate together, process 0 alone writes
        study = Study(bench, cfg["method"]["name"], dict(cfg["method"]["options"]),
                      train=train, forget_split=cfg["data"]["forget_split"],
                      out_dir=out if distributed.is_primary() else None)
        spec.run(ev, study, options)
    print(f"protocol {spec.name}: report in {cfg['output']['dir']}")
    return Path(cfg["output"]["dir"])


# ----------------------------------------------------------------------------- sweeps

def sweep_command(cfg: dict, grid: dict, rule_kw: dict | None = None) -> Path:
    """`method.name` over `grid` (`{key: [values]}`, see `eval.sweep.grid_points`), every
    point evaluated on the `evaluate` command's sets, tasks and modalities; writes the sweep's
    files (`eval.sweep.write_sweep`) to output.dir. Resumes an interrupted sweep of the same
    config at its next point."""
    from jaxunlearn.eval.evaluate import benchmark_sets
    from jaxunlearn.eval.sweep import SelectionRule, grid_points, markdown, run_sweep

    rule = SelectionRule(**(rule_kw or {}))
    method = cfg["method"]["name"]
    points = grid_points(method, grid, cfg["method"]["options"], cfg["train"])  # fail fast
    forget_split, retain_split = session.split_pair(cfg)
    tasks = list(cfg["eval"]["tasks"])
    if rule.task not in tasks:
        raise ValueError(f"the sweep metric {rule.metric} needs eval.tasks to include "
                         f"{rule.task!r} (eval.tasks: {tasks})")
    for s in [rule.forget, *rule.guards]:
        if s not in cfg["eval"]["sets"] and s != "celebrity":
            raise ValueError(f"the sweep rule reads set {s!r}; add it to eval.sets")
    record = {**cfg, "sweep": {"grid": grid, "rule": dataclasses.asdict(rule)}}
    check_output(record, "sweep")
    ev, bench = evaluator_for(cfg)
    sets = benchmark_sets(bench, forget_split, retain_split,
                          max_profiles=cfg["eval"]["max_profiles"])
    unknown = set(cfg["eval"]["sets"]) - set(sets) - {"celebrity"}
    if unknown:
        raise ValueError(f"eval.sets names {sorted(unknown)}; available: {sorted(sets)}")
    sets = {k: v for k, v in sets.items() if k in cfg["eval"]["sets"]}
    data = session.unlearn_data(bench, ev.tokenizer, ev.pipeline, cfg)
    t0 = time.perf_counter()
    with run_directory(record, "sweep") as out:
        result = run_sweep(ev, method, points, sets, data, rule=rule, tasks=tasks,
                           modalities=cfg["eval"]["modalities"], out_dir=out)
    print(markdown(result.doc))
    print(f"sweep {method}: {len(points)} points in {time.perf_counter() - t0:.1f}s; written "
          f"to {cfg['output']['dir']}")
    return Path(cfg["output"]["dir"])
