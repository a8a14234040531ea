"""A refused start leaves the state dir as it found it (break test of the
README): the inputs are checked before anything is created, and a refusal
that comes after the store was created removes what the attempt created
(``desk.sqlite``, ``venue-paper.sqlite``, ``audit/``; the dir and its
``desk.lock`` when the attempt created the dir), so the next valid run on
that dir starts as a new run. A dir that holds a setup is never touched.

The runs go through ``desk.cli.main`` in-process; the fit worker is replaced
by an inline executor (the 40-bar replays never fit: the default models need
521 bars, so nothing is traded and the capital stays cash)."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path

import pytest

import core.policy_runtime
import models.executor
from core.errors import ConfigError
from desk.cli import main
from desk.wiring import StateDir
from tests.helpers.scripted import InlineExecutor

HEADER = "open_time,open,high,low,close,volume\n"
#: a policy whose rule the loader refuses: venue_state compares with == or != only
BAD_POLICY = "rules:\n  - {name: x, figure: venue_state, op: '>', threshold: 1, action: halt}\n"
GOOD_POLICY = "rules:\n  - {name: dd, figure: drawdown, op: '>', threshold: 0.05, action: halt}\n"


class _Inline(InlineExecutor):
    def warm(self, *_: str) -> None:
        pass


@pytest.fixture(autouse=True)
def _inline_fits(monkeypatch):
    monkeypatch.setattr(models.executor, "ProcessFitExecutor", _Inline)
    saved = logging.root.handlers[:]  # main() points the root logger at this test's stderr
    yield
    logging.root.handlers[:] = saved


def csv_file(tmp_path: Path, n: int = 40) -> Path:
    rows = []
    for k in range(n):
        p = 100.0 * (1 + ((k % 7) - 3) / 100)
        rows.append(f"{1_600_000_000_000 + k * 60_000},{p:.6f},{p * 1.01:.6f},{p * 0.99:.6f},{p * 1.005:.6f},10\n")
    f = tmp_path / "BTCUSDT-1m-x.csv"
    f.write_text(HEADER + "".join(rows))
    return f


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tree(d: Path) -> dict[str, object]:
    """Every path under ``d`` (relative) with its content: None for a dir,
    an SQLite file's rows and schema (``iterdump``: opening a database may
    rewrite its header bytes, not its content; its -wal/-shm are left out),
    other files' bytes."""
    import sqlite3

    out: dict[str, object] = {}
    for p in sorted(d.rglob("*")):
        if p.name.endswith(("-wal", "-shm")):
            continue  # SQLite's own side files (the dump below reads through them)
        if p.is_dir():
            out[str(p.relative_to(d))] = None
        elif p.suffix == ".sqlite":
            with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as c:
                out[str(p.relative_to(d))] = list(c.iterdump())
        else:
            out[str(p.relative_to(d))] = p.read_bytes()
    return out


def assert_clean_run_with_capital_5000(capsys, data: Path, state: Path) -> None:
    # the run the break test saw fail with exit 3 (the venue's ledger still held the refused start's 10000)
    code, out, err = run(capsys, "run", "--headless", "--data", str(data), "--capital", "5000",
                         "--state-dir", str(state))
    assert code == 0, err[-2000:]
    summary = json.loads(out)
    assert "UNRECONCILED" not in err
    # 40 bars < 521 warm-up bars: no fit, no order; the 5000 stays cash
    assert (Decimal(summary["cash_end"]), Decimal(summary["equity_end"])) == (Decimal("5000"), Decimal("5000"))
    assert summary["fills"] == 0


def test_a_refused_policy_creates_nothing_and_the_next_run_starts_clean(tmp_path, capsys):
    data, bad = csv_file(tmp_path), tmp_path / "bad.yaml"
    bad.write_text(BAD_POLICY)
    state = tmp_path / "var" / "p3"
    code, out, err = run(capsys, "run", "--headless", "--data", str(data), "--policy", str(bad),
                         "--state-dir", str(state))
    assert code == 2 and out == ""
    assert "op: venue_state compares with == or != only" in err
    assert not (tmp_path / "var").exists()  # not even the dir: the policy is read before it is made

    state.mkdir(parents=True)
    assert run(capsys, "run", "--headless", "--data", str(data), "--policy", str(bad),
               "--state-dir", str(state))[0] == 2
    assert tree(state) == {}  # an existing empty dir stays empty (no desk.lock either)
    assert_clean_run_with_capital_5000(capsys, data, state)


def _refuse_late(monkeypatch, state: Path, seen: list[set[str]]) -> None:
    """The policy runtime refuses (as a start refused after the engine was
    built would), after noting what the state dir holds at that moment."""

    def refuse(self, engine, policy, path=None):
        seen.append({p.name for p in state.iterdir()})
        raise ConfigError("policy: refused late (test)")

    monkeypatch.setattr(core.policy_runtime.PolicyRuntime, "__init__", refuse)


