"""The work behind the CLI's experiment commands (finetune, unlearn, evaluate, protocol,
convert). Each writes into `output.dir` and prints where."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

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
        save_lora(result.lora, tcfg.lora_config(), out / "lora")
    _atomic_json(out / "finetune_report.json", result.report)
    print(f"fine-tuned model written to {path}")
    return path


def save_lora(lora: dict, lora_cfg, out_dir: Path) -> Path:
    """jaxunlearn's own LoRA format: lora.npz + lora_config.json (convert peft -> PEFT dir)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "lora.npz", **{k: np.asarray(v) for k, v in lora.items()})
    (out_dir / "lora_config.json").write_text(json.dumps(dataclasses.asdict(lora_cfg)))
    return out_dir


def unlearn_command(cfg: dict, model_dir: str | None = None) -> Path:
    """Run `method.name` with `method.options` on forget_split / retain_split."""
    from jaxunlearn.methods.base import get_method, run_method

    get_method(cfg["method"]["name"])  # fail fast on an unknown method
    model = session.load_model(cfg, model_dir)
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.pipeline_for(model, cfg)
    data = session.unlearn_data(bench, tok, pipe, cfg)
    out = _out(cfg)
    new_model, report, artifacts = run_method(cfg["method"]["name"], model, data,
                                              cfg["method"]["options"])
    if artifacts:
        np.savez(out / "artifacts.npz", **{k: np.asarray(v) for k, v in artifacts.items()})
    _atomic_json(out / "unlearn_report.json", report)
    path = _save_model(new_model, tok, out) if cfg["output"]["export_hf"] else None
    print(f"unlearned with {cfg['method']['name']}: {path or out}")
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
        from jaxunlearn.train.lora import LoraConfig, save_peft_adapter

        if base is None:
            raise ValueError("convert peft needs --base HF_MODEL_DIR (the model the adapter "
                             "was trained on)")
        if not (src_p / "lora.npz").is_file():
            raise FileNotFoundError(f"{src_p}/lora.npz not found; pass the lora/ directory "
                                    "that `finetune` writes with train.lora=true")
        lora = dict(np.load(src_p / "lora.npz"))
        lcfg = LoraConfig(**json.loads((src_p / "lora_config.json").read_text()))
        save_peft_adapter(lora, lcfg, load_pretrained(base), out_p)
    else:
        raise ValueError(f"unknown conversion {direction!r}")
    print(f"wrote {out_p}")
    return out_p


# ----------------------------------------------------------------------------- evaluation

_EVAL_EXTRA = ("sets", "tasks", "modalities", "max_profiles", "judge")


def eval_config(cfg: dict):
    """EvalConfig from the `eval:` section (its non-EvalConfig keys removed)."""
    from jaxunlearn.eval.tasks import EvalConfig

    return EvalConfig(**{k: v for k, v in cfg["eval"].items() if k not in _EVAL_EXTRA})


def judge_from(cfg: dict):
    from jaxunlearn.eval.judge import Judge

    return Judge.from_env_or_config(cfg["eval"].get("judge") or None)


def evaluate_command(cfg: dict, model_dir: str | None = None, name: str = "model") -> Path:
    """Evaluate one model on the MLLMU-Bench sets of `data.forget_split`."""
    from jaxunlearn.eval.evaluate import benchmark_sets, evaluate_model
    from jaxunlearn.eval.protocols import model_fingerprint
    from jaxunlearn.eval.report import markdown_table, write_run_report

    model = session.load_model(cfg, model_dir)
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.pipeline_for(model, cfg)
    sets = benchmark_sets(bench, cfg["data"]["forget_split"], cfg["data"]["retain_split"],
                          max_profiles=cfg["eval"]["max_profiles"])
    unknown = set(cfg["eval"]["sets"]) - set(sets)
    if unknown:
        raise ValueError(f"eval.sets names {sorted(unknown)}; available: {sorted(sets)}")
    sets = {k: v for k, v in sets.items() if k in cfg["eval"]["sets"]}
    out = _out(cfg)
    records = evaluate_model(model, tok, None, pipe, sets, tasks=cfg["eval"]["tasks"],
                             modalities=cfg["eval"]["modalities"], cfg=eval_config(cfg),
                             judge=judge_from(cfg), method=name)
    write_run_report(out, cfg, model_fingerprint(model), records)
    md = markdown_table(records, vanilla=name)
    (out / "report.md").write_text(md)
    print(md)
    return out


PULSE_SCENARIOS = ("finetuned", "pretrained", "sequential", "update_target")


def protocol_function(name: str, options: dict):
    """(function, keyword arguments) of a protocol; unknown option keys are errors."""
    import difflib
    import inspect

    from jaxunlearn.eval import protocols as P

    options = dict(options)
    if name == "pulse":
        scenario = options.pop("scenario", "sequential")
        if scenario not in PULSE_SCENARIOS:
            raise ValueError(f"protocol.options.scenario {scenario!r}: use one of "
                             f"{', '.join(PULSE_SCENARIOS)}")
        fn = {"finetuned": P.pulse_finetuned, "pretrained": P.pulse_pretrained,
              "sequential": P.pulse_sequential, "update_target": P.update_target_sweep}[scenario]
    else:
        fn = {"mllmu": P.mllmu_protocol, "smllmun": P.smllmun_protocol,
              "relearn": P.relearning_attack}.get(name)
        if fn is None:
            raise ValueError(f"unknown protocol {name!r}; use mllmu, pulse, smllmun or relearn")
    reserved = {"model", "tokenizer", "benchmark", "pipe", "method", "overrides", "cfg",
                "judge", "out_dir", "generate_fn", "forget", "train_cfg"}
    allowed = set(inspect.signature(fn).parameters) - reserved
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {sorted(allowed)}"
            raise ValueError(f"unknown protocol option {key!r} for {name}{hint}")
    return fn, options


def protocol_command(name: str, cfg: dict, model_dir: str | None = None) -> Path:
    """Run an evaluation protocol; writes report.json / report.md / plots to output.dir."""
    import inspect

    fn, options = protocol_function(name, cfg["protocol"]["options"])
    model = session.load_model(cfg, model_dir)
    tok = session.load_tokenizer(cfg, model)
    bench = session.load_benchmark(cfg)
    pipe = session.pipeline_for(model, cfg)
    out = _out(cfg)
    params = inspect.signature(fn).parameters
    kw = dict(options, cfg=eval_config(cfg), out_dir=out)
    if "judge" in params:
        kw["judge"] = judge_from(cfg)
    if "train_cfg" in params:
        kw["train_cfg"] = session.train_config(cfg)
    if name == "relearn":
        fn(model, tok, bench.split(cfg["data"]["forget_split"]), pipe,
           method=cfg["method"]["name"], **kw)
    else:
        fn(model, tok, bench, pipe, cfg["method"]["name"], overrides=cfg["method"]["options"],
           **kw)
    print(f"protocol {name}: report in {out}")
    return out
