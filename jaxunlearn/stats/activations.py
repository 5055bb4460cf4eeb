"""Per-neuron activation statistics of every MLP, reduced inside one jitted pass.

A neuron is one channel of an MLP hidden layer (see docs/methods.md): `site='post'` reads
`z = act(gate(x)) * up(x)` (gated MLPs) or `z = act(fc1(x))` (CLIP/SigLIP/Qwen2-VL vision
MLPs), the input of the output projection; `site='pre'` reads `gate(x)` / `fc1(x)`.

The model's MLPs call a *probe* `probe(pre, z, outs)` (`outs`: every Linear's output by
name, read by `jaxunlearn.stats.linear_outputs`); the probes built here reduce the activation
over the valid tokens of the batch right away, so only [layers, neurons] sums leave each
step (no per-token host transfer). Per group (`language`, `vision`) the sufficient
statistics are

    n [L]     number of valid tokens seen by the layer      (int32)
    S1 [L,N]  sum |z|        Sz [L,N] sum z        S2 [L,N] sum z^2      (fp32 running sums)
    F [L,N]   #{|z| > tau}   P [L,N]  #{z > 0}                          (int32)

`P` (positive count) is an extra beyond the paper statistics; selective pruning's `freq`
(fraction > 0) reads it. Valid tokens: attention_mask 1 and example_mask 1, narrowed by
`token_scope` for the language model: `all`, `answer` (loss_mask 1 at the token itself) or
`image` (image placeholder tokens). Vision neurons count every token (CLS included) of every
image whose example is valid and whose prompt holds image tokens, whatever the scope. Qwen-VL
and OneVision pipeline batches carry `vision_token_mask` (shape = the vision MLP input's
leading dims: real patches [N_pad] / real crop slots [slots, patches]) since their image rows
are not one per example; padded patches and crop slots do not count. A vision layer the model
never runs (LLaVA reads layer -2, so the last CLIP layer is skipped) keeps n = 0. Statistics
of a group the batch does not reach (vision on text-only batches, blank images included)
stay 0.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from jaxunlearn.modeling.model import forward_hidden
from jaxunlearn.modeling.mlp import group_shapes

SITES = ("post", "pre")
SCOPES = ("all", "answer", "image")
SUM_KEYS = ("S1", "Sz", "S2")
COUNT_KEYS = ("F", "P")
STAT_KEYS = ("n", *SUM_KEYS, *COUNT_KEYS)
_BATCH_KEYS = ("loss_mask", "example_mask", "vision_token_mask")

Stats = dict[str, dict[str, np.ndarray]]  # {group: {stat: array}}


def _check(site: str, token_scope: str) -> None:
    if site not in SITES:
        raise ValueError(f"unknown activation_site {site!r}; use one of {SITES}")
    if token_scope not in SCOPES:
        raise ValueError(f"unknown token_scope {token_scope!r}; use one of {SCOPES}")


def zero_stats(shapes: Mapping[str, tuple[int, int]]) -> Stats:
    """Empty accumulators (numpy) for {group: (layers, neurons)}."""
    out = {}
    for g, (L, N) in shapes.items():
        out[g] = {"n": np.zeros((L,), np.int32)}
        out[g].update({k: np.zeros((L, N), np.float32) for k in SUM_KEYS})
        out[g].update({k: np.zeros((L, N), np.int32) for k in COUNT_KEYS})
    return out


def _reduce(v: jax.Array, w: jax.Array, tau: float) -> dict[str, jax.Array]:
    """Sums over the leading dims of v [..., N] weighted by the 0/1 mask w (same leading dims)."""
    n_feat = v.shape[-1]
    v = v.reshape(-1, n_feat).astype(jnp.float32)
    w = w.reshape(-1).astype(jnp.float32)
    dot = functools.partial(jnp.einsum, "t,tn->n", precision=jax.lax.Precision.HIGHEST)
    a = jnp.abs(v)
    return {"n": jnp.sum(w).astype(jnp.int32),
            "S1": dot(w, a), "Sz": dot(w, v), "S2": dot(w, v * v),
            "F": dot(w, (a > tau).astype(jnp.float32)).astype(jnp.int32),
            "P": dot(w, (v > 0).astype(jnp.float32)).astype(jnp.int32)}


def token_weights(batch: Mapping[str, jax.Array], token_scope: str,
                  image_token_id: int | None) -> jax.Array:
    """0/1 mask [B, T] of the language tokens that count."""
    ids = batch["input_ids"]
    valid = batch.get("attention_mask", jnp.ones(ids.shape, jnp.int32)) > 0
    if "example_mask" in batch:
        valid = valid & (batch["example_mask"][:, None] > 0)
    if token_scope == "answer":
        if "loss_mask" not in batch:
            raise ValueError("token_scope 'answer' needs batches with a loss_mask")
        valid = valid & (batch["loss_mask"] > 0)
    elif token_scope == "image":
        if image_token_id is None:
            raise ValueError("token_scope 'image' needs the model's image token id")
        valid = valid & (ids == image_token_id)
    return valid


def _vision_weights(batch: Mapping[str, jax.Array], lead: tuple[int, ...],
                    image_token_id: int | None = None) -> jax.Array:
    if "vision_token_mask" in batch:
        return batch["vision_token_mask"].reshape(lead) > 0
    pix = batch.get("pixel_values")
    if pix is not None and pix.ndim == 4 and lead[0] == pix.shape[0] == batch["input_ids"].shape[0]:
        # LLaVA: as in the forward pass (masked scatter), image k feeds the k-th row that holds
        # image tokens; it counts when that row is a valid example. Images past the last such
        # row (zero images of rows that pad the batch, blank images of text-only rows: see
        # PipelineConfig.blank_images) feed nothing and do not count.
        n = pix.shape[0]
        shows = jnp.ones((n,), bool) if image_token_id is None else \
            jnp.any(batch["input_ids"] == image_token_id, axis=1)
        valid = shows
        if "example_mask" in batch:
            valid = valid & (batch["example_mask"] > 0)
        order = jnp.where(shows, jnp.cumsum(shows) - 1, n)
        ex = jnp.zeros((n,), bool).at[order].max(valid, mode="drop")
        return jnp.broadcast_to(ex.reshape((-1,) + (1,) * (len(lead) - 1)), lead)
    return jnp.ones(lead, bool)


def _constrain(x: jax.Array, mesh) -> jax.Array:
    """Keep [L, N] sums sharded like the MLP (neurons on the mesh's `mlp` axis)."""
    if mesh is None:
        return x
    from jaxunlearn.parallel.mesh import logical_to_spec

    axes = (None, "mlp") if x.ndim == 2 else (None,)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(axes, x.shape, mesh)))


