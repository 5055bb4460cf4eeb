"""The train state: trainable parameters, optimizer state, step counter and RNG key."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct


@struct.dataclass
class TrainState:
    step: jax.Array
    params: dict[str, jax.Array]  # trainable leaves only; frozen ones travel separately
    opt_state: Any
    rng: jax.Array


class ScheduleState(NamedTuple):
    """State of `scale_by_runtime_schedule`: the step count and the schedule's numbers
    (runtime values, so one compiled step serves every learning rate and schedule length)."""

    count: jax.Array
    lr: jax.Array            # peak learning rate (float32)
    warmup: jax.Array        # linear warmup steps (int32)
    decay_steps: jax.Array   # steps of the decay after warmup (int32)


class DecayState(NamedTuple):
    """State of `add_runtime_decay`: the weight decay as a runtime value."""

    weight_decay: jax.Array


def _decay_value(kind: str, count, lr, decay_steps, end_lr_ratio: float):
    """The decay schedules of optax (`constant_schedule`, `linear_schedule`,
    `cosine_decay_schedule`) with their numbers as arrays, written as XLA compiles optax's
    with constant lengths (a division by a constant becomes a product with its reciprocal,
    constant factors are folded first), so a run's updates are bit-identical to the optax
    schedules'."""
    if kind == "constant":
        return lr
    if kind == "linear":  # optax.polynomial_schedule(lr, lr * r, decay_steps, power=1)
        end = lr * end_lr_ratio
        count = jnp.clip(count - 0, 0, decay_steps)
        frac = 1 - count * (1 / decay_steps.astype(jnp.float32))  # count / decay_steps
        return (lr - end) * (frac**1) + end
    if kind == "cosine":  # optax.cosine_decay_schedule(lr, decay_steps, alpha=r)
        decay_steps = decay_steps.astype(jnp.float32)
        count = jnp.minimum(count, decay_steps)
        # jnp.pi * count / decay_steps
        cosine_decay = 0.5 * (1 + jnp.cos(count * (jnp.pi * (1 / decay_steps))))
        decayed = (1 - end_lr_ratio) * cosine_decay**1.0 + end_lr_ratio
        return lr * decayed
    raise ValueError(f"unknown schedule {kind!r}; use constant, linear or cosine")


def scale_by_runtime_schedule(lr: float, *, schedule: str = "cosine", warmup_steps: int = 0,
                              total_steps: int = 1000,
                              end_lr_ratio: float = 0.0) -> optax.GradientTransformation:
    """`optax.scale_by_learning_rate` of a linear warmup + `schedule` decay whose peak rate and
    lengths live in the optimizer state (set by `init`), not in the compiled program.

    Static (program structure): the schedule kind, whether there is a warmup, `end_lr_ratio`.
    Runtime: `lr`, `warmup_steps`, `total_steps`."""
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; use constant, linear or cosine")
    warmup_steps = max(int(warmup_steps), 0)
    decay_steps = max(int(total_steps) - warmup_steps, 1)
    has_warmup = warmup_steps > 0

    values = {"lr": np.float32(lr), "warmup": np.int32(warmup_steps),
              "decay_steps": np.int32(decay_steps)}

    def init(params):
        del params  # placeholders: `with_runtime_values` puts the numbers in
        return ScheduleState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32),
                             jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32))

    def rate(state: ScheduleState):
        count = state.count
        if not has_warmup:
            return _decay_value(schedule, count, state.lr, state.decay_steps, end_lr_ratio)
        # optax.join_schedules([linear_schedule(0, lr, warmup), decay], [warmup])
        warm_count = jnp.clip(count - 0, 0, state.warmup)
        frac = 1 - warm_count * (1 / state.warmup.astype(jnp.float32))  # count / warmup
        warm = (0.0 - state.lr) * (frac**1) + state.lr
        decay = _decay_value(schedule, count - state.warmup, state.lr, state.decay_steps,
                             end_lr_ratio)
        return jnp.where(count < state.warmup, warm, decay)

    def update(updates, state: ScheduleState, params=None):
        del params
        step_size = -1 * rate(state)
        updates = jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
        return updates, state._replace(count=optax.safe_increment(state.count))

    return RuntimeTransformation(init, update, values)


