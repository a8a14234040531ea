"""The desk's Textual themes and stylesheet (imported only by ``desk``).

Two themes: ``desk-dark`` (the default) and ``desk-high-contrast``. Both
take their hues from the Okabe-Ito palette, which stays distinguishable for
the common forms of colour blindness: profit is blue and loss orange (never
green against red), and every signed figure also carries a ``+``/``-``
sign, so no meaning rests on colour alone.

Colours reach the screen only through theme variables: Textual's semantic
ones (``$primary``, ``$success``, ``$warning``, ``$error`` …) and the desk's
own, declared in :data:`VARIABLE_DEFAULTS` (served by
``DeskApp.get_theme_variable_defaults`` so that any theme, even a stock
Textual one picked from the palette, has them) and overridden per theme.
"""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

#: the stylesheet (``DeskApp.CSS_PATH``)
DESK_TCSS = Path(__file__).with_name("desk.tcss")

#: the desk's own theme variables and their fallbacks (Okabe-Ito hues)
VARIABLE_DEFAULTS: dict[str, str] = {
    "pnl-up": "#56B4E9",  # sky blue: profit
    "pnl-down": "#E69F00",  # orange: loss
    "status-working": "#56B4E9",
    "status-filled": "#009E73",  # bluish green
    "status-canceled": "#8C96A0",
    "status-rejected": "#D55E00",  # vermillion
    "status-pending": "#F0E442",  # yellow
    "halted-background": "#B3261E",
    "halted-foreground": "#FFFFFF",
    "reducing-background": "#4A4300",  # dark yellow: REDUCING, distinct from the solid armed banner
    "reducing-foreground": "#F0E442",
    "armed-background": "#F0E442",
    "armed-foreground": "#000000",
}

DESK_DARK = Theme(
    name="desk-dark",
    primary="#56B4E9",
    secondary="#0072B2",
    accent="#E69F00",
    warning="#F0E442",
    error="#D55E00",
    success="#009E73",
    foreground="#D8DEE9",
    background="#0E1217",
    surface="#151B22",
    panel="#1E2833",
    dark=True,
    variables=dict(VARIABLE_DEFAULTS),
)

DESK_HIGH_CONTRAST = Theme(
    name="desk-high-contrast",
    primary="#33B8FF",
    secondary="#66CCFF",
    accent="#FFB000",
    warning="#FFE500",
    error="#FF5A36",
    success="#00D9A3",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#202020",
    dark=True,
    variables={
        **VARIABLE_DEFAULTS,
        "pnl-up": "#33B8FF",
        "pnl-down": "#FFB000",
        "status-working": "#33B8FF",
        "status-filled": "#00D9A3",
        "status-canceled": "#C8C8C8",
        "status-rejected": "#FF5A36",
        "status-pending": "#FFE500",
        "halted-background": "#FF0000",
        "halted-foreground": "#FFFFFF",
        "reducing-background": "#4D4500",
        "reducing-foreground": "#FFE500",
        "armed-background": "#FFE500",
        "armed-foreground": "#000000",
        "block-cursor-background": "#FFFFFF",
        "block-cursor-foreground": "#000000",
        "footer-key-foreground": "#FFE500",
    },
)

#: every desk theme, registered by the app
THEMES: tuple[Theme, ...] = (DESK_DARK, DESK_HIGH_CONTRAST)
#: the default theme's name
DEFAULT_THEME = DESK_DARK.name
