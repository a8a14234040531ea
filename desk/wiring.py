"""Wiring: builds one engine from run options (the composition root).

Shared by the headless runner and the Textual app, so both run the same
engine. Owns the state directory (DESIGN.md section 1): the single-instance
lock, the store, the audit log, the paper venue's ledger; decides whether a
run is new, continued, finished, or refused because the state dir holds
another setup.

No textual import here (headless runs never import it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.audit import AuditLog, repair_audit
from core.clock import TestClock
from core.engine import Engine, EngineConfig, ModelSpec
from core.enums import OrderType
from core.errors import ConfigError, StateDirError
from core.identifiers import InstrumentId
from core.instruments import Instrument
from core.ports import FitExecutor, RegimeModel
from core.risk import DESK_DEFAULT_LIMITS, RiskConfig, RiskEngine
from core.router import RouterConfig
from core.store import Store, StoreError

log = logging.getLogger("desk.wiring")

DEFAULT_CAPITAL = Decimal("10000")
SIM_SEED = 7


@dataclass(slots=True)
class RunOptions:
    """What the operator asked for (from the CLI).

    Attributes:
        data: kline CSV files to replay; empty means the SIM market.
        symbol: overrides the symbol taken from the file name (one file only).
        exchange_info: a Binance exchangeInfo JSON for the filters.
        speed: bar steps per second, or None for as fast as possible.
        bars: stop after this many bars (all instruments) in this process.
        state_dir: the state directory.
        order_type: LIMIT (default) or MARKET.
        capital: trading capital and starting cash (quote).
    """

    data: list[Path] = field(default_factory=list)
    symbol: str | None = None
    exchange_info: Path | None = None
    speed: float | None = None
    bars: int | None = None
    state_dir: Path = Path("var")
    order_type: OrderType = OrderType.LIMIT
    capital: Decimal = DEFAULT_CAPITAL
    day_tz: str = "UTC"
    risk_file: Path | None = None
    volume_share: Decimal | None = None
    #: the governance policy YAML (``desk run --policy`` or the config's ``policy``)
    policy_file: Path | None = None
    #: the parsed ``desk.yaml`` when the run came from ``--config`` (``desk.config.DeskConfig``)
    config: Any = None


#: bars between refits of a live version (1-minute bars: about 3.5 days);
#: long enough for a canary to be judged before the next refit replaces it
REFIT_EVERY_BARS = 5000
#: a refit's fit is applied this many bars of its instrument after it was asked for (a bar fixed by the
#: engine clock, so a replay is deterministic at any speed); the worker fits while the engine goes on
#: (with a lag of 1 a max-speed replay waits for every fit)
REFIT_APPLY_LAG = 30


def default_model_specs() -> list[tuple[ModelSpec, dict[str, Any]]]:
    """The default model versions, in two families.

    Family ``hmm``: ``hmm_v1`` (live): 3 states; long when the posterior's
    expected return per unit of volatility exceeds 0.05 per bar, flat again
    when it falls to -0.05 (hysteresis against flip-flopping on fees).
    ``hmm_v2_canary`` (canary at the first step weight, 10 %): 2 states,
    judged relative to its fit's long-run average (``relative``), long above
    0, flat at -0.01. Family ``ens``: ``ens_v1`` (live), the weighted mean
    of the long probabilities of a 2-state and a 3-state HMM, long above 1/2.
    Every live version refits every :data:`REFIT_EVERY_BARS` bars; each
    refit becomes its family's canary.
    """
    r = REFIT_EVERY_BARS
    return [
        (ModelSpec("hmm_v1", Decimal("1"), "live", "hmm"),
         {"kind": "hmm", "n_states": 3, "random_state": 42, "threshold": 0.05, "exit_threshold": -0.05,
          "refit_every_bars": r}),
        (ModelSpec("hmm_v2_canary", Decimal("0.10"), "canary", "hmm"),
         {"kind": "hmm", "n_states": 2, "random_state": 7, "threshold": 0.0, "exit_threshold": -0.01,
          "relative": True, "refit_every_bars": r}),
        (ModelSpec("ens_v1", Decimal("1"), "live", "ens"),
         {"kind": "ensemble", "method": "mean", "threshold": 0.5,
          "members": [{"n_states": 2, "random_state": 11, "threshold": 0.05, "exit_threshold": -0.05,
                       "refit_every_bars": r},
                      {"n_states": 3, "random_state": 13, "threshold": 0.05, "exit_threshold": -0.05,
                       "refit_every_bars": r}]}),
    ]


def default_lifecycle() -> Any:
    """The default lifecycle: families ``hmm`` and ``ens``, each with a
    floor of 25 % and a cap of 100 % of the capital; canary intervals of
    30 minutes and the allocator every 30 s of engine clock (the defaults of
    ``core.lifecycle.LifecycleConfig``)."""
    from core.lifecycle import FamilySpec, LifecycleConfig

    return LifecycleConfig(families=(FamilySpec("hmm"), FamilySpec("ens")))


def make_model(model_id: str, instrument_id: InstrumentId, params: dict[str, Any]) -> RegimeModel:
    """Build one model version for one instrument from its registry params
    (``kind`` ``hmm``: an ``HmmConfig``; ``ensemble``: an ``EnsembleConfig``).

    Raises:
        ValueError: an unknown kind or bad configuration (naming the field).
    """
    from models.ensemble import EnsembleConfig, EnsembleModel
    from models.hmm import HmmConfig, HmmRegimeModel

    cfg = {k: v for k, v in params.items() if k != "kind"}
    kind = params.get("kind", "hmm")
    if kind == "ensemble":
        return EnsembleModel(model_id, instrument_id, EnsembleConfig.from_dict(cfg))  # type: ignore[return-value]
    if kind == "hmm":
        return HmmRegimeModel(model_id, instrument_id, HmmConfig.from_dict(cfg))  # type: ignore[return-value]
    raise ValueError(f"model {model_id}: kind: expected 'hmm' or 'ensemble', got {kind!r}")


def _warmup_bars(params: dict[str, Any]) -> int:
    """Bars a model needs before its first fit (the largest member's)."""
    from models.hmm import HmmConfig

    if params.get("kind") == "ensemble":
        return max(_warmup_bars({"kind": "hmm", **m}) for m in params["members"])
    c = HmmConfig.from_dict({k: v for k, v in params.items() if k != "kind"})
    return c.warmup + c.vol_window + 1


#: what a start creates in a state dir that held no store (removed again when the start is refused):
#: the store and the venues' ledgers with their SQLite side files, the audit dir, the allocations file
_SETUP_FILES = ("desk.sqlite", "venue-*.sqlite", "audit", "capital_allocations.json")
_SQLITE_SIDE = ("", "-wal", "-shm", "-journal")


class StateDir:
    """The state directory and its single-instance ``flock`` lock (released
    by the kernel even on ``kill -9``).

    Remembers what the directory held when the lock was taken, so a start
    that is refused can leave it as it found it (:meth:`abandon`).

    Attributes:
        path: the directory.
        created_dirs: the directories this attempt created (the state dir
            and any missing parents, deepest first; empty when it existed).
        had_store: ``desk.sqlite`` existed when the lock was taken (a setup
            was there before this attempt).

    Raises:
        StateDirError: the directory cannot be created, or another desk
            holds the lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        missing: list[Path] = []
        for p in (self.path, *self.path.parents):
            if p.exists() or p == p.parent:
                break
            missing.append(p)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"state dir {self.path}: cannot create: {exc.strerror}") from exc
        self.created_dirs: list[Path] = missing
        self._lock_fh = open(self.path / "desk.lock", "a+")
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise StateDirError(f"state dir {self.path}: another desk is running on it (desk.lock is held)") from None
        self._lock_fh.seek(0)
        self._lock_fh.truncate()
        self._lock_fh.write(f"{os.getpid()}\n")
        self._lock_fh.flush()
        # read under the lock: no other desk changes the directory now
        self._before = {p.name for p in self.path.iterdir()}
        self.had_store = "desk.sqlite" in self._before

    def release(self) -> None:
        """Release the lock."""
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._lock_fh.close()

    def abandon(self) -> list[str]:
        """A refused start: leave the directory as this attempt found it,
        then release the lock. Call it after the store and the venues'
        ledgers are closed.

        When the directory held no store when the lock was taken, every
        file or folder of a setup (``desk.sqlite``, ``venue-*.sqlite``, each
        with its ``-wal``/``-shm``/``-journal``, ``audit/``,
        ``capital_allocations.json``) that this attempt created is removed;
        anything that was there before, and every other file (``HALT``,
        ``ops_token``, a log), is left alone. When this attempt created the
        directory itself, its ``desk.lock`` and the directory (and the
        parents it created) go too, if nothing else is in them; when the
        directory existed, ``desk.lock`` stays (deleting a lock file another
        process may have open races with it; an empty one is harmless).
        A directory that held a store is never touched.

        Returns the names removed (for the log). Errors removing a file are
        logged, never raised (the refusal's own error is the one to report).
        """
        import shutil

        removed: list[str] = []
        try:
            if not self.had_store:
                for entry in sorted(self.path.iterdir()):
                    name = entry.name
                    if name in self._before or not any(
                            entry.match(pat + side) for pat in _SETUP_FILES
                            for side in (_SQLITE_SIDE if pat.endswith(".sqlite") else ("",))):
                        continue
                    try:
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry)
                        else:
                            entry.unlink()
                        removed.append(name)
                    except OSError as exc:
                        log.warning("state dir %s: cannot remove %s after the refused start: %s",
                                    self.path, name, exc.strerror)
                if self.created_dirs:
                    try:
                        (self.path / "desk.lock").unlink()
                        removed.append("desk.lock")
                    except OSError:
                        pass
        finally:
            self.release()
        if not self.had_store:
            for d in self.created_dirs:  # deepest first; a directory that is not empty stays
                try:
                    d.rmdir()
                except OSError:
                    break
        return removed


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(slots=True)
class Built:
    """An engine ready to run, and what the runner needs around it."""

    engine: Engine
    state: StateDir
    executor: FitExecutor
    mode: str
    continued: bool
    finished_summary: dict[str, Any] | None
    messages: list[str]

    def close(self) -> None:
        """Shut the fit worker down, close the stores and release the lock."""
        try:
            self.executor.shutdown()
        finally:
            try:
                self.engine.audit.close()
                self.engine.venue.close()  # type: ignore[attr-defined]
                self.engine.store.close()
            finally:
                self.state.release()


def _load_replay(opts: RunOptions) -> tuple[Any, dict[InstrumentId, Instrument], dict[str, Any], list[str]]:
    from venues.feeds import ReplayFeed
    from venues.filters import load_exchange_info, resolve_instrument
    from venues.klines import load_klines

    if opts.symbol and len(opts.data) > 1:
        raise ConfigError("--symbol: only with a single --data file")
    for p in opts.data:
        if not p.is_file():
            raise ConfigError(f"--data: no such file: {p}")
    xinfo = load_exchange_info(opts.exchange_info) if opts.exchange_info else None
    messages: list[str] = []
    files = [load_klines(p, symbol=opts.symbol) for p in opts.data]
    seen: dict[InstrumentId, Path] = {}
    for f in files:
        if f.instrument_id in seen:
            raise ConfigError(f"--data: {f.path} and {seen[f.instrument_id]} are both {f.instrument_id}")
        seen[f.instrument_id] = f.path
        for a, b in f.gaps[:1]:
            messages.append(f"{f.path}: {len(f.gaps)} gap(s) in time, first between {a} and {b} ns (allowed)")
    quotes = {}
    instruments: dict[InstrumentId, Instrument] = {}
    for f in files:
        inst, msg = resolve_instrument(f.symbol, "BINANCE", f.bars, xinfo)
        if msg:
            messages.append(msg)
        instruments[inst.id] = inst
        quotes[inst.quote] = f.path
    if len(quotes) > 1:
        raise ConfigError(
            "--data: files must share one quote currency; got "
            + ", ".join(f"{q} ({p.name})" for q, p in quotes.items())
        )
    fingerprint = {
        "mode": "replay",
        "files": [{"name": f.path.name, "sha256": _sha256(f.path), "symbol": f.symbol} for f in files],
        "exchange_info": _sha256(opts.exchange_info) if opts.exchange_info else None,
    }
    return ReplayFeed(files), instruments, fingerprint, messages


def _load_sim(warmup: int) -> tuple[Any, dict[InstrumentId, Instrument], dict[str, Any], list[str]]:
    from venues.feeds import SimFeed
    from venues.sim import SimMarket

    market = SimMarket(seed=SIM_SEED)
    instruments = {i.id: i for i in market.instruments.values()}
    return SimFeed(market, warmup), instruments, {"mode": "sim", "seed": SIM_SEED}, []


def build(opts: RunOptions, *, executor: FitExecutor | None = None) -> Built:
    """Build the engine for ``opts`` on its state dir.

    Every input (config, data, risk and policy files) is checked before the
    state dir is created or locked; a start refused after that, on a dir
    that held no store, leaves the dir as it found it
    (:meth:`StateDir.abandon`); a dir with a setup is never touched.

    Raises:
        ConfigError: bad flags or data (exit 2).
        DataError: a bad CSV row (exit 2); nothing is traded.
        StateDirError: the dir is locked or holds another setup (exit 2).
    """
    from models.executor import ProcessFitExecutor
    from venues.paper import PaperConfig, PaperVenue

    if opts.config is not None:
        for i, v in enumerate(getattr(opts.config, "venues", [])):
            if v.kind != "paper":  # a real venue is built by desk.live, never replaced by paper silently
                raise ConfigError(f"venues[{i}]: kind {v.kind!r}: real venues run through desk.live, "
                                  "not the paper wiring")
    specs = [(ModelSpec(s.model_id, s.weight, s.stage, s.family, kw), kw) for s, kw in default_model_specs()]
    warmup = max(_warmup_bars(kw) for _, kw in specs)
    if opts.data:
        feed, instruments, fingerprint, messages = _load_replay(opts)
        mode = "replay"
    else:
        feed, instruments, fingerprint, messages = _load_sim(warmup)
        mode = "sim"
    quote = next(iter(instruments.values())).quote
    fingerprint.update({
        "capital": format(opts.capital, "f"), "order_type": opts.order_type.value, "day_tz": opts.day_tz,
        "volume_share": None if opts.volume_share is None else format(opts.volume_share, "f"),
        "models": [[s.model_id, s.family, s.stage, format(s.weight, "f"), kw] for s, kw in specs],
    })
    fp_text = json.dumps(fingerprint, sort_keys=True)
    # every input is checked before the state dir is touched: a refused start creates nothing there
    allowed = frozenset(str(i) for i in instruments)
    if opts.risk_file is not None:
        from desk.risk_config import load_risk_config

        risk_cfg = load_risk_config(opts.risk_file, allowed_symbols=allowed, max_order_notional=opts.capital)
        for scope, names, known in (
            ("instruments", risk_cfg.per_instrument, {str(i) for i in instruments}),
            ("venues", risk_cfg.per_venue, {i.venue for i in instruments}),
            ("models", risk_cfg.per_model, {spec.model_id for spec, _ in specs}),
        ):
            for name in names:
                if name not in known:
                    raise ConfigError(f"--risk: {opts.risk_file}: {scope}.{name}: not in this run; "
                                      f"known {scope}: {', '.join(sorted(known))}")
    else:
        risk_cfg = RiskConfig(allowed_symbols=allowed, max_order_notional=opts.capital, defaults=DESK_DEFAULT_LIMITS)
    policy = None
    if opts.policy_file is not None:
        from desk.policy_config import check_targets, load_policy_file

        policy = load_policy_file(opts.policy_file)
        check_targets(policy, models={spec.model_id for spec, _ in specs},
                      families={sp.family or sp.model_id for sp, _ in specs}, venues={i.venue for i in instruments})
    state = StateDir(opts.state_dir)
    store: Store | None = None
    engine: Engine | None = None
    own_executor = executor is None
    try:
        store, existing = open_setup_store(state, fp_text)
        finished_summary = None
        if store.meta_get("status") == "finished":
            finished_summary = json.loads(store.meta_get("summary") or "{}")
        clock = TestClock()
        router = RouterConfig(capital=opts.capital, order_type=opts.order_type, max_order_notional=opts.capital)
        risk = RiskEngine(risk_cfg)
        if executor is None:
            executor = ProcessFitExecutor()
            executor.warm()  # type: ignore[attr-defined]
        models: dict[str, dict[InstrumentId, RegimeModel]] = {
            spec.model_id: {iid: make_model(spec.model_id, iid, spec.params) for iid in sorted(instruments, key=str)}
            for spec, _ in specs
        }
        venue_name = next(iter(instruments)).venue
        paper_cfg = PaperConfig(starting_cash=opts.capital, max_volume_share=opts.volume_share)

        def venue_factory(on_event: Any) -> PaperVenue:
            return PaperVenue(state.path / "venue-paper.sqlite", venue_name, quote, instruments, clock,
                              paper_cfg, on_event)

        audit_path = state.path / "audit" / "orders.jsonl"
        fixed = repair_audit(audit_path, store.iter_journal)
        if fixed["torn"] or (fixed["appended"] and store.load_checkpoint() is not None):
            messages.append(f"audit log repaired from the journal: torn last line cut {fixed['torn']}, "
                            f"{fixed['appended']} missing lines appended")
        engine = Engine(
            config=EngineConfig(router=router, day_tz=opts.day_tz, lifecycle=default_lifecycle(),
                                fit_apply_lag=REFIT_APPLY_LAG), clock=clock,
            store=store, model_factory=make_model,
            audit=AuditLog(audit_path), feed=feed, instruments=instruments,
            models=models, specs=[s for s, _ in specs], risk=risk, executor=executor, venue_factory=venue_factory,
        )
        engine.speed = opts.speed
        if policy is not None:
            from core.policy_runtime import PolicyRuntime

            engine.policy_runtime = PolicyRuntime(engine, policy, opts.policy_file)
            messages.append(f"policy {opts.policy_file}: {engine.policy_runtime.policy.summary()}")
        engine.halt_file = state.path / "HALT"
        engine.lifecycle.allocations_path = state.path / "capital_allocations.json"
        plan = os.environ.get("DESK_CRASH_PLAN")  # test hook of tests/recovery: {"after_send": 3}
        if plan:
            engine.crash_plan = {str(k): int(v) for k, v in json.loads(plan).items()}
        cp = store.load_checkpoint()
        continued = cp is not None
        if cp is not None:
            engine.restore(cp[1])
        elif existing is None:
            store.meta_set("setup", fp_text)
            store.meta_set("status", "running")
            store.flush()
        halted = store.meta_get("halted_venues")
        if halted:
            engine.halted_venues = set(halted.split(","))
            messages.append(f"WARNING: venue halt kept from before this start: {halted} (no order goes there "
                         f"until it is resumed: palette 'Resume venue V', POST /resume {{\"venue\": \"V\"}})")
        persisted = store.meta_get("trading_state")
        if persisted is not None:
            # the kill switch survives a restart: only an explicit resume lifts it
            from core.enums import TradingState

            engine.trading_state = TradingState(persisted)
        return Built(engine, state, executor, mode, continued, finished_summary, messages)
    except BaseException:
        _close_quietly(engine, store, executor if own_executor else None)
        removed = state.abandon()
        if removed:
            log.info("state dir %s: the refused start removed what it had created: %s", state.path,
                     ", ".join(removed))
        raise


def _close_quietly(engine: Engine | None, store: Store | None, executor: FitExecutor | None) -> None:
    """Close what a refused start opened (the audit log, the paper venue's
    ledger, the store, a fit worker it started), ignoring errors: the
    refusal's own error is the one to report."""
    steps: list[Any] = []
    if executor is not None:
        steps.append(executor.shutdown)
    if engine is not None:
        steps.append(engine.audit.close)
        venue = getattr(engine, "venue", None)
        if venue is not None and hasattr(venue, "close"):
            steps.append(venue.close)
    if store is not None:
        steps.append(store.close)
    for step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - best effort
            log.debug("closing after a refused start: %s", exc)


def open_setup_store(state: StateDir, fp_text: str) -> tuple[Store, str | None]:
    """Open the state dir's store and check that it holds this setup (the
    JSON fingerprint ``fp_text``) or none yet; returns the store and the
    stored setup (None for a new dir).

    Raises:
        StateDirError: an unreadable store, or one of another setup (the
            message says what differs).
    """
    try:
        store = Store(state.path / "desk.sqlite")
    except StoreError as exc:
        raise StateDirError(str(exc)) from exc
    existing = store.meta_get("setup")
    if existing is not None and existing != fp_text:
        store.close()
        raise StateDirError(
            f"state dir {state.path} holds another setup ({_describe(existing)}; it differs in "
            f"{_differing(existing, fp_text)}); use another --state-dir or remove it"
        )
    return store, existing


def _differing(old_text: str, new_text: str) -> str:
    """The setup keys whose values differ, e.g. ``day_tz (UTC -> Europe/Berlin)``."""
    try:
        old, new = json.loads(old_text), json.loads(new_text)
    except ValueError:
        return "an unreadable setup record"
    parts = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            short = isinstance(a, (str, int, float, type(None))) and isinstance(b, (str, int, float, type(None)))
            parts.append(f"{key} ({a} -> {b})" if short else key)
    return ", ".join(parts) or "nothing visible"


def _describe(fp_text: str) -> str:
    try:
        fp = json.loads(fp_text)
    except ValueError:
        return "unreadable"
    if fp.get("mode") == "replay":
        return "replay of " + ", ".join(f["name"] for f in fp.get("files", []))
    if fp.get("mode") == "live":
        return f"live desk of config sha256 {str(fp.get('config_sha256', ''))[:12]}"
    return f"{fp.get('mode')} seed {fp.get('seed')}"
