"""The desk on a real venue: ``desk run --config FILE [--live]`` with one
Binance or IBKR venue (issue 6).

:func:`build_live` is the composition root of a live desk, the counterpart
of ``desk.wiring.build`` for a replay or the SIM market, and reuses its
parts (``StateDir``, the store, the audit log, the default models and
lifecycle, the rails, the ``HALT`` file, ``capital_allocations.json``):

0. what can be checked without the venue is checked before the state dir
   is created or locked: the risk and policy files parse, the IBKR
   settings, the Binance adapters' credentials (a refused start creates
   nothing);
1. the state dir is locked and its setup checked first (the fingerprint
   holds the mode ``live``, the config file's sha256, the venue's settings,
   capital, order type, day zone and models), so a second desk or another
   setup is refused before the venue is touched; a start refused from here
   on leaves a dir that held no store as it found it
   (``desk.wiring.StateDir.abandon``);
2. the venue is built from its config entry (``BinanceVenue(BinanceConfig.
   from_mapping(vc), clock, live=live)`` or ``IbkrVenue(IbkrConfig.
   from_mapping(vc), clock)``) and started (``await venue.start()``): a
   non-testnet venue without ``--live``, missing credentials (the message
   names the environment variable), a key that can withdraw, an unknown
   contract or symbol, or a venue that cannot be reached ends the start with
   exit 2 (:class:`LiveStartError`);
3. the instruments are the venue's (exchange filters; an IB future's
   multiplier); the engine gets a real-time clock (:class:`LiveEngineClock`:
   the engine's ``set_time`` from bar times is a no-op on it) and the venue
   as ``venue_factory=venue.bind``;
4. a continued run restores its checkpoint (the live feed continues after
   its last bar); a new run stores the venue's balances as the
   reconciliation baseline (``core.recovery.balance_baseline``: a real
   account already holds coins); unknown submits of the previous process are
   registered with the adapter (``expect_unknown``) and looked up with the
   working orders (``prefetch``) so the start-up reconciliation has answers;
5. the live feed fetches its warm-up bars over REST (``prepare``).

:func:`run_live` runs it headless: warm-up (new run) or reconciliation then
catch-up (continued run), the engine on the live feed, and beside it the
order updates (Binance's user data stream, ``next_order_updates``), a
commit of venue reports that arrive between bars, and the ``HALT`` file
check, every second. SIGINT/SIGTERM stop it; SIGUSR1 halts. At the end the
desk's working orders are cancelled (``api.on_stop: cancel``, the default)
or left working (``keep``), the books are reconciled once more, and one JSON
summary goes to stdout. Exit 0, or 3 when it ended halted by an unreconciled
difference. Without ``--headless`` the Textual app runs the same engine
(the header shows a red ``LIVE`` for a venue that trades real money,
``PAPER`` for a testnet or paper account, and the venue's connection state).

The governance policy (``policy``/``--policy``) applies as on paper.

With ``--headless`` and ``--api-port``/``api.port`` the same live engine
runs under the daemon (``desk.daemon.run_daemon(..., live_build=...)``):
the control API is served in the engine's loop exactly as on paper (token,
``/health`` with the venue and its connection, ``/status``, ``/kill``,
``api_url`` in the state dir, Telegram), :func:`build_live` is awaited in
that loop after the socket is bound, the housekeeping and order updates
run beside the engine, and SIGTERM/SIGINT cancel (or keep, ``api.on_stop``)
the desk's working orders, reconcile once more (:func:`reconcile_at_stop`),
journal the stop, commit, print the JSON summary and exit 0 (3 when
unreconciled). ``--api-port`` without ``--headless`` is refused (exit 2);
``api.port`` in the config is ignored by the TUI (logged).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping

from core.audit import AuditLog, repair_audit
from core.clock import LiveClock
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderType, TradingState
from core.errors import EXIT_OK, EXIT_UNRECONCILED, ConfigError, DeskError
from core.identifiers import COID_TAG_META_KEY, InstrumentId, is_desk_order, is_own_order, new_coid_tag
from core.instruments import Instrument
from core.ports import FitExecutor, RegimeModel
from core.risk import DESK_DEFAULT_LIMITS, RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import StoreError
from core.venue_errors import VenueError

log = logging.getLogger("desk.live")

NANOS = 1_000_000_000
#: seconds between REST polls of the order updates while the user data stream is down
#: (Binance: open orders per symbol + the account, ~26 weight; 6 a minute stay far under 1,200)
ORDER_POLL_S = 10.0
#: the stop's waits on a venue (each cancel, each venue's final read and
#: reconciliation, its settle, its close): a venue that does not answer within
#: this many seconds is logged and left (the next start reconciles), so a stop
#: (SIGHUP, SIGTERM, the end of a run) ends in seconds and frees ``desk.lock``
STOP_VENUE_WAIT_S = 5.0
#: after a SIGHUP in the TUI, how long Textual's own shutdown may take once
#: the app halted and persisted, before the stop sequence goes on without it (s)
TUI_HANGUP_EXIT_S = 5.0


class LiveStartError(ConfigError):
    """The live venue could not be started (exit 2): unreachable, refused
    the credentials, or answered an error at start. The message names the
    venue and what it said, never a secret."""


class LiveEngineClock(LiveClock):
    """The real UTC clock for a live engine (``time.time_ns``).

    The engine moves a replay clock to each bar's close time
    (``clock.set_time(max(bar.ts_event, now))``) and back to a checkpoint's
    time on restore; a live clock cannot be moved, and a closed bar is
    always in its past, so :meth:`set_time` and :meth:`advance` do nothing
    here. Every rule on the engine clock (throttles, Retry-After, the daily
    loss, the allocator, canary intervals) then runs on real time."""

    def set_time(self, ts_ns: int) -> None:
        """Ignored: real time moves by itself (see the class docstring)."""

    def advance(self, delta_ns: int) -> None:
        """Ignored: real time moves by itself."""


def default_executor() -> FitExecutor:
    """The fit executor of a live desk: one worker process with one BLAS
    thread (DESIGN.md section 7), started now so the first fit does not wait
    for it."""
    from models.executor import ProcessFitExecutor

    ex = ProcessFitExecutor()
    ex.warm()  # type: ignore[attr-defined]
    return ex


def live_venues(cfg: Any) -> list[tuple[int, Any]]:
    """The Binance and IBKR venues of ``cfg`` (a ``desk.config.DeskConfig``)
    with their index in ``venues``, in config order (the header's order).

    Raises:
        ConfigError: no such venue, or a paper venue beside them (a paper
            venue runs on its own desk), naming them.
    """
    real = [(i, v) for i, v in enumerate(cfg.venues) if v.kind in ("binance", "ibkr")]
    if not real:
        raise ConfigError("venues: no binance or ibkr venue to run live")
    if len(real) < len(cfg.venues):
        names = ", ".join(f"{v.name} ({v.kind})" for v in cfg.venues if v.kind not in ("binance", "ibkr"))
        raise ConfigError(f"venues: {names}: a paper venue runs on its own desk, not beside live venues; "
                          f"remove it from this config")
    return real


def _venue_is_live(vc: Any) -> bool:
    """True when the venue config trades real money (``desk.config``'s
    ``live``: Binance ``testnet: false``; IBKR a live port or account)."""
    return bool(getattr(vc, "live", False))


@dataclass(slots=True)
class LiveBuilt:
    """A live engine ready to run, and what runs beside it.

    Attributes:
        engine: the engine (its venue is started).
        venue: the started venue adapter.
        feed: the live feed (warm-up bars prepared).
        state: the locked state dir (``desk.wiring.StateDir``).
        executor: the fit executor.
        continued: True when a checkpoint was restored.
        live: the venue trades real money (not a testnet or paper account).
        lines: the start-up lines (venue, account, limits, config hash).
        on_stop: ``cancel`` or ``keep`` the working orders at the end.
        venue_lines: how many of ``lines`` (after the first) the venue
            returned from its start (and logged itself).
        mode: ``live`` (``desk.wiring.Built`` compatibility).
        finished_summary: always None (a live run never finishes).
        messages: ``lines`` (``desk.wiring.Built`` compatibility).
    """

    engine: Engine
    venue: Any
    feed: Any
    state: Any
    executor: FitExecutor
    continued: bool
    live: bool
    lines: list[str]
    on_stop: str = "cancel"
    venue_lines: int = 0
    mode: str = "live"
    finished_summary: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)
    _closed: bool = False

    async def aclose(self) -> None:
        """Close the venue (its HTTP/WebSocket sessions or the gateway
        connection), then the fit worker, the store, the audit log and the
        lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self.venue, "close", None)
            if close is not None:
                r = close()
                if asyncio.iscoroutine(r):
                    await _bounded(r, f"closing the venue {getattr(self.venue, 'venue', '')}".rstrip())
        except Exception as exc:  # noqa: BLE001 - the rest must still be closed
            log.warning("closing the venue: %s", exc)
        finally:
            try:
                self.executor.shutdown()
            finally:
                try:
                    self.engine.audit.close()
                    self.engine.store.close()
                finally:
                    self.state.release()


