"""The daemon on an IBKR venue (issue 6/8): ``desk run --config <ibkr>
--headless --api-port P`` runs the live engine against the stand-in IB
gateway (ib_async for real, its wrapper callbacks driven: see
tests/live/one_clock.py's ``BookGateway``) and serves the control API, as
tests/live/test_live_daemon.py does for Binance: ``desk.cli.main`` in the
test's thread, a driver thread on the API, a real SIGTERM at the end.

Time is the shared test clock, moved by the driver thread one bar at a time
(2024-01-02 from 15:00:30 UTC, New York's morning: AAPL trades)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.app.engines import resting_risk_file
from tests.live.one_clock import bar_close_ns, ibkr_venue, one_clock_desk
from tests.live.test_live_daemon import _root_log_handlers, free_port, run_daemon_with, until  # noqa: F401
from tests.helpers.scripted import InlineExecutor

import desk.live
from desk.cli import main

D = Decimal
NANOS = 1_000_000_000
BARS = 3


def test_live_daemon_on_ibkr_health_kill_cancels_at_ib_and_sigterm_reconciles(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    monkeypatch.setattr(desk.live, "default_executor", InlineExecutor)
    clock, made = one_clock_desk(monkeypatch)
    port = free_port()
    cfg = tmp_path / "ibkr.yaml"
    cfg.write_text(json.dumps({"capital": "10000", "risk": str(resting_risk_file(tmp_path / "r")),
                               "api": {"port": port}, "venues": [ibkr_venue()]}))
    state = tmp_path / "state"
    url = f"http://127.0.0.1:{port}"

    def drive(stopped: threading.Event) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["first_health"] = until("/health", lambda: httpx.get(url + "/health", timeout=2).json(), stopped)
        h = {"X-OPS-TOKEN": (state / "ops_token").read_text().strip()}
        with httpx.Client(base_url=url, headers=h, timeout=5) as c:
            until("the warm-up", lambda: c.get("/status").json()["counts"]["bars"] == 0 and made
                  and c.get("/health").json()["components"]["engine"]["status"] == "ok", stopped)
            for k in range(BARS):  # one bar a minute: IB's feed asks 5 s after each close
                clock.move_to(bar_close_ns(k) + 6 * NANOS)
                until(f"bar {k + 1}", lambda: c.get("/status").json()["counts"]["bars"] == k + 1, stopped)
            out["health"] = c.get("/health").json()
            out["status"] = c.get("/status").json()
            (gw,) = made
            # a manual AAPL buy far below the market: it rests at IB (orderRef = its ClientOrderId)
            r = c.post("/orders", json={"symbol": "AAPL.IBKR", "side": "BUY", "quantity": "3", "price": "150.00"})
            assert r.status_code == 201, r.text
            out["o1"] = r.json()  # sent: IB acknowledges it asynchronously (orderStatus Submitted)
            out["o1_accepted"] = until("ACCEPTED", lambda: [
                o["status"] for o in c.get("/orders").json()["orders"]
                if o["client_order_id"] == out["o1"]["client_order_id"]] == ["ACCEPTED"], stopped)
            out["ib_order"] = next((oid, o.orderRef, o.lmtPrice, o.totalQuantity) for oid, _, o in gw.placed
                                   if o.orderRef == out["o1"]["client_order_id"])
            out["open_at_ib"] = [o.orderRef for _, _, o, _, _ in gw.open_orders]
            r = c.post("/kill", json={"enabled": False, "reason": "test kill"})
            assert r.status_code == 200, r.text
            out["after_kill"] = until("HALTED", lambda: (s := c.get("/status").json())["trading_state"] == "HALTED"
                                      and s, stopped)
            # IB confirms the cancel; the adapter reports it after its settle time (1 s of clock): time passes
            coid = out["o1"]["client_order_id"]

            def canceled() -> Any:
                clock.move_to(clock.now + NANOS // 2)
                got = [o for o in c.get("/orders", params={"status": "all"}).json()["orders"]
                       if o["client_order_id"] == coid]
                return got and got[0]["status"] == "CANCELED" and got[0]
            out["o1_after_kill"] = until("CANCELED", canceled, stopped)
            out["canceled_at_ib"] = list(gw.canceled)
            out["open_at_ib_after"] = [o.orderRef for _, _, o, _, _ in gw.open_orders]
            out["held"] = gw.held
        return out

    code, got = run_daemon_with(["run", "--config", str(cfg), "--headless", "--bars", str(BARS),
                                 "--state-dir", str(state)], drive)
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    # /health: the IBKR venue by name, connected, not halted
    assert got["health"]["venues"] == {"IBKR": {"status": "ok", "connected": True, "halted": False,
                                                "throttled_until_ns": None}}
    assert got["health"]["components"]["engine"] == {"status": "ok", "trading_state": "ACTIVE", "bars": BARS}
    st = got["status"]
    assert (st["venue_status"], st["mode"], st["quote"]) == ("IBKR CONNECTED", "PAPER", "USD")
    # the manual order reached IB under its ClientOrderId, 3 AAPL at 150.00, and rested there
    coid = got["o1"]["client_order_id"]
    assert got["o1"]["status"] == "SUBMITTED" and got["o1_accepted"]
    assert got["ib_order"][1:] == (coid, 150.0, 3.0) and coid in got["open_at_ib"]
    # POST /kill: HALTED, and the desk's working order canceled at IB (cancelOrder with its IB order id)
    assert got["after_kill"]["trading_state"] == "HALTED"
    assert got["ib_order"][0] in got["canceled_at_ib"] and coid not in got["open_at_ib_after"]
    assert got["o1_after_kill"]["status"] == "CANCELED"
    # SIGTERM: reconciled once more, the stop journaled, exit 0 with the summary
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["venue"] == "IBKR" and summary["venue_state"] == "IBKR CONNECTED"
    assert "unreconciled" not in summary and summary["trading_state"] == "HALTED" and summary["bars"] == BARS
    assert D(summary["positions"]["AAPL.IBKR"]["quantity"]) == D(str(got["held"]))
    with sqlite3.connect(state / "desk.sqlite") as c:
        meta = dict(c.execute("SELECT key, value FROM meta"))
        typ, payload = c.execute("SELECT type, payload FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    assert meta["status"] == "stopped" and meta["stopped_by"] == "SIGTERM"
    assert typ == "AlertRaised" and json.loads(payload)["code"] == "DAEMON_STOPPED"
    assert json.loads(payload)["message"].endswith("; 0 still working")
    assert "api serving" in err and f"url=http://127.0.0.1:{port}" in err
