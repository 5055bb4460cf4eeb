"""The CLI's persistent XLA cache settings (`jaxunlearn/compile_cache.py`), each in a fresh
process: `configure` runs once per process, and this suite's processes have run it already."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import jax, jax.numpy as jnp
from jaxunlearn.compile_cache import configure
print(configure())
jax.jit(lambda x: x * 2 + 1)(jnp.arange(3.0)).block_until_ready()
print(jax.config.jax_compilation_cache_max_size)
"""


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXUNLEARN_COMPILE")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]),
                                         env.get("PYTHONPATH", "")])
    return {**env, **extra}


def test_the_cache_is_bounded_and_locked(tmp_path):
    """`JAXUNLEARN_COMPILE_CACHE_MAX_GB` becomes JAX's cache bound (default 20 GiB), which
    turns on LRU eviction and the file lock shared by the processes of one host: the entry
    is written beside its access time and the lock file; `unlimited` turns both off."""
    for i, (setting, expect) in enumerate(((None, 20 * 2**30), ("0.5", 2**29),
                                            ("unlimited", -1))):
        cache = tmp_path / f"cache{i}"
        extra = {} if setting is None else {"JAXUNLEARN_COMPILE_CACHE_MAX_GB": setting}
        run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                             env=_env(JAXUNLEARN_COMPILE_CACHE=str(cache), **extra),
                             timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split() == [str(cache), str(expect)]
        names = [p.name for p in cache.iterdir()]
        assert any(n.endswith("-cache") for n in names)
        bounded = expect > 0  # bound, eviction and lock come together
        assert (".lockfile" in names) == bounded
        assert any(n.endswith("-atime") for n in names) == bounded


@pytest.mark.parametrize("value", ["0", "lots"])
def test_a_bad_bound_is_one_error(value, tmp_path):
    """A bound that is not a positive number of GiB: exit 2, one `error:` line naming the
    variable and the fix, nothing written (checked even with the cache off)."""
    out = tmp_path / "bench"
    for cache in (str(tmp_path / "cache"), "off"):
        run = subprocess.run(
            [sys.executable, "-m", "jaxunlearn.cli", "data", "synth", "--out", str(out)],
            capture_output=True, text=True, timeout=300,
            env=_env(JAXUNLEARN_COMPILE_CACHE=cache, JAXUNLEARN_COMPILE_CACHE_MAX_GB=value))
        err = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(err) == 1, run.stderr
        assert err[0].startswith(f"error: JAXUNLEARN_COMPILE_CACHE_MAX_GB='{value}' is not a "
                                 "size in GiB; set a number > 0")
        assert not out.exists()