def _fingerprint(cfg: Any, vcs: list[Any], digest: str, capital: Decimal, order_type: OrderType, day_tz: str,
                 specs: list[tuple[ModelSpec, dict[str, Any]]]) -> str:
    """The setup of a live state dir (JSON): another setup is refused. One
    venue is written as ``venue`` (as before several venues existed), several
    as ``venues``."""
    dumped = [vc.model_dump(mode="json", exclude={"urls"}) for vc in vcs]
    where: dict[str, Any] = {"venue": dumped[0]} if len(dumped) == 1 else {"venues": dumped}
    return json.dumps({
        "mode": "live", "config_sha256": digest, **where, "capital": format(capital, "f"),
        "order_type": order_type.value, "day_tz": day_tz,
        "models": [[s.model_id, s.family, s.stage, format(s.weight, "f"), kw] for s, kw in specs],
    }, sort_keys=True)


def _make_venue(vc: Any, clock: LiveEngineClock, *, live: bool, state_dir: Path,
                env: Mapping[str, str] | None) -> Any:
    """The venue adapter of a config entry (not started).

    Raises:
        ConfigError: a bad venue setting, a non-testnet venue without
            ``--live``, or (Binance) a credential variable not set, named
            (the adapters' own start-up errors are ConfigErrors).
    """
    if vc.kind == "binance":
        from venues.binance.adapter import BinanceConfig, BinanceVenue

        venue = BinanceVenue(BinanceConfig.from_mapping(vc), clock, live=live, env=env)
        venue.check_credentials()  # missing keys are refused here, before the store exists
        return venue
    from venues.ibkr.adapter import IbkrVenue

    venue = IbkrVenue(_ibkr_config(vc, state_dir), clock)  # opens its ledger file in the state dir
    venue.reconcile_cash = False  # several currencies; a future's cost is margin, not cash
    return venue


def _ibkr_config(vc: Any, state_dir: Path) -> Any:
    """The ``venues.ibkr.config.IbkrConfig`` of an IBKR config entry, its
    ledger at ``<state_dir>/venue-<name>.sqlite`` (only the path: nothing is
    created here).

    Raises:
        ConfigError: a bad setting, named.
    """
    from venues.ibkr.config import IbkrConfig

    try:
        icfg = IbkrConfig.from_mapping(vc)
    except ValueError as exc:
        raise ConfigError(f"venues[{vc.name}]: {exc}") from None
    return dataclasses.replace(icfg, ledger_path=str(Path(state_dir) / f"venue-{vc.name.lower()}.sqlite"))


def _with_multipliers(venue: Any) -> dict[InstrumentId, Instrument]:
    """The venue's instruments; an IB future carries its contract
    multiplier (``Instrument.multiplier``: notional = price x quantity x
    multiplier) when ``core.instruments.Instrument`` has the field."""
    out = dict(venue.instruments)
    contracts = getattr(venue, "contracts", None) or {}
    names = {f.name for f in dataclasses.fields(Instrument)}
    if "multiplier" not in names:
        return out
    for iid, qc in contracts.items():
        mult = getattr(qc, "multiplier", None)
        if iid in out and isinstance(mult, Decimal) and mult != out[iid].multiplier:  # type: ignore[attr-defined]
            out[iid] = dataclasses.replace(out[iid], multiplier=mult)  # type: ignore[call-arg]
    return out


def _risk(cfg: Any, risk_file: Path | None, instruments: dict[InstrumentId, Instrument], capital: Decimal,
          model_ids: list[str]) -> RiskEngine:
    """The rails: the risk file's limits (checked against this run's
    instruments, venues and models), or the defaults with the capital as the
    largest order notional.

    Raises:
        ConfigError: a bad risk file or a scope not in this run (named).
    """
    allowed = frozenset(str(i) for i in instruments)
    if risk_file is None:
        return RiskEngine(RiskConfig(allowed_symbols=allowed, max_order_notional=capital, defaults=DESK_DEFAULT_LIMITS))
    from desk.risk_config import load_risk_config

    rc = load_risk_config(risk_file, allowed_symbols=allowed, max_order_notional=capital)
    for scope, names, known in (
        ("instruments", rc.per_instrument, {str(i) for i in instruments}),
        ("venues", rc.per_venue, {i.venue for i in instruments}),
        ("models", rc.per_model, set(model_ids)),
    ):
        for name in names:
            if name not in known:
                raise ConfigError(f"--risk: {risk_file}: {scope}.{name}: not in this run; "
                                  f"known {scope}: {', '.join(sorted(known))}")
    return RiskEngine(rc)


