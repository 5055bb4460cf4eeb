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


# ----------------------------------------------------------------------------- answer positions
# A training batch may carry `answer_index` [B, A] (int32): for each row, the logit positions
# p whose next token p + 1 is an answer token, in order, padded with -1. The loss then projects
# only those A hidden states onto the vocabulary instead of all T: the same loss and gradients
# (image tokens and prompts are never targets), with a fraction of the output-head work and of
# the [B, T, V] logits memory. The data pipeline builds it (`jaxunlearn.data.answers`), so A is a
# static bucket.


def gather_answer_states(hidden: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(hidden states [B, A, D] at `answer_index`, target ids [B, A], weights [B, A] fp32)."""
    idx = batch["answer_index"].astype(jnp.int32)
    valid = idx >= 0
    pos = jnp.where(valid, idx, 0)
    states = jnp.take_along_axis(hidden, pos[..., None], axis=1)
    targets = jnp.take_along_axis(batch["input_ids"], pos + 1, axis=1).astype(jnp.int32)
    weights = jnp.take_along_axis(batch["loss_mask"], pos + 1, axis=1).astype(jnp.float32)
    return states, targets, weights * valid


def gathered_nll(logits: jax.Array, targets: jax.Array,
                 weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mean NLL, token count, token accuracy) of gathered answer logits [B, A, V]."""
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    tok = jnp.take_along_axis(lp, targets[..., None], axis=-1)[..., 0]
    n = jnp.sum(weights)
    denom = jnp.maximum(n, 1.0)
    hit = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return -jnp.sum(tok * weights) / denom, n, jnp.sum(hit * weights) / denom
