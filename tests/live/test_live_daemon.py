"""The daemon on a live venue (issue 6/8): ``desk run --config <binance>
--headless --api-port P`` (or ``api.port`` in the config) runs the live
engine against the local fake Binance (tests/venues/binance_server.py, in a
thread of this process, see tests/live/test_live_binance.py) and serves the
control API in the engine's loop.

``desk.cli.main`` runs in the test's main thread (the daemon installs its
signal handlers there); a driver thread talks to the API over loopback
and, at the end, sends the process a real SIGTERM, which the daemon's loop
handler takes (a SIGTERM handler of the test's own stands in before and
after, so a stray signal can never end pytest). Nothing sleeps on time to
pass: the driver polls with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from desk.cli import main
from tests.app.engines import resting_risk_file
from tests.live.test_live_binance import KEY, KEY_ENV, SECRET, creds, fake, write_config  # noqa: F401 - fixtures

#: the daemon's bar limit: the fake pushes 30 live bars at subscription, the desk processes 20 and then
#: serves on (so the models place no order while the test drives the API)
BARS = 20
#: a LIMIT buy that rests on the fake: its ask is 20000.01 and a buy fills only at or above it
REST_PX = "15000.00"


@pytest.fixture(autouse=True)
def _root_log_handlers():
    """desk.cli.main points the root logger at this test's stderr: put the
    handlers (and the level) back afterwards."""
    import logging

    saved, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = saved
    logging.root.setLevel(level)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_config(tmp_path: Path, srv: Any, *, api: dict[str, Any] | None = None) -> Path:
    """The fake's config (test_live_binance.write_config) with rails that let
    an order rest far from the market (collar and stale-data check off) and
    an ``api`` section when given."""
    p = write_config(tmp_path, srv)
    cfg = json.loads(p.read_text())
    cfg["risk"] = str(resting_risk_file(tmp_path / "r"))
    if api is not None:
        cfg["api"] = api
    p.write_text(json.dumps(cfg))
    return p


def until(what: str, check: Callable[[], Any], stopped: threading.Event, deadline_s: float = 20.0) -> Any:
    """Poll ``check()`` until it returns something truthy (the daemon runs
    on real time in the main thread)."""
    end = time.monotonic() + deadline_s
    while True:
        if stopped.is_set():
            raise AssertionError(f"the daemon returned while waiting for {what}")
        try:
            got = check()
        except (httpx.TransportError, OSError, ValueError, KeyError):
            got = None
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_daemon_with(argv: list[str], drive: Callable[[threading.Event], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """``main(argv)`` in this thread, ``drive(stopped)`` in another; the
    driver ends by sending SIGTERM to this process (also when it fails, as
    long as the daemon runs). Returns main's exit code and what the driver
    returned; re-raises the driver's failure."""
    got: dict[str, Any] = {}
    stopped = threading.Event()
    stray: list[int] = []

    def driver() -> None:
        try:
            got.update(drive(stopped))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            got["error"] = exc
            got["trace"] = traceback.format_exc()
        finally:
            if not stopped.is_set():
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stray.append(signum))
    try:
        t = threading.Thread(target=driver, daemon=True)
        t.start()
        try:
            code = main(argv)
        finally:
            stopped.set()
        t.join(20)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in got:
        raise AssertionError(f"the driver failed:\n{got['trace']}")
    assert not stray, "a SIGTERM reached the test's own handler, not the daemon's"
    return code, got


def fake_order(fake: Any, coid: str) -> Any:
    return fake.run(lambda: next(o for o in fake.srv.orders.values() if o.client_order_id == coid))


def open_desk_orders(fake: Any) -> list[str]:
    return fake.run(lambda: sorted(o.client_order_id for o in fake.srv.orders.values()
                                   if o.is_open and o.client_order_id.startswith("NHD-")))


