"""Engines for the app tests.

* :func:`scripted_sim_engine`: ``core.engine.Engine`` built directly (as
  tests/unit/test_engine.py does) on the seeded SIM market with the default
  model ids and weights, but scripted models (no HMM fit, no worker process),
  so its order flow is fixed and fast.
* :func:`wired_sim` : the real ``desk.wiring.build`` of the SIM default
  (store, audit log, paper venue, HMM models) with an inline executor; used
  without warm-up, for resting orders placed by hand.
* :func:`place_resting_buys`: LIMIT buys far below the market that rest.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from core.audit import AuditLog
from core.clock import TestClock
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderSide, OrderType
from core.risk import RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store
from tests.helpers.scripted import InlineExecutor, ScriptedModel
from venues.feeds import SimFeed
from venues.paper import PaperConfig, PaperVenue
from venues.sim import SimMarket

D = Decimal

#: the default models' ids, weights and stages (desk.wiring.default_model_specs)
SPECS = [ModelSpec("hmm_v1", D("0.9"), "live"), ModelSpec("hmm_v2_canary", D("0.1"), "canary")]
#: scripted targets: in, hold, add, out (fills, resting re-priced orders, exits)
TARGETS = {"hmm_v1": ["0.5", "0.5", "0.5", "1", "1", "1", "0", "0", "0.3", "0.3"],
           "hmm_v2_canary": ["1", "1", "1", "1", "0", "0", "0", "0.5", "0.5", "0.5"]}


def scripted_sim_engine(state_dir: Path, *, seed: int = 7, warmup_bars: int = 4,
                        risk: RiskConfig | None = None, targets: dict[str, list[str]] | None = None) -> Engine:
    """The SIM market (seeded) with scripted models under the default ids
    (``targets`` replaces :data:`TARGETS`, e.g. smaller ones to leave cash
    for orders placed by hand)."""
    targets = targets or TARGETS
    state_dir.mkdir(parents=True, exist_ok=True)
    clock = TestClock()
    market = SimMarket(seed=seed)
    instruments = {i.id: i for i in market.instruments.values()}
    store = Store(state_dir / "desk.sqlite")
    models = {s.model_id: {iid: ScriptedModel(s.model_id, iid, targets[s.model_id], warmup=2)
                           for iid in sorted(instruments, key=str)} for s in SPECS}
    risk = risk or RiskConfig(allowed_symbols=frozenset(str(i) for i in instruments), max_order_notional=D("10000"))
    return Engine(
        config=EngineConfig(router=RouterConfig(capital=D("10000"))), clock=clock, store=store,
        audit=AuditLog(state_dir / "audit" / "orders.jsonl"), feed=SimFeed(market, warmup_bars),
        instruments=instruments, models=models, specs=list(SPECS), risk=RiskEngine(risk),
        executor=InlineExecutor(),
        venue_factory=lambda cb: PaperVenue(state_dir / "venue-paper.sqlite", "SIM", "USDT", instruments, clock,
                                            PaperConfig(), cb),
    )


def close_engine(engine: Engine) -> None:
    """Close the stores and the audit log of an engine built here."""
    for closer in (engine.audit.close, engine.venue.close, engine.store.close):  # type: ignore[attr-defined]
        try:
            closer()
        except Exception:
            pass


#: rails for tests that park orders far from the market (``place_resting_buys`` at half the price) before
#: any bar: the desk's default collar (5 %) and stale-data check would deny them, so these tests turn both off
RESTING_RISK_YAML = "defaults:\n  collar_pct: null\n  stale_after_s: null\n"


def resting_risk_file(where: Path) -> Path:
    """Write :data:`RESTING_RISK_YAML` beside ``where`` (a tmp path) and return its path."""
    p = Path(where).parent / "resting-risk.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(RESTING_RISK_YAML)
    return p


def wired_sim(state_dir: Path):
    """``desk.wiring.build`` of the SIM default with an inline executor
    (nothing fitted unless warmed up), its collar widened for resting orders."""
    from desk.wiring import RunOptions, build

    return build(RunOptions(data=[], state_dir=state_dir, risk_file=resting_risk_file(state_dir)),
                 executor=InlineExecutor())


async def place_resting_buys(engine: Engine, n: int, *, below: str = "0.5", model_id: str = "hmm_v1") -> list[str]:
    """Send ``n`` LIMIT buys at ``below`` × the current price (they rest:
    the paper venue fills a buy only when a bar's low goes below the price).
    Returns their ClientOrderIds, all ACCEPTED."""
    iids = sorted(engine.instruments, key=str)
    coids = []
    for k in range(n):
        iid = iids[k % len(iids)]
        inst = engine.instruments[iid]
        feed = getattr(engine.feed, "inner", engine.feed)
        ref = engine.portfolio.marks.get(iid) or feed.market.last_close(iid.symbol)
        price = inst.round_price(str(D(ref) * D(below)))
        qty = max(inst.min_qty, (D("20") / price).quantize(inst.step_size))
        order = engine.submit(model_id, iid, OrderSide.BUY, qty, price, price, OrderType.LIMIT)
        coids.append(order.client_order_id)
    await engine.send_pending()
    engine.flush()  # commit the acceptances (the engine commits them at its next step)
    return coids


def run(coro):
    """Run a coroutine to completion outside any app."""
    return asyncio.run(coro)