async def build_live(cfg: Any, config_path: Path, *, live: bool, state_dir: Path,
                     executor: FitExecutor | None = None, env: Mapping[str, str] | None = None,
                     capital: Decimal | None = None, order_type: OrderType = OrderType.LIMIT,
                     day_tz: str | None = None, risk_file: Path | None = None, interval: str = "1m",
                     on_stop: str | None = None, policy_file: Path | None = None) -> LiveBuilt:
    """Build a live engine from ``cfg`` (module docstring, steps 1-5).

    Args:
        cfg: the ``desk.config.DeskConfig`` (one binance or ibkr venue).
        config_path: the config file (its sha256 goes into the setup and the
            start-up lines).
        live: the operator's ``--live`` (required for a venue trading real money).
        state_dir: the state directory.
        executor: the fit executor (default :func:`default_executor`).
        env: where credentials are read (default ``os.environ``).
        capital: trading capital (quote; default ``cfg.capital`` or 10,000).
        order_type, day_tz, risk_file: as ``desk run`` (``day_tz`` and
            ``risk_file`` default to the config's ``tz`` and ``risk``).
        interval: the bar interval of the live feed (Binance kline interval).
        on_stop: ``cancel`` or ``keep`` (default the config's ``api.on_stop``).

    Must be awaited in the event loop the engine will run in (the venue's
    sessions belong to it).

    Raises:
        ConfigError: bad config, a non-testnet venue without ``--live``,
            missing credentials (naming the environment variable), a key that
            can withdraw, an unknown symbol or contract (exit 2).
        LiveStartError: the venue could not be reached or refused at start (exit 2).
        StateDirError: the state dir is locked or holds another setup (exit 2).
    """
    from desk.config import config_digest
    from desk.wiring import (
        DEFAULT_CAPITAL,
        REFIT_APPLY_LAG,
        StateDir,
        _warmup_bars,
        default_lifecycle,
        default_model_specs,
        make_model,
    )

    chosen = live_venues(cfg)
    for index, vc in chosen:
        if _venue_is_live(vc) and not live:
            what = "testnet is false" if vc.kind == "binance" else f"port {vc.port} / account {vc.account} is live"
            raise ConfigError(f"venues[{index}] {vc.name}: {what}, so it trades real money; add --live to run it")
    is_live = any(_venue_is_live(vc) for _, vc in chosen)
    capital = capital if capital is not None else (cfg.capital if cfg.capital is not None else DEFAULT_CAPITAL)
    day_tz = day_tz or cfg.tz or "UTC"
    risk_file = risk_file if risk_file is not None else cfg.risk
    on_stop = on_stop or cfg.api.on_stop
    digest = config_digest(config_path)
    specs = [(ModelSpec(s.model_id, s.weight, s.stage, s.family, kw), kw) for s, kw in default_model_specs()]
    warmup = max(_warmup_bars(kw) for _, kw in specs)
    fp_text = _fingerprint(cfg, [vc for _, vc in chosen], digest, capital, order_type, day_tz, specs)
    clock = LiveEngineClock()
    venues: list[tuple[int, Any, Any]] = []  # (config index, config entry, adapter)
    store = None
    # every input that can be checked without the venue is checked before the state dir is created or
    # locked: the risk and policy files parse, the IBKR settings, and the Binance adapters (missing
    # credentials, named); an IBKR adapter opens its ledger file in the state dir, so it is built after the lock
    early: dict[int, Any] = {}
    try:
        if risk_file is not None:
            from desk.risk_config import load_risk_config

            load_risk_config(risk_file, allowed_symbols=None, max_order_notional=capital)
        if policy_file is not None:
            from desk.policy_config import load_policy_file

            load_policy_file(policy_file)
        for index, vc in chosen:
            if vc.kind == "binance":
                early[index] = _make_venue(vc, clock, live=live, state_dir=Path(state_dir), env=env)
            else:
                _ibkr_config(vc, Path(state_dir))
    except BaseException:
        await _close_venues(early.values())
        raise
    try:
        state = StateDir(state_dir)
    except BaseException:
        await _close_venues(early.values())
        raise
    try:
        from desk.wiring import open_setup_store

        for index, vc in chosen:
            venue = early.pop(index, None)
            if venue is None:
                venue = _make_venue(vc, clock, live=live, state_dir=state.path, env=env)
            venues.append((index, vc, venue))
        store, existing = open_setup_store(state, fp_text)
        lines: list[str] = []
        for index, vc, venue in venues:
            try:
                started = await venue.start()
            except DeskError:
                raise
            except VenueError as exc:
                raise LiveStartError(f"venue {vc.name} at start: {exc}") from None
            except (OSError, asyncio.TimeoutError) as exc:
                raise LiveStartError(f"venue {vc.name} at start: cannot connect: {exc!r}") from None
            except ValueError as exc:  # IBKR's ContractError: a contract IB does not know (named)
                raise ConfigError(f"venues[{index}] {vc.name}: {exc}") from None
            lines += [str(x) for x in (started or [])]
            if not venue.instruments:
                raise ConfigError(f"venues[{index}] {vc.name}: no instrument to trade")
        n_venue_lines = len(lines)
        instruments: dict[InstrumentId, Instrument] = {}
        for _, _, venue in venues:
            instruments.update(_with_multipliers(venue))
        if len(venues) == 1:
            hub: Any = venues[0][2]
        else:
            from core.venue_hub import VenueHub

            try:
                hub = VenueHub([v for _, _, v in venues])
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        model_ids = [s.model_id for s, _ in specs]
        risk = _risk(cfg, risk_file, instruments, capital, model_ids)
        if executor is None:
            executor = default_executor()
        models: dict[str, dict[InstrumentId, RegimeModel]] = {
            spec.model_id: {iid: make_model(spec.model_id, iid, spec.params) for iid in sorted(instruments, key=str)}
            for spec, _ in specs
        }
        feeds: dict[str, Any] = {}
        for _, vc, venue in venues:
            own = sorted(venue.instruments, key=str)
            if vc.kind == "binance":
                from venues.binance.feed import BinanceLiveFeed

                feeds[venue.venue] = BinanceLiveFeed(venue, own, interval=interval, warmup_bars=warmup)
            else:
                from venues.ibkr.feed import IbkrLiveFeed

                feeds[venue.venue] = IbkrLiveFeed(venue, own, interval=interval, warmup_bars=warmup)
        if len(feeds) == 1:
            feed: Any = next(iter(feeds.values()))
        else:
            from core.livefeed import MergedLiveFeed

            feed = MergedLiveFeed(feeds)
        audit_path = state.path / "audit" / "orders.jsonl"
        fixed = repair_audit(audit_path, store.iter_journal)
        if fixed["torn"] or (fixed["appended"] and store.load_checkpoint() is not None):
            lines.append(f"audit log repaired from the journal: torn last line cut {fixed['torn']}, "
                         f"{fixed['appended']} missing lines appended")
        router = RouterConfig(capital=capital, order_type=order_type, max_order_notional=capital)
        engine = Engine(
            config=EngineConfig(router=router, day_tz=day_tz, lifecycle=default_lifecycle(),
                                fit_apply_lag=REFIT_APPLY_LAG), clock=clock,  # type: ignore[arg-type]
            store=store, model_factory=make_model, audit=AuditLog(audit_path), feed=feed, instruments=instruments,
            models=models, specs=[s for s, _ in specs], risk=risk, executor=executor, venue_factory=hub.bind,
        )
        from core.funding import attach_funding

        attach_funding(engine)  # USD-M funding payments into the book (nothing on spot or IBKR)
        engine.speed = None  # the venue paces the bars
        engine.live = is_live  # type: ignore[attr-defined]  # the API's /status mode: LIVE (real money) or PAPER
        engine.config.yield_every = 1  # the HALT file and the loop are looked at every bar
        engine.halt_file = state.path / "HALT"
        engine.lifecycle.allocations_path = state.path / "capital_allocations.json"
        if policy_file is not None:  # before the restore: the checkpoint holds the rules' windows and cooldowns
            from core.policy_runtime import PolicyRuntime
            from desk.policy_config import check_targets, load_policy_file

            policy = load_policy_file(policy_file)
            check_targets(policy, models=set(models), families={sp.family or sp.model_id for sp, _ in specs},
                          venues={i.venue for i in instruments})
            engine.policy_runtime = PolicyRuntime(engine, policy, policy_file)
            lines.append(f"desk: policy {policy_file}: {engine.policy_runtime.policy.summary()}")
        cp = store.load_checkpoint()
        continued = cp is not None
        if cp is not None:
            engine.restore(cp[1])
        elif existing is None:
            store.meta_set("setup", fp_text)
            store.meta_set("status", "running")
        if store.meta_get(COID_TAG_META_KEY) is None and not engine.orders \
                and store.conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0:
            store.meta_set(COID_TAG_META_KEY, new_coid_tag())  # before the first order: ids unique per state dir
        engine.coid_tag = store.meta_get(COID_TAG_META_KEY) or ""
        halted = store.meta_get("halted_venues")
        if halted:
            engine.halted_venues = set(halted.split(","))
            lines.append(f"desk: WARNING: venue halt kept from before this start: {halted} (no order goes there "
                         f"until it is resumed: palette 'Resume venue V', POST /resume {{\"venue\": \"V\"}})")
        persisted = store.meta_get("trading_state")
        if persisted is not None:
            engine.trading_state = TradingState(persisted)  # the kill switch survives a restart
        from core.recovery import balance_baseline

        sessions = _sessions(engine)
        baselines: dict[str, dict[str, Decimal]] = {}
        try:
            for name, session in sessions.items():
                scoped = session if session.name is not None else None
                baselines[name] = await balance_baseline(engine, capture=not continued, session=scoped)
            engine.flush()  # the setup and the baseline are committed before anything is traded
            for name, session in sessions.items():
                venue = session.venue
                unknown = {c: u.deadline_ns for c, u in session.unknown.items()}
                if unknown and hasattr(venue, "expect_unknown"):
                    venue.expect_unknown(unknown)
                if hasattr(venue, "prefetch"):
                    mine = {o.client_order_id for o in engine.working_orders() if session.owns(o.instrument_id)}
                    await venue.prefetch(sorted(mine | set(unknown)))
            n_warm = await feed.prepare()
        except VenueError as exc:
            raise LiveStartError(f"venue at start: {exc}") from None
        # one first line naming every venue: the venues' own lines follow it (``venue_lines``: the callers
        # skip lines 1..venue_lines, logged by the venue itself)
        named = []
        for _, vc, venue in venues:
            live_word = _venue_is_live(vc)
            env_word = "LIVE (real money)" if live_word else ("testnet" if vc.kind == "binance" else "paper account")
            named.append(f"{vc.name} ({vc.kind}, {env_word})")
        lines.insert(0, f"desk: {', '.join(named)}; config {config_path} sha256={digest}")
        rc = risk.config
        quotes = sorted({v.quote for _, _, v in venues})
        lines.append(
            f"desk: capital {capital} {'/'.join(quotes)}, order type {order_type.value}, max order notional "
            f"{rc.limit('max_order_notional')} {quotes[0]}, {rc.max_submits} submits per "
            f"{rc.window_ns // NANOS} s per venue, rails {'from ' + str(risk_file) if risk_file else 'default'}")
        if len(venues) > 1:
            lines.append("desk: venues isolated: each runs in its own task group; one that fails or hangs is "
                         "DEGRADED, its orders unknown until reconciled, the others keep trading")
        for name in baselines:
            baseline = json.loads(store.meta_get(_baseline_key(sessions[name])) or "{}")
            if baseline:
                lines.append(f"desk: reconciliation baseline of {name} (the account before the desk traded): "
                             + ", ".join(f"{a} {v}" for a, v in sorted(baseline.items())))
        for _, _, venue in venues:
            cash = venue.balance(venue.quote)
            if getattr(venue, "reconcile_cash", True) and cash < capital and not continued:
                lines.append(f"desk: WARNING: {venue.venue} holds {cash} {venue.quote}, less than the capital "
                             f"{capital}: buys beyond it will be refused by the venue")
            foreign_open = [c for c in (venue.open_orders() if hasattr(venue, "open_orders") else {})
                            if is_own_order(c, engine.coid_tag) and c not in engine.orders]
            if foreign_open:
                lines.append(f"desk: WARNING: {venue.venue} has open desk orders this state dir does not know: "
                             f"{', '.join(sorted(foreign_open))} (the first reconciliation halts on them)")
        what = "catch-up bars since the last one processed" if continued else "warm-up bars"
        lines.append(f"desk: {n_warm} {what} of {', '.join(str(i) for i in sorted(instruments, key=str))} "
                     f"({interval}); {'continuing after bar ' + str(engine.stats.bars) if continued else 'a new run'}")
        if not continued:
            short = warmup_shortfall(_warm_counts(feeds.values(), instruments), warmup)
            if short:
                lines.append(warmup_warning(short, warmup, interval))
        built = LiveBuilt(engine, hub, feed, state, executor, continued, is_live, lines, on_stop=on_stop,
                          messages=lines)
        built.venue_lines = n_venue_lines
        for _, _, venue in venues:
            fee_px = await refresh_fee_asset_price(built, venue)
            if fee_px is not None:
                lines.append(f"desk: fees paid in {FEE_ASSET} at {venue.venue} are booked at its price, {fee_px} "
                             f"{venue.quote} now (read every {FEE_PRICE_EVERY_S} s)")
        return built
    except BaseException:
        await _close_venues([*(v for _, _, v in venues), *early.values()])
        try:
            if store is not None:
                store.close()
        except Exception:  # noqa: BLE001
            pass
        # a state dir that held no store is left as this attempt found it (desk.sqlite, the IBKR ledger,
        # audit/ removed; desk.wiring.StateDir.abandon); one that held a setup is not touched
        removed = state.abandon()
        if removed:
            log.info("state dir %s: the refused start removed what it had created: %s", state.path,
                     ", ".join(removed))
        raise


