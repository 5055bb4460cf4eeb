"""The reproduction presets (`configs/{ga,grad_diff,kl_min,npo,mmunlearner}-mllmu-*.yaml`)
load through the CLI's schema and set every published setting (read from the code):

- franciscoliu/MLLMU-Bench `baselines/{GA,GA_Difference,KL_Min,NPO}.py::main` and
  `baselines/README.md`: `--batch_size 4 --lr 2e-5 --num_epochs 1`; `LoraConfig(r=16,
  lora_alpha=16, lora_dropout=0.05, target_modules=find_all_linear_names(model),
  init_lora_weights="gaussian")`; transformers `AdamW(model.parameters(), lr=args.lr)`
  (defaults: eps 1e-6, weight decay 0); `get_scheduler("linear", num_warmup_steps=0)` stepped
  per step in GA.py / NPO.py and once per epoch in GA_Difference.py / KL_Min.py (constant
  within the one epoch); `clip_grad_norm_` only under `--gradient_accumulation` (default
  off); `LLAVA_multimodal_Dataset` (image questions); collators label every non-pad token;
  KL_Min `reduction='batchmean'`, passes forget then retain; NPO `--beta 0.4` with the oracle
  and batch-mean NLLs.
- Z1zs/MMUnlearner `README.md` (`MLLMU_manifold.py ... --batch_size 4 --lr 1e-5
  --num_epochs 1`) and `baselines/MLLMU_manifold.py::main` (clip 1.0, linear scheduler
  stepped per epoch, the official mask and order).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxunlearn import session
from jaxunlearn.config import load_config
from jaxunlearn.methods.base import get_method, resolve_options
from jaxunlearn.train import lora as lora_lib

ROOT = Path(__file__).resolve().parents[1] / "configs"
FAMILIES = ("llava-1.5-7b", "qwen2-vl-7b")

MLLMU_TRAIN = {"lora": True, "lora_rank": 16, "lora_alpha": 16.0, "lora_dropout": 0.05,
               "lora_init": "gaussian", "lora_targets": lora_lib.DEFAULT_TARGETS,
               "lr": 2e-5, "batch_size": 4, "epochs": 1, "warmup_steps": 0,
               "weight_decay": 0.0, "adam_eps": 1e-6, "clip_norm": None, "grad_accum": 1,
               "max_steps": 0}
MLLMU_OPTS = {"modality": "multi", "label_scope": "all_tokens", "mask": None}
PUBLISHED = {
    "ga": ({**MLLMU_TRAIN, "schedule": "linear"}, MLLMU_OPTS),
    "grad_diff": ({**MLLMU_TRAIN, "schedule": "constant"},
                  {**MLLMU_OPTS, "order": "alternate", "gamma": 1.0, "alpha": 1.0}),
    "kl_min": ({**MLLMU_TRAIN, "schedule": "constant"},
               {**MLLMU_OPTS, "order": "alternate", "kl_reduction": "batchmean"}),
    "npo": ({**MLLMU_TRAIN, "schedule": "linear"},
            {**MLLMU_OPTS, "form": "batch_mean", "reference": "oracle", "beta": 0.4,
             "retain_weight": 0.0}),
    "mmunlearner": ({"lr": 1e-5, "batch_size": 4, "epochs": 1, "schedule": "constant",
                     "warmup_steps": 0, "weight_decay": 0.0, "adam_eps": 1e-6,
                     "clip_norm": 1.0, "grad_accum": 1, "max_steps": 0},
                    {"modality": "multi", "label_scope": "all_tokens",
                     "formulation": "official", "fisher_threshold": 1.0,
                     "forget_weight": 1.0, "ascent_every": 0, "saliency": "fisher"}),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", sorted(PUBLISHED))
def test_preset_sets_every_published_setting(method, family):
    cfg = load_config(ROOT / f"{method}-mllmu-{family}.yaml")
    assert cfg["method"]["name"] == method
    spec = get_method(method)
    opts = resolve_options(spec, cfg["method"]["options"])
    tcfg = session.train_config(cfg)
    train, options = PUBLISHED[method]
    for k, v in train.items():
        assert getattr(tcfg, k) == v, f"train.{k}"
    for k, v in options.items():
        assert getattr(opts, k) == v, f"method.options.{k}"
    lcfg = tcfg.lora_config()  # the LoRA settings construct (dropout is supported)
    if tcfg.lora:
        assert (lcfg.rank, lcfg.scale, lcfg.dropout, lcfg.init) == (16, 1.0, 0.05, "gaussian")


def test_train_remat_defaults_to_the_model_presets():
    """`train.remat: null` (the default) takes the model preset's `remat` for a run that
    trains; a value set in `train:` wins; a method that does not train leaves it unset, so
    `run_method`'s check of unused train keys still refuses an explicit one."""
    from jaxunlearn.methods.base import run_method

    def cfg(preset, *extra):
        return load_config(None, [f"model.preset={preset}", *extra])

    assert session.train_config(cfg("llava-1.5-7b")).remat is True
    assert session.train_config(cfg("tiny-llava")).remat is False
    assert session.train_config(cfg("llava-1.5-7b", "train.remat=false")).remat is False
    assert session.train_config(cfg("llava-1.5-7b"), trains=False).remat is None
    with pytest.raises(ValueError, match="train.remat has no effect"):
        run_method("manu", None, None, train=session.train_config(
            cfg("tiny-llava", "train.remat=true"), trains=False))
