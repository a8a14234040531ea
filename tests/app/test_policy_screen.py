"""Pilot tests of the policy screen (desk.policy_screen): mounted in a
minimal App, it shows one row per rule of the policy in force with the
values worked out by hand from the figures fed, follows evaluations and a
reload, says when no policy is configured, and closes on escape."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from textual.app import App

from core.policy import NS, Figures, PolicyEngine, parse_policy
from desk.policy_config import load_policy_file
from desk.policy_screen import NO_POLICY, PolicyScreen
from tests.app.conftest import settle

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000 * NS  # 2023-11-14T22:13:20Z


class _Host(App):
    """A bare app that pushes the screen at start."""

    def __init__(self, screen: PolicyScreen) -> None:
        super().__init__()
        self.policy_screen = screen

    def on_mount(self) -> None:
        self.push_screen(self.policy_screen)


def _rows(app: App) -> list[tuple[str, ...]]:
    table = app.screen.query_one("#policy-table")
    return [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


async def test_rows_of_the_example_policy_follow_the_engine():
    eng = PolicyEngine(load_policy_file(ROOT / "examples" / "policy.yaml"))
    eng.evaluate(Figures(T0, drawdown=Decimal("0.02"), venue_state={"SIM": "DISCONNECTED"},
                         data_staleness_s={"BTCUSDT.SIM": 60.0}, model_psr={"hmm_v2_canary": 0.4}))
    screen = PolicyScreen(eng, refresh_s=0)
    app = _Host(screen)
    async with app.run_test(size=(200, 40)) as pilot:
        assert await settle(pilot, lambda: isinstance(app.screen, PolicyScreen))
        assert _rows(app) == [
            ("dd-halt", "drawdown", ">", "0.05", "at once", "halt", "desk", "0.02", "ok", "never"),
            ("daily-loss-flatten", "daily_loss", ">=", "500", "at once", "flatten", "desk", "0", "ok", "never"),
            ("rejects-reduce", "reject_rate", ">", "0.2", "over 300 s", "reduce_only", "desk", "—", "ok", "never"),
            ("stale-data", "data_staleness_s", ">", "180", "at once", "alert", "desk", "60 (BTCUSDT.SIM)", "ok",
             "never"),
            ("venue-down", "venue_state", "==", "DISCONNECTED", "for 60 s", "pause_venue", "each",
             "DISCONNECTED (SIM)", "holding 0/60 s", "never"),
            ("canary-psr-rollback", "model_psr", "<", "0.01", "for 7200 s", "rollback", "each",
             "0.4 (hmm_v2_canary)", "ok", "never"),
        ]
        summary = str(app.screen.query_one("#policy-summary").render())
        assert "policy.yaml: 6 rules, sha256 " in summary
        # 60 s later the venue has been down for its whole window: fired at 22:14:20
        fired = eng.evaluate(Figures(T0 + 60 * NS, drawdown=Decimal("0.02"), venue_state={"SIM": "DISCONNECTED"}))
        assert [f.target for f in fired] == ["SIM"]
        screen.refresh_rows()
        await pilot.pause()
        assert _rows(app)[4][-2:] == ("fired", "2023-11-14T22:14:20Z ×1")
        # a reload with one rule rebuilds the table
        eng.reload(parse_policy({"rules": [{"name": "dd", "figure": "drawdown", "op": ">", "threshold": 0.1,
                                            "action": "alert", "scope": None}]}, "p.yaml"))
        screen.refresh_rows()
        await pilot.pause()
        assert _rows(app) == [("dd", "drawdown", ">", "0.1", "at once", "alert", "desk", "—", "ok", "never")]
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, PolicyScreen))


async def test_no_policy_configured():
    app = _Host(PolicyScreen(None))
    async with app.run_test(size=(80, 24)) as pilot:
        assert await settle(pilot, lambda: isinstance(app.screen, PolicyScreen))
        assert str(app.screen.query_one("#policy-summary").render()) == NO_POLICY
        assert not app.screen.query("#policy-table")
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, PolicyScreen))
