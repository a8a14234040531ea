"""HMM regime model: forward filter vs hmmlearn, canonical order, policy,
executors, state round trip (models/hmm.py, models/executor.py).

No network, no sleeping; nothing is written outside pytest's temp dirs.
"""

from __future__ import annotations

import csv
import inspect
import itertools
import json
import math
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.data import Bar
from core.identifiers import InstrumentId
from core.ports import FitExecutor, RegimeModel
from models.executor import DelayedFitExecutor, InlineFitExecutor, ProcessFitExecutor
from models.hmm import (
    FitResult,
    HmmConfig,
    HmmFitError,
    HmmRegimeModel,
    canonicalize,
    features_from_closes,
    fit_hmm,
    forward_filter,
    forward_step,
    policy_target,
    prepare_filter,
)

from tests.conftest import SHARED_DATA  # noqa: E402

DATA = SHARED_DATA
BTC_1H = DATA / "binance" / "klines" / "BTCUSDT-1h-2020-12-01_2021-07-17.csv"
INSTR = InstrumentId("BTCUSDT", "SIM")
HOUR_NS = 3_600_000_000_000


# -- helpers -------------------------------------------------------------------------


def _getpid() -> int:
    """Run in the worker: its pid."""
    return os.getpid()


def _blas_threads() -> list[int]:
    """Run in the worker: thread counts of every BLAS/OpenMP pool numpy loaded."""
    import numpy  # noqa: F401 - make sure the BLAS is loaded
    from threadpoolctl import threadpool_info

    return [int(info["num_threads"]) for info in threadpool_info()]


def _hmmlearn_model(fit: FitResult):
    """A GaussianHMM with ``fit``'s parameters set directly."""
    from hmmlearn.hmm import GaussianHMM

    k = fit.n_states
    m = GaussianHMM(n_components=k, covariance_type="full")
    m.startprob_ = np.array(fit.startprob)
    m.transmat_ = np.array(fit.transmat)
    m.means_ = np.array(fit.means)
    m.covars_ = np.array(fit.covars)
    return m


def _sample_hmm(startprob, transmat, means, covars, n, seed):
    """(n, D) observations and (n,) states of a Gaussian HMM (numpy, seeded)."""
    rng = np.random.default_rng(seed)
    startprob, transmat = np.asarray(startprob), np.asarray(transmat)
    means, covars = np.asarray(means), np.asarray(covars)
    chol = np.linalg.cholesky(covars)
    states = np.empty(n, dtype=int)
    s = rng.choice(len(startprob), p=startprob)
    for t in range(n):
        states[t] = s
        s = rng.choice(len(startprob), p=transmat[s])
    eps = rng.standard_normal((n, means.shape[1]))
    X = means[states] + np.einsum("nij,nj->ni", chol[states], eps)
    return X, states


# a known 3-state process in feature units, written in NON-canonical order
# (return variance descending) so that the fit has to reorder it.
TRUE_3 = FitResult(
    startprob=[0.2, 0.3, 0.5],
    transmat=[[0.90, 0.06, 0.04], [0.03, 0.95, 0.02], [0.02, 0.03, 0.95]],
    means=[[-0.002, 0.020], [0.0005, 0.010], [0.001, 0.004]],
    covars=[
        [[0.020**2, 0.5 * 0.020 * 0.003], [0.5 * 0.020 * 0.003, 0.003**2]],
        [[0.008**2, 0.0], [0.0, 0.0015**2]],
        [[0.003**2, -0.2 * 0.003 * 0.0008], [-0.2 * 0.003 * 0.0008, 0.0008**2]],
    ],
)


def _regime_closes(n: int, seed: int) -> list[Decimal]:
    """Closes of a seeded 3-regime random walk around 20000, 2 decimals."""
    rng = np.random.default_rng(seed)
    vols, drifts = [0.002, 0.006, 0.015], [0.0003, 0.0, -0.0008]
    tm = np.array([[0.97, 0.02, 0.01], [0.02, 0.96, 0.02], [0.02, 0.03, 0.95]])
    s, logp, out = 0, math.log(20000.0), []
    for _ in range(n):
        logp += drifts[s] + vols[s] * rng.standard_normal()
        out.append(Decimal(f"{math.exp(logp):.2f}"))
        s = rng.choice(3, p=tm[s])
    return out