def _warm_counts(feeds: Any, instruments: Any) -> dict[InstrumentId, int]:
    """The warm-up bars each instrument got from its feed's ``prepare``
    (``core.livefeed.LiveFeedBase._warm``, before ``warmup()`` hands them
    over); 0 for an instrument that got none."""
    counts = {iid: 0 for iid in instruments}
    for f in feeds:
        for bar in getattr(f, "_warm", ()):
            counts[bar.instrument_id] = counts.get(bar.instrument_id, 0) + 1
    return counts


def warmup_shortfall(counts: Mapping[InstrumentId, int], need: int) -> dict[InstrumentId, int]:
    """The instruments of ``counts`` (warm-up bars received per instrument)
    that got fewer than ``need`` (the bars the models need before their
    first fit, ``desk.wiring._warmup_bars``), with their count."""
    return {iid: n for iid, n in sorted(counts.items(), key=lambda kv: str(kv[0])) if n < need}


def warmup_warning(short: Mapping[InstrumentId, int], need: int, interval: str) -> str:
    """The start-up WARNING line of a new live run whose warm-up history
    fell short (``short``: instrument -> bars received, each below ``need``):
    how many it got, how many the models need, and that they trade only
    after their first fit, ``need - got`` live bars of ``interval`` later."""
    got = ", ".join(f"{n} warm-up bars of {iid}" for iid, n in short.items())
    later = ", ".join(f"{need - n}" + (f" ({iid})" if len(short) > 1 else "") for iid, n in short.items())
    return (f"desk: WARNING: only {got} ({interval}); the models need {need} before their first fit "
            f"(desk.wiring._warmup_bars): they trade only after they have fitted, {later} more live bars from now")


