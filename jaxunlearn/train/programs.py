"""Compiled programs shared across runs: `CachedProgram` wraps a jitted function and keys its
executables by the lowered program, so runs whose steps trace to the same program (a sweep
over learning rates or epochs, whose numbers are runtime values) compile it once per process.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any, Callable

import jax
import numpy as np

# The most recently used compiled programs, at most MAX_PROGRAMS: a sweep reuses a handful,
# and each loaded executable holds host memory and memory mappings (a process that kept every
# program of a long session would exhaust the kernel's map limit and crash inside XLA).
MAX_PROGRAMS = 16
_PROGRAMS: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
COMPILES: collections.Counter = collections.Counter()  # XLA compiles per program name


def clear_program_cache() -> None:
    """Forget every compiled program of `CachedProgram` (and the compile counts)."""
    _PROGRAMS.clear()
    COMPILES.clear()


class CachedProgram:
    """A jitted function whose compiled executables are shared across instances: the key is
    the lowered program itself (its StableHLO text, the arguments' structure, shapes and
    dtypes, the output structure and the devices), so two runs whose steps trace to the same
    program (a sweep over learning rates, loss weights passed as runtime values, epochs ...)
    compile it once per process.

    Each new argument signature (tree structure, shapes, dtypes) is traced and lowered once
    per instance; XLA compiles only programs not seen before (`COMPILES[name]` counts them).
    """

    def __init__(self, jitted: Callable, name: str):
        self.jitted, self.name = jitted, name
        self._local: dict[tuple, Any] = {}

    def __call__(self, *args):
        sig = _signature(args)
        exe = self._local.get(sig)
        if exe is None:
            exe = self._local[sig] = self._compile(args, sig)
        return exe(*args)

    def _compile(self, args, sig: tuple) -> Any:
        lowered = self.jitted.lower(*args)
        text = lowered.as_text()
        devices = tuple(sorted(d.id for leaf in jax.tree.leaves(args[:1])
                               if isinstance(leaf, jax.Array) for d in leaf.sharding.device_set))
        # `sig`: arguments the program does not read are pruned from its text
        key = (self.name, hashlib.sha256(text.encode()).hexdigest(), sig,
               str(lowered.out_tree), devices)
        exe = _PROGRAMS.get(key)
        if exe is None:
            exe = _PROGRAMS[key] = lowered.compile()
            COMPILES[self.name] += 1
            while len(_PROGRAMS) > MAX_PROGRAMS:
                _PROGRAMS.popitem(last=False)  # the least recently used
        else:
            _PROGRAMS.move_to_end(key)
        return exe


def _signature(args) -> tuple:
    """Tree structure, shapes and dtypes of `args` (what a compiled program is specific to)."""
    leaves, tree = jax.tree.flatten(args)
    return (tree, tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__)),
                         getattr(x, "weak_type", False)) for x in leaves))