def test_live_daemon_serves_the_api_kill_halts_and_sigterm_cancels_and_exits_0(tmp_path, fake, creds, capsys,
                                                                              monkeypatch):
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    port = free_port()
    cfg = live_config(tmp_path, fake.srv, api={"port": port})  # api.port in the config, no --api-port
    state = tmp_path / "state"
    url = f"http://127.0.0.1:{port}"

    def drive(stopped: threading.Event) -> dict[str, Any]:
        out: dict[str, Any] = {}
        health = until("/health", lambda: httpx.get(url + "/health", timeout=2).json(), stopped)
        h = {"X-OPS-TOKEN": (state / "ops_token").read_text().strip()}
        out["token"] = h["X-OPS-TOKEN"]
        with httpx.Client(base_url=url, headers=h, timeout=5) as c:
            until(f"{BARS} bars", lambda: c.get("/status").json()["counts"]["bars"] == BARS, stopped)
            out["health"] = c.get("/health").json()
            out["first_health"] = health
            out["status"] = c.get("/status").json()
            # desk status --state-dir finds the daemon through the api_url file (no --url, no config)
            out["status_cli"] = main(["status", "--state-dir", str(state), "--json"])
            # a manual buy below the fake's ask rests there
            order = {"symbol": "BTCUSDT.BINANCE", "side": "BUY", "quantity": "0.01", "price": REST_PX}
            r = c.post("/orders", json=order)
            assert r.status_code == 201, r.text
            out["o1"] = r.json()
            out["o1_on_fake_before_kill"] = fake_order(fake, r.json()["client_order_id"]).status
            r = c.post("/kill", json={"enabled": False, "reason": "test kill"})
            assert r.status_code == 200, r.text
            out["after_kill"] = until("HALTED", lambda: (s := c.get("/status").json())["trading_state"] == "HALTED"
                                      and s, stopped)
            out["o1_on_fake_after_kill"] = until(
                "the cancel at the fake",
                lambda: (st := fake_order(fake, out["o1"]["client_order_id"]).status) != "NEW" and st, stopped)
            r = c.post("/resume", json={"reason": "test resume"})
            assert r.status_code == 200, r.text
            r = c.post("/orders", json=order)
            assert r.status_code == 201, r.text
            out["o2"] = r.json()
            out["working_before_stop"] = [o["client_order_id"] for o in c.get("/orders").json()["orders"]]
        return out

    code, got = run_daemon_with(["run", "--config", str(cfg), "--headless", "--bars", str(BARS),
                                 "--state-dir", str(state)], drive)
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    # /health: the venue by name, connected, not halted; the engine ACTIVE after the warm-up and BARS live bars
    assert got["health"]["status"] == "ok"
    assert got["health"]["venues"] == {"BINANCE": {"status": "ok", "connected": True, "halted": False,
                                                   "throttled_until_ns": None}}
    assert got["health"]["components"]["engine"] == {"status": "ok", "trading_state": "ACTIVE", "bars": BARS}
    st = got["status"]
    assert (st["venue_status"], st["mode"], st["quote"], st["trading_state"]) == (
        "BINANCE CONNECTED", "PAPER", "USDT", "ACTIVE")  # a testnet account is PAPER
    assert got["status_cli"] == 0  # ACTIVE
    cli_status = [json.loads(line) for line in out.splitlines() if '"journal_seq"' in line]
    assert len(cli_status) == 1 and cli_status[0]["venue_status"] == "BINANCE CONNECTED"
    assert (state / "api_url").read_text().strip() == f"http://127.0.0.1:{port}"
    # the manual order rested on the fake; POST /kill halted the desk and canceled it there
    assert got["o1"]["status"] == "ACCEPTED" and got["o1_on_fake_before_kill"] == "NEW"
    assert got["after_kill"]["trading_state"] == "HALTED"
    assert got["o1_on_fake_after_kill"] == "CANCELED"
    # SIGTERM: every working desk order canceled at the fake (api.on_stop: cancel by default), none left
    assert got["o2"]["client_order_id"] in got["working_before_stop"]
    assert fake_order(fake, got["o2"]["client_order_id"]).status == "CANCELED"
    assert open_desk_orders(fake) == []
    # the store: stopped by SIGTERM, the stop journaled last and committed
    with sqlite3.connect(state / "desk.sqlite") as c:
        meta = dict(c.execute("SELECT key, value FROM meta"))
        seq, typ, payload = c.execute("SELECT seq, type, payload FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        gov = c.execute("SELECT seq, who, action, reason FROM governance_actions ORDER BY seq DESC LIMIT 1").fetchone()
        states = [json.loads(p) for (p,) in c.execute(
            "SELECT payload FROM journal WHERE type='TradingStateChanged' ORDER BY seq")]
        step, snap = c.execute("SELECT step, snapshot FROM checkpoint").fetchone()
        canceled = {json.loads(p)["client_order_id"]: json.loads(p)["reason"]
                    for (p,) in c.execute("SELECT payload FROM journal WHERE type='OrderCanceled'")}
    assert meta["status"] == "stopped" and meta["stopped_by"] == "SIGTERM"
    assert typ == "AlertRaised" and json.loads(payload)["code"] == "DAEMON_STOPPED"
    stop_cancels = sorted(k for k, why in canceled.items() if why == "DAEMON_STOP SIGTERM")
    assert got["o2"]["client_order_id"] in stop_cancels
    assert all(fake_order(fake, k).status == "CANCELED" for k in stop_cancels)
    assert json.loads(payload)["message"] == (
        f"daemon stopped by SIGTERM: {len(stop_cancels)} working orders canceled (api.on_stop=cancel); "
        f"0 still working")
    assert gov == (seq, "daemon", "STOP", "SIGTERM")
    snap = json.loads(snap)
    assert step == snap["stats"]["bars"] == BARS and snap["working"] == []  # committed with nothing working
    assert canceled[got["o2"]["client_order_id"]] == "DAEMON_STOP SIGTERM"
    assert [(s["state"], s["who"].split(":")[0]) for s in states] == [("HALTED", "api"), ("ACTIVE", "api")]
    # stdout: the run's JSON summary at the stop, reconciled (the venue's BTC moved by the book's position)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["venue"] == "BINANCE" and summary["live"] is False and summary["bars"] == BARS
    assert summary["venue_state"] == "BINANCE CONNECTED" and "unreconciled" not in summary
    assert "api serving" in err and f"url=http://127.0.0.1:{port}" in err
    assert len(got["token"]) == 43 and got["token"] not in err + out  # generated, 0600, never logged
    assert (state / "ops_token").stat().st_mode & 0o777 == 0o600
    assert SECRET not in err + out and KEY not in err + out


def test_api_port_flag_and_on_stop_keep_leave_the_order_working(tmp_path, fake, creds, capsys, monkeypatch):
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    port = free_port()
    cfg = live_config(tmp_path, fake.srv)  # no api section: --api-port on the command line
    state = tmp_path / "state"
    url = f"http://127.0.0.1:{port}"

    def drive(stopped: threading.Event) -> dict[str, Any]:
        until("/health", lambda: httpx.get(url + "/health", timeout=2).json(), stopped)
        h = {"X-OPS-TOKEN": (state / "ops_token").read_text().strip()}
        with httpx.Client(base_url=url, headers=h, timeout=5) as c:
            until("bars", lambda: c.get("/status").json()["counts"]["bars"] == 5, stopped)
            r = c.post("/orders", json={"symbol": "BTCUSDT.BINANCE", "side": "BUY", "quantity": "0.01",
                                        "price": REST_PX})
            assert r.status_code == 201, r.text
            return {"coid": r.json()["client_order_id"], "health": c.get("/health").json()}

    code, got = run_daemon_with(["run", "--config", str(cfg), "--headless", "--bars", "5", "--api-port", str(port),
                                 "--on-stop", "keep", "--state-dir", str(state)], drive)
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert got["health"]["venues"]["BINANCE"]["connected"] is True
    kept = open_desk_orders(fake)  # kept working at the venue: the manual buy (and any model order)
    assert got["coid"] in kept and fake_order(fake, got["coid"]).status == "NEW"
    with sqlite3.connect(state / "desk.sqlite") as c:
        (payload,) = c.execute("SELECT payload FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        reasons = [json.loads(p)["reason"] for (p,) in c.execute("SELECT payload FROM journal WHERE type='OrderCanceled'")]
    assert not [r for r in reasons if r.startswith("DAEMON_STOP")]
    n = len(kept)
    assert json.loads(payload)["message"] == (
        f"daemon stopped by SIGTERM: {n} working orders kept (api.on_stop=keep); {n} still working")
    assert "unreconciled" not in json.loads(out.strip().splitlines()[-1])


def test_api_port_without_headless_and_a_public_bind_without_token_exit_2_before_the_venue(
        tmp_path, fake, creds, capsys, monkeypatch):
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    cfg = live_config(tmp_path, fake.srv)
    state = tmp_path / "state"
    assert main(["run", "--config", str(cfg), "--api-port", str(free_port()), "--state-dir", str(state)]) == 2
    assert "add --headless" in capsys.readouterr().err
    assert main(["run", "--config", str(cfg), "--headless", "--api-port", str(free_port()), "--api-host", "0.0.0.0",
                 "--state-dir", str(state)]) == 2
    assert "OPS_TOKEN" in capsys.readouterr().err
    assert fake.srv.requests == [] and not state.exists()


def test_missing_credentials_exit_2_naming_the_variable_and_the_port_is_released(tmp_path, fake, creds, capsys,
                                                                                  monkeypatch):
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    monkeypatch.delenv(KEY_ENV)
    port = free_port()
    cfg = live_config(tmp_path, fake.srv)
    code = main(["run", "--config", str(cfg), "--headless", "--api-port", str(port),
                 "--state-dir", str(tmp_path / "state")])
    assert code == 2 and KEY_ENV in capsys.readouterr().err
    assert fake.srv.requests == []  # refused before any request
    with socket.socket() as s:  # the daemon's socket was closed
        s.bind(("127.0.0.1", port))
