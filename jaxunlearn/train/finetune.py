"""Answer-token cross-entropy training (the vanilla fine-tuning recipe) on the train core."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxunlearn.modeling.model import forward_hidden, forward_logits
from jaxunlearn.objectives.nll import answer_nll, gather_answer_states, gathered_nll, token_accuracy
from jaxunlearn.train import lora as lora_lib

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                    "image_sizes", "position_ids")


def model_inputs(batch: dict) -> dict:
    """The part of a batch that the model reads (loss masks and labels stay out)."""
    return {k: v for k, v in batch.items()
            if k in MODEL_INPUT_KEYS or k.startswith("vision_")}


def full_params(trainable: dict, frozen: dict, lora_cfg: lora_lib.LoraConfig | None) -> dict:
    """Rebuild the model's parameter dict from the trainable and frozen parts."""
    if lora_cfg is not None:
        return lora_lib.merge(frozen, trainable, lora_cfg)
    return {**frozen, **trainable}


def make_nll_loss(graphdef: Any, *, dtype=None, remat: bool = False,
                  lora_cfg: lora_lib.LoraConfig | None = None):
    """loss(params, frozen, batch) -> (mean answer NLL, {weight, accuracy}).

    With `answer_index` in the batch (see `objectives.nll.answer_index`) only the answer
    positions go through the output head."""

    def loss(params: dict, frozen: dict, batch: dict):
        if "answer_index" in batch:
            hidden, module = forward_hidden(graphdef, full_params(params, frozen, lora_cfg),
                                            model_inputs(batch), dtype=dtype, remat=remat)
            states, targets, weights = gather_answer_states(hidden, batch)
            nll, n, acc = gathered_nll(module.lm_logits(states), targets, weights)
            return nll, {"weight": n, "accuracy": acc}
        logits = forward_logits(graphdef, full_params(params, frozen, lora_cfg),
                                model_inputs(batch), dtype=dtype, remat=remat)
        nll, n = answer_nll(logits, batch)
        return nll, {"weight": n, "accuracy": token_accuracy(logits, batch)}

    return loss


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Keys of the `train:` config section."""

    lr: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    clip_norm: float | None = 1.0
    subset: str = "all"
    deeper_half: bool = False
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: str = lora_lib.DEFAULT_TARGETS
    seed: int = 0
    remat: bool = False
    checkpoint_every: int = 0
    keep_checkpoints: int = 3

    def lora_config(self) -> lora_lib.LoraConfig | None:
        if not self.lora:
            return None
        return lora_lib.LoraConfig(self.lora_rank, self.lora_alpha, self.lora_dropout,
                                   self.lora_targets)


def count_params(tree: dict) -> int:
    return int(sum(jnp.size(v) for v in jax.tree.leaves(tree)))


@dataclasses.dataclass
class FinetuneResult:
    params: dict            # full model params (LoRA merged when LoRA was used)
    lora: dict | None       # the adapter alone (for PEFT export), or None
    history: list[dict]     # one record per step
    report: dict            # steps, final loss, seconds, trainable parameter count


def finetune(model, make_batches, cfg: TrainConfig, *, steps_per_epoch: int,
             loss_builder=None, mesh=None, log_path=None, checkpoint_dir=None,
             update_mask: dict | None = None, desc: str = "finetune",
             progress: bool = True) -> FinetuneResult:
    """Train `model` on `make_batches(epoch)` (an iterable of numpy batches per epoch).

    `loss_builder(graphdef, dtype, remat, lora_cfg)` returns the loss; default: answer NLL.
    Handles the trainable subset, LoRA, the optimizer schedule over
    `epochs * steps_per_epoch` steps, an optional mesh, checkpoints and resume.
    """
    import time

    from jaxunlearn.checkpoint.state import Checkpointer
    from jaxunlearn.parallel import mesh as mesh_lib
    from jaxunlearn.train import subsets
    from jaxunlearn.train.loop import run_epochs
    from jaxunlearn.train.state import init_state, make_optimizer
    from jaxunlearn.train.step import make_train_step

    lora_cfg = cfg.lora_config()
    params = model.params
    if mesh is not None:
        params = mesh_lib.shard_params(params, model.logical_axes, mesh)
    if lora_cfg is not None:
        if cfg.subset not in ("all", "llm"):
            raise ValueError("LoRA targets are chosen by lora_targets; leave subset at 'all'")
        trainable, frozen = lora_lib.init_lora(params, lora_cfg, cfg.seed), params
    else:
        trainable, frozen = subsets.split_params(
            params, subsets.trainable_mask(params, cfg.subset, cfg.deeper_half))
    if update_mask is not None:
        missing = sorted(set(update_mask) - set(trainable))
        if missing:
            raise ValueError(f"update mask names parameters that are not trainable here: "
                             f"{missing[:3]}; a mask under LoRA needs mask_lora: merged")
    total = max(cfg.epochs * steps_per_epoch, 1)
    opt = make_optimizer(cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps,
                         total_steps=total, weight_decay=cfg.weight_decay)
    state = init_state(trainable, opt, cfg.seed, mesh=mesh)
    builder = loss_builder or (lambda g, d, r, lc: make_nll_loss(g, dtype=d, remat=r, lora_cfg=lc))
    loss = builder(model.graphdef, model.compute_dtype, cfg.remat, lora_cfg)
    place = (lambda b: mesh_lib.shard_batch(b, mesh)) if mesh is not None else (lambda b: b)
    step = make_train_step(loss, opt, grad_accum=cfg.grad_accum, clip_norm=cfg.clip_norm,
                           update_mask=update_mask)
    ckpt = (Checkpointer(checkpoint_dir, keep=cfg.keep_checkpoints, every=cfg.checkpoint_every)
            if checkpoint_dir else None)
    t0 = time.perf_counter()
    try:
        state, history = run_epochs(step, state, frozen, make_batches, epochs=cfg.epochs,
                                    place=place, log_path=log_path, checkpointer=ckpt,
                                    desc=desc, max_steps=total, progress=progress)
    finally:
        if ckpt is not None:
            ckpt.close()
    seconds = time.perf_counter() - t0
    new_params = full_params(state.params, frozen, lora_cfg)
    report = {"steps": len(history), "seconds": seconds,
              "final_loss": history[-1]["loss"] if history else None,
              "trainable_params": count_params(state.params)}
    return FinetuneResult(new_params, dict(state.params) if lora_cfg else None, history, report)
