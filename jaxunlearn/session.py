"""Build what a command needs from an experiment config: model, tokenizer, benchmark,
pipeline config and the forget / retain data."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Iterator

from jaxunlearn.data.pipeline import PipelineConfig
from jaxunlearn.data.schema import Benchmark


FORMATS = ("auto", "mllmu", "clear")


def data_format(cfg: dict) -> str:
    """The layout of `data.dir`: `data.format`, or for `auto` `clear` when a CLEAR config
    folder holds parquet files, else `mllmu`."""
    from jaxunlearn.data.clear import is_clear

    data = cfg["data"]
    fmt = data.get("format", "auto")
    if fmt not in FORMATS:
        raise ValueError(f"data.format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "auto":
        return "clear" if data.get("dir") and is_clear(data["dir"]) else "mllmu"
    return fmt


def load_benchmark(cfg: dict) -> Benchmark:
    """The MLLMU-Bench or CLEAR directory in `data.dir` (`data.format`), or the synthetic
    benchmark."""
    data = cfg["data"]
    fmt = data_format(cfg)
    if data.get("dir"):
        if not Path(data["dir"]).is_dir():
            raise FileNotFoundError(f"data.dir {data['dir']} is not a directory; point it to "
                                    "an MLLMU-Bench or CLEAR copy or leave it empty for "
                                    "synthetic data")
        if fmt == "clear":
            from jaxunlearn.data.clear import load_clear

            return load_clear(data["dir"])
        from jaxunlearn.data.mllmu import load_mllmu

        return load_mllmu(data["dir"])
    if data.get("format", "auto") != "auto":
        raise ValueError(f"data.format {data['format']!r} is read only with data.dir; set "
                         "data.dir or data.format: auto")
    from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark

    return generate_benchmark(SynthConfig(**data["synthetic"]))


def mesh_sizes(cfg: dict) -> dict[str, int]:
    """The mesh axis sizes of a run: the `mesh:` keys set in the config, else the preset's
    `mesh:`, else all devices on `data`. Axes not given are 1, except `data`, which takes
    the rest (-1) unless another axis does."""
    from jaxunlearn.modeling.presets import load_preset

    given = {k: v for k, v in cfg["mesh"].items() if v is not None}
    if not given:
        given = dict(load_preset(cfg["model"]["preset"]).get("mesh") or {})
    sizes = {"data": 1, "fsdp": 1, "tensor": 1, **given}
    if "data" not in given and -1 not in given.values():
        sizes["data"] = -1
    return sizes


@contextlib.contextmanager
def command_mesh(cfg: dict) -> Iterator[Any]:
    """Build the run's mesh over all global devices (`mesh_sizes`; a shape that does not
    match the device count is one error naming both) and make it current while the command
    runs (training places parameters, optimizer state and batches on it)."""
    from jaxunlearn.parallel import mesh as mesh_lib

    mesh = mesh_lib.mesh_from_config(mesh_sizes(cfg))
    before = mesh_lib.current()
    mesh_lib.set_current(mesh)
    try:
        yield mesh
    finally:
        mesh_lib.set_current(before)


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
        tok = AutoTokenizer.from_pretrained(where)
    except OSError as e:
        raise FileNotFoundError(f"no tokenizer files in {where}; set data.tokenizer") from e
    check_tokenizer(tok, model, str(where))
    return tok


def model_vocab_size(model) -> int | None:
    """Rows of the model's token embedding (None when it has none)."""
    for path, value in model.params.items():
        if path.endswith("embed_tokens.embedding") or path.endswith("embed_tokens.weight"):
            return int(value.shape[0])
    hf = model.hf_config or {}
    size = (hf.get("text_config") or {}).get("vocab_size") or hf.get("vocab_size")
    return int(size) if size else None


