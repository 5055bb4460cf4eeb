"""Host memory setting for CPU runs: keep freed memory for reuse instead of unmapping it.

XLA:CPU allocates the temporaries of every execution afresh (a 106 MiB block for the demo's
train step, ~750 MiB for the ~50M benchmark's). glibc serves blocks that large with `mmap`
and unmaps them on free, so every execution pays one page fault per 4 KiB again: measured on
the 2-core CPU, 27k minor faults per demo train step (194 -> 137 ms per step without them)
and 191k faults, ~1 s of system time, per benchmark train step.

`reuse_freed_host_memory()` turns off `mmap` for large blocks and the trimming of the heap
top (`mallopt`), and dispatches CPU executions synchronously
(`jax_cpu_enable_async_dispatch=False`) so their temporaries are allocated on the calling
thread, i.e. from the main heap (glibc's per-thread heaps cannot hold blocks over 64 MiB and
map them regardless). Blocks freed by one execution are then reused by the next. Costs: the
process keeps its peak heap size (freed memory is not returned to the OS) and Python no
longer runs ahead of a CPU execution; this is why it applies only when no accelerator plugin
is installed, unless `JAXUNLEARN_HOST_MALLOC` says otherwise: `reuse` (always), `default`
(never), `auto` (the default). The CLI, the benchmark scripts and the test suite call it first
thing; torch, in the same process, gets the same allocator, so same-run comparisons stay like
for like.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")
_applied = False


def accelerator_plugin_installed() -> bool:
    """Whether a JAX GPU/TPU plugin is importable (then the host allocator is left alone)."""
    return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def reuse_freed_host_memory(mode: str | None = None) -> bool:
    """Apply the setting (see the module docstring); returns whether it is in effect.

    `mode`: `reuse`, `default` or `auto` (None: `$JAXUNLEARN_HOST_MALLOC`, else `auto`)."""
    global _applied
    mode = (mode or os.environ.get("JAXUNLEARN_HOST_MALLOC") or "auto").strip().lower()
    if mode not in ("reuse", "default", "auto"):
        raise ValueError(f"JAXUNLEARN_HOST_MALLOC={mode!r} is not one of reuse, default, auto")
    if _applied:
        return True
    if mode == "default" or not sys.platform.startswith("linux"):
        return False
    if mode == "auto" and (accelerator_plugin_installed()
                           or (os.environ.get("JAX_PLATFORMS") or "cpu").split(",")[0] != "cpu"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in
             ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1)))
    if ok:
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)
    _applied = ok
    return ok