def log_start_line(line: str) -> None:
    """Log one start-up line: at WARNING when it is a warning (``desk:
    WARNING: ...``), else at INFO."""
    if line.startswith("desk: WARNING: "):
        log.warning(line)
    else:
        log.info(line)


async def _close_venues(venues: Any) -> None:
    """Close the adapters of a refused start (sessions, the IBKR ledger),
    ignoring their errors: the refusal's own error is the one to report."""
    for venue in venues:
        try:
            close = getattr(venue, "close", None)
            r = close() if close is not None else None
            if asyncio.iscoroutine(r):
                await r
        except Exception:  # noqa: BLE001
            pass


def _sessions(engine: Engine) -> dict[str, Any]:
    """The engine's venue sessions by venue name (one, or a
    ``core.venue_hub.SessionGroup``'s)."""
    group = getattr(engine.session, "sessions", None)
    if isinstance(group, dict):
        return dict(group)
    return {engine.session.venue.venue: engine.session}


def _baseline_key(session: Any) -> str:
    from core.recovery import BASELINE_META_KEY, _meta_key

    return _meta_key(BASELINE_META_KEY, session if session.name is not None else None)


# ---------------------------------------------------------------- running
async def _pump_order_updates(built: LiveBuilt, sleep: Callable[[float], Any], venue: Any = None,
                              session: Any = None, on_ok: Callable[[], None] | None = None) -> None:
    """Forever: the venue's order updates (Binance user data stream; its REST
    poll every :data:`ORDER_POLL_S` while the stream is down); a failed read
    is retried after ``min(2**n, 60)`` s. The reports reach the engine
    through its venue callback. ``venue``/``session`` default to the desk's
    one venue and session; ``on_ok`` runs after each successful read."""
    venue = built.venue if venue is None else venue
    session = built.engine.session if session is None else session
    failures = 0
    while True:
        try:
            await venue.next_order_updates()
            failures = 0
            if on_ok is not None:
                on_ok()
        except VenueError as exc:
            failures += 1
            session.note_error(exc)
            wait = min(2 ** (failures - 1), 60)
            log.warning("%s order updates: %s; trying again in %d s", venue.venue, exc, wait)
            await sleep(wait)
            continue
        if getattr(venue, "user_mode", "ws") in ("rest", "poll"):  # polled: the stream is down (or not used)
            await sleep(ORDER_POLL_S)


#: the asset Binance charges fees in when the account pays them with BNB
FEE_ASSET = "BNB"
#: seconds between two reads of the fee asset's price
FEE_PRICE_EVERY_S = 60


async def refresh_fee_asset_price(built: LiveBuilt, venue: Any = None) -> Decimal | None:
    """Binance, when the account holds BNB (so it may pay its fees with it,
    DESIGN.md section 4): read the mid of ``BNB<quote>`` (``GET
    /api/v3/ticker/bookTicker``) and hand it to the portfolio
    (``Portfolio.set_price``), which converts a fee charged in BNB into the
    quote at fill time (else such a fill cannot be booked). Returns the
    price (quote per BNB), or None when not needed or not readable (logged).
    ``venue``: the adapter to read (default the desk's one venue)."""
    venue = built.venue if venue is None else venue
    fetch = getattr(venue, "fetch_best_bid_ask", None)
    quote = getattr(venue, "quote", "")
    if fetch is None or not quote or quote == FEE_ASSET or venue.balance(FEE_ASSET) <= 0:
        return None
    try:
        bid, _, ask, _ = await fetch(InstrumentId(f"{FEE_ASSET}{quote}", venue.venue))
    except (VenueError, KeyError, ValueError) as exc:
        log.warning("%s: the price of %s in %s could not be read (%s); fees charged in it cannot be booked",
                    venue.venue, FEE_ASSET, quote, exc)
        return None
    mid = (bid + ask) / 2
    built.engine.portfolio.set_price(FEE_ASSET, mid)
    return mid