def test_a_start_refused_after_the_store_was_made_removes_what_it_made(tmp_path, capsys, monkeypatch):
    data, good = csv_file(tmp_path), tmp_path / "good.yaml"
    good.write_text(GOOD_POLICY)
    seen: list[set[str]] = []
    _refuse_late(monkeypatch, tmp_path / "var" / "new", seen)

    # a dir this attempt created: everything goes, the dir, its parent var/ and desk.lock too
    state = tmp_path / "var" / "new"
    code, _, err = run(capsys, "run", "--headless", "--data", str(data), "--policy", str(good),
                       "--state-dir", str(state))
    assert code == 2 and "refused late (test)" in err
    assert {"desk.sqlite", "venue-paper.sqlite", "audit", "desk.lock"} <= seen[0]  # they did exist
    assert not (tmp_path / "var").exists()

    # an existing dir with a file of the operator's: the file stays; what the start made goes; desk.lock stays
    state = tmp_path / "mine"
    state.mkdir()
    (state / "notes.txt").write_text("keep me\n")
    _refuse_late(monkeypatch, state, seen)
    assert run(capsys, "run", "--headless", "--data", str(data), "--policy", str(good),
               "--state-dir", str(state))[0] == 2
    assert {"desk.sqlite", "venue-paper.sqlite", "audit"} <= seen[1]
    assert sorted(p.name for p in state.iterdir()) == ["desk.lock", "notes.txt"]
    assert (state / "notes.txt").read_text() == "keep me\n"

    monkeypatch.undo()
    monkeypatch.setattr(models.executor, "ProcessFitExecutor", _Inline)
    assert_clean_run_with_capital_5000(capsys, data, state)


def test_a_refused_start_never_touches_a_dir_that_holds_a_setup(tmp_path, capsys, monkeypatch):
    data, good = csv_file(tmp_path), tmp_path / "good.yaml"
    good.write_text(GOOD_POLICY)
    state = tmp_path / "s"
    code, out, err = run(capsys, "run", "--headless", "--data", str(data), "--state-dir", str(state))
    assert code == 0, err[-2000:]
    before = tree(state)
    assert {"desk.sqlite", "venue-paper.sqlite", "audit/orders.jsonl"} <= set(before)

    # another setup (capital 5000 on a dir of 10000): refused after the lock, nothing removed
    code, _, err = run(capsys, "run", "--headless", "--data", str(data), "--capital", "5000",
                       "--state-dir", str(state))
    assert code == 2 and "holds another setup" in err
    assert tree(state) == before

    # the same setup refused after the engine was built: still nothing removed
    seen: list[set[str]] = []
    _refuse_late(monkeypatch, state, seen)
    code, _, err = run(capsys, "run", "--headless", "--data", str(data), "--policy", str(good),
                       "--state-dir", str(state))
    assert code == 2 and seen and "refused late (test)" in err
    assert tree(state) == before


def test_abandon_removes_only_what_the_attempt_created(tmp_path):
    state = tmp_path / "d"
    state.mkdir()
    (state / "venue-paper.sqlite").write_text("older ledger")  # there before: kept
    (state / "HALT").write_text("halt\n")  # the operator's: kept
    sd = StateDir(state)
    assert not sd.had_store and sd.created_dirs == []
    for name in ("desk.sqlite", "desk.sqlite-wal", "desk.sqlite-shm", "venue-ibkr.sqlite", "venue-ibkr.sqlite-wal",
                 "capital_allocations.json", "ops_token"):
        (state / name).write_text("x")
    (state / "audit").mkdir()
    (state / "audit" / "orders.jsonl").write_text("{}\n")
    removed = sd.abandon()
    assert sorted(removed) == ["audit", "capital_allocations.json", "desk.sqlite", "desk.sqlite-shm",
                               "desk.sqlite-wal", "venue-ibkr.sqlite", "venue-ibkr.sqlite-wal"]
    assert sorted(p.name for p in state.iterdir()) == ["HALT", "desk.lock", "ops_token", "venue-paper.sqlite"]
    StateDir(state).release()  # the lock was released


def test_abandon_on_a_dir_with_a_store_removes_nothing(tmp_path):
    state = tmp_path / "d"
    state.mkdir()
    (state / "desk.sqlite").write_text("a store")
    sd = StateDir(state)
    assert sd.had_store
    (state / "venue-paper.sqlite").write_text("made now")
    (state / "audit").mkdir()
    assert sd.abandon() == []
    assert sorted(p.name for p in state.iterdir()) == ["audit", "desk.lock", "desk.sqlite", "venue-paper.sqlite"]


def test_abandon_of_a_created_dir_keeps_it_when_something_else_is_in_it(tmp_path):
    state = tmp_path / "a" / "b"
    sd = StateDir(state)
    assert sd.created_dirs == [state, tmp_path / "a"]
    (state / "desk.sqlite").write_text("x")
    (state / "HALT").write_text("SIGUSR1 received during start-up\n")  # written by the start-up handler
    assert sorted(sd.abandon()) == ["desk.lock", "desk.sqlite"]
    assert sorted(p.name for p in state.iterdir()) == ["HALT"]
