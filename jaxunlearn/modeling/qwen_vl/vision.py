"""Qwen2-VL / Qwen2.5-VL native-resolution vision tower (HF `Qwen2VisionTransformerPretrainedModel`
and `Qwen2_5_VisionTransformerPretrainedModel`) on one padded, statically shaped patch sequence.

HF runs the tower on the concatenation of every image's patches and splits attention with
`cu_seqlens`. Here the host (numpy, see `host.vision_host_arrays`) pads that sequence to a bucket
length `N_pad` and describes its structure with integer arrays; inside jit the block-diagonal
attention masks are rebuilt from segment ids, so a new image size only changes data, not shapes:

- `vision_pos` [N_pad, 2]: (row, column) patch ids for the 2-D rotary embedding, in the order
  the tower processes patches (window order for Qwen2.5-VL);
- `vision_segments` [N_pad]: one id per (image, frame); full attention stays inside a segment;
- `vision_windows` [N_pad] (Qwen2.5-VL): one id per attention window;
- `vision_perm` [N_pad] (Qwen2.5-VL): patch order of the windowed sequence (`x = x[perm]`);
- `vision_unperm` [N_pad / merge**2] (Qwen2.5-VL): merged tokens back to image order.

Padding patches carry segment / window id -1: they attend only to each other and their
outputs land after every real image token, where nothing reads them.

The Conv3d patch embedding (kernel = stride) is a matmul over HF's flattened patches
[N, C*T*P*P]; the kernel is stored [C*T*P*P, D] in the (C, T, P, P) order of torch's weight.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.layers import (
    LayerNorm, Linear, RMSNorm, activation, apply_rotary, dot_product_attention,
)
from jaxunlearn.modeling.qwen_vl.config import QWEN2_5_VL, QwenVisionConfig
from jaxunlearn.modeling.vit import VisionMLP


def vision_cos_sin(pos: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """2-D axial rotary tables [N, head_dim]: the first quarter of frequencies rotate by the row
    id, the second by the column id, duplicated (HF `Qwen2VLVisionRotaryEmbedding`)."""
    dim = head_dim // 2
    inv = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    freqs = pos.astype(jnp.float32)[..., None] * inv          # [N, 2, dim/2]
    freqs = freqs.reshape(freqs.shape[0], -1)                  # [N, dim] = (h freqs, w freqs)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


class PatchEmbed(nnx.Module):
    def __init__(self, c: QwenVisionConfig, rngs: nnx.Rngs):
        self.proj = Linear(c.patch_dim, c.hidden_size, use_bias=False, axes=(None, "embed"),
                           rngs=rngs)

    def __call__(self, patches: jax.Array) -> jax.Array:
        return self.proj(patches)


class QwenVisionAttention(nnx.Module):
    def __init__(self, c: QwenVisionConfig, rngs: nnx.Rngs):
        d = c.hidden_size
        self.heads = c.num_heads
        self.qkv = Linear(d, 3 * d, use_bias=True, axes=("embed", "heads"), rngs=rngs)
        self.proj = Linear(d, d, use_bias=True, axes=("heads", "embed"), rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
                 allowed: jax.Array) -> jax.Array:
        n, d = x.shape
        qkv = self.qkv(x).reshape(1, n, 3, self.heads, d // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = apply_rotary(q, cos[None], sin[None])
        k = apply_rotary(k, cos[None], sin[None])
        out = dot_product_attention(q, k, v, allowed[None])
        return self.proj(out.reshape(n, d))


class GatedVisionMLP(nnx.Module):
    """Qwen2.5-VL: down(act(gate(x)) * up(x)), all with bias; z = act(gate) * up feeds down."""

    def __init__(self, c: QwenVisionConfig, rngs: nnx.Rngs):
        d, hdim = c.hidden_size, c.intermediate_size
        self.gate_proj = Linear(d, hdim, use_bias=True, axes=("embed", "mlp"), rngs=rngs)
        self.up_proj = Linear(d, hdim, use_bias=True, axes=("embed", "mlp"), rngs=rngs)
        self.down_proj = Linear(hdim, d, use_bias=True, axes=("mlp", "embed"), rngs=rngs)
        self.act = activation(c.hidden_act)

    def __call__(self, x: jax.Array, probe=None) -> jax.Array:
        pre = self.gate_proj(x)
        up = self.up_proj(x)
        z = self.act(pre) * up
        out = self.down_proj(z)
        if probe is not None:
            probe(pre, z, {"gate_proj": pre, "up_proj": up, "down_proj": out})
        return out


def _norm(c: QwenVisionConfig, dim: int, rngs: nnx.Rngs) -> nnx.Module:
    if c.variant == QWEN2_5_VL:
        return RMSNorm(dim, 1e-6, rngs=rngs)
    return LayerNorm(dim, 1e-6, rngs=rngs)


class QwenVisionBlock(nnx.Module):
    def __init__(self, c: QwenVisionConfig, rngs: nnx.Rngs):
        self.norm1 = _norm(c, c.hidden_size, rngs)
        self.norm2 = _norm(c, c.hidden_size, rngs)
        self.attn = QwenVisionAttention(c, rngs)
        if c.variant == QWEN2_5_VL:
            self.mlp = GatedVisionMLP(c, rngs)
        else:
            self.mlp = VisionMLP(c.hidden_size, c.intermediate_size, c.hidden_act, rngs)

    def __call__(self, x, cos, sin, allowed, probe=None) -> jax.Array:
        x = x + self.attn(self.norm1(x), cos, sin, allowed)
        return x + self.mlp(self.norm2(x), probe)


class _Gelu(nnx.Module):
    """Parameter-free slot so the merger MLP's indices match HF's `nn.Sequential` (0, 2)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=False)


