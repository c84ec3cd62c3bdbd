"""Delivering pages (:class:`streams.core.paging.Page`) to PagerDuty, Alertmanager, Slack, webhooks.

Notifiers are named and configured by URL, so one JSON object (``name -> URL``) describes all of
them and a URL is all an operator has to paste::

    pagerduty+https://events.pagerduty.com/v2/enqueue?routing_key=KEY   PagerDuty Events API v2
    alertmanager+http://host:9093/api/v2/alerts                          Alertmanager v2 (or compatible)
    slack+https://hooks.slack.com/services/T/B/X                         Slack incoming webhook (or compatible)
    webhook+https://host/path?secret=S                                   generic JSON, HMAC-SHA256 signed

``routing_key`` and ``secret`` are taken out of the URL that is actually requested (they travel
in the body / signature only). ``${VAR}`` in a URL is replaced from the environment mapping passed
to :func:`notifier_urls`, so the JSON file can be committed without secrets. Secrets (routing key,
webhook secret, Slack hook path, URL passwords) never appear in a repr or a log line.

Why retries with jittered exponential backoff and at-least-once: a missed page is worse than a
duplicate, and every target dedups on ``dedup_key`` (PagerDuty, Alertmanager by label set) or is
cheap to see twice (chat). 5xx, 408, 429, timeouts and connection errors are retried; other 4xx
mean the request itself is wrong and retrying cannot help.

Why a :class:`Dispatcher` with a queue per notifier: the stream worker must never wait on an
HTTP endpoint (a stalled PagerDuty would stall SLA processing), and one slow notifier must not
hold up the others. Queues are bounded; when full, the oldest *warning* page is dropped first
(then the oldest page), and every drop is counted.

Configuration (read by the caller, which passes the environment in, like ``streams.settings``):

| variable | meaning |
|---|---|
| TOUCHSTREAM_NOTIFIERS | JSON object ``name -> URL``; entries override the file's |
| TOUCHSTREAM_NOTIFIERS_FILE | path to a JSON file: ``{"notifiers": {...}, "paging": {...}}`` (see deploy/) |
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson

from streams.core.paging import Page, PagingConfig
from streams.logs import mask_secrets

log = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("pagerduty", "alertmanager", "slack", "webhook")
SIGNATURE_HEADER = "X-Touchstream-Signature"
#: Alertmanager forgets an alert that is not re-sent within its resolve_timeout unless endsAt is
#: set; a page is sent once, so a trigger claims this lifetime and the resolve ends it early.
ALERTMANAGER_FIRING_TTL_S = 7 * 86_400
_RETRY_STATUS = frozenset({408, 429})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REDACTED = "***"


class NotifierError(ValueError):
    """A notifier URL or notifier config is invalid."""


class Notifier(abc.ABC):
    """Sends pages to one endpoint with retries. Subclasses only say how a page becomes a request.

    ``attempts``: total tries per page (>= 1). Delay before try ``n+1`` is ``d/2 + U(0, d/2)``
    with ``d = min(max_delay_s, base_delay_s * 2**(n-1))`` ("equal jitter": spread out, never 0),
    or the server's ``Retry-After`` when larger (still capped by ``max_delay_s``).
    """

    scheme = ""

    def __init__(
        self, name: str, url: str, *, attempts: int = 5, base_delay_s: float = 0.5, max_delay_s: float = 30.0,
        timeout_s: float = 10.0, session: aiohttp.ClientSession | None = None, rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise NotifierError(f"notifier {name!r}: attempts must be >= 1")
        self.name = name
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._session = session
        self._own_session = session is None
        self._secrets: list[str] = []
        self.url = self._parse(url)  # what is requested (secret query parameters removed)
        userinfo = urlsplit(self.url).password
        if userinfo:
            self._secrets.append(userinfo)
        #: Per-notifier counters: sent, failed (gave up or rejected), retried (extra attempts).
        self.counters: dict[str, int] = {"sent": 0, "failed": 0, "retried": 0}

    # --- subclass hooks -----------------------------------------------------------------------
    def _parse(self, url: str) -> str:
        """Take notifier-specific settings out of ``url``; return the URL to request."""
        return url

    @abc.abstractmethod
    def render(self, page: Page) -> tuple[bytes, dict[str, str]]:
        """The request body and headers for ``page``."""

    # --- public -------------------------------------------------------------------------------
    @property
    def safe_url(self) -> str:
        return self.redact(self.url)

    def redact(self, text: str) -> str:
        return mask_secrets(text, self._secrets, _REDACTED)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.safe_url!r})"

    async def send(self, page: Page) -> bool:
        """Deliver ``page``; True once the endpoint accepted it (2xx), False when it gave up."""
        body, headers = self.render(page)
        headers = {"Content-Type": "application/json", "User-Agent": "touchstream", **headers}
        session = await self._get_session()
        for attempt in range(1, self.attempts + 1):
            retry_after: float | None = None
            try:
                async with session.post(
                    self.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                ) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        self.counters["sent"] += 1
                        return True
                    text = self.redact((await resp.text(errors="replace"))[:200])
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
                if status < 500 and status not in _RETRY_STATUS:
                    self.counters["failed"] += 1
                    log.error("notifier %s rejected %s %s: HTTP %d %s", self.name, page.action, page.dedup_key,
                              status, text)
                    return False
                problem = f"HTTP {status} {text}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {self.redact(str(exc))}"
            if attempt == self.attempts:
                break
            self.counters["retried"] += 1
            delay = self.backoff(attempt)
            if retry_after is not None:
                delay = min(self.max_delay_s, max(delay, retry_after))
            log.warning("notifier %s: %s %s attempt %d/%d failed (%s); retrying in %.2fs", self.name, page.action,
                        page.dedup_key, attempt, self.attempts, problem, delay)
            await self._sleep(delay)
        self.counters["failed"] += 1
        log.error("notifier %s gave up on %s %s after %d attempts (%s)", self.name, page.action, page.dedup_key,
                  self.attempts, problem)
        return False

    def backoff(self, attempt: int) -> float:
        d = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return d / 2 + self._rng.uniform(0, d / 2)

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session


class PagerDutyNotifier(Notifier):
    """PagerDuty Events API v2: one event per page, ``dedup_key`` ties trigger and resolve."""

    scheme = "pagerduty"

    def _parse(self, url: str) -> str:
        url, params = _pop_query(url, "routing_key")
        key = params.get("routing_key")
        if not key:
            raise NotifierError(f"notifier {self.name!r}: pagerduty URL needs ?routing_key=<integration key>")
        self.routing_key = key
        self._secrets.append(key)
        return url

    def render(self, page: Page) -> tuple[bytes, dict[str, str]]:
        body: dict[str, Any] = {
            "routing_key": self.routing_key, "event_action": page.action, "dedup_key": page.dedup_key[:255],
        }
        if page.action == "trigger":
            payload: dict[str, Any] = {
                "summary": page.summary[:1024], "source": f"touchstream/{page.tenant_id}",
                "severity": page.severity, "timestamp": _iso(page.at), "custom_details": page.details,
            }
            if page.team is not None:
                payload["group"] = page.team
            if page.channel is not None:
                payload["component"] = page.channel
            kind = page.details.get("kind")
            if isinstance(kind, str):
                payload["class"] = kind
            body["payload"] = payload
            body["client"] = "touchstream"
        return orjson.dumps(body), {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.safe_url!r}, routing_key='{_REDACTED}')"


class AlertmanagerNotifier(Notifier):
    """Alertmanager ``POST /api/v2/alerts``: a firing alert until a resolve sets ``endsAt`` to now.

    Labels are identical for trigger and resolve (Alertmanager identifies alerts by label set).
    """

    scheme = "alertmanager"

    def render(self, page: Page) -> tuple[bytes, dict[str, str]]:
        kind = page.details.get("kind")
        labels = {
            "alertname": _alertname(kind if isinstance(kind, str) else "page"), "dedup_key": page.dedup_key,
            "tenant_id": page.tenant_id, "severity": page.severity, "notifier": self.name, "source": "touchstream",
        }
        if page.team is not None:
            labels["team"] = page.team
        if page.channel is not None:
            labels["channel"] = page.channel
        started = page.details.get("triggered_at", page.at)
        if not isinstance(started, int):
            started = page.at
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": page.summary, "details": orjson.dumps(page.details).decode()},
            "startsAt": _iso(started),
            "endsAt": _iso(page.at if page.action == "resolve" else page.at + ALERTMANAGER_FIRING_TTL_S * 1000),
        }
        return orjson.dumps([alert]), {}


class SlackNotifier(Notifier):
    """Slack incoming webhook (or anything accepting ``{"text": ...}``: Mattermost, Rocket.Chat)."""

    scheme = "slack"

    def _parse(self, url: str) -> str:
        path = urlsplit(url).path
        if path.strip("/"):
            self._secrets.append(path)  # the hook path *is* the credential
        return url

    def render(self, page: Page) -> tuple[bytes, dict[str, str]]:
        if page.action == "resolve":
            head = f":white_check_mark: RESOLVED {page.summary.removeprefix('Resolved: ')}"
        else:
            icon = ":rotating_light:" if page.severity == "critical" else ":warning:"
            head = f"{icon} [{page.severity.upper()}] {page.summary}"
        lines = [head]
        if page.action == "trigger":
            for w in page.details.get("waits", []) or []:
                if isinstance(w, Mapping):
                    lines.append(f"• {w.get('conversation_id')} ({w.get('channel')}, {w.get('priority')}) waiting "
                                 f"since {_iso(w['started_at']) if isinstance(w.get('started_at'), int) else '?'}")
            more = page.details.get("not_listed")
            if isinstance(more, int) and more > 0:
                lines.append(f"• … and {more} more")
        lines.append(f"`{page.dedup_key}`")
        return orjson.dumps({"text": "\n".join(lines)}), {}


class WebhookNotifier(Notifier):
    """The page as JSON; with ``?secret=`` signed ``X-Touchstream-Signature: sha256=<hex HMAC>``.

    Receivers verify by recomputing HMAC-SHA256 over the raw body with the shared secret
    (constant-time compare). The body has sorted keys so a receiver's re-serialisation is not needed.
    """

    scheme = "webhook"

    def _parse(self, url: str) -> str:
        url, params = _pop_query(url, "secret")
        self._secret = (params.get("secret") or "").encode()
        if self._secret:
            self._secrets.append(params["secret"])
        return url

    def render(self, page: Page) -> tuple[bytes, dict[str, str]]:
        body = orjson.dumps(page.to_dict(), option=orjson.OPT_SORT_KEYS)
        headers: dict[str, str] = {}
        if self._secret:
            headers[SIGNATURE_HEADER] = "sha256=" + sign(self._secret, body)
        return body, headers


def sign(secret: bytes | str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``body`` (what receivers compare against the signature header)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


_KINDS: dict[str, type[Notifier]] = {
    c.scheme: c for c in (PagerDutyNotifier, AlertmanagerNotifier, SlackNotifier, WebhookNotifier)
}


def notifier_from_url(name: str, url: str, **kwargs: Any) -> Notifier:
    """Build the notifier a ``<kind>+<http(s) URL>`` names; ``kwargs`` go to :class:`Notifier`."""
    kind, plus, rest = url.partition("+")
    if not plus or kind not in _KINDS:
        raise NotifierError(f"notifier {name!r}: URL must start with one of {[k + '+' for k in SCHEMES]}")
    if urlsplit(rest).scheme not in ("http", "https") or not urlsplit(rest).netloc:
        raise NotifierError(f"notifier {name!r}: after '{kind}+' an http(s)://host/... URL is needed")
    return _KINDS[kind](name, rest, **kwargs)


def notifier_urls(env: Mapping[str, str], path: str | Path | None = None) -> dict[str, str]:
    """``name -> URL`` from the file (``path`` or ``TOUCHSTREAM_NOTIFIERS_FILE``) and ``TOUCHSTREAM_NOTIFIERS``.

    The file is either ``{"notifiers": {...}, ...}`` (the deploy example, which also holds the
    ``paging`` config) or a bare ``name -> URL`` object; keys starting with ``_`` are comments.
    ``${VAR}`` references are resolved from ``env``; a missing variable is an error, not an
    empty secret.
    """
    urls: dict[str, str] = {}
    path = path or env.get("TOUCHSTREAM_NOTIFIERS_FILE") or None
    if path:
        doc = json.loads(Path(path).read_text())
        raw = doc.get("notifiers", doc) if isinstance(doc, dict) else doc
        urls.update(_url_map(raw, str(path)))
    inline = env.get("TOUCHSTREAM_NOTIFIERS")
    if inline and inline.strip():
        try:
            raw = json.loads(inline)
        except ValueError as exc:
            raise NotifierError(f"TOUCHSTREAM_NOTIFIERS is not valid JSON: {exc.msg}") from None
        urls.update(_url_map(raw, "TOUCHSTREAM_NOTIFIERS"))
    return {name: _expand(name, url, env) for name, url in urls.items()}


def paging_config(env: Mapping[str, str], path: str | Path | None = None) -> PagingConfig:
    """The ``paging`` object of the notifiers file (defaults when absent)."""
    path = path or env.get("TOUCHSTREAM_NOTIFIERS_FILE") or None
    if not path:
        return PagingConfig()
    doc = json.loads(Path(path).read_text())
    raw = doc.get("paging") if isinstance(doc, dict) else None
    return PagingConfig() if raw is None else PagingConfig.from_dict(raw)


def build_notifiers(urls: Mapping[str, str], **kwargs: Any) -> dict[str, Notifier]:
    return {name: notifier_from_url(name, url, **kwargs) for name, url in urls.items()}


def missing_notifiers(config: PagingConfig, notifiers: Mapping[str, Any]) -> list[str]:
    """Notifier names the routes use but nobody configured (check at start-up, fail loudly)."""
    return sorted(config.notifier_names() - set(notifiers))


class Dispatcher:
    """Routes pages to notifiers by name without ever blocking the caller.

    :meth:`submit` is synchronous and O(queue) at worst; call it from the event loop thread.
    One bounded queue and one worker task per notifier keep a slow endpoint from delaying the
    others while preserving trigger-before-resolve order per notifier. Identical
    ``(notifier, dedup_key, action)`` submissions are sent once per process (the pager is exactly
    once, but the stream around it is at least once); a send that finally failed or was dropped
    is forgotten, so a later resubmission is delivered.

    ``counters``: submitted, sent, failed, retried, dropped, dropped_warning, deduplicated,
    unroutable, abandoned (still queued when :meth:`stop` timed out).
    """

    def __init__(self, notifiers: Mapping[str, Notifier], *, maxsize: int = 1000, dedup_size: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError("Dispatcher maxsize must be >= 1")
        self.notifiers = dict(notifiers)
        self.maxsize = maxsize
        self.dedup_size = dedup_size
        self.counters: dict[str, int] = dict.fromkeys(
            ("submitted", "sent", "failed", "retried", "dropped", "dropped_warning", "deduplicated", "unroutable",
             "abandoned"), 0,
        )
        self._queues: dict[str, deque[Page]] = {n: deque() for n in self.notifiers}
        self._wake: dict[str, asyncio.Event] = {n: asyncio.Event() for n in self.notifiers}
        self._idle: dict[str, asyncio.Event] = {n: asyncio.Event() for n in self.notifiers}
        for ev in self._idle.values():
            ev.set()
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False

    def __repr__(self) -> str:
        return f"Dispatcher(notifiers={list(self.notifiers.values())!r}, queued={self.queued()})"

    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def submit(self, page: Page) -> bool:
        """Queue ``page`` for its notifier; False if it was not queued (duplicate, unroutable, closing)."""
        self.counters["submitted"] += 1
        q = self._queues.get(page.notifier)
        if q is None:
            self.counters["unroutable"] += 1
            log.error("no notifier named %r for %s %s (configured: %s)", page.notifier, page.action, page.dedup_key,
                      sorted(self.notifiers))
            return False
        if self._closing:
            self.counters["dropped"] += 1
            log.error("dispatcher stopping: dropped %s %s", page.action, page.dedup_key)
            return False
        key = (page.notifier, page.dedup_key, page.action)
        if key in self._seen:
            self.counters["deduplicated"] += 1
            return False
        self._seen[key] = None
        if len(self._seen) > self.dedup_size:
            self._seen.popitem(last=False)
        if len(q) >= self.maxsize:
            self._drop_one(q)
        q.append(page)
        self._idle[page.notifier].clear()
        self._wake[page.notifier].set()
        return True

    def submit_many(self, pages: list[Page]) -> int:
        return sum(self.submit(p) for p in pages)

    async def start(self) -> None:
        if self._workers:
            return
        self._closing = False
        self._workers = [asyncio.create_task(self._work(n), name=f"notify-{n}") for n in self.notifiers]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, deliver what is queued for up to ``timeout_s``, then cancel and close."""
        self._closing = True
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in self._idle.values())), timeout_s)
            for t in self._workers:
                t.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        left = self.queued()
        if left:
            self.counters["abandoned"] += left
            log.error("dispatcher stopped with %d undelivered page(s)", left)
            for q in self._queues.values():
                q.clear()
        for n in self.notifiers.values():
            await n.aclose()

    def _drop_one(self, q: deque[Page]) -> None:
        victim = next((p for p in q if p.severity == "warning"), None) or q[0]
        q.remove(victim)
        self._seen.pop((victim.notifier, victim.dedup_key, victim.action), None)
        self.counters["dropped"] += 1
        if victim.severity == "warning":
            self.counters["dropped_warning"] += 1
        log.warning("notifier %s queue full (%d): dropped %s %s (%s)", victim.notifier, self.maxsize, victim.action,
                    victim.dedup_key, victim.severity)

    async def _work(self, name: str) -> None:
        q, wake, idle, notifier = self._queues[name], self._wake[name], self._idle[name], self.notifiers[name]
        while True:
            if not q:
                idle.set()
                wake.clear()
                await wake.wait()
                continue
            page = q.popleft()
            retried = notifier.counters["retried"]
            try:
                ok = await notifier.send(page)
            except asyncio.CancelledError:
                q.appendleft(page)  # counted as abandoned by stop()
                raise
            except Exception:  # a bug in a notifier must not kill delivery for good
                log.exception("notifier %s crashed on %s %s", name, page.action, page.dedup_key)
                ok = False
            self.counters["retried"] += notifier.counters["retried"] - retried
            if ok:
                self.counters["sent"] += 1
            else:
                self.counters["failed"] += 1
                self._seen.pop((page.notifier, page.dedup_key, page.action), None)


def _pop_query(url: str, *names: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    kept, popped = [], {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k in names:
            popped[k] = v
        else:
            kept.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(kept))), popped


def _url_map(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise NotifierError(f"{where}: notifiers must be a JSON object of name -> URL")
    out: dict[str, str] = {}
    for name, url in raw.items():
        if name.startswith("_"):
            continue
        if not isinstance(url, str) or not url:
            raise NotifierError(f"{where}: notifier {name!r} must be a URL string")
        out[name] = url
    return out


def _expand(name: str, url: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        v = env.get(m.group(1))
        if v is None:
            raise NotifierError(f"notifier {name!r}: environment variable {m.group(1)} is not set")
        return v

    return _ENV_REF.sub(sub, url)


def _retry_after(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def _alertname(kind: str) -> str:
    return "Touchstream" + "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", kind) if part)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
