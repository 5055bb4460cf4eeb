"""Vision-transformer pieces shared by the CLIP (LLaVA), SigLIP (LLaVA-OneVision) and
Qwen2-VL towers: patch flattening, bias-ful multi-head attention, the fc1/fc2 MLP and the
pre-norm encoder layer (CLIP's and SigLIP's layers have the same structure and names).

The patch convolution (kernel = stride = patch) is a matmul over flattened patches: the
kernel is stored [C*P*P, D], flattened in the (C, P, P) order of torch's conv weight.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxunlearn.modeling.layers import LayerNorm, Linear, activation, dot_product_attention


def patchify(pixel_values: jax.Array, patch: int) -> jax.Array:
    """[N, C, H, W] -> [N, (H/P)*(W/P), C*P*P], patches in row-major order."""
    n, c, h, w = pixel_values.shape
    gh, gw = h // patch, w // patch
    x = pixel_values.reshape(n, c, gh, patch, gw, patch)
    x = x.transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(n, gh * gw, c * patch * patch)


class VisionAttention(nnx.Module):
    """q/k/v/out projections with biases, full attention (CLIP / SigLIP)."""

    def __init__(self, c, rngs: nnx.Rngs):
        d = c.hidden_size
        self.heads = c.num_attention_heads
        self.q_proj = Linear(d, d, use_bias=True, axes=("embed", "heads"), rngs=rngs)
        self.k_proj = Linear(d, d, use_bias=True, axes=("embed", "heads"), rngs=rngs)
        self.v_proj = Linear(d, d, use_bias=True, axes=("embed", "heads"), rngs=rngs)
        self.out_proj = Linear(d, d, use_bias=True, axes=("heads", "embed"), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
        out = dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)),
                                    split(self.v_proj(x)), None)
        return self.out_proj(out.reshape(b, t, d))


class VisionMLP(nnx.Module):
    """fc1 -> act -> fc2; the neuron activation z = act(fc1(x)) feeds fc2."""

    def __init__(self, d: int, hidden: int, act: str, rngs: nnx.Rngs):
        self.fc1 = Linear(d, hidden, use_bias=True, axes=("embed", "mlp"), rngs=rngs)
        self.fc2 = Linear(hidden, d, use_bias=True, axes=("mlp", "embed"), rngs=rngs)
        self.act = activation(act)

    def __call__(self, x: jax.Array, probe=None) -> jax.Array:
        pre = self.fc1(x)
        z = self.act(pre)
        out = self.fc2(z)
        if probe is not None:
            probe(pre, z, {"fc1": pre, "fc2": out})
        return out


class EncoderLayer(nnx.Module):
    """Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x)). `c` is a CLIP or SigLIP
    vision config (hidden_size, num_attention_heads, intermediate_size, hidden_act,
    layer_norm_eps)."""

    def __init__(self, c, rngs: nnx.Rngs):
        self.self_attn = VisionAttention(c, rngs)
        self.layer_norm1 = LayerNorm(c.hidden_size, c.layer_norm_eps, rngs=rngs)
        self.mlp = VisionMLP(c.hidden_size, c.intermediate_size, c.hidden_act, rngs)
        self.layer_norm2 = LayerNorm(c.hidden_size, c.layer_norm_eps, rngs=rngs)

    def __call__(self, x: jax.Array, probe=None) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x), probe)
