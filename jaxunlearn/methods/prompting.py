"""Prompting baseline: no training; the evaluator adds a privacy system prompt."""

from __future__ import annotations

from jaxunlearn.data.templates import PROMPTING_SYSTEM
from jaxunlearn.methods.base import MethodResult, UnlearnData, register


@register("prompting", {"system_prompt": PROMPTING_SYSTEM}, needs_retain=False)
def prompting(model, data: UnlearnData, cfg: dict) -> MethodResult:
    """Return the parameters unchanged and the system prompt to evaluate with."""
    prompt = cfg["system_prompt"] or PROMPTING_SYSTEM
    return MethodResult(dict(model.params),
                        {"steps": 0, "losses": [], "seconds": 0.0, "trainable_params": 0,
                         "system_prompt": prompt},
                        {"system_prompt": prompt})
