"""A judge model behind any OpenAI-compatible chat endpoint (stdlib only).

Off unless configured: :meth:`Judge.from_env_or_config` returns None without a URL and a
model name. Requests go to ``POST {base_url}/chat/completions`` with
``{"model", "messages", "temperature": 0}``; transient failures (HTTP 429/5xx, connection
errors, timeouts) are retried with exponential backoff; requests are spaced by a minimum
interval; successful scores are cached on disk. A reply without a usable score is returned
as ``JudgeResult(score=None, error="unparsable: ...")``, never as a crash or a fake 0.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from jaxunlearn.eval._atomic import atomic_write_text
from jaxunlearn.eval.judge_prompts import PROMPTS, parse_score

ENV_URL = "JAXUNLEARN_JUDGE_URL"
ENV_MODEL = "JAXUNLEARN_JUDGE_MODEL"
ENV_KEY = "JAXUNLEARN_JUDGE_KEY"
ENV_CACHE = "JAXUNLEARN_JUDGE_CACHE"


@dataclass(frozen=True)
class JudgeConfig:
    """Where the judge lives and how politely to talk to it."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    cache_path: str | None = None      # JSON file; None disables the cache
    max_retries: int = 4               # retries after the first attempt
    backoff_base_s: float = 1.0        # delay before retry k is base * 2**k, capped
    backoff_max_s: float = 30.0
    min_interval_s: float = 0.0        # minimum time between request starts
    timeout_s: float = 60.0
    max_tokens: int | None = None      # omitted from the request when None


@dataclass(frozen=True)
class JudgeResult:
    """One judged item: a score, or None with the reason in ``error``."""

    metric: str
    score: int | None
    raw: str | None = None
    error: str | None = None
    cached: bool = False


class _Transient(Exception):
    """A failure worth retrying."""


