"""Empirical Fisher diagonal and saliency masks (MMUnlearner, VKD).

`F(D) = mean over batches of (d NLL_batch / d theta)^2`, accumulated inside one jitted step
per batch (squared gradients never leave the device until the end). `Fisher` keeps the sum
and the batch count, so the Fisher of a union of datasets is `(F_a + F_b).mean()`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.modeling.model import forward_logits
from jaxunlearn.objectives.nll import answer_nll


@dataclasses.dataclass
class Fisher:
    """Sum of squared batch gradients per parameter and the number of batches."""

    sums: dict[str, jax.Array]
    batches: int

    def mean(self) -> dict[str, jax.Array]:
        return {k: v / max(self.batches, 1) for k, v in self.sums.items()}

    def __add__(self, other: "Fisher") -> "Fisher":
        if set(self.sums) != set(other.sums):
            raise ValueError("Fisher statistics over different parameter sets cannot be added")
        return Fisher({k: self.sums[k] + other.sums[k] for k in self.sums},
                      self.batches + other.batches)


@functools.partial(jax.jit, static_argnames=("graphdef", "dtype"), donate_argnums=(0,))
def _accumulate(acc: dict, selected: dict, rest: dict, inputs: dict, targets: dict,
                graphdef: Any, dtype: Any) -> dict:
    def loss(sel):
        logits = forward_logits(graphdef, {**rest, **sel}, inputs, dtype=dtype)
        return answer_nll(logits, targets)[0]

    grads = jax.grad(loss)(selected)
    return {k: acc[k] + jnp.square(grads[k].astype(jnp.float32)) for k in acc}


def empirical_fisher(graphdef: Any, params: Mapping[str, jax.Array], batches: Iterable[dict],
                     keys: Sequence[str] | None = None, *, dtype: Any = None,
                     split_inputs=None, mesh=None,
                     logical_axes: Mapping[str, tuple] | None = None,
                     desc: str = "fisher") -> Fisher:
    """Fisher diagonal of the answer NLL over `batches` for `params[keys]` (default: all).

    `split_inputs(batch) -> (model inputs, loss targets)`; default: the finetune split.
    `mesh` defaults to `parallel.mesh.stats_mesh()`: with several processes each batch's
    gradient is one SPMD computation over the global batch on the command's mesh
    (parameters placed by `logical_axes`, each process passing its rows), and the sums are
    returned as host arrays in every process."""
    from jaxunlearn.modeling.model import model_inputs
    from jaxunlearn.parallel import distributed
    from jaxunlearn.parallel import mesh as mesh_lib

    mesh = mesh_lib.stats_mesh(mesh)
    keys = sorted(params) if keys is None else sorted(keys)
    unknown = [k for k in keys if k not in params]
    if unknown:
        raise ValueError(f"Fisher keys not in the model: {unknown[:3]}")
    selected = {k: params[k] for k in keys}
    rest = {k: v for k, v in params.items() if k not in selected}
    acc = {k: jnp.zeros(v.shape, jnp.float32) for k, v in selected.items()}
    if mesh is not None:
        axes = logical_axes or {}
        selected, rest, acc = (mesh_lib.place_params(t, axes, mesh)
                               for t in (selected, rest, acc))
    split = split_inputs or (lambda b: (model_inputs(b), {"input_ids": b["input_ids"],
                                                          "loss_mask": b["loss_mask"]}))
    n = 0
    count = mesh_lib.RowCount()
    for batch in batches:
        count.add(batch)
        inputs, targets = split(batch)
        if mesh is not None:
            inputs, targets = (mesh_lib.place_batch(mesh_lib.same_rows(batch, t), mesh)
                               for t in (inputs, targets))
        acc = _accumulate(acc, selected, rest, inputs, targets, graphdef, dtype)
        n += 1
    if n == 0:
        raise ValueError("empirical_fisher got no batches; check the dataset")
    count.log(desc)
    return Fisher(acc if mesh is None else distributed.to_host(acc), n)


def saliency_mask(f_forget: Mapping[str, jax.Array], f_retain: Mapping[str, jax.Array],
                  threshold: float = 1.0, eps: float = 1e-12) -> dict[str, np.ndarray]:
    """`{path: F_f / (F_r + eps) >= threshold}` as boolean numpy arrays.

    Entries where both Fisher values are 0 are *not* salient (ratio 0)."""
    out = {}
    for k, ff in f_forget.items():
        ff = np.asarray(ff, np.float32)
        fr = np.asarray(f_retain[k], np.float32)
        out[k] = (ff / (fr + eps)) >= threshold
    return out


def mask_fraction(mask: Mapping[str, np.ndarray]) -> float:
    """Share of selected entries over all masked parameters."""
    total = sum(int(np.size(m)) for m in mask.values())
    return float(sum(int(np.sum(m)) for m in mask.values()) / max(total, 1))
