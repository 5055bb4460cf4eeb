"""LoRA as parameter transforms: its own flat pytree, merged into the base kernels for the
forward pass, exported either merged (HF weights) or as a PEFT adapter directory
(`checkpoint.peft.save_peft_adapter`).

A target kernel W [in, out] gets `W + scale * A @ B` with A [in, r], B [r, out],
scale = alpha / r; A starts random, B at zero (so training starts from the base model).
Without dropout the adapter is merged into the weights inside the jitted loss. With
`dropout > 0` the training forward keeps it unmerged (`LoraKernel`, `train_params`) and
computes peft's LoRA Linear forward, `x @ W + dropout(x) @ A @ B * scale` (huggingface/peft,
`src/peft/tuners/lora/layer.py::Linear.forward`: `result + lora_B(lora_A(dropout(x))) *
scaling`, base path undropped), with a fresh dropout mask per step from the train step's key;
evaluation, statistics and export always use the merged weights (no dropout).
`init: gaussian` is peft's `init_lora_weights="gaussian"` (A ~ N(0, 1/r^2)); the default
`fan_in` draws A ~ N(0, 1/d_in).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.modeling.layers import KernelOp

INITS = ("fan_in", "gaussian")
DEFAULT_TARGETS = r"^language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.kernel$"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: str = DEFAULT_TARGETS  # regex over parameter paths of kernels
    init: str = "fan_in"  # A ~ N(0, 1/d_in) (fan_in) or N(0, 1/r^2) (gaussian, peft's)

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
        if self.init not in INITS:
            raise ValueError(f"lora init {self.init!r} is not one of {INITS}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def target_paths(params: Mapping[str, jax.Array], cfg: LoraConfig) -> list[str]:
    pattern = re.compile(cfg.targets)
    paths = [p for p, v in params.items() if pattern.search(p) and v.ndim == 2]
    if not paths:
        raise ValueError(f"lora targets {cfg.targets!r} match no 2-D kernel of this model")
    return sorted(paths)


def _base(path: str) -> str:
    return path[: -len(".kernel")]


def init_lora(params: Mapping[str, jax.Array], cfg: LoraConfig, seed: int = 0) -> dict:
    """{`<module>.lora_a`: [in, r], `<module>.lora_b`: [r, out]} for every target kernel."""
    out = {}
    key = jax.random.key(seed)
    for i, path in enumerate(target_paths(params, cfg)):
        d_in, d_out = params[path].shape
        k = jax.random.fold_in(key, i)
        std = 1.0 / cfg.rank if cfg.init == "gaussian" else 1.0 / np.sqrt(d_in)
        out[_base(path) + ".lora_a"] = (jax.random.normal(k, (d_in, cfg.rank), jnp.float32)
                                        * std).astype(params[path].dtype)
        out[_base(path) + ".lora_b"] = jnp.zeros((cfg.rank, d_out), params[path].dtype)
    return out


def lora_delta(lora: Mapping[str, jax.Array], cfg: LoraConfig) -> dict[str, jax.Array]:
    """{kernel path: scale * A @ B}."""
    return {a[: -len(".lora_a")] + ".kernel":
            cfg.scale * (lora[a].astype(jnp.float32) @ lora[a[:-1] + "b"].astype(jnp.float32))
            for a in lora if a.endswith(".lora_a")}


def merge(params: Mapping[str, jax.Array], lora: Mapping[str, jax.Array],
          cfg: LoraConfig) -> dict[str, jax.Array]:
    """Base params with the adapter added to its target kernels (pure)."""
    out = dict(params)
    for path, d in lora_delta(lora, cfg).items():
        out[path] = (params[path].astype(jnp.float32) + d).astype(params[path].dtype)
    return out


def unmerge(params: Mapping[str, jax.Array], lora: Mapping[str, jax.Array],
            cfg: LoraConfig) -> dict[str, jax.Array]:
    out = dict(params)
    for path, d in lora_delta(lora, cfg).items():
        out[path] = (params[path].astype(jnp.float32) - d).astype(params[path].dtype)
    return out


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoraKernel(KernelOp):
    """An unmerged LoRA kernel for the training forward with dropout:
    `matmul(x) = x @ base + (dropout(x) @ a @ b) * scale`, the adapter path in fp32 (peft
    keeps adapters in fp32) and cast to the input dtype; `key` is raw PRNG key data."""

    base: jax.Array
    a: jax.Array
    b: jax.Array
    key: jax.Array
    scale: float = dataclasses.field(metadata={"static": True})
    rate: float = dataclasses.field(metadata={"static": True})

    @property
    def dtype(self):
        return self.base.dtype

    def astype(self, dtype) -> "LoraKernel":
        return dataclasses.replace(self, base=self.base.astype(dtype))

    def __getitem__(self, index) -> "LoraKernel":
        return self

    def matmul(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x, self.base.astype(x.dtype))
        h = x.astype(jnp.float32)
        if self.rate > 0:
            keep = jax.random.bernoulli(jax.random.wrap_key_data(self.key), 1.0 - self.rate,
                                        x.shape)
            h = jnp.where(keep, h / (1.0 - self.rate), 0.0)
        lora = (h @ self.a.astype(jnp.float32)) @ self.b.astype(jnp.float32) * self.scale
        return y + lora.astype(x.dtype)


def train_params(params: Mapping[str, jax.Array], lora: Mapping[str, jax.Array],
                 cfg: LoraConfig, key: jax.Array | None) -> dict:
    """The training forward's parameters: `merge` when there is no dropout (or no `key`),
    else the base params with every target kernel an unmerged `LoraKernel` whose dropout
    mask comes from `key` folded with the target's index (raw key data)."""
    if not cfg.dropout or key is None:
        return merge(params, lora, cfg)
    out = dict(params)
    key = jax.random.wrap_key_data(key) if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) \
        else key
    for i, a in enumerate(sorted(k for k in lora if k.endswith(".lora_a"))):
        path = a[: -len(".lora_a")] + ".kernel"
        out[path] = LoraKernel(params[path], lora[a], lora[a[:-1] + "b"],
                               jax.random.key_data(jax.random.fold_in(key, i)),
                               float(cfg.scale), float(cfg.dropout))
    return out
