"""Training: `TrainConfig`, the trainable split and the one driver `fit` (driver.py); the
vanilla fine-tuning recipe is `jaxunlearn.train.finetune.finetune` (module `finetune`, which
also exports `TrainConfig`); the jitted step, LoRA and named subsets."""

from jaxunlearn.train.driver import FitResult, Setup, TrainConfig, fit, make_setup

__all__ = ["FitResult", "Setup", "TrainConfig", "fit", "make_setup"]
