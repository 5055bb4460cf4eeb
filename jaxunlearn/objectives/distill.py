"""Feature distillation (VKD): pull the student's projector output towards the teacher's."""

from __future__ import annotations

import jax
import jax.numpy as jnp


DISTILL_REDUCTIONS = ("mean", "squared_norm")


def feature_mse(student: jax.Array, teacher: jax.Array,
                rows: jax.Array | None = None, reduction: str = "mean") -> jax.Array:
    """`||f - t||^2` per real image, averaged over the real images, fp32.

    `student`, `teacher`: [N, tokens, D] (or [N, D]); `rows`: [N] weights of real images
    (0 for images that only pad a batch). `mean`: the mean over each image's feature elements
    (the sum divided by tokens * D), which keeps the scale independent of the hidden size, so
    VKD's beta = 0.3 means the same for a tiny and a 7B model; `squared_norm`: the squared
    norm as the VKD paper's Eq. 4 writes it (the sum over the elements; the same as `mean`
    with beta multiplied by tokens * D)."""
    if reduction not in DISTILL_REDUCTIONS:
        raise ValueError(f"unknown distill reduction {reduction!r}; use one of "
                         f"{DISTILL_REDUCTIONS}")
    s = student.astype(jnp.float32)
    t = jax.lax.stop_gradient(teacher.astype(jnp.float32))
    per = jnp.square(s - t).reshape(s.shape[0], -1)
    sq = jnp.mean(per, axis=-1) if reduction == "mean" else jnp.sum(per, axis=-1)  # [N]
    if rows is None:
        return jnp.mean(sq)
    w = rows.astype(jnp.float32)
    return jnp.sum(sq * w) / jnp.maximum(jnp.sum(w), 1.0)
