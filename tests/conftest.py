"""Test-wide settings: 8 fake CPU devices (set before JAX starts) and the fixtures' path."""

import os
import shutil
import sys
import tempfile

# 8 fake CPU devices for the mesh tests; backend optimisation level 0 compiles ~2.5x faster
# (the suite is compile-bound on tiny models; numerics stay fp32 and parity holds to 1e-4)
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one persistent XLA cache for this run (never the user's): made by the first process to load
# this file (pytest's main process), inherited by the xdist workers and the CLI subprocesses
# they start, so a program compiled by one is read by the others; removed at the end
_SUITE_CACHE = None
if "JAXUNLEARN_COMPILE_CACHE" not in os.environ:
    _SUITE_CACHE = tempfile.mkdtemp(prefix="jaxunlearn-suite-xla-")
    os.environ["JAXUNLEARN_COMPILE_CACHE"] = _SUITE_CACHE
    # thousands of small programs: a bounded cache lists the directory on every write, which
    # cost the suite 3 min (tests/test_compile_cache.py checks the bound and its lock)
    os.environ.setdefault("JAXUNLEARN_COMPILE_CACHE_MAX_GB", "unlimited")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

from jaxunlearn.compile_cache import configure as configure_compile_cache  # noqa: E402
from jaxunlearn.host_memory import reuse_freed_host_memory  # noqa: E402

reuse_freed_host_memory()  # the suite runs with the CLI's host memory setting
configure_compile_cache()  # in-process programs use the run's cache too, as the CLI's do


def pytest_unconfigure(config):
    if _SUITE_CACHE is not None:
        shutil.rmtree(_SUITE_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_vanilla(tmp_path_factory):
    """Fine-tuned tiny LLaVA shared by the method and evaluation tests (see tiny_world.py)."""
    from tiny_world import finetuned_tiny

    return finetuned_tiny(tmp_path_factory)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """After each test module, drop JAX's compiled executables (and `CachedProgram`'s): each
    loaded CPU executable keeps memory mappings, and a worker that kept every program of half
    the suite reached the kernel's map limit (vm.max_map_count 65530) and crashed in XLA."""
    yield
    import gc

    import jax

    from jaxunlearn.train.programs import clear_program_cache

    jax.clear_caches()
    clear_program_cache()
    gc.collect()
