"""model_type -> (family name, config parser, module class, key table, conv shapes)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxunlearn.checkpoint import mapping


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    parse_config: Callable[[dict], Any]
    module_cls: type
    keys: mapping.KeyTable
    conv_shapes: Callable[[Any], dict[str, tuple]]  # our path -> torch conv weight shape
    hf_architecture: str
    # optional host-side (numpy) preparation of model inputs, e.g. M-RoPE position ids and
    # patch padding to buckets: (config, inputs dict of numpy arrays) -> inputs dict
    host_prepare: Callable[[Any, dict], dict] | None = None


_FAMILIES: dict[str, Callable[[], Family]] = {}


def register(model_type: str, factory: Callable[[], Family]) -> None:
    """Register a family lazily (the factory imports the modeling code on first use)."""
    _FAMILIES[model_type] = factory


def supported_model_types() -> list[str]:
    return sorted(_FAMILIES)


def family_for(model_type: str, where: str = "config.json") -> Family:
    if model_type not in _FAMILIES:
        raise ValueError(f"unsupported model_type {model_type!r} in {where}; supported: "
                         f"{', '.join(supported_model_types())}")
    return _FAMILIES[model_type]()


def _llava() -> Family:
    from jaxunlearn.modeling.llava import LlavaConfig, LlavaForConditionalGeneration

    def conv(c: LlavaConfig) -> dict:
        v = c.vision
        return {"vision_tower.embeddings.patch_embedding.kernel":
                (v.hidden_size, v.num_channels, v.patch_size, v.patch_size)}

    return Family("llava", LlavaConfig.from_hf, LlavaForConditionalGeneration, mapping.LLAVA,
                  conv, "LlavaForConditionalGeneration")


register("llava", _llava)


def _lazy(module: str, attr: str) -> Callable[[], Family]:
    def factory() -> Family:
        import importlib

        return getattr(importlib.import_module(module), attr)()

    return factory


register("qwen2_vl", _lazy("jaxunlearn.modeling.qwen_vl", "family_qwen2_vl"))
register("qwen2_5_vl", _lazy("jaxunlearn.modeling.qwen_vl", "family_qwen2_5_vl"))
register("llava_onevision", _lazy("jaxunlearn.modeling.llava_onevision", "family"))
