"""The peer watch of multi-process runs (`jaxunlearn/parallel/distributed.py`) in one process,
against a fake coordination-service client: the end status is the process's last word, and
the watch threads are stopped and joined at exit (a daemon thread still inside a service call
when the interpreter finalizes aborts the process: SIGABRT, "FATAL: exception not rethrown")."""

from __future__ import annotations

import threading
import time

import jax

from jaxunlearn.parallel import distributed as D


class FakeClient:
    """Records every key-value write; the peer (process 1) always reports a fresh beat."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.n = 0

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None:
        with self.lock:
            self.writes.append((key, value))
        time.sleep(0.002)  # a call in flight, as over the network

    def key_value_try_get(self, key: str) -> str:
        self.n += 1
        return str(self.n)


def test_end_status_is_the_last_write_and_exit_joins_the_watch(monkeypatch):
    client, hooks = FakeClient(), []
    monkeypatch.setattr(D, "_STATE", {"initialized": True, "where": "process 0 of 2"})
    monkeypatch.setattr(D, "_client", lambda: client)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(D.atexit, "register", hooks.append)
    monkeypatch.setattr(D.sys, "excepthook", D.sys.excepthook)
    before = set(threading.enumerate())
    D.watch_peers(timeout=0.4)  # a beat every 0.05 s
    watch = [t for t in threading.enumerate() if t not in before]
    assert sorted(t.name for t in watch) == ["jaxunlearn-beat", "jaxunlearn-monitor"]
    deadline = time.monotonic() + 30
    while len(client.writes) < 3 and time.monotonic() < deadline:  # a few beats, however slow
        time.sleep(0.01)
    D.mark_finished(0)  # the CLI's last step
    beat = next(t for t in watch if t.name == "jaxunlearn-beat")
    beat.join(timeout=30)  # the heartbeat ends once the end status is posted
    assert not beat.is_alive()
    mine = [v for k, v in client.writes if k == "jaxunlearn/alive/0"]
    assert len(mine) >= 3 and mine[-1] == "ok" and mine.count("ok") == 1, mine
    assert mine[:-1] == [str(i) for i in range(1, len(mine))]
    assert len(hooks) == 1
    hooks[0]()  # what atexit runs before the interpreter finalizes
    assert not any(t.is_alive() for t in watch)
    assert [v for k, v in client.writes if k == "jaxunlearn/alive/0"] == mine
