"""Build what a command needs from an experiment config: model, tokenizer, benchmark,
pipeline config and the forget / retain data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jaxunlearn.data.pipeline import PipelineConfig
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
    from jaxunlearn.checkpoint.hf import model_from_preset
    from jaxunlearn.modeling.presets import load_preset

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


def preprocessor_config(model) -> dict | None:
    """The model directory's `preprocessor_config.json` as a dict (None when absent)."""
    import json

    if not model.source_dir:
        return None
    path = Path(model.source_dir) / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix or remove it") from e


def pipeline_for(model, cfg: dict) -> PipelineConfig:
    """Batching config matching the model's family and image preprocessing: the family's
    image encoder (`jaxunlearn.data.images.encoder_for`) from the model config, its
    `preprocessor_config.json` when present and the family's host-side input preparation."""
    from jaxunlearn.data.images import ClipImages, encoder_for
    from jaxunlearn.modeling import registry

    fam = registry.family_for(model.hf_config.get("model_type"))
    images = encoder_for(model.family, model.config, fam.host_prepare, preprocessor_config(model))
    if model.family != "llava" and int(cfg["train"].get("grad_accum", 1)) > 1:
        raise ValueError(f"train.grad_accum={cfg['train']['grad_accum']}: {model.family} batches "
                         "hold the images of the whole batch and cannot be cut into "
                         "micro-batches; set train.grad_accum: 1 (raise train.batch_size instead)")
    blank = bool(cfg["data"]["blank_images"])
    if blank and model.family != "llava":
        raise ValueError(f"data.blank_images is for llava models (one image per row); set "
                         f"data.blank_images: false for {model.family}")
    extra = {}
    if isinstance(images, ClipImages):  # keep the LLaVA fields in step with the encoder
        extra = {"image": images.config, "image_token_count": images.tokens}
    return PipelineConfig(family=model.family, batch_size=cfg["data"]["batch_size"],
                          images=images, max_length=cfg["data"]["max_length"],
                          seed=cfg["train"]["seed"], blank_images=blank, **extra)


def split_pair(cfg: dict) -> tuple[str, str]:
    """(forget split, retain split) of `data:`: `retain_split: null` pairs `forget_N` with
    `retain_(100-N)` as MLLMU-Bench does; an explicit other retain split of a `forget_N` is an
    error unless `data.force_split_pair: true`."""
    from jaxunlearn.data.mllmu import complement

    data = cfg["data"]
    forget, retain = data["forget_split"], data["retain_split"]
    head, _, pct = str(forget).partition("_")
    paired = complement(forget) if head == "forget" and pct.isdigit() else None
    if retain is None:
        if paired is None:
            raise ValueError(f"data.retain_split is null but data.forget_split {forget!r} is not "
                             "forget_N (null pairs forget_N with retain_(100-N)); set "
                             "data.retain_split")
        return forget, paired
    if paired is not None and retain != paired and not data.get("force_split_pair"):
        raise ValueError(f"data.retain_split {retain!r} does not pair with data.forget_split "
                         f"{forget!r} (MLLMU-Bench pairs it with {paired!r}); set "
                         f"data.retain_split: null (or {paired}), or data.force_split_pair: true "
                         "to keep this pair")
    return forget, retain


def unlearn_data(bench: Benchmark, tok: Any, pipe: PipelineConfig, cfg: dict):
    from jaxunlearn.methods.base import UnlearnData

    forget_split, retain_split = split_pair(cfg)
    forget, retain = bench.split(forget_split), bench.split(retain_split)
    return UnlearnData(tokenizer=tok, pipeline=pipe, forget=forget, retain=retain,
                       others=list(bench.profiles) + list(bench.celebrities))


def train_config(cfg: dict):
    """The `train:` section as a validated `TrainConfig`."""
    from jaxunlearn.train.driver import TrainConfig
    from jaxunlearn.train.typed import build

    return build(TrainConfig, cfg["train"], "train")


def with_batch(pipe: PipelineConfig, batch_size: int) -> PipelineConfig:
    return dataclasses.replace(pipe, batch_size=batch_size)
