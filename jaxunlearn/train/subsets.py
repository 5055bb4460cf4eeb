"""Named trainable subsets, as boolean masks over the flat parameter dict.

Names: `all`, `llm` (decoder + head), `projector+llm`, `projector`, `vision` (vision tower
without the projector), `vision_mlp` (MLPs of the vision layers; `deeper_half=True` keeps
only the upper half of the layers), `projector+vision_mlp`. Paths cover every family:
LLaVA / OneVision (`vision_tower.*`, `multi_modal_projector.*`, `image_newline`) and
Qwen-VL (`visual.*`, with `visual.merger.*` as the projector).
"""

from __future__ import annotations

import re
from typing import Mapping

_LLM = re.compile(r"^(language_model|lm_head)\.")
_PROJECTOR = re.compile(r"^(multi_modal_projector\.|visual\.merger\.|image_newline$)")
_VISION = re.compile(r"^(vision_tower|visual)\.")
_VISION_MLP = re.compile(r"^(?:vision_tower\.encoder\.layers|visual\.blocks)\.(\d+)\.mlp\.")

SUBSETS = ("all", "llm", "projector", "projector+llm", "vision", "vision_mlp",
           "projector+vision_mlp")


def _vision_layers(paths) -> int:
    idx = [int(m.group(1)) for p in paths if (m := _VISION_MLP.match(p))]
    return max(idx) + 1 if idx else 0


def in_subset(path: str, subset: str, n_vision_layers: int, deeper_half: bool = False) -> bool:
    if subset == "all":
        return True
    parts = subset.split("+")
    for part in parts:
        if part == "llm" and _LLM.match(path):
            return True
        if part == "projector" and _PROJECTOR.match(path):
            return True
        if part == "vision" and _VISION.match(path) and not _PROJECTOR.match(path):
            return True
        if part == "vision_mlp" and (m := _VISION_MLP.match(path)):
            if not deeper_half or int(m.group(1)) >= n_vision_layers // 2:
                return True
    return False


def trainable_mask(params: Mapping[str, object], subset: str,
                   deeper_half: bool = False) -> dict[str, bool]:
    """{path: True if trainable}. Unknown names and subsets that select nothing are errors."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown trainable subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    n = _vision_layers(params)
    mask = {p: in_subset(p, subset, n, deeper_half) for p in params}
    if not any(mask.values()):
        raise ValueError(f"trainable subset {subset!r} selects no parameter of this model")
    return mask


def split_params(params: Mapping, mask: Mapping[str, bool]) -> tuple[dict, dict]:
    """(trainable, frozen) dicts; `{**frozen, **trainable}` rebuilds the full dict."""
    trainable = {k: v for k, v in params.items() if mask[k]}
    frozen = {k: v for k, v in params.items() if not mask[k]}
    return trainable, frozen


def dead_vision_layers(model) -> list[int]:
    """Vision-tower layers whose output never reaches the language model, so their parameters
    receive no gradient and their neurons no statistics.

    LLaVA and LLaVA-OneVision read the hidden states at `vision_feature_layer` (negative
    indices count from the end of the num_layers + 1 states: -1 = the last layer's output,
    -2 = the one before); every layer after the deepest selected state is never run (LLaVA-1.5
    with -2: the last CLIP layer). Their `post_layernorm` is unused too (hidden states are
    read before it; see `dead_vision_params`). Qwen-VL's merger reads the last block: none.
    Returns 0-based layer indices, ascending; [] for families without dead layers."""
    config = model.config
    layers = getattr(config, "feature_layers", None)
    if layers is None:  # Qwen-VL: every block feeds the patch merger
        return []
    n = int(config.vision.num_hidden_layers)
    deepest = max(int(layer) % (n + 1) for layer in layers)
    return list(range(deepest, n))


def dead_vision_params(model, paths=None) -> list[str]:
    """Parameter paths (of `paths`, default all of the model's) that provably receive no
    gradient: the layers of `dead_vision_layers` and the unused `post_layernorm` /
    attention-pooling head of LLaVA / OneVision vision towers."""
    dead = set(dead_vision_layers(model))
    if getattr(model.config, "feature_layers", None) is None:
        return []
    out = []
    for p in sorted(model.params if paths is None else paths):
        m = re.match(r"^vision_tower\.encoder\.layers\.(\d+)\.", p)
        if (m and int(m.group(1)) in dead) or re.match(r"^vision_tower\.(post_layernorm|head)\.",
                                                       p):
            out.append(p)
    return out
