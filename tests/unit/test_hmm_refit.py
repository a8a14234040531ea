"""Retraining on a schedule (issue 7): ``refit_due``, ``spawn``, the refit
window kept across ``state_dict``/``load_state_dict``, ``last_fit_info``,
and v1 states (saved before the schedule existed) still loading.

No network, no sleeping; nothing is written anywhere.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pytest

from core.data import Bar
from core.identifiers import InstrumentId
from models.executor import InlineFitExecutor
from models.hmm import (
    FitResult,
    HmmConfig,
    HmmRegimeModel,
    canonicalize,
    features_from_closes,
    fit_hmm,
)

INSTR = InstrumentId("BTCUSDT", "SIM")
HOUR_NS = 3_600_000_000_000
#: rows exist from bar index 10 on (vol_window returns): row r is bar r + 10
CFG = HmmConfig(n_states=3, vol_window=10, warmup=300, refit_every_bars=50)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """hmmlearn's reference computations (predict_proba, decode) with one
    BLAS/OpenMP thread, as fits run: with the default threads a 2-core box
    busy with other work made two of these tests 20x slower (measured
    27 s instead of 1 s at load 5)."""
    import hmmlearn.hmm  # noqa: F401 - load its BLAS/OpenMP first: only loaded pools are capped
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


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
    # bar i closes at (i + 1) hours
    return [Bar(INSTR, c, c, c, c, Decimal(1), i * HOUR_NS, (i + 1) * HOUR_NS, i + 2) for i, c in enumerate(closes)]


def _hmmlearn_model(fit: FitResult):
    from hmmlearn.hmm import GaussianHMM

    m = GaussianHMM(n_components=fit.n_states, covariance_type="full")
    m.startprob_, m.transmat_ = np.array(fit.startprob), np.array(fit.transmat)
    m.means_, m.covars_ = np.array(fit.means), np.array(fit.covars)
    return m


def _permute(fit: FitResult, perm) -> FitResult:
    p = np.asarray(perm)
    return FitResult(
        startprob=np.asarray(fit.startprob)[p].tolist(),
        transmat=np.asarray(fit.transmat)[np.ix_(p, p)].tolist(),
        means=np.asarray(fit.means)[p].tolist(),
        covars=np.asarray(fit.covars)[p].tolist(),
    )


@pytest.fixture(scope="module")
def closes():
    return _regime_closes(520, seed=4)


@pytest.fixture(scope="module")
def first_fit(closes):
    """The fit of rows 0..299 (bars 10..309), computed once."""
    return fit_hmm(features_from_closes(closes, 10)[:300], CFG)


def _fitted(closes, first_fit, upto: int, lag: int = 5) -> HmmRegimeModel:
    """A model fed bars 0..upto-1, its fit (window rows 0..299, closed at
    bar 309) applied at bar 309 + lag."""
    model = HmmRegimeModel("hmm_v1", INSTR, CFG)
    for i, bar in enumerate(_bars(closes)[:upto]):
        model.observe(bar)
        if model.fit_due():
            model.fit_job()
        if i == 309 + lag:
            model.apply_fit(first_fit)
    return model


def test_refit_due_counts_bars_after_the_window_end(closes, first_fit):
    bars = _bars(closes)
    model = HmmRegimeModel("hmm_v1", INSTR, CFG)
    for i, bar in enumerate(bars[:360]):
        model.observe(bar)
        if model.fit_due():
            assert i == 309  # row 299, the 300th
            model.fit_job()
        if i == 320:
            model.apply_fit(first_fit)
        # window end = row 299 (bar 309); 50 rows later = row 349 = bar 359
        assert model.refit_due() == (i >= 359), i
    assert model.last_fit_info() == {
        "window_first_ts_ns": 11 * HOUR_NS,  # bar 10 closes at 11 h
        "window_last_ts_ns": 310 * HOUR_NS,  # bar 309
        "window_rows": 300,
        "n_iter": first_fit.n_iter,
        "converged": True,
        "log_likelihood": first_fit.log_likelihood[-1],
        "n_samples": 300,
        "n_dropped": 0,
        "state_order": "variance",
        "previous_model_id": None,
    }
    assert first_fit.n_iter == len(first_fit.log_likelihood) > 1
    # spawning restarts the parent's count: due again 50 bars later (bar 409)
    child = model.spawn("hmm_v2")
    for i, bar in enumerate(bars[360:420], 360):
        model.observe(bar)
        child.observe(bar)
        assert model.refit_due() == (i >= 409), i
        assert not child.refit_due()  # no fit of its own yet
    # never due without a schedule, or before a fit
    plain = HmmRegimeModel("hmm_v1", INSTR, HmmConfig(n_states=3, vol_window=10, warmup=300))
    for bar in bars[:400]:
        plain.observe(bar)
        assert not plain.refit_due()
    assert plain.last_fit_info() == {}


def test_spawn_takes_the_trailing_window_and_continues_seamlessly(closes, first_fit):
    bars = _bars(closes)
    parent = _fitted(closes, first_fit, 360)
    child = parent.spawn("hmm_v2")
    assert child.model_id == "hmm_v2" and child.instrument_id == INSTR and child.cfg is CFG
    assert child.fit_due() and not child.is_ready() and child.target_fraction() is None
    feats = features_from_closes(closes, 10)
    fn, (window, cfg) = child.fit_job()
    # the last 300 rows at the spawn: rows 50..349 (bars 60..359)
    assert fn is fit_hmm and cfg is CFG
    np.testing.assert_array_equal(window, feats[50:350])
    assert child.feature_times()[0] == 61 * HOUR_NS and child.n_bars == parent.n_bars == 360
    # both keep observing; the child's rows are those of the whole series
    for bar in bars[360:380]:
        parent.observe(bar)
        child.observe(bar)
    np.testing.assert_array_equal(child.feature_history(), feats[50:370])
    result = fn(window, cfg)
    child.apply_fit(result)
    # its posterior is the filter over the rows since its window start
    ref = _hmmlearn_model(child.fit_result)
    np.testing.assert_allclose(child.posterior(), ref.predict_proba(feats[50:370])[-1], rtol=0, atol=1e-9)
    info = child.last_fit_info()
    assert info["window_first_ts_ns"] == 61 * HOUR_NS and info["window_last_ts_ns"] == 360 * HOUR_NS
    assert info["previous_model_id"] == "hmm_v1" and info["state_order"] == "matched"
    # the parent is untouched by the child's bars and fit
    assert parent.fit_result == canonicalize(first_fit) and parent.n_bars == child.n_bars == 380
    with pytest.raises(ValueError, match="must differ"):
        parent.spawn("hmm_v1")
    with pytest.raises(RuntimeError, match="spawn needs the last 300 feature rows"):
        HmmRegimeModel("hmm_v1", INSTR, CFG).spawn("hmm_v2")


def test_spawned_fit_is_matched_to_the_parents_states():
    # 1-feature models with hand-made fits: the refit's variances have crossed
    cfg = HmmConfig(n_states=2, vol_window=5, warmup=100, features=("log_return",), refit_every_bars=20)
    bars = _bars(_regime_closes(140, seed=6))
    parent = HmmRegimeModel("hmm_v1", INSTR, cfg)
    for bar in bars[:105]:
        parent.observe(bar)
    parent.fit_job()
    # label 0 = bull (+0.001, var 1.0e-4), 1 = bear (-0.002, 1.2e-4): the variance order
    prev = FitResult(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
                     means=[[0.001], [-0.002]], covars=[[[1.0e-4]], [[1.2e-4]]])
    parent.apply_fit(prev)
    assert parent.fit_result == prev
    for bar in bars[105:125]:
        parent.observe(bar)
    assert parent.refit_due()
    child = parent.spawn("hmm_v2")
    child.fit_job()
    # the refit found bear first with a variance now below bull's (see
    # test_hmm.test_state_distances_hand_computed for the divergences)
    child.apply_fit(FitResult(startprob=[0.3, 0.7], transmat=[[0.85, 0.15], [0.05, 0.95]],
                              means=[[-0.002], [0.001]], covars=[[[1.15e-4]], [[1.25e-4]]],
                              n_iter=7, log_likelihood=[1.0, 2.0], n_samples=100))
    assert child.fit_result.means == [[0.001], [-0.002]]  # bull is still 0
    assert child.fit_result.transmat == [[0.95, 0.05], [0.15, 0.85]]
    info = child.last_fit_info()
    assert info["state_order"] == "matched" and info["n_iter"] == 7 and info["log_likelihood"] == 2.0
    # a first model (no parent) orders by variance: bear would be 0
    orphan = HmmRegimeModel("hmm_v3", INSTR, cfg)
    for bar in bars[:105]:
        orphan.observe(bar)
    orphan.fit_job()
    orphan.apply_fit(FitResult(startprob=[0.3, 0.7], transmat=[[0.85, 0.15], [0.05, 0.95]],
                               means=[[-0.002], [0.001]], covars=[[[1.15e-4]], [[1.25e-4]]]))
    assert orphan.fit_result.means == [[-0.002], [0.001]]
    assert orphan.last_fit_info()["state_order"] == "variance"


def test_the_refit_window_survives_a_restart(closes, first_fit):
    bars = _bars(closes)
    whole = _fitted(closes, first_fit, 400)
    state = json.loads(json.dumps(whole.state_dict(), allow_nan=False))
    # once fitted the state keeps the last warmup rows only, with their bar times
    assert state["history"]["shape"] == [300, 2] and state["history_ts"]["shape"] == [300]
    assert state["version"] == 2
    assert len(json.dumps(state)) < 20_000  # base64 float64: 300 rows x 2 = 6.4 kB
    assert state["history_start"] == 390 - 300 and state["refit_anchor"] == 299
    restarted = HmmRegimeModel("hmm_v1", INSTR, CFG)
    restarted.load_state_dict(state)
    assert restarted.state_dict() == state
    assert restarted.refit_due() and whole.refit_due()
    assert restarted.last_fit_info() == whole.last_fit_info()
    a, b = whole.spawn("hmm_v2"), restarted.spawn("hmm_v2")
    assert a.state_dict() == b.state_dict()
    np.testing.assert_array_equal(a.fit_job()[1][0], b.fit_job()[1][0])
    for bar in bars[400:430]:
        for m in (whole, restarted, a, b):
            m.observe(bar)
    assert whole.log_posterior().tobytes() == restarted.log_posterior().tobytes()
    assert whole.state_dict() == restarted.state_dict()
    # a config that differs only in the schedule loads (the schedule is this model's)
    other = HmmRegimeModel("hmm_v1", INSTR, HmmConfig(n_states=3, vol_window=10, warmup=300, refit_every_bars=500))
    other.load_state_dict(state)
    assert not other.refit_due()  # 90 rows since the window end < 500
    assert other.state_dict()["config"]["refit_every_bars"] == 500


def test_a_pending_spawned_fit_survives_a_restart_and_is_still_matched(closes, first_fit):
    bars = _bars(closes)
    parent = _fitted(closes, first_fit, 360)
    child = parent.spawn("hmm_v2")
    fn, args = child.fit_job()
    state = json.loads(json.dumps(child.state_dict(), allow_nan=False))
    assert state["pending"] and state["previous_fit"] == parent.fit_result.to_dict()
    again = HmmRegimeModel("hmm_v2", INSTR, CFG)
    again.load_state_dict(state)
    assert again.fit_due()
    np.testing.assert_array_equal(again.fit_job()[1][0], args[0])
    # a refit that found the parent's states in another order (and slightly moved)
    moved = canonicalize(first_fit)
    moved.means = (np.asarray(moved.means) * 1.05).tolist()
    shuffled = _permute(moved, [2, 0, 1])
    for m in (child, again):
        for bar in bars[360:365]:
            m.observe(bar)
        m.apply_fit(shuffled)
        np.testing.assert_allclose(m.fit_result.means, moved.means, rtol=1e-15)
    assert child.state_dict() == again.state_dict()
    assert again.state_dict()["previous_fit"] is None  # not kept once fitted


#: a state saved by models/hmm.py format v1 (commit 8e40304): n_states 2,
#: vol_window 5, warmup 100, bars of _regime_closes(400, seed=4) 0..129, the
#: fit of rows 0..99 applied at bar 119. v1 kept no feature rows after a fit.
V1_STATE = json.loads("""
{"format": "hmm_regime_model", "version": 1, "model_id": "hmm_v1", "instrument_id": "BTCUSDT.SIM",
 "config": {"n_states": 2, "covariance_type": "full", "vol_window": 5, "warmup": 100, "n_iter": 1000,
  "tol": 0.0001, "random_state": 42, "threshold": 0.02, "max_fraction": 1.0, "exit_threshold": null,
  "relative": false},
 "n_bars": 130, "n_rows": 125, "last_ts": 468000000000000, "last_close": 20692.95,
 "returns": [0.002704119054705145, 1.5603872296279065e-05, 0.0019373756989968002, 0.0041689026886617435,
  0.0028770940164932193],
 "history_start": 125, "history": [], "pending": false, "long": true, "target": "1.0000",
 "fit": {"startprob": [1.0, 2.8291150541271775e-32],
  "transmat": [[0.9751160183676347, 0.02488398163236516], [0.0682920637403621, 0.931707936259638]],
  "means": [[0.0002797387398918936, 0.0019888432444603752], [-0.00019034700260230113, 0.004633865211750288]],
  "covars": [[[3.9028835011869034e-06, 6.36574657663663e-08], [6.36574657663663e-08, 1.3045386630030577e-07]],
   [[2.7543759149018012e-05, 2.43105814327574e-06], [2.43105814327574e-06, 5.7829344711825936e-06]]],
  "n_iter": 18, "converged": true,
  "log_likelihood": [558.1044661173278, 962.197037792896, 970.0700418366905, 985.405878633537,
   1012.5013325706522, 1036.6557221513597, 1043.8599939636792, 1044.5411452165602, 1044.6585091383995,
   1044.7183288865551, 1044.7473200429206, 1044.7595759316566, 1044.7642778239215, 1044.766012891692,
   1044.7666619833121, 1044.7669179358113, 1044.767026576228, 1044.7670762955363],
  "n_samples": 100},
 "log_alpha": [-0.013861009062676288, -4.2855979831542435]}
