"""What every unlearning method shares: the data it reads, its result, and the registry.

A method is a function `(model, data, cfg) -> MethodResult` registered under a name with
its config defaults. `run_method` validates the config (unknown keys are an error naming the
closest valid key) and returns the edited model and a report.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from typing import Any, Callable, Sequence

from jaxunlearn.data.pipeline import PipelineConfig, make_dataset, make_mixed_dataset, qa_records
from jaxunlearn.data.schema import Profile


@dataclasses.dataclass
class UnlearnData:
    """The forget / retain people and how to turn their QA into batches."""

    tokenizer: Any
    pipeline: PipelineConfig
    forget: Sequence[Profile]
    retain: Sequence[Profile]
    # other profiles whose text-only QA a method may use (MMUnlearner's language mask)
    others: Sequence[Profile] = ()

    def records(self, which: str, modality: str | None = None) -> list[dict]:
        """Training-QA records of `forget`, `retain` or `others`, optionally one modality."""
        profiles = {"forget": self.forget, "retain": self.retain, "others": self.others}
        if which not in profiles:
            raise ValueError(f"unknown data part {which!r}; use forget, retain or others")
        if not profiles[which]:
            raise ValueError(f"this method needs {which} data but the {which} set is empty")
        return qa_records(profiles[which], self.pipeline.family, "train", modality)

    def dataset(self, records: list[dict], *, seed: int = 0, batch_size: int | None = None,
                shuffle: bool = True):
        """A grain dataset of batches (one modality per batch) for `records`."""
        cfg = dataclasses.replace(self.pipeline, seed=seed, shuffle=shuffle, num_epochs=1,
                                  batch_size=batch_size or self.pipeline.batch_size)
        modalities = {r["image"] is not None for r in records}
        if len(modalities) == 1:
            return make_dataset(records, self.tokenizer, cfg)
        return make_mixed_dataset(records, self.tokenizer, cfg)


@dataclasses.dataclass
class MethodResult:
    params: dict
    report: dict
    artifacts: dict = dataclasses.field(default_factory=dict)  # masks, scores (numpy)


MethodFn = Callable[[Any, UnlearnData, dict], MethodResult]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: MethodFn
    defaults: dict
    needs_retain: bool
    description: str


_METHODS: dict[str, MethodSpec] = {}


def register(name: str, defaults: dict, *, needs_retain: bool = True, description: str = ""):
    """Decorator registering a method function under `name` with its config defaults."""
    def wrap(fn: MethodFn) -> MethodFn:
        _METHODS[name] = MethodSpec(name, fn, dict(defaults), needs_retain,
                                    description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return wrap


def available() -> list[str]:
    _import_all()
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    _import_all()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, sorted(_METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {name!r}{hint} (available: {', '.join(sorted(_METHODS))})")
    return _METHODS[name]


def resolve_config(spec: MethodSpec, overrides: dict | None) -> dict:
    cfg = dict(spec.defaults)
    for key, value in (overrides or {}).items():
        if key not in cfg:
            close = difflib.get_close_matches(key, sorted(cfg), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown config key {key!r} for method {spec.name!r}{hint}")
        cfg[key] = value
    return cfg


def run_method(name: str, model, data: UnlearnData, overrides: dict | None = None):
    """Run a registered method; returns (edited model, report, artifacts)."""
    spec = get_method(name)
    cfg = resolve_config(spec, overrides)
    if spec.needs_retain and not data.retain:
        raise ValueError(f"method {name!r} needs retain data, but the retain set is empty")
    t0 = time.perf_counter()
    result = spec.fn(model, data, cfg)
    report = {"method": name, "config": cfg, "seconds": time.perf_counter() - t0,
              **result.report}
    return model.replace(params=result.params), report, result.artifacts


def _import_all() -> None:
    """Import the method modules so their `register` calls run."""
    import importlib
    import pkgutil

    import jaxunlearn.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base",):
            importlib.import_module(f"jaxunlearn.methods.{info.name}")
