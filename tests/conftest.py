"""Shared fixtures: where the recorded data lives (``../shared/data``)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KLINES = SHARED_DATA / "binance" / "klines"


@pytest.fixture
def klines_dir() -> Path:
    """The recorded Binance klines; skips where ../shared/data is absent."""
    if not KLINES.is_dir():
        pytest.skip("../shared/data is absent")
    return KLINES


def head_csv(src: Path, dst: Path, rows: int) -> Path:
    """Copy the header and the first ``rows`` data rows of ``src`` to ``dst``."""
    with open(src) as fh:
        lines = [next(fh) for _ in range(rows + 1)]
    dst.write_text("".join(lines))
    return dst
