"""The Telegram bot (issue 8) against a local stub of the Bot API (a
Starlette app behind httpx.ASGITransport: no network): exact requests for
sendMessage and getUpdates with its offset, the commands from allow-listed
chats only, /resume only when enabled, and the token never in a log line or
an exception text."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.clock import TestClock
from desk.telegram import TelegramBot, TelegramError

TOKEN = "123456:AAH-test-token-zz9"
API = "http://bot-api.test"
NOW_S = 1_767_225_600  # the wall clock: 2026-01-01T00:00:00Z


class BotApi:
    """A stub of https://api.telegram.org: records each call, answers like
    the real one (``{"ok": true, "result": ...}``; 401 for a wrong token)."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.updates: list[dict] = []
        self.fail: dict[str, tuple[int, dict]] = {}
        self.app = Starlette(routes=[Route("/bot{token}/{method}", self.handle, methods=["POST"])])

    async def handle(self, request: Request):
        method = request.path_params["method"]
        body = await request.json()
        self.calls.append((method, body))
        if request.path_params["token"] != TOKEN:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
        if method in self.fail:
            status, payload = self.fail[method]
            return JSONResponse(payload, status)
        if method == "getUpdates":
            offset = body.get("offset", 0)
            return JSONResponse({"ok": True, "result": [u for u in self.updates if u["update_id"] >= offset]})
        if method == "sendMessage":
            return JSONResponse({"ok": True, "result": {"message_id": len(self.calls), "chat": {"id": body["chat_id"]},
                                                        "text": body["text"]}})
        return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, 404)


class Gov:
    def __init__(self):
        self.calls = []

    async def halt(self, who, reason):
        self.calls.append(("halt", who, reason))
        return 3

    def resume(self, who, reason):
        self.calls.append(("resume", who, reason))


def message(update_id, chat_id, text, date=NOW_S):
    return {"update_id": update_id, "message": {"message_id": update_id, "date": date, "text": text,
                                                "chat": {"id": chat_id, "type": "private"}}}


@pytest.fixture
def api():
    return BotApi()


def bot(api, gov=None, allow_resume=False, token=TOKEN, client=None):
    client = client or httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app))
    return TelegramBot(token, {11, 22}, gov or Gov(), lambda: "ACTIVE, 2 orders working", pnl, allow_resume,
                       api_url=API, client=client, wall_clock=TestClock(NOW_S * 1_000_000_000))


async def pnl():
    return "today +12.5 USDT"


async def test_send_goes_to_every_allow_listed_chat(api):
    b = bot(api)
    assert await b.send("[ERROR] HALT: halted") == 2
    assert api.calls == [("sendMessage", {"chat_id": 11, "text": "[ERROR] HALT: halted"}),
                         ("sendMessage", {"chat_id": 22, "text": "[ERROR] HALT: halted"})]


async def test_commands_from_allow_listed_chats_only(api, caplog):
    caplog.set_level(logging.DEBUG)
    gov = Gov()
    b = bot(api, gov)
    api.updates = [
        message(100, 11, "/status"),
        message(101, 99, "/halt secret plans of chat 99"),  # not allow-listed: ignored
        message(102, 22, "/pnl@DeskBot"),
        message(103, 11, "/halt drill now"),
        message(104, 22, "/resume"),  # disabled by the config
        message(105, 11, "hello"),  # not a command: no answer
        message(106, 11, "/frobnicate"),
    ]
    assert await b.poll_once() == 5
    assert api.calls == [
        ("getUpdates", {"timeout": 30, "allowed_updates": ["message"]}),
        ("sendMessage", {"chat_id": 11, "text": "ACTIVE, 2 orders working"}),
        ("sendMessage", {"chat_id": 22, "text": "today +12.5 USDT"}),
        ("sendMessage", {"chat_id": 11, "text": "HALTED by telegram:11: drill now; 3 cancels sent"}),
        ("sendMessage", {"chat_id": 22,
                         "text": "/resume from Telegram is disabled in the config; resume from the desk"}),
        ("sendMessage", {"chat_id": 11, "text": "unknown command /frobnicate; try /help"}),
    ]
    assert gov.calls == [("halt", "telegram:11", "drill now")]
    assert b.ignored == 1
    assert "chat 99" in caplog.text and "secret plans" not in caplog.text  # logged without the text
    # the next poll asks from the last update_id + 1
    api.calls.clear()
    api.updates.append(message(107, 22, "/halt"))
    assert await b.poll_once() == 1
    assert api.calls[0] == ("getUpdates", {"timeout": 30, "allowed_updates": ["message"], "offset": 107})
    assert gov.calls[-1] == ("halt", "telegram:22", "Telegram /halt")


async def test_resume_when_enabled_and_not_when_stale(api):
    gov = Gov()
    b = bot(api, gov, allow_resume=True)
    api.updates = [message(1, 11, "/resume checked the venue"),
                   message(2, 22, "/resume old", date=NOW_S - 121),  # older than 120 s
                   message(3, 22, "/halt old but safe", date=NOW_S - 3600)]
    await b.poll_once()
    assert gov.calls == [("resume", "telegram:11", "checked the venue"), ("halt", "telegram:22", "old but safe")]
    texts = [body["text"] for m, body in api.calls if m == "sendMessage"]
    assert texts[:2] == ["ACTIVE: resumed by telegram:11: checked the venue",
                         "/resume ignored: sent 121 s ago (more than 120 s); send it again"]


async def test_a_failing_governance_command_becomes_the_reply(api):
    class Broken(Gov):
        async def halt(self, who, reason):
            raise RuntimeError("store is read-only")

    b = bot(api, Broken())
    api.updates = [message(1, 11, "/halt")]
    await b.poll_once()
    assert api.calls[-1] == ("sendMessage", {"chat_id": 11, "text": "/halt failed: RuntimeError: store is read-only"})


async def test_http_errors_never_carry_the_token(api, caplog):
    caplog.set_level(logging.DEBUG)
    api.fail["sendMessage"] = (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
    b = bot(api)
    with pytest.raises(TelegramError) as info:
        await b.send("x")
    assert str(info.value) == ("2 of 2 chats not reached: Telegram sendMessage failed: HTTP 502: Bad Gateway")
    assert info.value.__cause__ is None and info.value.__context__ is None

    def refuse(request: httpx.Request):
        # worst case: a transport error whose text holds the whole URL
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    b2 = bot(api, client=httpx.AsyncClient(transport=httpx.MockTransport(refuse)))
    with pytest.raises(TelegramError) as info:
        await b2.poll_once()
    assert str(info.value) == f"Telegram getUpdates failed: ConnectError: cannot connect to {API}/bot***/getUpdates"
    assert info.value.__context__ is None
    # httpx logs each request's URL at INFO: redacted
    assert "HTTP Request: POST http://bot-api.test/bot***/sendMessage" in caplog.text
    assert TOKEN not in caplog.text


async def test_wrong_token_is_reported_without_it(api):
    b = bot(api, token="999:wrong-token-abc")
    with pytest.raises(TelegramError, match=r"HTTP 401: Unauthorized") as info:
        await b.poll_once()
    assert "wrong-token-abc" not in str(info.value) and "wrong-token-abc" not in repr(b)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="token"):
        TelegramBot("  ", {1}, Gov(), str, str)
    with pytest.raises(ValueError, match="chat_ids"):
        TelegramBot(TOKEN, {"11"}, Gov(), str, str)
