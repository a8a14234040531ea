"""Modal screens: a confirmation with Cancel focused, the flatten
confirmation (lists what will be closed, asks for the word FLATTEN), the
quit question (halt and quit / quit and leave orders / cancel), the help
screen that lists every key binding, and the reconciliation differences
(what the venue holds against what the store holds, side by side).

The kill switch stays live over all of them: it is an App binding with
``priority=True``, checked before any screen's or widget's bindings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Static


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a dangerous action; dismisses with True only on the
    confirm button (or ``y``). Cancel has the focus first; ``n`` and
    ``escape`` cancel.

    Args:
        title: the question.
        body: what will happen, naming the targets.
        confirm_label: the confirm button's label.
    """

    BINDINGS = [
        Binding("escape,n", "cancel", "Cancel", id="confirm-cancel"),
        Binding("y", "confirm", "Confirm", id="confirm-ok"),
        Binding("left", "app.focus_previous", show=False),
        Binding("right", "app.focus_next", show=False),
    ]
    AUTO_FOCUS = "#cancel"

    def __init__(self, title: str, body: str, confirm_label: str) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.body_text = body
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        """Title, body, Cancel then Confirm."""
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.body_text, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button(self.confirm_label, id="confirm", variant="warning")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Dismiss with the choice."""
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        """Dismiss with False."""
        self.dismiss(False)

    def action_confirm(self) -> None:
        """Dismiss with True."""
        self.dismiss(True)


@dataclass(frozen=True, slots=True)
class FlattenRow:
    """One position the flatten will close (the dialog's table).

    Attributes:
        model: the model id.
        instrument: the instrument id.
        quantity: the position (base units, as text).
        value: quantity × the last price (quote, as text).
        note: how it will be closed (``market sell 0.0381``) or ``DUST …``.
    """

    model: str
    instrument: str
    quantity: str
    value: str
    note: str


#: the word the operator types to confirm a flatten
FLATTEN_WORD = "FLATTEN"


class FlattenScreen(ModalScreen[bool]):
    """Confirm a flatten: the positions that will be closed, then an input
    where the operator types ``FLATTEN``; the confirm button stays disabled
    until the text is exactly that. Cancel has the focus first; ``escape``
    cancels; ``enter`` in the input confirms once the word is right.
    Dismisses with True only on confirmation.

    Args:
        rows: the positions to close.
        working: working orders of the desk (canceled by the halt first).
        total: the summed value of the rows (text).
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="flatten-cancel"),
    ]
    AUTO_FOCUS = "#cancel"

    def __init__(self, rows: Iterable[FlattenRow], working: int, total: str) -> None:
        super().__init__(classes="dialog-screen")
        self.rows = list(rows)
        self.working = working
        self.total = total

    def compose(self) -> ComposeResult:
        """Title, what happens, the positions, the input, Cancel then Flatten."""
        from rich.table import Table

        n = len(self.rows)
        with Vertical(classes="dialog flatten"):
            yield Static("Flatten all positions?", classes="dialog-title")
            yield Static(
                f"Halts first (HALTED; {self.working} working order{'s' if self.working != 1 else ''} canceled), "
                f"then closes {'each of these ' + str(n) + ' positions' if n else 'nothing: the desk holds no position'}"
                " with a reduce-only MARKET sell. Dust below the step or the minimums is reported, not sold. "
                "The desk stays HALTED until you resume.",
                classes="dialog-body",
            )
            if n:
                table = Table(box=None, show_header=True, header_style="bold", padding=(0, 1), expand=True)
                table.add_column("Model", no_wrap=True)
                table.add_column("Instrument", no_wrap=True)
                table.add_column("Quantity", justify="right", no_wrap=True)
                table.add_column("Value", justify="right", no_wrap=True)
                table.add_column("Close", no_wrap=True, overflow="ellipsis")
                for r in self.rows:
                    table.add_row(r.model, r.instrument, r.quantity, r.value, r.note)
                table.add_row("", "Σ", "", self.total, "", style="bold")
                yield VerticalScroll(Static(table, id="flatten-table"), classes="flatten-list")
            yield Static(f"Type {FLATTEN_WORD} to confirm:", classes="dialog-note")
            yield Input(placeholder=FLATTEN_WORD, id="flatten-input", select_on_focus=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button("Flatten", id="confirm", variant="error", disabled=True)

    def on_key(self, event: Any) -> None:
        """Typing a letter while Cancel (focused first) or the list has the
        focus goes to the FLATTEN input: the operator can just type the word;
        enter still presses Cancel until the word is complete."""
        inp = self.query_one("#flatten-input", Input)
        ch = getattr(event, "character", None)
        if self.focused is not inp and ch and ch.isprintable() and len(ch) == 1 and not ch.isspace():
            event.stop()
            event.prevent_default()
            inp.focus()
            inp.insert_text_at_cursor(ch)

    def on_input_changed(self, event: Input.Changed) -> None:
        """Enable the confirm button only for the exact word."""
        event.stop()
        self.query_one("#confirm", Button).disabled = event.value != FLATTEN_WORD

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """``enter`` in the input confirms when the word is right."""
        event.stop()
        if event.value == FLATTEN_WORD:
            self.dismiss(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Dismiss with the choice (the confirm button only when enabled)."""
        event.stop()
        ok = event.button.id == "confirm" and self.query_one("#flatten-input", Input).value == FLATTEN_WORD
        self.dismiss(ok)

    def action_cancel(self) -> None:
        """Dismiss with False."""
        self.dismiss(False)


class QuitScreen(ModalScreen[str]):
    """Asked by ``q`` while orders are working. Dismisses with ``"halt"``
    (halt, cancel every working order, quit), ``"leave"`` (quit, the orders
    stay at the venue) or ``"cancel"``. Cancel has the focus first.

    Args:
        working: the number of working orders.
    """

    BINDINGS = [
        Binding("escape", "choose('cancel')", "Cancel", id="quit-cancel"),
        Binding("left", "app.focus_previous", show=False),
        Binding("right", "app.focus_next", show=False),
    ]
    AUTO_FOCUS = "#cancel"

    def __init__(self, working: int) -> None:
        super().__init__(classes="dialog-screen")
        self.working = working

    def compose(self) -> ComposeResult:
        """The question and three buttons."""
        n = self.working
        with Vertical(classes="dialog"):
            yield Static("Quit the desk?", classes="dialog-title")
            yield Static(
                f"{n} order{'s are' if n != 1 else ' is'} working. "
                "Halt and quit cancels them and leaves the desk HALTED; "
                "quit and leave orders keeps them working at the venue.",
                classes="dialog-body",
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Halt and quit", id="halt", variant="error")
                yield Button("Quit and leave orders", id="leave", variant="warning")
                yield Button("Cancel", id="cancel", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Dismiss with the button's id."""
        event.stop()
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        """Dismiss with ``choice``."""
        self.dismiss(choice)


class HelpScreen(ModalScreen[None]):
    """Every key binding with what it does; ``escape``, ``q`` or ``?`` closes.

    Args:
        rows: ``(keys, description, binding id)`` lines.
        notes: extra lines under the table.
    """

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close", id="help-close")]

    def __init__(self, rows: Iterable[tuple[str, str, str]], notes: Iterable[str] = ()) -> None:
        super().__init__(classes="dialog-screen")
        self.rows = list(rows)
        self.notes = list(notes)

    def compose(self) -> ComposeResult:
        """The table of keys."""
        from rich.table import Table

        table = Table(box=None, show_header=True, header_style="bold", padding=(0, 1), expand=True)
        table.add_column("Key", no_wrap=True)
        table.add_column("Action")
        table.add_column("Binding id", no_wrap=True, style="dim")
        for keys, desc, bid in self.rows:
            table.add_row(keys, desc, bid)
        with VerticalScroll(classes="dialog help"):
            yield Static("Keys", classes="dialog-title")
            yield Static(table, id="help-table")
            for note in self.notes:
                yield Static(note, classes="dialog-note")

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)


#: core.recovery's instrument and cash differences:
#: "BTCUSDT.BINANCE: the venue holds 0 BTC, the store 0.28336227",
#: "cash: the venue holds 9300 USDT, the store 9400"
_HOLDS = re.compile(r"^(?P<item>.+?): the venue holds (?P<venue>\S+) (?P<unit>\S+), the store (?P<store>\S+)$")


@dataclass(frozen=True, slots=True)
class ReconDiff:
    """One unreconciled difference, split for the table.

    Attributes:
        item: the instrument id, ``cash <quote>``, or "" for free text.
        venue: what the venue holds (as text), or "".
        store: what the store holds (as text), or "".
        difference: venue - store (as text), or "".
        detail: the message itself when it is not a holding difference.
    """

    item: str
    venue: str
    store: str
    difference: str
    detail: str


def parse_difference(text: str) -> ReconDiff:
    """Split one of ``engine.unreconciled``: an instrument's or the cash
    balance's difference gives item, venue, store and venue - store
    (Decimal); anything else stays whole in ``detail``."""
    m = _HOLDS.match(text.strip())
    if m is not None:
        try:
            diff = Decimal(m["venue"]) - Decimal(m["store"])
        except InvalidOperation:
            pass
        else:
            item = f"cash {m['unit']}" if m["item"] == "cash" else m["item"]
            return ReconDiff(item, m["venue"], m["store"], format(diff, "f"), "")
    return ReconDiff("", "", "", "", text)


class ReconcileScreen(ModalScreen[None]):
    """"Reconciliation differences": what the venue holds against what the
    store holds, one row a difference (item | venue | store | difference |
    detail). Trading stays HALTED until the operator resumes through the
    palette. ``escape`` (or Close) closes it; the kill switch stays live.

    Args:
        differences: the messages of ``engine.unreconciled``.
    """

    DEFAULT_CSS = """
    ReconcileScreen .dialog.recon { width: 110; max-width: 100%; border: thick $error; }
    ReconcileScreen #recon-table { height: auto; max-height: 12; margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape", "close", "Close", id="recon-close")]
    AUTO_FOCUS = "#recon-table"

    def __init__(self, differences: Iterable[str]) -> None:
        super().__init__(classes="dialog-screen")
        self.rows = [parse_difference(d) for d in differences]

    def compose(self) -> ComposeResult:
        """Title, what it means, the table, Close."""
        n = len(self.rows)
        with Vertical(classes="dialog recon"):
            yield Static("Reconciliation differences", classes="dialog-title")
            yield Static(
                f"{n} difference{'s' if n != 1 else ''} between the venue and the store that the store "
                "cannot explain. Trading stays HALTED until you resume: command palette (ctrl+p) "
                "→ Resume trading.",
                classes="dialog-body",
            )
            yield DataTable(id="recon-table", cursor_type="row", zebra_stripes=True)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary")

    def on_mount(self) -> None:
        """Fill the table."""
        table = self.query_one("#recon-table", DataTable)
        table.add_column("Item", key="item")
        table.add_column("Venue", key="venue")
        table.add_column("Store", key="store")
        table.add_column("Difference", key="difference")
        table.add_column("Detail", key="detail")
        for r in self.rows:
            table.add_row(r.item, r.venue, r.store, r.difference, r.detail)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Close."""
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        """Close the differences."""
        self.dismiss(None)


class WeightScreen(ModalScreen["str | None"]):
    """Pin a model version's stage weight by hand (DESIGN.md section 3: a
    manual weight pins the stage weight and pauses canary stepping until
    cleared). The input takes a fraction 0..1 (``0.25``) or a percent
    (``25%``); an empty input clears the pin. Dismisses with the text typed
    (validated: the Set button stays disabled while it is not a weight), or
    None on Cancel / ``escape``. Cancel has the focus first.

    Args:
        model_id: the version.
        current: its stage weight now (text, fraction) and whether pinned.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="weight-cancel")]
    AUTO_FOCUS = "#weight-input"

    def __init__(self, model_id: str, current: str, pinned: bool) -> None:
        super().__init__(classes="dialog-screen")
        self.model_id = model_id
        self.current = current
        self.pinned = pinned

    def compose(self) -> ComposeResult:
        """Title, what happens, the input, Cancel then Set."""
        with Vertical(classes="dialog"):
            yield Static(f"Stage weight of {self.model_id}", classes="dialog-title")
            yield Static(
                f"Now {self.current}{' (pinned by hand)' if self.pinned else ''}. A weight pins this version's "
                "budget at family budget × weight and pauses canary stepping until cleared; leave it empty "
                "to clear the pin.", classes="dialog-body")
            yield Input(placeholder="0.25, 25% or empty", id="weight-input")
            yield Static("", id="weight-error", classes="dialog-note")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button("Set", id="confirm", variant="warning", disabled=not self.pinned)

    @staticmethod
    def parse(text: str) -> Decimal | None:
        """The weight as a fraction: ``"0.25"`` and ``"25%"`` give 0.25; an
        empty text gives None (clear).

        Raises:
            ValueError: naming the text when it is not a fraction in [0, 1].
        """
        t = text.strip()
        if not t:
            return None
        try:
            v = Decimal(t[:-1].strip()) / 100 if t.endswith("%") else Decimal(t)
        except InvalidOperation:
            raise ValueError(f"weight: not a number: {text!r}") from None
        if not v.is_finite() or not 0 <= v <= 1:
            raise ValueError(f"weight: expected a fraction in [0, 1] or a percent, got {text!r}")
        return v

    def _valid(self, text: str) -> bool:
        try:
            v = self.parse(text)
        except ValueError:
            return False
        return v is not None or self.pinned

    def _why_not(self, text: str) -> str:
        """Why ``text`` cannot be set ("" when it can)."""
        try:
            v = self.parse(text)
        except ValueError as exc:
            return f"{exc}: type a fraction from 0 to 1 (0.25) or a percent (25%)"
        if v is None and not self.pinned:
            return "empty clears a pin, and this weight is not pinned"
        return ""

    def on_input_changed(self, event: Input.Changed) -> None:
        """Enable Set only for a valid weight (or empty, to clear a pin);
        say why not under the input."""
        event.stop()
        ok = self._valid(event.value)
        self.query_one("#confirm", Button).disabled = not ok
        self.query_one("#weight-error", Static).update("" if ok or not event.value.strip()
                                                       else self._why_not(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """``enter`` sets a valid weight."""
        event.stop()
        if self._valid(event.value):
            self.dismiss(event.value)
        else:
            self.query_one("#weight-error", Static).update(self._why_not(event.value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Dismiss with the text on Set, None on Cancel."""
        event.stop()
        text = self.query_one("#weight-input", Input).value
        self.dismiss(text if event.button.id == "confirm" and self._valid(text) else None)

    def action_cancel(self) -> None:
        """Dismiss with None."""
        self.dismiss(None)
