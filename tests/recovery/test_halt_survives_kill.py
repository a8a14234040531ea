"""A trading state HALTED set before a kill -9 is still set after it
(issue 5): a headless SIM desk is halted with SIGUSR1, then killed with
SIGKILL, and restarted."""

import json
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def read_until(proc: subprocess.Popen, needle: str) -> str:
    """Read the desk's stderr line by line (blocking reads, no sleeping)
    until ``needle`` appears; fail if the process ends first."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} never appeared:\n" + "".join(seen[-30:]))


def test_halted_before_a_kill_is_still_halted(tmp_path):
    state = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "desk.cli", "run", "--headless", "--speed", "50",
                             "--state-dir", str(state)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        read_until(proc, "warming the models up")  # the loop's SIGUSR1 handler is installed before this line
        proc.send_signal(signal.SIGUSR1)
        read_until(proc, "trading state HALTED (stored)")  # logged once the halt is committed
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (state / "HALT").exists()  # the halt came from the signal, not from the HALT file
    out = subprocess.run([sys.executable, "-m", "desk.cli", "run", "--headless", "--bars", "20", "--state-dir",
                          str(state)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["trading_state"] == "HALTED"
