"""``desk.metrics.DeskMetrics`` and ``GET /metrics``.

Pinned by hand: the round trip of tests/unit/test_engine.py (buy 5 ETH at
2000.00 with 0.005 ETH fee, sell 4.995 ETH at 2100.00 with 10.4895 USDT
fee) gives 2 fills, fees 10 + 10.4895 = 20.4895 USDT, realized 479.0105,
equity 10479.0105, two orders each SUBMITTED, ACCEPTED and FILLED; an order
placed through the API raises ``desk_orders_total``; a denial counts under
its reason; the trading state gauge follows a halt; a fresh registry per
app (nothing in the process-global one)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from desk.metrics import DeskMetrics
from tests.api.conftest import AUTH, BTC, close_desk, hand_engine, open_desk
from tests.app.engines import close_engine


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text page."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(page: dict, name: str, **labels) -> float:
    return page[(name, tuple(sorted(labels.items())))]


async def test_round_trip_figures_by_hand(tmp_path):
    engine = hand_engine(tmp_path / "state", ["2000", "2000", "2000", "2000", "2100", "2100", "2100"],
                         ["1", "1", "0", "0", "0"], lows=["1999", "1999", "1999", "1990", "2099", "2099", "2099"])
    m = DeskMetrics(CollectorRegistry())
    m.attach(engine)
    await engine.warm_up()
    await engine.run()
    page = samples(m.exposition().decode())
    assert value(page, "desk_fills_total", venue="BINANCE") == 2
    assert abs(value(page, "desk_fees_total", venue="BINANCE", currency="USDT") - 20.4895) < 1e-9
    for status in ("SUBMITTED", "ACCEPTED", "FILLED"):
        assert value(page, "desk_orders_total", venue="BINANCE", status=status) == 2
    for status in ("DENIED", "REJECTED", "CANCELED", "EXPIRED"):
        assert value(page, "desk_orders_total", venue="BINANCE", status=status) == 0
    assert abs(value(page, "desk_pnl_realized", model="m0") - 479.0105) < 1e-9
    assert value(page, "desk_pnl_unrealized", model="m0") == 0
    assert abs(value(page, "desk_equity") - 10479.0105) < 1e-9
    # the paper venue accepts at the engine time of the submit: latency 0 s, twice
    assert value(page, "desk_order_latency_seconds_count") == 2
    assert value(page, "desk_order_latency_seconds_sum") == 0
    assert value(page, "desk_trading_state") == 0
    assert value(page, "desk_trading_state_enum", state="ACTIVE") == 1
    assert value(page, "desk_venue_connected", venue="BINANCE") == 1
    assert value(page, "desk_store_write_seconds_count") >= 2  # at least one commit per order sent
    m.detach()
    assert "flush" not in vars(engine.store)  # the timer is gone with the metrics
    close_engine(engine)


async def test_orders_total_rises_after_an_order_and_denials_count_by_reason(desk):
    before = samples((await desk.client.get("/metrics")).text)
    r = await desk.client.post("/orders", json={"symbol": BTC, "side": "BUY", "quantity": "0.001",
                                                "price": "30000.00"}, headers=AUTH)
    assert r.json()["status"] == "ACCEPTED"
    # 1 BTC at 30000 is 30000 USDT > the max notional 10000: denied
    r = await desk.client.post("/orders", json={"symbol": BTC, "side": "BUY", "quantity": "1",
                                                "price": "30000.00"}, headers=AUTH)
    assert r.json()["status"] == "DENIED" and "max notional 10000" in r.json()["reason"]
    after = samples((await desk.client.get("/metrics")).text)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("desk_orders_total", venue="SIM", status="SUBMITTED") == 1
    assert delta("desk_orders_total", venue="SIM", status="ACCEPTED") == 1
    assert delta("desk_orders_total", venue="SIM", status="DENIED") == 1
    assert delta("desk_denials_total", reason="MAX_NOTIONAL") == 1
    assert delta("desk_order_latency_seconds_count") == 1


async def test_trading_state_canary_and_allocation_gauges(desk):
    page = samples((await desk.client.get("/metrics")).text)
    assert value(page, "desk_canary_weight", model="hmm_v2_canary") == 0.1
    phases = {p: value(page, "desk_canary_phase", model="hmm_v2_canary", phase=p)
              for p in ("warming", "progressing", "promoted", "rolled_back", "paused", "manual")}
    assert sum(phases.values()) == 1
    await desk.client.post("/kill", json={"enabled": False, "reason": "m"}, headers=AUTH)
    page = samples((await desk.client.get("/metrics")).text)
    assert value(page, "desk_trading_state") == 2
    assert value(page, "desk_trading_state_enum", state="HALTED") == 1
    assert value(page, "desk_trading_state_enum", state="ACTIVE") == 0
    await desk.client.post("/models/hmm_v2_canary/rollback", headers=AUTH)
    page = samples((await desk.client.get("/metrics")).text)
    assert value(page, "desk_canary_phase", model="hmm_v2_canary", phase="rolled_back") == 1
    assert value(page, "desk_canary_weight", model="hmm_v2_canary") == 0  # no longer a canary
    families = {dict(k[1])["family"] for k in page if k[0] == "desk_allocation_weight"}
    assert families == {"hmm_v1", "hmm_v2_canary"}


async def test_a_fresh_registry_per_app_and_none_in_the_global_one(tmp_path):
    e1 = hand_engine(tmp_path / "a", ["2000"] * 3, ["0"])
    e2 = hand_engine(tmp_path / "b", ["2000"] * 3, ["0"])
    d1, d2 = await open_desk(e1), await open_desk(e2)
    assert d1.app.state.runtime.metrics.registry is not d2.app.state.runtime.metrics.registry
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("desk_")]
    await close_desk(d1)
    await close_desk(d2)
    close_engine(e1)
    close_engine(e2)


async def test_the_sampler_records_event_loop_lag(tmp_path):
    engine = hand_engine(tmp_path / "state", ["2000"] * 3, ["0"])
    m = DeskMetrics(CollectorRegistry())
    m.attach(engine)
    task = asyncio.get_running_loop().create_task(m.run_sampler(0.001))
    for _ in range(1000):
        await asyncio.sleep(0.001)
        if m.registry.get_sample_value("desk_event_loop_lag_seconds_count") >= 2:
            break
    task.cancel()
    assert m.registry.get_sample_value("desk_event_loop_lag_seconds_count") >= 2
    m.detach()
    close_engine(engine)


def test_labels_are_bound_once(tmp_path):
    engine = hand_engine(tmp_path / "state", ["2000"] * 3, ["0"])
    m = DeskMetrics(CollectorRegistry())
    m.attach(engine)
    child = m._orders("BINANCE", "SUBMITTED")
    assert m._orders("BINANCE", "SUBMITTED") is child  # cached, not .labels() per event
    assert Decimal(str(m.registry.get_sample_value("desk_orders_total", {"venue": "BINANCE",
                                                                         "status": "SUBMITTED"}))) == 0
    m.detach()
    close_engine(engine)


async def test_a_promoted_version_keeps_its_phase_when_paused_and_resumed(desk):
    await desk.client.post("/models/hmm_v2_canary/promote", json={"reason": "by hand"}, headers=AUTH)
    await desk.client.post("/models/hmm_v2_canary/pause", json={"reason": "look"}, headers=AUTH)
    await desk.client.post("/models/hmm_v2_canary/resume", json={"reason": "ok"}, headers=AUTH)
    page = samples((await desk.client.get("/metrics")).text)
    phases = {p: value(page, "desk_canary_phase", model="hmm_v2_canary", phase=p)
              for p in ("warming", "progressing", "promoted", "rolled_back", "replaced", "paused", "manual")}
    assert phases["promoted"] == 1 and sum(phases.values()) == 1