Variant = tuple[str, str, float]  # (activation site, token scope, tau)


def make_stats_step(graphdef: Any, shapes: Mapping[str, tuple[int, int]],
                    variants: tuple[Variant, ...] = (("post", "all", 0.01),), *,
                    image_token_id: int | None = None, dtype=None, mesh=None):
    """A jitted `step(params, accs, batch) -> accs` adding one batch's statistics to one
    accumulator per (site, token_scope, tau) variant, all from a single forward pass
    (cached: the same model and settings reuse one compiled step)."""
    for site, scope, _ in variants:
        _check(site, scope)
    variants = tuple((s, c, float(t)) for s, c, t in variants)
    return _stats_step(graphdef, tuple(sorted(shapes.items())), variants, image_token_id,
                       dtype, mesh)


@functools.lru_cache(maxsize=32)
def _stats_step(graphdef, shape_items, variants, image_token_id, dtype, mesh):
    shapes = dict(shape_items)

    def step(params, accs, batch):
        inputs = {k: v for k, v in batch.items() if k not in _BATCH_KEYS}
        w_lang = {scope: token_weights(batch, scope, image_token_id)
                  for scope in {c for _, c, _ in variants}}
        found: list[dict[str, dict[int, dict]]] = [{g: {} for g in shapes} for _ in variants]

        def probe(group: str, i: int):
            def fn(pre, z, outs=None):
                for j, (site, scope, tau) in enumerate(variants):
                    v = pre if site == "pre" else z
                    lead = v.shape[:-1]
                    w = w_lang[scope] if group == "language" else _vision_weights(batch, lead, image_token_id)
                    found[j][group][i] = _reduce(v, w, tau)
            return fn

        probes = {g: [probe(g, i) for i in range(L)] for g, (L, _) in shapes.items()}
        forward_hidden(graphdef, params, inputs, dtype=dtype, probes=probes)
        out = []
        for acc, got in zip(accs, found):
            new = {}
            for g, (L, N) in shapes.items():
                new[g] = {}
                for key in STAT_KEYS:
                    shape = () if key == "n" else (N,)
                    dt = jnp.float32 if key in SUM_KEYS else jnp.int32
                    rows = [got[g][i][key] if i in got[g] else jnp.zeros(shape, dt)
                            for i in range(L)]
                    new[g][key] = _constrain(acc[g][key] + jnp.stack(rows), mesh)
            out.append(new)
        return out

    return jax.jit(step, donate_argnums=(1,))


