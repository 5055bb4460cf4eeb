"""Train-step factory: one pure `jax.jit` step with gradient accumulation, global-norm
clipping, an optax update, an elementwise update mask and donated state buffers.

Loss contract: `loss_fn(params, frozen, batch) -> (scalar, aux)`; `params` are the trainable
leaves (a dict), `frozen` anything else the loss reads (the rest of the model, a reference
model). If `aux` has a `weight` entry (e.g. the number of answer tokens), micro-batches are
combined as a weighted mean, so accumulation over micro-batches equals the big batch exactly.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.modeling.model import shared_input_keys
from jaxunlearn.train.state import TrainState

LossFn = Callable[[dict, Any, dict], tuple[jax.Array, dict]]


def _shared_entries(batch: Any, where: str = "") -> list[str]:
    """Entries of (nested) batches not indexed by example row (see shared_input_keys)."""
    if not isinstance(batch, dict):
        return []
    out = [f"{where}{k}" for k in shared_input_keys(batch)] if "input_ids" in batch else []
    for k, v in batch.items():
        out += _shared_entries(v, f"{where}{k}.")
    return out


def _split_micro(batch: dict, n: int) -> dict:
    shared = _shared_entries(batch)
    if shared:
        raise ValueError(f"grad_accum={n} cuts each batch into row groups, but the batch entries "
                         f"{shared[:4]} hold the images of the whole batch (qwen2_vl, "
                         "qwen2_5_vl, llava_onevision); set train.grad_accum: 1 for these "
                         "families (raise train.batch_size instead)")

    def split(x):
        if x.shape[0] % n:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by grad_accum={n}")
        return x.reshape((n, x.shape[0] // n) + x.shape[1:])
    return jax.tree.map(split, batch)


def accumulate_grads(loss_fn: LossFn, params: dict, frozen: Any, batch: dict,
                     grad_accum: int = 1,
                     rng_key: str | None = None) -> tuple[jax.Array, dict, dict]:
    """(loss, grads, aux means) over `grad_accum` micro-batches, weighted by aux['weight'];
    `frozen[rng_key]` (when named) is folded with each micro-batch's index."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum == 1:
        (loss, aux), grads = grad_fn(params, frozen, batch)
        return loss, grads, aux

    def body(carry, mb):
        tot_loss, tot_grads, tot_w, tot_aux = carry
        mb, i = mb
        fz = frozen
        if rng_key is not None:
            k = jax.random.fold_in(jax.random.wrap_key_data(frozen[rng_key]), i)
            fz = {**frozen, rng_key: jax.random.key_data(k)}
        (loss, aux), grads = grad_fn(params, fz, mb)
        w = jnp.asarray(aux.get("weight", 1.0), jnp.float32)
        tot_grads = jax.tree.map(lambda a, g: a + g * w, tot_grads, grads)
        tot_aux = jax.tree.map(lambda a, x: a + x, tot_aux, aux)
        return (tot_loss + loss * w, tot_grads, tot_w + w, tot_aux), None

    micro = _split_micro(batch, grad_accum)
    first = jax.tree.map(lambda x: x[0], micro)
    aux_shape = jax.eval_shape(lambda: grad_fn(params, frozen, first)[0][1])
    zeros_aux = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape)
    zeros_g = jax.tree.map(jnp.zeros_like, params)
    init = (jnp.float32(0.0), zeros_g, jnp.float32(0.0), zeros_aux)
    (loss, grads, w, aux), _ = jax.lax.scan(body, init, (micro, jnp.arange(grad_accum)))
    grads = jax.tree.map(lambda g: g / w, grads)
    aux = jax.tree.map(lambda a: a / grad_accum, aux)
    if "weight" in aux:
        aux["weight"] = w
    return loss / w, grads, aux


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                    grad_accum: int = 1, clip_norm: float | None = 1.0,
                    update_mask: dict | None = None, state_shardings: Any = None,
                    frozen_shardings: Any = None, batch_shardings: Any = None,
                    donate: bool = True, rng_key: str | None = None,
                    grad_mask: Callable[[Any, dict], dict] | None = None) -> Callable:
    """Build `step(state, frozen, batch) -> (state, metrics)` as one jitted function.

    `update_mask` (same keys as the trainable params; bool/0-1 arrays or scalars) multiplies
    the optimizer's updates, so masked entries never move, weight decay included.
    Shardings, when given, are passed to jit as explicit in/out shardings.
    `grad_mask(frozen, batch) -> {path: 0/1 array}` multiplies the gradient AFTER clipping
    (the global norm is that of the full gradient; MMUnlearner's published order), unlike a
    mask applied inside the loss, which acts before the clip.
    `rng_key` (a name): the loss finds a fresh PRNG key (raw key data) as `frozen[rng_key]`,
    `fold_in(state.rng, step)` (and the micro-batch index under accumulation), e.g. for dropout.
    """

    def step(state: TrainState, frozen: Any, batch: dict):
        if rng_key is not None:
            key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
            frozen = {**frozen, rng_key: jax.random.key_data(key)}
        loss, grads, aux = accumulate_grads(loss_fn, state.params, frozen, batch, grad_accum,
                                            rng_key)
        gnorm = optax.tree.norm(grads)
        if clip_norm is not None:
            scale = jnp.minimum(1.0, clip_norm / jnp.maximum(gnorm, 1e-12))
            grads = jax.tree.map(lambda g: g * scale, grads)
        if grad_mask is not None:
            gm = grad_mask(frozen, batch)
            grads = {k: g * jnp.asarray(gm[k], g.dtype) if k in gm else g
                     for k, g in grads.items()}
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        if update_mask is not None:
            updates = {k: u * jnp.asarray(update_mask[k], u.dtype) if k in update_mask else u
                       for k, u in updates.items()}
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": gnorm, **{k: v for k, v in aux.items()
                                                          if jnp.ndim(v) == 0}}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    kwargs: dict[str, Any] = {}
    if donate:
        kwargs["donate_argnums"] = (0,)
    if state_shardings is not None:
        kwargs["in_shardings"] = (state_shardings, frozen_shardings, batch_shardings)
        kwargs["out_shardings"] = (state_shardings, None)
    return jax.jit(step, **kwargs)


def shardings_of(tree: Any) -> Any:
    """The current sharding of every array leaf (for explicit jit shardings)."""
    return jax.tree.map(lambda x: x.sharding, tree)