def _bars(closes) -> list[Bar]:
    return [
        Bar(INSTR, c, c, c, c, Decimal(1), i * HOUR_NS, (i + 1) * HOUR_NS, i + 2)
        for i, c in enumerate(closes)
    ]


def _read_closes(path: Path, n: int) -> list[Decimal]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)  # header: open_time,open,high,low,close,volume
        return [Decimal(row[4]) for _, row in zip(range(n), reader)]


def _drive(model: HmmRegimeModel, bars, executor, lag: int = 0, start: int = 0):
    """Feed ``bars`` (engine-like): submit a fit when due and apply its result
    ``lag`` bars later (waiting for the future then, whenever it finished).
    Returns the log posterior (or None) after each bar."""
    out, fut, apply_at = [], None, None
    for i, bar in enumerate(bars, start):
        model.observe(bar)
        if fut is None and model.fit_due():
            fn, args = model.fit_job()
            fut, apply_at = executor.submit(fn, *args), i + lag
        if fut is not None and i >= apply_at:
            model.apply_fit(fut.result(timeout=120))
            fut = None
        out.append(model.log_posterior())
    return out


SMALL = HmmConfig(n_states=3, vol_window=10, warmup=300)


@pytest.fixture(scope="module")
def process_executor():
    ex = ProcessFitExecutor(max_workers=1)
    ex.warm()
    yield ex
    ex.shutdown()


# -- forward filter vs hmmlearn -------------------------------------------------------


def test_forward_filter_matches_hmmlearn_on_synthetic_process():
    X, _ = _sample_hmm(TRUE_3.startprob, TRUE_3.transmat, TRUE_3.means, TRUE_3.covars, 900, seed=7)
    fit = fit_hmm(X[:500], HmmConfig(warmup=500))
    fp = prepare_filter(fit)
    ref = _hmmlearn_model(fit)
    la = None
    for t in range(len(X)):
        la = forward_step(la, X[t], fp)
        expected = ref.predict_proba(X[: t + 1])[-1]
        np.testing.assert_allclose(np.exp(la), expected, rtol=0, atol=1e-9, err_msg=f"step {t}")
        assert abs(np.exp(la).sum() - 1.0) < 1e-12
    # the batch helper is the same computation
    np.testing.assert_array_equal(forward_filter(X, fp)[-1], la)


def test_forward_filter_with_zero_transitions_and_start_matches_hmmlearn():
    # a left-to-right chain (zeros in transmat and startprob) takes the guarded path
    fit = FitResult(
        startprob=[1.0, 0.0, 0.0],
        transmat=[[0.98, 0.02, 0.0], [0.0, 0.97, 0.03], [0.0, 0.0, 1.0]],
        means=[[0.0, 0.0], [0.5, -0.5], [1.0, 1.0]],
        covars=[np.eye(2).tolist(), (0.5 * np.eye(2)).tolist(), [[2.0, 0.3], [0.3, 1.0]]],
    )
    fp = prepare_filter(fit)
    assert fp.guarded
    X, _ = _sample_hmm(fit.startprob, fit.transmat, fit.means, fit.covars, 300, seed=3)
    ref = _hmmlearn_model(fit)
    la = None
    for t in range(len(X)):
        la = forward_step(la, X[t], fp)
        np.testing.assert_allclose(np.exp(la), ref.predict_proba(X[: t + 1])[-1], rtol=0, atol=1e-9)
    assert np.isneginf(forward_step(None, X[0], fp)[1:]).all()


