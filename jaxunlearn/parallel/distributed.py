"""Several cooperating processes (JAX's multi-controller runtime): start-up, the primary
process, barriers, host copies of global arrays and results computed by the primary alone
(`from_primary`: the judge).

`initialize(timeout)` runs before the first JAX computation of every command (the CLI calls
it). It reads the launchers' environments:

- `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (the `local --processes N`
  launcher, the k8s indexed Job; `JOB_COMPLETION_INDEX` stands in for `JAX_PROCESS_ID`),
- SLURM with several tasks (`SLURM_NTASKS` > 1) or `JAXUNLEARN_MULTIHOST=1` (the TPU pod and
  SLURM launchers): JAX's own cluster detection (SLURM variables, TPU metadata).

CPU processes exchange data with gloo collectives. A process that cannot reach its peers
within `timeout` seconds stops with one error line (never runs alone). Once joined, every
process posts a heartbeat to the coordinator's key-value store; a process whose peer stops
posting for `timeout` seconds (killed, hung), ends with an error, or whose coordinator
cannot be reached, stops with one error line and exit status 3 (`watch_peers`), before
JAX's own heartbeat check (which would abort it a little later with a long log).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

_STATE: dict[str, Any] = {"initialized": False, "where": ""}
# orders the heartbeat's writes and `mark_finished`'s: a process's last word is its end status
_BEAT_LOCK = threading.Lock()


class DistributedError(RuntimeError):
    """The processes of a multi-process run could not start together."""


def cluster_env(environ: dict | None = None) -> dict | None:
    """What the environment asks for: None (one process), {'auto': True} (JAX's cluster
    detection) or {'coordinator', 'num_processes', 'process_id'}."""
    env = os.environ if environ is None else environ
    addr = env.get("JAX_COORDINATOR_ADDRESS")
    if addr:
        pid = env.get("JAX_PROCESS_ID", env.get("JOB_COMPLETION_INDEX"))
        nproc = env.get("JAX_NUM_PROCESSES")
        if pid is None or nproc is None:
            raise DistributedError(f"JAX_COORDINATOR_ADDRESS={addr} is set but "
                                   f"{'JAX_NUM_PROCESSES' if nproc is None else 'JAX_PROCESS_ID'}"
                                   " is not; set JAX_NUM_PROCESSES and JAX_PROCESS_ID (0..N-1)")
        try:
            n, i = int(nproc), int(pid)
        except ValueError as e:
            raise DistributedError(f"JAX_NUM_PROCESSES={nproc!r} / JAX_PROCESS_ID={pid!r} must "
                                   "be integers") from e
        if not 0 <= i < n:
            raise DistributedError(f"JAX_PROCESS_ID={i} is outside 0..{n - 1} "
                                   f"(JAX_NUM_PROCESSES={n})")
        return {"coordinator": addr, "num_processes": n, "process_id": i}
    if env.get("JAXUNLEARN_MULTIHOST") == "1" or int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return {"auto": True}
    return None


def initialize(timeout: float = 300.0) -> bool:
    """`jax.distributed.initialize()` when the environment names several processes (see the
    module docstring); True when it did. Call before any JAX computation."""
    if _STATE["initialized"]:
        return True
    want = cluster_env()
    if want is None:
        return False
    import jax

    timeout = max(float(timeout), 1.0)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kw: dict[str, Any] = {}
    if not want.get("auto"):
        kw = {"coordinator_address": want["coordinator"], "num_processes": want["num_processes"],
              "process_id": want["process_id"]}
        where = (f"process {want['process_id']} of {want['num_processes']} (coordinator "
                 f"{want['coordinator']})")
    else:
        where = "this process (cluster detected by JAX: SLURM / TPU)"
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(timeout):
            print(f"error: {where} could not reach all its peers within {timeout:g} s "
                  "(--distributed-timeout); check that every process was started with the same "
                  "JAX_NUM_PROCESSES and coordinator address, that process 0 runs and that its "
                  "port is reachable; stopped without running", file=sys.stderr, flush=True)
            os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        # JAX's own deadline comes later: the watchdog's one-line error wins
        jax.distributed.initialize(**kw, initialization_timeout=int(timeout) + 30,
                                   heartbeat_timeout_seconds=max(int(timeout), 2) + 10,
                                   shutdown_timeout_seconds=max(int(timeout), 2))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"{where} could not start: {' '.join(str(e).split())}") from e
    finally:
        done.set()
    _STATE.update(initialized=True, where=where)
    watch_peers(timeout)
    return True


_ALIVE = "jaxunlearn/alive/"


def _client():
    """JAX's client of the coordination service (key-value store, barriers): private API."""
    from jax._src import distributed as jax_distributed  # no public handle in jax 0.10

    return jax_distributed.global_state.client


