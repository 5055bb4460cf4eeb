"""Answer-token cross-entropy training (the vanilla fine-tuning recipe) on the train core."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxunlearn.modeling.model import forward_logits
from jaxunlearn.objectives.nll import answer_nll, token_accuracy
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
    """loss(params, frozen, batch) -> (mean answer NLL, {weight, accuracy})."""

    def loss(params: dict, frozen: dict, batch: dict):
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
