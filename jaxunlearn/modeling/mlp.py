"""Where every MLP's neurons live in a flat parameter dict, per group (`language`, `vision`).

A neuron is one channel of an MLP hidden layer: a column of the input projections
(`gate_proj` and `up_proj` of gated MLPs, `fc1` of CLIP / SigLIP / Qwen2-VL vision MLPs) and
the matching row of the output projection (`down_proj` / `fc2`). The same parameter names
serve every family: LLaVA (`vision_tower.encoder.layers.N.mlp`, CLIP), LLaVA-OneVision
(`vision_tower.encoder.layers.N.mlp`, SigLIP), Qwen2-VL (`visual.blocks.N.mlp.fc1/fc2`) and
Qwen2.5-VL (`visual.blocks.N.mlp.gate_proj/up_proj/down_proj`); the language model is
`language_model.layers.N.mlp` everywhere. Used by neuron statistics and neuron pruning.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

Params = Mapping[str, Any]

GROUPS = ("language", "vision")

_LANG_MLP = re.compile(r"^(language_model\.layers\.(\d+)\.mlp)\.down_proj\.kernel$")
_VIS_MLP = re.compile(r"^((?:vision_tower\.encoder\.layers|visual\.blocks)\.(\d+)\.mlp)"
                      r"\.(fc2|down_proj)\.kernel$")


@dataclasses.dataclass(frozen=True)
class MLPSite:
    """Where one MLP's neurons live: input projections ([D, N] kernels) and the output one."""

    prefix: str                  # e.g. language_model.layers.3.mlp
    inputs: tuple[str, ...]      # (gate_proj, up_proj) or (fc1,)
    output: str                  # down_proj or fc2
    width: int                   # N, the number of neurons


def mlp_layout(params: Params, family: str | None = None) -> dict[str, list[MLPSite]]:
    """The MLP layers of every group, in layer order, found from the parameter paths (the
    same names serve LLaVA, OneVision and Qwen-VL; `family` is accepted for symmetry)."""
    out: dict[str, dict[int, MLPSite]] = {g: {} for g in GROUPS}
    for path, value in params.items():
        if m := _LANG_MLP.match(path):
            out["language"][int(m.group(2))] = MLPSite(m.group(1), ("gate_proj", "up_proj"),
                                                       "down_proj", int(value.shape[0]))
        elif m := _VIS_MLP.match(path):
            ins = ("fc1",) if m.group(3) == "fc2" else ("gate_proj", "up_proj")
            out["vision"][int(m.group(2))] = MLPSite(m.group(1), ins, m.group(3),
                                                     int(value.shape[0]))
    layout = {}
    for g, layers in out.items():
        if layers and sorted(layers) != list(range(len(layers))):
            raise ValueError(f"{g} MLP layers are not numbered 0..{len(layers) - 1}")
        layout[g] = [layers[i] for i in range(len(layers))]
    if not layout["language"] and not layout["vision"]:
        raise ValueError("no MLP layer found in these parameters (family "
                         f"{family!r}); expected language_model.layers.N.mlp.* paths")
    return layout


def group_shapes(params: Params) -> dict[str, tuple[int, int]]:
    """{group: (layers, neurons)} for the groups this model has (uniform width required)."""
    shapes = {}
    for g, sites in mlp_layout(params).items():
        if not sites:
            continue
        widths = {s.width for s in sites}
        if len(widths) != 1:
            raise ValueError(f"{g} MLPs have different widths {sorted(widths)}")
        shapes[g] = (len(sites), widths.pop())
    return shapes


def linear_shapes(params: Params) -> dict[str, tuple[int, int]]:
    """{"<group>.<linear>": (layers, output channels)} for every Linear of every group's MLPs
    (`language.gate_proj`, `language.down_proj`, `vision.fc1`, ...): the shapes of per-Linear
    output-channel masks (MANU `formulation: official`)."""
    shapes = {}
    for g, sites in mlp_layout(params).items():
        for name in (*sites[0].inputs, sites[0].output) if sites else ():
            widths = {int(params[f"{s.prefix}.{name}.kernel"].shape[1]) for s in sites}
            if len(widths) != 1:
                raise ValueError(f"{g} {name} layers have different widths {sorted(widths)}")
            shapes[f"{g}.{name}"] = (len(sites), widths.pop())
    return shapes


def mask_shapes(params: Params) -> dict[str, tuple[int, int]]:
    """The shape of every neuron-mask key this model accepts: groups (`group_shapes`) and
    per-Linear keys (`linear_shapes`)."""
    return {**group_shapes(params), **linear_shapes(params)}
