"""The key-table type: per-family maps between jaxunlearn parameter paths and HF keys.

Each family defines its table in its own folder (`modeling/<family>/keys.py`); the
checkpoint layer uses them through `modeling.registry`.

One table per family serves import and export. A table is an ordered list of
`(our_prefix, hf_prefix)` pairs for the layout current `transformers` writes, plus a list
of legacy renames `(regex, replacement)` turning keys of the older Hub layout into the
current one. Leaf conversion is generic:

- `*.kernel` (ours [in, out]) <-> `*.weight` (torch [out, in]); a conv patch kernel
  (torch [D, C, (T,) P, P]) is flattened to [C*(T*)P*P, D].
- every other leaf (`weight`, `bias`, `class_embedding`, ...) keeps its name and layout.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np


@dataclasses.dataclass(frozen=True)
class KeyTable:
    prefixes: tuple[tuple[str, str], ...]
    legacy: tuple[tuple[str, str], ...] = ()
    # HF keys that are buffers or otherwise carry no parameter: ignored on import
    ignored: tuple[str, ...] = (r"\.position_ids$", r"rotary_emb\.inv_freq$")
    # our module prefix -> module name in the transformers in-memory model (PEFT adapters)
    modules: tuple[tuple[str, str], ...] = ()

    def module_name(self, ours: str) -> str:
        """Our module path (no leaf) -> the HF in-memory module name."""
        for prefix, theirs in self.modules:
            if ours.startswith(prefix):
                return theirs + ours[len(prefix):]
        raise KeyError(f"no HF module name rule for {ours!r}")

    def to_hf(self, path: str) -> str:
        """Our dotted path -> current HF key."""
        for ours, theirs in self.prefixes:
            if path.startswith(ours):
                rest = path[len(ours):]
                if rest.endswith(".kernel") or rest == "kernel":
                    rest = rest[: -len("kernel")] + "weight"
                return theirs + rest
        raise KeyError(f"no HF key rule for parameter {path!r}")

    def canonical(self, hf_key: str) -> str:
        """Any accepted HF key (legacy or current) -> the current HF key."""
        for pattern, repl in self.legacy:
            new, n = re.subn(pattern, repl, hf_key)
            if n:
                return new
        return hf_key

    def is_ignored(self, hf_key: str) -> bool:
        return any(re.search(p, hf_key) for p in self.ignored)


def to_ours(path: str, array: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
    """Convert an HF tensor to our layout for parameter `path` of shape `our_shape`."""
    if path.endswith("kernel"):
        if array.ndim == 2:
            return array.T
        return array.reshape(array.shape[0], -1).T  # conv patch kernel
    return array


def to_hf(path: str, array: np.ndarray, hf_shape: tuple[int, ...] | None) -> np.ndarray:
    """Convert our array back to the HF layout (`hf_shape` needed for conv kernels)."""
    if path.endswith("kernel"):
        out = array.T
        if hf_shape is not None and tuple(hf_shape) != out.shape:
            out = out.reshape(hf_shape)
        return np.ascontiguousarray(out)
    return array


def expected_hf_shape(path: str, our_shape: tuple[int, ...],
                      conv_shapes: dict[str, tuple]) -> tuple:
    """The HF tensor shape corresponding to our parameter."""
    if path in conv_shapes:
        return tuple(conv_shapes[path])
    if path.endswith("kernel"):
        return tuple(reversed(our_shape))
    return tuple(our_shape)
