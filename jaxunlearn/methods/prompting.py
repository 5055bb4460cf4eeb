"""Prompting baseline: no training; the evaluator adds a privacy system prompt."""

from __future__ import annotations

import dataclasses

from jaxunlearn.data.templates import PROMPTING_SYSTEM
from jaxunlearn.methods.base import MethodOptions, MethodResult, UnlearnData, register
from jaxunlearn.train.typed import field


@dataclasses.dataclass(frozen=True)
class PromptingOptions(MethodOptions):
    system_prompt: str | None = field(PROMPTING_SYSTEM, "the system prompt evaluation uses "
                                      "(null: the default privacy prompt)")


@register("prompting", PromptingOptions, needs_retain=False, trains=False)
def prompting(model, data: UnlearnData, opts: PromptingOptions, tcfg) -> MethodResult:
    """Return the parameters unchanged and the system prompt to evaluate with."""
    prompt = opts.system_prompt or PROMPTING_SYSTEM
    return MethodResult(dict(model.params),
                        {"steps": 0, "losses": [], "trainable_params": 0,
                         "system_prompt": prompt})