class Judge:
    """Client for an OpenAI-compatible chat endpoint that scores answers."""

    def __init__(self, config: JudgeConfig):
        if not config.base_url or not config.model:
            raise ValueError("Judge needs base_url and model; set them in the config or "
                             f"via {ENV_URL} and {ENV_MODEL}")
        self.config = config
        self.endpoint = config.base_url.rstrip("/") + "/chat/completions"
        self._lock = threading.Lock()
        self._last_request = float("-inf")
        self._cache: dict[str, dict] = self._load_cache()
        self.requests_sent = 0

    # --- construction -----------------------------------------------------------------

    @classmethod
    def from_env_or_config(cls, cfg: Mapping | None = None) -> Judge | None:
        """A judge from ``cfg`` (keys as in :class:`JudgeConfig`, ``url`` also accepted),
        falling back to the ``JAXUNLEARN_JUDGE_*`` environment; None when not configured.
        """
        cfg = dict(cfg or {})
        if "url" in cfg:
            cfg.setdefault("base_url", cfg.pop("url"))
        known = {f.name for f in fields(JudgeConfig)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown judge config key(s) {unknown}; known: {sorted(known)}")
        for key, env in (("base_url", ENV_URL), ("model", ENV_MODEL), ("api_key", ENV_KEY),
                         ("cache_path", ENV_CACHE)):
            if not cfg.get(key) and os.environ.get(env):
                cfg[key] = os.environ[env]
        if not cfg.get("base_url") or not cfg.get("model"):
            return None
        return cls(JudgeConfig(**cfg))

    # --- public scoring -----------------------------------------------------------------

    def score(self, metric: str, question: str, reference: str, answer: str) -> JudgeResult:
        """Judge one answer under ``metric`` (``factuality``, ``fact`` or ``meaningful``)."""
        if metric not in PROMPTS:
            raise ValueError(f"unknown judge metric {metric!r}; choose from {sorted(PROMPTS)}")
        prompt = PROMPTS[metric]
        key = self.cache_key(metric, question, reference, answer)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return JudgeResult(metric, hit["score"], raw=hit.get("raw"), cached=True)
        try:
            raw = self._chat(prompt.messages(question, reference, answer))
        except RuntimeError as e:
            return JudgeResult(metric, None, error=str(e))
        value = parse_score(raw, prompt.low, prompt.high)
        if value is None:
            return JudgeResult(metric, None, raw=raw,
                               error=f"unparsable: no integer score in [{prompt.low}, "
                                     f"{prompt.high}] in reply {raw[:200]!r}")
        self._store(key, {"score": value, "raw": raw})
        return JudgeResult(metric, value, raw=raw)

    def factuality(self, question: str, reference: str, answer: str) -> JudgeResult:
        """Factuality 1-10 of ``answer`` against ``reference``."""
        return self.score("factuality", question, reference, answer)

    def fact_score(self, question: str, reference: str, answer: str) -> JudgeResult:
        """Fact score 0-10: how much of the reference's facts the answer reveals."""
        return self.score("fact", question, reference, answer)

    def meaningful_score(self, question: str, reference: str, answer: str) -> JudgeResult:
        """Meaningful score 0-10: fluent, relevant language regardless of correctness."""
        return self.score("meaningful", question, reference, answer)

    def score_many(self, metric: str, items: Iterable[tuple[str, str, str]]
                   ) -> list[JudgeResult]:
        """Judge ``(question, reference, answer)`` triples in order."""
        return [self.score(metric, q, r, a) for q, r, a in items]

    def cache_key(self, metric: str, question: str, reference: str, answer: str) -> str:
        """sha256 of judge URL + model, metric (with its prompt fingerprint) and the item."""
        parts = [self.endpoint, self.config.model, metric, PROMPTS[metric].fingerprint(),
                 question, reference, answer]
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()

    # --- transport ----------------------------------------------------------------------

    def _chat(self, messages: list[dict[str, str]]) -> str:
        """Reply text of one chat completion; RuntimeError once retries are exhausted."""
        body: dict = {"model": self.config.model, "messages": messages, "temperature": 0}
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        last = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(min(self.config.backoff_base_s * 2 ** (attempt - 1),
                               self.config.backoff_max_s))
            try:
                return self._post_once(data, headers)
            except _Transient as e:
                last = str(e)
        raise RuntimeError(f"judge request failed after {self.config.max_retries + 1} "
                           f"attempts: {last}")

    def _post_once(self, data: bytes, headers: dict[str, str]) -> str:
        self._wait_for_slot()
        request = urllib.request.Request(self.endpoint, data=data, headers=headers,
                                         method="POST")
        self.requests_sent += 1
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:200].decode("utf-8", "replace")
            if e.code == 429 or e.code >= 500:
                raise _Transient(f"HTTP {e.code}: {detail}") from e
            raise RuntimeError(f"judge request rejected: HTTP {e.code}: {detail}") from e
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets
            raise _Transient(f"connection error: {e}") from e
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"judge reply is not a chat completion: {payload[:200]!r}"
                               ) from e
        if isinstance(content, str):
            return content
        raise RuntimeError(f"judge reply has no text content: {payload[:200]!r}")

    def _wait_for_slot(self) -> None:
        """Sleep so request starts are at least ``min_interval_s`` apart."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._last_request + self.config.min_interval_s)
            self._last_request = start
        if start > now:
            time.sleep(start - now)

    # --- cache --------------------------------------------------------------------------

    def _load_cache(self) -> dict[str, dict]:
        path = self.config.cache_path
        if not path or not Path(path).exists():
            return {}
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"judge cache {path} is not valid JSON ({e}); delete it or "
                             "point cache_path elsewhere") from e
        if not isinstance(data, dict):
            raise TypeError(f"judge cache {path} must hold a JSON object")
        return data

    def _store(self, key: str, entry: dict) -> None:
        with self._lock:
            self._cache[key] = entry
            if self.config.cache_path:
                atomic_write_text(self.config.cache_path,
                                  json.dumps(self._cache, sort_keys=True, indent=0))
