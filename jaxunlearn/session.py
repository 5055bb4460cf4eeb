"""Build what a command needs from an experiment config: model, tokenizer, benchmark,
pipeline config and the forget / retain data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jaxunlearn.data.pipeline import PipelineConfig
from jaxunlearn.data.processors import ClipImageConfig
from jaxunlearn.data.schema import Benchmark


def load_benchmark(cfg: dict) -> Benchmark:
    """The MLLMU-Bench directory in `data.dir`, or the synthetic benchmark."""
    data = cfg["data"]
    if data.get("dir"):
        from jaxunlearn.data.mllmu import load_mllmu

        if not Path(data["dir"]).is_dir():
            raise FileNotFoundError(f"data.dir {data['dir']} is not a directory; point it to "
                                    "an MLLMU-Bench copy or leave it empty for synthetic data")
        return load_mllmu(data["dir"])
    from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark

    return generate_benchmark(SynthConfig(**data["synthetic"]))


def load_model(cfg: dict, checkpoint: str | None = None):
    from jaxunlearn.modeling.presets import load_preset, model_from_preset

    preset = load_preset(cfg["model"]["preset"])
    return model_from_preset(preset, checkpoint or cfg["model"].get("checkpoint"))


def load_tokenizer(cfg: dict, model) -> Any:
    from transformers import AutoTokenizer

    where = cfg["data"].get("tokenizer") or model.source_dir
    if not where:
        raise ValueError("no tokenizer: set data.tokenizer to a tokenizer directory (a random-"
                         "init preset has none of its own)")
    try:
        return AutoTokenizer.from_pretrained(where)
    except OSError as e:
        raise FileNotFoundError(f"no tokenizer files in {where}; set data.tokenizer") from e


def pipeline_for(model, cfg: dict) -> PipelineConfig:
    """Batching config matching the model's family and image preprocessing."""
    if model.family != "llava":
        raise ValueError(f"the training/evaluation data pipeline supports llava models; "
                         f"{model.family} batches need its processor wiring (see README)")
    size = model.config.vision.image_size
    return PipelineConfig(family=model.family, batch_size=cfg["data"]["batch_size"],
                          image_token_count=model.config.image_seq_length,
                          image=ClipImageConfig(size, size), max_length=cfg["data"]["max_length"],
                          seed=cfg["train"]["seed"], blank_images=bool(cfg["data"]["blank_images"]))


def unlearn_data(bench: Benchmark, tok: Any, pipe: PipelineConfig, cfg: dict):
    from jaxunlearn.methods.base import UnlearnData

    forget = bench.split(cfg["data"]["forget_split"])
    retain = bench.split(cfg["data"]["retain_split"])
    return UnlearnData(tokenizer=tok, pipeline=pipe, forget=forget, retain=retain,
                       others=list(bench.profiles) + list(bench.celebrities))


def train_config(cfg: dict):
    from jaxunlearn.train.finetune import TrainConfig

    return TrainConfig(**cfg["train"])


def with_batch(pipe: PipelineConfig, batch_size: int) -> PipelineConfig:
    return dataclasses.replace(pipe, batch_size=batch_size)
