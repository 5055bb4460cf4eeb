"""A judge model behind any OpenAI-compatible chat endpoint, through the ``openai`` client.

Off unless configured: :meth:`Judge.from_env_or_config` returns None without a URL and a
model name. Requests go to ``POST {base_url}/chat/completions`` (``openai.OpenAI(base_url=...)
.chat.completions.create``, temperature 0 unless a benchmark's protocol says otherwise);
transient failures (HTTP 429/5xx, connection errors, timeouts) are retried here with
exponential backoff (the client's own retries are off, so the bound is ours); requests are
spaced by a minimum interval; successful replies are cached on disk. A reply without a usable
score is returned with ``score=None, error="unparsable: ..."``, never as a crash or a fake 0.
Install the client with the ``judge`` extra (``pip install jaxunlearn[judge]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
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


@dataclass(frozen=True)
class JudgeReply:
    """One judged request of any protocol (:meth:`Judge.ask`): the parsed value, or None
    with the reason in ``error``."""

    value: object
    raw: str | None = None
    error: str | None = None
    cached: bool = False


class _Transient(Exception):
    """A failure worth retrying."""


def _openai_client(config: JudgeConfig):
    try:
        import openai
    except ImportError as e:  # a setup error the CLI reports as one line
        raise ValueError("eval.judge is set but the openai package is missing: pip install "
                         "'jaxunlearn[judge]' (or 'openai>=1.0'), or unset the judge") from e
    return openai.OpenAI(base_url=config.base_url.rstrip("/"),
                         api_key=config.api_key or "not-needed",
                         timeout=config.timeout_s, max_retries=0)


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
        self._client = _openai_client(config)
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

    def ask(self, task: str, messages: list[dict[str, str]], parse: Callable[[str], object], *,
            temperature: float = 0.0, max_tokens: int | None = None) -> JudgeReply:
        """One chat request of a benchmark's own protocol (``task`` names it, e.g. ``mmvet``):
        the reply parsed by ``parse`` (None = unparsable, a recorded failure, not cached);
        parsed replies are cached under the request."""
        key = hashlib.sha256(json.dumps([self.endpoint, self.config.model, task, messages,
                                         temperature, max_tokens]).encode("utf-8")).hexdigest()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return JudgeReply(hit["value"], raw=hit.get("raw"), cached=True)
        try:
            raw = self._chat(messages, temperature=temperature, max_tokens=max_tokens)
        except RuntimeError as e:
            return JudgeReply(None, error=str(e))
        value = parse(raw)
        if value is None:
            return JudgeReply(None, raw=raw, error=f"unparsable: reply {raw[:200]!r}")
        self._store(key, {"value": value, "raw": raw})
        return JudgeReply(value, raw=raw)

    def cache_key(self, metric: str, question: str, reference: str, answer: str) -> str:
        """sha256 of judge URL + model, metric (with its prompt fingerprint) and the item."""
        parts = [self.endpoint, self.config.model, metric, PROMPTS[metric].fingerprint(),
                 question, reference, answer]
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()

    # --- transport ----------------------------------------------------------------------

    def _chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0,
              max_tokens: int | None = None) -> str:
        """Reply text of one chat completion; RuntimeError once retries are exhausted."""
        body: dict = {"model": self.config.model, "messages": messages,
                      "temperature": temperature}
        max_tokens = self.config.max_tokens if max_tokens is None else max_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        last = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(min(self.config.backoff_base_s * 2 ** (attempt - 1),
                               self.config.backoff_max_s))
            try:
                return self._post_once(body)
            except _Transient as e:
                last = str(e)
        raise RuntimeError(f"judge request failed after {self.config.max_retries + 1} "
                           f"attempts: {last}")

    def _post_once(self, body: dict) -> str:
        import openai

        self._wait_for_slot()
        self.requests_sent += 1
        try:
            reply = self._client.chat.completions.create(**body)
        except openai.APIStatusError as e:
            detail = str(e)[:200]
            if e.status_code == 429 or e.status_code >= 500:
                raise _Transient(f"HTTP {e.status_code}: {detail}") from e
            raise RuntimeError(f"judge request rejected: HTTP {e.status_code}: {detail}") from e
        except openai.APIConnectionError as e:  # includes timeouts
            raise _Transient(f"connection error: {e}") from e
        except openai.APIResponseValidationError as e:
            raise RuntimeError(f"judge reply is not a chat completion: {e}") from e
        try:
            content = reply.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as e:
            raise RuntimeError(f"judge reply is not a chat completion: {str(reply)[:200]}"
                               ) from e
        if isinstance(content, str):
            return content
        raise RuntimeError(f"judge reply has no text content: {str(reply)[:200]}")

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