def neuron_stats(model, batches: Iterable[Mapping[str, Any]], *, site: str = "post",
                 token_scope: str = "all", tau: float = 0.01, mesh=None, params=None,
                 progress: bool = True, desc: str = "neuron stats",
                 total: int | None = None) -> Stats:
    """Accumulate the sufficient statistics of every MLP neuron over `batches` (numpy batches
    from `jaxunlearn.data.pipeline`). With `mesh` (default: `parallel.mesh.stats_mesh()`),
    parameters are placed by the logical-axis rules and batch rows split over ('data',
    'fsdp') (replicated when they do not divide). Returns {group: {stat: numpy array}}."""
    return neuron_stats_multi(model, batches, [(site, token_scope, tau)], mesh=mesh,
                              params=params, progress=progress, desc=desc, total=total)[0]


def neuron_stats_multi(model, batches: Iterable[Mapping[str, Any]], variants: list[Variant], *,
                       mesh=None, params=None, progress: bool = True,
                       desc: str = "neuron stats", total: int | None = None) -> list[Stats]:
    """`neuron_stats` for several (site, token_scope, tau) variants in one pass over the data.

    `mesh` defaults to `parallel.mesh.stats_mesh()`: with several processes the command's
    mesh, where the pass is one SPMD computation over the global batches (each process
    passes its rows, `ProcessRows`, and reads the combined sums); else one device."""
    from tqdm.auto import tqdm

    from jaxunlearn.parallel import distributed
    from jaxunlearn.parallel import mesh as mesh_lib

    mesh = mesh_lib.stats_mesh(mesh)
    params = model.params if params is None else params
    shapes = group_shapes(params)
    image_token_id = getattr(model.config, "image_token_id", None)
    if mesh is not None:
        params = mesh_lib.place_params(params, model.logical_axes, mesh)
    step = make_stats_step(model.graphdef, shapes, tuple(tuple(v) for v in variants),
                           image_token_id=image_token_id, dtype=model.compute_dtype, mesh=mesh)

    def fresh():
        acc = zero_stats(shapes)
        if mesh is None:
            return jax.tree.map(jnp.asarray, acc)
        return {g: {k: mesh_lib.global_array(v, NamedSharding(
            mesh, mesh_lib.logical_to_spec((None, "mlp")[: v.ndim], v.shape, mesh)))
            for k, v in d.items()} for g, d in acc.items()}

    accs = [fresh() for _ in variants]
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)
    count = mesh_lib.RowCount()
    for batch in tqdm(batches, desc=desc, total=total, disable=not progress, leave=False):
        count.add(batch)
        keep = mesh_lib.same_rows(batch, {k: v for k, v in batch.items()
                                          if k in _BATCH_KEYS or k in _model_keys(batch)})
        placed = (mesh_lib.place_batch(keep, mesh) if mesh is not None
                  else {k: jnp.asarray(v) for k, v in keep.items()})
        accs = step(params, accs, placed)
    count.log(desc)
    return [distributed.to_host(a) for a in accs]


def _model_keys(batch: Mapping[str, Any]) -> set[str]:
    from jaxunlearn.modeling.model import model_inputs

    return set(model_inputs(dict(batch)))


def merge_stats(*parts: Stats) -> Stats:
    """Sum of statistics gathered separately (e.g. per host or per chunk of data)."""
    out = jax.tree.map(lambda *xs: np.sum(np.stack(xs), axis=0).astype(xs[0].dtype), *parts)
    return out


def derived(stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """mean_abs, mean, freq (|z|>tau), pos_freq (z>0), var, std (unbiased), rms per neuron
    of one group's statistics (float64); a layer with n = 0 gets all zeros."""
    n = np.asarray(stats["n"], np.float64)[:, None]
    safe = np.maximum(n, 1.0)
    has = n > 0
    s1, sz, s2 = (np.asarray(stats[k], np.float64) for k in SUM_KEYS)
    mean = np.where(has, sz / safe, 0.0)
    var = np.where(has, np.maximum(s2 / safe - mean ** 2, 0.0), 0.0)
    unbiased = np.where(n > 1, np.maximum(s2 - sz ** 2 / safe, 0.0) / np.maximum(n - 1, 1.0), 0.0)
    return {"mean_abs": np.where(has, s1 / safe, 0.0), "mean": mean,
            "freq": np.where(has, stats["F"] / safe, 0.0),
            "pos_freq": np.where(has, stats["P"] / safe, 0.0),
            "var": var, "std": np.sqrt(unbiased), "rms": np.where(has, np.sqrt(s2 / safe), 0.0),
            "F": np.broadcast_to(np.asarray(stats["F"], np.float64), s1.shape)}


def dataset_stats(model, data, which: str, modality: str, *, records=None, batch_size=None,
                  **kw) -> Stats:
    """Statistics of `data.records(which, modality)` (or `records`), batches in order."""
    recs = data.records(which, modality) if records is None else records
    ds = data.dataset(recs, shuffle=False, batch_size=batch_size)
    return neuron_stats(model, ds, desc=f"stats {which}/{modality}", **kw)
