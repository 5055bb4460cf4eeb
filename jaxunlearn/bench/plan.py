"""Compiled per-device memory of train steps for a preset, from abstract shapes only.

Nothing is allocated: parameters, optimizer state and the batch are `ShapeDtypeStruct`s
with shardings from the rules table; `jit(...).lower(...).compile().memory_analysis()`
reports what one device would hold. Modes: `full` (all parameters, AdamW), `lora` (rank 16
on the LLM linears), `vision` (vision MLPs + projector, the VKD setting).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

GIB = 1024 ** 3
MODES = ("full", "lora", "vision")


def _abstract_model(preset: dict):
    from jaxunlearn.modeling import registry
    from jaxunlearn.modeling.model import abstract_module

    fam = registry.family_for(preset["hf_config"]["model_type"])
    config = fam.parse_config(preset["hf_config"])
    graphdef, shapes, axes = abstract_module(fam.module_cls, config)
    dtype = jnp.dtype(preset.get("param_dtype", "bfloat16"))
    shapes = {k: jax.ShapeDtypeStruct(v.shape, dtype) for k, v in shapes.items()}
    return graphdef, config, shapes, axes


def _abstract_batch(preset: dict, config: Any, batch: int, seq: int, mesh,
                    answer_tokens: int) -> dict:
    from jaxunlearn.parallel.mesh import batch_sharding

    out = {"answer_index": jax.ShapeDtypeStruct((batch, min(answer_tokens, seq - 1)), jnp.int32,
                                                sharding=batch_sharding(mesh, 2)),
           "input_ids": jax.ShapeDtypeStruct((batch, seq), jnp.int32,
                                             sharding=batch_sharding(mesh, 2)),
           "attention_mask": jax.ShapeDtypeStruct((batch, seq), jnp.int32,
                                                  sharding=batch_sharding(mesh, 2)),
           "loss_mask": jax.ShapeDtypeStruct((batch, seq), jnp.float32,
                                             sharding=batch_sharding(mesh, 2))}
    if preset["family"] == "llava":
        size = config.vision.image_size
        out["pixel_values"] = jax.ShapeDtypeStruct(
            (batch, 3, size, size), jnp.dtype(preset.get("compute_dtype", "bfloat16")),
            sharding=batch_sharding(mesh, 4))
    return out


# Memory analysis comes from buffer assignment, which the backend's LLVM optimisation level
# does not change (checked on a 4-layer 7B-width model: identical bytes at levels 0 and 3);
# level 0 cuts the CPU compile of a 32-layer 7B step from ~10 to ~3 minutes. XLA:CPU's
# default scheduler orders for concurrency and keeps every layer's activations alive, remat
# or not (+5.9 GiB per 7B layer either way); the memory-optimised scheduler orders for low
# peak memory as GPU compilers do (+2.5 GiB per layer with remat, +4.7 without).
PLAN_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                         "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def plan_train_step(preset: dict, mode: str, mesh_sizes: dict, *, batch: int = 8,
                    seq: int = 1024, answer_tokens: int = 128,
                    compiler_options: dict | None = None) -> dict:
    """Compile the train step for `mode` on a mesh and return its memory analysis (GiB).

    The batch carries `answer_index` of width `answer_tokens` like every pipeline batch (the
    output head runs on answer positions only)."""
    from jaxunlearn.parallel.mesh import make_mesh, param_shardings
    from jaxunlearn.train import finetune, lora as lora_lib, subsets
    from jaxunlearn.train.state import make_optimizer
    from jaxunlearn.train.step import make_train_step

    if mode not in MODES:
        raise ValueError(f"unknown plan mode {mode!r}; use one of {MODES}")
    import math

    n = math.prod(int(v) for v in mesh_sizes.values())
    mesh = make_mesh(mesh_sizes, devices=jax.devices()[:n])
    graphdef, config, shapes, axes = _abstract_model(preset)
    if preset["family"] != "llava":
        raise ValueError("memory plans are implemented for llava presets; Qwen and OneVision "
                         "need their host-prepared vision inputs")
    shard = param_shardings(shapes, axes, mesh)
    placed = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shard[k])
              for k, v in shapes.items()}
    lora_cfg = None
    if mode == "lora":
        lora_cfg = lora_lib.LoraConfig(rank=16, alpha=32.0)
        lora_shapes = jax.eval_shape(lambda p: lora_lib.init_lora(p, lora_cfg), placed)
        rep = NamedSharding(mesh, P())
        trainable = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=rep)
                     for k, v in lora_shapes.items()}
        frozen = placed
    else:
        subset = "all" if mode == "full" else "projector+vision_mlp"
        mask = subsets.trainable_mask(placed, subset)
        trainable, frozen = subsets.split_params(placed, mask)
    opt = make_optimizer(1e-5, schedule="constant")
    opt_state = jax.eval_shape(opt.init, trainable)
    opt_state = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, P()))
        if s.ndim == 0 else s, opt_state)
    from jaxunlearn.train.state import TrainState

    rep = NamedSharding(mesh, P())
    state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32, sharding=rep), params=trainable,
                       opt_state=_match_shardings(opt_state, trainable, mesh),
                       rng=jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep))
    loss = finetune.make_nll_loss(graphdef, dtype=jnp.dtype(preset.get("compute_dtype")),
                                  remat=bool(preset.get("remat")), lora_cfg=lora_cfg)
    step = make_train_step(loss, opt, clip_norm=1.0)
    abatch = _abstract_batch(preset, config, batch, seq, mesh, answer_tokens)
    options = PLAN_COMPILER_OPTIONS if compiler_options is None else compiler_options
    compiled = step.lower(state, frozen, abatch).compile(compiler_options=options)
    mem = compiled.memory_analysis()
    n_dev = mesh.devices.size
    out = {"mode": mode, "mesh": dict(mesh.shape), "devices": n_dev, "batch": batch, "seq": seq}
    for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                 "alias_size_in_bytes", "generated_code_size_in_bytes"):
        out[name.replace("_size_in_bytes", "_gib")] = getattr(mem, name, 0) / GIB
    # arguments stay resident; outputs alias donated state; temps are the activations
    out["peak_gib"] = out["argument_gib"] + out["temp_gib"] + max(
        out["output_gib"] - out["alias_gib"], 0.0)
    return out


def _match_shardings(opt_state, params, mesh):
    """Give optimizer moments the sharding of the parameter with the same shape/key."""
    def fix(path, leaf):
        key = path[-1].key if hasattr(path[-1], "key") else None
        if key in params and params[key].shape == leaf.shape:
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=params[key].sharding)
        if getattr(leaf, "sharding", None) is None:
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=NamedSharding(mesh, P()))
        return leaf
    return jax.tree_util.tree_map_with_path(fix, opt_state)


def fits(peak_gib: float) -> str:
    """Which single-GPU classes the per-device peak fits (with ~10% headroom)."""
    out = [name for name, cap in (("24 GB", 24e9), ("48 GB", 48e9)) if peak_gib * GIB < 0.9 * cap]
    return ", ".join(out) if out else "neither"
