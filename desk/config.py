"""``desk.yaml``: the desk's configuration file (``desk run --config FILE``).

Read with PyYAML (safe loader; a key repeated in one mapping is refused
with its line) and validated with pydantic v2 at start, before anything is
built or any state dir is touched. Every error names the field path and the
value (``venues[0].recv_window_ms: Input should be less than or equal to
60000 (got 90000)``) and the run exits 2. Unknown keys are refused
(``extra="forbid"``), so a typo never silently falls back to a default.

Shape (every section optional)::

    state_dir: var/desk          # relative paths are relative to this file
    capital: "10000"             # trading capital and paper starting cash, quote
    speed: 10                    # bar steps per second, or "max"
    tz: UTC                      # IANA zone of the venue day
    data: [klines/BTCUSDT-1m.csv]
    risk: risk.yaml              # rails (desk/risk_config.py)
    policy: policy.yaml          # governance policy (desk/policy_config.py)
    api: {host: 127.0.0.1, port: 8002, on_stop: cancel}
    alerts:
      telegram: {bot_token_env: TELEGRAM_BOT_TOKEN, chat_ids: [12345], allow_resume: false}
    venues:
      - {kind: paper, name: SIM, starting_cash: "10000"}
      - {kind: binance, name: BINANCE, market: spot, testnet: true, symbols: [BTCUSDT]}
      - {kind: ibkr, name: IBKR, host: 127.0.0.1, port: 4002, client_id: 17, account: DU0000000,
         contracts: [{symbol: AAPL, sec_type: STK, exchange: SMART, currency: USD}]}

Secrets never live in the file: a key that looks like one (``api_key``,
``secret``, ``token``, ``password``, ``passphrase`` ... anywhere in the
file) is refused, naming the environment variable field to use instead
(``api_key_env``); the file names environment variables, the process
environment holds the values.

``api.on_stop`` (default ``cancel``): what the daemon does with the desk's
working orders when it is stopped (SIGTERM, SIGINT). ``cancel`` cancels
them (reduce-only protective stops stay, as with a halt): a stopped desk
watches nothing, so nothing of it should be able to trade. ``keep`` leaves
them working (a quick restart; the restarted desk reconciles them).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.errors import ConfigError

#: the largest trading capital accepted (quote), as on the command line
MAX_CAPITAL = Decimal("1e12")

#: key names that hold a secret value (compared lower-case, ``-`` read as ``_``)
_SECRET_WORDS = ("secret", "token", "password", "passwd", "passphrase", "private_key")
_SECRET_KEYS = {"api_key", "apikey", "key", "pass"}


def _env_hint(key: str) -> str:
    k = key.lower().replace("-", "_")
    if k in ("api_key", "apikey", "key"):
        return "api_key_env"
    if k in ("secret", "api_secret", "secret_key"):
        return "api_secret_env"
    if k in ("token", "bot_token"):
        return "bot_token_env"
    return f"{k}_env"


def is_secret_key(key: str) -> bool:
    """True when a config key name looks like it holds a secret value
    (``api_key``, ``secret``, ``bot_token``, ``password`` ...); names that
    end in ``_env`` (they name an environment variable) never do."""
    k = str(key).lower().replace("-", "_")
    if k.endswith("_env"):
        return False
    return k in _SECRET_KEYS or k.endswith("_api_key") or any(w in k for w in _SECRET_WORDS)


def _refuse_secrets(node: Any, path: str = "") -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            if is_secret_key(str(k)):
                raise ConfigError(
                    f"{here}: secrets are never written in the config file; put the value in an "
                    f"environment variable and name it with '{_env_hint(str(k))}'")
            _refuse_secrets(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _refuse_secrets(v, f"{path}[{i}]")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _resolve(v: Path | None, info: ValidationInfo) -> Path | None:
    if v is None:
        return None
    p = Path(v).expanduser()
    base = (info.context or {}).get("base_dir")
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return Path(os.path.normpath(p))  # "examples/../var" -> "var" (as written: symlinks are not resolved)


def _must_exist(p: Path | None) -> Path | None:
    if p is not None and not p.is_file():
        raise ValueError(f"no such file: {p}")
    return p


class ApiConfig(_Model):
    """The control API of the daemon.

    Attributes:
        host: the address to bind (default loopback; any other needs an
            explicit ``OPS_TOKEN``).
        port: the TCP port (1-65535), or None: no API (``--api-port``
            on the command line overrides it; 0 lets the system pick).
        on_stop: ``cancel`` (default) or ``keep`` the desk's working
            orders when the daemon is stopped (module docstring).
    """

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    on_stop: Literal["keep", "cancel"] = "cancel"

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v) or "/" in v:
            raise ValueError("expected an IP address or a host name")
        return v


class TelegramConfig(_Model):
    """Telegram alerts and commands (Bot API through httpx).

    Attributes:
        bot_token_env: the environment variable holding the bot token.
        chat_ids: the allow-listed chat ids (alerts go there; commands
            from any other chat are ignored); at least one.
        allow_resume: whether ``/resume`` is accepted from Telegram.
        api_url: the Bot API base URL (tests point it at a local stub).
    """

    bot_token_env: str = Field(default="TELEGRAM_BOT_TOKEN", pattern=_ENV_NAME)
    chat_ids: list[int] = Field(min_length=1)
    allow_resume: bool = False
    api_url: str = Field(default="https://api.telegram.org", pattern=r"^https?://\S+$")


class AlertsConfig(_Model):
    """Alert sinks beyond the log and the UI."""

    telegram: TelegramConfig | None = None


class PaperVenueConfig(_Model):
    """The paper venue (the desk's own matching on bars).

    Attributes:
        name: the venue name in instrument ids (``BTCUSDT.SIM``).
        starting_cash: the paper account's quote cash (default: ``capital``).
    """

    kind: Literal["paper"]
    name: str = Field(default="SIM", pattern=r"^[A-Z][A-Z0-9_]*$")
    starting_cash: Decimal | None = Field(default=None, gt=0, le=MAX_CAPITAL, allow_inf_nan=False)


class BinanceVenueConfig(_Model):
    """Binance through ccxt: spot or USD-M futures, testnet/demo or live.

    Attributes:
        name: the venue name in instrument ids (``BTCUSDT.BINANCE``).
        market: ``spot`` or ``usdm`` (USD-M perpetuals).
        testnet: spot testnet / futures demo trading (default True); a
            live venue (False) also needs ``desk run --live``.
        symbols: Binance symbols traded (``BTCUSDT``), at least one.
        recv_window_ms: the signed requests' ``recvWindow`` (1-60000 ms;
            Binance refuses more than 60000).
        api_key_env / api_secret_env: the environment variables holding
            the key and secret.
        urls: ccxt ``urls['api']`` overrides (tests point ccxt at a local
            server), or None.
        leverage: USD-M only, 1-125.
        margin_mode: USD-M only, ``isolated`` or ``cross``.
    """

    kind: Literal["binance"]
    name: str = Field(default="BINANCE", pattern=r"^[A-Z][A-Z0-9_]*$")
    market: Literal["spot", "usdm"] = "spot"
    testnet: bool = True
    symbols: list[Annotated[str, Field(pattern=r"^[A-Z0-9]{2,30}$")]] = Field(min_length=1)
    recv_window_ms: int = Field(default=5000, ge=1, le=60000)
    api_key_env: str = Field(default="BINANCE_API_KEY", pattern=_ENV_NAME)
    api_secret_env: str = Field(default="BINANCE_API_SECRET", pattern=_ENV_NAME)
    urls: dict[str, str] | None = None
    leverage: int | None = Field(default=None, ge=1, le=125)
    margin_mode: Literal["isolated", "cross"] | None = None

    @model_validator(mode="after")
    def _futures_only(self) -> "BinanceVenueConfig":
        if self.market == "spot":
            for name in ("leverage", "margin_mode"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for market usdm, got {getattr(self, name)!r} on spot")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbols: listed twice: {sorted({s for s in self.symbols if self.symbols.count(s) > 1})}")
        return self

    @property
    def live(self) -> bool:
        """True for a live (non-testnet) venue."""
        return not self.testnet


class IbkrContract(_Model):
    """One IB contract.

    Attributes:
        symbol: the IB symbol (``AAPL``, ``ES``, ``EUR``).
        sec_type: STK, ETF, FUT or CASH.
        exchange: ``SMART``, ``CME``, ``IDEALPRO`` ...
        currency: ISO currency (``USD``).
        last_trade_date: ``YYYYMM`` or ``YYYYMMDD``; required for FUT.
        multiplier: the contract multiplier (FUT), > 0.
    """

    symbol: str = Field(pattern=r"^[A-Z0-9.\- ]{1,20}$")
    sec_type: Literal["STK", "ETF", "FUT", "CASH"]
    exchange: str = Field(pattern=r"^[A-Z0-9_.]{1,20}$")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    last_trade_date: str | None = Field(default=None, pattern=r"^\d{6}(\d{2})?$")
    multiplier: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _future_needs_date(self) -> "IbkrContract":
        if self.sec_type == "FUT" and self.last_trade_date is None:
            raise ValueError(f"last_trade_date: required for FUT {self.symbol} (YYYYMM or YYYYMMDD)")
        return self


class IbkrVenueConfig(_Model):
    """Interactive Brokers through ib_async (TWS or IB Gateway).

    Attributes:
        name: the venue name in instrument ids (``AAPL.IBKR``).
        host / port: the TWS/Gateway API socket (paper: 7497 TWS, 4002
            Gateway; live: 7496, 4001).
        client_id: the API client id (0-2147483647).
        account: the IB account (``DU...`` for paper), or None for the
            only account of the login.
        contracts: the contracts traded, at least one.
    """

    kind: Literal["ibkr"]
    name: str = Field(default="IBKR", pattern=r"^[A-Z][A-Z0-9_]*$")
    host: str = "127.0.0.1"
    port: int = Field(default=4002, ge=1, le=65535)
    client_id: int = Field(default=1, ge=0, le=2**31 - 1)
    account: str | None = Field(default=None, pattern=r"^[A-Z0-9]{2,20}$")
    contracts: list[IbkrContract] = Field(min_length=1)

    @property
    def live(self) -> bool:
        """True when it looks like a live account: the live ports 7496 and
        4001, or an account id that is not a paper one (``D...``)."""
        return self.port in (7496, 4001) or (self.account is not None and not self.account.startswith("D"))


VenueConfig = Annotated[Union[PaperVenueConfig, BinanceVenueConfig, IbkrVenueConfig], Field(discriminator="kind")]


class DeskConfig(_Model):
    """The whole file. Paths are absolute after loading (resolved against
    the config file's folder); ``data``, ``risk`` and ``policy`` files must
    exist.

    Attributes:
        state_dir: the state directory (``--state-dir`` overrides it).
        capital: trading capital and paper starting cash (quote), in
            (0, 1e12].
        speed: bar steps per second in (0, 1e6], or ``"max"``.
        tz: the IANA zone of the venue day (default UTC).
        data: kline CSVs to replay (empty: the SIM market or live venues).
        risk: the rails file (desk/risk_config.py).
        policy: the governance policy file.
        api / alerts / venues: see their models.
    """

    state_dir: Path | None = None
    capital: Decimal | None = Field(default=None, gt=0, le=MAX_CAPITAL, allow_inf_nan=False)
    speed: float | Literal["max"] | None = None
    tz: str | None = None
    data: list[Path] = Field(default_factory=list)
    risk: Path | None = None
    policy: Path | None = None
    api: ApiConfig = Field(default_factory=ApiConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    venues: list[VenueConfig] = Field(default_factory=list)

    @field_validator("state_dir", mode="after")
    @classmethod
    def _state_dir(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)

    @field_validator("risk", "policy", mode="after")
    @classmethod
    def _file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _must_exist(_resolve(v, info))

    @field_validator("data", mode="after")
    @classmethod
    def _data(cls, v: list[Path], info: ValidationInfo) -> list[Path]:
        out = [_resolve(p, info) for p in v]
        for i, p in enumerate(out):
            if p is None or not p.is_file():
                raise ValueError(f"[{i}]: no such file: {p}")
        if len(set(out)) != len(out):
            raise ValueError("a file is listed twice")
        return out  # type: ignore[return-value]

    @field_validator("venues", mode="after")
    @classmethod
    def _venues(cls, v: list[Any]) -> list[Any]:
        # runs only when the key is given: ``venues: []`` would quietly run the SIM paper desk
        if not v:
            raise ValueError("empty list; leave the key out for the SIM market, or list a venue")
        return v

    @field_validator("speed", mode="before")
    @classmethod
    def _speed(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() == "max":
            return "max"
        if isinstance(v, bool) or (v is not None and not isinstance(v, (int, float))):
            raise ValueError("expected a number of bar steps per second, or 'max'")
        if v is not None and not (0 < v <= 1e6):
            raise ValueError("must be > 0 and at most 1000000 (or 'max')")
        return v

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone") from None
        return v

    @model_validator(mode="after")
    def _venue_names(self) -> "DeskConfig":
        names = [v.name for v in self.venues]
        if len(set(names)) != len(names):
            raise ValueError(f"venues: a name is used twice: {names}")
        return self

    @property
    def live_venues(self) -> list[str]:
        """Names of the venues that trade real money (need ``--live``)."""
        return [v.name for v in self.venues if getattr(v, "live", False)]


def is_loopback(host: str) -> bool:
    """True for a loopback address (``127.0.0.0/8``, ``::1``) or ``localhost``;
    any other name or address (``0.0.0.0`` too) is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _loader() -> Any:
    import yaml

    class _UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # type: ignore[override]
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} repeated (first on line {seen[key]})", key_node.start_mark)
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return _UniqueKeyLoader


