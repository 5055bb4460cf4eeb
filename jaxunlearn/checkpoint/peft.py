"""Export a LoRA adapter as a PEFT adapter directory for the HF model of any family.

The adapter is the flat pytree of `train.lora` (`<module>.lora_a` [in, r], `<module>.lora_b`
[r, out] for each target kernel `<module>.kernel`). PEFT names a target by its module path in
the `transformers` in-memory model, which each family's key table gives
(`KeyTable.module_name`): tensors are written as
`base_model.model.<hf module>.lora_A.weight` [r, in] and `...lora_B.weight` [out, r].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np
from safetensors.numpy import save_file

from jaxunlearn.checkpoint.atomic import atomic_directory
from jaxunlearn.modeling import registry
from jaxunlearn.modeling.model import Model


class LoraSettings(Protocol):
    """What the export needs of a LoRA config (`train.lora.LoraConfig` has it)."""

    rank: int
    alpha: float
    dropout: float


def peft_tensors(lora: Mapping[str, object], model: Model) -> tuple[dict[str, np.ndarray],
                                                                    list[str]]:
    """({PEFT tensor name: array in torch layout}, [HF module names]) for an adapter."""
    fam = registry.family_for(model.hf_config.get("model_type"))
    tensors, modules = {}, []
    a_keys = sorted(k for k in lora if k.endswith(".lora_a"))
    if not a_keys:
        raise ValueError("the LoRA adapter holds no `*.lora_a` arrays; pass the lora.npz that "
                         "`finetune` / `unlearn` write with LoRA enabled")
    for a in a_keys:
        ours = a[: -len(".lora_a")]
        b = ours + ".lora_b"
        if b not in lora:
            raise ValueError(f"the LoRA adapter has {a!r} but no {b!r}")
        try:
            module = fam.keys.module_name(ours)
        except KeyError as e:
            raise ValueError(f"LoRA target {ours!r} has no HF module name in the "
                             f"{fam.name} key table; PEFT export cannot name it") from e
        modules.append(module)
        prefix = f"base_model.model.{module}"
        tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(np.asarray(lora[a], np.float32).T)
        tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(np.asarray(lora[b], np.float32).T)
    return tensors, modules


def save_peft_adapter(lora: Mapping[str, object], cfg: LoraSettings, model: Model,
                      out_dir: str | Path) -> Path:
    """Write a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`)
    that `peft.PeftModel.from_pretrained(hf_model, out_dir)` loads onto the HF model of
    `model`'s family (llava, llava_onevision, qwen2_vl, qwen2_5_vl). The config records the
    trained LoRA dropout (peft applies it only in training mode, so inference is unchanged)."""
    tensors, modules = peft_tensors(lora, model)
    config = {
        "peft_type": "LORA", "r": int(cfg.rank), "lora_alpha": float(cfg.alpha),
        "lora_dropout": float(cfg.dropout), "target_modules": modules, "bias": "none", "fan_in_fan_out": False,
        "init_lora_weights": True, "inference_mode": True, "task_type": None,
        "base_model_name_or_path": model.source_dir, "modules_to_save": None,
        "use_rslora": False, "use_dora": False,
    }
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out_dir
