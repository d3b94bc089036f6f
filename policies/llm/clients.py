"""Chat clients a teacher talks through: an OpenAI-compatible HTTP endpoint
(:class:`HTTPChatBackend`, configured by ``STAREC_TEACHER_BASE_URL`` /
``STAREC_TEACHER_MODEL`` / ``STAREC_TEACHER_API_KEY``) and a local
transformers model (:class:`LocalChatBackend`). Both map conversations to
replies (:data:`ChatFn`) and fail with :class:`TeacherError`.
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Sequence

from policies.llm.formats import THINK
from policies.llm.prompts import Messages


class TeacherError(RuntimeError):
    """A teacher could not answer (endpoint unreachable, bad reply, ...)."""


ChatFn = Callable[[Sequence[Messages]], list[str]]


class HTTPChatBackend:
    """An OpenAI-compatible ``/chat/completions`` endpoint over urllib.

    Retries timeouts, connection errors, 429 and 5xx answers with exponential
    backoff; other HTTP errors fail at once with the server's message. A
    separate ``reasoning_content`` (reasoning models such as DeepSeek-R1) is
    folded back into ``<think>...</think>``. ``/chat/completions`` is added to
    the base URL's path, before any query (Azure's ``?api-version=...``);
    ``user:password@`` in the URL is sent as basic authentication. Messages
    and :meth:`describe` show the URL with its credentials and query values
    hidden, and server replies with the API key masked.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        temperature: float = 0.6,
        max_tokens: int = 1024,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url or not model:
            raise TeacherError("an HTTP teacher needs a base URL and a model name")
        self.url, self.credentials = chat_url(base_url)
        self.shown_url = redact_url(self.url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.sleep = sleep

    @classmethod
    def from_env(cls, **kwargs: Any) -> "HTTPChatBackend":
        """Configure from ``STAREC_TEACHER_BASE_URL`` / ``_MODEL`` / ``_API_KEY``."""
        base, model = os.environ.get("STAREC_TEACHER_BASE_URL"), os.environ.get("STAREC_TEACHER_MODEL")
        if not base or not model:
            raise TeacherError("set STAREC_TEACHER_BASE_URL and STAREC_TEACHER_MODEL (and STAREC_TEACHER_API_KEY if needed)")
        return cls(base, model, os.environ.get("STAREC_TEACHER_API_KEY"), **kwargs)

    def describe(self) -> dict[str, str]:
        """What a run records about its teacher: the endpoint (credentials hidden) and the model."""
        return {"endpoint": self.shown_url, "model": self.model}

    def __call__(self, chats: Sequence[Messages]) -> list[str]:
        return [self.complete(chat) for chat in chats]

    def complete(self, messages: Messages) -> str:
        body = json.dumps(
            {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif self.credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(self.credentials.encode()).decode()
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return _reply_text(json.loads(response.read().decode("utf-8")), self)
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {self.mask(err.read().decode('utf-8', 'replace'))}"
                if err.code != 429 and err.code < 500:
                    raise TeacherError(f"teacher endpoint {self.shown_url} refused the request ({last})") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"{type(err).__name__}: {self.mask(str(getattr(err, 'reason', err)))}"
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise TeacherError(f"teacher endpoint {self.shown_url} did not reply with JSON") from None
        raise TeacherError(f"teacher endpoint {self.shown_url} failed after {self.retries + 1} attempts ({last})")

    def mask(self, text: str, limit: int = 200) -> str:
        """A server's text fit for an error message: secrets we sent masked, clipped to ``limit``."""
        password = self.credentials.partition(":")[2]
        secrets = [s for s in (self.api_key, self.credentials, password) if s and len(s) >= 4]
        secrets += [v for _, v in urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query) if len(v) >= 4]
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        text = _TOKEN_LIKE.sub("***", " ".join(text.split()))
        return text if len(text) <= limit else text[: limit - 3] + "..."


#: Query parameters that carry no secret and are worth showing (the rest are hidden).
_PUBLIC_QUERY = frozenset({"api-version", "api_version"})
#: Things in a server reply that look like keys or authorization tokens.
_TOKEN_LIKE = re.compile(r"(?i)\b(?:sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_-]{6,}|(?<=Bearer )\S+|(?<=Basic )\S+")


def chat_url(base_url: str) -> tuple[str, str]:
    """(request URL, ``user:password`` or ""): ``/chat/completions`` joined to
    the path of ``base_url`` (kept when already there), the query kept, the
    credentials taken out of the URL."""
    try:
        parts = urllib.parse.urlsplit(base_url.strip())
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a bad port or IPv6 address
        valid = False
    if not valid:
        raise TeacherError(f"STAREC_TEACHER_BASE_URL must be an http(s) URL such as https://host/v1, got {redact_url(base_url)!r}")
    credentials, _, host = parts.netloc.rpartition("@")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, host, path, parts.query, "")), urllib.parse.unquote(credentials)


def redact_url(url: str) -> str:
    """``url`` safe to print or record: ``user:password@`` and every query value
    but the API version replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    query = [(k, v if k.lower() in _PUBLIC_QUERY else "***") for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, urllib.parse.urlencode(query, safe="*"), ""))


def http_teacher_record() -> dict[str, str | None]:
    """The HTTP teacher a run uses, as recorded beside its results (from the
    environment, credentials hidden; None where a variable is unset)."""
    base = os.environ.get("STAREC_TEACHER_BASE_URL")
    return {"teacher": "http", "endpoint": redact_url(chat_url(base)[0]) if base else None,
            "model": os.environ.get("STAREC_TEACHER_MODEL")}


def _reply_text(payload: Any, backend: HTTPChatBackend) -> str:
    try:
        message = payload["choices"][0]["message"]
        content = message.get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise TeacherError(
            f"teacher endpoint {backend.shown_url} replied without choices[0].message: {backend.mask(str(payload))}"
        ) from None
    reasoning = message.get("reasoning_content")
    if reasoning and "<think>" not in content:
        content = f"<think>\n{reasoning.strip()}\n</think>\n{content}"
    return str(content)


class LocalChatBackend:
    """A local transformers model (any name :func:`policies.llm.models.load_model`
    accepts) answering through the batched, accounted LLM backend.

    Greedy by default; ``temperature > 0`` samples from a seeded
    ``torch.Generator``.
    """

    def __init__(self, model: str, *, max_new_tokens: int = 512, temperature: float = 0.0, seed: int = 0, **backend_kwargs: Any) -> None:
        from policies.llm.backend import get_backend  # lazy: torch/transformers only when used

        self.backend = get_backend(model, seed=seed, **backend_kwargs)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self._generator = None

    def __call__(self, chats: Sequence[Messages]) -> list[str]:
        generator = None
        if self.temperature > 0:
            import torch

            if self._generator is None:
                self._generator = torch.Generator(device=self.backend.device).manual_seed(self.seed)
            generator = self._generator
        return self.backend.generate(
            list(chats),
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            generator=generator,
            agent="teacher",
            mode=THINK.name,
        )
