"""The governance policy at run time: feeds :class:`core.policy.PolicyEngine`
the live figures once per engine step and carries out what it fires
(issue 7, "Governance policy"; DESIGN.md section 5).

Figures, all on the engine clock:

* ``drawdown``: ``1 - equity / peak equity`` since the start of the run
  (fraction, desk-wide; equity from the portfolio at the marks);
* ``daily_loss``: ``max(0, -(equity - equity at the start of the venue day))``
  (quote);
* ``reject_rate``: per venue, orders rejected by the venue or denied by the
  rails over orders accepted, rejected or denied, in the rule's window;
* ``error_rate``: per venue, venue trouble (submits of unknown outcome,
  throttles, disconnects: the ``SUBMIT_UNKNOWN``, ``VENUE_THROTTLED``,
  ``VENUE_DISCONNECTED`` alerts) over venue requests (orders submitted plus
  those alerts), in the rule's window;
* ``data_staleness_s``: per instrument, seconds since its last bar;
* ``venue_state``: ``CONNECTED``, ``THROTTLED`` or ``DISCONNECTED`` (from the
  venue session);
* ``model_psr``: per canary past its warm-up, the PSR of its last analysis
  interval (a canary still warming up has none, so no rule judges it).

Actions go through :class:`core.governance.Governance` (the one operator
facade), with ``who = "policy:<rule>"``: ``alert`` raises an alert,
``pause_model`` pauses, ``pause_venue`` halts the venue, ``reduce_only``,
``halt``, ``flatten``, ``rollback`` (a canary). Every firing is journaled as
``PolicyTriggered`` (and so audited) before its action. The policy never
resumes anything: a halt it pulls stays until a human resumes.
"""

from __future__ import annotations

import logging
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from core.events import Event, PolicyTriggered
from core.policy import Figures, Policy, PolicyEngine, RateWindow

if TYPE_CHECKING:
    from core.engine import Engine

log = logging.getLogger("desk.policy")

ZERO = Decimal("0")
_ERROR_ALERTS = frozenset({"SUBMIT_UNKNOWN", "VENUE_THROTTLED", "VENUE_DISCONNECTED"})


def venue_states(engine: Any) -> dict[str, str]:
    """Each venue's state for the rules (``core.policy.VENUE_STATES``):
    its session's ``venue_state()`` (``CONNECTED``, ``DEGRADED``,
    ``THROTTLED``, ``BANNED``, ``DISCONNECTED``; a
    venue without a connection state of its own that is fine reads
    ``CONNECTED``), one entry per venue of a multi-venue desk."""
    session = engine.session
    group = getattr(session, "sessions", None)
    sessions = dict(group) if isinstance(group, dict) else {engine.venue.venue: session}
    out = {}
    for name, s in sessions.items():
        state = s.venue_state()[0] if hasattr(s, "venue_state") else ""
        if not state:
            state = "DISCONNECTED" if getattr(s, "down", False) else "CONNECTED"
        out[name] = state
    return out


