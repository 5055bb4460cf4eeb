"""Typed configs: frozen dataclasses whose fields carry their documentation.

Every config section with fixed keys (`train:`, each method's `method.options`, `eval:`) is a
frozen dataclass; a field's `metadata` holds `help` (one line of documentation) and, for
enumerations, `choices`. From the dataclass come the defaults (`defaults`), the validation of
a user mapping (`build`: an unknown key names the closest valid one, a wrong type names the
key, the expected type and the value) and the documentation (`describe`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def field(default: Any, help: str, *, choices: tuple | None = None,
          low: float | None = None, above: float | None = None,
          high: float | None = None) -> Any:
    """A dataclass field with its documentation (and allowed values for enumerations; `low`:
    inclusive minimum, `above`: exclusive minimum, `high`: inclusive maximum of a number)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if low is not None:
        meta["low"] = low
    if above is not None:
        meta["above"] = above
    if high is not None:
        meta["high"] = high
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def defaults(cls: type) -> dict[str, Any]:
    """`{field: default}` of a config dataclass (a fresh copy of mutable defaults)."""
    return {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}


def describe(cls: type) -> dict[str, dict[str, Any]]:
    """`{field: {default, type, help, choices}}` (the documentation of a section)."""
    hints = _hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = {"default": getattr(cls(), f.name), "type": _type_name(hints[f.name]),
                       "help": f.metadata.get("help", ""),
                       **({"choices": list(f.metadata["choices"])}
                          if "choices" in f.metadata else {})}
    return out


def closest_hint(key: str, options) -> str:
    close = difflib.get_close_matches(key, sorted(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(options))}"


def build(cls: type[T], values: Mapping[str, Any] | T | None, where: str) -> T:
    """An instance of `cls` from a mapping of overrides (validated) or an instance.

    `where` prefixes error messages (`train`, `method.options`)."""
    if values is None:
        return cls()
    if isinstance(values, cls):
        return values
    if dataclasses.is_dataclass(values):
        values = dataclasses.asdict(values)
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    kw = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown key {where}.{key}{closest_hint(key, names)}")
        meta = names[key].metadata
        kw[key] = check_value(f"{where}.{key}", value, hints[key], meta.get("choices"),
                              low=meta.get("low"), above=meta.get("above"),
                              high=meta.get("high"))
    return cls(**kw)


def check_value(where: str, value: Any, tp: Any, choices: tuple | None = None, *,
                low: float | None = None, above: float | None = None,
                high: float | None = None) -> Any:
    """`value` coerced to `tp` (int -> float, YAML strings of numbers) or one clear error
    (also for NaN and for numbers below `low` / not above `above`)."""
    out = _coerce(where, value, tp)
    if isinstance(out, float) and out != out:
        raise ValueError(f"{where}: expected a number, got NaN")
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        if low is not None and out < low:
            raise ValueError(f"{where}: {out!r} is out of range; it must be >= {low}")
        if above is not None and not out > above:
            raise ValueError(f"{where}: {out!r} is out of range; it must be > {above}")
        if high is not None and out > high:
            raise ValueError(f"{where}: {out!r} is out of range; it must be <= {high}")
    if choices is not None and out is not None and out not in choices:
        close = difflib.get_close_matches(str(out), [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{where}: {out!r} is not one of {', '.join(map(str, choices))}{hint}")
    return out


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
        return f"{origin.__name__}[{args}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _article(name: str) -> str:
    return "an" if name[:1] in "aeiou" else "a"


def _coerce(where: str, value: Any, tp: Any) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(where, value, a)
            except ValueError as e:
                errors.append(e)
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(where, v, inner) for v in value]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected a bool (true / false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{where}: expected an int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected a float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {_article(tp.__name__)} {tp.__name__}, got {value!r}")
    return value
