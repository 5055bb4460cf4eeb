"""Test-wide settings: 8 fake CPU devices (set before JAX starts) and the fixtures' path."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_vanilla(tmp_path_factory):
    """Fine-tuned tiny LLaVA shared by the method and evaluation tests (see tiny_world.py)."""
    from tiny_world import finetuned_tiny

    return finetuned_tiny(tmp_path_factory)
