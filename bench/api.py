"""The control API under load (issue 8), printed, not asserted.

Run:  .venv/bin/python bench/api.py [--orders 1000] [--bars 3000] [--rtt-ms 1]

Prints, from one process that runs the real engine (``desk.wiring.build``
on the SIM default) and the real API (``desk.api.create_app`` under uvicorn
on a loopback port, in the engine's event loop, as the daemon does):

1. Kill switch: the time from sending ``POST /kill`` (an HTTP client in
   another thread) to the last cancel request reaching the venue, with
   ``--orders`` resting desk orders; each cancel request is answered after
   ``--rtt-ms`` (a simulated venue round trip). Beside it, in the same run,
   the naive way: the same number of cancels awaited one by one.
2. ``/stream``: events per second delivered to 1 and to 10 SSE clients (in
   a separate client process, as real clients are) while the engine replays
   the SIM market at max speed, ``--bars`` bars per phase; per client and
   in total, and how many clients the hub dropped for falling behind.
3. The engine's event-loop lag p99 (a probe that sleeps 5 ms and measures
   how late it wakes) and its bars per second, with no client, with 10 and
   with 1, in the same run.

The client process (``--clients N``) gets the token through ``OPS_TOKEN``,
never on its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

D = Decimal
PROBE_S = 0.005


# ---------------------------------------------------------------- the client process
async def _client_main(url: str, n: int, replay: bool) -> None:
    """N SSE clients on ``url``/stream; on the first stdin line (a journal
    seq), waits until each has seen it (10 s at most), then prints per
    client ``[events, time.monotonic() of the last event]`` as JSON. With
    ``replay``: each reads the whole journal (``last_event_id=0``,
    ``follow=false``) at once and the same is printed when all are done."""
    import httpx

    token = os.environ["OPS_TOKEN"]
    if replay:
        got: list[list[float]] = []

        async def whole(client: httpx.AsyncClient) -> None:
            c, t = 0, 0.0
            async with client.stream("GET", url + "/stream?last_event_id=0&follow=false",
                                     headers={"X-OPS-TOKEN": token}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("id:"):
                        c += 1
                        t = time.monotonic()
            got.append([c, t])

        async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=n + 2)) as client:
            print(json.dumps(time.monotonic()), flush=True)
            await asyncio.gather(*(whole(client) for _ in range(n)))
        print(json.dumps(got), flush=True)
        return
    counts = [0] * n
    last_t = [0.0] * n
    last_id = [0] * n
    connected = [False] * n

    async def one(i: int, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", url + "/stream", headers={"X-OPS-TOKEN": token}) as r:
            connected[i] = True
            async for line in r.aiter_lines():
                if line.startswith("id:"):
                    counts[i] += 1
                    last_id[i] = int(line[3:])
                    last_t[i] = time.monotonic()

    limits = httpx.Limits(max_connections=n + 2)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        tasks = [asyncio.create_task(one(i, client)) for i in range(n)]
        loop = asyncio.get_running_loop()
        while not all(connected):
            await asyncio.sleep(0.01)
        print("connected", flush=True)
        head = int(await loop.run_in_executor(None, sys.stdin.readline) or 0)
        end = time.monotonic() + 10
        while min(last_id) < head and time.monotonic() < end:
            await asyncio.sleep(0.01)
        print(json.dumps([[c, t] for c, t in zip(counts, last_t)]), flush=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------- helpers
def _risk_file(folder: Path) -> Path:
    p = folder / "risk.yaml"
    # 1,000 resting orders placed before the first bar, far from the market: the collar and the
    # stale-data rail (on by default) are turned off for this measurement
    p.write_text("max_submits: 1000000\nmax_cancels: 1000000\nmax_modifies: 1000000\n"
                 "defaults:\n  collar_pct: null\n  stale_after_s: null\n")
    return p


def _build(state: Path, *, capital: str, inline: bool) -> Any:
    from desk.wiring import RunOptions, build

    opts = RunOptions(state_dir=state, capital=D(capital), risk_file=_risk_file(state.parent), speed=None)
    if inline:
        from models.executor import InlineFitExecutor

        return build(opts, executor=InlineFitExecutor())
    return build(opts)


async def _rest_orders(engine: Any, n: int) -> None:
    """``n`` LIMIT buys at half the market: they rest at the paper venue."""
    from core.enums import OrderSide, OrderType

    iids = sorted(engine.instruments, key=str)
    market = getattr(engine.feed, "inner", engine.feed).market
    for k in range(n):
        iid = iids[k % len(iids)]
        inst = engine.instruments[iid]
        price = inst.round_price(str(D(engine.portfolio.marks.get(iid) or market.last_close(iid.symbol)) / 2))
        qty = max(inst.min_qty, (D("20") / price).quantize(inst.step_size))
        order = engine.submit("hmm_v1", iid, OrderSide.BUY, qty, price, price, OrderType.LIMIT)
        if order.status.value == "DENIED":
            raise SystemExit(f"order {k} denied: {order.reason}")
    await engine.send_pending()
    engine.flush()
    working = len(engine.working_orders())
    if working != n:
        raise SystemExit(f"{working} orders working, {n} wanted")


def _record_cancels(engine: Any, rtt_s: float) -> list[float]:
    """Wrap the venue's ``cancel_order``: note when each request is made,
    answer after ``rtt_s``."""
    times: list[float] = []
    inner = engine.venue.cancel_order

    async def cancel_order(order: Any, reason: str = "CANCELED") -> None:
        times.append(time.perf_counter())
        if rtt_s:
            await asyncio.sleep(rtt_s)
        await inner(order, reason)

    engine.venue.cancel_order = cancel_order
    return times


async def _serve(app: Any) -> tuple[Any, asyncio.Task[Any], str]:
    from desk.daemon import _Server, bind_socket

    sock = bind_socket("127.0.0.1", 0)
    server = _Server.make(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def _replay_clients(url: str, token: str, n: int) -> tuple[int, float, float]:
    """``n`` clients (another process) each read the whole journal through
    ``/stream``; returns (events per client, median events/s per client,
    total events/s)."""
    env = {**os.environ, "OPS_TOKEN": token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--clients", str(n), "--url", url, "--replay", env=env,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    t0 = json.loads(await proc.stdout.readline())
    got = json.loads(await proc.stdout.readline())
    await proc.wait()
    per = [c / max(t - t0, 1e-9) for c, t in got]
    return int(got[0][0]), statistics.median(per), sum(c for c, _ in got) / max(max(t for _, t in got) - t0, 1e-9)


def _ms(s: float) -> str:
    return f"{s * 1000:9.1f} ms"


# ---------------------------------------------------------------- 1. kill
async def bench_kill(tmp: Path, n: int, rtt_s: float) -> None:
    import httpx

    from desk.api import create_app

    built = _build(tmp / "kill", capital="10000000", inline=True)
    naive_built = _build(tmp / "kill-naive", capital="10000000", inline=True)
    try:
        e = built.engine
        await _rest_orders(e, n)
        times = _record_cancels(e, rtt_s)
        token = secrets.token_urlsafe(32)
        server, task, url = await _serve(create_app(e, token=token))
        try:
            def post() -> tuple[float, float, Any]:
                with httpx.Client() as c:
                    c.get(url + "/health")  # a warm connection, as an operator's client has
                    t0 = time.perf_counter()
                    r = c.post(url + "/kill", json={"enabled": False, "mode": "HALT", "reason": "bench"},
                               headers={"X-OPS-TOKEN": token}, timeout=120)
                    return t0, time.perf_counter(), r.json()

            t0, t_answer, answer = await asyncio.to_thread(post)
            e.flush()
            catch_up = [await _replay_clients(url, token, k) for k in (1, 10)]
        finally:
            server.should_exit = True
            await task
        assert answer["trading_state"] == "HALTED" and answer["cancels"] == n, answer
        assert len(times) == n, len(times)

        ne = naive_built.engine
        await _rest_orders(ne, n)
        ntimes = _record_cancels(ne, rtt_s)
        t1 = time.perf_counter()
        for o in list(ne.working_orders()):
            await ne.cancel(o, "HALT")
        t_naive = time.perf_counter() - t1
        assert len(ntimes) == n
        print(f"1. kill switch, {n} working orders, venue round trip {rtt_s * 1000:g} ms per cancel")
        print(f"   POST /kill -> last cancel request   {_ms(max(times) - t0)}")
        print(f"   POST /kill -> answer (all canceled) {_ms(t_answer - t0)}")
        print(f"   naive: cancels awaited one by one   {_ms(t_naive)}   "
              f"({t_naive / max(t_answer - t0, 1e-9):.1f}x the API's answer)")
        for k, (events, per, total) in zip((1, 10), catch_up):
            print(f"   /stream catch-up from the journal ({events} events), {k:2d} client(s): "
                  f"{per:8.0f} events/s per client, {total:8.0f} in total")
    finally:
        built.close()
        naive_built.close()


# ---------------------------------------------------------------- 2-3. stream and lag
class _LagProbe:
    def __init__(self) -> None:
        self.samples: list[float] = []
        self.task: asyncio.Task[Any] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            self.samples.append(time.perf_counter() - t - PROBE_S)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def take(self) -> list[float]:
        out, self.samples = self.samples, []
        return out


def _p99(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[98] if len(xs) > 1 else xs[0]


async def bench_stream(tmp: Path, bars: int) -> None:
    from desk.api import create_app

    built = _build(tmp / "stream", capital="10000", inline=False)
    try:
        e = built.engine
        token = secrets.token_urlsafe(32)
        app = create_app(e, token=token)
        server, task, url = await _serve(app)
        hub = app.state.runtime.hub
        try:
            await e.warm_up()
            probe = _LagProbe()
            probe.start()
            rows = []
            for clients in (0, 10, 1, 0):
                proc = None
                if clients:
                    env = {**os.environ, "OPS_TOKEN": token}
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, __file__, "--clients", str(clients), "--url", url, env=env,
                        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                    assert proc.stdout is not None and proc.stdin is not None
                    line = await proc.stdout.readline()
                    assert line.strip() == b"connected", line
                    while len(hub.subscribers) < clients:
                        await asyncio.sleep(0.01)
                seq0 = hub.head
                probe.take()
                bars0 = e.stats.bars
                t0 = time.monotonic()
                await e.run(max_bars=bars)
                wall = time.monotonic() - t0
                lag = probe.take()
                done_bars = e.stats.bars - bars0
                hub.poll()
                events = hub.head - seq0
                row = {"clients": clients, "bars_per_s": done_bars / wall, "lag_p99": _p99(lag), "n": len(lag),
                       "lag_med": statistics.median(lag) if lag else float("nan"),
                       "lag_max": max(lag) if lag else float("nan"), "events": events, "wall": wall}
                if proc is not None:
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(f"{hub.head}\n".encode())
                    await proc.stdin.drain()
                    got = json.loads(await proc.stdout.readline())
                    await proc.wait()
                    per = [c / max(t - t0, 1e-9) for c, t in got]
                    row.update(delivered=sum(c for c, _ in got), per_client=statistics.median(per),
                               total_rate=sum(per), complete=sum(1 for c, _ in got if c >= events))
                rows.append(row)
            print(f"2-3. SIM replay at max speed, {bars} bars per phase, journal events per phase shown; "
                  f"stream clients in a separate process")
            print("   clients  bars/s  lag median  p99 (samples)       events  delivered/s per client  total/s  "
                  "complete")
            for r in rows:
                extra = (f"  {r['per_client']:10.0f}            {r['total_rate']:8.0f}  "
                         f"{r['complete']}/{r['clients']}") if r["clients"] else ""
                print(f"   {r['clients']:7d}  {r['bars_per_s']:6.0f}  {r['lag_med'] * 1000:7.1f} ms  "
                      f"{r['lag_p99'] * 1000:6.1f} ms ({r['n']:4d})  {r['events']:7d}{extra}")
            base = {"bars_per_s": (rows[0]["bars_per_s"] + rows[3]["bars_per_s"]) / 2,
                    "lag_p99": (rows[0]["lag_p99"] + rows[3]["lag_p99"]) / 2}
            ten = rows[1]
            print(f"   with 10 clients: bars/s x{ten['bars_per_s'] / base['bars_per_s']:.2f}, "
                  f"loop-lag p99 x{ten['lag_p99'] / base['lag_p99']:.2f} of no client (mean of both runs); "
                  f"clients dropped for falling behind: {hub.overflows}")
        finally:
            server.should_exit = True
            await task
    finally:
        built.close()


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as d:
        tmp = Path(d)
        await bench_kill(tmp, args.orders, args.rtt_ms / 1000)
        await bench_stream(tmp, args.bars)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=1000)
    p.add_argument("--bars", type=int, default=3000)
    p.add_argument("--rtt-ms", type=float, default=1.0)
    p.add_argument("--clients", type=int, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--replay", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.clients:
        asyncio.run(_client_main(args.url, args.clients, args.replay))
        return
    import logging

    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
