"""The daemon (desk/daemon.py): a real ``desk run --headless --api-port``
process stopped by SIGTERM or SIGINT exits 0 with its store flushed (the
last journal row is the DAEMON_STOPPED alert, committed with a checkpoint
at a step boundary, ``meta.status`` says how it stopped); a finished
replay keeps serving; a busy port and a non-loopback bind without a token
are exit 2 before anything is touched; the generated token file is 0600
and the token is never logged. Plus the parts in-process: cancel or keep
on stop, the token file, the log format, uvicorn without its signal
capture.

Subprocesses are polled with a deadline, never slept on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """``desk run --headless --api-port PORT --state-dir STATE ...`` in a
    subprocess; stdout and stderr go to files (a killed process never
    blocks a pipe reader)."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None, name: str = "d") -> None:
        self.port = free_port()
        self.state = tmp / f"{name}-state"
        self.out_path, self.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        e = {k: v for k, v in os.environ.items() if k not in ("OPS_TOKEN",)}
        e.update(env or {})
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.out_path, "w") as fo, open(self.err_path, "w") as fe:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "desk.cli", "run", "--headless", "--api-port", str(self.port),
                 "--state-dir", str(self.state), *args],
                cwd=ROOT, env=e, stdout=fo, stderr=fe)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    def token(self) -> str:
        return (self.state / "ops_token").read_text().strip()

    def wait_until(self, what: str, check, deadline_s: float = 20.0):
        """Poll ``check()`` until it returns something truthy (polling a
        subprocess with a deadline; the daemon's own clock is not ours)."""
        end = time.monotonic() + deadline_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.proc.returncode}) waiting for {what}:\n"
                                     f"{self.stderr[-3000:]}")
            try:
                got = check()
            except (httpx.TransportError, OSError, ValueError, KeyError, IndexError):
                got = None
            if got:
                return got
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}:\n{self.stderr[-3000:]}")
            time.sleep(0.05)

    def wait_healthy(self) -> dict:
        return self.wait_until("/health", lambda: httpx.get(self.url + "/health", timeout=2).json())

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"X-OPS-TOKEN": self.token()}, timeout=5)

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"X-OPS-TOKEN": self.token()}, timeout=5)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def meta(state: Path) -> dict[str, str]:
    with sqlite3.connect(state / "desk.sqlite") as c:
        return dict(c.execute("SELECT key, value FROM meta"))


