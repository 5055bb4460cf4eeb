"""Tests for jaxunlearn.eval.judge against a fake OpenAI-compatible server on loopback."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jaxunlearn.eval.judge import ENV_KEY, ENV_MODEL, ENV_URL, Judge, JudgeConfig
from jaxunlearn.eval.judge_prompts import PROMPTS, parse_score


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append({"path": self.path, "body": body,
                                 "auth": self.headers.get("Authorization")})
            status, content = srv.script.pop(0) if srv.script else srv.default
        if status != 200:
            payload = b'{"error": "boom"}'
        else:
            payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                           "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.requests, srv.script, srv.default = [], [], (200, "Score: 5")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _judge(url, **kw):
    kw = {"max_retries": 2, "backoff_base_s": 0.01, "timeout_s": 5.0, **kw}
    return Judge(JudgeConfig(base_url=url, model="judge-m", **kw))


def test_parse_score():
    assert parse_score("The answer is close. Score: 7", 1, 10) == 7
    assert parse_score("**Score:** 10", 1, 10) == 10
    assert parse_score("I'd say 8/10.", 1, 10) == 8
    assert parse_score("Score: 11. On reflection, 9", 1, 10) == 9
    assert parse_score("Score: 7.5", 1, 10) is None
    assert parse_score("Score: 0", 1, 10) is None
    assert parse_score("Score: 0", 0, 10) == 0
    assert parse_score("no idea", 0, 10) is None


def test_scores_are_parsed_and_request_is_openai_shaped(server):
    server.script = [(200, "Mostly right.\nScore: 8"), (200, "Score: 3"), (200, "score = 10")]
    judge = _judge(server.url, api_key="sekret")
    r1 = judge.factuality("Where was X born?", "Paris", "In Paris.")
    r2 = judge.fact_score("Where was X born?", "Paris", "I don't know.")
    r3 = judge.meaningful_score("Where was X born?", "Paris", "I don't know.")
    assert (r1.score, r2.score, r3.score) == (8, 3, 10)
    assert r1.error is None and not r1.cached and r1.metric == "factuality"
    assert len(server.requests) == 3
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer sekret"
    assert req["body"]["model"] == "judge-m" and req["body"]["temperature"] == 0
    assert "In Paris." in req["body"]["messages"][-1]["content"]
    assert "Score: N" in req["body"]["messages"][-1]["content"]


def test_retries_a_server_error(server):
    server.script = [(500, None), (200, "Score: 6")]
    result = _judge(server.url).fact_score("q", "r", "a")
    assert result.score == 6 and result.error is None
    assert len(server.requests) == 2


def test_gives_up_after_bounded_retries_and_does_not_retry_client_errors(server):
    server.default = (503, None)
    result = _judge(server.url, max_retries=2).fact_score("q", "r", "a")
    assert result.score is None and "HTTP 503" in result.error
    assert len(server.requests) == 3
    server.script = [(400, None)]
    result = _judge(server.url).fact_score("q2", "r", "a")
    assert result.score is None and "HTTP 400" in result.error
    assert len(server.requests) == 4


def test_connection_errors_are_retried_then_recorded():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = _judge(f"http://127.0.0.1:{port}/v1", max_retries=1)
    result = judge.meaningful_score("q", "r", "a")
    assert result.score is None and "connection error" in result.error
    assert judge.requests_sent == 2


def test_cache_makes_second_run_free(server, tmp_path):
    items = [("q1", "r1", "a1"), ("q2", "r2", "a2"), ("q3", "r3", "a3")]
    server.script = [(200, "Score: 2"), (200, "Score: 4"), (200, "Score: 9")]
    cache = tmp_path / "judge_cache.json"
    first = _judge(server.url, cache_path=str(cache)).score_many("factuality", items)
    assert [r.score for r in first] == [2, 4, 9]
    assert len(server.requests) == 3 and cache.is_file()
    second = _judge(server.url, cache_path=str(cache)).score_many("factuality", items)
    assert [r.score for r in second] == [2, 4, 9] and all(r.cached for r in second)
    assert len(server.requests) == 3  # zero new requests
    # another metric or another judge model is a different key
    _judge(server.url, cache_path=str(cache)).score("fact", *items[0])
    Judge(JudgeConfig(server.url, "other-m", cache_path=str(cache))).score("factuality",
                                                                            *items[0])
    assert len(server.requests) == 5


def test_unparsable_reply_is_a_recorded_failure_not_cached(server, tmp_path):
    server.default = (200, "I cannot grade this answer.")
    judge = _judge(server.url, cache_path=str(tmp_path / "c.json"))
    result = judge.factuality("q", "r", "a")
    assert result.score is None and result.error.startswith("unparsable:")
    assert result.raw == "I cannot grade this answer."
    judge.factuality("q", "r", "a")
    assert len(server.requests) == 2  # failures are retried on the next run, never cached


def test_min_interval_spaces_requests(server):
    judge = _judge(server.url, min_interval_s=0.1)
    start = time.monotonic()
    judge.score_many("fact", [("q", "r", str(i)) for i in range(3)])
    assert time.monotonic() - start >= 0.2
    assert len(server.requests) == 3


def test_from_env_or_config(monkeypatch):
    for var in (ENV_URL, ENV_MODEL, ENV_KEY, "JAXUNLEARN_JUDGE_CACHE"):
        monkeypatch.delenv(var, raising=False)
    assert Judge.from_env_or_config(None) is None
    assert Judge.from_env_or_config({"model": "m"}) is None
    judge = Judge.from_env_or_config({"url": "http://127.0.0.1:1/v1/", "model": "m",
                                      "max_retries": 0})
    assert judge.endpoint == "http://127.0.0.1:1/v1/chat/completions"
    monkeypatch.setenv(ENV_URL, "http://127.0.0.1:2")
    monkeypatch.setenv(ENV_MODEL, "env-m")
    monkeypatch.setenv(ENV_KEY, "sekret-key")
    judge = Judge.from_env_or_config({})
    assert judge.config.model == "env-m" and judge.config.api_key == "sekret-key"
    assert "sekret-key" not in repr(judge.config)
    assert Judge.from_env_or_config({"model": "cfg-m"}).config.model == "cfg-m"
    with pytest.raises(ValueError, match="unknown judge config key"):
        Judge.from_env_or_config({"modle": "m"})
    with pytest.raises(ValueError, match="unknown judge metric"):
        judge.score("nope", "q", "r", "a")
    assert set(PROMPTS) == {"factuality", "fact", "meaningful"}