async def _housekeeping(built: LiveBuilt, sleep: Callable[[float], Any]) -> None:
    """Every second: commit what the venues reported between bars (fills,
    cancels: the journal and the audit log, so an acknowledged fill is never
    lost while the next bar is a minute away) and look for the ``HALT`` file.
    (Each venue reads its fee asset's price in its own task group.)"""
    engine = built.engine
    while True:
        await sleep(1.0)
        try:
            if engine.store.has_journal_pending:
                engine.checkpoint()
            await engine.check_halt_file()
        except StoreError as exc:
            await engine.session.on_store_failure(exc)
            return


async def _fee_prices(built: LiveBuilt, venue: Any, sleep: Callable[[float], Any]) -> None:
    """Every :data:`FEE_PRICE_EVERY_S` s: ``venue``'s fee asset price
    (:func:`refresh_fee_asset_price`)."""
    while True:
        await sleep(FEE_PRICE_EVERY_S)
        await refresh_fee_asset_price(built, venue)


#: seconds between two reads of a futures venue's positions (liquidation prices checked)
POSITION_RISK_EVERY_S = 60


async def _position_risk(venue: Any, sleep: Callable[[float], Any]) -> None:
    """Every :data:`POSITION_RISK_EVERY_S` s: a USD-M venue's positions
    (``position_risk()``: the venue's liquidation price against the desk's
    own, ``core.margin``; the adapter logs a WARNING when they differ by more
    than a tick). A failed read is logged and tried again next time."""
    while True:
        await sleep(POSITION_RISK_EVERY_S)
        try:
            await venue.position_risk()
        except VenueError as exc:
            log.warning("%s: positions not read (%s); next try in %d s", venue.venue, exc, POSITION_RISK_EVERY_S)


#: a venue's bar feed is hung when no step came for this many bar intervals (plus the grace below)
HUNG_AFTER_INTERVALS = 2
#: seconds of grace before a feed without a new bar is declared hung
HUNG_GRACE_S = 60.0
#: seconds between two looks of the watchdog
WATCH_EVERY_S = 5.0


class VenueHung(Exception):
    """A venue's bar feed handed no step for longer than allowed while its
    market is open (the venue's task group is failed and restarted)."""


class _FeedStopped(Exception):
    """The feed was stopped: the venue's task group ends."""


def _market_open(venue: Any, now_ns: int) -> bool:
    """Whether any of ``venue``'s markets is open now (IBKR: a contract's
    trading hours; a crypto venue always is)."""
    contracts = getattr(venue, "contracts", None)
    if not isinstance(contracts, dict) or not contracts:
        return True
    for c in contracts.values():
        hours = getattr(c, "hours", None)
        if hours is None or hours.is_open(now_ns):
            return True
    return False


async def _watch_feed(built: LiveBuilt, name: str, venue: Any, sleep: Callable[[float], Any]) -> None:
    """Raise :class:`VenueHung` when venue ``name``'s feed handed no step
    for ``HUNG_AFTER_INTERVALS`` bar intervals plus ``HUNG_GRACE_S`` while
    its market is open (engine clock; looked at every ``WATCH_EVERY_S``)."""
    from venues.klines import INTERVALS_NS

    feed = built.feed
    member = feed.feeds[name]
    limit_ns = int(HUNG_AFTER_INTERVALS * INTERVALS_NS[member.interval] + HUNG_GRACE_S * NANOS)
    clock = built.engine.clock
    while True:
        await sleep(WATCH_EVERY_S)
        now = clock.timestamp_ns()
        age = now - feed.last_step_at.get(name, now)
        up = getattr(venue, "is_connected", None)
        if callable(up) and not up():
            continue  # disconnected: the header says so and the adapter reconnects; no bar is expected
        if age > limit_ns and _market_open(venue, now):
            raise VenueHung(f"no bar from its feed for {age / NANOS:.1f} s (limit {limit_ns / NANOS:.1f} s)")


async def _venue_group(built: LiveBuilt, name: str, venue: Any, sleep: Callable[[float], Any]) -> None:
    """Venue ``name``'s own task group, supervised (issue 6, "Isolation"):
    its order updates, its fee-asset price and, on a multi-venue desk, its
    bar feed's pump and watchdog. A task that fails (or the watchdog seeing
    the feed hang) fails only this group: the venue is marked DEGRADED
    (``VenueSession.mark_fault``: an alert, its working orders unknown until
    reconciled), the group restarts after ``min(2**n, 60)`` s (``n`` the
    failures since the last successful read), and the fault clears at its
    first successful read, or at its first bar once a ``poll`` of the venue
    succeeded (then the session reconciles on fresh reads).
    The other venues' groups and the engine go on. Ends when the feed stops."""
    from core.livefeed import MergedLiveFeed

    session = _sessions(built.engine)[name]
    merged = isinstance(built.feed, MergedLiveFeed)
    failures = 0
    #: the last fault was the feed's (hung or failed): only a bar clears it, not an order-update read
    feed_fault = False
    group: list[asyncio.TaskGroup] = []
    refresh: list[asyncio.Task[None]] = []

    def ok(*_: Any) -> None:
        """A successful read of the venue: the fault clears (the session
        reconciles at its next tick) and the restart backoff starts over."""
        nonlocal failures, feed_fault
        failures = 0
        feed_fault = False
        session.clear_fault()

    def read_ok(*_: Any) -> None:
        """An order-update read succeeded: it clears a fault of the account
        side, not one of the bar feed (else a hung feed with working REST
        reads would flap DEGRADED / CONNECTED at every watchdog round)."""
        if not feed_fault:
            ok()

    def stepped(*_: Any) -> None:
        """A bar from the venue's feed: the market data works again, but
        the account has not been read since the fault; the fault clears
        after a successful ``poll`` (its orders, fills and balances), so the
        reconciliation that follows compares fresh reads, not the
        adapter's view from before the fault."""
        poll = getattr(venue, "poll", None)
        if session.fault is None or poll is None:
            ok()
            return
        if refresh and not refresh[0].done():
            return

        async def read() -> None:
            try:
                await poll()
            except VenueError as exc:
                log.warning("venue %s: a bar came, but its account cannot be read yet: %s", name, exc)
                return
            ok()

        refresh[:] = [group[0].create_task(read())]

    async def pump() -> None:
        await built.feed.pump(name, built.engine.clock.timestamp_ns, on_step=stepped)
        raise _FeedStopped()

    while True:
        try:
            async with asyncio.TaskGroup() as tg:
                group[:] = [tg]
                if hasattr(venue, "next_order_updates"):
                    tg.create_task(_pump_order_updates(built, sleep, venue, session, on_ok=read_ok))
                tg.create_task(_fee_prices(built, venue, sleep))
                if hasattr(venue, "position_risk"):  # USD-M: liquidation prices checked every minute
                    tg.create_task(_position_risk(venue, sleep))
                if merged:
                    built.feed.last_step_at[name] = built.engine.clock.timestamp_ns()
                    tg.create_task(pump())
                    tg.create_task(_watch_feed(built, name, venue, sleep))
        except BaseExceptionGroup as eg:
            if eg.subgroup(_FeedStopped) is not None:
                return
            rest = eg.subgroup(Exception)
            if rest is None:
                raise
            exc = rest.exceptions[0]
            while isinstance(exc, BaseExceptionGroup):
                exc = exc.exceptions[0]
            failures += 1
            feed_fault = isinstance(exc, VenueHung) or feed_fault
            wait = min(2 ** failures, 60)
            log.error("venue %s: its task group failed (%s: %s); restarting in %d s", name, type(exc).__name__,
                      exc, wait, exc_info=exc)
            session.mark_fault(f"{type(exc).__name__}: {exc}")
            await sleep(wait)
            continue
        return