def last_journal(state: Path) -> tuple[int, str, dict]:
    with sqlite3.connect(state / "desk.sqlite") as c:
        seq, typ, payload = c.execute("SELECT seq, type, payload FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    return seq, typ, json.loads(payload)




@pytest.fixture
def daemons(tmp_path):
    """Start daemons with ``daemons(*args)``; any left running are killed."""
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None, name: str | None = None) -> Daemon:
        d = Daemon(tmp_path, *args, env=env, name=name or f"d{len(started)}")
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def restore_logging():
    """``desk.cli.main`` configures the root logger; put it back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ msg=")


def order_rows(state: Path, coid: str) -> tuple[str, str]:
    with sqlite3.connect(state / "desk.sqlite") as c:
        (engine_status,) = c.execute("SELECT status FROM orders WHERE client_order_id=?", (coid,)).fetchone()
    with sqlite3.connect(state / "venue-paper.sqlite") as c:
        (venue_status,) = c.execute("SELECT status FROM orders WHERE client_order_id=?", (coid,)).fetchone()
    return engine_status, venue_status


# ---------------------------------------------------------------- real daemon processes
def _replay_csv(tmp_path: Path, rows: int = 200) -> Path:
    """A synthetic BTCUSDT 1-minute kline CSV (closes around 100): fewer
    than the ~1,040 bars the models need before their first fit, so no fit
    slows the test down."""
    from tests.unit.test_cli import HEADER, good_rows

    f = tmp_path / "BTCUSDT-1m-d.csv"
    f.write_text(HEADER + "".join(good_rows(rows)))
    return f


def test_sigterm_cancels_working_orders_flushes_the_store_and_exits_0(daemons, tmp_path):
    # a replay paced at 20 steps/s: still running when stopped (the SIM default is stopped in test_oneshot)
    from tests.app.engines import resting_risk_file

    d = daemons("--data", str(_replay_csv(tmp_path, 900)), "--speed", "20", "--risk", str(resting_risk_file(tmp_path / "r")))
    health = d.wait_healthy()
    assert health["status"] == "ok"
    token_file = d.state / "ops_token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = d.token()
    assert len(token) == 43  # secrets.token_urlsafe(32): 32 bytes in unpadded base64url
    d.wait_until("bars", lambda: d.get("/status").json()["counts"]["bars"] > 2)
    # a manual LIMIT buy at half the market rests at the venue
    r = d.post("/orders", {"symbol": "BTCUSDT.BINANCE", "side": "BUY", "quantity": "1", "order_type": "LIMIT",
                           "price": "50"})
    assert r.status_code == 201, r.text
    coid = r.json()["client_order_id"]
    assert r.json()["status"] == "ACCEPTED", r.json()

    assert d.stop(signal.SIGTERM) == 0, d.stderr[-3000:]

    m = meta(d.state)
    assert m["status"] == "stopped" and m["stopped_by"] == "SIGTERM"
    seq, typ, payload = last_journal(d.state)
    assert typ == "AlertRaised" and payload["code"] == "DAEMON_STOPPED"
    assert "1 working orders canceled" in payload["message"] and "api.on_stop=cancel" in payload["message"]
    with sqlite3.connect(d.state / "desk.sqlite") as c:
        step, snap = c.execute("SELECT step, snapshot FROM checkpoint").fetchone()
        gov = c.execute("SELECT seq, who, action, reason FROM governance_actions ORDER BY seq DESC LIMIT 1").fetchone()
        canceled = c.execute("SELECT payload FROM journal WHERE type='OrderCanceled'").fetchall()
    snap = json.loads(snap)
    assert step == snap["stats"]["bars"] > 2 and snap["working"] == []  # a step boundary, nothing left working
    assert not snap["stats"]["finished"]
    assert gov == (seq, "daemon", "STOP", "SIGTERM")
    assert [json.loads(p)["reason"] for (p,) in canceled if json.loads(p)["client_order_id"] == coid] == \
        ["DAEMON_STOP SIGTERM"]
    assert order_rows(d.state, coid) == ("CANCELED", "CANCELED")
    # the audit log has the cancel
    audit = [json.loads(x) for x in (d.state / "audit" / "orders.jsonl").read_text().splitlines()]
    assert any(a.get("type") == "OrderCanceled" and a.get("client_order_id") == coid for a in audit)

    # the run's summary so far on stdout, as a live daemon prints at its stop (a break test found none)
    summary = json.loads(d.stdout.splitlines()[-1])
    assert summary["finished"] is False and summary["bars"] == snap["stats"]["bars"]
    assert summary["orders"].get("CANCELED", 0) >= 1
    err = d.stderr
    assert token not in err and token not in d.stdout
    assert f"path={token_file}" in err
    lines = [ln for ln in err.splitlines() if ln]
    assert lines and all(LOG_LINE.match(ln) for ln in lines), [ln for ln in lines if not LOG_LINE.match(ln)][:3]
    assert "SIGTERM received: stopping" in err


def test_a_finished_replay_keeps_serving_and_sigint_exits_0(daemons, tmp_path):
    data = _replay_csv(tmp_path)
    d = daemons("--data", str(data), "--speed", "max")
    summary = d.wait_until("the summary on stdout", lambda: json.loads(d.stdout.splitlines()[0]))
    assert summary["finished"] is True and summary["bars"] == 200  # too short to fit a model: fast
    # still serving after the end of its data
    assert d.wait_healthy()["status"] == "ok"
    st = d.get("/status").json()
    assert st["counts"]["bars"] == summary["bars"]
    assert d.stop(signal.SIGINT) == 0, d.stderr[-3000:]
    m = meta(d.state)
    assert m["status"] == "finished" and m["stopped_by"] == "SIGINT"  # a finished run stays finished
    assert last_journal(d.state)[2]["code"] == "DAEMON_STOPPED"
    assert len(d.stdout.splitlines()) == 1


def test_busy_port_and_non_loopback_without_token_exit_2_before_anything(tmp_path, capsys, monkeypatch,
                                                                          restore_logging):
    from desk.cli import main

    monkeypatch.delenv("OPS_TOKEN", raising=False)
    handlers = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["run", "--headless", "--api-port", str(port), "--state-dir", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and f"127.0.0.1:{port} is already in use" in err
    assert not (tmp_path / "a" / "desk.sqlite").exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # put back

    code = main(["run", "--headless", "--api-host", "0.0.0.0", "--api-port", str(free_port()),
                 "--state-dir", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "0.0.0.0" in err and "OPS_TOKEN" in err
    assert not (tmp_path / "b" / "desk.sqlite").exists()

    monkeypatch.setenv("OPS_TOKEN", "short")
    code = main(["run", "--headless", "--api-host", "0.0.0.0", "--api-port", str(free_port()),
                 "--state-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "at least 16" in err and "short" not in err

    code = main(["run", "--api-port", "8002", "--state-dir", str(tmp_path / "d")])
    assert code == 2 and "--headless" in capsys.readouterr().err


# ---------------------------------------------------------------- in-process parts
def _stop_with(tmp_path: Path, on_stop: str) -> tuple[list[str], object]:
    from desk.daemon import ApiOptions, _Daemon
    from tests.app.engines import place_resting_buys, wired_sim

    built = wired_sim(tmp_path / on_stop)
    try:
        e = built.engine
        coids = asyncio.run(place_resting_buys(e, 3))
        assert [e.orders[c].status.value for c in coids] == ["ACCEPTED"] * 3
        d = _Daemon(built, None, ApiOptions(on_stop=on_stop), None, None, 0)
        d.stop_signal = "SIGTERM"
        asyncio.run(d._stop_orders(None))
        return coids, e
    finally:
        built.close()


def test_on_stop_cancel_cancels_the_desks_working_orders(tmp_path):
    coids, e = _stop_with(tmp_path, "cancel")
    state = tmp_path / "cancel"
    assert [order_rows(state, c) for c in coids] == [("CANCELED", "CANCELED")] * 3
    seq, typ, payload = last_journal(state)
    assert payload["message"] == ("daemon stopped by SIGTERM: 3 working orders canceled (api.on_stop=cancel); "
                                  "0 still working")
    assert meta(state)["status"] == "stopped"


def test_on_stop_keep_leaves_them_working(tmp_path):
    coids, e = _stop_with(tmp_path, "keep")
    state = tmp_path / "keep"
    assert [order_rows(state, c) for c in coids] == [("ACCEPTED", "OPEN")] * 3
    seq, typ, payload = last_journal(state)
    assert payload["message"] == ("daemon stopped by SIGTERM: 3 working orders kept (api.on_stop=keep); "
                                  "3 still working")
    with sqlite3.connect(state / "desk.sqlite") as c:
        snap = json.loads(c.execute("SELECT snapshot FROM checkpoint").fetchone()[0])
    assert sorted(o["client_order_id"] for o in snap["working"]) == sorted(coids)  # restart resumes them


def test_state_dir_token_is_created_0600_once_and_reused(tmp_path):
    from desk.daemon import state_dir_token

    tok, path, created = state_dir_token(tmp_path)
    assert created and path == tmp_path / "ops_token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", tok)
    assert state_dir_token(tmp_path) == (tok, path, False)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        state_dir_token(tmp_path)
    path.unlink()
    path.write_text("")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="empty"):
        state_dir_token(tmp_path)


def test_explicit_token_env_wins_over_file(tmp_path):
    from desk.daemon import explicit_token

    f = tmp_path / "tok"
    f.write_text("from-the-file-0123456789\n")
    os.chmod(f, 0o600)
    assert explicit_token(f, {"OPS_TOKEN": "from-env"}) == ("from-env", "$OPS_TOKEN")
    assert explicit_token(f, {}) == ("from-the-file-0123456789", str(f))
    assert explicit_token(None, {}) == (None, "")
    with pytest.raises(ConfigError, match="empty"):
        explicit_token(None, {"OPS_TOKEN": "  "})
    os.chmod(f, 0o640)
    with pytest.raises(ConfigError, match="lets others read it"):
        explicit_token(f, {})


def test_log_lines_are_one_line_key_value_and_redacted():
    from desk.daemon import KeyValueFormatter, RedactFilter

    fmt, red = KeyValueFormatter(), RedactFilter(["TOPSECRET-123"])
    rec = logging.LogRecord("desk.x", logging.WARNING, __file__, 1, 'two\nlines "quoted" %s', ("TOPSECRET-123",),
                            None)
    rec.created = 0.25
    rec.kv = {"path": "/var/desk/ops_token", "note": "a b"}
    assert red.filter(rec)
    assert fmt.format(rec) == ('1970-01-01T00:00:00.250Z WARNING desk.x msg="two\\nlines \\"quoted\\" ***" '
                               'path=/var/desk/ops_token note="a b"')
    try:
        raise RuntimeError("boom TOPSECRET-123")
    except RuntimeError:
        import sys as _sys

        rec2 = logging.LogRecord("desk.y", logging.ERROR, __file__, 1, "failed", None, _sys.exc_info())
    red.filter(rec2)
    line = fmt.format(rec2)
    assert "\n" not in line and "TOPSECRET" not in line and "boom ***" in line


def test_bind_socket_reports_a_busy_port():
    from desk.daemon import bind_socket

    s = bind_socket("127.0.0.1", 0)
    try:
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} is already in use"):
            bind_socket("127.0.0.1", port)
    finally:
        s.close()


async def test_uvicorn_runs_without_touching_the_signal_handlers():
    import uvicorn
    from fastapi import FastAPI

    from desk.daemon import _Server, bind_socket

    def mine(signum, frame):  # pragma: no cover - never called
        pass

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # stock uvicorn replaces them while serving (and re-raises the signal after): what the daemon avoids
        stock = uvicorn.Server(uvicorn.Config(FastAPI(), log_config=None))
        with stock.capture_signals():
            assert signal.getsignal(signal.SIGTERM) == stock.handle_exit
        app = FastAPI()

        @app.get("/ping")
        async def ping():
            return {"pong": True}

        sock = bind_socket("127.0.0.1", 0)
        server = _Server.make(app)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://127.0.0.1:{sock.getsockname()[1]}/ping")
        assert r.json() == {"pong": True}
        server.should_exit = True
        await task
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        for sig, h in before.items():
            signal.signal(sig, h)


def test_telegram_token_must_be_in_the_environment():
    from desk.config import TelegramConfig
    from desk.daemon import ApiOptions, _telegram_token

    api = ApiOptions(telegram=TelegramConfig(chat_ids=[7], bot_token_env="DESK_TEST_BOT"))
    with pytest.raises(ConfigError, match=r"alerts.telegram.bot_token_env: \$DESK_TEST_BOT is not set") as ei:
        _telegram_token(api, {})
    assert ei.value.exit_code == 2
    assert _telegram_token(api, {"DESK_TEST_BOT": "123:abc"}) == "123:abc"
    assert _telegram_token(ApiOptions(), {}) is None


async def test_telegram_gets_alerts_and_answers_commands(tmp_path, caplog):
    """The daemon's Telegram wiring against a stub Bot API on loopback: a
    /status from an allow-listed chat is answered with the trading state, a
    halt's alert and the stop's DAEMON_STOPPED reach the chat, and the bot
    token never appears in the log."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from desk.config import TelegramConfig
    from desk.daemon import ApiOptions, _Daemon, _Server, bind_socket
    from tests.app.engines import wired_sim

    bot_token = "4242:TEST-bot-token-value"
    sent: list[dict] = []
    polls = asyncio.Event()

    async def get_updates(request):
        body = await request.json()
        if body.get("offset") is None:  # the first poll: one command
            return JSONResponse({"ok": True, "result": [{"update_id": 10, "message": {
                "chat": {"id": 7}, "date": 0, "text": "/status"}}]})
        polls.set()
        await asyncio.sleep(0.2)  # a (short) long poll
        return JSONResponse({"ok": True, "result": []})

    async def send_message(request):
        sent.append(await request.json())
        return JSONResponse({"ok": True, "result": {}})

    stub = Starlette(routes=[Route(f"/bot{bot_token}/getUpdates", get_updates, methods=["POST"]),
                             Route(f"/bot{bot_token}/sendMessage", send_message, methods=["POST"])])

    sock = bind_socket("127.0.0.1", 0)
    server = _Server.make(stub)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    built = wired_sim(tmp_path / "s")
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        tg = TelegramConfig(chat_ids=[7], api_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
        d = _Daemon(built, None, ApiOptions(telegram=tg), None, None, 0)
        d.telegram_token, d.secrets = bot_token, [bot_token]
        d._stop = asyncio.Event()
        task = asyncio.create_task(d._start_telegram())
        await asyncio.wait_for(polls.wait(), 10)
        assert sent[0]["chat_id"] == 7 and sent[0]["text"].startswith("ACTIVE; halted venues: none")
        await built.engine.governance.halt("test", "telegram wiring")  # no alert by itself
        built.engine.alert("ERROR", "TEST_ALERT", "something broke")
        d.stop_signal = "SIGTERM"
        d._stop.set()
        await d._stop_orders(None)
        await d._stop_telegram()
        await asyncio.wait_for(task, 10)
        texts = [m["text"] for m in sent[1:]]
        assert texts[0] == "[ERROR] TEST_ALERT: something broke"
        assert texts[1].startswith("[WARNING] DAEMON_STOPPED: daemon stopped by SIGTERM")
        assert all(m["chat_id"] == 7 for m in sent)
        assert bot_token not in caplog.text and "4242:" not in caplog.text
    finally:
        built.close()
        server.should_exit = True
        await serving


# ---------------------------------------------------------------- deploy files
#: the metric names of the issue (desk/metrics.py serves them)
METRICS = {"desk_orders_total", "desk_denials_total", "desk_fills_total", "desk_fees_total",
           "desk_order_latency_seconds", "desk_pnl_realized", "desk_pnl_unrealized", "desk_equity",
           "desk_trading_state", "desk_canary_weight", "desk_allocation_weight", "desk_venue_connected",
           "desk_event_loop_lag_seconds", "desk_store_write_seconds"}
HISTOGRAMS = {"desk_order_latency_seconds", "desk_event_loop_lag_seconds", "desk_store_write_seconds"}


def _exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from _exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _exprs(v)


def test_grafana_dashboard_names_only_the_desks_metrics():
    dash = json.loads((ROOT / "deploy" / "grafana" / "desk.json").read_text())
    exprs = list(_exprs(dash))
    assert len(exprs) >= 14
    named = set()
    for e in exprs:
        for m in re.findall(r"\b(desk_[a-z_]+)", e):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            assert base in METRICS, f"{m} in {e!r} is not a desk metric"
            if base != m:
                assert base in HISTOGRAMS, f"{m}: only histograms have _bucket/_sum/_count"
            named.add(base)
    assert named == METRICS  # every metric has a panel
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


def test_dashboard_metrics_are_what_the_api_serves():
    from prometheus_client import CollectorRegistry

    from desk.metrics import DeskMetrics

    reg = CollectorRegistry()
    DeskMetrics(reg)
    served = set()
    for fam in reg.collect():
        served.add(fam.name + "_total" if fam.type == "counter" else fam.name)
    assert METRICS <= served, sorted(METRICS - served)


def test_systemd_unit():
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str
    text = (ROOT / "deploy" / "desk.service").read_text()
    unit.read_string(text)
    svc = unit["Service"]
    exec_start = svc["ExecStart"].split()
    assert exec_start[1:4] == ["run", "--headless", "--config"] and "--api-port" in exec_start
    assert exec_start[exec_start.index("--api-host") + 1] == "127.0.0.1"
    assert not any("token" in a.lower() for a in exec_start)  # never on a command line
    assert svc["Type"] == "simple" and svc["KillSignal"] == "SIGTERM" and svc["KillMode"] == "mixed"
    assert svc["Restart"] == "on-failure" and svc["RestartPreventExitStatus"].split() == ["2", "3"]
    assert int(svc["TimeoutStopSec"]) >= 30 and svc["EnvironmentFile"].startswith("/etc/")
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict" and svc["UMask"] == "0077"
    assert "OPS_TOKEN=" not in "".join(ln for ln in text.splitlines() if not ln.startswith("#"))


async def test_a_store_failure_halts_and_keeps_serving_until_stopped(tmp_path):
    """In-process ``_Daemon.main``: the engine's run fails with a store
    error (it halts itself); the daemon stays up, the API answers, and a
    stop then ends it with exit 1 (the last commit fails too: logged)."""
    from core.store import StoreError
    from desk.api import create_app
    from desk.daemon import ApiOptions, _Daemon, bind_socket
    from tests.app.engines import wired_sim

    built = wired_sim(tmp_path / "s")
    e = built.engine
    failed = asyncio.Event()

    async def no_warm_up():
        return None

    async def run_fails(max_bars=None):
        await e.governance.halt("store", "disk full (simulated)")
        failed.set()
        raise StoreError("desk.sqlite: commit failed: disk I/O error (simulated)")

    e.warm_up, e.run = no_warm_up, run_fails
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    token = "in-process-token-0123456789"
    d = _Daemon(built, type("O", (), {"bars": None})(), ApiOptions(port=port), create_app(e, token=token), sock, port)
    try:
        main = asyncio.create_task(d.main())
        await asyncio.wait_for(failed.wait(), 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"X-OPS-TOKEN": token}) as c:
            for _ in range(100):  # the failure is seen on the loop's next turns
                if d.exit_code == 1:
                    break
                await asyncio.sleep(0.01)
            st = (await c.get("/status")).json()
        assert d.exit_code == 1 and not main.done()
        assert st["trading_state"] == "HALTED"
        d._on_stop_signal("SIGTERM")
        assert await asyncio.wait_for(main, 10) == 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            asyncio.get_running_loop().remove_signal_handler(sig)
        sock.close()
        built.close()
