"""A live daemon stopped and started again on the same state dir (issue 6,
DESIGN.md section 1: "Running again on a state dir never rewrites
history"): ``desk run --config <binance> --headless --api-port P`` against
the fake Binance (tests/live/test_live_daemon.py's harness: the daemon in
the test's thread, a driver thread on the API, a real SIGTERM).

The fake pushes its 30 live bars again to every new subscriber, so the
second daemon is offered bars 1-20 once more: it must skip them and go on
with bars 21-25."""

from __future__ import annotations

import json
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.live.test_live_binance import KEY, creds, fake  # noqa: F401 - fixtures
from tests.live.test_live_daemon import (  # noqa: F401 - fixture
    _root_log_handlers,
    free_port,
    live_config,
    run_daemon_with,
    until,
)

D = Decimal


def _step(coid: str) -> int:
    """The engine step a desk ClientOrderId was made at (``NHD-<step hex>-<model>-<seq>-<tag>``): the bars
    processed before the one it was made on (live bar n: step n - 1)."""
    return int(coid.split("-")[1], 16)


def test_a_live_daemon_restarted_continues_after_its_last_bar_with_its_tag_and_no_duplicate(
        tmp_path: Path, fake, creds, capsys, monkeypatch):  # noqa: F811 - the imported fixtures
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    port = free_port()
    cfg = live_config(tmp_path, fake.srv, api={"port": port})
    state = tmp_path / "state"
    url = f"http://127.0.0.1:{port}"
    srv = fake.srv

    def driver(bars: int):
        def drive(stopped: threading.Event) -> dict[str, Any]:
            until("/health", lambda: httpx.get(url + "/health", timeout=2).json(), stopped)
            h = {"X-OPS-TOKEN": (state / "ops_token").read_text().strip()}
            with httpx.Client(base_url=url, headers=h, timeout=5) as c:
                until(f"{bars} bars", lambda: c.get("/status").json()["counts"]["bars"] == bars, stopped)
                return {"health": c.get("/health").json(), "status": c.get("/status").json()}
        return drive

    def checkpoint() -> tuple[int, dict[str, Any]]:
        with sqlite3.connect(state / "desk.sqlite") as c:
            step, snap = c.execute("SELECT step, snapshot FROM checkpoint").fetchone()
        return step, json.loads(snap)

    def meta() -> dict[str, str]:
        with sqlite3.connect(state / "desk.sqlite") as c:
            return dict(c.execute("SELECT key, value FROM meta"))

    args = ["run", "--config", str(cfg), "--headless", "--state-dir", str(state)]
    code, first = run_daemon_with(args + ["--bars", "20"], driver(20))
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    ns = 1_000_000
    step, snap = checkpoint()
    assert step == 20 and snap["feed"]["last"] == {"BTCUSDT.BINANCE": fake.live_rows[19][0] * ns}
    tag = meta()["coid_tag"]
    run1 = [o.client_order_id for o in srv.orders.values()]
    assert run1 and all(c.endswith("-" + tag) and 0 <= _step(c) <= 19 for c in run1)
    assert json.loads(out.strip().splitlines()[-1])["bars"] == 20
    assert meta()["stopped_by"] == "SIGTERM"

    # the same state dir again: reconciled at start (no difference, no halt), continuing after bar 20
    code, second = run_daemon_with(args + ["--bars", "25"], driver(25))
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "continuing after bar 20" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["bars"] == 25 and summary["warmup_bars"] == 521
    assert "unreconciled" not in summary and summary["trading_state"] == "ACTIVE"
    assert second["status"]["trading_state"] == "ACTIVE" and second["health"]["venues"]["BINANCE"]["halted"] is False
    with sqlite3.connect(state / "desk.sqlite") as c:
        codes = [json.loads(p)["code"] for (p,) in c.execute("SELECT payload FROM journal WHERE type='AlertRaised'")]
    assert "UNRECONCILED" not in codes
    # bars 21-25 only: the checkpoint after live bar 25, every order of the second run made on bars 21-25
    step, snap = checkpoint()
    assert step == 25 and snap["feed"]["last"] == {"BTCUSDT.BINANCE": fake.live_rows[24][0] * ns}
    run2 = [o.client_order_id for o in srv.orders.values() if o.client_order_id not in run1]
    assert run2 and all(20 <= _step(c) <= 24 for c in run2)  # (it traded: the no-duplicate check below bites)
    # the same ClientOrderId tag; each id met once at the venue, no -2010 duplicate answer
    assert meta()["coid_tag"] == tag
    every = [o.client_order_id for o in srv.orders.values()]
    assert all(c.endswith("-" + tag) for c in every) and len(every) == len(set(every))
    assert not [e for e in srv.errors if e[1] == -2010]
    # the book holds what the venue holds: the 1 BTC the account had plus the book's position
    held = fake.run(lambda: srv.free["BTC"] + srv.locked.get("BTC", D(0)))
    assert held == D(1) + D(summary["positions"]["BTCUSDT.BINANCE"]["quantity"])
    assert KEY not in err + out