def start_venue_tasks(built: LiveBuilt, sleep: Callable[[float], Any] = asyncio.sleep) -> list[asyncio.Task[Any]]:
    """What runs beside the engine of a live desk: the desk's housekeeping
    (commits between bars, the ``HALT`` file) and one supervised task group
    per venue (:func:`_venue_group`). Cancel the tasks to stop them."""
    tasks = [asyncio.create_task(_housekeeping(built, sleep), name="housekeeping")]
    for name, session in _sessions(built.engine).items():
        tasks.append(asyncio.create_task(_venue_group(built, name, session.venue, sleep), name=f"venue:{name}"))
    return tasks


def _install_signals(engine: Engine, feed: Any) -> list[int]:
    loop = asyncio.get_running_loop()
    done = []

    def stop() -> None:
        engine.stop()
        feed.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
            done.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        loop.add_signal_handler(
            signal.SIGUSR1, lambda: engine.spawn(engine.governance.halt("SIGUSR1", "out-of-band halt signal")))
        done.append(signal.SIGUSR1)
    except (NotImplementedError, RuntimeError, ValueError):
        pass
    return done


async def start_engine(built: LiveBuilt) -> None:
    """Before the first live bar: a new run warms its models up on the
    prepared bars; a continued run reconciles with the venue first
    (``engine.recover``), then lets the models observe the bars closed while
    it was down (no trading on them)."""
    engine = built.engine
    if built.continued:
        for line in await engine.recover():
            log.warning("reconciliation: %s", line)
    log.info("warming the models up on %s bars", "the missed" if built.continued else "the last")
    await engine.warm_up()
    engine.flush()


async def _bounded(aw: Any, what: str, timeout: float | None = None) -> bool:
    """Await ``aw`` at most ``timeout`` seconds (default
    :data:`STOP_VENUE_WAIT_S`, read at the call). Returns True when it
    finished, False (logged at WARNING, naming ``what``) when it did not
    answer in time; its errors are raised."""
    limit = STOP_VENUE_WAIT_S if timeout is None else timeout
    try:
        await asyncio.wait_for(aw, limit)
        return True
    except asyncio.TimeoutError:
        log.warning("stop: %s did not answer within %.0f s; left (the next start reconciles)", what, limit)
        return False


async def finish(built: LiveBuilt) -> list[str]:
    """The end of a live run: cancel the desk's working orders (unless
    ``on_stop`` is ``keep``; each cancel waits at most
    :data:`STOP_VENUE_WAIT_S` s), mark the run ``stopped`` in the store's
    meta (unless it finished), then :func:`reconcile_at_stop` (which commits
    it). Returns the differences (engine.unreconciled included)."""
    engine = built.engine
    if built.on_stop == "cancel":
        for o in list(engine.working_orders()):
            if is_desk_order(o.client_order_id):
                try:
                    await _bounded(engine.cancel(o, "STOP"), f"the cancel of {o.client_order_id}")
                except Exception as exc:  # noqa: BLE001 - best effort, reconciled next start
                    log.warning("cancel %s at stop: %s", o.client_order_id, exc)
    if engine.store.meta_get("status") != "finished":
        engine.store.meta_set("status", "stopped")
    return await reconcile_at_stop(built)


async def reconcile_at_stop(built: LiveBuilt, *, checkpoint: bool = True) -> list[str]:
    """After the stop's cancels: read each venue once more (``poll``) and
    reconcile it (mode ``periodic``; a venue that cannot be read is logged
    and not reconciled),
    let the venue settle (IBKR's ledger), commit: a checkpoint, or only a
    flush with ``checkpoint=False`` (stopped before the warm-up ended: no
    resume point, or the next start would skip the warm-up). Each venue's
    read and reconciliation, and its settle, wait at most
    :data:`STOP_VENUE_WAIT_S` s: a venue that does not answer is logged and
    not reconciled, and the commit still happens. Returns the differences
    (``engine.unreconciled`` included).

    Raises:
        StoreError: the commit failed.
    """
    engine = built.engine
    for name, session in _sessions(engine).items():  # each venue of a multi-venue desk: its own read
        venue = session.venue
        async def read(venue: Any = venue, session: Any = session) -> None:
            poll = getattr(venue, "poll", None)
            if poll is not None:
                await poll()
            await session.reconcile("periodic")

        try:
            await _bounded(read(), f"the final reconciliation of the venue {name}")
        except VenueError as exc:
            log.warning("the final reconciliation could not read the venue %s: %s", name, exc)
        settle = getattr(venue, "settle", None)
        if settle is not None:
            await _bounded(settle(), f"the settle of the venue {name}")
    if checkpoint:
        engine.checkpoint()
    else:
        engine.flush()
    return list(engine.unreconciled)


async def run_live(built: LiveBuilt, *, max_bars: int | None = None,
                   sleep: Callable[[float], Any] = asyncio.sleep) -> int:
    """Run a built live desk headless until ``max_bars`` bars (this process),
    a stop signal, or the feed's stop; write the JSON summary to stdout.
    Returns the exit code (0, or 3 when it ended with an unreconciled
    difference)."""
    engine = built.engine
    sigs = _install_signals(engine, built.feed)
    tasks = start_venue_tasks(built, sleep)
    t0 = time.perf_counter()
    bars0 = engine.stats.bars
    try:
        await start_engine(built)
        await engine.run(max_bars=max_bars)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in sigs:
            asyncio.get_running_loop().remove_signal_handler(sig)
    problems = await finish(built)
    summary = engine.summary(time.perf_counter() - t0, engine.stats.bars - bars0)
    summary["venue"] = built.venue.venue
    summary["live"] = built.live
    summary["venue_state"] = engine.session.status()
    code = EXIT_OK
    if problems:
        for p in problems:
            log.error("UNRECONCILED: %s", p)
        summary["unreconciled"] = problems
        code = EXIT_UNRECONCILED
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    sys.stdout.flush()
    return code