class PolicyRuntime:
    """One policy bound to one engine.

    Args:
        engine: the engine (its bus is subscribed to at once).
        policy: the validated policy.
        path: the file it came from (for reloads and the TUI), or None.
    """

    def __init__(self, engine: "Engine", policy: Policy, path: Any = None) -> None:
        self.engine = engine
        self.path = path
        self.policy = PolicyEngine(policy)
        self.reject_window = RateWindow()
        self.error_window = RateWindow()
        self.peak_equity: Decimal | None = None
        self.firings = 0
        engine.bus.subscribe("*", self._on_event)

    # ------------------------------------------------------------ counting
    def _on_event(self, event: Event) -> None:
        t = event.type
        if t in ("OrderAccepted", "OrderRejected", "OrderDenied"):
            venue = event.instrument_id.venue  # type: ignore[attr-defined]
            self.reject_window.record(venue, event.ts_event, t != "OrderAccepted")
        elif t == "OrderSubmitted":
            self.error_window.record(event.instrument_id.venue, event.ts_event, False)  # type: ignore[attr-defined]
        elif t == "AlertRaised" and event.code in _ERROR_ALERTS:  # type: ignore[attr-defined]
            self.error_window.record(self.engine.venue.venue, event.ts_event, True)

    # ------------------------------------------------------------ figures
    def figures(self) -> Figures:
        """The live figures now (engine clock)."""
        e = self.engine
        now = e.clock.timestamp_ns()
        equity = e.portfolio.equity()
        if self.peak_equity is None or equity > self.peak_equity:
            self.peak_equity = equity
        dd = ZERO if not self.peak_equity or self.peak_equity <= 0 else max(ZERO, 1 - equity / self.peak_equity)
        day_loss = max(ZERO, e.day_start_equity - equity)
        venue_state = venue_states(e)
        psr: dict[str, float] = {}
        for mid, v in e.lifecycle.last_verdict.items():
            rec = e.lifecycle.registry.get(mid)
            if rec is None or rec.stage != "canary" or v.get("action") in ("warming", "", None):
                continue  # no PSR is judged before the canary's warm-up ends (README: canary analysis)
            try:
                x = float(v.get("figures", {}).get("psr", "nan"))
            except (TypeError, ValueError):
                x = math.nan
            psr[mid] = x
        # positions a flatten could still close (dust below the filters cannot be sold: not "open")
        open_positions = sum(1 for (m, i) in e.portfolio.positions if not e.unsellable(m, i))
        return Figures(
            ts_ns=now, drawdown=dd, daily_loss=day_loss,
            data_staleness_s={str(i): (now - t) / 1e9 for i, t in e.last_bar_ts.items()},
            venue_state=venue_state, model_psr=psr,
            counts={"reject_rate": self.reject_window, "error_rate": self.error_window},
            trading_state=e.trading_state.value, halted_venues=frozenset(e.halted_venues),
            paused_models=frozenset(e.paused), open_positions=open_positions,
        )

    # ------------------------------------------------------------ evaluation
    async def evaluate(self) -> int:
        """Evaluate the rules once and carry out what fires; returns the
        number of firings."""
        e = self.engine
        firings = self.policy.evaluate(self.figures())
        for f in firings:
            now = e.clock.timestamp_ns()
            who = f"policy:{f.rule.name}"
            target = f.target or f.key or ""
            e.emit(PolicyTriggered(ts_event=now, ts_init=now, rule=f.rule.name, figure=f.rule.figure,
                                   value=str(f.value), threshold=str(f.rule.threshold), action=f.action,
                                   target=target, reason=f.reason))
            log.warning("[POLICY] %s%s", f.reason, f" (target {target})" if target else "")
            self.firings += 1
            try:
                await self._act(f.action, target, who, f.reason, getattr(f, "severity", "WARNING"))
            except Exception as exc:  # an action that cannot apply is an alert, never a crash of the loop
                e.alert("ERROR", "POLICY_ACTION_FAILED", f"{who}: {f.action} {target}: {exc}")
        if firings:
            e.flush()
        return len(firings)

    async def _act(self, action: str, target: str, who: str, reason: str, severity: str) -> None:
        g = self.engine.governance
        if action == "alert":
            self.engine.alert(severity, "POLICY", f"{who}: {reason}")
        elif action == "pause_model":
            g.pause_model(target, who, reason)
        elif action == "pause_venue":
            await g.halt_venue(target, who, reason)
        elif action == "reduce_only":
            g.reduce_only(who, reason)
        elif action == "halt":
            await g.halt(who, reason)
        elif action == "flatten":
            await g.flatten(who, reason)
        elif action == "rollback":
            await g.rollback(target, who, reason)
        else:  # parse_policy refuses unknown actions; kept as a guard
            raise ValueError(f"unknown action {action!r}")

    # ------------------------------------------------------------ persistence and reload
    def reload(self, policy: Policy) -> None:
        """Swap in a new (validated) policy, keeping the state of unchanged rules."""
        self.policy.reload(policy)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state for the checkpoint (windows, cooldowns, peak)."""
        return {"policy": self.policy.state_dict(), "reject": self.reject_window.state_dict(),
                "error": self.error_window.state_dict(),
                "peak": None if self.peak_equity is None else format(self.peak_equity, "f"),
                "firings": self.firings}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.policy.load_state_dict(d["policy"])
        self.reject_window.load_state_dict(d["reject"])
        self.error_window.load_state_dict(d["error"])
        self.peak_equity = None if d.get("peak") is None else Decimal(d["peak"])
        self.firings = int(d.get("firings", 0))
