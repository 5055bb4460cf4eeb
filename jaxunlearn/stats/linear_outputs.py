"""Per-position statistics of every MLP Linear's output, pooled over all layers of a tower:
the activation statistics of the published MANU pipeline (docs/methods.md, `manu`,
`formulation: official`; the facts read from the published code are listed in
docs/sources/method-reproductions.md).

For one tower (`group`: `language` or `vision`) and one Linear name of its MLPs (`fc1`, `fc2`,
`gate_proj`, `up_proj`, `down_proj`), the outputs `a` [rows, positions, C] of that Linear in
every layer are stacked along the rows (rows = layers x examples), clamped to [-1e3, 1e3],
and reduced over the rows at each position:

    abs = mean |a|    freq = mean(|a| > tau)    var = std(a) (unbiased)    rms = sqrt(mean a^2)

Each batch contributes the sum of these [positions, C] statistics over its positions and its
number of positions; `chunk_means` then averages per chunk of `chunk` batches (sum / count)
and over chunks, as the published aggregation does. Positions are the batch's sequence
columns up to its longest valid row (padding, prompt and image tokens included) for the
language model; for CLIP / SigLIP every token of an image (or crop); for the Qwen-VL towers,
whose MLP input is one [patches, C] sequence per batch, the batch's real patches are rows of
a single position. Rows are the valid examples (images, crops, patches) of the batch.

The reduction runs inside one jitted forward (static shapes; the per-layer moments are
combined with Chan's pairwise update, so the unbiased std is as stable as a two-pass one);
only [C] vectors per Linear leave the device per batch.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.modeling.mlp import mlp_layout
from jaxunlearn.modeling.model import forward_hidden
from jaxunlearn.modeling.multimodal import AllLayerProbes
from jaxunlearn.stats.activations import _model_keys, _vision_weights, token_weights

CLAMP = 1e3
KINDS = ("abs", "freq", "var", "rms")
_BATCH_KEYS = ("loss_mask", "example_mask", "vision_token_mask")


def linear_names(params: Mapping[str, Any], group: str) -> tuple[str, ...]:
    """The Linear layers of `group`'s MLPs in forward order: (fc1, fc2) or (gate_proj,
    up_proj, down_proj)."""
    sites = mlp_layout(params)[group]
    if not sites:
        raise ValueError(f"this model has no {group} MLP layers")
    return (*sites[0].inputs, sites[0].output)


def _rows_positions(v: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(a [R, P, C] fp32 clamped, row weights [R], position weights [P]) from an MLP Linear
    output v [..., C] and its 0/1 validity w (v's leading shape)."""
    if v.ndim == 2:  # Qwen-VL vision: one [patches, C] sequence per batch
        v, w = v[:, None, :], w[:, None]
    a = jnp.clip(v.astype(jnp.float32), -CLAMP, CLAMP)
    w = w.astype(bool)
    return a, jnp.any(w, axis=1).astype(jnp.float32), jnp.any(w, axis=0)


def _layer_moments(a: jax.Array, rw: jax.Array, tau: float) -> dict[str, jax.Array]:
    """Row sums of one layer's output a [R, P, C] (rows weighted by rw [R])."""
    w = rw[:, None, None]
    n = jnp.sum(rw)
    mean = jnp.sum(w * a, axis=0) / jnp.maximum(n, 1.0)
    return {"n": n, "mean": mean, "m2": jnp.sum(w * (a - mean) ** 2, axis=0),
            "s1": jnp.sum(w * jnp.abs(a), axis=0),
            "f": jnp.sum(w * (jnp.abs(a) > tau), axis=0), "s2": jnp.sum(w * a * a, axis=0)}


