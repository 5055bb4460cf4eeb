"""Answer-token cross-entropy training (the vanilla fine-tuning recipe) through `driver.fit`."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxunlearn.modeling.model import forward_hidden, forward_logits, model_inputs
from jaxunlearn.objectives.nll import answer_nll, gather_answer_states, gathered_nll, token_accuracy
from jaxunlearn.train import lora as lora_lib
from jaxunlearn.train.driver import (DROPOUT_KEY, FitResult, TrainConfig, count_params, fit,
                                     full_params, make_setup)

__all__ = ["FinetuneResult", "TrainConfig", "count_params", "finetune", "full_params",
           "make_nll_loss"]

def make_nll_loss(graphdef: Any, *, dtype=None, remat: bool = False,
                  lora_cfg: lora_lib.LoraConfig | None = None):
    """loss(params, frozen, batch) -> (mean answer NLL, {weight, accuracy}).

    With `answer_index` in the batch (see `data.answers.answer_index`) only the answer
    positions go through the output head."""

    def loss(params: dict, frozen: dict, batch: dict, key=None):
        if "answer_index" in batch:
            hidden, module = forward_hidden(graphdef, full_params(params, frozen, lora_cfg, key),
                                            model_inputs(batch), dtype=dtype, remat=remat)
            states, targets, weights = gather_answer_states(hidden, batch)
            nll, n, acc = gathered_nll(module.lm_logits(states), targets, weights)
            return nll, {"weight": n, "accuracy": acc}
        logits = forward_logits(graphdef, full_params(params, frozen, lora_cfg, key),
                                model_inputs(batch), dtype=dtype, remat=remat)
        nll, n = answer_nll(logits, batch)
        return nll, {"weight": n, "accuracy": token_accuracy(logits, batch)}

    return loss


FinetuneResult = FitResult


def finetune(model, make_batches, cfg: TrainConfig, *, steps_per_epoch: int, log_path=None,
             checkpoint_dir=None, update_mask: dict | None = None, desc: str = "finetune",
             progress: bool = True, on_epoch=None) -> FitResult:
    """Answer-NLL training of `model` on `make_batches(epoch)` (numpy batches) through
    `driver.fit`: the trainable subset or LoRA of `cfg`, its optimizer schedule over
    `epochs * steps_per_epoch` steps (capped by `max_steps`), checkpoints and resume.
    `on_epoch(epoch, params)` runs after every epoch with the full parameters."""
    setup = make_setup(model, cfg)
    nll = make_nll_loss(model.graphdef, dtype=model.compute_dtype, remat=cfg.remat,
                        lora_cfg=setup.lora_cfg)

    def loss(params, frozen, batch):
        return nll(params, frozen["base"], batch, frozen.get(DROPOUT_KEY))

    if not progress:
        cfg = dataclasses.replace(cfg, progress=False)
    return fit(setup, cfg, loss, make_batches, steps_per_epoch=steps_per_epoch,
               update_mask=update_mask, log_path=log_path, checkpoint_dir=checkpoint_dir,
               desc=desc, on_epoch=on_epoch)
