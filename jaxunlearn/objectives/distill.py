"""Feature distillation (VKD): pull the student's projector output towards the teacher's."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def feature_mse(student: jax.Array, teacher: jax.Array,
                rows: jax.Array | None = None) -> jax.Array:
    """`||f - t||^2` as a mean over feature elements of the real images, fp32.

    `student`, `teacher`: [N, tokens, D] (or [N, D]); `rows`: [N] weights of real images
    (0 for images that only pad a batch). The mean (not the sum) keeps the scale independent
    of the hidden size, so VKD's beta = 0.3 means the same for a tiny and a 7B model."""
    s = student.astype(jnp.float32)
    t = jax.lax.stop_gradient(teacher.astype(jnp.float32))
    sq = jnp.mean(jnp.square(s - t).reshape(s.shape[0], -1), axis=-1)  # [N]
    if rows is None:
        return jnp.mean(sq)
    w = rows.astype(jnp.float32)
    return jnp.sum(sq * w) / jnp.maximum(jnp.sum(w), 1.0)
