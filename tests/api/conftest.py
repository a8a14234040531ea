"""Fixtures for the control-API tests: engines in the test's tmp_path, the
app behind an httpx ``ASGITransport`` client, a socket-free driver for
streaming responses (``AsgiStream``), an SSE parser, and the hand engine of
tests/unit/test_engine.py (known closes, so figures are known by hand).

Nothing here sleeps: streams are driven by calling ``hub.poll()`` and
yielding to the loop (``pump``)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.audit import AuditLog
from core.clock import TestClock
from core.data import Bar
from core.engine import Engine, EngineConfig, ModelSpec
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from desk.api import create_app
from tests.app.engines import close_engine, scripted_sim_engine
from tests.helpers.scripted import InlineExecutor, ScriptedModel
from venues.feeds import ReplayFeed
from venues.klines import KlineFile
from venues.paper import PaperConfig, PaperVenue

D = Decimal
TOKEN = "api-test-token-0123456789abcdef"
AUTH = {"X-OPS-TOKEN": TOKEN}
#: small scripted targets that keep changing (signals and orders every few bars); the models
#: hold at most ~20 % of the capital, leaving cash for orders placed by hand
SMALL_TARGETS = {"hmm_v1": ["0.1", "0.2", "0", "0.1"], "hmm_v2_canary": ["0.2", "0", "0.1"]}
BTC = "BTCUSDT.SIM"

# ---------------------------------------------------------------- the hand engine (tests/unit/test_engine.py)
IID = InstrumentId("ETHUSDT", "BINANCE")
ETH = Instrument(IID, "ETH", "USDT", D("0.01"), D("0.0001"), D("0.0001"), min_notional=D("5"))
MIN = 60_000_000_000


def hand_bars(closes: list[str], lows: list[str] | None = None) -> list[Bar]:
    """1-minute ETHUSDT.BINANCE bars from epoch 0: open = close, high =
    close + 1, low given (default close - 1)."""
    out = []
    for k, c in enumerate(closes):
        c = D(c)
        low = D(lows[k]) if lows else c - 1
        out.append(Bar(IID, c, c + 1, low, c, D("100"), k * MIN, (k + 1) * MIN, k + 2))
    return out


def hand_engine(state: Path, closes: list[str], targets: list[str], lows: list[str] | None = None,
                risk: RiskConfig | None = None) -> Engine:
    """One scripted model ``m0`` (weight 1, capital 10000 USDT) on known
    ETHUSDT bars through the paper venue (fee 0.1 %), as
    tests/unit/test_engine.py's ``build``."""
    state.mkdir(parents=True, exist_ok=True)
    clock = TestClock()
    store = Store(state / "desk.sqlite")
    feed = ReplayFeed([KlineFile("x.csv", IID, "ETHUSDT", MIN, hand_bars(closes, lows), [])])
    models = {"m0": {IID: ScriptedModel("m0", IID, targets, warmup=2)}}
    return Engine(
        config=EngineConfig(router=RouterConfig(capital=D("10000"))), clock=clock, store=store,
        audit=AuditLog(state / "audit" / "orders.jsonl"), feed=feed, instruments={IID: ETH}, models=models,
        specs=[ModelSpec("m0", D("1"))], risk=RiskEngine(risk or RiskConfig()), executor=InlineExecutor(),
        venue_factory=lambda cb: PaperVenue(state / "venue.sqlite", "BINANCE", "USDT", {IID: ETH}, clock,
                                            PaperConfig(), cb),
    )


# ---------------------------------------------------------------- the app
@dataclass
class Desk:
    """An engine, its app and an httpx client on the app (no socket)."""

    engine: Engine
    app: Any
    client: httpx.AsyncClient

    @property
    def hub(self) -> Any:
        return self.app.state.runtime.hub

    def head(self) -> int:
        """The committed journal head."""
        return int(self.engine.store.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()[0])


