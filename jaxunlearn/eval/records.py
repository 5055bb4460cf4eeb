"""The result record: one number of an evaluation, with everything needed to place it.

A record is a plain dict::

    {"method": "ga", "set": "forget", "task": "classification", "modality": "multi",
     "metric": "accuracy", "value": 0.42, "n": 120}

plus two optional keys for curves: ``protocol`` (e.g. ``"sequential"``, ``"relearn"``;
absent/None means the main evaluation) and ``step`` (request index or relearning epoch).
Canonical names: sets ``forget``/``test``/``retain``/``celebrity``, tasks
``classification``/``generation``/``cloze``, modalities ``multi``/``text``; other names are
allowed (e.g. a generality benchmark) but only canonical ones appear in the main table.
Values are raw (accuracy as a fraction in [0, 1], ROUGE F in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real

SETS: tuple[str, ...] = ("forget", "test", "retain", "celebrity")
TASKS: tuple[str, ...] = ("classification", "generation", "cloze")
MODALITIES: tuple[str, ...] = ("multi", "text")

REQUIRED_KEYS: tuple[str, ...] = ("method", "set", "task", "modality", "metric", "value", "n")
OPTIONAL_KEYS: tuple[str, ...] = ("protocol", "step")


def make_record(method: str, set: str, task: str, modality: str, metric: str,
                value: float, n: int, protocol: str | None = None,
                step: int | None = None) -> dict:
    """A validated record; ``protocol``/``step`` are included only when given."""
    rec = {"method": method, "set": set, "task": task, "modality": modality,
           "metric": metric, "value": value, "n": n}
    if protocol is not None:
        rec["protocol"] = protocol
    if step is not None:
        rec["step"] = step
    return validate_record(rec)


def validate_record(rec: Mapping) -> dict:
    """A normalised copy of ``rec`` (plain float/int values) or ValueError (TypeError for a non-dict)."""
    if not isinstance(rec, Mapping):
        raise TypeError(f"a result record must be a dict, got {type(rec).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    extra = sorted(set(rec) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if missing or extra:
        raise ValueError(f"bad result record {dict(rec)!r}: missing {missing}, unknown "
                         f"{extra}; a record has {list(REQUIRED_KEYS)} and optionally "
                         f"{list(OPTIONAL_KEYS)}")
    out: dict = {}
    for key in ("method", "set", "task", "modality", "metric"):
        if not isinstance(rec[key], str) or not rec[key]:
            raise ValueError(f"record field {key!r} must be a non-empty string, got "
                             f"{rec[key]!r} in {dict(rec)!r}")
        out[key] = rec[key]
    value = rec["value"]
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"record value must be a finite number, got {value!r} in "
                         f"{dict(rec)!r}")
    out["value"] = float(value)
    for key in ("n", "step"):
        if key not in rec or (key == "step" and rec[key] is None):
            continue
        v = rec[key]
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 0:
            raise ValueError(f"record field {key!r} must be a non-negative integer, got "
                             f"{v!r} in {dict(rec)!r}")
        out[key] = int(v)
    if rec.get("protocol") is not None:
        if not isinstance(rec["protocol"], str) or not rec["protocol"]:
            raise ValueError(f"record protocol must be a non-empty string or None, got "
                             f"{rec['protocol']!r}")
        out["protocol"] = rec["protocol"]
    return out


def select(records: Iterable[Mapping], **criteria) -> list[Mapping]:
    """Records whose fields equal every criterion (a missing optional key counts as None)."""
    return [r for r in records if all(r.get(k) == v for k, v in criteria.items())]


def main_records(records: Iterable[Mapping]) -> list[Mapping]:
    """Records of the main evaluation (no protocol, no step)."""
    return [r for r in records if r.get("protocol") is None and r.get("step") is None]


def method_order(methods: Iterable[str], vanilla: str = "vanilla") -> list[str]:
    """Unique methods in first-seen order, with ``vanilla`` (and ``vanilla (run)``) first."""
    seen = list(dict.fromkeys(methods))
    is_vanilla = [m == vanilla or m.startswith(f"{vanilla} (") for m in seen]
    return ([m for m, v in zip(seen, is_vanilla) if v]
            + [m for m, v in zip(seen, is_vanilla) if not v])


def lookup(records: Sequence[Mapping], **criteria) -> float | None:
    """The single value matching ``criteria``; None if absent, ValueError if ambiguous."""
    values = {r["value"] for r in select(records, **criteria)}
    if len(values) > 1:
        raise ValueError(f"conflicting values {sorted(values)} for {criteria}; each "
                         "(method, set, task, modality, metric) must appear once")
    return values.pop() if values else None
