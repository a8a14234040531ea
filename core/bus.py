"""The in-process message bus: synchronous publish/subscribe by event type.

Handlers run in subscription order, in the publisher's call, so an event's
consequences are complete when ``publish`` returns (deterministic replays).
A handler that raises does not stop the others; the error is passed to the
bus's ``on_error`` callback (the engine turns it into an alert).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from core.events import Event

Handler = Callable[[Event], Any]


class MessageBus:
    """Publish events to handlers subscribed to their type or to all (``"*"``)."""

    def __init__(self, on_error: Callable[[Event, BaseException], None] | None = None) -> None:
        self._subs: dict[str, list[Handler]] = defaultdict(list)
        self._on_error = on_error

    def subscribe(self, event_type: str, handler: Handler) -> None:
        """Call ``handler(event)`` for each event of type ``event_type``
        (a class name such as ``"OrderFilled"``, or ``"*"`` for every event)."""
        self._subs[event_type].append(handler)

    def unsubscribe(self, event_type: str, handler: Handler) -> None:
        """Remove a handler (no error if it was not subscribed)."""
        try:
            self._subs[event_type].remove(handler)
        except ValueError:
            pass

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to its type's handlers, then to ``"*"`` handlers."""
        for handler in (*self._subs.get(event.type, ()), *self._subs.get("*", ())):
            try:
                handler(event)
            except Exception as exc:  # a faulty reader must not stop the engine
                if self._on_error is None:
                    raise
                self._on_error(event, exc)
