"""desk.yaml (desk/config.py): every validation error names the field path
and the value; secrets are refused; relative paths are resolved against the
config file; the digest is the file's sha256; flags win over the file."""

import hashlib
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from core.errors import ConfigError
from desk.config import config_digest, is_loopback, is_secret_key, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "desk.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text))
    assert ei.value.exit_code == 2
    return str(ei.value)


BINANCE = "{kind: binance, symbols: [BTCUSDT]"
IBKR_C = "contracts: [{symbol: AAPL, sec_type: STK, exchange: SMART, currency: USD}]"

# (yaml text, the field path the message must name, the value it must show)
BAD = [
    ("capital: -5", "capital:", "-5"),
    ("capital: 0", "capital:", "0"),
    ("capital: .nan", "capital:", "nan"),
    ("capital: 2e12", "capital:", "2e12"),
    ("capital: [1]", "capital:", "[1]"),
    ("speed: fast", "speed:", "'fast'"),
    ("speed: 0", "speed:", "0"),
    ("speed: true", "speed:", "True"),
    ("tz: Mars/Olympus", "tz:", "'Mars/Olympus'"),
    ("data: [missing.csv]", "data[0]:", "missing.csv"),
    ("risk: nope.yaml", "risk:", "nope.yaml"),
    ("policy: nope.yaml", "policy:", "nope.yaml"),
    ("api: {port: 70000}", "api.port:", "70000"),
    ("api: {port: -1}", "api.port:", "-1"),
    ("api: {on_stop: maybe}", "api.on_stop:", "'maybe'"),
    ("api: {host: 'a b'}", "api.host:", "'a b'"),
    ("api: {prot: 8002}", "api.prot:", "unknown key"),
    ("apis: {}", "apis:", "unknown key"),
    ("alerts: {telegram: {chat_ids: []}}", "alerts.telegram.chat_ids:", "[]"),
    ("alerts: {telegram: {chat_ids: [abc]}}", "alerts.telegram.chat_ids[0]:", "'abc'"),
    ("alerts: {telegram: {chat_ids: [1], bot_token_env: 'not a var'}}", "alerts.telegram.bot_token_env:",
     "'not a var'"),
    ("alerts: {telegram: {chat_ids: [1], api_url: 'ftp://x'}}", "alerts.telegram.api_url:", "'ftp://x'"),
    ("venues: [{kind: ftx}]", "venues[0]:", "'ftx'"),
    ("venues: [{name: X}]", "venues[0]:", "kind"),
    ("venues: [{kind: paper, starting_cash: -1}]", "venues[0].starting_cash:", "-1"),
    ("venues: [{kind: paper, name: sim}]", "venues[0].name:", "'sim'"),
    (f"venues: [{BINANCE}, recv_window_ms: 90000}}]", "venues[0].recv_window_ms:", "90000"),
    (f"venues: [{BINANCE}, recv_window_ms: 0}}]", "venues[0].recv_window_ms:", "0"),
    (f"venues: [{BINANCE}, market: coinm}}]", "venues[0].market:", "'coinm'"),
    ("venues: [{kind: binance, symbols: []}]", "venues[0].symbols:", "[]"),
    ("venues: [{kind: binance, symbols: [btc/usdt]}]", "venues[0].symbols[0]:", "'btc/usdt'"),
    (f"venues: [{BINANCE}, testnet: maybe}}]", "venues[0].testnet:", "'maybe'"),
    (f"venues: [{BINANCE}, leverage: 3}}]", "venues[0].leverage:", "3"),
    (f"venues: [{BINANCE}, market: usdm, leverage: 200}}]", "venues[0].leverage:", "200"),
    (f"venues: [{BINANCE}, market: usdm, margin_mode: both}}]", "venues[0].margin_mode:", "'both'"),
    (f"venues: [{BINANCE}, api_key_env: 'bad name'}}]", "venues[0].api_key_env:", "'bad name'"),
    (f"venues: [{BINANCE}, colour: red}}]", "venues[0].colour:", "unknown key"),
    (f"venues: [{{kind: ibkr, port: 0, {IBKR_C}}}]", "venues[0].port:", "0"),
    (f"venues: [{{kind: ibkr, client_id: -2, {IBKR_C}}}]", "venues[0].client_id:", "-2"),
    ("venues: [{kind: ibkr, contracts: []}]", "venues[0].contracts:", "[]"),
    ("venues: [{kind: ibkr, contracts: [{symbol: ES, sec_type: FUT, exchange: CME, currency: USD}]}]",
     "venues[0].contracts[0].last_trade_date:", "ES"),
    ("venues: [{kind: ibkr, contracts: [{symbol: X, sec_type: BOND, exchange: SMART, currency: USD}]}]",
     "venues[0].contracts[0].sec_type:", "'BOND'"),
    ("venues: [{kind: ibkr, contracts: [{symbol: X, sec_type: STK, exchange: SMART, currency: usd}]}]",
     "venues[0].contracts[0].currency:", "'usd'"),
    ("venues: [{kind: ibkr, contracts: [{symbol: X, sec_type: FUT, exchange: CME, currency: USD, "
     "last_trade_date: '2026-12'}]}]", "venues[0].contracts[0].last_trade_date:", "'2026-12'"),
    ("venues: [{kind: paper}, {kind: paper}]", "venues:", "SIM"),
]


