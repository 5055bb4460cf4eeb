"""Fine-tune a tiny LLaVA on a benchmark's training QA (the "vanilla" model to unlearn from)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxunlearn.checkpoint.hf import load_pretrained, model_from_config, save_pretrained
from jaxunlearn.data.pipeline import make_mixed_dataset, qa_records
from jaxunlearn.train.finetune import TrainConfig, finetune


def train_on_qa(model, records, tok, pipe, train_cfg: TrainConfig, *, progress=True,
                desc="finetune", log_path=None):
    """Fine-tune on records (both modalities, reshuffled each epoch). `records` is a list, or
    a function epoch -> list (e.g. classification options reordered every epoch) returning
    the same number of records every epoch."""
    def batches(epoch):
        recs = records(epoch) if callable(records) else records
        return make_mixed_dataset(recs, tok, dataclasses.replace(pipe, seed=pipe.seed + epoch))
    result = finetune(model, batches, train_cfg, steps_per_epoch=len(batches(0)),
                      progress=progress, desc=desc, log_path=log_path)
    return model.replace(params=result.params), result


def build_vanilla(out_dir: str | Path, world_cfg, *, epochs: int = 30, lr: float = 3e-3,
                  progress: bool = False):
    """Create (or reuse, if `out_dir` holds it) the fine-tuned tiny LLaVA.

    Returns (model, tokenizer, benchmark, pipeline config)."""
    from transformers import AutoTokenizer

    from jaxunlearn.demo.tiny import build_world

    out_dir = Path(out_dir)
    bench, tok, hf_config, pipe = build_world(world_cfg)
    if (out_dir / "config.json").is_file():
        return load_pretrained(out_dir), AutoTokenizer.from_pretrained(out_dir), bench, pipe
    model = model_from_config(hf_config, seed=world_cfg.seed)
    records = qa_records(bench.profiles, "llava", "train")
    model, _ = train_on_qa(model, records, tok, pipe,
                           TrainConfig(lr=lr, epochs=epochs, warmup_steps=10),
                           progress=progress, desc="vanilla")
    tmp = out_dir.with_name(out_dir.name + ".building")
    save_pretrained(model, tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out_dir)
    return load_pretrained(out_dir), AutoTokenizer.from_pretrained(out_dir), bench, pipe
