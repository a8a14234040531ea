"""Initializer of the fit worker process (``models.executor.ProcessFitExecutor``).

This module must not import numpy (or anything that does) at module level:
the spawn context unpickles the initializer, and so imports this module,
before the worker runs any job, and OpenBLAS / OpenMP / MKL read their thread
counts from the environment once, when numpy loads them. Only the standard
library is imported here.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings

#: environment variables that cap BLAS / OpenMP thread pools at load time
BLAS_THREAD_VARS = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def init_worker(niceness: int = 10, quiet: bool = True) -> None:
    """Prepare a fit worker process; runs once in each worker at its start.

    1. Sets ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``
       (and the vecLib / numexpr equivalents) to ``"1"`` in ``os.environ``,
       before numpy is imported by the first job.
    2. Belt and braces: ``threadpoolctl.threadpool_limits(1)``, which also
       caps pools already loaded (numpy can already be loaded when the spawn
       context re-imported the parent's ``__main__`` script). Skipped if
       threadpoolctl is not installed.
    3. ``os.nice(niceness)`` so fits yield the CPU to the event loop and UI
       (DESIGN.md section 7); errors (no permission, no ``os.nice``) are
       ignored.
    4. With ``quiet``: the worker's Python warnings are ignored and its
       logging goes to a NullHandler, because the worker shares the parent's
       terminal and a stray "Model is not converging" line on stderr would
       corrupt a full-screen TUI. Fit outcomes travel back in the result
       (``FitResult.converged``, ``log_likelihood``) or as the exception.

    Args:
        niceness: increment passed to ``os.nice`` (0 to skip).
        quiet: silence warnings and logging in this worker process.
    """
    for name in BLAS_THREAD_VARS:
        os.environ[name] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    else:
        threadpool_limits(limits=1)  # process-wide; kept for the worker's life
    if niceness:
        try:
            os.nice(niceness)
        except (OSError, AttributeError):
            pass
    _die_with_parent()
    try:  # ctrl+c in the terminal reaches the whole process group: the desk handles it, the worker ignores it
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        pass
    if quiet:
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        root.handlers[:] = [logging.NullHandler()]
        root.setLevel(logging.CRITICAL)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the desk process dies
    (``prctl(PR_SET_PDEATHSIG)``), so a ``kill -9`` of the desk leaves no
    orphaned fit worker behind; a no-op where prctl is unavailable."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(0)
    except (OSError, AttributeError):
        pass


def preload(*module_names: str) -> int:
    """The warm-up no-op: import ``module_names`` in the worker (e.g.
    ``"hmmlearn.hmm"`` to pay its ~1.2 s import before the first fit) and
    return the worker's pid.

    Raises:
        ImportError: if a module cannot be imported.
    """
    for name in module_names:
        importlib.import_module(name)
    return os.getpid()
