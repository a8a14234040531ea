"""The audit log is repaired from the journal at start: a torn last line is
cut, missing lines are appended, existing ones are kept (issue 5)."""

import json

from core.audit import AUDITED_TYPES, repair_audit


def journal(n):
    # seq 1..n alternating an audited order event and an unaudited signal
    out = []
    for seq in range(1, n + 1):
        typ = "OrderSubmitted" if seq % 2 else "SignalGenerated"
        out.append((seq, typ, {"type": typ, "v": 1, "client_order_id": f"NHD-{seq}-0-0"}))
    return out


def test_torn_line_cut_and_missing_lines_appended(tmp_path):
    path = tmp_path / "audit" / "orders.jsonl"
    path.parent.mkdir()
    good = [json.dumps({"seq": s, **p}) for s, t, p in journal(3) if t in AUDITED_TYPES]  # seq 1 and 3
    path.write_text("\n".join(good) + "\n" + '{"seq": 5, "type": "OrderSub')  # died while writing seq 5
    r = repair_audit(path, journal(8))
    assert r == {"torn": 1, "appended": 2, "last_seq": 3}  # seq 5 and 7 appended
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 3, 5, 7]
    assert path.read_text().endswith("\n")
    assert repair_audit(path, journal(8)) == {"torn": 0, "appended": 0, "last_seq": 7}  # idempotent


def test_missing_file_is_rebuilt(tmp_path):
    path = tmp_path / "audit" / "orders.jsonl"
    r = repair_audit(path, journal(4))
    assert r == {"torn": 0, "appended": 2, "last_seq": 0}


def test_reads_only_after_the_last_audited_seq(tmp_path):
    path = tmp_path / "audit" / "orders.jsonl"
    repair_audit(path, journal(5))
    asked = []

    def after(seq):
        asked.append(seq)
        return [row for row in journal(9) if row[0] > seq]

    r = repair_audit(path, after)
    assert asked == [5] and r["appended"] == 2  # seq 7 and 9


def test_large_file_only_the_tail_is_read(tmp_path):
    path = tmp_path / "audit" / "orders.jsonl"
    path.parent.mkdir()
    rows = [json.dumps({"seq": s, "type": "OrderSubmitted", "pad": "x" * 200}) for s in range(1, 3001)]
    path.write_text("\n".join(rows) + "\n" + '{"seq": 3001, "ty')  # ~650 KB, torn at the end
    r = repair_audit(path, lambda after: [(s, "OrderSubmitted", {"type": "OrderSubmitted"})
                                          for s in range(after + 1, 3003)])
    assert r == {"torn": 1, "appended": 2, "last_seq": 3000}
    lines = path.read_text().splitlines()
    assert len(lines) == 3002 and json.loads(lines[-1])["seq"] == 3002