@pytest.mark.skipif(not BTC_1H.exists(), reason="shared recorded data absent")
def test_model_posterior_matches_hmmlearn_on_real_closes_after_every_bar():
    closes = _read_closes(BTC_1H, 1500)
    cfg = HmmConfig()  # vol_window 20, warmup 500
    model = HmmRegimeModel("hmm_v1", INSTR, cfg)
    bars = _bars(closes)
    # the fit is applied 25 bars after its window closed: the filter then
    # covers the rows since the window start, like predict_proba on them
    posts = _drive(model, bars, InlineFitExecutor(), lag=25)
    feats = model.feature_history()
    np.testing.assert_array_equal(feats, features_from_closes(closes, cfg.vol_window))
    ref = _hmmlearn_model(model.fit_result)
    first = cfg.vol_window + cfg.warmup - 1 + 25  # bar index of the first posterior
    assert posts[first - 1] is None and posts[first] is not None
    for i in range(first, len(bars)):
        rows = i - cfg.vol_window + 1
        expected = ref.predict_proba(feats[:rows])[-1]
        np.testing.assert_allclose(np.exp(posts[i]), expected, rtol=0, atol=1e-9, err_msg=f"bar {i}")
    assert len(bars) - first > 900


# -- canonical order ----------------------------------------------------------------------


def _permute(fit: FitResult, perm) -> FitResult:
    p = np.asarray(perm)
    return FitResult(
        startprob=np.asarray(fit.startprob)[p].tolist(),
        transmat=np.asarray(fit.transmat)[np.ix_(p, p)].tolist(),
        means=np.asarray(fit.means)[p].tolist(),
        covars=np.asarray(fit.covars)[p].tolist(),
    )


def test_canonicalize_restores_every_hand_permutation():
    canon = canonicalize(TRUE_3)
    assert np.all(np.diff(np.asarray(canon.covars)[:, 0, 0]) > 0)
    # state 2 of TRUE_3 (smallest variance) becomes 0, state 0 becomes 2
    assert canon.means[0] == TRUE_3.means[2] and canon.means[2] == TRUE_3.means[0]
    assert canon.transmat[0][2] == TRUE_3.transmat[2][0]  # rows AND columns moved
    for perm in itertools.permutations(range(3)):
        assert canonicalize(_permute(canon, perm)) == canon
    assert canonicalize(canon) == canon


@settings(max_examples=60, deadline=None)
@given(perm=st.permutations(list(range(4))), seed=st.integers(0, 2**32 - 1))
def test_canonicalize_is_permutation_invariant(perm, seed):
    rng = np.random.default_rng(seed)
    k = 4
    a = rng.standard_normal((k, 2, 2))
    covars = a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(2)
    fit = FitResult(
        startprob=rng.dirichlet(np.ones(k)).tolist(),
        transmat=rng.dirichlet(np.ones(k), size=k).tolist(),
        means=rng.standard_normal((k, 2)).tolist(),
        covars=covars.tolist(),
    )
    canon = canonicalize(fit)
    assert canonicalize(_permute(fit, perm)) == canon
    # consistency: the Markov chain is the same, relabelled
    order = np.argsort(covars[:, 0, 0])
    np.testing.assert_array_equal(np.asarray(canon.transmat), np.asarray(fit.transmat)[np.ix_(order, order)])


def test_same_mean_different_variance_orders_by_variance():
    fit = FitResult(
        startprob=[0.5, 0.5],
        transmat=[[0.95, 0.05], [0.1, 0.9]],
        means=[[0.001, 0.01], [0.001, 0.01]],
        covars=[[[4e-4, 0.0], [0.0, 1e-6]], [[2.5e-5, 0.0], [0.0, 1e-6]]],
    )
    canon = canonicalize(fit)
    assert canon.covars[0][0][0] == 2.5e-5 and canon.covars[1][0][0] == 4e-4
    assert canon.transmat == [[0.9, 0.1], [0.05, 0.95]]
    assert canon.startprob == [0.5, 0.5]
    # and a fit on such a process comes out in that order too
    X, _ = _sample_hmm(fit.startprob, fit.transmat, fit.means, fit.covars, 1500, seed=11)
    got = fit_hmm(X, HmmConfig(n_states=2, warmup=1500))
    v = np.asarray(got.covars)[:, 0, 0]
    assert v[0] < v[1]
    np.testing.assert_allclose(np.sqrt(v), [0.005, 0.02], rtol=0.15)
    np.testing.assert_allclose(got.transmat, canon.transmat, atol=0.06)