@pytest.mark.parametrize("text,path,value", BAD, ids=[b[1] + b[2] for b in BAD])
def test_each_error_names_the_field_path_and_the_value(tmp_path, text, path, value):
    msg = error_of(tmp_path, text)
    assert str(tmp_path / "desk.yaml") in msg
    assert path in msg, msg
    assert value in msg, msg
    assert msg.count(";") == 0, f"one error expected: {msg}"


def test_several_errors_are_all_reported(tmp_path):
    msg = error_of(tmp_path, "capital: -1\napi: {port: 99999}\n")
    assert "capital:" in msg and "api.port:" in msg


@pytest.mark.parametrize("key,hint", [
    ("api_key", "api_key_env"), ("secret", "api_secret_env"), ("api_secret", "api_secret_env"),
    ("token", "bot_token_env"), ("bot_token", "bot_token_env"), ("password", "password_env"),
])
def test_secrets_are_refused_naming_the_env_field(tmp_path, key, hint):
    value = "s3cr3t-VALUE-123"
    msg = error_of(tmp_path, f"venues: [{{kind: binance, symbols: [BTCUSDT], {key}: {value}}}]")
    assert f"venues[0].{key}:" in msg and hint in msg and "environment variable" in msg
    assert value not in msg  # the secret itself is never echoed


def test_secret_anywhere_in_the_file_is_refused(tmp_path):
    msg = error_of(tmp_path, "alerts: {telegram: {chat_ids: [1], bot_token: 'x'}}\n")
    assert "alerts.telegram.bot_token:" in msg
    msg = error_of(tmp_path, "api: {token: abc}\n")
    assert "api.token:" in msg


def test_secret_key_names():
    assert is_secret_key("api_key") and is_secret_key("API-KEY") and is_secret_key("db_password")
    assert is_secret_key("private_key") and is_secret_key("passphrase")
    assert not is_secret_key("api_key_env") and not is_secret_key("bot_token_env")
    assert not is_secret_key("symbols") and not is_secret_key("keep")


