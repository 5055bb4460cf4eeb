"""The gradient objectives in both label scopes against NumPy re-implementations of the
published formulas (read from the code, not copied):

- MLLMU-Bench (franciscoliu/MLLMU-Bench): labels from
  `data_process/data_preprocess.py::train_collate_fn_llava` (labels = input_ids with the pad
  id -> -100, prompt included), read by the model's own loss (transformers 4.45.1,
  `LlavaForConditionalGeneration.forward`: shift by one, keep positions whose shifted
  attention mask is set, mean cross-entropy over labels != -100); `baselines/GA.py::main`
  (`loss = -outputs.loss`), `baselines/GA_Difference.py::main` (forget pass `-outputs.loss`,
  retain pass `outputs.loss`), `baselines/KL_Min.py::main` (forget pass `-outputs.loss`,
  retain pass `outputs.loss + F.kl_div(log_softmax(current), softmax(vanilla),
  reduction='batchmean')` on the full logits) and `baselines/NPO.py::main`
  (`-F.logsigmoid(beta * (current_loss - oracle_loss)).mean() * 2 / beta`).
- The answer scope: the same formulas with labels = -100 outside the answer (the
  open-unlearning convention of labelling only the answer).

The torch batches have no rows that only pad a batch, so the NumPy side drops them before
computing; the batch has right padding, prompts of different lengths and several answer
lengths.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxunlearn.objectives import gradient as G

B, T, V = 5, 11, 17
PAD = 0
RTOL = 1e-5
SCOPES = ("answer", "all_tokens")


def _batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, (B, T)).astype(np.int32)
    lengths = [11, 8, 6, 9, 0]    # real tokens per row (right padding)
    prompts = [4, 2, 3, 6, 0]     # prompt lengths (answers: 7, 6, 3, 3 tokens)
    attn = np.zeros((B, T), np.int32)
    loss = np.zeros((B, T), np.float32)
    for i, (n, p) in enumerate(zip(lengths, prompts)):
        attn[i, :n] = 1
        loss[i, p:n] = 1.0
        ids[i, n:] = PAD
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss,
            "example_mask": np.array([1, 1, 1, 1, 0], np.int32)}


def _logits(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(B, T, V)) * 3.0).astype(np.float32)


# ----------------------------------------------------------------------------- numpy refs

def _real(b: dict, *arrays):
    keep = b["example_mask"] > 0
    return [np.asarray(a)[keep] for a in arrays]


def np_labels(b: dict, scope: str) -> np.ndarray:
    """train_collate_fn_llava's labels (all_tokens) or answer-only labels, -100 elsewhere."""
    ids, loss = _real(b, b["input_ids"], b["loss_mask"])
    if scope == "all_tokens":
        return np.where(ids == PAD, -100, ids)
    return np.where(loss > 0, ids, -100)


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_hf_loss(logits: np.ndarray, b: dict, scope: str) -> float:
    """transformers 4.45.1 LlavaForConditionalGeneration's loss: mean CE over shifted labels
    != -100 at positions whose shifted attention mask is set."""
    (x, attn), labels = _real(b, logits, b["attention_mask"]), np_labels(b, scope)
    keep = attn[:, 1:] != 0
    lp = np_log_softmax(x[:, :-1])[keep]
    y = labels[:, 1:][keep]
    valid = y != -100
    return float(-np.mean(lp[valid, y[valid]]))


def np_batchmean_kl(logits: np.ndarray, ref_logits: np.ndarray, b: dict) -> float:
    """F.kl_div(log_softmax(current), softmax(vanilla), reduction='batchmean')."""
    x, r = _real(b, logits, ref_logits)
    lp, lq = np_log_softmax(x), np_log_softmax(r)
    return float(np.sum(np.exp(lq) * (lq - lp)) / x.shape[0])


def np_logsigmoid(z: float) -> float:
    return -float(np.log1p(np.exp(-z)))


# ----------------------------------------------------------------------------- tests

def test_batch_has_what_the_acceptance_asks():
    b = _batch(0)
    real = b["example_mask"] > 0
    assert (b["attention_mask"][real] == 0).any()                       # padding
    prompts = [int(np.argmax(m > 0)) for m in b["loss_mask"][real]]
    assert len(set(prompts)) > 2                                        # prompt lengths
    assert len(set(b["loss_mask"][real].sum(1).tolist())) > 2           # answer lengths


@pytest.mark.parametrize("scope", SCOPES)
def test_ga_and_grad_diff_passes_match_mllmu_bench(scope):
    """GA.py: -outputs.loss; GA_Difference.py: -loss on D_f, +loss on D_r."""
    bf, br = _batch(1), _batch(2)
    xf, xr = _logits(3), _logits(4)
    np.testing.assert_allclose(G.nll(xf, bf, scope), np_hf_loss(xf, bf, scope), rtol=RTOL)
    np.testing.assert_allclose(G.ga(xf, bf, scope), -np_hf_loss(xf, bf, scope), rtol=RTOL)
    np.testing.assert_allclose(G.nll(xr, br, scope), np_hf_loss(xr, br, scope), rtol=RTOL)
    want = -0.7 * np_hf_loss(xf, bf, scope) + 1.3 * np_hf_loss(xr, br, scope)
    np.testing.assert_allclose(G.grad_diff(xf, bf, xr, br, 0.7, 1.3, scope), want, rtol=RTOL)