def check_tokenizer(tok: Any, model, where: str) -> None:
    """The tokenizer in `where` must fit the model: every token id (vocabulary, pad, eos)
    inside the embedding, and the image placeholder's id the model config's."""
    from jaxunlearn.data.templates import chat_format

    vocab = model_vocab_size(model)
    fix = ("use the tokenizer saved with this checkpoint (set data.tokenizer to its "
           "directory, or leave it empty)")
    if vocab is not None and len(tok) > vocab:
        raise ValueError(f"tokenizer in {where} has {len(tok)} tokens but the model's "
                         f"vocabulary has {vocab}; {fix}")
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        tid = getattr(tok, name, None)
        if tid is not None and vocab is not None and not 0 <= int(tid) < vocab:
            raise ValueError(f"tokenizer in {where}: {name} {tid} is outside the model's "
                             f"vocabulary of {vocab}; {fix}")
    hf = model.hf_config or {}
    want = hf.get("image_token_index", hf.get("image_token_id"))
    image_token = chat_format(model.family).image_token
    got = tok.convert_tokens_to_ids(image_token)
    if want is not None and got is not None and got != tok.unk_token_id and int(got) != int(want):
        raise ValueError(f"tokenizer in {where}: image token {image_token!r} has id {got} but "
                         f"the model config's image token id is {want}; {fix}")


def check_finite_model(model, what: str) -> None:
    """Refuse a model with NaN / inf parameters (one reduction per tensor, one host pull)."""
    import jax
    import jax.numpy as jnp

    flags = {k: jnp.all(jnp.isfinite(v)) for k, v in model.params.items()
             if jnp.issubdtype(v.dtype, jnp.floating)}
    bad = sorted(k for k, ok in jax.device_get(flags).items() if not ok)
    if bad:
        raise ValueError(f"{what} has non-finite (NaN / inf) parameters in {len(bad)} "
                         f"tensor(s), e.g. {bad[0]!r}; it cannot be evaluated; use a finite "
                         "checkpoint (a diverged run: lower train.lr)")


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
    `retain_(100-N)` as MLLMU-Bench does (CLEAR: `forgetNN[+tofu]` with
    `retain(100-NN)[+tofu]`); an explicit other retain split of such a forget split is an
    error unless `data.force_split_pair: true`."""
    from jaxunlearn.data import clear
    from jaxunlearn.data.mllmu import complement

    data = cfg["data"]
    forget, retain = data["forget_split"], data["retain_split"]
    head, _, pct = str(forget).partition("_")
    paired = complement(forget) if head == "forget" and pct.isdigit() else None
    if paired is None and str(forget).startswith("forget"):
        paired = clear.complement(forget)  # CLEAR: forgetNN[+tofu] -> retain(100-NN)[+tofu]
    if retain is None:
        if paired is None:
            raise ValueError(f"data.retain_split is null but data.forget_split {forget!r} is not "
                             "forget_N or CLEAR's forgetNN (null pairs forget_N with "
                             "retain_(100-N), forgetNN with retain(100-NN)); set "
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
    if not forget:
        where = cfg["data"].get("dir") or "the synthetic benchmark"
        raise ValueError(f"data.forget_split {forget_split!r} has no profiles in {where}; "
                         "pick a non-empty split (data.forget_split)")
    return UnlearnData(tokenizer=tok, pipeline=pipe, forget=forget, retain=retain,
                       others=list(bench.profiles) + list(bench.celebrities))


def train_config(cfg: dict, *, trains: bool = True, checkpointed: bool = False):
    """The `train:` section as a validated `TrainConfig`; for a run that trains
    (`trains`), `train.remat: null` takes the model preset's `remat`. The checkpoint keys
    are refused unless the command writes checkpoints (`checkpointed`: finetune)."""
    from jaxunlearn.modeling.presets import load_preset
    from jaxunlearn.train.driver import TrainConfig, check_checkpointing
    from jaxunlearn.train.typed import build

    tcfg = build(TrainConfig, cfg["train"], "train")
    check_checkpointing(tcfg, checkpointed=checkpointed)
    if trains and tcfg.remat is None:
        tcfg = dataclasses.replace(tcfg, remat=bool(load_preset(cfg["model"]["preset"])["remat"]))
    return tcfg


def with_batch(pipe: PipelineConfig, batch_size: int) -> PipelineConfig:
    return dataclasses.replace(pipe, batch_size=batch_size)
