"""`ga_klr`: -NLL(D_f) + lam * KL(p_ref || p_theta) on D_r (docs/methods.md), loss
`objectives.gradient.ga_kl` (through `kl_min.ga_kl_run`)."""

from __future__ import annotations

import dataclasses

from jaxunlearn.methods.base import MethodResult, UnlearnData, register
from jaxunlearn.methods.kl_min import KLMinOptions, ga_kl_run
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.typed import field


@dataclasses.dataclass(frozen=True)
class GaKlrOptions(KLMinOptions):
    kl_weight: float = field(1.0, "lambda: weight of KL(p_ref || p_theta) on D_r")


@register("ga_klr", GaKlrOptions)
def ga_klr(model, data: UnlearnData, opts: GaKlrOptions, tcfg: TrainConfig) -> MethodResult:
    """-NLL(D_f) + lam * KL(p_ref || p_theta) on D_r (PULSE's GA+KLR)."""
    return ga_kl_run(model, data, opts, tcfg, opts.kl_weight, "ga_klr")
