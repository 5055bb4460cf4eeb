"""Gradient-based unlearning objectives: pure functions of logits and batches.

Every function returns a scalar to *minimise* (formulas: docs/methods.md) and reduces in fp32
whatever the compute dtype of the logits. Conventions follow `objectives.nll`: the label
weights `[:, 1:]` weight the log-probabilities of `logits[:, :-1]`; `example_mask` marks real
rows (rows that only pad a short final batch have `example_mask = 0` and all-zero masks).

Label scopes (`scope`): `answer` (default) labels the answer tokens (`loss_mask`), the clean
form that matches locuslab/open-unlearning; `all_tokens` labels every non-pad token after the
first, prompt and image placeholders included (`attention_mask`), as MLLMU-Bench's collators
do (`data_process/data_preprocess.py::train_collate_fn_llava`: labels = input_ids with pad ->
-100), read by HF's mean cross-entropy.

Loss weights (`gamma`, `alpha`, `lam`, `beta`) are Python numbers or fp32 scalars traced as
runtime inputs of the jitted step (`methods.common.hyper`); their ranges are checked on the
methods' options, never here.

Reference models (KL, NPO) enter as their logits or sequence log-probabilities; the methods
compute them with a frozen copy of the starting parameters inside the same jitted step
(`jax.lax.stop_gradient`), see `methods/common.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxunlearn.objectives.nll import answer_weights, token_logprobs

KL_REDUCTIONS = ("token_mean", "sequence_sum", "batchmean")
LABEL_SCOPES = ("answer", "all_tokens")
NPO_FORMS = ("sequence", "batch_mean")


def _rows(batch: dict) -> jax.Array:
    """[B] fp32 weights of real rows (all ones when the batch has no example_mask)."""
    if "example_mask" in batch:
        return batch["example_mask"].astype(jnp.float32)
    return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)


def label_weights(batch: dict, scope: str = "answer") -> jax.Array:
    """[B, T-1] fp32 weights of the labelled targets `input_ids[:, 1:]` under `scope`."""
    if scope == "answer":
        return answer_weights(batch)
    if scope == "all_tokens":  # a real target read from a real position (any padding side)
        m = batch["attention_mask"].astype(jnp.float32)
        return m[:, 1:] * m[:, :-1] * _rows(batch)[:, None]
    raise ValueError(f"unknown label_scope {scope!r}; use one of {LABEL_SCOPES}")


def sequence_logprob(logits: jax.Array, batch: dict, scope: str = "answer") -> jax.Array:
    """Sum of the labelled tokens' log-probabilities per sequence, [B]."""
    w = label_weights(batch, scope)
    return jnp.sum(token_logprobs(logits, batch["input_ids"]) * w, axis=-1)


def nll(logits: jax.Array, batch: dict, scope: str = "answer") -> jax.Array:
    """NLL(D): mean negative log-likelihood over all labelled tokens of the batch."""
    w = label_weights(batch, scope)
    lp = token_logprobs(logits, batch["input_ids"])
    return -jnp.sum(lp * w) / jnp.maximum(jnp.sum(w), 1.0)


def ga(logits: jax.Array, batch: dict, scope: str = "answer") -> jax.Array:
    """Gradient ascent: `-NLL(D_f)`."""
    return -nll(logits, batch, scope)


def grad_diff(forget_logits: jax.Array, forget_batch: dict, retain_logits: jax.Array,
              retain_batch: dict, gamma: float = 1.0, alpha: float = 1.0,
              scope: str = "answer") -> jax.Array:
    """Gradient difference: `-gamma * NLL(D_f) + alpha * NLL(D_r)`."""
    return (-gamma * nll(forget_logits, forget_batch, scope)
            + alpha * nll(retain_logits, retain_batch, scope))


