"""The train state: trainable parameters, optimizer state, step counter and RNG key."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
    step: jax.Array
    params: dict[str, jax.Array]  # trainable leaves only; frozen ones travel separately
    opt_state: Any
    rng: jax.Array


def make_optimizer(lr: float = 1e-4, *, schedule: str = "cosine", warmup_steps: int = 0,
                   total_steps: int = 1000, weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, end_lr_ratio: float = 0.0,
                   optimizer: str = "adamw") -> optax.GradientTransformation:
    """AdamW (or SGD) with a constant / linear / cosine schedule after linear warmup."""
    warmup_steps = max(int(warmup_steps), 0)
    decay_steps = max(int(total_steps) - warmup_steps, 1)
    if schedule == "constant":
        decay = optax.constant_schedule(lr)
    elif schedule == "linear":
        decay = optax.linear_schedule(lr, lr * end_lr_ratio, decay_steps)
    elif schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end_lr_ratio)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; use constant, linear or cosine")
    sched = (optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), decay],
                                  [warmup_steps]) if warmup_steps else decay)
    if optimizer == "adamw":
        return optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    if optimizer == "sgd":
        return optax.sgd(sched)
    raise ValueError(f"unknown optimizer {optimizer!r}; use adamw or sgd")


def init_state(params: dict, optimizer: optax.GradientTransformation, seed: int = 0,
               copy: bool = True, mesh=None) -> TrainState:
    """A fresh state; optimizer state is created with the same placement as `params`.

    Train steps donate the state's buffers; with `copy=True` (default) the state owns copies,
    so the caller's `params` (e.g. `model.params`) stay valid. Pass `copy=False` to hand the
    buffers over and save memory on large models. With a `mesh`, scalars (step, RNG, optimizer
    counters) are replicated over it so the whole state lives on the mesh."""
    if copy:
        params = jax.tree.map(jnp.copy, params)
    if mesh is None:
        opt_state = jax.jit(optimizer.init)(params)
    else:  # moments laid out like their parameters (XLA would replicate fresh zeros)
        shapes = jax.eval_shape(optimizer.init, params)
        opt_state = jax.jit(optimizer.init,
                            out_shardings=_like_params(shapes, params, mesh))(params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                       rng=jax.random.key_data(jax.random.key(seed)))
    if mesh is not None:
        state = replicate_unplaced(state, mesh)
    return state


def _like_params(shapes, params: dict, mesh):
    """Shardings for an optimizer state: a leaf under a parameter's key with that
    parameter's shape gets the parameter's sharding, every other leaf is replicated."""
    from jax.sharding import NamedSharding, PartitionSpec

    def pick(path, leaf):
        key = getattr(path[-1], "key", None) if path else None
        p = params.get(key) if isinstance(key, str) else None
        if isinstance(p, jax.Array) and p.shape == leaf.shape:
            return p.sharding
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(pick, shapes)


def replicate_unplaced(tree, mesh):
    """Replicate over `mesh` every leaf not already laid out on it."""
    from jax.sharding import NamedSharding, PartitionSpec

    n = mesh.devices.size

    def place(x):
        if isinstance(x, jax.Array) and len(x.sharding.device_set) == n:
            return x
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))

    return jax.tree.map(place, tree)