def test_yaml_errors_name_the_line(tmp_path):
    msg = error_of(tmp_path, "capital: 1\napi: {port: 8002\n")
    assert "line" in msg and "not valid YAML" in msg
    msg = error_of(tmp_path, "capital: 1\nspeed: 2\ncapital: 3\n")
    assert "line 3" in msg and "'capital' repeated (first on line 1)" in msg
    assert "expected a mapping" in error_of(tmp_path, "- a\n- b\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_relative_paths_are_resolved_against_the_config_file(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "BTCUSDT-1m.csv").write_text("x\n")
    (conf / "risk.yaml").write_text("{}\n")
    (conf / "policy.yaml").write_text("{}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory does not matter
    cfg = load_config(write(conf, """\
        state_dir: var/desk
        capital: "2500.50"
        speed: max
        data: [data/BTCUSDT-1m.csv]
        risk: risk.yaml
        policy: ./policy.yaml
        """))
    assert cfg.state_dir == conf / "var" / "desk"
    assert cfg.data == [conf / "data" / "BTCUSDT-1m.csv"]
    assert cfg.risk == conf / "risk.yaml" and cfg.policy == conf / "policy.yaml"
    assert cfg.capital == Decimal("2500.50") and cfg.speed == "max"
    absolute = load_config(write(conf, f"state_dir: {tmp_path / 'abs'}\n", "b.yaml"))
    assert absolute.state_dir == tmp_path / "abs"


def test_defaults_and_a_full_file(tmp_path):
    empty = load_config(write(tmp_path, ""))
    assert empty.api.host == "127.0.0.1" and empty.api.port is None and empty.api.on_stop == "cancel"
    assert empty.venues == [] and empty.data == [] and empty.alerts.telegram is None
    cfg = load_config(write(tmp_path, """\
        capital: 10000
        api: {host: 0.0.0.0, port: 8002, on_stop: keep}
        alerts: {telegram: {chat_ids: [-1001, 42], allow_resume: true}}
        venues:
          - {kind: paper, name: SIM, starting_cash: 10000}
          - {kind: binance, market: usdm, symbols: [BTCUSDT, ETHUSDT], leverage: 3, margin_mode: isolated,
             urls: {public: "http://127.0.0.1:9999"}}
          - {kind: ibkr, host: 127.0.0.1, port: 4002, client_id: 17, account: DU0000000,
             contracts: [{symbol: AAPL, sec_type: STK, exchange: SMART, currency: USD},
                         {symbol: ES, sec_type: FUT, exchange: CME, currency: USD, last_trade_date: "202612",
                          multiplier: 50}]}
        """))
    paper, binance, ibkr = cfg.venues
    assert paper.kind == "paper" and paper.starting_cash == Decimal("10000")
    assert binance.name == "BINANCE" and binance.testnet is True and binance.recv_window_ms == 5000
    assert binance.api_key_env == "BINANCE_API_KEY" and binance.api_secret_env == "BINANCE_API_SECRET"
    assert binance.leverage == 3 and binance.urls == {"public": "http://127.0.0.1:9999"}
    assert ibkr.name == "IBKR" and ibkr.contracts[1].multiplier == Decimal("50")
    assert cfg.alerts.telegram.bot_token_env == "TELEGRAM_BOT_TOKEN" and cfg.alerts.telegram.chat_ids == [-1001, 42]
    assert cfg.live_venues == []
    live = load_config(write(tmp_path, f"venues: [{BINANCE}, testnet: false}}, {{kind: ibkr, port: 4001, {IBKR_C}}}]\n"))
    assert live.live_venues == ["BINANCE", "IBKR"]


def test_examples_load():
    cfg = load_config(ROOT / "examples" / "desk.yaml")
    assert cfg.api.port == 8002 and cfg.api.host == "127.0.0.1" and [v.kind for v in cfg.venues] == ["paper"]
    assert cfg.state_dir == ROOT / "var" / "desk"  # relative to examples/
    binance = load_config(ROOT / "examples" / "binance-testnet.yaml")
    assert [(v.kind, v.testnet) for v in binance.venues] == [("binance", True)] and binance.live_venues == []
    ibkr = load_config(ROOT / "examples" / "ibkr-paper.yaml")
    assert [v.kind for v in ibkr.venues] == ["ibkr"] and ibkr.live_venues == []


def test_digest_is_the_sha256_of_the_bytes(tmp_path):
    p = write(tmp_path, "capital: 1\n")
    assert config_digest(p) == hashlib.sha256(b"capital: 1\n").hexdigest()


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
                                       ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("desk.lan", False)])
def test_loopback(host, loop):
    assert is_loopback(host) is loop


# ---------------------------------------------------------------- the CLI with --config
def _run(argv, capsys):
    from desk.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_bad_config_exits_2_naming_the_field(tmp_path, capsys):
    p = write(tmp_path, "capital: -3\n")
    code, out, err = _run(["run", "--headless", "--config", str(p), "--state-dir", str(tmp_path / "s")], capsys)
    assert code == 2 and out == "" and "capital:" in err and "-3" in err
    assert not (tmp_path / "s").exists()  # refused before anything is touched


def test_cli_live_venue_needs_live(tmp_path, capsys):
    p = write(tmp_path, f"venues: [{BINANCE}, testnet: false}}]\n")
    code, _, err = _run(["run", "--headless", "--config", str(p), "--state-dir", str(tmp_path / "s")], capsys)
    assert code == 2 and "BINANCE" in err and "--live" in err


def test_cli_flags_win_over_the_file(tmp_path):
    from desk.cli import _options, make_parser

    (tmp_path / "a.csv").write_text("x\n")
    cfg = load_config(write(tmp_path, "capital: 500\ntz: Europe/Berlin\nspeed: 4\ndata: [a.csv]\n"))
    args = make_parser().parse_args(["run", "--capital", "700"])
    opts = _options(args, tmp_path / "s", cfg)
    assert opts.capital == Decimal("700") and opts.day_tz == "Europe/Berlin" and opts.speed == 4.0
    assert opts.data == [tmp_path / "a.csv"]
    args = make_parser().parse_args(["run", "--tz", "UTC", "--speed", "max"])
    opts = _options(args, tmp_path / "s", cfg)
    assert opts.capital == Decimal("500") and opts.day_tz == "UTC" and opts.speed is None
    opts = _options(make_parser().parse_args(["run"]), tmp_path / "s", None)
    assert opts.capital == Decimal("10000") and opts.day_tz == "UTC"
