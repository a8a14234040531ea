"""The rails' limits from a YAML file (desk run --risk FILE)."""

import json
from decimal import Decimal

import pytest

from core.errors import ConfigError
from core.identifiers import InstrumentId
from desk.cli import main
from desk.risk_config import load_risk_config
from tests.unit.test_cli import good_rows, orders_in, write

D = Decimal
IID = InstrumentId("BTCUSDT", "BINANCE")


def test_scopes_units_and_defaults(tmp_path):
    f = tmp_path / "risk.yaml"
    f.write_text("""
max_submits: 10
window_s: 30
defaults: {max_order_notional: "10000", collar_pct: 0.05, stale_after_s: 300, duplicate_window_s: 10}
venues: {BINANCE: {max_gross_exposure: "20000"}}
instruments: {BTCUSDT.BINANCE: {max_position_notional: 5000}}
models: {hmm_v2_canary: {max_order_notional: "1000", max_fills_per_window: 5, fills_window_s: 600}}
""")
    cfg = load_risk_config(f, allowed_symbols=frozenset({"BTCUSDT.BINANCE"}), max_order_notional=D("7"))
    assert cfg.max_submits == 10 and cfg.window_ns == 30 * 10**9
    assert cfg.limit("max_order_notional", model_id="hmm_v2_canary", instrument_id=IID) == D("1000")
    assert cfg.limit("max_order_notional", model_id="hmm_v1", instrument_id=IID) == D("10000")
    assert cfg.limit("collar_pct", instrument_id=IID) == D("0.05")
    assert cfg.limit("stale_after_ns", instrument_id=IID) == 300 * 10**9
    assert cfg.limit("max_position_notional", instrument_id=IID) == D("5000")
    assert cfg.per_venue["BINANCE"].max_gross_exposure == D("20000")
    assert cfg.limit("fills_window_ns", model_id="hmm_v2_canary") == 600 * 10**9


@pytest.mark.parametrize("text,needle", [
    ("defaults: {max_order_notional: -5}", "defaults.max_order_notional: must be positive"),
    ("defaults: {collar_pct: 5}", "defaults.collar_pct: a fraction below 1"),
    ("defaults: {max_notional: 5}", "defaults.max_notional: unknown limit"),
    ("models: {m: {max_fills_per_window: 2.5}}", "models.m.max_fills_per_window: expected a whole number"),
    ("defaults: {daily_loss_limit: NaN}", "daily_loss_limit"),
    ("max_submit: 5", "max_submit: unknown key"),
    ("defaults: [1, 2", "not valid YAML"),
])
def test_bad_files_name_the_field_and_value(tmp_path, text, needle):
    f = tmp_path / "risk.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        load_risk_config(f, allowed_symbols=None, max_order_notional=None)


