"""Neuron masks on disk (npz + json metadata) and their application to HF checkpoints.

`<name>.npz` holds `mask/<group>` (bool [layers, neurons], True = pruned) or per-Linear
`mask/<group>.<linear>` (bool [layers, output channels]; MANU `formulation: official`) and
optionally `score/<key>` (float); `<name>.json` holds the metadata (method, config, model type,
shapes, pruned counts). `apply_masks_to_checkpoint` re-applies saved masks to a fresh HF
checkpoint directory (the CLI's `jaxunlearn prune apply`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxunlearn.transforms import GROUPS, mask_shapes, prune_neurons


def mask_summary(masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Per group: total neurons, pruned count and pruned neurons per layer."""
    out = {}
    for g, m in masks.items():
        m = np.asarray(m, bool)
        out[g] = {"neurons": int(m.size), "pruned": int(m.sum()),
                  "per_layer": [int(x) for x in m.sum(axis=1)]}
    return out


def mask_artifacts(masks: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray] | None,
                   metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`MethodResult.artifacts` entries: `neuron_masks.npz` (masks and scores, flat names
    as saved by `save_masks`) and `neuron_masks.json` (metadata)."""
    arrays = {f"mask/{g}": np.asarray(m, bool) for g, m in masks.items()}
    arrays.update({f"score/{g}": np.asarray(s, np.float64) for g, s in (scores or {}).items()})
    meta = {**metadata, "shapes": {g: list(np.shape(m)) for g, m in masks.items()},
            "summary": mask_summary(masks), "format": "jaxunlearn-neuron-masks/1"}
    return {"neuron_masks.npz": arrays, "neuron_masks.json": meta}


def save_masks(path: str | os.PathLike, masks: Mapping[str, np.ndarray],
               scores: Mapping[str, np.ndarray] | None = None,
               metadata: Mapping[str, Any] | None = None) -> Path:
    """Write `path` (.npz) and its `.json` sidecar; returns the npz path."""
    path = Path(path).with_suffix(".npz")
    art = mask_artifacts(masks, scores, metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **art["neuron_masks.npz"])
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(art["neuron_masks.json"], indent=2,
                                                    default=str))
    return path


def load_masks(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(masks {group: bool array}, metadata) from a file written by `save_masks`, or from an
    `unlearn` output directory holding one (`neuron_masks.npz`)."""
    path = Path(path)
    if path.is_dir():  # an `unlearn` output directory (MethodResult.save)
        path = path / "neuron_masks.npz"
    elif path.suffix != ".npz":
        path = path.with_suffix(".npz")
    if not path.is_file():
        raise FileNotFoundError(f"mask file {path} not found; write one with a pruning method "
                                "(manu, selective_pruning) or save_masks")
    with np.load(path) as z:
        masks = {k.split("/", 1)[1]: z[k].astype(bool) for k in z.files if k.startswith("mask/")}
    if not masks or any(k.partition(".")[0] not in GROUPS for k in masks):
        raise ValueError(f"{path} holds no neuron masks (expected mask/language, mask/vision "
                         "or mask/<group>.<linear>)")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return masks, meta


def apply_masks_to_checkpoint(masks_path: str | os.PathLike, model_dir: str | os.PathLike,
                              out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Load the HF checkpoint `model_dir`, prune the masked neurons, write `out_dir` (same
    format and dtype; tokenizer / processor files copied). Shapes are checked first. An
    existing non-empty `out_dir` is refused unless `overwrite` (then replaced whole)."""
    from jaxunlearn.checkpoint.atomic import refuse_existing
    from jaxunlearn.checkpoint.hf import load_pretrained, read_config, save_pretrained

    refuse_existing(out_dir, overwrite, "--out")
    masks, meta = load_masks(masks_path)
    cfg = read_config(model_dir)
    if meta.get("model_type") and meta["model_type"] != cfg.get("model_type"):
        raise ValueError(f"masks were made for model_type {meta['model_type']!r} but "
                         f"{model_dir} is {cfg.get('model_type')!r}")
    model = load_pretrained(model_dir)
    shapes = mask_shapes(model.params)
    for g, m in masks.items():
        if g not in shapes or tuple(m.shape) != shapes[g]:
            raise ValueError(f"{g} mask has shape {tuple(m.shape)} but {model_dir} has "
                             f"{shapes.get(g)} (layers, neurons); wrong model for these masks")
    params = prune_neurons(model.params, masks, model.family)
    dtype = cfg.get("torch_dtype") or cfg.get("dtype")
    dtype = dtype if dtype in ("float32", "float16", "bfloat16") else None
    return save_pretrained(model.replace(params=params), out_dir, dtype=dtype)
