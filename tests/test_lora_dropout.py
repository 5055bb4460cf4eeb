"""LoRA dropout and peft's gaussian init against peft itself (huggingface/peft,
`src/peft/tuners/lora/layer.py`: `Linear.forward` computes `result = base_layer(x)` then
`result + lora_B(lora_A(dropout(x))) * scaling`, the dropout an `nn.Dropout(p=lora_dropout)`
acting on the adapter's input path only; `LoraLayer.reset_lora_parameters` with
`init_lora_weights="gaussian"` draws `lora_A ~ N(0, 1/r)` std and zeroes `lora_B`).

The peft layer runs in training mode with its dropout module replaced by the fixed mask that
our PRNG key draws, so outputs and adapter gradients are compared exactly (fp32, rtol 1e-5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxunlearn.modeling.layers import Linear
from jaxunlearn.train import lora as lora_lib
from jaxunlearn.train.step import make_train_step
from jaxunlearn.train.state import init_state, make_optimizer

D_IN, D_OUT, R, P = 6, 5, 4, 0.3


class _FixedDropout(torch.nn.Module):
    """nn.Dropout in training mode with a given keep mask: x * keep / (1 - p)."""

    def __init__(self, keep: np.ndarray, p: float):
        super().__init__()
        self.keep, self.p = torch.tensor(keep, dtype=torch.float32), p

    def forward(self, x):
        return x * self.keep / (1.0 - self.p)


def _peft_linear(seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    net = torch.nn.Sequential()
    net.add_module("proj", torch.nn.Linear(D_IN, D_OUT, bias=True))
    pm = get_peft_model(net, LoraConfig(r=R, lora_alpha=8, lora_dropout=P,
                                        target_modules=["proj"], init_lora_weights="gaussian"))
    layer = pm.base_model.model.proj
    with torch.no_grad():  # B starts at zero: give it values so the adapter path counts
        layer.lora_B["default"].weight.normal_(0.0, 0.5)
    return pm.train(), layer


def test_lora_kernel_equals_peft_linear_with_the_same_dropout_mask():
    pm, layer = _peft_linear(0)
    x = np.random.default_rng(1).normal(size=(2, 3, D_IN)).astype(np.float32)
    g = np.random.default_rng(2).normal(size=(2, 3, D_OUT)).astype(np.float32)
    key = jax.random.key_data(jax.random.key(7))
    keep = np.asarray(jax.random.bernoulli(jax.random.wrap_key_data(key), 1.0 - P, x.shape))
    assert 0 < keep.mean() < 1
    layer.lora_dropout["default"] = _FixedDropout(keep, P)
    xt = torch.tensor(x)
    y_ref = pm(xt)
    (y_ref * torch.tensor(g)).sum().backward()
    w = layer.base_layer.weight.detach().numpy().T
    bias = layer.base_layer.bias.detach().numpy()
    a = layer.lora_A["default"].weight.detach().numpy().T
    b = layer.lora_B["default"].weight.detach().numpy().T

    def ours(a_, b_):  # through the model's Linear, as inside the training forward
        from flax import nnx

        lin = Linear(D_IN, D_OUT, use_bias=True, axes=(None, None), rngs=nnx.Rngs(0))
        gd, _ = nnx.split(lin, nnx.Param)
        k = lora_lib.LoraKernel(jnp.asarray(w), a_, b_, key, 8.0 / R, P)
        from jaxunlearn.modeling.model import merge
        return merge(gd, {"kernel": k, "bias": jnp.asarray(bias)})(jnp.asarray(x))

    y = ours(jnp.asarray(a), jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(y), y_ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    ga, gb = jax.grad(lambda a_, b_: jnp.sum(ours(a_, b_) * g), argnums=(0, 1))(
        jnp.asarray(a), jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(ga), layer.lora_A["default"].weight.grad.numpy().T,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), layer.lora_B["default"].weight.grad.numpy().T,
                               rtol=1e-5, atol=1e-6)
    # without dropout (eval mode in peft) the merged kernel gives the same output
    pm.eval()
    layer.lora_dropout["default"] = torch.nn.Identity()
    merged = w + (8.0 / R) * a @ b
    np.testing.assert_allclose(x @ merged + bias, pm(xt).detach().numpy(), rtol=1e-5, atol=1e-6)


def _params(d_in=D_IN, d_out=D_OUT):
    rng = np.random.default_rng(0)
    return {"l.q_proj.kernel": jnp.asarray(rng.normal(size=(d_in, d_out)), jnp.float32),
            "l.norm.weight": jnp.ones((d_in,), jnp.float32)}


def test_dropout_zero_or_no_key_is_the_merged_path_bit_identical():
    params = _params()
    key = jax.random.key_data(jax.random.key(0))
    for cfg, k in ((lora_lib.LoraConfig(rank=2, targets=r"q_proj", dropout=0.0), key),
                   (lora_lib.LoraConfig(rank=2, targets=r"q_proj", dropout=0.2), None)):
        ad = lora_lib.init_lora(params, cfg, seed=1)
        ad = {n: v + 0.1 for n, v in ad.items()}
        out, ref = lora_lib.train_params(params, ad, cfg, k), lora_lib.merge(params, ad, cfg)
        assert all(np.array_equal(np.asarray(out[n]), np.asarray(ref[n])) for n in ref)
    cfg = lora_lib.LoraConfig(rank=2, targets=r"q_proj", dropout=0.2)
    out = lora_lib.train_params(params, lora_lib.init_lora(params, cfg), cfg, key)
    assert isinstance(out["l.q_proj.kernel"], lora_lib.LoraKernel)
    assert out["l.norm.weight"] is params["l.norm.weight"]
    with pytest.raises(ValueError, match="dropout must be in"):
        lora_lib.LoraConfig(dropout=1.0)


def test_gaussian_init_is_peft_std():
    params = {"m.kernel": jnp.zeros((4000, 8), jnp.float32)}
    for init, std in (("gaussian", 1.0 / 16), ("fan_in", 1.0 / np.sqrt(4000))):
        a = np.asarray(lora_lib.init_lora(params, lora_lib.LoraConfig(rank=16, targets="m",
                                                                      init=init))["m.lora_a"])
        assert abs(a.std() / std - 1) < 0.02
    with pytest.raises(ValueError, match="lora init"):
        lora_lib.LoraConfig(init="kaiming")


def test_step_key_is_fresh_per_step_and_micro_batch_and_deterministic():
    """`rng_key`: the loss sees fold_in(state.rng, step) (and the micro-batch index)."""

    def loss(params, frozen, batch):
        u = jax.random.uniform(jax.random.wrap_key_data(frozen["k"]))
        return jnp.sum(params["w"] * batch["x"]), {"u": u}

    def draws(seed, accum):
        opt = make_optimizer(1e-3, schedule="constant")
        step = make_train_step(loss, opt, grad_accum=accum, rng_key="k", donate=False)
        state = init_state({"w": jnp.ones((3,))}, opt, seed)
        out = []
        for _ in range(3):
            state, m = step(state, {}, {"x": jnp.ones((4, 3))})
            out.append(float(m["u"]))
        return out

    a, b = draws(0, 1), draws(0, 1)
    assert a == b and len(set(a)) == 3
    assert draws(1, 1) != a and draws(0, 2) != a


def test_ga_with_lora_dropout_end_to_end(tiny_vanilla, monkeypatch):
    """The training forward of a method takes the dropout path (traced `LoraKernel.matmul`
    calls; determinism from the seed: the step test above), under remat, and the result is
    the merged adapter (no dropout at export)."""
    from jaxunlearn.methods.base import UnlearnData, run_method

    model, tok, bench, pipe = tiny_vanilla
    data = UnlearnData(tok, pipe, bench.split("forget_10"), bench.split("retain_90"))
    calls = []
    orig = lora_lib.LoraKernel.matmul
    monkeypatch.setattr(lora_lib.LoraKernel, "matmul",
                        lambda self, x: calls.append(self.rate) or orig(self, x))
    res = run_method("ga", model, data, {"label_scope": "all_tokens"},
                     train={"max_steps": 1, "lr": 1e-2, "batch_size": 4, "progress": False,
                            "schedule": "constant", "lora": True, "lora_rank": 4,
                            "lora_alpha": 4.0, "lora_init": "gaussian", "remat": True,
                            "lora_dropout": 0.5})
    n_targets = len(lora_lib.target_paths(model.params, res.lora_config))
    assert calls and set(calls) == {0.5} and len(calls) % n_targets == 0
    assert res.lora_config.dropout == 0.5 and len(res.report["losses"]) == 1
    merged = lora_lib.merge(model.params, res.lora, res.lora_config)
    for k in merged:
        np.testing.assert_allclose(np.asarray(res.params[k]), np.asarray(merged[k]), atol=1e-6)
