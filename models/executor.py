"""FitExecutor implementations (``core.ports.FitExecutor``).

* ``ProcessFitExecutor``: the default. One worker process (spawn context,
  safe with threads), started eagerly by ``warm()``, with one BLAS thread and
  lower priority (DESIGN.md section 7: a process with one BLAS thread at
  lower priority left the UI as responsive as no load; a thread, or a
  process with default BLAS threads, did not).
* ``InlineFitExecutor``: runs the job synchronously (tests).
* ``DelayedFitExecutor``: completes each future a fixed wall time after its
  inner result is ready (tests: results must not depend on fit timing).

No numpy import here: importing this module is cheap.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from models._worker_init import init_worker, preload

__all__ = ["ProcessFitExecutor", "InlineFitExecutor", "DelayedFitExecutor"]


class ProcessFitExecutor:
    """Runs jobs in worker processes of a ``ProcessPoolExecutor`` with the
    ``"spawn"`` start method (no fork of a multi-threaded parent).

    Each worker runs ``models._worker_init.init_worker`` first: one BLAS /
    OpenMP thread (environment variables before numpy loads, plus
    ``threadpoolctl.threadpool_limits(1)``), ``os.nice(niceness)``, and
    silenced warnings/logging. ``fn`` and its arguments must be picklable
    (top-level functions; the spawned worker imports their modules).

    If a worker dies (e.g. OOM-killed), that job's future raises
    ``BrokenProcessPool``; the next ``submit`` starts a fresh pool.

    Args:
        max_workers: worker processes (default 1).
        niceness: ``os.nice`` increment in each worker (default 10; 0 skips).
        quiet: silence warnings and logging in the workers (default True).

    Raises:
        ValueError: if ``max_workers`` < 1.
    """

    def __init__(self, max_workers: int = 1, *, niceness: int = 10, quiet: bool = True) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers: must be >= 1, got {max_workers}")
        self._max_workers = max_workers
        self._initargs = (niceness, quiet)
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._closed = False
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._max_workers,
            mp_context=self._ctx,
            initializer=init_worker,
            initargs=self._initargs,
        )

    def warm(self, *preload_modules: str) -> "Future[int]":
        """Start the worker now (the pool starts processes on first submit)
        by submitting a no-op; optionally import ``preload_modules`` there
        (``warm("hmmlearn.hmm")`` pays hmmlearn's import before the first
        fit). Returns a future of the worker's pid; no need to wait on it.

        Raises:
            RuntimeError: after ``shutdown``.
        """
        return self.submit(preload, *preload_modules)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> "Future[Any]":
        """Schedule ``fn(*args)`` in a worker; returns its Future (the result,
        or the exception ``fn`` raised, pickled back).

        Raises:
            RuntimeError: after ``shutdown``.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("ProcessFitExecutor: submit after shutdown")
            try:
                return self._pool.submit(fn, *args)
            except BrokenProcessPool:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                return self._pool.submit(fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel queued jobs and stop the workers (idempotent). With
        ``wait`` (default) it returns once a running job has finished and the
        workers have exited."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool = self._pool
        pool.shutdown(wait=wait, cancel_futures=True)


class InlineFitExecutor:
    """Runs each job synchronously inside ``submit`` and returns a completed
    Future (result or exception). For tests and tools; it would block an
    event loop for the whole fit."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> "Future[Any]":
        """Run ``fn(*args)`` now; the returned Future is already done."""
        fut: Future[Any] = Future()
        fut.set_running_or_notify_cancel()
        try:
            result = fn(*args)
        except Exception as exc:  # noqa: BLE001 - delivered through the future
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        return fut

    def shutdown(self) -> None:
        """Nothing to stop (idempotent)."""


class DelayedFitExecutor:
    """Test hook: delegates to ``inner`` and completes each returned future
    only ``delay_s`` seconds of wall time after the inner future is done
    (``threading.Timer``; nobody sleeps), with the inner result or exception.

    Args:
        inner: the executor that runs the job.
        delay_s: extra wall-time delay in seconds (>= 0).

    Raises:
        ValueError: if ``delay_s`` is negative.
    """

    def __init__(self, inner: Any, delay_s: float) -> None:
        if not delay_s >= 0:
            raise ValueError(f"delay_s: must be >= 0, got {delay_s!r}")
        self._inner = inner
        self._delay_s = float(delay_s)
        self._lock = threading.Lock()
        self._timers: dict[threading.Timer, Future[Any]] = {}
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> "Future[Any]":
        """Submit to ``inner``; the returned future completes ``delay_s``
        after the inner one.

        Raises:
            RuntimeError: after ``shutdown``.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("DelayedFitExecutor: submit after shutdown")
        outer: Future[Any] = Future()
        inner_fut = self._inner.submit(fn, *args)

        def _complete(timer: list[threading.Timer]) -> None:
            with self._lock:
                self._timers.pop(timer[0], None)
            if not outer.set_running_or_notify_cancel():
                return
            exc = inner_fut.exception()
            if exc is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(inner_fut.result())

        def _on_inner_done(_: "Future[Any]") -> None:
            box: list[threading.Timer] = []
            timer = threading.Timer(self._delay_s, _complete, args=(box,))
            timer.daemon = True
            box.append(timer)
            with self._lock:
                if self._closed:
                    outer.cancel()
                    return
                self._timers[timer] = outer
            timer.start()

        inner_fut.add_done_callback(_on_inner_done)
        return outer

    def shutdown(self) -> None:
        """Stop pending timers, cancel their futures, and shut the inner
        executor down (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._timers.items())
            self._timers.clear()
        for timer, fut in pending:
            timer.cancel()
            fut.cancel()
        self._inner.shutdown()
