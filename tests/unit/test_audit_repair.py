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
    assert r == {"torn": 1, "appended": 2, "kept": 2}  # seq 5 and 7 appended
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 3, 5, 7]
    assert path.read_text().endswith("\n")
    assert repair_audit(path, journal(8)) == {"torn": 0, "appended": 0, "kept": 4}  # idempotent


def test_missing_file_is_rebuilt(tmp_path):
    path = tmp_path / "audit" / "orders.jsonl"
    r = repair_audit(path, journal(4))
    assert r == {"torn": 0, "appended": 2, "kept": 0}
