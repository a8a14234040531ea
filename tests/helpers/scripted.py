"""Test doubles for engine tests: a scripted model that follows a fixed
target sequence (so order flow is known by hand) and an inline executor."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.data import Bar
from core.identifiers import InstrumentId


@dataclass
class ScriptFit:
    """The 'fit' of a scripted model: just the bar count it was taken at."""

    at: int
    history: list[float]
    n_iter: int = 1
    converged: bool = True


def scripted_fit(n: int) -> ScriptFit:
    return ScriptFit(n, [0.0])


class ScriptedModel:
    """Ready after ``warmup`` bars (with a fit applied through the executor);
    then its target is ``targets[i % len(targets)]`` at its i-th ready bar."""

    def __init__(self, model_id: str, instrument_id: InstrumentId, targets: list[str], warmup: int = 3) -> None:
        self.model_id = model_id
        self.instrument_id = instrument_id
        self.targets = [Decimal(t) for t in targets]
        self.warmup = warmup
        self.n = 0
        self.fit: ScriptFit | None = None
        self.pending = False
        self.ready_bars = 0

    def observe(self, bar: Bar) -> None:
        self.n += 1
        if self.fit is not None:
            self.ready_bars += 1

    def fit_due(self) -> bool:
        return self.fit is None and not self.pending and self.n >= self.warmup

    def fit_job(self):
        self.pending = True
        return scripted_fit, (self.n,)

    def apply_fit(self, result: Any) -> None:
        self.fit = result
        self.pending = False

    def is_ready(self) -> bool:
        return self.fit is not None and self.ready_bars > 0

    def target_fraction(self) -> Decimal | None:
        if not self.is_ready():
            return None
        return self.targets[(self.ready_bars - 1) % len(self.targets)]

    def regime(self):
        return (0, 1.0) if self.is_ready() else None

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "fit": None if self.fit is None else self.fit.at, "pending": self.pending,
                "ready_bars": self.ready_bars}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.n, self.pending, self.ready_bars = s["n"], s["pending"], s["ready_bars"]
        self.fit = None if s["fit"] is None else ScriptFit(s["fit"], [0.0])


class InlineExecutor:
    """Runs jobs at once in the caller."""

    def submit(self, fn, /, *args):
        f: Future = Future()
        f.set_result(fn(*args))
        return f

    def shutdown(self) -> None:
        pass