def add_runtime_decay(weight_decay: float) -> optax.GradientTransformation:
    """`optax.add_decayed_weights` with the rate in the optimizer state (a zero rate is the
    identity, as in optax, so it is part of the program's structure)."""
    if weight_decay == 0.0:
        return optax.identity()

    def init(params):
        del params  # a placeholder: `with_runtime_values` puts the number in
        return DecayState(jnp.zeros([], jnp.float32))

    def update(updates, state: DecayState, params=None):
        s = state.weight_decay
        return jax.tree.map(lambda g, p: None if g is None else g + s * p, updates, params,
                            is_leaf=lambda x: x is None), state

    return RuntimeTransformation(init, update, {"weight_decay": np.float32(weight_decay)})


def make_optimizer(lr: float = 1e-4, *, schedule: str = "cosine", warmup_steps: int = 0,
                   total_steps: int = 1000, weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, end_lr_ratio: float = 0.0,
                   optimizer: str = "adamw") -> optax.GradientTransformation:
    """AdamW (or SGD) with a constant / linear / cosine schedule after linear warmup.

    The learning rate, the schedule lengths and the weight decay are runtime values in the
    optimizer state, so runs that differ only in them share one compiled train step. The
    updates are bit-identical to `optax.adamw` / `optax.sgd` with the optax schedules (checked
    on 2664 (lr, schedule, warmup, length, step) settings on CPU), except a last-bit
    difference of the rate at some steps of a linear schedule's warmup (XLA fuses optax's
    constant expression there into a multiply-add)."""
    lr_tx = scale_by_runtime_schedule(lr, schedule=schedule, warmup_steps=warmup_steps,
                                      total_steps=total_steps, end_lr_ratio=end_lr_ratio)
    if optimizer == "adamw":
        decay = add_runtime_decay(weight_decay)
        tx = optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps), decay, lr_tx)
        values = [getattr(decay, "values", None), lr_tx.values]
    elif optimizer == "sgd":
        tx = optax.chain(optax.identity(), lr_tx)
        values = [lr_tx.values]
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use adamw or sgd")
    return RuntimeTransformation(tx.init, tx.update, [v for v in values if v])


class RuntimeTransformation(optax.GradientTransformation):
    """An optax transformation whose `init` leaves placeholders for runtime numbers
    (`values`: the learning rate, schedule lengths, weight decay); `with_runtime_values`
    fills them, so `init` and the train step compile to one program for every value."""

    values: Any

    def __new__(cls, init, update, values):
        self = super().__new__(cls, init, update)
        object.__setattr__(self, "values", values)
        return self


def with_runtime_values(opt_state: Any, optimizer: optax.GradientTransformation) -> Any:
    """`opt_state` with the optimizer's runtime numbers in its `ScheduleState` /
    `DecayState` entries (each placed like the placeholder it replaces)."""
    values = list(getattr(optimizer, "values", None) or [])
    if not values:
        return opt_state
    runtime = (ScheduleState, DecayState)
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, runtime))
             if isinstance(x, runtime)]
    if len(found) != len(values):
        raise ValueError(f"optimizer state has {len(found)} runtime entries, expected "
                         f"{len(values)}")
    fill = {id(entry): vals for entry, vals in zip(found, values)}

    def put(x):
        if not isinstance(x, runtime):
            return x
        vals = fill[id(x)]
        return x._replace(**{k: jax.device_put(v, getattr(x, k).sharding)
                             for k, v in vals.items()})
    return jax.tree.map(put, opt_state, is_leaf=lambda x: isinstance(x, runtime))


def init_state(params: dict, optimizer: optax.GradientTransformation, seed: int = 0,
               copy: bool = True, mesh=None) -> TrainState:
    """A fresh state; optimizer state is created with the same placement as `params`.

    Train steps donate the state's buffers; with `copy=True` (default) the state owns copies,
    so the caller's `params` (e.g. `model.params`) stay valid. Pass `copy=False` to hand the
    buffers over and save memory on large models. With a `mesh`, scalars (step, RNG, optimizer
    counters) are replicated over it so the whole state lives on the mesh."""
    if copy:
        params = jax.tree.map(jnp.copy, params)
    from jaxunlearn.train.programs import CachedProgram

    if mesh is None:
        init = jax.jit(optimizer.init)
    else:  # moments laid out like their parameters (XLA would replicate fresh zeros)
        shapes = jax.eval_shape(optimizer.init, params)
        init = jax.jit(optimizer.init, out_shardings=_like_params(shapes, params, mesh))
    opt_state = CachedProgram(init, "optimizer_init")(params)
    opt_state = with_runtime_values(opt_state, optimizer)
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
