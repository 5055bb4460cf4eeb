"""The work behind the CLI's experiment commands (finetune, unlearn, evaluate, protocol,
convert). Each writes into `output.dir` and prints where."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from jaxunlearn import session


def _out(cfg: dict) -> Path:
    out = Path(cfg["output"]["dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    return out


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


def finetune_command(cfg: dict) -> Path:
    """Vanilla fine-tuning on the training QA of every fictitious profile."""
    from jaxunlearn.data.pipeline import make_mixed_dataset, qa_records
    from jaxunlearn.train.finetune import finetune

    model = session.load_model(cfg)
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.with_batch(session.pipeline_for(model, cfg), cfg["train"]["batch_size"])
    records = qa_records(bench.profiles, model.family, "train")
    out = _out(cfg)

    def batches(epoch):
        return make_mixed_dataset(records, tok, dataclasses.replace(pipe, seed=pipe.seed + epoch))

    tcfg = session.train_config(cfg)
    result = finetune(model, batches, tcfg, steps_per_epoch=len(batches(0)),
                      log_path=out / "metrics.jsonl", checkpoint_dir=out / "checkpoints")
    model = model.replace(params=result.params)
    path = _save_model(model, tok, out)
    if result.lora is not None:
        from jaxunlearn.methods.base import save_lora

        save_lora(result.lora, tcfg.lora_config(), out / "lora")
    _atomic_json(out / "finetune_report.json", result.report)
    print(f"fine-tuned model written to {path}")
    return path


def unlearn_command(cfg: dict, model_dir: str | None = None) -> Path:
    """Run `method.name` with `method.options` (and the `train:` section for methods that
    train) on forget_split / retain_split. Writes the `MethodResult` files (result.json,
    neuron_masks.npz, param_masks.npz, lora/; see `methods.base`) and the HF model in model/."""
    from jaxunlearn.methods.base import get_method, resolve_options, run_method

    spec = get_method(cfg["method"]["name"])  # fail fast: unknown method, options, train keys
    options = resolve_options(spec, cfg["method"]["options"])
    train = session.train_config(cfg)
    session.split_pair(cfg)  # fail fast: a forget / retain pair that does not match
    model = session.load_model(cfg, model_dir)
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.pipeline_for(model, cfg)
    data = session.unlearn_data(bench, tok, pipe, cfg)
    out = _out(cfg)
    result = run_method(spec.name, model, data, options, train=train)
    result.save(out)
    _atomic_json(out / "unlearn_report.json", result.report)
    path = _save_model(result.model(model), tok, out) if cfg["output"]["export_hf"] else None
    print(f"unlearned with {spec.name}: {path or out}")
    return out


def convert_command(direction: str, src: str, out: str, base: str | None = None) -> Path:
    """hf-to-flax (orbax params + config), flax-to-hf, peft (jaxunlearn LoRA -> PEFT dir)."""
    import orbax.checkpoint as ocp

    from jaxunlearn.checkpoint.hf import SIDE_FILES, load_pretrained, save_pretrained

    src_p, out_p = Path(src), Path(out)
    if direction == "hf-to-flax":
        model = load_pretrained(src_p)
        tmp = out_p.with_name(out_p.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        ckptr = ocp.StandardCheckpointer()
        ckptr.save((tmp / "params").absolute(), model.params)
        ckptr.wait_until_finished()
        shutil.copy2(src_p / "config.json", tmp / "config.json")
        for name in SIDE_FILES:
            if (src_p / name).is_file():
                shutil.copy2(src_p / name, tmp / name)
        if out_p.exists():
            shutil.rmtree(out_p)
        os.replace(tmp, out_p)
    elif direction == "flax-to-hf":
        if not (src_p / "params").is_dir() or not (src_p / "config.json").is_file():
            raise FileNotFoundError(f"{src_p} is not a jaxunlearn Flax directory (params/ + "
                                    "config.json); make one with `convert hf-to-flax`")
        from jaxunlearn.checkpoint.hf import model_from_config

        hf_config = json.loads((src_p / "config.json").read_text())
        template = model_from_config(hf_config)
        params = ocp.StandardCheckpointer().restore((src_p / "params").absolute(),
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
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.pipeline_for(model, cfg)
    return Evaluator(model, tok, pipe, settings, judge), bench


def evaluate_command(cfg: dict, model_dir: str | None = None, name: str = "model") -> Path:
    """Evaluate one model on the MLLMU-Bench sets of `data.forget_split`."""
    from jaxunlearn.eval.evaluate import benchmark_sets
    from jaxunlearn.eval.report import markdown_table, model_fingerprint, write_run_report

    forget_split, retain_split = session.split_pair(cfg)  # config errors before loading
    ev, bench = evaluator_for(cfg, model_dir)
    sets = benchmark_sets(bench, forget_split, retain_split,
                          max_profiles=cfg["eval"]["max_profiles"])
    unknown = set(cfg["eval"]["sets"]) - set(sets)
    if unknown:
        raise ValueError(f"eval.sets names {sorted(unknown)}; available: {sorted(sets)}")
    sets = {k: v for k, v in sets.items() if k in cfg["eval"]["sets"]}
    out = _out(cfg)
    records = ev.records(sets, tasks=cfg["eval"]["tasks"], modalities=cfg["eval"]["modalities"],
                         method=name)
    write_run_report(out, cfg, model_fingerprint(ev.model), records)
    md = markdown_table(records, vanilla=name)
    (out / "report.md").write_text(md)
    print(md)
    return out


# `eval:` keys that only `evaluate` reads; a protocol has its own (protocol.options)
_PROTOCOL_UNREAD = {"sets": "the protocol's sets", "tasks": "protocol.options.tasks",
                    "modalities": "both modalities", "max_profiles":
                    "protocol.options.max_profiles"}


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
    train = session.train_config(cfg)  # the method's training; relearn: the attacker's
    if spec.name != "relearn":
        from jaxunlearn.methods.base import get_method, resolve_options

        resolve_options(get_method(cfg["method"]["name"]), cfg["method"]["options"])
    elif cfg["method"]["options"]:  # relearn attacks an unlearned model; method.name labels it
        raise ValueError("method.options is not read by protocol relearn (it fine-tunes an "
                         "already unlearned model with train:); remove it")
    ev, bench = evaluator_for(cfg, model_dir)
    out = _out(cfg)
    study = Study(bench, cfg["method"]["name"], dict(cfg["method"]["options"]), train=train,
                  forget_split=cfg["data"]["forget_split"], out_dir=out)
    spec.run(ev, study, options)
    print(f"protocol {spec.name}: report in {out}")
    return out
