"""LoRA as parameter transforms: its own flat pytree, merged into the base kernels for the
forward pass, exported either merged (HF weights) or as a PEFT adapter directory
(`checkpoint.peft.save_peft_adapter`).

A target kernel W [in, out] gets `W + scale * A @ B` with A [in, r], B [r, out],
scale = alpha / r; A starts random, B at zero (so training starts from the base model).
The adapter is merged into the weights inside the jitted loss; LoRA dropout is therefore
not supported (asking for it is an error rather than silently ignored).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_TARGETS = r"^language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.kernel$"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: str = DEFAULT_TARGETS  # regex over parameter paths of kernels

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        if self.dropout:
            raise ValueError("lora.dropout > 0 is not supported (LoRA is merged into the "
                             "weights inside the step); set lora.dropout: 0")

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
        out[_base(path) + ".lora_a"] = (jax.random.normal(k, (d_in, cfg.rank), jnp.float32)
                                        / np.sqrt(d_in)).astype(params[path].dtype)
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
