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