def test_fit_recovers_known_process_in_canonical_order():
    X, _ = _sample_hmm(TRUE_3.startprob, TRUE_3.transmat, TRUE_3.means, TRUE_3.covars, 3000, seed=5)
    got = fit_hmm(X, HmmConfig(warmup=3000))
    want = canonicalize(TRUE_3)
    v = np.asarray(got.covars)[:, 0, 0]
    assert np.all(np.diff(v) > 0)
    np.testing.assert_allclose(np.sqrt(v), np.sqrt(np.asarray(want.covars)[:, 0, 0]), rtol=0.15)
    np.testing.assert_allclose(got.transmat, want.transmat, atol=0.04)
    np.testing.assert_allclose(np.asarray(got.means)[:, 1], np.asarray(want.means)[:, 1], rtol=0.1)
    assert got.converged and got.n_iter == len(got.log_likelihood) and got.n_samples == 3000
    # the reported log-likelihood is in feature units: hmmlearn's score agrees
    assert abs(_hmmlearn_model(got).score(X) - got.log_likelihood[-1]) < 1e-2
    json.loads(json.dumps(got.to_dict(), allow_nan=False))


def test_fit_errors_are_clear():
    X, _ = _sample_hmm(TRUE_3.startprob, TRUE_3.transmat, TRUE_3.means, TRUE_3.covars, 400, seed=1)
    with pytest.raises(HmmFitError, match="did not converge in 2 iterations"):
        fit_hmm(X, HmmConfig(n_iter=2, tol=1e-12, warmup=400))
    flat = X.copy()
    flat[:, 1] = 0.01
    with pytest.raises(HmmFitError, match="zero variance"):
        fit_hmm(flat, HmmConfig(warmup=400))
    with pytest.raises(ValueError, match="NaN"):
        fit_hmm(np.full((10, 2), np.nan), HmmConfig(warmup=10))


# -- policy -------------------------------------------------------------------------------


def test_policy_hand_computed():
    # mu = 0.2*0.001 + 0.8*(-0.0005) = -0.0002 < 0 -> flat
    assert policy_target([0.2, 0.8], [0.001, -0.0005], [0.01, 0.02], 0.02, 1.0) == Decimal("0")
    # mu = 0.9*0.002 + 0.1*0.001 = 0.0019; sigma = 0.9*0.01 + 0.1*0.02 = 0.011; 0.173 > 0.02
    got = policy_target([0.9, 0.1], [0.002, 0.001], [0.01, 0.02], 0.02, 0.35)
    assert got == Decimal("0.35") and str(got) == "0.3500"
    # exactly at the threshold is not above it: 0.25 / 0.5 = 0.5 exactly
    assert policy_target([1.0], [0.25], [0.5], 0.5, 1.0) == 0
    assert policy_target([1.0], [0.0004], [0.01], 0.02, 1.0) == Decimal("1.0000")


def test_model_target_and_regime_follow_the_posterior():
    model = HmmRegimeModel("hmm_v1", INSTR, SMALL)
    assert model.target_fraction() is None and model.regime() is None and not model.is_ready()
    _drive(model, _bars(_regime_closes(600, seed=2)), InlineFitExecutor())
    assert model.is_ready()
    mu, sigma = model.moments()
    p = model.posterior()
    fp = model.filter_params
    assert mu == float(p @ fp.means_ret) and sigma == float(p @ fp.vol_ret)
    want = Decimal("1.0000") if mu / sigma > SMALL.threshold else Decimal("0")
    assert model.target_fraction() == want
    k, prob = model.regime()
    assert k == int(np.argmax(p)) and prob == pytest.approx(p.max(), rel=1e-12)


