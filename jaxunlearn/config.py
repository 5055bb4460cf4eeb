"""Experiment configs: YAML files + dotted command-line overrides, validated against defaults.

Every key that exists is in `DEFAULTS` (documented in `configs/README.md`); an unknown key is
an error naming the closest valid key. `method.options` and `eval.judge` are free-form dicts
validated by the method registry / the judge client.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "model": {"preset": "tiny-llava", "checkpoint": None},
    "data": {
        "dir": None,               # MLLMU-Bench layout directory; None = synthetic benchmark
        "tokenizer": None,         # tokenizer directory (default: the checkpoint's)
        "forget_split": "forget_10",
        "retain_split": "retain_90",
        "synthetic": {"seed": 0, "n_profiles": 100, "n_celebrities": 30, "image_size": 32},
        "batch_size": 8,
        "max_length": 512,
        "blank_images": False,     # text-only batches carry blank images: one program for both
    },
    "train": {"lr": 1e-4, "schedule": "cosine", "warmup_steps": 0, "weight_decay": 0.0,
              "epochs": 1, "batch_size": 8, "grad_accum": 1, "clip_norm": 1.0,
              "subset": "all", "deeper_half": False, "lora": False, "lora_rank": 16,
              "lora_alpha": 32.0, "lora_dropout": 0.0,
              "lora_targets": r"^language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.kernel$",
              "seed": 0, "remat": False, "checkpoint_every": 0, "keep_checkpoints": 3},
    "method": {"name": "ga", "options": {}},
    "protocol": {"options": {}},   # keyword arguments of the protocol function
    "eval": {"sets": ["forget", "test", "retain", "celebrity"],
             "tasks": ["classification", "generation", "cloze"],
             "modalities": ["multi", "text"],
             "max_profiles": None,        # cap on retain / celebrity profiles evaluated
             "judge": {},                 # {base_url, model, api_key, ...}; {} = environment / off
             # jaxunlearn.eval.tasks.EvalConfig fields
             "batch_size": 8, "classification_tokens": 4, "generation_tokens": 50,
             "cloze_tokens": 16, "likelihood": True, "likelihood_target": "text",
             "system_prompt": None, "max_questions": None, "bucket_size": None,
             "progress": True},
    "mesh": {"data": -1, "fsdp": 1, "tensor": 1},
    "output": {"dir": "runs/latest", "export_hf": True},
}

FREE_FORM = {("method", "options"), ("eval", "judge"), ("protocol", "options")}


def _closest(key: str, options, path: tuple = ()) -> str:
    close = difflib.get_close_matches(key, sorted(options), n=1)
    if close:
        return f"; did you mean {'.'.join(path + (close[0],))!r}?"
    return f"; valid keys: {', '.join(sorted(options))}"


def merge_into(base: dict, update: dict, path: tuple = (),
               free_form: set | frozenset | None = None) -> dict:
    """Deep-merge `update` into a copy of `base`, rejecting keys `base` does not have.

    Paths in `free_form` (default `FREE_FORM`) are mappings whose keys are not checked here."""
    free_form = FREE_FORM if free_form is None else free_form
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        where = ".".join(path + (key,))
        if (path + (key,)) in free_form:
            if not isinstance(value, dict):
                raise ValueError(f"config key {where!r} must be a mapping")
            out[key] = {**out.get(key, {}), **value}
            continue
        if key not in out:
            raise ValueError(f"unknown config key {where!r}{_closest(key, out, path)}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where!r} must be a mapping")
            out[key] = merge_into(out[key], value, path + (key,), free_form)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-5` -> (['train', 'lr'], 1e-05) with YAML typing of the value."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_overrides(cfg: dict, overrides: list[str],
                    free_form: set | frozenset | None = None) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        update: Any = value
        for k in reversed(keys):
            update = {k: update}
        cfg = merge_into(cfg, update, free_form=free_form)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                defaults: dict | None = None,
                free_form: set | frozenset | None = None) -> dict:
    """Defaults <- YAML file <- overrides, all validated."""
    cfg = copy.deepcopy(defaults or DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} not found")
        cfg = merge_into(cfg, yaml.safe_load(p.read_text()) or {}, free_form=free_form)
    return apply_overrides(cfg, list(overrides), free_form)