def watch_peers(timeout: float) -> None:
    """Post this process's heartbeat to the coordinator every ~`timeout`/8 s and stop the
    process (one `error:` line, exit status 3) when a peer has posted nothing for `timeout`
    s, has ended with an error (`mark_finished`), or the coordinator has not answered for
    `timeout` s. A peer that finished cleanly is no longer watched."""
    import jax

    client, me, n = _client(), jax.process_index(), jax.process_count()
    period = max(min(timeout / 8, 1.0), 0.05)
    seen = {p: ("", time.monotonic()) for p in range(n) if p != me}
    last_ok = [time.monotonic()]

    resume = "rerun the same command on every host to resume from the last complete checkpoint"

    def stop(why: str, fix: str = resume) -> None:
        if "finished" in _STATE:  # this process is already on its way out
            return
        print(f"error: {_STATE['where']}: {why}; stopped ({fix})", file=sys.stderr, flush=True)
        os._exit(3)

    stopping = threading.Event()

    def beat() -> None:
        count = 0
        while not stopping.is_set():
            count += 1
            try:
                with _BEAT_LOCK:
                    if "finished" in _STATE:  # its end status is posted: never overwrite it
                        return
                    client.key_value_set(f"{_ALIVE}{me}", str(count), allow_overwrite=True)
                now = time.monotonic()
                for p in list(seen):
                    try:
                        value = client.key_value_try_get(f"{_ALIVE}{p}")
                    except Exception as e:  # not posted yet: counts as silence
                        if "NOT_FOUND" not in str(e).upper().replace(" ", "_"):
                            raise
                        value = ""
                    if value == "ok":
                        del seen[p]
                    elif value.startswith("failed"):
                        stop(f"process {p} of {n} ended with an error "
                             f"({value[len('failed: '):] or 'an uncaught exception'})",
                             f"fix the error in process {p}'s log, then {resume}")
                    elif value != seen[p][0]:
                        seen[p] = (value, now)
                    elif now - seen[p][1] > timeout:
                        stop(f"process {p} of {n} stopped responding (no heartbeat for "
                             f"{timeout:g} s, --distributed-timeout): it was killed or hangs")
                last_ok[0] = time.monotonic()
            except Exception:  # the coordinator (process 0) is gone: the monitor reports it
                pass
            stopping.wait(period)

    def monitor() -> None:
        while not stopping.wait(period):
            if time.monotonic() - last_ok[0] > timeout:
                stop(f"the coordinator (process 0) has not answered for {timeout:g} s "
                     "(--distributed-timeout): it was killed or hangs")

    threads = [threading.Thread(target=fn, daemon=True, name=f"jaxunlearn-{fn.__name__}")
               for fn in (beat, monitor)]
    for t in threads:
        t.start()

    def at_exit() -> None:
        # reached the end (the CLI says how it ends), then the watch threads stop and are
        # joined: a daemon thread still inside a coordination-service call when the
        # interpreter finalizes is ended by pthread_exit inside C++ and aborts the process
        # (SIGABRT, "FATAL: exception not rethrown") after its work is done
        mark_finished(0)
        stopping.set()
        for t in threads:
            t.join(timeout=max(2 * period, 5.0))

    hook = sys.excepthook

    def on_uncaught(*exc) -> None:  # the traceback first, then tell the peers and leave
        hook(*exc)
        mark_finished(None)

    sys.excepthook = on_uncaught
    atexit.register(at_exit)


