"""examples/binance-testnet.yaml loads through desk.config and becomes the
adapter's BinanceConfig with the same fields."""

from __future__ import annotations

from pathlib import Path

from venues.binance.adapter import BinanceConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_testnet_example_loads_into_the_adapter_config():
    from desk.config import load_config

    cfg = load_config(ROOT / "examples" / "binance-testnet.yaml")
    (venue,) = cfg.venues
    b = BinanceConfig.from_mapping(venue)
    assert (b.name, b.market, b.testnet, b.symbols, b.recv_window_ms) == ("BINANCE", "spot", True, ("BTCUSDT",), 5000)
    assert (b.api_key_env, b.api_secret_env, b.urls) == ("BINANCE_API_KEY", "BINANCE_API_SECRET", None)