def kl_ref_theta(logits: jax.Array, ref_logits: jax.Array, batch: dict,
                 reduction: str = "token_mean", scope: str = "answer") -> jax.Array:
    """KL(p_ref || p_theta) over the vocabulary, reduced over positions by `reduction`.

    `token_mean`: mean over the labelled tokens (`scope`) of the batch. `sequence_sum`: sum
    over each sequence's labelled tokens, then mean over real rows. `batchmean`: MLLMU-Bench's
    KL_Min (`baselines/KL_Min.py::main`, `F.kl_div(..., reduction='batchmean')` on the full
    logits): the sum over *every* position of the real rows (prompt, image, padding and the
    last position included; `scope` is not read), divided by the number of real rows."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"unknown kl_reduction {reduction!r}; use one of {KL_REDUCTIONS}")
    if reduction == "batchmean":
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        lq = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
        kl_pos = jnp.sum(jnp.exp(lq) * (lq - lp), axis=-1)  # [B, T]
        rows = _rows(batch)
        return jnp.sum(kl_pos * rows[:, None]) / jnp.maximum(jnp.sum(rows), 1.0)
    lp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    lq = jax.nn.log_softmax(ref_logits[:, :-1].astype(jnp.float32), axis=-1)
    kl_tok = jnp.sum(jnp.exp(lq) * (lq - lp), axis=-1)  # [B, T-1]
    w = label_weights(batch, scope)
    if reduction == "token_mean":
        return jnp.sum(kl_tok * w) / jnp.maximum(jnp.sum(w), 1.0)
    rows = _rows(batch)
    per_seq = jnp.sum(kl_tok * w, axis=-1)
    return jnp.sum(per_seq * rows) / jnp.maximum(jnp.sum(rows), 1.0)


def ga_kl(forget_logits: jax.Array, forget_batch: dict, retain_logits: jax.Array,
          ref_retain_logits: jax.Array, retain_batch: dict, lam: float = 1.0,
          reduction: str = "token_mean", scope: str = "answer") -> jax.Array:
    """`-NLL(D_f) + lam * KL(p_ref || p_theta)` on D_r (`kl_min`: lam = 1; `ga_klr`)."""
    return ga(forget_logits, forget_batch, scope) + lam * kl_ref_theta(
        retain_logits, ref_retain_logits, retain_batch, reduction, scope)


def nll_kl(retain_logits: jax.Array, ref_retain_logits: jax.Array, retain_batch: dict,
           lam: float = 1.0, reduction: str = "batchmean", scope: str = "all_tokens") -> jax.Array:
    """The retain step of MLLMU-Bench's KL_Min (`baselines/KL_Min.py::main`,
    `loss_retain = outputs_current.loss + kl_div`): `NLL(D_r) + lam * KL(p_ref || p_theta)`."""
    return nll(retain_logits, retain_batch, scope) + lam * kl_ref_theta(
        retain_logits, ref_retain_logits, retain_batch, reduction, scope)


def npo(logp: jax.Array, ref_logp: jax.Array, batch: dict, beta: float = 0.1) -> jax.Array:
    """NPO: `-(2/beta) * mean log sigmoid(-beta * (logp_theta - logp_ref))` over real rows.

    `logp`, `ref_logp`: [B] sums of answer-token log-probabilities; `beta` > 0 (checked on
    the method's options: here it may be a traced scalar)."""
    d = logp.astype(jnp.float32) - ref_logp.astype(jnp.float32)
    w = _rows(batch)
    terms = jax.nn.log_sigmoid(-beta * d)
    return -(2.0 / beta) * jnp.sum(terms * w) / jnp.maximum(jnp.sum(w), 1.0)


def npo_batch_mean(logits: jax.Array, ref_logits: jax.Array, batch: dict, beta: float = 0.1,
                   scope: str = "answer") -> jax.Array:
    """MLLMU-Bench's NPO (`baselines/NPO.py::main`): one batch-mean token NLL per model inside
    the log-sigmoid, `-(2/beta) * log sigmoid(beta * (NLL_theta(B) - NLL_ref(B)))`."""
    d = nll(logits, batch, scope) - nll(ref_logits, batch, scope)
    return -(2.0 / beta) * jax.nn.log_sigmoid(beta * d)


def npo_from_logits(logits: jax.Array, ref_logits: jax.Array, batch: dict,
                    beta: float = 0.1, scope: str = "answer",
                    form: str = "sequence") -> jax.Array:
    """NPO from the policy's and the reference's logits on the same forget batch: `sequence`
    (per-sequence log-probability sums, the NPO paper and open-unlearning) or `batch_mean`
    (`npo_batch_mean`, MLLMU-Bench)."""
    if form == "batch_mean":
        return npo_batch_mean(logits, ref_logits, batch, beta, scope)
    if form != "sequence":
        raise ValueError(f"unknown npo form {form!r}; use one of {NPO_FORMS}")
    return npo(sequence_logprob(logits, batch, scope), sequence_logprob(ref_logits, batch, scope),
               batch, beta)


def npo_retain(forget_logits: jax.Array, ref_forget_logits: jax.Array, forget_batch: dict,
               retain_logits: jax.Array, retain_batch: dict, beta: float = 0.1,
               alpha: float = 1.0, scope: str = "answer", form: str = "sequence") -> jax.Array:
    """NPO on D_f plus `alpha * NLL(D_r)` (`npo` with `retain_weight` > 0)."""
    return (npo_from_logits(forget_logits, ref_forget_logits, forget_batch, beta, scope, form)
            + alpha * nll(retain_logits, retain_batch, scope))


def idk(forget_idk_logits: jax.Array, forget_idk_batch: dict, retain_logits: jax.Array,
        retain_batch: dict, alpha: float = 1.0, scope: str = "answer") -> jax.Array:
    """`NLL(D_f^idk) + alpha * NLL(D_r)`: learn refusals on forget prompts, keep the retain
    set."""
    return (nll(forget_idk_logits, forget_idk_batch, scope)
            + alpha * nll(retain_logits, retain_batch, scope))
