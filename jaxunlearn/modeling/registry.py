"""model_type -> `Family` (config parser, module class, key table, conv shapes, host prep).

Each family registers here by name; its entry is built by `family()` in
`modeling/<family>/keys.py`, imported on first use."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from jaxunlearn.modeling.keys import KeyTable


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    parse_config: Callable[[dict], Any]
    module_cls: type
    keys: KeyTable
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


def _lazy(module: str, attr: str) -> Callable[[], Family]:
    def factory() -> Family:
        return getattr(importlib.import_module(module), attr)()

    return factory


register("llava", _lazy("jaxunlearn.modeling.llava.keys", "family"))
register("llava_onevision", _lazy("jaxunlearn.modeling.llava_onevision.keys", "family"))
register("qwen2_vl", _lazy("jaxunlearn.modeling.qwen_vl.keys", "family_qwen2_vl"))
register("qwen2_5_vl", _lazy("jaxunlearn.modeling.qwen_vl.keys", "family_qwen2_5_vl"))