def _loc(loc: tuple[Any, ...]) -> str:
    """``("venues", 0, "symbols", 1)`` -> ``venues[0].symbols[1]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        # a discriminated union puts the tag in the path: venues.0.binance.x -> venues[0].x
        if len(loc) >= 3 and loc[0] == "venues" and isinstance(loc[1], int) and loc[2] in ("paper", "binance", "ibkr"):
            del loc[2]
        # a model validator's message names its own field: keep it in the path
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        m = re.match(r"^(\[\d+\]|[a-z_]+): (.*)$", msg, re.S)
        where = _loc(tuple(loc))
        if m and err["type"] == "value_error":
            head = m.group(1)
            where = f"{where}{head}" if head.startswith("[") else (f"{where}.{head}" if where else head)
            msg = m.group(2)
        value = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {_short(value)})"
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
            shown = ""
        lines.append(f"{where or '(top level)'}: {msg}{shown}")
    return f"{path}: " + "; ".join(lines)


def load_config(path: str | Path) -> DeskConfig:
    """Read and validate ``path``.

    Returns the :class:`DeskConfig` with paths resolved against the file's
    folder.

    Raises:
        ConfigError: naming the file and, for each problem, the field path
            and the value: missing or unreadable file, bad YAML (with its
            line), a repeated key, a secret in the file, an unknown key, a
            bad value (exit 2).
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config: {p}: cannot read: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: {where}: not valid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top, got {type(raw).__name__}")
    try:
        _refuse_secrets(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    try:
        return DeskConfig.model_validate(raw, context={"base_dir": p.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(_format_errors(p, exc)) from None


def config_digest(path: str | Path) -> str:
    """The sha256 (hex) of the config file's bytes, printed at start so an
    operator can tell which file a daemon runs with.

    Raises:
        OSError: when the file cannot be read.
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
