"""``desk check-store``: recompute the state dir's materialized tables from
its journal and report every difference (:mod:`core.rebuild`); with
``--apply`` rewrite the tables that differ, in one transaction.

Exit codes: 0 when the tables equal the journal (or were rewritten to it),
1 when differences were found and left as they are, 2 when the store cannot
be checked (no store, not a desk store, a newer or unknown schema, or, with
``--apply``, another desk running on the state dir).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from core.errors import EXIT_OK, EXIT_USAGE

#: exit code when differences were found and not applied
EXIT_DIFFERENCES = 1


def run_check_store(state_dir: Path, apply: bool = False, out: TextIO | None = None) -> int:
    """Check (and with ``apply`` repair) ``<state_dir>/desk.sqlite``; print
    the report lines on ``out`` (default stdout) and return the exit code.

    With ``apply`` the state dir's lock is taken first, so a running desk
    (which would overwrite rewritten rows at its next commit) is refused.
    Errors are printed on stderr as ``desk: error: ...`` (exit 2); nothing
    is raised.
    """
    from core.errors import StateDirError
    from core.rebuild import rebuild
    from core.store import StoreError

    out = out or sys.stdout
    path = Path(state_dir) / "desk.sqlite"
    lock = None
    try:
        if not path.exists():
            raise StoreError(f"{path}: no store in state dir {state_dir}")
        if apply:
            from desk.wiring import StateDir

            lock = StateDir(Path(state_dir))
        report = rebuild(path, apply=apply)
    except (StoreError, StateDirError) as exc:
        sys.stderr.write(f"desk: error: {exc}\n")
        return EXIT_USAGE
    finally:
        if lock is not None:
            lock.release()
    for line in report.lines():
        out.write(line + "\n")
    return EXIT_OK if report.ok or report.applied else EXIT_DIFFERENCES