def test_cli_uses_the_limits_and_refuses_a_bad_file(tmp_path, capsys):
    data = write(tmp_path, "BTCUSDT-1m-x.csv", good_rows(10))
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {max_order_notional: zero}")
    code = main(["run", "--headless", "--data", str(data), "--risk", str(bad), "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "max_order_notional" in err and "zero" in err
    assert orders_in(tmp_path / "s") == 0  # refused at start: nothing traded
    good = tmp_path / "risk.yaml"
    good.write_text("max_submits: 3\n")
    code = main(["run", "--headless", "--data", str(data), "--risk", str(good), "--state-dir", str(tmp_path / "t")])
    assert code == 0 and json.loads(capsys.readouterr().out)["bars"] == 10


def test_the_readme_example_loads(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    f = tmp_path / "risk.yaml"
    f.write_text(block)
    cfg = load_risk_config(f, allowed_symbols=None, max_order_notional=None)
    assert cfg.defaults.collar_pct == D("0.05") and cfg.per_model["hmm_v2_canary"].max_order_notional == D("1000")


def test_names_not_in_the_run_are_refused(tmp_path, capsys):
    data = write(tmp_path, "BTCUSDT-1m-x.csv", good_rows(10))
    for text, needle in (("instruments: {BTCUSDT: {max_position_notional: 5}}", "instruments.BTCUSDT: not in this run"),
                         ("models: {hmm_v9: {max_order_notional: 5}}", "models.hmm_v9: not in this run"),
                         ("venues: {KRAKEN: {max_gross_exposure: 5}}", "venues.KRAKEN: not in this run")):
        f = tmp_path / "r.yaml"
        f.write_text(text)
        code = main(["run", "--headless", "--data", str(data), "--risk", str(f), "--state-dir", str(tmp_path / "s")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "known" in err


def test_a_max_order_notional_from_the_file_slices_instead_of_denying(tmp_path):
    """One model (weight 1) buys 5 ETH at 2000 = 10,000; a model-scoped max of 4,000 per order
    sends 2.0 ETH (4000 / 2000) per bar: 2.0, 2.0, then the last 1.0, and nothing is denied."""
    import asyncio

    from core.risk import Limits, RiskConfig, RiskEngine
    from tests.unit.test_engine import build

    eng = build(tmp_path, ["2000"] * 10, ["1"], lows=["1999"] * 3 + ["1990"] * 7)
    eng.risk = RiskEngine(RiskConfig(per_model={"m0": Limits(max_order_notional=D("4000"))}))
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    buys = [D(q) for (q,) in eng.store.conn.execute("SELECT quantity FROM orders WHERE side='BUY' ORDER BY step")]
    assert buys[:3] == [D("2"), D("2"), D("1")]
    assert eng.store.conn.execute("SELECT COUNT(*) FROM orders WHERE status='DENIED'").fetchone()[0] == 0


def test_a_rail_that_keeps_denying_is_asked_less_and_less(tmp_path):
    """A daily loss limit already reached: entries are denied, and the router backs off
    (5, 10, 20, 40 ... bars) instead of asking every bar: 60 bars give 4 denials, not 58."""
    import asyncio

    from core.risk import Limits, RiskConfig, RiskEngine
    from tests.unit.test_engine import build

    eng = build(tmp_path, ["2000"] * 60, ["1"], lows=["2000"] * 60)
    eng.risk = RiskEngine(RiskConfig(defaults=Limits(daily_loss_limit=D("0.01"))))
    eng.day_start_equity = D("10001")  # the desk is already 1 USDT down today
    eng._day_end_ns = 10**30  # (the day does not roll within the test)
    asyncio.run(eng.warm_up())
    asyncio.run(eng.run())
    # ready at bar 3: denied at bars 3, 3+5=8, 8+10=18, 18+20=38 (then 38+40=78 > 60)
    denied = [s for (s,) in eng.store.conn.execute("SELECT step FROM orders WHERE status='DENIED' ORDER BY step")]
    assert denied == [2, 7, 17, 37]


def test_the_desk_default_rails_hold_unless_a_file_sets_or_turns_them_off(tmp_path):
    # built in: collar 5 % and stale data after 300 s; a file's defaults win field by field; null turns one off
    from core.risk import DESK_DEFAULT_LIMITS
    from desk.risk_config import load_risk_config

    assert (DESK_DEFAULT_LIMITS.collar_pct, DESK_DEFAULT_LIMITS.stale_after_ns) == (Decimal("0.05"), 300 * 10**9)
    f = tmp_path / "r.yaml"
    f.write_text("defaults:\n  daily_loss_limit: '500'\n")
    d = load_risk_config(f, allowed_symbols=None, max_order_notional=None).defaults
    assert (d.collar_pct, d.stale_after_ns, d.daily_loss_limit) == (Decimal("0.05"), 300 * 10**9, Decimal("500"))
    f.write_text("defaults:\n  collar_pct: '0.02'\n  stale_after_s: null\n")
    d = load_risk_config(f, allowed_symbols=None, max_order_notional=None).defaults
    assert (d.collar_pct, d.stale_after_ns) == (Decimal("0.02"), None)


def test_a_max_order_notional_below_the_minimum_is_refused_at_start(tmp_path, capsys):
    # with every order capped at 1 USDT no BTCUSDT order could ever reach Binance's min notional: the desk
    # would run ACTIVE and never trade (a break test saw exactly that, exit 0, no alert); refused, exit 2
    from core.identifiers import InstrumentId
    from core.instruments import Instrument
    from core.risk import Limits, RiskConfig, unreachable_minimums

    iid = InstrumentId("BTCUSDT", "BINANCE")
    inst = Instrument(iid, "BTC", "USDT", D("0.01"), D("0.00001"), D("0.00001"), min_notional=D("5"))
    cfg = RiskConfig(max_order_notional=D("1000"), per_model={"canary": Limits(max_order_notional=D("4.99"))})
    assert unreachable_minimums(cfg, {iid: inst}, ["live", "canary"]) == [
        "max_order_notional 4.99 for model canary is below the min notional 5 of BTCUSDT.BINANCE: "
        "it could never trade there"]
    data = write(tmp_path, "BTCUSDT-1m-x.csv", good_rows(10))
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text('defaults: {max_order_notional: "1"}\n')
    code = main(["run", "--headless", "--data", str(data), "--risk", str(tiny), "--state-dir", str(tmp_path / "u")])
    err = capsys.readouterr().err
    assert code == 2 and "max_order_notional 1 for model hmm_v1 is below the min notional" in err