# -- model life cycle and state ---------------------------------------------------------


def test_fit_due_job_apply_cycle_and_idempotent_redelivery():
    bars = _bars(_regime_closes(420, seed=4))
    model = HmmRegimeModel("hmm_v1", INSTR, SMALL)
    for bar in bars[: SMALL.vol_window + SMALL.warmup - 1]:
        model.observe(bar)
        assert not model.fit_due()
    model.observe(bars[SMALL.vol_window + SMALL.warmup - 1])
    assert model.fit_due()
    with pytest.raises(RuntimeError):
        model.apply_fit({})
    fn, (window, cfg) = model.fit_job()
    assert fn is fit_hmm and cfg is SMALL and window.shape == (SMALL.warmup, 2)
    assert not model.fit_due()
    with pytest.raises(RuntimeError):
        model.fit_job()
    for bar in bars[310:330]:
        model.observe(bar)
    n = model.n_bars
    model.observe(bars[320])  # re-delivered: ignored
    assert model.n_bars == n
    model.apply_fit(fn(window, cfg).to_dict())  # a dict (JSON) result is accepted too
    assert model.is_ready() and not model.fit_due()
    np.testing.assert_array_equal(model.feature_history()[: SMALL.warmup], window)
    with pytest.raises(ValueError, match="bar of"):
        model.observe(Bar(InstrumentId("ETHUSDT", "SIM"), *([Decimal(1)] * 5), 0, 10**18))


def test_abandon_fit_lets_a_newer_window_fit():
    bars = _bars(_regime_closes(400, seed=4))
    model = HmmRegimeModel("hmm_v1", INSTR, SMALL)
    for bar in bars[:320]:
        model.observe(bar)
    _, (w1, _) = model.fit_job()
    for bar in bars[320:330]:
        model.observe(bar)
    model.abandon_fit()
    assert model.fit_due()
    _, (w2, _) = model.fit_job()
    np.testing.assert_array_equal(w2[:-10], w1[10:])


@pytest.mark.parametrize("cut", [200, 318, 360])  # before warm-up, while pending, fitted
def test_state_dict_json_round_trip_continues_bit_identically(cut):
    bars = _bars(_regime_closes(520, seed=9))
    lag = 30  # the fit (window closed at bar 309) is applied at bar 339
    whole = HmmRegimeModel("hmm_v1", INSTR, SMALL)
    want = _drive(whole, bars, InlineFitExecutor(), lag=lag)

    first = HmmRegimeModel("hmm_v1", INSTR, SMALL)
    ex = InlineFitExecutor()
    out, fut, apply_at = [], None, None
    for i, bar in enumerate(bars[:cut]):
        first.observe(bar)
        if fut is None and first.fit_due():
            fn, args = first.fit_job()
            fut, apply_at = ex.submit(fn, *args), i + lag
        if fut is not None and i >= apply_at:
            first.apply_fit(fut.result())
            fut = None
        out.append(first.log_posterior())
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    # a restart loses the in-flight job; the pending fit is due again, same window
    second = HmmRegimeModel("hmm_v1", INSTR, SMALL)
    second.load_state_dict(state)
    assert second.state_dict() == state
    if fut is not None:
        assert second.fit_due()
        fn, args = second.fit_job()
        fut = ex.submit(fn, *args)
    for i, bar in enumerate(bars[cut:], cut):
        second.observe(bar)
        if fut is None and second.fit_due():
            fn, args = second.fit_job()
            fut, apply_at = ex.submit(fn, *args), i + lag
        if fut is not None and i >= apply_at:
            second.apply_fit(fut.result())
            fut = None
        out.append(second.log_posterior())
    assert len(out) == len(want)
    for i, (a, b) in enumerate(zip(out, want)):
        if b is None:
            assert a is None, i
        else:
            assert a.tobytes() == b.tobytes(), f"bar {i}"
    assert want[-1] is not None