def mark_finished(status: int | None) -> None:
    """Tell the peers how this process ends: 0 = cleanly (no longer watched), anything else
    (None: an uncaught exception) = with an error (they stop at once instead of waiting).
    A non-zero `status` then ends this process with it (None: with 1), since JAX's exit-time
    shutdown barrier would wait for, and abort on, peers that are stopping too."""
    if not _STATE["initialized"] or "finished" in _STATE:
        return
    # after the heartbeat's write in flight, if any (not forever: the coordinator may hang)
    locked = _BEAT_LOCK.acquire(timeout=5.0)
    try:
        _STATE["finished"] = status
        import jax

        value = "ok" if status == 0 else f"failed: exit status {status}" if status else "failed"
        _client().key_value_set(f"{_ALIVE}{jax.process_index()}", value, allow_overwrite=True)
    except Exception:  # the coordinator is gone already: the peers find out by themselves
        pass
    finally:
        if locked:
            _BEAT_LOCK.release()
    if status != 0:  # JAX's exit-time shutdown would wait for peers that stop now: leave now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if status is None else int(status))


def process_count() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """True in process 0 (the one that writes reports, exports and artifacts)."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (no-op with one process). It waits
    on the coordination service, without a deadline of its own (a CPU gloo collective would
    give up after 30 s, e.g. while process 0 exports a large model): a peer that dies or
    fails meanwhile stops the waiting processes through `watch_peers`."""
    import jax

    if jax.process_count() > 1:
        _STATE["barriers"] = _STATE.get("barriers", 0) + 1  # same order in every process
        _client().wait_at_barrier(f"jaxunlearn/{name}/{_STATE['barriers']}", 2**31 - 1)


def from_primary(fn: Callable[[], Any]) -> Any:
    """`fn()` computed by process 0 alone and its result (JSON-serialisable; JSON's types:
    tuples come back as lists) sent to every process, e.g. judge scores: each item is judged
    once, not once per process. With one process it is `fn()`. When `fn` raises in process 0,
    every process raises.

    The others wait on the coordination service's key-value store, not in a collective (CPU
    gloo collectives give up after 30 s, and a judge may take hours); a process 0 that dies
    or fails meanwhile stops them through `watch_peers`."""
    import jax

    if jax.process_count() == 1:
        return fn()
    client = _client()
    _STATE["from_primary"] = _STATE.get("from_primary", 0) + 1  # same order in every process
    key = f"jaxunlearn/from_primary/{_STATE['from_primary']}"
    if is_primary():
        try:
            payload = json.dumps({"value": fn()})
        except Exception as e:
            client.key_value_set(key, json.dumps({"error": f"{type(e).__name__}: {e}"}))
            raise
        client.key_value_set(key, payload)
    else:
        payload = client.blocking_key_value_get(key, 2**31 - 1)  # ms: ~24 days, no deadline
    got = json.loads(payload)
    if "error" in got:
        raise RuntimeError(f"process 0 failed: {got['error']}")
    return got["value"]


def to_host(tree: Any) -> Any:
    """Numpy copies of a tree's arrays in every process; arrays spread over several processes
    are gathered (`process_allgather`), so the result is the whole global value."""
    import jax

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable \
                and not x.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x

    return jax.tree.map(get, tree)


def local_arrays(tree: Any) -> Any:
    """`tree` usable by single-process code: with several processes, global arrays become
    host numpy arrays (gathered); with one process it is returned as is."""
    import jax

    if jax.process_count() == 1:
        return tree
    return to_host(tree)