def test_scopes_differ():
    b, x = _batch(1), _logits(3)
    assert abs(float(G.nll(x, b, "answer")) - float(G.nll(x, b, "all_tokens"))) > 1e-3


@pytest.mark.parametrize("scope", SCOPES)
def test_kl_min_retain_step_matches_mllmu_bench(scope):
    """KL_Min.py: loss_retain = outputs_current.loss + kl_div(batchmean, full logits)."""
    b, x, ref = _batch(5), _logits(6), _logits(7)
    kl = np_batchmean_kl(x, ref, b)
    np.testing.assert_allclose(G.kl_ref_theta(x, ref, b, "batchmean", scope), kl, rtol=RTOL)
    np.testing.assert_allclose(G.nll_kl(x, ref, b, 1.0, "batchmean", scope),
                               np_hf_loss(x, b, scope) + kl, rtol=RTOL)
    # the batchmean KL reads padding, prompt and last positions: it differs from sequence_sum
    assert abs(float(G.kl_ref_theta(x, ref, b, "sequence_sum", scope)) - kl) > 1e-2


def test_batchmean_kl_reads_padding_positions():
    b, x, ref = _batch(5), _logits(6), _logits(7)
    x2 = x.copy()
    x2[1, -1, 3] += 5.0  # a padding position of a real row
    assert float(G.kl_ref_theta(x2, ref, b, "batchmean")) != pytest.approx(
        float(G.kl_ref_theta(x, ref, b, "batchmean")))
    x3 = x.copy()
    x3[4, :, 3] += 5.0  # a row that only pads the batch is not read
    np.testing.assert_allclose(G.kl_ref_theta(x3, ref, b, "batchmean"),
                               G.kl_ref_theta(x, ref, b, "batchmean"), rtol=RTOL)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("beta", [0.1, 0.4])
def test_npo_batch_mean_matches_mllmu_bench(scope, beta):
    """NPO.py: -logsigmoid(beta * (current_loss - oracle_loss)) * 2 / beta."""
    b, x, ref = _batch(8), _logits(9), _logits(10)
    d = np_hf_loss(x, b, scope) - np_hf_loss(ref, b, scope)
    want = -np_logsigmoid(beta * d) * 2.0 / beta
    got = G.npo_from_logits(x, ref, b, beta, scope, "batch_mean")
    np.testing.assert_allclose(got, want, rtol=RTOL)
    br, xr = _batch(11), _logits(12)
    np.testing.assert_allclose(G.npo_retain(x, ref, b, xr, br, beta, 0.6, scope, "batch_mean"),
                               want + 0.6 * np_hf_loss(xr, br, scope), rtol=RTOL)


@pytest.mark.parametrize("scope", SCOPES)
def test_npo_sequence_form_in_both_scopes(scope):
    """The NPO paper's form: per-sequence log-probability sums over the labelled tokens."""
    b, x, ref = _batch(8), _logits(9), _logits(10)
    (xs, rs), labels = _real(b, x, ref), np_labels(b, scope)

    def seq(lg):
        lp = np_log_softmax(lg[:, :-1])
        y = labels[:, 1:]
        tok = np.take_along_axis(lp, np.where(y < 0, 0, y)[..., None], -1)[..., 0]
        return np.sum(np.where(y < 0, 0.0, tok), -1)

    d = seq(xs) - seq(rs)
    want = -(2 / 0.4) * np.mean([np_logsigmoid(-0.4 * v) for v in d])
    np.testing.assert_allclose(G.npo_from_logits(x, ref, b, 0.4, scope), want, rtol=RTOL)


@pytest.mark.parametrize("scope", SCOPES)
def test_idk_in_both_scopes(scope):
    """IDK: NLL on the refusal-answered forget batch + alpha * NLL on the retain batch."""
    bf, br, xf, xr = _batch(13), _batch(14), _logits(15), _logits(16)
    want = np_hf_loss(xf, bf, scope) + 0.8 * np_hf_loss(xr, br, scope)
    np.testing.assert_allclose(G.idk(xf, bf, xr, br, 0.8, scope), want, rtol=RTOL)


def test_unknown_scope_and_form_are_errors():
    b, x = _batch(0), _logits(0)
    with pytest.raises(ValueError, match="label_scope"):
        G.nll(x, b, "prompt")
    with pytest.raises(ValueError, match="npo form"):
        G.npo_from_logits(x, x, b, 0.1, "answer", "token")
