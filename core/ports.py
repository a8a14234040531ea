"""Ports (``typing.Protocol``) that ``venues`` and ``models`` implement.

``core`` owns these interfaces so that it never imports an SDK (DESIGN.md
section 2).
"""

from __future__ import annotations

from concurrent.futures import Future
from decimal import Decimal
from typing import Any, Callable, Protocol

from core.data import Bar
from core.identifiers import InstrumentId


class FitExecutor(Protocol):
    """Runs CPU-heavy jobs (HMM fits) off the event loop.

    The default (``models.executor.ProcessFitExecutor``) is one worker
    process started at launch with one BLAS thread at lower priority
    (DESIGN.md section 7). ``fn`` must be a picklable top-level function.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> "Future[Any]":
        """Schedule ``fn(*args)``; returns a ``concurrent.futures.Future``."""
        ...

    def shutdown(self) -> None:
        """Stop the workers (idempotent)."""
        ...


class RegimeModel(Protocol):
    """One model version trading one instrument.

    The engine calls, per bar of ``instrument_id``: ``observe(bar)`` (updates
    features and, once fitted, the posterior with one forward-filter step),
    then ``target_fraction()``. When ``fit_due()`` turns true the engine
    takes ``fit_job()``, runs it on the ``FitExecutor`` and, at a bar fixed by
    the engine clock, passes the result to ``apply_fit``.
    """

    model_id: str
    instrument_id: InstrumentId

    def observe(self, bar: Bar) -> None:
        """Take one bar (in time order)."""
        ...

    def fit_due(self) -> bool:
        """True when the model has a full warm-up window and wants a fit."""
        ...

    def fit_job(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """A picklable ``(fn, args)`` whose result ``apply_fit`` accepts.
        Marks the fit as pending, so ``fit_due()`` is false until applied."""
        ...

    def apply_fit(self, result: Any) -> None:
        """Install a fit's result and bring the posterior up to date."""
        ...

    def is_ready(self) -> bool:
        """True once a fit is installed and a posterior exists."""
        ...

    def target_fraction(self) -> Decimal | None:
        """Target position as a fraction of the budget in [0, 1] (spot is
        long-only), or None while not ready."""
        ...

    def regime(self) -> tuple[int, float] | None:
        """(most likely canonical state, its posterior probability) or None."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state for restart (parameters, filter state,
        feature buffers)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        ...