def test_load_state_dict_refuses_another_setup():
    model = HmmRegimeModel("hmm_v1", INSTR, SMALL)
    state = model.state_dict()
    with pytest.raises(ValueError, match="configuration"):
        HmmRegimeModel("hmm_v1", INSTR, HmmConfig(warmup=301, vol_window=10)).load_state_dict(state)
    with pytest.raises(ValueError, match="state is of"):
        HmmRegimeModel("hmm_v2", INSTR, SMALL).load_state_dict(state)


def test_implements_the_ports_exactly():
    def sig(obj, name):
        return [p.name for p in inspect.signature(getattr(obj, name)).parameters.values()]

    for name in ("observe", "fit_due", "fit_job", "apply_fit", "is_ready", "target_fraction",
                 "regime", "state_dict", "load_state_dict"):
        assert sig(HmmRegimeModel, name) == sig(RegimeModel, name), name
    model = HmmRegimeModel("hmm_v1", INSTR, SMALL)
    assert model.model_id == "hmm_v1" and model.instrument_id == INSTR
    for cls in (ProcessFitExecutor, InlineFitExecutor, DelayedFitExecutor):
        assert sig(cls, "submit")[:2] == ["self", "fn"] and "args" in sig(cls, "submit")
        assert callable(getattr(cls, "shutdown"))
    assert sig(FitExecutor, "submit") == ["self", "fn", "args"]


def test_models_import_no_hmmlearn_at_start():
    code = (
        "import sys, models.hmm, models.executor\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'hmmlearn', 'sklearn', 'scipy'})\n"
        "print(heavy)\n"
        "import models._worker_init\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, models._worker_init; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- executors ------------------------------------------------------------------------------


def test_process_executor_runs_fits_in_a_worker_with_one_blas_thread(process_executor):
    worker_pid = process_executor.submit(_getpid).result(timeout=120)
    assert worker_pid != os.getpid()
    threads = process_executor.submit(_blas_threads).result(timeout=120)
    assert threads and all(n == 1 for n in threads), threads
    X, _ = _sample_hmm(TRUE_3.startprob, TRUE_3.transmat, TRUE_3.means, TRUE_3.covars, 500, seed=8)
    cfg = HmmConfig()
    remote = process_executor.submit(fit_hmm, X, cfg).result(timeout=120)
    assert remote == fit_hmm(X, cfg)  # same window, same config: same fit
    with pytest.raises(HmmFitError):
        process_executor.submit(fit_hmm, X, HmmConfig(n_iter=2, tol=1e-12)).result(timeout=120)


def test_inline_executor_delivers_result_and_exception():
    ex = InlineFitExecutor()
    assert ex.submit(divmod, 7, 2).result(timeout=0) == (3, 1)
    fut = ex.submit(divmod, 1, 0)
    assert isinstance(fut.exception(timeout=0), ZeroDivisionError)
    ex.shutdown()
    ex.shutdown()


def test_delayed_executor_completes_after_the_delay():
    ex = DelayedFitExecutor(InlineFitExecutor(), delay_s=0.05)
    t0 = time.monotonic()
    fut = ex.submit(divmod, 7, 2)
    assert fut.result(timeout=10) == (3, 1)
    assert time.monotonic() - t0 >= 0.05
    assert isinstance(ex.submit(divmod, 1, 0).exception(timeout=10), ZeroDivisionError)
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(divmod, 1, 1)


def test_posteriors_do_not_depend_on_fit_timing():
    bars = _bars(_regime_closes(450, seed=12))
    fast = _drive(HmmRegimeModel("hmm_v1", INSTR, SMALL), bars, InlineFitExecutor(), lag=20)
    slow_ex = DelayedFitExecutor(InlineFitExecutor(), delay_s=0.2)
    slow = _drive(HmmRegimeModel("hmm_v1", INSTR, SMALL), bars, slow_ex, lag=20)
    slow_ex.shutdown()
    assert [None if p is None else p.tobytes() for p in fast] == [
        None if p is None else p.tobytes() for p in slow
    ]
    assert fast[-1] is not None
