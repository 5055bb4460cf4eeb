"""`Model`: an immutable value holding a family's graph definition, config and parameters.

Parameters are a flat dict `{dotted.path: array}` whose paths mirror the HF module names
(`language_model.layers.0.mlp.up_proj.kernel`). Every computation is a pure function of that
dict: `nnx.merge` rebuilds the module inside jit.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Params = dict[str, jax.Array]


MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                    "image_sizes", "position_ids", "image_index", "image_weight")
# batch entries for statistics only (see jaxunlearn.data.images), never model inputs
_NOT_MODEL_INPUTS = ("vision_token_mask",)


def model_inputs(batch: dict) -> dict:
    """The part of a batch that the model reads (loss masks and labels stay out)."""
    return {k: v for k, v in batch.items()
            if (k in MODEL_INPUT_KEYS or k.startswith("vision_")) and k not in _NOT_MODEL_INPUTS}


def shared_input_keys(batch: dict) -> tuple[str, ...]:
    """Entries of a host-prepared batch whose leading axis is not the example rows (Qwen-VL
    patches and M-RoPE positions [3, B, T], OneVision crop slots and the row -> slot gather
    indices): such a batch cannot be cut into row groups (micro-batches, data-parallel shards
    of the image arrays). Empty for LLaVA batches (one image per row)."""
    out = []
    for k, v in batch.items():
        if k == "position_ids" and getattr(v, "ndim", 0) == 3:
            out.append(k)
        elif k.startswith("vision_") or k in ("image_index", "image_weight"):
            out.append(k)
        elif k == "pixel_values" and ("image_index" in batch or "vision_pos" in batch):
            out.append(k)
    return tuple(out)


def path_key(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def unflatten(params: Params) -> nnx.State:
    """Flat `{dotted: array}` -> nested `nnx.State` that `nnx.merge` accepts."""
    items = [(tuple(int(p) if p.isdigit() else p for p in k.split(".")), v)
             for k, v in params.items()]
    return nnx.from_flat_state(items)


def merge(graphdef: Any, params: Params) -> nnx.Module:
    """Rebuild the NNX module from its graph definition and a flat parameter dict."""
    return nnx.merge(graphdef, unflatten(params))


def abstract_module(module_cls: type, config: Any) -> tuple[Any, dict, dict]:
    """Build a module without allocating weights.

    Returns (graphdef, {path: ShapeDtypeStruct}, {path: logical axis names})."""
    abstract = nnx.eval_shape(lambda: module_cls(config, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract, nnx.Param)
    shapes, axes = {}, {}
    for path, var in nnx.to_flat_state(state):
        key = path_key(path)
        value = var.get_value() if hasattr(var, "get_value") else var.value
        shapes[key] = jax.ShapeDtypeStruct(value.shape, value.dtype)
        axes[key] = tuple(var.get_metadata().get("out_sharding") or (None,) * len(value.shape))
    return graphdef, shapes, axes


def init_params(module_cls: type, config: Any, seed: int = 0, dtype=jnp.float32) -> Params:
    """Random parameters (HF-style normal(0.02) weights, ones/zeros for norms and biases)."""
    module = module_cls(config, nnx.Rngs(seed))
    _, state = nnx.split(module, nnx.Param)
    out = {}
    for path, var in nnx.to_flat_state(state):
        value = var.get_value() if hasattr(var, "get_value") else var.value
        out[path_key(path)] = jnp.asarray(value, dtype)
    return out


def cast_floating(params: Params, dtype) -> Params:
    if dtype is None:
        return params
    return {k: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v
            for k, v in params.items()}


def forward_hidden(graphdef: Any, params: Params, inputs: dict, *, dtype=None,
                   remat: bool = False, probes: dict | None = None):
    """Final decoder hidden states [B, T, D] and the merged module (for its head)."""
    module = merge(graphdef, cast_floating(params, dtype))
    inputs = dict(inputs)
    input_ids = inputs.pop("input_ids")
    mask = inputs.pop("attention_mask", None)
    if mask is None:
        mask = jnp.ones(input_ids.shape, jnp.int32)
    embeds, positions = module.embed_inputs(input_ids, mask, probes=probes, dtype=dtype, **inputs)
    hidden, _ = module.language_model(embeds, positions, mask, remat=remat,
                                      probes=(probes or {}).get("language"))
    return hidden, module


def forward_logits(graphdef: Any, params: Params, inputs: dict, *, dtype=None,
                   remat: bool = False, probes: dict | None = None) -> jax.Array:
    """Pure forward: logits [B, T, V] in fp32. `inputs` holds input_ids, attention_mask and
    the family's image inputs under their HF names."""
    hidden, module = forward_hidden(graphdef, params, inputs, dtype=dtype, remat=remat,
                                    probes=probes)
    return module.lm_logits(hidden).astype(jnp.float32)


