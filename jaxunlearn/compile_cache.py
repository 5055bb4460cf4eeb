"""The CLI's persistent XLA compilation cache and compile log.

`JAXUNLEARN_COMPILE_CACHE`: `off` disables the cache; a directory path uses it; unset, the
cache lives in `$XDG_CACHE_HOME/jaxunlearn/xla` (`~/.cache/jaxunlearn/xla`). Every program is
cached, however small or quick to compile (JAX's default skips programs compiled in under a
second), so a rerun of a command compiles nothing it compiled before.

`JAXUNLEARN_COMPILE_CACHE_MAX_GB` (default 20) bounds the cache: past it, the least recently
used programs are evicted. The bound also turns on JAX's file lock around every cache read and
write, so several processes on one host (a multi-process run) never read a half-written entry.
Each write then lists the directory to size it, which costs time in a cache of many thousands
of small programs (the test suite's); `unlimited` turns bound and lock off (JAX warns about an
unreadable entry and compiles the program instead).

`JAXUNLEARN_COMPILE_LOG=FILE` appends one JSON line per XLA compile (`event`: JAX's
`/jax/core/compile/backend_compile_duration`, which on a cache hit measures the cache read;
`fun_name`; `seconds`) and one per cache hit (`/jax/compilation_cache/cache_hits`): what
`jaxunlearn` spent compiling, independent of wall time.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

CACHE_ENV = "JAXUNLEARN_COMPILE_CACHE"
MAX_ENV = "JAXUNLEARN_COMPILE_CACHE_MAX_GB"
DEFAULT_MAX_GB = 20.0
LOG_ENV = "JAXUNLEARN_COMPILE_LOG"
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"

_configured = False
_lock = threading.Lock()


def cache_dir() -> Path | None:
    """The cache directory `JAXUNLEARN_COMPILE_CACHE` asks for (None: off)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxunlearn" / "xla"


def max_bytes() -> int:
    """The cache's size bound in bytes, from `JAXUNLEARN_COMPILE_CACHE_MAX_GB` (a number of
    GiB > 0, default 20; `unlimited`: -1, no bound and no lock)."""
    value = os.environ.get(MAX_ENV, "").strip()
    if not value:
        return int(DEFAULT_MAX_GB * 2**30)
    if value.lower() == "unlimited":
        return -1
    try:
        gb = float(value)
    except ValueError:
        gb = float("nan")
    if not gb > 0 or gb == float("inf"):
        raise ValueError(f"{MAX_ENV}={value!r} is not a size in GiB; set a number > 0 (e.g. "
                         f"{MAX_ENV}=20) or unlimited, or {CACHE_ENV}=off to run without "
                         "the cache")
    return max(1, int(gb * 2**30))


def configure() -> Path | None:
    """Turn on the persistent cache and the compile log as the environment says (once per
    process, before the first compile); returns the cache directory or None."""
    global _configured
    import jax

    if _configured:
        return cache_dir()
    limit = max_bytes()  # checked even with the cache off: a bad setting is never ignored
    _configured = True
    log = os.environ.get(LOG_ENV, "").strip()
    if log:
        _start_log(Path(log))
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{CACHE_ENV}: cannot create the compilation cache directory "
                         f"{path} ({e.strerror}); set {CACHE_ENV}=off or another directory") \
            from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", limit)  # LRU eviction + file lock
    # (-1: neither)
    return path


def _start_log(path: Path) -> None:
    import jax

    path.parent.mkdir(parents=True, exist_ok=True)

    def write(event: str, **fields) -> None:
        with _lock, open(path, "a") as f:
            f.write(json.dumps({"event": event, **fields}) + "\n")

    def on_duration(event: str, seconds: float, **kw) -> None:
        if event == BACKEND_COMPILE:
            write(event, fun_name=str(kw.get("fun_name", "")), seconds=seconds)

    def on_event(event: str, **kw) -> None:
        if event == CACHE_HIT:
            write(event)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)


def read_log(path: str | os.PathLike) -> dict:
    """Totals of a compile log: `compiles` (count), `seconds` (backend compile time, cache
    reads included) and `cache_hits`."""
    n, secs, hits = 0, 0.0, 0
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        if rec["event"] == BACKEND_COMPILE:
            n += 1
            secs += rec["seconds"]
        elif rec["event"] == CACHE_HIT:
            hits += 1
    return {"compiles": n, "seconds": secs, "cache_hits": hits}