""")


def test_a_v1_state_loads_and_continues_like_an_uninterrupted_run():
    cfg = HmmConfig(n_states=2, vol_window=5, warmup=100, refit_every_bars=120)
    bars = _bars(_regime_closes(400, seed=4))
    # the same run with this code: same window, same (deterministic) fit, applied at bar 119
    whole = HmmRegimeModel("hmm_v1", INSTR, cfg)
    for i, bar in enumerate(bars[:130]):
        whole.observe(bar)
        if whole.fit_due():
            fn, args = whole.fit_job()
        if i == 119:
            whole.apply_fit(fn(*args))
    assert whole.fit_result.to_dict() == {**V1_STATE["fit"], "n_dropped": 0}
    assert whole.log_posterior().tolist() == V1_STATE["log_alpha"]
    migrated = HmmRegimeModel("hmm_v1", INSTR, cfg)
    migrated.load_state_dict(V1_STATE)
    assert migrated.is_ready() and migrated.target_fraction() == Decimal("1.0000")
    info = migrated.last_fit_info()
    assert info["window_first_ts_ns"] is None and info["n_iter"] == 18 and info["n_samples"] == 100
    for i, bar in enumerate(bars[130:400], 130):
        whole.observe(bar)
        migrated.observe(bar)
        assert whole.log_posterior().tobytes() == migrated.log_posterior().tobytes(), i
        # v1 kept no rows: the migrated model's schedule counts from the load
        # (row 124) and needs 100 new rows; the whole run's from row 99
        assert whole.refit_due() == (i >= 99 + 120 + 5), i
        assert migrated.refit_due() == (i >= 124 + 120 + 5), i
    assert migrated.state_dict()["version"] == 2
    # a v1 state saved while a fit was pending (same keys as v2 before these fields)
    pend = HmmRegimeModel("hmm_v1", INSTR, cfg)
    for bar in bars[:110]:
        pend.observe(bar)
    _, (window, _) = pend.fit_job()
    v1 = {k: v for k, v in pend.state_dict().items()
          if k not in ("volumes", "history_ts", "fit_info", "refit_anchor", "previous_fit", "previous_model_id")}
    v1["version"] = 1
    loaded = HmmRegimeModel("hmm_v1", INSTR, cfg)
    loaded.load_state_dict(v1)
    np.testing.assert_array_equal(loaded.fit_job()[1][0], window)
    assert loaded.feature_times() == [None] * 100  # 105 rows, the last warmup kept
    with pytest.raises(ValueError, match="v1/v2 state"):
        loaded.load_state_dict({**v1, "version": 3})


def test_engine_like_refit_cycle_with_an_executor(closes):
    # the engine's part, sketched: initial fit, refit when due via spawn, the
    # child's fit applied 7 bars later; both run on bars side by side
    bars = _bars(closes)
    ex = InlineFitExecutor()
    live = HmmRegimeModel("hmm_v1", INSTR, CFG)
    children: list[HmmRegimeModel] = []
    pending = None
    for i, bar in enumerate(bars):
        for m in (live, *children):
            m.observe(bar)
        if pending is None and live.fit_due():
            fn, args = live.fit_job()
            pending = (live, ex.submit(fn, *args), i + 7)
        elif pending is None and live.refit_due():
            child = live.spawn(f"hmm_v{len(children) + 2}")
            children.append(child)
            fn, args = child.fit_job()
            pending = (child, ex.submit(fn, *args), i + 7)
        if pending is not None and i >= pending[2]:
            pending[0].apply_fit(pending[1].result())
            pending = None
    # initial fit at bar 309; refits spawned at bars 359 (=309+50), 409, 459, 509
    assert [c.last_fit_info()["window_last_ts_ns"] // HOUR_NS - 1 for c in children] == [359, 409, 459, 509]
    feats = features_from_closes(closes, 10)
    for c in children:
        assert c.last_fit_info()["previous_model_id"] == "hmm_v1"
        start = c.last_fit_info()["window_last_ts_ns"] // HOUR_NS - 1 - 10 - 299  # first row of its window
        ref = _hmmlearn_model(c.fit_result)
        np.testing.assert_allclose(c.posterior(), ref.predict_proba(feats[start:])[-1], rtol=0, atol=1e-9)


def test_bad_rows_are_dropped_by_the_fit_stepped_over_by_the_filter_and_saved():
    cfg = HmmConfig(n_states=2, vol_window=10, warmup=300, features=("log_return", "realized_vol", "volume_z"))
    closes = _regime_closes(380, seed=8)
    rng = np.random.default_rng(8)
    vols = [Decimal(f"{v:.3f}") for v in rng.lognormal(0.0, 0.5, len(closes))]
    # 11 equal volumes: the windows of bars 109 and 110 (rows 99, 100) have std 0;
    # after the fit the same at bars 340..350: rows 339, 340 undefined
    vols[100:111] = [Decimal(1)] * 11
    vols[340:351] = [Decimal(2)] * 11
    bars = [Bar(INSTR, c, c, c, c, v, i * HOUR_NS, (i + 1) * HOUR_NS, i + 2)
            for i, (c, v) in enumerate(zip(closes, vols))]
    model = HmmRegimeModel("hmm_v1", INSTR, cfg)
    restarted = None
    for i, bar in enumerate(bars):
        for m in (model, restarted):
            if m is not None:
                m.observe(bar)
        if model.fit_due():
            fn, args = model.fit_job()
            model.apply_fit(fn(*args))
        if i == 345:
            p_before = model.posterior()
        if i == 349:
            p_bad = model.posterior()
            state = json.loads(json.dumps(model.state_dict(), allow_nan=False))
            restarted = HmmRegimeModel("hmm_v1", INSTR, cfg)
            restarted.load_state_dict(state)
        if i == 348:
            p_prev = model.posterior()
    assert np.isnan(model.feature_history()[[99, 100, 339, 340], 2]).all()
    assert np.isfinite(np.delete(model.feature_history(), [99, 100, 339, 340], axis=0)).all()
    info = model.last_fit_info()
    assert info["n_dropped"] == 2 and info["n_samples"] == 298
    # bar 349 gives row 339 (bad): a prediction step p_349 = p_348 A
    np.testing.assert_allclose(p_bad, p_prev @ np.asarray(model.fit_result.transmat), rtol=1e-12)
    assert not np.array_equal(p_before, p_bad)
    # the NaN rows travel through strict JSON (base64) and the run continues bit-identically
    assert restarted.log_posterior().tobytes() == model.log_posterior().tobytes()
    np.testing.assert_array_equal(restarted.feature_history(), model.feature_history()[-330:])  # 300 saved + 30
