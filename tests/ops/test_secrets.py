"""No configured secret appears in the logs, the audit files, the store or
the API's answers (issue 8, "a test that scans logs, audit and API output
for the configured secrets").

The SIM default is built by ``desk.wiring.build`` (inline fits) with the
secrets in the environment, the alert dispatcher and a Telegram bot wired
to a local stub of the Bot API that fails ``sendMessage`` with an answer
echoing the request URL (which holds the token), and a second bot whose
transport fails with the URL in the error text. Bars run, orders rest,
alerts go out, Telegram commands halt and resume the desk. Then every log
record (message and traceback), every file in the state dir (audit and its
rotations, the store with its WAL, the paper venue's store, the export) and,
when ``desk.api`` exists, the control API's answers are searched for each
secret."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from desk.alerts import AlertDispatcher, LogSink, TelegramSink
from desk.export import export_pnl
from desk.telegram import TelegramBot
from desk.wiring import RunOptions, build
from models.executor import InlineFitExecutor
from tests.app.engines import place_resting_buys

SECRETS = {
    "OPS_TOKEN": "ops-TOKEN-5c1e7a9d2b",
    "TELEGRAM_BOT_TOKEN": "777000:TELEGRAM-b0t-secret-4e1f",
    "BINANCE_API_KEY": "binKEY-3f9e2d1c0a9b",
    "BINANCE_API_SECRET": "binSECRET-8a7b6c5d4e3f",
}
API = "http://bot-api.test"
CHAT = 42


class FailingBotApi:
    """A Bot API stub whose sendMessage fails with the request URL in its
    description (the worst a server can do); getUpdates serves commands."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []
        self.updates: list[dict] = []
        self.app = Starlette(routes=[Route("/bot{token}/{method}", self.handle, methods=["POST"])])

    async def handle(self, request: Request):
        method = request.path_params["method"]
        self.calls.append((method, request.path_params["token"]))
        if method == "sendMessage" and not self.updates_served:
            return JSONResponse({"ok": False, "error_code": 502, "description": f"bad gateway for {request.url}"}, 502)
        if method == "getUpdates":
            self.updates_served = True
            out, self.updates = self.updates, []
            return JSONResponse({"ok": True, "result": out})
        return JSONResponse({"ok": True, "result": {"message_id": 1}})

    updates_served = False


def _cmd(uid, chat, text):
    return {"update_id": uid, "message": {"message_id": uid, "text": text, "chat": {"id": chat}}}


def _scan(text: str, where: str) -> list[str]:
    return [f"{name} in {where}" for name, value in SECRETS.items() if value in text]


async def test_no_secret_in_logs_audit_store_or_api(tmp_path, monkeypatch, caplog):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    caplog.set_level(logging.DEBUG)
    state = tmp_path / "state"
    from tests.app.engines import resting_risk_file

    built = build(RunOptions(state_dir=state, risk_file=resting_risk_file(state)), executor=InlineFitExecutor())
    engine = built.engine
    stub = FailingBotApi()
    leaks: list[str] = []
    try:
        bot = TelegramBot(os.environ["TELEGRAM_BOT_TOKEN"], {CHAT}, engine.governance,
                          status_fn=lambda: f"state {engine.trading_state.value}",
                          pnl_fn=lambda: f"day PnL {engine.day_pnl()}", allow_resume=True, api_url=API,
                          client=httpx.AsyncClient(transport=httpx.ASGITransport(app=stub.app)))
        dispatcher = AlertDispatcher(engine.clock, [LogSink(), TelegramSink(bot)],
                                     secrets=list(SECRETS.values()))
        dispatcher.attach(engine.bus)
        dispatcher.start()

        await engine.run(max_bars=6)  # bars through the paper venue (models not warmed up: no signals)
        await place_resting_buys(engine, 2)
        engine.alert("ERROR", "VENUE_UNREACHABLE", "SIM did not answer")  # Telegram answers 502 with the URL
        await dispatcher.stop()
        assert dispatcher.stats()["telegram"]["failed"] == 1 and dispatcher.stats()["log"]["sent"] >= 1

        stub.updates = [_cmd(1, CHAT, "/status"), _cmd(2, CHAT, "/halt drill"), _cmd(3, 7, "/halt from a stranger"),
                        _cmd(4, CHAT, "/pnl"), _cmd(5, CHAT, "/resume drill over")]
        assert await bot.poll_once() == 4
        assert engine.trading_state.value == "ACTIVE"

        stop = asyncio.Event()

        def refuse(request: httpx.Request):
            stop.set()
            raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

        down = TelegramBot(os.environ["TELEGRAM_BOT_TOKEN"], {CHAT}, engine.governance, str, str, api_url=API,
                           client=httpx.AsyncClient(transport=httpx.MockTransport(refuse)))
        await down.run(stop)  # one failed poll, logged, then stop

        if importlib.util.find_spec("desk.api") is not None:  # the control API (issue 8, part 2)
            from desk.api import create_app

            app = create_app(engine, token=os.environ["OPS_TOKEN"], poll_interval_s=None, sample_interval_s=None)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://desk") as c:
                ok = {"X-OPS-TOKEN": os.environ["OPS_TOKEN"]}
                for path in ("/health", "/metrics", "/status", "/snapshot", "/orders", "/dash/pnl", "/models",
                             "/stream?follow=false", "/openapi.json"):
                    r = await c.get(path, headers=ok)
                    leaks += _scan(r.text + str(r.headers), f"GET {path}")
                for headers in ({}, {"X-OPS-TOKEN": "wrong-" + SECRETS["OPS_TOKEN"][:4]}):
                    r = await c.post("/kill", headers=headers, json={"reason": "x"})
                    assert r.status_code in (401, 403)
                    leaks += _scan(r.text + str(r.headers), f"POST /kill {r.status_code}")
        engine.flush()
    finally:
        built.close()
    export_pnl(state, "2025-01-01", "UTC")  # the SIM run's first day

    # the secrets were really in use: the stub saw the token in the URL
    assert (("sendMessage", SECRETS["TELEGRAM_BOT_TOKEN"].split("/")[0]) in stub.calls)
    # the redaction path was exercised, not skipped
    assert "bot***/sendMessage" in caplog.text and "bot***/getUpdates" in caplog.text

    for rec in caplog.records:
        leaks += _scan(rec.getMessage() + (rec.exc_text or "") + str(rec.args or ""), f"log {rec.name}")
    leaks += _scan(caplog.text, "caplog.text")
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name == "orders.jsonl" for p in files) and any(p.name == "desk.sqlite" for p in files)
    for p in files:
        data = p.read_bytes()
        leaks += [f"{name} in {p.relative_to(state)}" for name, value in SECRETS.items() if value.encode() in data]
    assert leaks == []
