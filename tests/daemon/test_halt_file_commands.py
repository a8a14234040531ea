"""``desk halt`` and ``desk resume`` around the ``HALT`` file when the daemon
does not answer (break test of the README):

* ``desk halt --state-dir D`` with no desk running writes the file and exits
  0, saying the desk will halt when it starts (it exited 1 although the halt
  was in place);
* ``desk resume --state-dir D`` says that it removed the file (and what it
  held), says the daemon did not resume when it cannot be reached, puts the
  file back when the daemon refuses the resume, and still needs a token.

In-process through ``desk.cli.main``; the daemon is a loopback port nobody
listens on, or a client whose resume is refused (monkeypatched)."""

from __future__ import annotations

import logging

import pytest

from desk.cli import main
from desk.client import DaemonClient, DaemonRefused
from tests.daemon.test_daemon import free_port


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    saved = logging.root.handlers[:]
    yield
    logging.root.handlers[:] = saved


def desk(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def state_with_token(tmp_path):
    state = tmp_path / "s"
    state.mkdir()
    (state / "ops_token").write_text("some-token-0123456789\n")
    (state / "ops_token").chmod(0o600)
    return state


def test_halt_with_no_desk_running_writes_the_file_and_exits_0(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    state = state_with_token(tmp_path)
    code, out, err = desk(capsys, "halt", "--url", dead, "--state-dir", str(state), "--reason", "going home")
    assert code == 0, err
    assert "reason=going home" in (state / "HALT").read_text()
    assert f"no desk is running on {state}: the desk will halt when it starts (the HALT file is read at start " \
           "and while running)" in err
    # without a token (the API cannot be asked) the same fallback, the same answer
    bare = tmp_path / "bare"
    bare.mkdir()
    code, _, err = desk(capsys, "halt", "--url", dead, "--state-dir", str(bare))
    assert code == 0 and (bare / "HALT").exists() and "the desk will halt when it starts" in err
    # no state dir: nothing can be written, nothing is halted
    code, _, err = desk(capsys, "halt", "--url", dead, "--state-dir", str(tmp_path / "missing"))
    assert code == 1 and "no state dir" in err and not (tmp_path / "missing").exists()


def test_resume_says_it_removed_the_halt_file_when_the_daemon_is_down(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    state = state_with_token(tmp_path)
    halt = state / "HALT"
    halt.write_text("desk halt 2026-01-01T00:00:00+00:00 mode=HALT reason=going home\n")
    code, out, err = desk(capsys, "resume", "--url", dead, "--state-dir", str(state), "--reason", "back")
    assert code == 1 and out == "" and not halt.exists()
    assert f"desk resume: removed the HALT file {halt} (it said: desk halt 2026-01-01T00:00:00+00:00 mode=HALT " \
           f"reason=going home); a desk on {state} no longer halts because of it" in err
    assert "daemon unreachable" in err and "the HALT file stays removed" in err


def test_a_refused_resume_puts_the_halt_file_back(tmp_path, capsys, monkeypatch):
    state = state_with_token(tmp_path)
    halt = state / "HALT"
    halt.write_text("SIGUSR1 received during start-up\n")

    def refused(self, reason):
        raise DaemonRefused(403, "wrong token")

    monkeypatch.setattr(DaemonClient, "resume", refused)
    code, _, err = desk(capsys, "resume", "--url", f"http://127.0.0.1:{free_port()}", "--state-dir", str(state),
                        "--reason", "back")
    assert code == 2 and "refused the resume: HTTP 403: wrong token" in err
    assert "removed the HALT file" in err and f"put the HALT file {halt} back" in err
    assert halt.read_text() == "SIGUSR1 received during start-up\n"


def test_resume_still_needs_a_token_and_a_reason(tmp_path, capsys):
    state = tmp_path / "s"
    state.mkdir()
    (state / "HALT").write_text("x\n")
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = desk(capsys, "resume", "--url", dead, "--state-dir", str(state), "--reason", "back")
    assert code == 2 and "no token" in err and (state / "HALT").exists()  # untouched
    assert desk(capsys, "resume", "--url", dead, "--state-dir", str(state))[0] == 2  # --reason is required
    assert (state / "HALT").exists()
