"""Unlearning objectives against independent NumPy computations (padding, several rows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.methods.common import gate
from jaxunlearn.objectives import gradient as G
from jaxunlearn.objectives.distill import feature_mse
from jaxunlearn.objectives.nll import sequence_logprob
from jaxunlearn.objectives.refusals import REFUSALS, sample_refusals, with_refusals
from jaxunlearn.stats.fisher import Fisher, mask_fraction, saliency_mask

B, T, V = 4, 9, 13
RTOL = 1e-5


def _batch(seed: int) -> dict:
    """Right-padded rows with different answer lengths; the last row only pads the batch."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    lengths = [9, 7, 5, 0]
    prompt = [3, 4, 2, 0]
    attn = np.zeros((B, T), np.int32)
    loss = np.zeros((B, T), np.float32)
    for i, (n, p) in enumerate(zip(lengths, prompt)):
        attn[i, :n] = 1
        loss[i, p:n] = 1.0
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss,
            "example_mask": np.array([1, 1, 1, 0], np.int32)}


def _logits(seed: int, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(B, T, V)) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- numpy refs

def np_logprobs(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    x = logits[:, :-1].astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return np.take_along_axis(lp, ids[:, 1:, None], -1)[..., 0]


def np_nll(logits, b) -> float:
    w = b["loss_mask"][:, 1:]
    return float(-(np_logprobs(logits, b["input_ids"]) * w).sum() / w.sum())


def np_seq_logp(logits, b) -> np.ndarray:
    return (np_logprobs(logits, b["input_ids"]) * b["loss_mask"][:, 1:]).sum(-1)


def np_log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_kl(logits, ref, b, reduction):
    lp, lq = np_log_softmax(logits[:, :-1]), np_log_softmax(ref[:, :-1])
    kl = (np.exp(lq) * (lq - lp)).sum(-1)
    w = b["loss_mask"][:, 1:]
    if reduction == "token_mean":
        return float((kl * w).sum() / w.sum())
    rows = b["example_mask"].astype(np.float64)
    return float(((kl * w).sum(-1) * rows).sum() / rows.sum())


def np_npo(lp, ref_lp, b, beta):
    d = lp - ref_lp
    ls = -np.log1p(np.exp(beta * d))  # log sigmoid(-beta d)
    rows = b["example_mask"].astype(np.float64)
    return float(-(2 / beta) * (ls * rows).sum() / rows.sum())


# ----------------------------------------------------------------------------- tests

def ga_sequence(logits, batch):
    """GA in sequence form: mean over real rows of `logp(y|x)`, the beta -> 0 limit of NPO."""
    w = batch["example_mask"].astype(jnp.float32)
    return jnp.sum(sequence_logprob(logits, batch) * w) / jnp.sum(w)


def test_nll_and_ga_match_numpy():
    b, x = _batch(0), _logits(1)
    np.testing.assert_allclose(G.nll(x, b), np_nll(x, b), rtol=RTOL)
    np.testing.assert_allclose(G.ga(x, b), -np_nll(x, b), rtol=RTOL)
    rows = b["example_mask"].astype(np.float64)
    np.testing.assert_allclose(ga_sequence(x, b),
                               (np_seq_logp(x, b) * rows).sum() / rows.sum(), rtol=RTOL)


def test_grad_diff_and_idk_match_numpy():
    bf, br, xf, xr = _batch(0), _batch(1), _logits(2), _logits(3)
    want = -0.7 * np_nll(xf, bf) + 1.3 * np_nll(xr, br)
    np.testing.assert_allclose(G.grad_diff(xf, bf, xr, br, gamma=0.7, alpha=1.3), want,
                               rtol=RTOL)
    np.testing.assert_allclose(G.idk(xf, bf, xr, br), np_nll(xf, bf) + np_nll(xr, br),
                               rtol=RTOL)
    np.testing.assert_allclose(G.idk(xf, bf, xr, br, 0.4), np_nll(xf, bf) + 0.4 * np_nll(xr, br),
                               rtol=RTOL)


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_sum"])
def test_kl_and_ga_klr_match_numpy(reduction):
    b, x, ref = _batch(0), _logits(4), _logits(5)
    np.testing.assert_allclose(G.kl_ref_theta(x, ref, b, reduction), np_kl(x, ref, b, reduction),
                               rtol=RTOL)
    bf, xf = _batch(6), _logits(7)
    want = -np_nll(xf, bf) + 0.5 * np_kl(x, ref, b, reduction)
    np.testing.assert_allclose(G.ga_kl(xf, bf, x, ref, b, 0.5, reduction), want, rtol=RTOL)


def test_kl_is_zero_when_model_equals_reference():
    b, x = _batch(0), _logits(8)
    for red in G.KL_REDUCTIONS:
        assert abs(float(G.kl_ref_theta(x, x, b, red))) < 1e-6
    with pytest.raises(ValueError, match="kl_reduction"):
        G.kl_ref_theta(x, x, b, "mean")


@pytest.mark.parametrize("beta", [0.1, 0.9])
def test_npo_matches_numpy(beta):
    b, x, ref = _batch(0), _logits(9), _logits(10)
    want = np_npo(np_seq_logp(x, b), np_seq_logp(ref, b), b, beta)
    np.testing.assert_allclose(G.npo_from_logits(x, ref, b, beta), want, rtol=RTOL)
    br, xr = _batch(1), _logits(15)
    np.testing.assert_allclose(G.npo_retain(x, ref, b, xr, br, beta, 0.6),
                               want + 0.6 * np_nll(xr, br), rtol=RTOL)


def test_npo_gradient_approaches_ga_as_beta_vanishes():
    b, ref = _batch(0), jnp.asarray(_logits(11))
    x = jnp.asarray(_logits(12))
    g_ga = jax.grad(lambda z: ga_sequence(z, b))(x)
    errs = []
    for beta in (1.0, 1e-2, 1e-4):
        g = jax.grad(lambda z, beta=beta: G.npo_from_logits(z, ref, b, beta))(x)
        errs.append(float(jnp.max(jnp.abs(g - g_ga)) / jnp.max(jnp.abs(g_ga))))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3
    # same direction as token-mean GA (they differ only by per-sequence weights)
    g_tok = jax.grad(lambda z: G.ga(z, b))(x)
    assert float(jnp.sum(g_tok * g_ga)) > 0


def test_objectives_stable_in_bf16():
    b = _batch(0)
    x = jnp.asarray(_logits(13, scale=300.0), jnp.bfloat16)  # extreme logits in bf16
    ref = jnp.asarray(_logits(14, scale=300.0), jnp.bfloat16)
    vals = [G.nll(x, b), G.kl_ref_theta(x, ref, b), G.npo_from_logits(x, ref, b, 0.1)]
    for v in vals:
        assert v.dtype == jnp.float32 and np.isfinite(float(v))
    np.testing.assert_allclose(G.nll(x, b), np_nll(np.asarray(x, np.float32), b), rtol=RTOL)


def test_feature_mse_matches_numpy_and_ignores_padding_images():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    rows = np.array([1, 1, 0])
    want = ((s - t) ** 2).reshape(3, -1).mean(-1)[:2].mean()
    np.testing.assert_allclose(feature_mse(s, t, rows), want, rtol=RTOL)
    np.testing.assert_allclose(feature_mse(s, t), ((s - t) ** 2).mean(), rtol=RTOL)


def test_refusal_pool_and_sampling():
    assert len(set(REFUSALS)) >= 100
    a, b = sample_refusals(50, seed=3), sample_refusals(50, seed=3)
    assert a == b and len(set(a)) > 10 and sample_refusals(50, seed=4) != a
    recs = [{"prompt": f"q{i}", "answer": "secret", "image": None} for i in range(5)]
    out = with_refusals(recs, seed=1)
    assert all(r["answer"] in REFUSALS for r in out) and recs[0]["answer"] == "secret"
    assert [r["prompt"] for r in out] == [r["prompt"] for r in recs]


def test_gate_masks_gradient_not_value():
    p = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    m = {"w": np.array([[1, 0, 1], [0, 0, 1]], bool)}
    f = lambda q: jnp.sum(gate(q, m)["w"] ** 2) + jnp.sum(gate(q, m)["b"])
    assert float(f(p)) == float(jnp.sum(p["w"] ** 2) + 3)
    g = jax.grad(f)(p)
    np.testing.assert_array_equal(g["w"], np.where(m["w"], 2 * np.asarray(p["w"]), 0.0))
    np.testing.assert_array_equal(g["b"], np.ones(3))


def test_fisher_union_and_saliency_mask():
    fa = Fisher({"w": jnp.array([2.0, 0.0, 4.0])}, 2)
    fb = Fisher({"w": jnp.array([2.0, 6.0, 0.0])}, 2)
    np.testing.assert_allclose((fa + fb).mean()["w"], [1.0, 1.5, 1.0])
    m = saliency_mask({"w": np.array([1.0, 0.0, 2.0, 0.0])}, {"w": np.array([1.0, 1.0, 0.0, 0.0])})
    np.testing.assert_array_equal(m["w"], [True, False, True, False])
    assert mask_fraction(m) == 0.5