def image_features(graphdef: Any, params: Params, inputs: dict,
                   dtype=None) -> tuple[jax.Array, jax.Array]:
    """Image features as the language model receives them, for any family: the projector
    output (LLaVA, LLaVA-OneVision) or the patch merger output (Qwen-VL) of a host-prepared
    multimodal batch, one row per feature slot, and 0/1 weights of the rows that stand for
    real image tokens (padded images, crop slots and patches weigh 0).

    Returns (features [K, D_text] in the compute dtype, weights [K] float32). LLaVA: K = images
    x tokens (image k is real when k < the number of valid rows holding image tokens);
    Qwen-VL: K = padded patches / merge**2; OneVision: K = crop slots x tokens per crop (a
    row counts when an image token gathers it)."""
    module = merge(graphdef, cast_floating(dict(params), dtype))
    if inputs.get("pixel_values") is None:
        raise ValueError("image_features needs a multimodal batch (pixel_values); text-only "
                         "batches have no image features")
    pix = jnp.asarray(inputs["pixel_values"]).astype(dtype or jnp.float32)
    ids = jnp.asarray(inputs["input_ids"])
    is_img = ids == module.config.image_token_id
    if "vision_pos" in inputs:  # Qwen-VL: host-prepared patch sequence
        vision = {k: inputs[k] for k in ("vision_pos", "vision_segments", "vision_windows",
                                         "vision_perm", "vision_unperm") if k in inputs}
        feats = module.image_features(pix, vision)
        unit = inputs["vision_segments"].shape[0] // feats.shape[0]
        weights = inputs["vision_segments"].reshape(-1, unit)[:, 0] >= 0
        return feats, weights.astype(jnp.float32)
    feats = module.image_features(pix)
    feats = feats.reshape(-1, feats.shape[-1])
    if "image_index" in inputs:  # OneVision: crop slots gathered by image_index / image_weight
        index = jnp.asarray(inputs["image_index"]).reshape(-1)
        hit = ((jnp.asarray(inputs["image_weight"]) != 0) & is_img[..., None]).reshape(-1)
        used = jnp.zeros((feats.shape[0] + 1,), bool).at[index].max(hit)  # + image_newline
        return feats, used[:-1].astype(jnp.float32)
    rows = jnp.any(is_img, axis=1)  # LLaVA: one image per row holding image tokens, in order
    if "example_mask" in inputs:
        rows = rows & (jnp.asarray(inputs["example_mask"]) > 0)
    n_img = jnp.sum(rows)
    per_image = feats.shape[0] // pix.shape[0]
    weights = jnp.repeat(jnp.arange(pix.shape[0]) < n_img, per_image)
    return feats, weights.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("graphdef", "dtype"))
def _jit_logits(graphdef, params, inputs, dtype=None):
    return forward_logits(graphdef, params, inputs, dtype=dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A loaded model: immutable; use `replace(params=...)` for an edited copy."""

    family: str
    config: Any
    hf_config: dict
    graphdef: Any
    params: Params
    logical_axes: dict[str, tuple]
    compute_dtype: Any = None
    source_dir: str | None = None

    def replace(self, **changes) -> "Model":
        return dataclasses.replace(self, **changes)

    def module(self, params: Params | None = None) -> nnx.Module:
        return merge(self.graphdef, self.params if params is None else params)

    def logits(self, input_ids, attention_mask=None, pixel_values=None, **extra) -> jax.Array:
        """Logits [B, T, V] (fp32) for HF-processor-layout inputs (numpy or jax arrays)."""
        inputs = self.host_inputs(input_ids, attention_mask, pixel_values, extra)
        return _jit_logits(self.graphdef, self.params, inputs, dtype=self.compute_dtype)

    def host_inputs(self, input_ids, attention_mask=None, pixel_values=None,
                    extra: dict | None = None) -> dict:
        """Inputs as jax arrays after the family's host-side preparation (if any)."""
        from jaxunlearn.modeling import registry

        fam = registry.family_for(self.hf_config.get("model_type"))
        raw = {"input_ids": np.asarray(input_ids)}
        raw["attention_mask"] = (np.ones_like(raw["input_ids"]) if attention_mask is None
                                 else np.asarray(attention_mask))
        if pixel_values is not None:
            raw["pixel_values"] = pixel_values
        raw.update({k: v for k, v in (extra or {}).items() if v is not None})
        if fam.host_prepare is not None:
            raw = fam.host_prepare(self.config, raw)
        ids, mask = raw.pop("input_ids"), raw.pop("attention_mask")
        pix = raw.pop("pixel_values", None)
        return prepare_inputs(ids, mask, pix, raw)

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.params.values()))


def prepare_inputs(input_ids, attention_mask, pixel_values, extra: dict) -> dict:
    """Collect model inputs into one dict of jax arrays (None entries dropped)."""
    input_ids = jnp.asarray(input_ids, jnp.int32)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    attention_mask = jnp.asarray(attention_mask, jnp.int32)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape "
                         f"{input_ids.shape}")
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if pixel_values is not None:
        inputs["pixel_values"] = jnp.asarray(pixel_values)
    for k, v in extra.items():
        if v is not None:
            inputs[k] = jnp.asarray(v)
    return inputs


