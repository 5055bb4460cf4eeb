"""Prefill + jitted decoding with a fixed-size KV cache (greedy, temperature / top-p).

The whole loop is one `jax.jit` call: a `lax.while_loop` that stops when every row has
emitted EOS or `max_new_tokens` is reached. Prompts must be left-padded (the HF convention
for decoder-only generation); positions continue from each row's last real position, which
also covers M-RoPE (`rope_deltas` are implied by the prefill positions).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.modeling.model import Model, cast_floating, merge


class Placement(Protocol):
    """Where a generation's inputs go and how its outputs come back (see `generate`)."""

    def place(self, inputs: dict) -> dict: ...

    def host(self, tree: Any) -> Any: ...


def _bucket(n: int, multiple: int = 16) -> int:
    return int(-(-n // multiple) * multiple)


def sample_token(logits: jax.Array, rng: jax.Array | None, temperature: float,
                 top_p: float) -> jax.Array:
    """Greedy when rng is None, else temperature + nucleus (top-p) sampling. logits [B, V]."""
    if rng is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / max(float(temperature), 1e-6)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep = mass_before < top_p  # the first token is always kept
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


# XLA:CPU routes dots through YNNPACK by default; for the skinny [batch, d] x [d, n] products of
# a decoding step its kernels reach about two thirds of the memory bandwidth the default Eigen
# kernels reach (measured on the benchmark config: 16 -> 12 ms per step), while for the large
# products of training they are faster. The option is scoped to this one executable.
CPU_DECODE_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_STATIC = ("graphdef", "capacity", "eos_ids", "pad_id", "do_sample", "temperature",
           "top_p", "dtype")


def new_token_capacity(max_new_tokens: int) -> int:
    """KV-cache room for new tokens: a power of two, at least 64, so that calls with different
    `max_new_tokens` (e.g. 4, 16 and 50 for the evaluation tasks) share one program."""
    return max(64, 1 << (int(max_new_tokens) - 1).bit_length())


def _generate_impl(graphdef, params, inputs, rng, max_new_tokens, *, capacity: int,
                   eos_ids: tuple, pad_id: int, do_sample: bool, temperature: float,
                   top_p: float, dtype):
    module = merge(graphdef, cast_floating(params, dtype))
    lm = module.language_model
    c = lm.c
    inputs = dict(inputs)
    input_ids = inputs.pop("input_ids")
    mask = inputs.pop("attention_mask")
    b, t = input_ids.shape
    s = t + capacity
    embeds, positions = module.embed_inputs(input_ids, mask, dtype=dtype, **inputs)
    cache_dtype = embeds.dtype
    cache = [(jnp.zeros((b, c.num_key_value_heads, s, c.head_dim), cache_dtype),
              jnp.zeros((b, c.num_key_value_heads, s, c.head_dim), cache_dtype))
             for _ in range(c.num_hidden_layers)]
    key_valid = jnp.concatenate([mask, jnp.zeros((b, capacity), mask.dtype)], axis=1)
    hidden, cache = lm(embeds, positions, key_valid, cache, 0)
    logits = module.lm_logits(hidden[:, -1]).astype(jnp.float32)
    # next position per row: one past the largest position used by its real tokens
    pos_valid = jnp.where(mask.astype(bool), positions, -1)
    next_pos = jnp.max(pos_valid.reshape(-1, b, t) if positions.ndim == 3 else pos_valid[None],
                       axis=(0, 2)) + 1
    eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)
    out = jnp.full((b, capacity), pad_id, jnp.int32)
    done = jnp.zeros((b,), bool)

    def cond(carry):
        step, _, _, _, _, done, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, logits, cache, key_valid, out, done, rng = carry
        if do_sample:
            rng, sub = jax.random.split(rng)
        else:
            sub = None
        tok = sample_token(logits, sub, temperature, top_p)
        tok = jnp.where(done, pad_id, tok)
        out = out.at[:, step].set(tok)
        done = done | jnp.isin(tok, eos)
        key_valid = jax.lax.dynamic_update_slice(key_valid, jnp.ones((b, 1), key_valid.dtype),
                                                 (0, t + step))
        emb = lm.embed_tokens(tok[:, None]).astype(cache_dtype)
        pos = (next_pos + step)[:, None]
        if positions.ndim == 3:
            pos = jnp.broadcast_to(pos[None], (positions.shape[0], b, 1))
        h, cache = lm(emb, pos, key_valid, cache, t + step)
        logits = module.lm_logits(h[:, 0]).astype(jnp.float32)
        return step + 1, logits, cache, key_valid, out, done, rng

    carry = (jnp.int32(0), logits, cache, key_valid, out, done, rng)
    step, _, _, _, out, _, _ = jax.lax.while_loop(cond, body, carry)
    return out, step


@functools.lru_cache(maxsize=None)
def _compiled_generate(backend: str):
    options = CPU_DECODE_COMPILER_OPTIONS if backend == "cpu" else None
    return jax.jit(_generate_impl, static_argnames=_STATIC, compiler_options=options)


def generate(model: Model, input_ids, attention_mask=None, pixel_values=None, *,
             max_new_tokens: int = 16, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, rng: jax.Array | None = None,
             eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             bucket: int = 16, placement: Placement | None = None, **extra) -> np.ndarray:
    """Generate new tokens for a left-padded batch; returns only the new tokens [B, n].

    Greedy by default (`do_sample=False`); sampling needs an explicit PRNG key `rng`. Rows that
    finished emit `pad_token_id` (HF's convention); n is `max_new_tokens` or fewer when every
    row finished earlier. Prompts are left-padded further to a multiple of `bucket` so that
    prompts of similar length share one compilation, and `max_new_tokens` is a runtime value
    within a power-of-two cache capacity (`new_token_capacity`), so different lengths of
    answer share it too.

    `placement` spreads one generation over several processes (`jaxunlearn.eval.spmd`):
    its `place` turns the host-prepared inputs (this process's rows, or the whole batch) into
    global arrays on the mesh, the decoding loop runs as one SPMD program over the global
    batch (the parameters must be on the same mesh), and its `host` gathers the new tokens:
    the result is then the global batch's [B, n] in every process.
    """
    ids = np.asarray(input_ids)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    if (mask[:, -1] == 0).any():
        raise ValueError("generation needs left-padded prompts (the last column must be a real "
                         "token in every row); pad with padding_side='left'")
    if do_sample and rng is None:
        raise ValueError("do_sample=True needs an explicit PRNG key: pass rng=jax.random.key(seed)")
    eos = _eos_ids(model, eos_token_id)
    pad = pad_token_id
    if pad is None:
        pad = model.hf_config.get("pad_token_id")
        if pad is None:
            pad = (model.hf_config.get("text_config") or {}).get("pad_token_id")
        if pad is None:
            pad = eos[0] if eos else 0
    extra_pad = _bucket(ids.shape[1], bucket) - ids.shape[1] if bucket else 0
    if extra_pad:
        ids = np.concatenate([np.full((ids.shape[0], extra_pad), pad, ids.dtype), ids], axis=1)
        mask = np.concatenate([np.zeros((mask.shape[0], extra_pad), mask.dtype), mask], axis=1)
    inputs = model.host_inputs(ids, mask, pixel_values, extra)
    if placement is not None:
        inputs = placement.place(inputs)
    run = _compiled_generate(jax.default_backend())
    out, steps = run(model.graphdef, model.params, inputs, rng if do_sample else None,
                     np.int32(max_new_tokens), capacity=new_token_capacity(max_new_tokens),
                     eos_ids=tuple(eos), pad_id=int(pad), do_sample=bool(do_sample),
                     temperature=float(temperature), top_p=float(top_p),
                     dtype=model.compute_dtype)
    out = placement.host(out) if placement is not None else np.asarray(out)
    return out[:, : int(steps)]


def _eos_ids(model: Model, eos_token_id) -> list[int]:
    if eos_token_id is None:
        eos_token_id = model.hf_config.get("eos_token_id")
        if eos_token_id is None:
            eos_token_id = (model.hf_config.get("text_config") or {}).get("eos_token_id")
    if eos_token_id is None:
        return []
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    return [int(e) for e in eos_token_id]
