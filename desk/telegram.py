"""Telegram: alerts out and operator commands in, through the Bot API over
httpx (issue 8; https://core.telegram.org/bots/api).

:class:`TelegramBot` calls two Bot API methods, both as ``POST
<api_url>/bot<token>/<method>`` with a JSON body:

* ``sendMessage`` ``{"chat_id", "text"}`` (:meth:`TelegramBot.send`: every
  allow-listed chat; :meth:`TelegramBot.poll_once`: the replies). Texts are
  cut to :data:`MAX_TEXT` characters (the API's limit is 4096).
* ``getUpdates`` ``{"offset", "timeout", "allowed_updates": ["message"]}``
  (long polling: the server holds the request up to ``timeout`` s); the
  offset is the last ``update_id`` + 1, so each update is handled once.

Commands, only from the allow-listed chat ids (``chat_ids``; messages from
any other chat are ignored and logged with the chat id but never the text):

* ``/status``: the reply is ``status_fn()``; ``/pnl``: ``pnl_fn()`` (plain
  or async callables returning text).
* ``/halt [reason]``: ``await governance.halt(who="telegram:<chat id>",
  reason=<reason or "Telegram /halt">)``.
* ``/resume [reason]``: ``governance.resume(who=..., reason=...)`` only when
  ``allow_resume`` (from the config); otherwise the reply says it is
  disabled. A ``/resume`` older than ``max_command_age_s`` (by the message's
  ``date`` against ``wall_clock``; e.g. sent while the desk was down) is not
  applied; a ``/halt`` is applied whatever its age (the safe direction).
* ``/help`` (and ``/start``): the list; anything else: "unknown command".
  ``/cmd@BotName`` (group chats) is read as ``/cmd``.

Secrets: the bot token is part of every request URL, so it would show in
httpx's own log line (``HTTP Request: POST https://…/bot<token>/…``) and in
httpx's exception texts. Constructing a bot adds a :class:`RedactingFilter`
with the token to the ``httpx`` and ``httpcore.*`` loggers; every httpx error
is caught and re-raised as :class:`TelegramError` whose text has the token
replaced by ``***`` and which carries no reference to the original
exception (no ``__cause__``/``__context__``); the bot's own logs never hold
the token or the text of an ignored message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable
from typing import Any, Callable

import httpx

from core.clock import Clock, LiveClock
from desk.alerts import RedactingFilter, redact

log = logging.getLogger("desk.telegram")

#: longest text sent (characters); the Bot API takes up to 4096
MAX_TEXT = 4000
DEFAULT_API_URL = "https://api.telegram.org"
#: loggers of the HTTP stack that can print request URLs or errors
HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
                "httpcore.socks")
_HTTP_FILTER = RedactingFilter()

HELP = ("/status: the desk's state\n/pnl: today's PnL\n/halt [reason]: halt trading, cancel working orders\n"
        "/resume [reason]: resume trading")


def install_http_log_redaction(secret: str) -> RedactingFilter:
    """Redact ``secret`` from the records of the httpx and httpcore loggers
    (:data:`HTTP_LOGGERS`) from now on (one shared filter; idempotent).
    Returns that filter."""
    _HTTP_FILTER.add(secret)
    for name in HTTP_LOGGERS:
        lg = logging.getLogger(name)
        if _HTTP_FILTER not in lg.filters:
            lg.addFilter(_HTTP_FILTER)
    return _HTTP_FILTER


class TelegramError(Exception):
    """A Bot API call failed (network error, timeout, HTTP status, or
    ``ok: false``). The text names the method and never holds the token."""


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class TelegramBot:
    """A Telegram bot for one desk (module docstring).

    Args:
        token: the bot token (from the environment, e.g.
            ``TELEGRAM_BOT_TOKEN``; never from a command line).
        chat_ids: allow-listed chat ids (ints; alerts go to all of them).
        governance: the desk's :class:`core.governance.Governance` (or
            anything with ``async halt(who, reason)`` and ``resume(who,
            reason)``).
        status_fn, pnl_fn: callables returning the text of ``/status`` and
            ``/pnl`` (may be async).
        allow_resume: whether ``/resume`` is taken (config).
        api_url: the Bot API's base URL (a local stub in tests).
        client: an ``httpx.AsyncClient`` to use (tests pass one with a mock
            or ASGI transport); by default one is created and closed by
            :meth:`close`.
        poll_timeout_s: long-polling timeout of ``getUpdates`` (s, default 30).
        request_timeout_s: timeout of other calls (s, default 10).
        wall_clock: UTC ns clock for the age of commands (default the system clock).
        max_command_age_s: a ``/resume`` older than this is not applied
            (s, default 120).

    Raises:
        ValueError: for an empty token (the token itself is never printed),
            a chat id that is not an int, or a non-positive timeout.
    """

    def __init__(self, token: str, chat_ids: Iterable[int], governance: Any, status_fn: Callable[[], Any],
                 pnl_fn: Callable[[], Any], allow_resume: bool = False, api_url: str = DEFAULT_API_URL,
                 client: httpx.AsyncClient | None = None, *, poll_timeout_s: int = 30,
                 request_timeout_s: float = 10.0, wall_clock: Clock | None = None,
                 max_command_age_s: int = 120) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token: the Telegram bot token is empty or not a string")
        ids = set(chat_ids)
        for c in ids:
            if isinstance(c, bool) or not isinstance(c, int):
                raise ValueError(f"chat_ids: expected int chat ids, got {type(c).__name__} {c!r}")
        if not isinstance(poll_timeout_s, int) or isinstance(poll_timeout_s, bool) or poll_timeout_s < 0:
            raise ValueError(f"poll_timeout_s: expected an int >= 0, got {poll_timeout_s!r}")
        if not request_timeout_s > 0:
            raise ValueError(f"request_timeout_s: expected > 0, got {request_timeout_s!r}")
        self._token = token
        self.chat_ids = ids
        self.governance = governance
        self.status_fn = status_fn
        self.pnl_fn = pnl_fn
        self.allow_resume = bool(allow_resume)
        self.api_url = api_url.rstrip("/")
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self.poll_timeout_s = poll_timeout_s
        self.request_timeout_s = float(request_timeout_s)
        self.wall_clock = wall_clock or LiveClock()
        self.max_command_age_s = max_command_age_s
        self.offset: int | None = None
        self.sent = 0
        self.failed = 0
        self.ignored = 0
        self.commands = 0
        install_http_log_redaction(token)

    def __repr__(self) -> str:
        return f"TelegramBot(api_url={self.api_url!r}, chat_ids={sorted(self.chat_ids)}, token=***)"

    def _redact(self, text: str) -> str:
        return redact(text, [self._token])

    async def _call(self, method: str, payload: dict[str, Any], timeout_s: float | None = None) -> Any:
        """POST ``payload`` to ``method``; the ``result`` of an ``ok`` answer.

        Raises:
            TelegramError: redacted, without the original exception attached.
        """
        url = f"{self.api_url}/bot{self._token}/{method}"
        problem: str | None = None
        body: Any = None
        try:
            r = await self._client.post(url, json=payload, timeout=timeout_s or self.request_timeout_s)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            try:
                body = r.json()
            except ValueError:
                body = None
            if r.status_code != 200 or not isinstance(body, dict) or body.get("ok") is not True:
                desc = body.get("description") if isinstance(body, dict) else r.text[:200]
                problem = f"HTTP {r.status_code}: {desc}"
        if problem is not None:  # raised outside the except block: no __context__ holding the URL
            raise TelegramError(f"Telegram {method} failed: {self._redact(problem)}")
        return body.get("result")

    async def send_to(self, chat_id: int, text: str) -> None:
        """``sendMessage`` of ``text`` (cut to :data:`MAX_TEXT`, token
        redacted) to one chat.

        Raises:
            TelegramError: the call failed.
        """
        await self._call("sendMessage", {"chat_id": chat_id, "text": self._redact(text)[:MAX_TEXT]})

    async def send(self, text: str) -> int:
        """Send ``text`` to every allow-listed chat (in id order); returns
        the number of chats reached.

        Raises:
            TelegramError: when a chat could not be reached (after trying
                all), naming how many failed.
        """
        ok, errors = 0, []
        for chat_id in sorted(self.chat_ids):
            try:
                await self.send_to(chat_id, text)
                ok += 1
            except TelegramError as exc:
                errors.append(str(exc))
        self.sent += ok
        if errors:
            self.failed += len(errors)
            raise TelegramError(f"{len(errors)} of {len(self.chat_ids)} chats not reached: {errors[0]}")
        return ok

    async def poll_once(self) -> int:
        """One ``getUpdates`` long poll (``timeout`` = ``poll_timeout_s``)
        from the current offset; handles each update (module docstring) and
        returns the number of commands answered. A failed reply is logged
        (redacted) and the next update still handled.

        Raises:
            TelegramError: when ``getUpdates`` fails.
        """
        payload: dict[str, Any] = {"timeout": self.poll_timeout_s, "allowed_updates": ["message"]}
        if self.offset is not None:
            payload["offset"] = self.offset
        updates = await self._call("getUpdates", payload, timeout_s=self.poll_timeout_s + self.request_timeout_s)
        answered = 0
        for u in updates or []:
            uid = u.get("update_id")
            if isinstance(uid, int):
                self.offset = max(self.offset or 0, uid + 1)
            msg = u.get("message")
            if not isinstance(msg, dict):
                continue
            chat_id = (msg.get("chat") or {}).get("id")
            if chat_id not in self.chat_ids:
                self.ignored += 1
                log.warning("telegram: ignored a message from chat %s (not allow-listed)", chat_id)
                continue
            text = msg.get("text")
            if not isinstance(text, str) or not text.startswith("/"):
                continue
            reply = await self.handle_command(chat_id, text, msg.get("date"))
            try:
                await self.send_to(chat_id, reply)
            except TelegramError as exc:
                log.warning("telegram: reply to chat %s failed: %s", chat_id, exc)
            answered += 1
        return answered

    async def handle_command(self, chat_id: int, text: str, date_s: int | None = None) -> str:
        """Run one command from an allow-listed chat and return the reply
        text (errors become the reply; never raises). ``date_s`` the
        message's Unix time (s), for the age check of ``/resume``."""
        self.commands += 1
        head, _, rest = text.strip().partition(" ")
        cmd = head.split("@", 1)[0].lower()
        arg = rest.strip()
        who = f"telegram:{chat_id}"
        try:
            if cmd == "/status":
                return str(await _maybe_await(self.status_fn()))
            if cmd == "/pnl":
                return str(await _maybe_await(self.pnl_fn()))
            if cmd == "/halt":
                reason = arg or "Telegram /halt"
                n = await _maybe_await(self.governance.halt(who=who, reason=reason))
                log.warning("telegram: HALT by %s: %s", who, reason)
                return f"HALTED by {who}: {reason}" + (f"; {n} cancels sent" if isinstance(n, int) else "")
            if cmd == "/resume":
                if not self.allow_resume:
                    return "/resume from Telegram is disabled in the config; resume from the desk"
                if isinstance(date_s, int):
                    age = self.wall_clock.timestamp_ns() // 1_000_000_000 - date_s
                    if age > self.max_command_age_s:
                        return f"/resume ignored: sent {age} s ago (more than {self.max_command_age_s} s); send it again"
                reason = arg or "Telegram /resume"
                await _maybe_await(self.governance.resume(who=who, reason=reason))
                log.warning("telegram: RESUME by %s: %s", who, reason)
                return f"ACTIVE: resumed by {who}: {reason}"
            if cmd in ("/help", "/start"):
                return HELP if self.allow_resume else HELP.rsplit("\n", 1)[0]
            return f"unknown command {cmd}; try /help"
        except Exception as exc:  # noqa: BLE001 - the operator gets the error, the loop goes on
            msg = self._redact(f"{type(exc).__name__}: {exc}")
            log.warning("telegram: %s from %s failed: %s", cmd, who, msg)
            return f"{cmd} failed: {msg}"

    async def run(self, stop: asyncio.Event, max_backoff_s: float = 60.0) -> None:
        """Poll until ``stop`` is set; after a failed poll wait 1, 2, 4 ...
        up to ``max_backoff_s`` wall seconds (or until ``stop``). Errors are
        logged (redacted), never raised."""
        backoff = 1.0
        while not stop.is_set():
            try:
                await self.poll_once()
                backoff = 1.0
            except TelegramError as exc:
                log.warning("telegram: %s; next poll in %.0f s", exc, backoff)
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, max_backoff_s)

    async def close(self) -> None:
        """Close the HTTP client if the bot created it."""
        if self._own_client:
            await self._client.aclose()
