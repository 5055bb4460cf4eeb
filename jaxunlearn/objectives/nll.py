"""Answer-token log-likelihoods: the building block of every loss.

`loss_mask[b, t] = 1` marks token t as an answer token (predicted from the logits at t-1).
All reductions are in fp32 whatever the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, input_ids: jax.Array) -> jax.Array:
    """log p(token t | tokens < t) for t = 1..T-1: [B, T-1] (fp32, stable log-softmax)."""
    lp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(lp, input_ids[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]


def answer_weights(batch: dict) -> jax.Array:
    """[B, T-1] weights aligned with `token_logprobs`."""
    return batch["loss_mask"][:, 1:].astype(jnp.float32)


def sequence_logprob(logits: jax.Array, batch: dict) -> jax.Array:
    """Sum of answer-token log-probabilities per sequence, [B]."""
    return jnp.sum(token_logprobs(logits, batch["input_ids"]) * answer_weights(batch), axis=-1)


def answer_nll(logits: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(mean NLL over all answer tokens of the batch, number of answer tokens)."""
    w = answer_weights(batch)
    n = jnp.sum(w)
    nll = -jnp.sum(token_logprobs(logits, batch["input_ids"]) * w) / jnp.maximum(n, 1.0)
    return nll, n


def token_accuracy(logits: jax.Array, batch: dict) -> jax.Array:
    """Share of answer tokens whose argmax prediction is right."""
    w = answer_weights(batch)
    hit = (jnp.argmax(logits[:, :-1], -1) == batch["input_ids"][:, 1:]).astype(jnp.float32)
    return jnp.sum(hit * w) / jnp.maximum(jnp.sum(w), 1.0)
