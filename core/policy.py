"""The governance policy: rules over live figures with actions (issue 7,
DESIGN.md section 5 "Governance policy").

Pure: this module validates an already-parsed mapping (``desk.policy_config``
reads the YAML) and evaluates rules against snapshots of figures the engine
fills on the engine clock. It performs no I/O, reads no clock, and never acts:
it returns :class:`Firing` records that the engine maps to governance calls
(``alert`` -> ``engine.alert``; ``pause_model`` -> ``governance.pause_model``;
``pause_venue`` -> ``governance.halt_venue``; ``reduce_only``; ``halt``;
``flatten``; ``rollback`` -> ``governance.rollback``).

Shape of a policy (after YAML parsing)::

    {"rules": [
        {"name": "dd-halt",          # unique; letters, digits, _ . : -
         "figure": "drawdown",       # one of FIGURES
         "op": ">",                  # > >= < <= == != (or gt ge lt le eq ne)
         "threshold": 0.05,          # a number; a state name for venue_state
         "window_s": 0,              # "for": seconds the condition must hold (default 0)
         "action": "halt",           # one of ACTIONS
         "target": None,             # model id / venue (see Rule)
         "scope": {"venue": "BINANCE"},  # restricts per-key figures (see Rule)
         "cooldown_s": 300,          # no second firing for this long (default 300)
         "severity": "ERROR",        # INFO / WARNING / ERROR (default WARNING for
                                     # alert, ERROR for the other actions)
         "over_s": 300,              # reject_rate / error_rate only: the rate's window
         "min_count": 10},           # reject_rate / error_rate only: fewest outcomes
    ]}

Semantics (each point is tested in ``tests/unit/test_policy.py``):

* **Windows** ("for" semantics, as Prometheus alerting rules' ``for:``): a
  rule's condition must be found true at every evaluation from a first
  evaluation at ``t0`` up to one at ``t >= t0 + window_s``; an evaluation
  that finds it false (or the figure missing) restarts the wait. So with
  ``window_s: 60`` true at t = 0, 30, 59 s does not fire, and t = 60 s fires.
  ``window_s: 0`` fires on the first evaluation that finds it true.
* **Rates** (``reject_rate``, ``error_rate``) are measured over ``over_s``
  (default 300 s) from :class:`RateWindow` counts the engine records per
  venue; ``window_s`` stays the "for" on top (Prometheus' ``rate(x[5m]) > 0.2``
  with ``for:``). A venue with fewer than ``min_count`` outcomes in the
  window is not judged.
* **Per-key figures** (per venue, per instrument, per model) are judged key by
  key, each with its own window; a rule whose action needs a model or a venue
  targets the one that crossed (see :class:`Rule`).
* **Cooldown**: once a rule fired for a target, it does not fire for that
  target again for ``cooldown_s``; while the condition still holds after
  that, it fires again (level-triggered, like Alertmanager's
  ``repeat_interval``). A rule yields at most one firing per target per
  evaluation.
* **Never a resume; never a de-escalation.** There is no resume action
  (``resume`` is refused by the parser) and ``evaluate`` only ever returns
  the actions in :data:`ACTIONS`, so a circuit breaker that halted stays
  halted until a human resumes. An action already in effect is not fired
  again (no alert flood): ``halt`` while ``HALTED``; ``reduce_only`` while
  ``REDUCING`` or ``HALTED`` (it would lift a halt to ``REDUCING``);
  ``flatten`` while ``HALTED`` with no open position; ``pause_venue`` for a
  halted venue; ``pause_model`` for a paused model. Such a rule shows
  ``in effect`` in :meth:`PolicyEngine.describe` and keeps no cooldown, so
  if a human resumes while the condition still holds, it fires again at the
  next evaluation: the operator changes the policy (and reloads) to trade
  through a breached limit.

Time is integer UTC nanoseconds of the engine clock (``Figures.ts_ns``), so a
replay gives the same firings at any speed. Money (drawdown fraction, daily
loss in quote) is ``Decimal``; rates, staleness and PSR are floats compared
exactly through their shortest repr (``Decimal(repr(x))``; DESIGN.md
section 4).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping

from core.values import to_decimal

NS = 1_000_000_000

#: the figures a rule can watch
FIGURES = frozenset({"drawdown", "daily_loss", "reject_rate", "error_rate", "data_staleness_s", "venue_state",
                     "model_psr"})
#: what a rule can do; there is deliberately no "resume": only an operator resumes
ACTIONS = frozenset({"alert", "pause_model", "pause_venue", "reduce_only", "halt", "flatten", "rollback"})
#: comparison operators, and the words accepted for them (``>`` must be quoted in YAML)
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}
OP_WORDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}
#: venue connection states (core.events.VenueStateChanged)
VENUE_STATES = ("CONNECTED", "DEGRADED", "DISCONNECTED", "THROTTLED", "BANNED")
SEVERITIES = ("INFO", "WARNING", "ERROR")
#: the longest rate window a rule may ask for; RateWindow keeps this much by default
MAX_RATE_WINDOW_S = 3600
DEFAULT_COOLDOWN_S = 300
DEFAULT_RATE_WINDOW_S = 300

#: what each figure is keyed by: None (desk-wide), "venue", "instrument" or "model"
FIGURE_KEY: dict[str, str | None] = {
    "drawdown": None, "daily_loss": None, "reject_rate": "venue", "error_rate": "venue",
    "venue_state": "venue", "data_staleness_s": "instrument", "model_psr": "model",
}
RATE_FIGURES = frozenset({"reject_rate", "error_rate"})
#: the thing an action acts on: a model, a venue, or None (desk-wide)
ACTION_OBJECT: dict[str, str | None] = {
    "alert": None, "reduce_only": None, "halt": None, "flatten": None,
    "pause_model": "model", "rollback": "model", "pause_venue": "venue",
}
#: scope keys a figure accepts
SCOPES: dict[str | None, tuple[str, ...]] = {None: (), "venue": ("venue",), "instrument": ("venue", "instrument"),
                                             "model": ("model",)}
#: thresholds outside these bounds are refused (fractions and probabilities are 0..1, not percent)
BOUNDS: dict[str, tuple[Decimal, Decimal | None, str]] = {
    "drawdown": (Decimal(0), Decimal(1), "a fraction of peak equity from 0 to 1 (0.05 = 5 %)"),
    "daily_loss": (Decimal(0), None, "an amount of quote currency >= 0"),
    "reject_rate": (Decimal(0), Decimal(1), "a fraction from 0 to 1 (0.2 = 20 %)"),
    "error_rate": (Decimal(0), Decimal(1), "a fraction from 0 to 1 (0.2 = 20 %)"),
    "data_staleness_s": (Decimal(0), None, "seconds >= 0"),
    "model_psr": (Decimal(0), Decimal(1), "a probability from 0 to 1"),
}
RULE_KEYS = ("name", "figure", "op", "threshold", "window_s", "action", "target", "scope", "cooldown_s",
             "severity", "over_s", "min_count")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the source, the rule
    (index in ``rules``, 0-based, and name when known) and the field:
    ``policy.yaml: rules[2] (name 'dd-halt'): threshold: expected a number, got 'abc'``.

    Attributes:
        source: the file (or other source) name.
        rule: ``rules[2] (name 'dd-halt')``, ``rules[2]``, or "" for the top level.
        field: the field (``threshold``, ``scope.venue``), or the top-level key.
        detail: what is wrong, with the value.
    """

    def __init__(self, source: str, rule: str, field: str, detail: str) -> None:
        self.source, self.rule, self.field, self.detail = source, rule, field, detail
        where = ": ".join(p for p in (source, rule, field) if p)
        super().__init__(f"{where}: {detail}")


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule (built by :func:`parse_policy`).

    Attributes:
        name: unique in the policy.
        figure: one of :data:`FIGURES`.
        op: ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``.
        threshold: a Decimal (drawdown and rates as fractions 0..1, daily
            loss in quote, staleness in seconds, PSR as a probability); for
            ``venue_state`` one of :data:`VENUE_STATES` (``==``/``!=`` only).
        action: one of :data:`ACTIONS`.
        window_s: seconds of engine clock the condition must hold (0 = at once).
        target: the model id (``pause_model``, ``rollback``) or venue
            (``pause_venue``) acted on; None for the desk-wide actions (alert,
            reduce_only, halt, flatten) and when the figure itself names the
            object (``model_psr`` for model actions; ``reject_rate``,
            ``error_rate``, ``venue_state``, ``data_staleness_s`` for
            ``pause_venue``): then each key is judged and the one that crossed
            is targeted (an instrument ``SYMBOL.VENUE`` gives its venue).
        scope_model / scope_venue / scope_instrument: keys the rule is
            restricted to (empty = all); only for figures keyed that way
            (an instrument's venue counts for ``scope.venue``).
        cooldown_s: after a firing, no firing for the same target for this long.
        severity: ``INFO``/``WARNING``/``ERROR`` (the alert level).
        over_s: the window of a rate (``reject_rate``/``error_rate``), else 0.
        min_count: fewest outcomes in ``over_s`` for a rate to be judged (rates only, else 0).
    """

    name: str
    figure: str
    op: str
    threshold: Decimal | str
    action: str
    window_s: int = 0
    target: str | None = None
    scope_model: tuple[str, ...] = ()
    scope_venue: tuple[str, ...] = ()
    scope_instrument: tuple[str, ...] = ()
    cooldown_s: int = DEFAULT_COOLDOWN_S
    severity: str = "WARNING"
    over_s: int = 0
    min_count: int = 0

    def fingerprint(self) -> str:
        """A stable digest of the definition (every field): equal
        fingerprints mean the same rule, so reload and checkpoints keep its
        window and cooldown state."""
        d = {k: (str(v) if isinstance(v, Decimal) else list(v) if isinstance(v, tuple) else v)
             for k, v in dataclasses.asdict(self).items()}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def comparison(self) -> str:
        """``"> 0.05"``: the operator and threshold as text."""
        return f"{self.op} {self.threshold}"


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules in force, in file order.

    Attributes:
        rules: the rules.
        source: where they came from (a path).
        digest: sha256 (hex) of the file's text, or of the canonical JSON of
            the parsed data when no text was given.
    """

    rules: tuple[Rule, ...]
    source: str
    digest: str

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name``, or None."""
        return next((r for r in self.rules if r.name == name), None)


def _where(i: int, name: Any) -> str:
    return f"rules[{i}] (name {name!r})" if isinstance(name, str) and name else f"rules[{i}]"


def _whole(value: Any, lo: int, hi: int | None = None) -> int | None:
    """``value`` as an int in [lo, hi], or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        return None
    return value


def _names(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        return None
    return tuple(v.strip() for v in value)


def _parse_rule(i: int, raw: Any, source: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(source, f"rules[{i}]", "", f"expected a mapping of rule fields, got {raw!r}")
    name = raw.get("name")
    where = _where(i, name)

    def err(fieldname: str, detail: str) -> PolicyError:
        return PolicyError(source, where, fieldname, detail)

    for key in raw:
        if key not in RULE_KEYS:
            raise err(str(key), f"unknown field; known: {', '.join(RULE_KEYS)}")
    if name is None:
        raise err("name", "required")
    if not isinstance(name, str) or not _NAME.match(name):
        raise err("name", f"expected 1-64 letters, digits or _ . : - (starting with a letter or digit), got {name!r}")
    for req in ("figure", "op", "threshold", "action"):
        if req not in raw or raw[req] is None:
            raise err(req, "required")

    figure = raw["figure"]
    if figure not in FIGURES:
        raise err("figure", f"unknown figure {figure!r}; known: {', '.join(sorted(FIGURES))}")
    kind = FIGURE_KEY[figure]

    op_raw = raw["op"]
    op = OP_WORDS.get(op_raw, op_raw) if isinstance(op_raw, str) else op_raw
    if op not in OPS:
        raise err("op", f"expected one of {' '.join(OPS)} (or {' '.join(OP_WORDS)}), got {op_raw!r}"
                        + (" (quote > and >= in YAML: '>')" if isinstance(op_raw, str) and op_raw.strip() == "" else ""))

    thr_raw = raw["threshold"]
    threshold: Decimal | str
    if figure == "venue_state":
        if op not in ("==", "!="):
            raise err("op", f"venue_state compares with == or != only, got {op_raw!r}")
        if thr_raw not in VENUE_STATES:
            raise err("threshold", f"expected a venue state ({', '.join(VENUE_STATES)}), got {thr_raw!r}")
        threshold = thr_raw
    else:
        try:
            threshold = to_decimal(thr_raw, "threshold")
        except ValueError:
            raise err("threshold", f"expected a number, got {thr_raw!r}") from None
        lo, hi, what = BOUNDS[figure]
        if threshold < lo or (hi is not None and threshold > hi):
            raise err("threshold", f"{figure} is {what}, got {thr_raw!r}")

    action = raw["action"]
    if action == "resume":
        raise err("action", "a policy never resumes: only an operator does (keys, CLI or API); "
                            f"known: {', '.join(sorted(ACTIONS))}")
    if action not in ACTIONS:
        raise err("action", f"unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")

    window = _whole(raw.get("window_s", 0), 0)
    if window is None:
        raise err("window_s", f"expected whole seconds >= 0, got {raw.get('window_s')!r}")
    cooldown = _whole(raw.get("cooldown_s", DEFAULT_COOLDOWN_S), 0)
    if cooldown is None:
        raise err("cooldown_s", f"expected whole seconds >= 0, got {raw.get('cooldown_s')!r}")

    severity = raw.get("severity", "WARNING" if action == "alert" else "ERROR")
    if severity not in SEVERITIES:
        raise err("severity", f"expected one of {', '.join(SEVERITIES)}, got {severity!r}")

    over, min_count = 0, 0
    if figure in RATE_FIGURES:
        over = _whole(raw.get("over_s", DEFAULT_RATE_WINDOW_S), 1, MAX_RATE_WINDOW_S)
        if over is None:
            raise err("over_s", f"expected whole seconds from 1 to {MAX_RATE_WINDOW_S}, got {raw.get('over_s')!r}")
        min_count = _whole(raw.get("min_count", 1), 1)
        if min_count is None:
            raise err("min_count", f"expected a whole number >= 1, got {raw.get('min_count')!r}")
    else:
        for key in ("over_s", "min_count"):
            if key in raw:
                raise err(key, f"only for reject_rate and error_rate (a rate's window), not {figure}")

    scopes: dict[str, tuple[str, ...]] = {}
    scope_raw = raw.get("scope")
    if scope_raw is not None:
        if not isinstance(scope_raw, Mapping) or not scope_raw:
            raise err("scope", f"expected a mapping such as {{venue: BINANCE}}, got {scope_raw!r}")
        allowed = SCOPES[kind]
        for key, value in scope_raw.items():
            if key not in ("model", "venue", "instrument"):
                raise err(f"scope.{key}", "unknown scope; known: model, venue, instrument")
            if key not in allowed:
                per = f"per {kind}" if kind else "desk-wide"
                ok = f"; it takes {', '.join('scope.' + a for a in allowed)}" if allowed else ""
                raise err(f"scope.{key}", f"{figure} is {per}{ok}")
            names = _names(value)
            if names is None:
                raise err(f"scope.{key}", f"expected a name or a list of names, got {value!r}")
            scopes[key] = names

    target = raw.get("target")
    obj = ACTION_OBJECT[action]
    derived = obj is not None and (kind == obj or (obj == "venue" and kind == "instrument"))
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise err("target", f"expected a {obj or 'model id or venue'} name, got {target!r}")
    if obj is None and target is not None:
        raise err("target", f"{action} is desk-wide and takes no target (got {target!r})"
                            + ("; use pause_venue or pause_model to act on one" if action != "alert" else ""))
    if derived and target is not None:
        raise err("target", f"{figure} is per {kind}: the rule targets the {obj} that crossed; "
                            f"restrict it with scope.{obj} instead (got {target!r})")
    if obj is not None and not derived and target is None:
        raise err("target", f"{action} needs a {obj} {'id' if obj == 'model' else 'name'} "
                            f"({figure} does not name one)")

    return Rule(name=name, figure=figure, op=op, threshold=threshold, action=action, window_s=window,
                target=target.strip() if isinstance(target, str) else None,
                scope_model=scopes.get("model", ()), scope_venue=scopes.get("venue", ()),
                scope_instrument=scopes.get("instrument", ()), cooldown_s=cooldown, severity=severity,
                over_s=over, min_count=min_count)


def parse_policy(data: Any, source: str, text: str | None = None) -> Policy:
    """Validate a parsed policy (a mapping with a ``rules`` list; module
    docstring) into a :class:`Policy`.

    Args:
        data: what the YAML (or JSON) parser returned.
        source: the file name, used in every error message and kept in
            ``Policy.source``.
        text: the file's text, for ``Policy.digest`` (sha256 hex); without it
            the digest is taken over the canonical JSON of ``data``.

    Raises:
        PolicyError: anything wrong, naming the rule (``rules[i]``, 0-based,
            and its name) and the field with the value: unknown keys (top
            level or rule), missing fields, unknown figures or actions (and
            ``resume``, which a policy may never do), bad operators,
            thresholds that are not numbers or out of the figure's range
            (fractions 0..1, never percent), bad windows, targets missing or
            not allowed, scopes that do not fit the figure, duplicate names.
    """
    if text is not None:
        digest = hashlib.sha256(text.encode()).hexdigest()
    else:
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    if data is None:
        raise PolicyError(source, "", "", "empty: expected a mapping with a 'rules' list (rules: [] for none)")
    if not isinstance(data, Mapping):
        raise PolicyError(source, "", "", f"expected a mapping with a 'rules' list, got {type(data).__name__}")
    for key in data:
        if key != "rules":
            raise PolicyError(source, "", str(key), "unknown key; known: rules")
    raw_rules = data.get("rules")
    if raw_rules is None:
        raw_rules = []
        if "rules" not in data:
            raise PolicyError(source, "", "rules", "required (rules: [] for none)")
    if not isinstance(raw_rules, list):
        raise PolicyError(source, "", "rules", f"expected a list of rules, got {raw_rules!r}")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_rules):
        rule = _parse_rule(i, raw, source)
        if rule.name in seen:
            raise PolicyError(source, _where(i, rule.name), "name", f"duplicate of rules[{seen[rule.name]}]")
        seen[rule.name] = i
        rules.append(rule)
    return Policy(rules=tuple(rules), source=source, digest=digest)


class RateWindow:
    """Outcomes (success or failure) per key on the engine clock, for
    windowed failure rates (reject rate, error rate per venue).

    Events are counted in buckets of ``bucket_ns`` (default 1 s), like
    Hystrix's rolling-window buckets; memory per key is bounded by
    ``horizon_ns / bucket_ns`` buckets whatever the event rate. A window of
    ``window_ns`` at ``now_ns`` covers the ``window_ns // bucket_ns`` buckets
    up to and including the one holding ``now_ns``: bucket index
    ``ts // bucket_ns`` in ``(now // bucket_ns - window_ns // bucket_ns,
    now // bucket_ns]``. With whole-second timestamps and 1 s buckets that is
    exactly the events with ``now - window < ts <= now``.

    Args:
        horizon_ns: the longest window that will be asked (default
            :data:`MAX_RATE_WINDOW_S`); older buckets are dropped.
        bucket_ns: the bucket width; the horizon and every window must be
            whole multiples of it.

    Raises:
        ValueError: a non-positive bucket, or a horizon that is not a
            positive multiple of the bucket.
    """

    def __init__(self, horizon_ns: int = MAX_RATE_WINDOW_S * NS, bucket_ns: int = NS) -> None:
        if bucket_ns <= 0 or horizon_ns <= 0 or horizon_ns % bucket_ns:
            raise ValueError(f"RateWindow: horizon_ns {horizon_ns} must be a positive multiple of "
                             f"bucket_ns {bucket_ns}")
        self.horizon_ns = horizon_ns
        self.bucket_ns = bucket_ns
        self._n = horizon_ns // bucket_ns
        # key -> deque of [bucket index, total, failed], ascending index
        self._b: dict[str, deque[list[int]]] = {}

    def record(self, key: str, ts_ns: int, failed: bool, n: int = 1) -> None:
        """Count ``n`` outcomes of ``key`` (a venue) at ``ts_ns`` (engine
        clock, UTC ns): failures when ``failed`` (a reject, a denial, a venue
        error), else successes. Out-of-order timestamps are placed in their
        bucket; ones older than the horizon are dropped."""
        idx = ts_ns // self.bucket_ns
        q = self._b.setdefault(key, deque())
        if q and idx < q[-1][0]:
            if idx <= q[-1][0] - self._n:
                return
            for b in reversed(q):
                if b[0] == idx:
                    b[1] += n
                    b[2] += n if failed else 0
                    return
                if b[0] < idx:
                    break
            q.append([idx, n, n if failed else 0])
            ordered = sorted(q)
            q.clear()
            q.extend(ordered)
            return
        if q and q[-1][0] == idx:
            q[-1][1] += n
            q[-1][2] += n if failed else 0
        else:
            q.append([idx, n, n if failed else 0])
        while q and q[0][0] <= idx - self._n:
            q.popleft()

    def counts(self, key: str, now_ns: int, window_ns: int) -> tuple[int, int]:
        """``(outcomes, failures)`` of ``key`` in the window ending at
        ``now_ns`` (class docstring).

        Raises:
            ValueError: a window that is not a positive multiple of the
                bucket or is longer than the horizon.
        """
        if window_ns <= 0 or window_ns % self.bucket_ns or window_ns > self.horizon_ns:
            raise ValueError(f"RateWindow: window_ns {window_ns} must be a positive multiple of "
                             f"{self.bucket_ns} up to the horizon {self.horizon_ns}")
        hi = now_ns // self.bucket_ns
        lo = hi - window_ns // self.bucket_ns
        total = failed = 0
        for idx, t, f in reversed(self._b.get(key, ())):
            if idx <= lo:
                break
            if idx <= hi:
                total += t
                failed += f
        return total, failed

    def rate(self, key: str, now_ns: int, window_ns: int) -> float:
        """Failures / outcomes of ``key`` in the window (a fraction 0..1);
        0.0 when there was no outcome. Raises as :meth:`counts`."""
        total, failed = self.counts(key, now_ns, window_ns)
        return failed / total if total else 0.0

    def keys(self) -> list[str]:
        """The keys seen (sorted)."""
        return sorted(self._b)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (for the engine checkpoint)."""
        return {"horizon_ns": self.horizon_ns, "bucket_ns": self.bucket_ns,
                "buckets": {k: [list(b) for b in q] for k, q in self._b.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (same horizon and bucket).

        Raises:
            ValueError: a different bucket width or horizon, or malformed buckets.
        """
        if state.get("bucket_ns") != self.bucket_ns or state.get("horizon_ns") != self.horizon_ns:
            raise ValueError(f"RateWindow: state has bucket_ns {state.get('bucket_ns')!r}, horizon_ns "
                             f"{state.get('horizon_ns')!r}; this window has {self.bucket_ns}, {self.horizon_ns}")
        out: dict[str, deque[list[int]]] = {}
        for k, q in dict(state.get("buckets", {})).items():
            rows = [[int(a), int(b), int(c)] for a, b, c in q]
            out[str(k)] = deque(sorted(rows))
        self._b = out


@dataclass
class Figures:
    """One snapshot of the live figures, filled by the engine for every
    evaluation, on the engine clock.

    Attributes:
        ts_ns: engine clock, UTC ns.
        drawdown: desk-wide, a fraction of peak equity 0..1 (Decimal).
        daily_loss: desk-wide, quote currency >= 0: ``max(0, -day pnl)``.
        reject_rate: per venue, a fraction: only used when ``counts`` has no
            ``"reject_rate"`` window (then the engine's own window applies and
            a rule's ``over_s``/``min_count`` are not).
        error_rate: per venue, a fraction; likewise with ``counts["error_rate"]``.
        data_staleness_s: per instrument id (``SYMBOL.VENUE``): seconds of
            engine clock since its last bar.
        venue_state: per venue: one of :data:`VENUE_STATES`.
        model_psr: per model id under canary analysis: the probabilistic
            Sharpe ratio (Bailey & López de Prado 2012) of its excess returns
            over the live version; NaN (too few returns) is not judged.
        counts: the windows rates are measured from: ``"reject_rate"`` ->
            a :class:`RateWindow` per venue where the engine records each
            order outcome once (accepted: success; rejected or denied:
            failure); ``"error_rate"`` -> one where it records each venue
            request (error: failure). A rate rule reads
            ``counts[figure].rate(venue, ts_ns, over_s)`` for every venue
            the window has seen.
        trading_state: ``ACTIVE``/``REDUCING``/``HALTED`` (what is in effect).
        halted_venues: venues under a per-venue halt.
        paused_models: models paused.
        open_positions: the number of open desk positions, None if unknown
            (a flatten while ``HALTED`` with none open is not repeated).
    """

    ts_ns: int
    drawdown: Decimal = Decimal(0)
    daily_loss: Decimal = Decimal(0)
    reject_rate: dict[str, float] = field(default_factory=dict)
    error_rate: dict[str, float] = field(default_factory=dict)
    data_staleness_s: dict[str, float] = field(default_factory=dict)
    venue_state: dict[str, str] = field(default_factory=dict)
    model_psr: dict[str, float] = field(default_factory=dict)
    counts: dict[str, RateWindow] = field(default_factory=dict)
    trading_state: str = "ACTIVE"
    halted_venues: frozenset[str] = frozenset()
    paused_models: frozenset[str] = frozenset()
    open_positions: int | None = None


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule that fired: what the engine must do.

    Attributes:
        rule: the rule.
        value: the figure's value that crossed (text; a rate as ``0.25``).
        target: the model id / venue acted on, or None (desk-wide action).
        action: ``rule.action`` (one of :data:`ACTIONS`; never a resume).
        reason: one line with the figures, for the alert, journal and audit:
            ``dd-halt: drawdown 0.06 > 0.05 -> halt``.
        key: the venue / instrument / model whose figure crossed (None for
            desk-wide figures).
        ts_ns: the evaluation's engine time.
    """

    rule: Rule
    value: str
    target: str | None
    action: str
    reason: str
    key: str | None = None
    ts_ns: int = 0

    @property
    def severity(self) -> str:
        """The rule's severity (alert level)."""
        return self.rule.severity


@dataclass
class _State:
    """Per-rule evaluation state (JSON through state_dict; "" stands for None keys)."""

    since: dict[str, int] = field(default_factory=dict)      # key -> ns the condition became true
    fired: dict[str, int] = field(default_factory=dict)      # cooldown subject -> ns of the last firing
    count: int = 0                                           # firings so far
    last_value: str = ""
    last_key: str = ""
    in_effect: bool = False                                  # last candidate was suppressed as in effect
    ts: int = 0                                              # last evaluation

    def to_json(self) -> dict[str, Any]:
        return {"since": dict(self.since), "fired": dict(self.fired), "count": self.count,
                "last_value": self.last_value, "last_key": self.last_key, "in_effect": self.in_effect,
                "ts": self.ts}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "_State":
        return cls(since={str(k): int(v) for k, v in d.get("since", {}).items()},
                   fired={str(k): int(v) for k, v in d.get("fired", {}).items()},
                   count=int(d.get("count", 0)), last_value=str(d.get("last_value", "")),
                   last_key=str(d.get("last_key", "")), in_effect=bool(d.get("in_effect", False)),
                   ts=int(d.get("ts", 0)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return format(v, ".6g")
    return str(v)


def _num(v: Any) -> Decimal | None:
    """A figure as Decimal for an exact comparison (floats by shortest repr); None when not judgeable."""
    if isinstance(v, Decimal):
        return v if v.is_finite() else None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)


def _venue_of(instrument: str) -> str:
    return instrument.rsplit(".", 1)[1] if "." in instrument else instrument


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // NS, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PolicyEngine:
    """Evaluates a :class:`Policy` against :class:`Figures` snapshots (module
    docstring for windows, rates, cooldowns, and why it never resumes).

    Deterministic: the same policy and the same sequence of figures give the
    same firings; no clock is read, no I/O is done.

    Args:
        policy: the policy in force.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._state: dict[str, _State] = {r.name: _State() for r in policy.rules}

    # ------------------------------------------------------------ evaluation
    def _values(self, rule: Rule, f: Figures) -> list[tuple[str | None, Any, str]]:
        """``(key, value, shown)`` per key in scope, sorted by key; value None = not judged."""
        kind = FIGURE_KEY[rule.figure]
        if kind is None:
            v = getattr(f, rule.figure)
            return [(None, v, _fmt(v))]
        out: list[tuple[str | None, Any, str]] = []
        window = f.counts.get(rule.figure) if rule.figure in RATE_FIGURES else None
        if window is not None:
            for key in window.keys():
                total, failed = window.counts(key, f.ts_ns, rule.over_s * NS)
                if total == 0:
                    continue
                shown = f"{_fmt(failed / total)} ({failed}/{total} over {rule.over_s} s)"
                if total < rule.min_count:
                    out.append((key, None, f"{failed}/{total} (< min {rule.min_count})"))
                else:
                    out.append((key, failed / total, shown))
        else:
            for key, v in getattr(f, rule.figure).items():
                out.append((key, v, _fmt(v)))
        kept = []
        for key, v, shown in sorted(out, key=lambda t: str(t[0])):
            assert key is not None
            if rule.scope_model and key not in rule.scope_model:
                continue
            if rule.scope_instrument and key not in rule.scope_instrument:
                continue
            if rule.scope_venue and (_venue_of(key) if kind == "instrument" else key) not in rule.scope_venue:
                continue
            kept.append((key, v, shown))
        return kept

    @staticmethod
    def _holds(rule: Rule, value: Any) -> bool:
        if value is None:
            return False
        if rule.figure == "venue_state":
            return isinstance(value, str) and OPS[rule.op](value, rule.threshold)
        d = _num(value)
        return d is not None and OPS[rule.op](d, rule.threshold)

    @staticmethod
    def _target(rule: Rule, key: str | None) -> str | None:
        obj = ACTION_OBJECT[rule.action]
        if obj is None:
            return None
        if rule.target is not None:
            return rule.target
        assert key is not None
        return _venue_of(key) if FIGURE_KEY[rule.figure] == "instrument" else key

    @staticmethod
    def _in_effect(action: str, target: str | None, f: Figures) -> bool:
        """True when the action is already in effect (firing it again would
        change nothing, or would de-escalate a halt)."""
        if action == "halt":
            return f.trading_state == "HALTED"
        if action == "reduce_only":
            return f.trading_state in ("REDUCING", "HALTED")
        if action == "flatten":
            return f.trading_state == "HALTED" and f.open_positions == 0
        if action == "pause_venue":
            return target in f.halted_venues
        if action == "pause_model":
            return target in f.paused_models
        return False

    def evaluate(self, figures: Figures) -> list[Firing]:
        """Judge every rule against ``figures`` and return the firings, in
        rule order then key order. Updates the windows and cooldowns.

        Windows: a key's condition must hold at every evaluation for at
        least ``window_s`` of engine time (from the first evaluation that
        found it true). Cooldown: ``cooldown_s`` after a firing, the same
        rule does not fire for the same subject (its target; for an alert,
        the key; for desk-wide actions, the rule). An action already in
        effect (halt while HALTED, ...) does not fire. Never returns a
        resume or any action outside :data:`ACTIONS`.
        """
        now = figures.ts_ns
        out: list[Firing] = []
        for rule in self.policy.rules:
            st = self._state.setdefault(rule.name, _State())
            st.ts = now
            values = self._values(rule, figures)
            present = set()
            candidates: list[tuple[str | None, str, int]] = []
            best: tuple[str, str] | None = None
            for key, value, shown in values:
                k = key or ""
                present.add(k)
                if self._holds(rule, value):
                    since = st.since.setdefault(k, now)
                    if best is None:
                        best = (k, shown)
                    if now - since >= rule.window_s * NS:
                        candidates.append((key, shown, since))
                else:
                    st.since.pop(k, None)
            for k in [k for k in st.since if k not in present]:
                del st.since[k]
            if best is None and values:  # nothing holds: show the value nearest the threshold
                best = self._nearest(rule, values)
            if best is not None:
                st.last_key, st.last_value = best
            st.in_effect = False
            done: set[str] = set()
            for key, shown, since in candidates:
                target = self._target(rule, key)
                subject = target if target is not None else (key or "") if rule.action == "alert" else ""
                if subject in done:
                    continue
                if self._in_effect(rule.action, target, figures):
                    st.in_effect = True
                    continue
                last = st.fired.get(subject)
                if last is not None and now - last < rule.cooldown_s * NS:
                    continue
                done.add(subject)
                st.fired[subject] = now
                st.count += 1
                fig = f"{rule.figure}[{key}]" if key is not None else rule.figure
                held = f" for {(now - since) // NS} s" if rule.window_s else ""
                act = f"{rule.action} {target}" if target else rule.action
                reason = f"{rule.name}: {fig} {shown} {rule.op} {rule.threshold}{held} -> {act}"
                out.append(Firing(rule=rule, value=shown.split(" ")[0], target=target, action=rule.action,
                                  reason=reason, key=key, ts_ns=now))
        return out

    @staticmethod
    def _nearest(rule: Rule, values: list[tuple[str | None, Any, str]]) -> tuple[str, str]:
        if rule.figure == "venue_state" or rule.op in ("==", "!="):
            key, _, shown = values[0]
            return key or "", shown
        judged = [(k, _num(v), s) for k, v, s in values if _num(v) is not None]
        if not judged:
            key, _, shown = values[0]
            return key or "", shown
        pick = max if rule.op in (">", ">=") else min
        key, _, shown = pick(judged, key=lambda t: t[1])
        return key or "", shown

    # ------------------------------------------------------------ reload, state
    def reload(self, new: Policy) -> tuple[list[str], list[str], list[str]]:
        """Put ``new`` in force. A rule whose name and definition (every
        field) are unchanged keeps its windows, cooldowns and counts; a
        changed or new rule starts afresh; a removed rule's state is dropped.
        ``new`` is already validated (:func:`parse_policy`), so this cannot
        fail: an invalid file never reaches it and the old policy stays.

        Returns:
            ``(kept, fresh, removed)`` rule names.
        """
        old = {r.name: r for r in self.policy.rules}
        kept, fresh = [], []
        state: dict[str, _State] = {}
        for r in new.rules:
            if old.get(r.name) == r:
                kept.append(r.name)
                state[r.name] = self._state.get(r.name, _State())
            else:
                fresh.append(r.name)
                state[r.name] = _State()
        removed = [n for n in old if new.rule(n) is None]
        self.policy = new
        self._state = state
        return kept, fresh, removed

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for the engine checkpoint: per rule its
        fingerprint, windows (key -> ns since), cooldowns (subject -> ns of
        the last firing), counts and last values; "" stands for no key."""
        return {"version": 1, "digest": self.policy.digest,
                "rules": {r.name: {"fingerprint": r.fingerprint(), **self._state[r.name].to_json()}
                          for r in self.policy.rules}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output: only rules present now with the
        same name and fingerprint take their state back (a policy edited
        between the checkpoint and the restart restarts the changed rules).

        Raises:
            ValueError: a state that is not a mapping of the expected shape.
        """
        if not isinstance(state, Mapping) or state.get("version") != 1 or not isinstance(state.get("rules"), Mapping):
            raise ValueError(f"policy state: expected {{version: 1, rules: {{...}}}}, got {state!r:.200}")
        restored: dict[str, _State] = {}
        for r in self.policy.rules:
            d = state["rules"].get(r.name)
            if isinstance(d, Mapping) and d.get("fingerprint") == r.fingerprint():
                try:
                    restored[r.name] = _State.from_json(d)
                except (TypeError, ValueError, AttributeError) as exc:
                    raise ValueError(f"policy state: rule {r.name!r}: {exc}") from None
        for name, st in restored.items():
            self._state[name] = st

    # ------------------------------------------------------------ display
    def describe(self) -> list[dict[str, str]]:
        """One row per rule for the TUI and the API, every value a string:
        ``name, figure, op, threshold, comparison ("> 0.05"), window ("60 s"
        or ""), over (a rate's window, "300 s" or ""), scope ("venue=BINANCE"
        or ""), action, target (or "each" when the crossing key is targeted,
        "" desk-wide), cooldown, severity, last_value (the value judged at the
        last evaluation; for per-key figures the key that holds, else the one
        nearest the threshold: "0.25 (BINANCE)"), status ("" idle, "holding
        30/60 s" waiting out the window, "fired" at the last evaluation,
        "cooldown" held but within cooldown_s of a firing, "in effect" held
        but the action already applies), last_fired (ISO UTC or
        ""), fired_count``."""
        rows = []
        for r in self.policy.rules:
            st = self._state.get(r.name, _State())
            scope = " ".join(f"{k}={','.join(v)}" for k, v in (("model", r.scope_model), ("venue", r.scope_venue),
                                                                ("instrument", r.scope_instrument)) if v)
            obj = ACTION_OBJECT[r.action]
            target = r.target or ("each" if obj is not None else "")
            last_value = st.last_value + (f" ({st.last_key})" if st.last_key and st.last_value else "")
            last_fired = max(st.fired.values(), default=None)
            status = ""
            if st.in_effect:
                status = "in effect"
            elif st.since:
                held = max((st.ts - s for s in st.since.values()), default=0)
                if held < r.window_s * NS:
                    status = f"holding {held // NS}/{r.window_s} s"
                elif last_fired == st.ts:
                    status = "fired"
                else:
                    status = "cooldown"  # held, fired earlier, waiting out cooldown_s
            rows.append({
                "name": r.name, "figure": r.figure, "op": r.op, "threshold": str(r.threshold),
                "comparison": r.comparison(), "window": f"{r.window_s} s" if r.window_s else "",
                "over": f"{r.over_s} s" if r.over_s else "", "scope": scope, "action": r.action,
                "target": target, "cooldown": f"{r.cooldown_s} s", "severity": r.severity,
                "last_value": last_value, "status": status,
                "last_fired": _iso(last_fired) if last_fired is not None else "",
                "fired_count": str(st.count),
            })
        return rows

    def summary(self) -> str:
        """One line: ``policy.yaml: 6 rules, sha256 1a2b3c4d5e6f``."""
        n = len(self.policy.rules)
        return f"{self.policy.source}: {n} rule{'s' if n != 1 else ''}, sha256 {self.policy.digest[:12]}"

    def rate_horizon_s(self) -> int:
        """The longest ``over_s`` of the policy's rate rules (0 without
        any): a RateWindow with a shorter horizon cannot answer them."""
        return max((r.over_s for r in self.policy.rules), default=0)

