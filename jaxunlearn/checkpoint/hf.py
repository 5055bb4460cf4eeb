"""Import and export of Hugging Face checkpoints (config.json + safetensors), no torch needed.

Import reads `model.safetensors` or a sharded `model.safetensors.index.json` with
`safe_open(..., framework="np")`, accepts the legacy Hub key layout and the current one,
checks every tensor's presence and shape against the config, and casts to the requested
dtype. Export writes the layout current `transformers` loads with no missing or unexpected
keys, sharded above a size threshold, into a temporary directory renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxunlearn.checkpoint.atomic import atomic_directory, fault_point
from jaxunlearn.modeling.keys import expected_hf_shape, to_hf, to_ours
from jaxunlearn.modeling import registry
from jaxunlearn.modeling.model import Model, abstract_module

SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "added_tokens.json", "vocab.json", "merges.txt", "preprocessor_config.json",
    "processor_config.json", "chat_template.json", "chat_template.jinja",
    "generation_config.json", "video_preprocessor_config.json",
)
_RAW_DTYPES = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn,
               "F8_E5M2": ml_dtypes.float8_e5m2}


class CheckpointError(ValueError):
    """A checkpoint directory or tensor that cannot be loaded as asked."""


def read_config(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise CheckpointError(f"{model_dir}: not a directory; pass a Hugging Face model "
                              "directory (config.json + *.safetensors)")
    if not path.is_file():
        raise CheckpointError(f"{path} not found; pass a Hugging Face model directory "
                              "(config.json + *.safetensors)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e}); re-export the checkpoint") from e


def _safetensors_header(path: Path) -> dict:
    """The header of a safetensors file, checked against the file's size (a truncated or
    corrupted file is an error naming it)."""
    fix = "re-download or re-export the checkpoint"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no "
                                  f"header); {fix}")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: corrupted safetensors header (declares {n} header "
                                  f"bytes, the file has {size}); {fix}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupted safetensors header ({e}); {fix}") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not a mapping); {fix}")
    header.pop("__metadata__", None)
    end = 0
    for key, meta in header.items():
        try:
            meta["_base"] = 8 + n
            end = max(end, int(meta["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupted safetensors header entry {key!r}; "
                                  f"{fix}") from e
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, its header "
                              f"needs {8 + n + end}); {fix}")
    return header


def _weight_files(model_dir: Path) -> dict[str, Path]:
    """HF key -> file that holds it."""
    index = model_dir / "model.safetensors.index.json"
    single = model_dir / "model.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a safetensors index (JSON with weight_map: "
                                  f"{e}); re-download or re-export the checkpoint") from e
        files = {k: model_dir / v for k, v in weight_map.items()}
        for f in set(files.values()):
            if not f.is_file():
                raise CheckpointError(f"{index} names {f.name}, which is missing; copy the "
                                      "whole checkpoint directory")
        return files
    if single.is_file():
        return {k: single for k in _safetensors_header(single)}
    raise CheckpointError(f"{model_dir}: no model.safetensors or model.safetensors.index.json; "
                          "convert .bin weights to safetensors first")


def _read_tensor(path: Path, key: str, header: dict) -> np.ndarray:
    meta = header[key]
    if meta["dtype"] in _RAW_DTYPES:  # numpy has no bfloat16: read the raw bytes
        start, end = meta["data_offsets"]
        mm = np.memmap(path, dtype=np.uint8, mode="r", offset=meta["_base"] + start,
                       shape=(end - start,))
        return np.frombuffer(mm, dtype=_RAW_DTYPES[meta["dtype"]]).reshape(meta["shape"])
    try:
        with safe_open(str(path), framework="np") as f:
            return f.get_tensor(key)
    except Exception as e:  # safetensors' own errors (SafetensorError, OSError, ...)
        raise CheckpointError(f"{path}: cannot read tensor {key!r} ({e}); re-download or "
                              "re-export the checkpoint") from e


def check_finite(array: np.ndarray, what: str, fix: str) -> None:
    """Refuse an array with NaN / inf entries (`what` names the tensor and file)."""
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return
    ok = np.isfinite(np.asarray(array, np.float32))
    if not ok.all():
        raise CheckpointError(f"{what} holds {int(ok.size - ok.sum())} non-finite value(s) "
                              f"(NaN / inf) of {ok.size}; {fix}")


def load_pretrained(model_dir: str | os.PathLike, dtype: str | Any = "float32",
                    compute_dtype: str | Any | None = None) -> Model:
    """Load an HF checkpoint directory of any supported family into a `Model`.

    `dtype` is the parameter dtype; `compute_dtype` (default: same) the activation dtype.
    """
    model_dir = Path(model_dir)
    hf_config = read_config(model_dir)
    model_type = hf_config.get("model_type")
    fam = registry.family_for(model_type, str(model_dir / "config.json"))
    config = fam.parse_config(hf_config)
    graphdef, shapes, axes = abstract_module(fam.module_cls, config)
    conv = fam.conv_shapes(config)
    files = _weight_files(model_dir)
    canonical = {}
    for key in files:
        if fam.keys.is_ignored(key):
            continue
        canonical[fam.keys.canonical(key)] = key
    wanted = {fam.keys.to_hf(p): p for p in shapes}
    unexpected = sorted(set(canonical) - set(wanted))
    if unexpected:
        raise CheckpointError(f"{model_dir}: unexpected tensor(s) {unexpected[:5]} for "
                              f"model_type {model_type!r}; the checkpoint and config.json disagree")
    np_dtype = jnp.dtype(dtype)
    headers: dict[Path, dict] = {}
    params = {}
    for hf_key, path in wanted.items():
        if hf_key not in canonical:
            raise CheckpointError(f"{model_dir}: missing tensor {hf_key!r} (parameter {path}, "
                                  f"expected shape {expected(path, shapes, conv)})")
        stored_key = canonical[hf_key]
        file = files[stored_key]
        if file not in headers:
            headers[file] = _safetensors_header(file)
        meta = headers[file][stored_key]
        want = expected(path, shapes, conv)
        if tuple(meta["shape"]) != want:
            raise CheckpointError(f"{file.name}: tensor {stored_key!r} has shape "
                                  f"{tuple(meta['shape'])} but the config expects {want}")
        raw = _read_tensor(file, stored_key, headers[file])
        check_finite(raw, f"{file}: tensor {stored_key!r}",
                     "the checkpoint is corrupted; re-download or re-export it")
        array = to_ours(path, raw, shapes[path].shape)
        params[path] = jnp.asarray(array, dtype=np_dtype)
    return Model(family=fam.name, config=config, hf_config=hf_config, graphdef=graphdef,
                 params=params, logical_axes=axes,
                 compute_dtype=jnp.dtype(compute_dtype) if compute_dtype else None,
                 source_dir=str(model_dir))


def expected(path: str, shapes: dict, conv: dict) -> tuple:
    return expected_hf_shape(path, tuple(shapes[path].shape), conv)


def model_from_config(hf_config: dict, seed: int = 0, dtype: str | Any = "float32") -> Model:
    """A randomly initialised model of any supported family from an HF config dict."""
    from jaxunlearn.modeling.model import init_params

    fam = registry.family_for(hf_config.get("model_type"), "the given config")
    config = fam.parse_config(hf_config)
    graphdef, _, axes = abstract_module(fam.module_cls, config)
    params = init_params(fam.module_cls, config, seed, jnp.dtype(dtype))
    return Model(family=fam.name, config=config, hf_config=hf_config, graphdef=graphdef,
                 params=params, logical_axes=axes)


def model_from_preset(preset: dict | str, checkpoint: str | None = None, seed: int = 0) -> Model:
    """Load the preset's checkpoint (or `checkpoint`), or random-init it when the preset says
    `random_init`. `preset` is a preset name / YAML path or a `load_preset` dict."""
    from jaxunlearn.modeling.presets import load_preset

    if isinstance(preset, str):
        preset = load_preset(preset)
    ckpt = checkpoint or preset.get("checkpoint")
    if ckpt:
        return load_pretrained(ckpt, dtype=preset["param_dtype"],
                               compute_dtype=preset["compute_dtype"])
    if not preset.get("random_init"):
        raise ValueError(f"preset {preset['name']!r} has no checkpoint; set `checkpoint:` to a "
                         "local HF directory (or pass --model PATH)")
    model = model_from_config(preset["hf_config"], seed=seed, dtype=preset["param_dtype"])
    return model.replace(compute_dtype=jnp.dtype(preset["compute_dtype"]))


def hf_state_dict(model: Model, dtype: str | None = None) -> dict[str, np.ndarray]:
    """Parameters as {current HF key: numpy array in torch layout}."""
    fam = registry.family_for(model.hf_config.get("model_type"))
    conv = fam.conv_shapes(model.config)
    out = {}
    for path, value in model.params.items():
        arr = np.asarray(jax.device_get(value))
        if dtype is not None:
            arr = arr.astype(jnp.dtype(dtype))
        hf_shape = expected_hf_shape(path, arr.shape, conv)
        out[fam.keys.to_hf(path)] = to_hf(path, arr, hf_shape)
    return out


def save_pretrained(model: Model, out_dir: str | os.PathLike, *, dtype: str | None = None,
                    max_shard_bytes: int = 5 * 1024 ** 3, copy_side_files: bool = True,
                    key_renames: tuple[tuple[str, str], ...] = ()) -> Path:
    """Write an HF checkpoint directory that `transformers` loads with no missing or
    unexpected keys. The directory appears only once complete (written to a temporary
    sibling, then renamed). `key_renames` (regex, replacement) can write another layout."""
    import re

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        tensors = hf_state_dict(model, dtype)
        for pattern, repl in key_renames:
            tensors = {re.sub(pattern, repl, k): v for k, v in tensors.items()}
        _write_shards(tensors, tmp, max_shard_bytes)
        fault_point("export")  # tests: a kill between the weights and config.json
        cfg = dict(model.hf_config)
        fam = registry.family_for(cfg.get("model_type"))
        cfg["architectures"] = [fam.hf_architecture]
        if dtype is not None:
            cfg["dtype"] = str(jnp.dtype(dtype))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        if copy_side_files and model.source_dir:
            for name in SIDE_FILES:
                src = Path(model.source_dir) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
    return out_dir


def _write_shards(tensors: dict[str, np.ndarray], out: Path, max_shard_bytes: int) -> None:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    n = len(shards)
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": int(sum(t.nbytes for t in tensors.values()))},
             "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
