"""Gradient-based unlearning objectives: pure functions of logits and batches.

Every function returns a scalar to *minimise* (see METHODS.md) and reduces in fp32 whatever
the compute dtype of the logits. Conventions follow `objectives.nll`: `loss_mask[:, 1:]`
weights the log-probabilities of `logits[:, :-1]`; `example_mask` marks real rows (rows that
only pad a short final batch have `example_mask = 0` and an all-zero loss mask).

Reference models (KL, NPO) enter as their logits or sequence log-probabilities; the methods
compute them with a frozen copy of the starting parameters inside the same jitted step
(`jax.lax.stop_gradient`), see `methods/common.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxunlearn.objectives.nll import answer_nll, answer_weights, sequence_logprob

KL_REDUCTIONS = ("token_mean", "sequence_sum")


def _rows(batch: dict) -> jax.Array:
    """[B] fp32 weights of real rows (all ones when the batch has no example_mask)."""
    if "example_mask" in batch:
        return batch["example_mask"].astype(jnp.float32)
    return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)


def nll(logits: jax.Array, batch: dict) -> jax.Array:
    """NLL(D): mean answer-token negative log-likelihood."""
    return answer_nll(logits, batch)[0]


def ga(logits: jax.Array, batch: dict) -> jax.Array:
    """Gradient ascent: `-NLL(D_f)`."""
    return -nll(logits, batch)


def grad_diff(forget_logits: jax.Array, forget_batch: dict, retain_logits: jax.Array,
              retain_batch: dict, gamma: float = 1.0, alpha: float = 1.0) -> jax.Array:
    """Gradient difference: `-gamma * NLL(D_f) + alpha * NLL(D_r)`."""
    return -gamma * nll(forget_logits, forget_batch) + alpha * nll(retain_logits, retain_batch)


def kl_ref_theta(logits: jax.Array, ref_logits: jax.Array, batch: dict,
                 reduction: str = "token_mean") -> jax.Array:
    """KL(p_ref || p_theta) over the vocabulary at every answer position.

    `token_mean`: mean over all answer tokens of the batch. `sequence_sum`: sum over each
    sequence's answer tokens, then mean over real rows (MLLMU-Bench's scale)."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"unknown kl_reduction {reduction!r}; use one of {KL_REDUCTIONS}")
    lp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    lq = jax.nn.log_softmax(ref_logits[:, :-1].astype(jnp.float32), axis=-1)
    kl_tok = jnp.sum(jnp.exp(lq) * (lq - lp), axis=-1)  # [B, T-1]
    w = answer_weights(batch)
    if reduction == "token_mean":
        return jnp.sum(kl_tok * w) / jnp.maximum(jnp.sum(w), 1.0)
    rows = _rows(batch)
    per_seq = jnp.sum(kl_tok * w, axis=-1)
    return jnp.sum(per_seq * rows) / jnp.maximum(jnp.sum(rows), 1.0)


def ga_kl(forget_logits: jax.Array, forget_batch: dict, retain_logits: jax.Array,
          ref_retain_logits: jax.Array, retain_batch: dict, lam: float = 1.0,
          reduction: str = "token_mean") -> jax.Array:
    """`-NLL(D_f) + lam * KL(p_ref || p_theta)` on D_r (`kl_min`: lam = 1; `ga_klr`)."""
    return ga(forget_logits, forget_batch) + lam * kl_ref_theta(
        retain_logits, ref_retain_logits, retain_batch, reduction)


def npo(logp: jax.Array, ref_logp: jax.Array, batch: dict, beta: float = 0.1) -> jax.Array:
    """NPO: `-(2/beta) * mean log sigmoid(-beta * (logp_theta - logp_ref))` over real rows.

    `logp`, `ref_logp`: [B] sums of answer-token log-probabilities."""
    if beta <= 0:
        raise ValueError(f"npo beta must be > 0, got {beta}")
    d = logp.astype(jnp.float32) - ref_logp.astype(jnp.float32)
    w = _rows(batch)
    terms = jax.nn.log_sigmoid(-beta * d)
    return -(2.0 / beta) * jnp.sum(terms * w) / jnp.maximum(jnp.sum(w), 1.0)


def npo_from_logits(logits: jax.Array, ref_logits: jax.Array, batch: dict,
                    beta: float = 0.1) -> jax.Array:
    """NPO from the policy's and the reference's logits on the same forget batch."""
    return npo(sequence_logprob(logits, batch), sequence_logprob(ref_logits, batch), batch, beta)


def npo_retain(forget_logits: jax.Array, ref_forget_logits: jax.Array, forget_batch: dict,
               retain_logits: jax.Array, retain_batch: dict, beta: float = 0.1,
               alpha: float = 1.0) -> jax.Array:
    """NPO on D_f plus `alpha * NLL(D_r)` (`npo` with `retain_weight` > 0)."""
    return (npo_from_logits(forget_logits, ref_forget_logits, forget_batch, beta)
            + alpha * nll(retain_logits, retain_batch))


def idk(forget_idk_logits: jax.Array, forget_idk_batch: dict, retain_logits: jax.Array,
        retain_batch: dict, alpha: float = 1.0) -> jax.Array:
    """`NLL(D_f^idk) + alpha * NLL(D_r)`: learn refusals on forget prompts, keep the retain
    set."""
    return nll(forget_idk_logits, forget_idk_batch) + alpha * nll(retain_logits, retain_batch)