# ---------------------------------------------------------------- the command
def _arg(args: Any, name: str) -> Any:
    return getattr(args, name, None)


def run_live_main(cfg: Any, args: Any, state_dir: Path) -> int:
    """``desk run --config FILE`` with a Binance or IBKR venue (from
    ``desk.cli``): builds, prints the start-up lines (stderr, and the log)
    and runs headless, headless under the daemon with the control API
    (``--headless`` and ``--api-port``/``api.port``: :func:`_daemon`), or in
    the TUI. Returns the exit code.

    Raises:
        DeskError: refused configuration or start (exit 2), printed by the CLI.
    """
    if _arg(args, "data"):
        raise ConfigError("--data: a replay runs on the paper venue; a config with a live venue takes no --data")
    policy = _arg(args, "policy") or cfg.policy
    if policy is not None and not Path(policy).is_file():
        raise ConfigError(f"--policy: no such file: {policy}")
    serve_api = _arg(args, "api_port") is not None or cfg.api.port is not None
    if serve_api and not _arg(args, "headless"):
        if _arg(args, "api_port") is not None:
            raise ConfigError("--api-port: the control API is served by the headless daemon; add --headless")
        log.warning("api.port in %s is served only with --headless; no API in the TUI", args.config)
    kwargs = dict(live=bool(_arg(args, "live")), state_dir=state_dir, capital=_arg(args, "capital"),
                  order_type=OrderType(_arg(args, "order_type") or "LIMIT"), day_tz=_arg(args, "tz"),
                  risk_file=_arg(args, "risk"), on_stop=_arg(args, "on_stop"),
                  policy_file=None if policy is None else Path(policy))
    config_path = Path(args.config)
    bars = _arg(args, "bars")
    if _arg(args, "headless") and serve_api:
        return _daemon(cfg, args, config_path, bars, kwargs)
    if _arg(args, "headless"):
        return asyncio.run(_headless(cfg, config_path, bars, kwargs))
    return _tui(cfg, config_path, bars, kwargs)


def _daemon(cfg: Any, args: Any, config_path: Path, bars: int | None, kwargs: dict[str, Any]) -> int:
    """The live engine under the daemon (module docstring): the API options
    as for the paper daemon (``desk.cli._api_options``), the log's
    redaction filter the CLI installed (``desk.daemon.setup_logging``)."""
    from desk.cli import _api_options
    from desk.daemon import RedactFilter, run_daemon

    api = _api_options(args, cfg)
    if kwargs.get("on_stop") is None:
        kwargs = {**kwargs, "on_stop": api.on_stop}
    redact = next((f for h in logging.getLogger().handlers for f in h.filters if isinstance(f, RedactFilter)), None)

    @dataclass(slots=True)
    class _Opts:
        bars: int | None  # the whole run's bar limit, as replays

    async def live_build() -> LiveBuilt:
        return await build_live(cfg, config_path, **kwargs)

    return run_daemon(_Opts(bars), api, redact=redact, live_build=live_build)


async def _headless(cfg: Any, config_path: Path, bars: int | None, kwargs: dict[str, Any]) -> int:
    built = await build_live(cfg, config_path, **kwargs)
    try:
        for i, line in enumerate(built.lines):
            if not 1 <= i <= built.venue_lines:  # the venue logged its own lines
                log_start_line(line)  # stderr (the CLI's log handler)
        max_bars = None if bars is None else max(0, bars - built.engine.stats.bars)  # the whole run, as replays
        return await run_live(built, max_bars=max_bars)
    finally:
        await built.aclose()


def _tui(cfg: Any, config_path: Path, bars: int | None, kwargs: dict[str, Any]) -> int:
    """The Textual app on a live engine, everything in one event loop (the
    venue's sessions belong to it)."""
    from desk.app import DeskApp, _log_to_file

    _log_to_file(Path(kwargs["state_dir"]))

    async def main() -> int:
        built = await build_live(cfg, config_path, **kwargs)
        try:
            for line in built.lines:
                log_start_line(line)
                sys.stderr.write(line + "\n")
            engine = built.engine
            if built.continued:
                await start_engine(built)
            remaining = None if bars is None else max(0, bars - engine.stats.bars)
            market = (f"{built.venue.venue} " + ", ".join(i.symbol for i in sorted(engine.instruments, key=str))
                      if len(engine.venues) == 1 else f"{len(engine.venues)} venues")  # each venue's state follows
            app = DeskApp(engine, speed=None, warm_up=not built.continued, mode="LIVE" if built.live else "PAPER",
                          market=market, max_bars=remaining)
            app.reconciled = built.continued
            tasks = start_venue_tasks(built, asyncio.sleep)
            try:
                code = await _run_app(app)
            finally:
                built.feed.stop()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            problems = await finish(built)
            for p in problems:
                log.error("UNRECONCILED: %s", p)
                _say(f"UNRECONCILED: {p}")
            if app.hangup:
                log.warning("SIGHUP: stopped; the store is committed and desk.lock released at the exit")
            if problems:
                return EXIT_UNRECONCILED
            return EXIT_OK if code is None else int(code)
        finally:
            await built.aclose()

    return asyncio.run(main())


def _say(line: str) -> None:
    """A line on stderr, if the terminal is still there (after a SIGHUP it
    is not: the write fails with EIO, and the stop must go on)."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


async def _run_app(app: Any) -> int | None:
    """Run the Textual app (``DeskApp.run_async``) until it returns. After a
    SIGHUP, once the app halted and persisted (``app.finalized``), Textual's
    own shutdown gets :data:`TUI_HANGUP_EXIT_S` seconds: it writes to a
    terminal that is gone, and the desk's stop sequence (cancels,
    reconciliation, commit, ``desk.lock``) must not wait on it. Returns the
    app's return code (None when it was left)."""
    task = asyncio.ensure_future(app.run_async())
    left_at: float | None = None
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if getattr(app, "hangup", False) and getattr(app, "finalized", False):
            now = time.monotonic()
            if left_at is None:
                left_at = now + TUI_HANGUP_EXIT_S
            elif now >= left_at:
                log.warning("SIGHUP: the screen's shutdown did not end within %.0f s; leaving it", TUI_HANGUP_EXIT_S)
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
                return None
