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
