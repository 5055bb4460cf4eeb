"""Pure parameter-tree transforms: neuron pruning, elementwise masks, deltas, SMFA sculpting.

Parameters are the flat `{dotted.path: array}` dicts of `jaxunlearn.modeling.model`. Every
function returns a new dict; untouched entries are the same arrays (bit-identical), edited
entries keep their shape, dtype and (through `jnp.where`) their sharding.

Neuron masks are `{group: bool [layers, neurons]}` with group `language` or `vision`, or
per-Linear `{"<group>.<linear>": bool [layers, output channels]}`; True marks what to remove.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.modeling.mlp import (  # noqa: F401
    GROUPS, MLPSite, group_shapes, linear_shapes, mask_shapes, mlp_layout,
)

Params = Mapping[str, jax.Array]


def _zero_where(x: jax.Array, drop) -> jax.Array:
    return jnp.where(jnp.asarray(drop), jnp.zeros((), x.dtype), x)


def prune_neurons(params: Params, masks: Mapping[str, np.ndarray],
                  family: str | None = None) -> dict[str, jax.Array]:
    """Remove what `masks` marks True.

    A group key (`language`, `vision`; bool [layers, neurons]) removes neurons: column n of
    the up/gate (or fc1) kernels and bias entry n, and row n of the down (or fc2) kernel.
    A per-Linear key `<group>.<linear>` (e.g. `language.down_proj`, `vision.fc1`; bool
    [layers, output channels]) zeroes the marked output channels of that Linear in each
    layer: kernel column and bias entry (the published MANU pipeline, which masks each
    Linear's weight rows and bias by its own mask)."""
    out = dict(params)
    layout = mlp_layout(params, family)
    for key, mask in masks.items():
        group, _, linear = key.partition(".")
        if group not in GROUPS:
            raise ValueError(f"unknown neuron group {group!r} in mask key {key!r}; use {GROUPS}")
        sites = layout[group]
        mask = np.asarray(mask, bool)
        if linear:
            _prune_outputs(out, sites, key, linear, mask)
            continue
        if mask.shape[0] != len(sites) or (sites and mask.shape[1] != sites[0].width):
            want = (len(sites), sites[0].width if sites else 0)
            raise ValueError(f"{group} mask has shape {mask.shape} but the model's {group} "
                             f"MLPs are {want} (layers, neurons)")
        for site, row in zip(sites, mask):
            if not row.any():
                continue
            for name in site.inputs:
                k = f"{site.prefix}.{name}.kernel"
                out[k] = _zero_where(out[k], row[None, :])
                b = f"{site.prefix}.{name}.bias"
                if b in out:
                    out[b] = _zero_where(out[b], row)
            k = f"{site.prefix}.{site.output}.kernel"
            out[k] = _zero_where(out[k], row[:, None])
    return out


def _prune_outputs(out: dict, sites, key: str, linear: str, mask: np.ndarray) -> None:
    """Zero the output channels marked in mask [layers, C] of Linear `linear` (in place)."""
    if not sites or linear not in (*sites[0].inputs, sites[0].output):
        names = (*sites[0].inputs, sites[0].output) if sites else ()
        raise ValueError(f"mask key {key!r} names no Linear of this model's MLPs "
                         f"(have {list(names)})")
    width = out[f"{sites[0].prefix}.{linear}.kernel"].shape[1]
    if mask.shape != (len(sites), width):
        raise ValueError(f"{key} mask has shape {mask.shape} but the model's {key} Linears "
                         f"are {(len(sites), width)} (layers, output channels)")
    for site, row in zip(sites, mask):
        if not row.any():
            continue
        k = f"{site.prefix}.{linear}.kernel"
        out[k] = _zero_where(out[k], row[None, :])
        b = f"{site.prefix}.{linear}.bias"
        if b in out:
            out[b] = _zero_where(out[b], row)


def neuron_masks_to_param_masks(params: Params, masks: Mapping[str, np.ndarray],
                                family: str | None = None) -> dict[str, np.ndarray]:
    """The same pruning as `prune_neurons`, expressed as {path: bool keep-mask} for
    `apply_masks` (only the edited tensors appear)."""
    keep = {}
    layout = mlp_layout(params, family)
    for group, mask in masks.items():
        for site, row in zip(layout[group], np.asarray(mask, bool)):
            for name in site.inputs:
                keep[f"{site.prefix}.{name}.kernel"] = np.broadcast_to(
                    ~row[None, :], params[f"{site.prefix}.{name}.kernel"].shape)
                if f"{site.prefix}.{name}.bias" in params:
                    keep[f"{site.prefix}.{name}.bias"] = ~row
            k = f"{site.prefix}.{site.output}.kernel"
            keep[k] = np.broadcast_to(~row[:, None], params[k].shape)
    return keep


def apply_masks(params: Params, masks: Mapping[str, np.ndarray | jax.Array]) -> dict[str, jax.Array]:
    """Elementwise masks: boolean masks keep where True (else 0); float masks multiply."""
    out = dict(params)
    for path, m in masks.items():
        if path not in params:
            raise ValueError(f"mask names parameter {path!r} that this model does not have")
        p = params[path]
        if tuple(np.shape(m)) != tuple(p.shape):
            raise ValueError(f"mask for {path} has shape {np.shape(m)}, parameter {p.shape}")
        m = jnp.asarray(m)
        if m.dtype == jnp.bool_:
            out[path] = jnp.where(m, p, jnp.zeros((), p.dtype))
        else:
            out[path] = (p * m.astype(p.dtype)).astype(p.dtype)
    return out


def param_delta(new: Params, old: Params, paths=None) -> dict[str, jax.Array]:
    """{path: new - old} in fp32 for floating parameters present in both (or `paths`)."""
    keys = paths if paths is not None else [k for k in new if k in old]
    return {k: new[k].astype(jnp.float32) - old[k].astype(jnp.float32) for k in keys
            if jnp.issubdtype(new[k].dtype, jnp.floating)}


def add_delta(params: Params, delta: Mapping[str, jax.Array], scale: float = 1.0) -> dict[str, jax.Array]:
    """params + scale * delta (computed in fp32, cast back to each parameter's dtype)."""
    out = dict(params)
    for k, d in delta.items():
        if k not in params:
            raise ValueError(f"delta names parameter {k!r} that this model does not have")
        p = params[k]
        out[k] = (p.astype(jnp.float32) + scale * jnp.asarray(d, jnp.float32)).astype(p.dtype)
    return out


CRITERIA = ("both", "C", "R", "none")


def sculpt_masks(delta_f: Mapping[str, jax.Array], delta_a: Mapping[str, jax.Array], *,
                 k: float = 1.0, criteria: str = "both",
                 eps: float = 1e-8) -> tuple[dict[str, jax.Array], dict[str, float]]:
    """SMFA masks per tensor: rho = ||dW_f||_F / (||dW_a||_F + eps), C = [dW_a*dW_f < 0],
    R = [k*rho*|dW_a| < |dW_f|], M = C & R (or C, R alone; `none` masks nothing).
    Tensors without an anchor delta get an all-False mask. Returns (M per path, rho per path)."""
    if criteria not in CRITERIA:
        raise ValueError(f"unknown SMFA criteria {criteria!r}; use one of {CRITERIA}")
    if k < 0:
        raise ValueError(f"SMFA k must be >= 0, got {k}")
    masks, rhos = {}, {}
    for path, df in delta_f.items():
        df = jnp.asarray(df, jnp.float32)
        da = delta_a.get(path)
        if da is None or criteria == "none":
            masks[path] = jnp.zeros(df.shape, bool)
            rhos[path] = float("nan") if da is None else float(_rho(df, da, eps))
            continue
        da = jnp.asarray(da, jnp.float32)
        rho = _rho(df, da, eps)
        c = da * df < 0
        r = k * rho * jnp.abs(da) < jnp.abs(df)
        masks[path] = {"both": c & r, "C": c, "R": r}[criteria]
        rhos[path] = float(rho)
    return masks, rhos


def _rho(df: jax.Array, da: jax.Array, eps: float) -> jax.Array:
    return jnp.linalg.norm(df.ravel()) / (jnp.linalg.norm(jnp.asarray(da, jnp.float32).ravel()) + eps)


def sculpt(delta_f: Mapping[str, jax.Array], masks: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """dW_f' = dW_f * (1 - M)."""
    return {p: jnp.where(masks[p], 0.0, jnp.asarray(d, jnp.float32)) if p in masks else d
            for p, d in delta_f.items()}
