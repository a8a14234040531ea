"""The command palette's desk commands (``ctrl+p`` or ``:``).

Governance goes through the palette where a key would be too easy to hit:
"Resume trading" (from HALTED or REDUCING; asks for confirmation, Cancel
focused), "Halt trading" (at once: halting is the safe direction), "Halt
venue V" for each venue (at once; the others keep trading) and "Resume venue
V" (asks),
"Reduce-only (REDUCING)" (asks, Cancel focused), "Flatten all positions"
(lists what will be closed, asks for the word FLATTEN), "Show reconciliation
differences" (venue against store, side by side), pause or resume of each
model version, promote or roll back a canary (asks first), the governance
policy in force and its reload, and the replay speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from textual.command import DiscoveryHit, Hit, Hits, Provider

from desk.widgets.models import model_rows

if TYPE_CHECKING:
    from desk.app import DeskApp


def desk_commands(app: "DeskApp") -> Iterator[tuple[str, str, Callable[[], Any]]]:
    """The desk's palette commands as ``(name, help, callback)``."""
    state = app.engine.trading_state.value
    if state == "HALTED":
        yield ("Resume trading", "Lift the halt: back to ACTIVE (asks first)", app.action_resume_trading)
    elif state == "REDUCING":
        yield ("Resume trading", "Lift reduce-only: back to ACTIVE (asks first)", app.action_resume_trading)
    else:
        yield ("Resume trading", "Not halted: nothing to resume", app.action_resume_trading)
    yield ("Halt trading", "HALTED now and cancel every working order (no confirmation)", app.action_halt_now)
    for venue in sorted({i.venue for i in app.engine.instruments}):
        if venue in app.engine.halted_venues:
            yield (f"Resume venue {venue}", f"Lift {venue}'s halt: orders to it pass again (asks first)",
                   lambda v=venue: app.confirm_resume_venue(v))
        else:
            yield (f"Halt venue {venue}", f"No new order to {venue}, its working orders canceled; the other "
                   f"venues keep trading (no confirmation)", lambda v=venue: app.halt_venue_now(v))
    yield ("Reduce-only (REDUCING)", "Only exposure-reducing orders pass (asks first)", app.action_reduce_only)
    yield ("Flatten all positions", "Halt, then close every position with reduce-only market sells "
           "(lists them; type FLATTEN)", app.action_flatten)
    n = len(app.engine.unreconciled)
    yield ("Show reconciliation differences",
           f"{n} unreconciled difference{'s' if n != 1 else ''} with the venue: venue against store"
           if n else "No unreconciled difference with the venue", app.action_show_reconciliation)
    for row in model_rows(app.engine):
        mid, stage = row["model_id"], row["stage"]
        if stage == "retired":
            continue
        if mid in app.engine.paused:
            yield (f"Resume model {mid}", f"Let {mid} open new exposure again", lambda m=mid: app.set_model_paused(m, False))
        else:
            yield (f"Pause model {mid}", f"{mid} opens no new exposure (its sells still pass)",
                   lambda m=mid: app.set_model_paused(m, True))
        if stage == "canary" or (stage == "paused" and row.get("intervals") is not None):
            yield (f"Promote canary {mid}", f"{mid} becomes its family's live version (asks first)",
                   lambda m=mid: app.confirm_lifecycle("promote", m))
            yield (f"Roll back canary {mid}", f"{mid} is retired and unwound (asks first)",
                   lambda m=mid: app.confirm_lifecycle("rollback", m))
    yield ("Show governance policy", "The rules in force, their last values and firings", app.action_show_policy)
    yield ("Reload governance policy", "Re-read the policy file; a bad file keeps the policy in force",
           app.action_reload_policy)
    yield ("Speed up", "More bar steps per second (+)", app.action_speed_up)
    yield ("Slow down", "Fewer bar steps per second (-)", app.action_slow_down)
    yield ("Help: keys", "List every key binding (?)", app.action_help)


class DeskCommands(Provider):
    """Palette provider for governance and replay commands."""

    async def discover(self) -> Hits:
        """Every desk command, shown when the palette opens empty."""
        for name, help_text, callback in desk_commands(self.app):  # type: ignore[arg-type]
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """Fuzzy-match the desk commands."""
        matcher = self.matcher(query)
        for name, help_text, callback in desk_commands(self.app):  # type: ignore[arg-type]
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
