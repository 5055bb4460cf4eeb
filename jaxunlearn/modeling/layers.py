"""Building blocks shared by every ported model: linear, norms, embeddings, rotary, attention.

Parameters are `nnx.Param`s that carry logical axis names in their `out_sharding` metadata
(`embed`, `mlp`, `heads`, `kv_heads`, `vocab`, ...); `jaxunlearn.parallel.mesh` maps those
names to mesh axes. Leaf names mirror the Hugging Face names where the layout is the same
(`weight`, `bias`) and use `kernel` where the array is stored transposed ([in, out]).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

INIT_STD = 0.02


def param(rngs: nnx.Rngs | None, shape: Sequence[int], axes: Sequence[str | None],
          init: str = "normal", dtype=jnp.float32) -> nnx.Param:
    """A parameter with logical axis names; `init` is `normal` (std 0.02), `zeros` or `ones`."""
    shape = tuple(int(s) for s in shape)
    if init == "normal":
        value = INIT_STD * jax.random.normal(rngs.params(), shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    elif init == "ones":
        value = jnp.ones(shape, dtype)
    else:
        raise ValueError(f"unknown init {init!r}; use normal, zeros or ones")
    return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


class KernelOp:
    """A kernel value that computes `x @ kernel` itself (e.g. a LoRA adapter kept unmerged so
    that dropout can act on its input path: `train.lora.LoraKernel`). Subclasses are pytrees
    with `dtype`, `astype(dtype)`, `__getitem__(...)` returning themselves and `matmul(x)`."""

    def matmul(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError


class Linear(nnx.Module):
    """y = x @ kernel + bias, kernel stored [in, out] (the transpose of torch's weight).
    A `KernelOp` kernel computes the product itself."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool,
                 axes: tuple[str | None, str | None], rngs: nnx.Rngs):
        self.kernel = param(rngs, (in_features, out_features), axes)
        self.bias = param(rngs, (out_features,), (axes[1],), "zeros") if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel[...]
        y = k.matmul(x) if isinstance(k, KernelOp) else jnp.dot(x, k.astype(x.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        return y


class Embed(nnx.Module):
    """Lookup table `weight` [num, features] (same layout as torch)."""

    def __init__(self, num: int, features: int, *, axes=("vocab", "embed"), rngs: nnx.Rngs):
        self.weight = param(rngs, (num, features), axes)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.weight[...], ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output head: x @ weight.T."""
        return jnp.dot(x, self.weight[...].astype(x.dtype).T)


class RMSNorm(nnx.Module):
    """Llama/Qwen RMSNorm: normalise in fp32, cast back, then scale (HF order of operations)."""

    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs | None = None):
        self.weight = param(rngs, (dim,), ("norm",), "ones")
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(dtype) * h.astype(dtype)


class LayerNorm(nnx.Module):
    """LayerNorm with weight and bias, statistics in fp32."""

    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs | None = None):
        self.weight = param(rngs, (dim,), ("norm",), "ones")
        self.bias = param(rngs, (dim,), ("norm",), "zeros")
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        h = x.astype(jnp.float32)
        mean = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
        h = (h - mean) * jax.lax.rsqrt(var + self.eps)
        h = h * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return h.astype(dtype)


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": quick_gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "relu": jax.nn.relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function HF calls `name`; a clear error for one not ported."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# ----------------------------------------------------------------------------- rotary

def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> jnp.ndarray:
    """Inverse frequencies of rotary embeddings (`default` and `linear` HF rope types)."""
    inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type == "linear":
        inv = inv / float(scaling["factor"])
    elif rope_type not in ("default", "mrope"):
        raise ValueError(f"unsupported rope_type {rope_type!r}; supported: default, linear, mrope")
    return inv


def rope_cos_sin(positions: jax.Array, inv_freq: jax.Array,
                 mrope_section: Sequence[int] | None = None) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [B, T, head_dim] for integer positions.

    `positions` is [B, T], or [3, B, T] (temporal, height, width) for M-RoPE, in which case
    the frequency bands are split by `mrope_section` and each band takes its own axis.
    """
    pos = positions.astype(jnp.float32)
    freqs = pos[..., None] * inv_freq  # [..., B, T, D/2]
    if mrope_section is not None:
        if positions.ndim != 3:
            raise ValueError("M-RoPE needs positions of shape [3, B, T]")
        bands, start = [], 0
        for axis, width in enumerate(mrope_section):
            bands.append(freqs[axis, ..., start:start + width])
            start += width
        freqs = jnp.concatenate(bands, axis=-1)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def rotate_half(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, H, D] with cos/sin [B, T, D] (HF rotate-half convention), computed in fp32."""
    dtype = x.dtype
    xf = x.astype(jnp.float32)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return (xf * c + rotate_half(xf) * s).astype(dtype)


# ----------------------------------------------------------------------------- attention

NEG_INF = -1e30


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          allowed: jax.Array | None) -> jax.Array:
    """Grouped-query attention.

    q [B, Tq, H, D]; k, v [B, S, KV, D] with H a multiple of KV; `allowed` a boolean
    [B, Tq, S] (True = may attend) or None for full attention. Softmax in fp32; a query row
    with no allowed key yields a uniform average instead of NaN (it is padding anyway).
    Returns [B, Tq, H, D].
    """
    return attention_heads_major(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), allowed)


def attention_heads_major(q: jax.Array, k: jax.Array, v: jax.Array,
                          allowed: jax.Array | None) -> jax.Array:
    """`dot_product_attention` with keys and values in heads-major layout [B, KV, S, D].

    This is the layout of the generation KV cache: a decoding step appends one key per head
    with a contiguous write and the score / value products read it without a transpose.
    q [B, Tq, H, D]; returns [B, Tq, H, D].
    """
    b, tq, h, d = q.shape
    kv = k.shape[1]
    g = h // kv
    qg = q.reshape(b, tq, kv, g, d).transpose(0, 2, 3, 1, 4)  # [B, KV, G, Tq, D]
    scores = jnp.einsum("bkgtd,bksd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (d ** -0.5)
    if allowed is not None:
        scores = jnp.where(allowed[:, None, None, :, :], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, tq, h, d)
