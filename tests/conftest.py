"""Shared fixtures: where the recorded data lives (``../shared/data``)."""

import os
from pathlib import Path

import pytest

#: ../shared/data beside the repository, or where DESK_SHARED_DATA points
SHARED_DATA = Path(os.environ.get("DESK_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
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
        lines = [line for _, line in zip(range(rows + 1), fh)]  # fewer when the file is shorter
    dst.write_text("".join(lines))
    return dst
