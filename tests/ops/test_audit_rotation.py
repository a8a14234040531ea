"""The audit log (issue 8): every line has ``ts`` (ISO UTC with ns),
``actor`` and ``reason``; model decisions and governance actions are
audited; rotation by size never splits or loses a line, also across a crash
between the rename and the open of the new file (the repair appends from the
journal)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from core.audit import AuditLog, audit_record, iso_ns, repair_audit
from core.events import (
    AlertRaised,
    AllocationChanged,
    CanaryAnalysed,
    EndOfDayMarked,
    ModelStageChanged,
    OrderDenied,
    OrderFilled,
    OrderInitialized,
    PolicyTriggered,
    SignalGenerated,
    TradingStateChanged,
)
from core.identifiers import InstrumentId

D = Decimal
IID = InstrumentId.parse("BTCUSDT.SIM")
# 2026-01-01T23:30:00Z: 56 years of days since 1970 with 14 leap days = 20454 days
# = 1_767_225_600 s, plus 23.5 h = 84_600 s
T = 1_767_310_200 * 1_000_000_000


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _events():
    """(seq, event) pairs of every kind, audited or not."""
    fill = dict(client_order_id="NHD-1-0-0", instrument_id=IID, venue_order_id="V1", trade_id="T1", side="BUY",
                last_qty=D("0.5"), last_px=D("100"), commission=D("0.0005"), commission_currency="BTC",
                liquidity_side="TAKER")
    return [
        (1, OrderInitialized(ts_event=T + 1, ts_init=T + 1, client_order_id="NHD-1-0-0", instrument_id=IID,
                             model_id="hmm_v1", side="BUY", order_type="LIMIT", quantity=D("0.5"),
                             price=D("100"), time_in_force="GTC")),
        (2, OrderDenied(ts_event=T, ts_init=T, client_order_id="NHD-1-0-1", instrument_id=IID, model_id="hmm_v1",
                        code="MAX_NOTIONAL", reason="notional 20000 > 10000")),
        (3, OrderFilled(ts_event=T, ts_init=T, model_id="hmm_v1", **fill)),
        (4, OrderFilled(ts_event=T, ts_init=T, model_id="hmm_v2",
                        **{**fill, "venue_order_id": "INTERNAL", "trade_id": "X-1-1"})),
        (5, TradingStateChanged(ts_event=T, ts_init=T, state="HALTED", previous="ACTIVE", who="telegram:42",
                                reason="drill")),
        (6, ModelStageChanged(ts_event=T, ts_init=T, model_id="hmm_v2", family="hmm", stage="live",
                              previous="canary", weight=D("1"), who="operator", reason="by hand")),
        (7, CanaryAnalysed(ts_event=T, ts_init=T, model_id="hmm_v2", family="hmm", live_model_id="hmm_v1",
                           interval=3, action="step", weight=D("0.25"), reason="PSR 0.97 >= 0.95")),
        (8, AllocationChanged(ts_event=T, ts_init=T, weights={"hmm": "1"}, budgets={"hmm": "10000"},
                              sharpe={"hmm": "0.5"}, idle=D("0"), capital=D("10000"))),
        (9, PolicyTriggered(ts_event=T, ts_init=T, rule="dd", figure="drawdown", value="0.12", threshold="0.1",
                            action="halt", target="desk", reason="drawdown 12% > 10%")),
        (10, AlertRaised(ts_event=T, ts_init=T, level="WARNING", code="VENUE_HALTED",
                         message="SIM halted by keys: ctrl+k")),
        (11, AlertRaised(ts_event=T, ts_init=T, level="WARNING", code="ORDER_REJECTED", message="x")),
        (12, SignalGenerated(ts_event=T, ts_init=T, model_id="hmm_v1", instrument_id=IID, target=D("1"), regime=0,
                             probability="0.9")),
        (13, EndOfDayMarked(ts_event=T, ts_init=T, day="2026-01-01", tz="UTC")),
    ]


def test_iso_ns_by_hand():
    assert iso_ns(T + 1) == "2026-01-01T23:30:00.000000001Z"
    assert iso_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert iso_ns(999_999_999) == "1970-01-01T00:00:00.999999999Z"
    with pytest.raises(TypeError, match="ts_ns"):
        iso_ns(1.5)  # type: ignore[arg-type]


def test_every_line_has_ts_actor_reason_and_decisions_are_audited(tmp_path):
    log = AuditLog(tmp_path / "audit" / "orders.jsonl")
    assert log.write_events(_events()) == 10  # seq 11 (plain alert), 12 (signal), 13 (marks) are not audited
    log.close()
    lines = _lines(tmp_path / "audit" / "orders.jsonl")
    got = [(x["seq"], x["actor"], x["reason"]) for x in lines]
    assert got == [
        (1, "hmm_v1", ""),                     # the desk's order: its model
        (2, "hmm_v1", "notional 20000 > 10000"),
        (3, "venue", ""),                      # a venue report
        (4, "desk", ""),                       # an internal cross
        (5, "telegram:42", "drill"),           # governance: who
        (6, "operator", "by hand"),            # lifecycle: who
        (7, "canary", "PSR 0.97 >= 0.95"),
        (8, "allocator", ""),
        (9, "policy:dd", "drawdown 12% > 10%"),
        (10, "keys", "ctrl+k"),                # per-venue halt, journaled as an alert
    ]
    assert lines[0]["ts"] == "2026-01-01T23:30:00.000000001Z"
    assert all(x["ts"] == "2026-01-01T23:30:00.000000000Z" for x in lines[1:])
    # the event's own fields are kept
    assert lines[0]["type"] == "OrderInitialized" and lines[0]["quantity"] == "0.5" and lines[0]["ts_event"] == T + 1
    assert lines[7]["budgets"] == {"hmm": "10000"}


def test_repaired_lines_equal_live_lines(tmp_path):
    live = tmp_path / "live.jsonl"
    log = AuditLog(live)
    log.write_events(_events())
    log.close()
    journal = [(seq, ev.type, ev.to_dict()) for seq, ev in _events()]
    rebuilt = tmp_path / "rebuilt.jsonl"
    assert repair_audit(rebuilt, journal) == {"torn": 0, "appended": 10, "last_seq": 0}
    assert rebuilt.read_bytes() == live.read_bytes()


def _fill_events(seqs):
    """Audited events of identical size: seqs of two digits, same payload."""
    return [(s, OrderDenied(ts_event=T, ts_init=T, client_order_id="NHD-1-0-0", instrument_id=IID,
                            model_id="m", code="C", reason="r")) for s in seqs]


def _line_len():
    # one line, as the module docstring defines it, built here by hand
    rec = {"seq": 11, "ts": "2026-01-01T23:30:00.000000000Z", "actor": "m", "reason": "r", "type": "OrderDenied",
           "v": 1, "ts_event": T, "ts_init": T, "client_order_id": "NHD-1-0-0", "instrument_id": "BTCUSDT.SIM",
           "model_id": "m", "code": "C"}
    return len(json.dumps(rec, separators=(",", ":"))) + 1


def test_rotation_by_size_keeps_every_line_whole_and_drops_beyond_backups(tmp_path):
    path = tmp_path / "orders.jsonl"
    n = _line_len()
    log = AuditLog(path, max_bytes=3 * n + n // 2, backups=2)  # three lines per file
    for ev in _fill_events(range(11, 21)):  # ten lines, one call each
        log.write_events([ev])
    log.close()
    assert log.rotations == 3
    # 11-13 went to .3 at the third rotation and was deleted (backups=2)
    assert not (tmp_path / "orders.jsonl.3").exists()
    assert [x["seq"] for x in _lines(tmp_path / "orders.jsonl.2")] == [14, 15, 16]
    assert [x["seq"] for x in _lines(tmp_path / "orders.jsonl.1")] == [17, 18, 19]
    assert [x["seq"] for x in _lines(path)] == [20]
    for f in (path, tmp_path / "orders.jsonl.1", tmp_path / "orders.jsonl.2"):
        assert f.stat().st_size <= 3 * n + n // 2 and f.read_bytes().endswith(b"\n")


def test_rotation_inside_one_batch_and_reopen_counts_the_existing_size(tmp_path):
    path = tmp_path / "orders.jsonl"
    n = _line_len()
    log = AuditLog(path, max_bytes=2 * n)  # two lines per file (exactly fits)
    log.write_events(_fill_events([11, 12, 13]))
    log.close()
    log = AuditLog(path, max_bytes=2 * n)  # the current file already holds line 13
    log.write_events(_fill_events([14, 15]))
    log.close()
    assert [x["seq"] for x in _lines(tmp_path / "orders.jsonl.2")] == [11, 12]
    assert [x["seq"] for x in _lines(tmp_path / "orders.jsonl.1")] == [13, 14]
    assert [x["seq"] for x in _lines(path)] == [15]


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path):
    path = tmp_path / "orders.jsonl"
    n = _line_len()
    log = AuditLog(path, max_bytes=n - 10)
    log.write_events(_fill_events([11, 12]))
    log.close()
    assert [x["seq"] for x in _lines(tmp_path / "orders.jsonl.1")] == [11]
    assert [x["seq"] for x in _lines(path)] == [12]


def test_crash_between_rename_and_open_loses_nothing(tmp_path):
    path = tmp_path / "audit" / "orders.jsonl"
    n = _line_len()
    log = AuditLog(path, max_bytes=3 * n)
    log.write_events(_fill_events([11, 12, 13]))

    def crash():
        raise KeyboardInterrupt("killed between the rename and the open")

    log._open = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        log.write_events(_fill_events([14]))  # rotation: renamed, then the process dies
    assert not path.exists() and (path.parent / "orders.jsonl.1").exists()
    # the journal committed 11..16 (14 was committed before its audit line; 15, 16 before the crash too)
    journal = [(s, ev.type, ev.to_dict()) for s, ev in _fill_events(range(11, 17))]
    asked = []

    def after(seq):
        asked.append(seq)
        return [row for row in journal if row[0] > seq]

    assert repair_audit(path, after) == {"torn": 0, "appended": 3, "last_seq": 13}
    assert asked == [13]
    assert [x["seq"] for x in _lines(path.parent / "orders.jsonl.1")] == [11, 12, 13]
    assert [x["seq"] for x in _lines(path)] == [14, 15, 16]
    # and the repaired lines are the lines the live writer would have written
    assert _lines(path)[0] == audit_record(14, journal[3][2])


def test_torn_first_line_after_a_rotation_is_cut_and_refilled(tmp_path):
    path = tmp_path / "orders.jsonl"
    one = json.dumps(audit_record(11, _fill_events([11])[0][1].to_dict()), separators=(",", ":"))
    (tmp_path / "orders.jsonl.1").write_text(one + "\n")
    path.write_text('{"seq":12,"ts":"2026')  # died while writing the first line of the new file
    journal = [(s, ev.type, ev.to_dict()) for s, ev in _fill_events([11, 12])]
    assert repair_audit(path, journal) == {"torn": 1, "appended": 1, "last_seq": 11}
    assert [x["seq"] for x in _lines(path)] == [12]


def test_a_gap_left_by_a_crash_while_shifting_is_shifted_around(tmp_path):
    path = tmp_path / "orders.jsonl"
    n = _line_len()
    lines = {s: json.dumps(audit_record(s, ev.to_dict()), separators=(",", ":")) + "\n"
             for s, ev in _fill_events(range(11, 16))}
    # died after .1 -> .2 and before orders.jsonl -> .1: no .1
    (tmp_path / "orders.jsonl.2").write_text(lines[11] + lines[12])
    path.write_text(lines[13] + lines[14])
    log = AuditLog(path, max_bytes=2 * n)
    log.write_events(_fill_events([15]))
    log.close()
    assert [x["seq"] for x in _lines(tmp_path / "orders.jsonl.3")] == [11, 12]
    assert [x["seq"] for x in _lines(tmp_path / "orders.jsonl.1")] == [13, 14]
    assert [x["seq"] for x in _lines(path)] == [15]


@pytest.mark.parametrize("kw, field", [({"max_bytes": 0}, "max_bytes"), ({"max_bytes": 1.5}, "max_bytes"),
                                       ({"backups": 0}, "backups"), ({"backups": "3"}, "backups")])
def test_bad_settings_are_refused_naming_the_field(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field):
        AuditLog(tmp_path / "a.jsonl", **kw)