def new_app(engine: Engine, **kw: Any) -> Any:
    """``create_app`` without background tasks (tests poll by hand)."""
    kw.setdefault("poll_interval_s", None)
    kw.setdefault("sample_interval_s", None)
    kw.setdefault("heartbeat_s", 3600.0)
    return create_app(engine, token=TOKEN, **kw)


async def open_desk(engine: Engine, **kw: Any) -> Desk:
    app = new_app(engine, **kw)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return Desk(engine, app, client)


async def close_desk(desk: Desk) -> None:
    await desk.client.aclose()
    await desk.app.state.runtime.stop()
    desk.app.state.runtime.metrics.detach()


async def sim_engine(state: Path, bars: int = 6) -> Engine:
    """The scripted SIM engine (BTCUSDT.SIM, ETHUSDT.SIM; hmm_v1 live 0.9,
    hmm_v2_canary canary 0.1; max notional 10000 USDT), warmed up and run
    ``bars`` bars."""
    engine = scripted_sim_engine(state, targets=SMALL_TARGETS)
    await engine.warm_up()
    await engine.run(max_bars=bars)
    return engine


@pytest.fixture
async def desk(tmp_path: Path):
    """The SIM engine after 6 bars, and its app."""
    engine = await sim_engine(tmp_path / "state")
    d = await open_desk(engine)
    yield d
    await close_desk(d)
    close_engine(engine)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_desk(tmp_path_factory):
    """One SIM engine and app for a whole module, for tests that change
    nothing (they assert it); their loop is the module's
    (``@pytest.mark.asyncio(loop_scope="module")``)."""
    engine = await sim_engine(tmp_path_factory.mktemp("shared") / "state")
    d = await open_desk(engine)
    yield d
    await close_desk(d)
    close_engine(engine)


class EventCounter:
    """Counts every event published on an engine's bus (``"*"``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.events: list[Any] = []
        engine.bus.subscribe("*", self.events.append)

    def close(self) -> None:
        self.engine.bus.unsubscribe("*", self.events.append)


# ---------------------------------------------------------------- SSE
def parse_sse(raw: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """Events (``{"id": int, "event": str, "data": dict}``) and comment
    lines of a complete SSE byte stream (WHATWG "Server-sent events":
    blocks separated by a blank line; ``:`` starts a comment)."""
    events, comments = [], []
    text = raw.decode()
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line:
                continue
            if line.startswith(":"):
                comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if "data" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events, comments


async def pump(turns: int = 50) -> None:
    """Let other tasks run (no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class AsgiStream:
    """One streaming request driven against an ASGI app without a socket,
    chunk by chunk (httpx's ``ASGITransport`` waits for the whole body).

    ``reading`` models the client's socket: cleared, the app's next
    ``send`` blocks (a client that does not read). ``disconnect()`` makes
    ``receive`` answer ``http.disconnect``, as a server does when the peer
    goes away."""

    def __init__(self, app: Any, path: str, headers: dict[str, str] | None = None, query: str = "") -> None:
        self.app = app
        self.scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": query.encode(), "server": ("testserver", 80), "client": ("127.0.0.1", 5555),
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        }
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.done = asyncio.Event()
        self.reading = asyncio.Event()
        self.reading.set()
        self._gone = asyncio.Event()
        self._asked = False
        self.task: asyncio.Task[Any] | None = None

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            return
        await self.reading.wait()
        self.body += message.get("body", b"")
        if not message.get("more_body", False):
            self.done.set()

    async def start(self) -> "AsgiStream":
        self.task = asyncio.get_running_loop().create_task(self.app(self.scope, self._receive, self._send))
        await pump()
        return self

    def events(self) -> list[dict[str, Any]]:
        return parse_sse(bytes(self.body))[0]

    def comments(self) -> list[str]:
        return parse_sse(bytes(self.body))[1]

    async def disconnect(self) -> None:
        self._gone.set()
        self.reading.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