class PatchMerger(nnx.Module):
    """ln_q, then each merge_size x merge_size block of patches -> Linear, GELU, Linear."""

    def __init__(self, c: QwenVisionConfig, rngs: nnx.Rngs):
        d = c.hidden_size * c.merge_unit
        self.unit = c.merge_unit
        self.ln_q = _norm(c, c.hidden_size, rngs)
        self.mlp = nnx.List([
            Linear(d, d, use_bias=True, axes=(None, "mlp"), rngs=rngs),
            _Gelu(),
            Linear(d, c.out_hidden_size, use_bias=True, axes=("mlp", "embed"), rngs=rngs),
        ])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.ln_q(x)
        x = x.reshape(x.shape[0] // self.unit, -1)
        for layer in self.mlp:
            x = layer(x)
        return x


class QwenVisionTransformer(nnx.Module):
    """Patch embedding, `depth` blocks and the patch merger, on a padded patch sequence."""

    def __init__(self, c: QwenVisionConfig, rngs: nnx.Rngs):
        self.c = c
        self.patch_embed = PatchEmbed(c, rngs)
        self.blocks = nnx.List([QwenVisionBlock(c, rngs) for _ in range(c.depth)])
        self.merger = PatchMerger(c, rngs)

    def __call__(self, pixel_values: jax.Array, vision_pos: jax.Array, vision_segments: jax.Array,
                 vision_windows: jax.Array | None = None, vision_perm: jax.Array | None = None,
                 vision_unperm: jax.Array | None = None, probes: list | None = None) -> jax.Array:
        """pixel_values [N_pad, C*T*P*P] (processor order) -> merged tokens
        [N_pad / merge**2, out_hidden_size] in processor order."""
        c = self.c
        if pixel_values.ndim != 2 or pixel_values.shape[-1] != c.patch_dim:
            raise ValueError(f"pixel_values must be [patches, {c.patch_dim}] (C*T*P*P flattened "
                             f"patches from the Qwen2-VL processor), got {pixel_values.shape}")
        x = self.patch_embed(pixel_values)
        if c.windowed:
            if vision_perm is None or vision_windows is None or vision_unperm is None:
                raise ValueError("Qwen2.5-VL needs vision_windows / vision_perm / vision_unperm; "
                                 "prepare inputs with Model.host_inputs or qwen_vl.host_prepare")
            x = jnp.take(x, vision_perm, axis=0)
        cos, sin = vision_cos_sin(vision_pos, c.head_dim, c.rope_theta)
        full = vision_segments[:, None] == vision_segments[None, :]
        window = vision_windows[:, None] == vision_windows[None, :] if c.windowed else full
        for i, blk in enumerate(self.blocks):
            allowed = full if (not c.windowed or i in c.fullatt_block_indexes) else window
            x = blk(x, cos, sin, allowed, probes[i] if probes is not None else None)
        merged = self.merger(x)
        if c.windowed:
            merged = jnp.take(merged, vision_unperm, axis=0)
        return merged