def _combine(x: dict[str, jax.Array] | None, y: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Chan's pairwise update of (n, mean, m2) plus plain sums."""
    if x is None:
        return y
    n = x["n"] + y["n"]
    delta = y["mean"] - x["mean"]
    frac = jnp.where(n > 0, y["n"] / jnp.maximum(n, 1.0), 0.0)
    out = {"n": n, "mean": x["mean"] + delta * frac,
           "m2": x["m2"] + y["m2"] + delta * delta * x["n"] * frac}
    out.update({k: x[k] + y[k] for k in ("s1", "f", "s2")})
    return out


def _finish(m: dict[str, jax.Array], pos: jax.Array) -> dict[str, jax.Array]:
    """Per-position statistics summed over the counted positions ([C] each)."""
    n = m["n"]
    stats = {"abs": m["s1"] / n, "freq": m["f"] / n, "var": jnp.sqrt(m["m2"] / (n - 1.0)),
             "rms": jnp.sqrt(m["s2"] / n)}
    keep = pos[:, None]
    return {k: jnp.sum(jnp.where(keep, v, 0.0), axis=0) for k, v in stats.items()}


def make_step(graphdef: Any, group: str, names: tuple[str, ...], layers: int, tau: float, *,
              image_token_id: int | None = None, dtype=None):
    """A jitted `step(params, batch) -> ({name: {kind: [C]}}, positions)` for one tower."""
    return _step(graphdef, group, tuple(names), int(layers), float(tau), image_token_id, dtype)


@functools.lru_cache(maxsize=16)
def _step(graphdef, group, names, layers, tau, image_token_id, dtype):
    def step(params, batch):
        inputs = {k: v for k, v in batch.items() if k not in _BATCH_KEYS}
        acc: dict[str, Any] = {name: None for name in names}
        pos: list[jax.Array] = []

        def probe(pre, z, outs):
            lead = outs[names[0]].shape[:-1]
            if group == "language":
                w = token_weights(batch, "all", image_token_id)
            else:
                w = _vision_weights(batch, lead, image_token_id)
            for name in names:
                a, rw, pw = _rows_positions(outs[name], w)
                acc[name] = _combine(acc[name], _layer_moments(a, rw, tau))
            if not pos:
                pos.append(pw)

        probes = [probe] * layers
        forward_hidden(graphdef, params, inputs, dtype=dtype,
                       probes={group: AllLayerProbes(probes) if group == "vision" else probes})
        if not pos:  # the tower did not run (no image in the batch)
            return None
        counted = pos[0] & (acc[names[0]]["n"] > 0)
        return ({name: _finish(acc[name], counted) for name in names},
                jnp.sum(counted.astype(jnp.float32)))

    return jax.jit(step)


def chunk_means(per_batch: list[tuple[dict, float]], chunk: int = 10) -> dict[str, dict]:
    """Mean over chunks of `chunk` consecutive batches of (sum of position statistics in the
    chunk / positions in the chunk); chunks without positions are skipped."""
    means = []
    for start in range(0, len(per_batch), chunk):
        part = [b for b in per_batch[start:start + chunk] if b[1] > 0]
        if not part:
            continue
        count = sum(c for _, c in part)
        means.append({name: {k: sum(s[name][k] for s, _ in part) / count for k in KINDS}
                      for name in part[0][0]})
    if not means:
        raise ValueError("no batch reached this tower (no image in the multimodal data, or "
                         "no text batch): nothing to score")
    return {name: {k: np.mean([m[name][k] for m in means], axis=0) for k in KINDS}
            for name in means[0]}


def tower_stats(model, batches: Iterable[Mapping[str, Any]], group: str, *, tau: float = 0.1,
                chunk: int = 10, progress: bool = True, desc: str = "linear outputs",
                mesh=None) -> dict[str, dict[str, np.ndarray]]:
    """{linear name: {abs, freq, var, rms: float32 [C]}} of `group`'s MLP Linear outputs over
    `batches` (numpy batches of `jaxunlearn.data.pipeline`, in order).

    `mesh` defaults to `parallel.mesh.stats_mesh()`: with several processes each batch is one
    SPMD computation over the global batch on the command's mesh (each process passes its
    rows); the per-batch [C] sums are read in every process."""
    from tqdm.auto import tqdm

    from jaxunlearn.parallel import distributed
    from jaxunlearn.parallel import mesh as mesh_lib

    mesh = mesh_lib.stats_mesh(mesh)
    params = model.params
    names = linear_names(params, group)
    layers = len(mlp_layout(params)[group])
    step = make_step(model.graphdef, group, names, layers, tau,
                     image_token_id=getattr(model.config, "image_token_id", None),
                     dtype=model.compute_dtype)
    if mesh is not None:
        params = mesh_lib.place_params(params, model.logical_axes, mesh)
    per_batch = []
    count = mesh_lib.RowCount()
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        count.add(batch)
        keep = mesh_lib.same_rows(batch, {k: v for k, v in batch.items()
                                          if k in _BATCH_KEYS or k in _model_keys(batch)})
        out = step(params, keep if mesh is None else mesh_lib.place_batch(keep, mesh))
        if out is None:
            continue
        stats, count_ = distributed.to_host(out)
        per_batch.append(({n: {k: np.asarray(v, np.float32) for k, v in s.items()}
                           for n, s in stats.items()}, float(count_)))
    count.log(f"{group} {desc}")
    return chunk_means(per_batch, chunk)
