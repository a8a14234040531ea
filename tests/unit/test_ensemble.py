"""Ensemble of HMM regime models (models/ensemble.py, issue 7): the
combination rule worked by hand, the one-job fit, all-or-none install,
state round trip, refit by spawn.

No network, no sleeping; nothing is written anywhere.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import pickle
from decimal import Decimal

import numpy as np
import pytest

from core.data import Bar
from core.identifiers import InstrumentId
from core.ports import RegimeModel
from models.ensemble import EnsembleConfig, EnsembleFitResult, EnsembleModel, combine, fit_ensemble
from models.executor import InlineFitExecutor
from models.hmm import FitResult, HmmConfig, HmmFitError, HmmRegimeModel, features_from_closes

INSTR = InstrumentId("BTCUSDT", "SIM")
HOUR_NS = 3_600_000_000_000


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
    return [Bar(INSTR, c, c, c, c, Decimal(1), i * HOUR_NS, (i + 1) * HOUR_NS, i + 2) for i, c in enumerate(closes)]


def _fit1(means, variances, transmat=((0.9, 0.1), (0.2, 0.8))):
    return FitResult(startprob=[0.5, 0.5], transmat=[list(r) for r in transmat],
                     means=[[m] for m in means], covars=[[[v]] for v in variances])


# -- the rule ----------------------------------------------------------------------------


def test_combine_hand_worked():
    # mean: (1*0.9 + 1*0.4 + 2*0.3) / 4 = 1.9 / 4 = 0.475
    assert combine([0.9, 0.4, 0.3], [1, 1, 2], "mean") == pytest.approx(0.475, abs=1e-15)
    # vote: only the first member is above 1/2: weight 1 of 4
    assert combine([0.9, 0.4, 0.3], [1, 1, 2], "vote") == 0.25
    # where they disagree: mean (0.6 + 0.6 + 0) / 3 = 0.4 (flat at 0.5); vote 2 of 3 (long)
    assert combine([0.6, 0.6, 0.0], [1, 1, 1], "mean") == pytest.approx(0.4, abs=1e-15)
    assert combine([0.6, 0.6, 0.0], [1, 1, 1], "vote") == pytest.approx(2 / 3, abs=1e-15)
    # exactly 1/2 is no vote: 0.5 and 0.51 -> one vote of two = 0.5, not above 0.5
    assert combine([0.5, 0.51], [1, 1], "vote") == 0.5
    # weights: (3*0.9 + 1*0.4 + 1*0.3) / 5 = 0.68; votes 3 of 5 = 0.6
    assert combine([0.9, 0.4, 0.3], [3, 1, 1], "mean") == pytest.approx(0.68, abs=1e-15)
    assert combine([0.9, 0.4, 0.3], [3, 1, 1], "vote") == pytest.approx(0.6, abs=1e-15)
    for args, msg in [(([0.5], [1], "median"), "method"), (([1.2], [1], "mean"), r"\[0, 1\]"),
                      (([0.5], [0], "mean"), "positive"), (([0.5, 0.5], [1], "mean"), "2 long probabilities")]:
        with pytest.raises(ValueError, match=msg):
            combine(*args)


def _fitted_member(cfg: HmmConfig, fit: FitResult, bars) -> HmmRegimeModel:
    m = HmmRegimeModel("m", INSTR, cfg)
    for bar in bars:
        m.observe(bar)
        if m.fit_due():
            m.fit_job()
    m.apply_fit(fit)
    return m


def test_member_long_probability_hand_worked():
    bars = _bars(_regime_closes(80, seed=1))
    cfg = HmmConfig(n_states=2, vol_window=5, warmup=50, features=("log_return",))
    # ratios mu/sigma: 0.001 / 0.01 = 0.1 > 0.02 (long), -0.002 / 0.02 = -0.1
    m = _fitted_member(cfg, _fit1([0.001, -0.002], [1e-4, 4e-4]), bars)
    assert m.long_states().tolist() == [True, False]
    assert m.long_probability() == m.posterior()[0]
    # both states drift up: ratios 0.1 and 0.05, both long ...
    up = _fit1([0.001, 0.001], [1e-4, 4e-4])
    assert _fitted_member(cfg, up, bars).long_probability() == pytest.approx(1.0, abs=1e-12)
    # ... but relative to the stationary baseline (pi = [2/3, 1/3]:
    # 2/3 * 0.1 + 1/3 * 0.05 = 0.08333) they are 0.01667 and -0.0333, neither > 0.02
    rel = _fitted_member(HmmConfig(n_states=2, vol_window=5, warmup=50, features=("log_return",), relative=True),
                         up, bars)
    assert rel.long_states().tolist() == [False, False] and rel.long_probability() == 0.0


A_CFG = HmmConfig(n_states=2, vol_window=5, warmup=50, features=("log_return",))
B_CFG = HmmConfig(n_states=2, vol_window=5, warmup=60, features=("log_return",))
# A: state 0 (0.001, var 1e-4) long; B: canonical state 0 = (0.0015, var 2.5e-5),
# ratio 0.0015 / 0.005 = 0.3 long, state 1 = (-0.001, 1e-4) ratio -0.1
FIT_A = _fit1([0.001, -0.002], [1e-4, 4e-4])
FIT_B = _fit1([-0.001, 0.0015], [1e-4, 2.5e-5], transmat=((0.8, 0.2), (0.1, 0.9)))


@pytest.mark.parametrize("method", ["mean", "vote"])
def test_ensemble_target_follows_the_hand_rule_bar_by_bar(method):
    cfg = EnsembleConfig(members=(A_CFG, B_CFG), weights=(3, 1), method=method, threshold=0.5, max_fraction=0.5)
    ens = EnsembleModel("ens_v1", INSTR, cfg)
    bars = _bars(_regime_closes(160, seed=3))
    for i, bar in enumerate(bars[:65]):
        ens.observe(bar)
        # A has its 50 rows at bar 54, B its 60 at bar 64: the ensemble waits for both
        assert ens.fit_due() == (i >= 64), i
        assert ens.target_fraction() is None and ens.regime() is None
    fn, args = ens.fit_job()
    assert fn is fit_ensemble and [w.shape for w in args[0]] == [(50, 1), (60, 1)]
    pickle.loads(pickle.dumps((fn, args)))  # one picklable job for the worker
    assert not ens.fit_due()
    ens.apply_fit(EnsembleFitResult([FIT_A, FIT_B]))
    a, b = ens.members
    assert b.fit_result.means == [[0.0015], [-0.001]]  # canonical: the low-variance state first
    seen = set()
    for bar in bars[65:]:
        ens.observe(bar)
        qa, qb = a.posterior()[0], b.posterior()[0]  # the long states, by hand above
        if method == "mean":
            score = (3 * qa + 1 * qb) / 4
        else:
            score = (3 * (qa > 0.5) + 1 * (qb > 0.5)) / 4
        assert ens.score() == pytest.approx(score, abs=1e-12)
        want = Decimal("0.5000") if score > 0.5 else Decimal("0.0000")
        assert ens.target_fraction() == want
        seen.add(want)
        q = (3 * qa + qb) / 4
        assert ens.long_probability() == pytest.approx(q, abs=1e-12)
        assert ens.regime() == ((1, pytest.approx(q)) if q >= 0.5 else (0, pytest.approx(1 - q)))
        np.testing.assert_allclose(ens.posterior(), [1 - q, q], atol=1e-12)
        (mu_a, s_a), (mu_b, s_b) = a.moments(), b.moments()
        assert ens.moments() == pytest.approx(((3 * mu_a + mu_b) / 4, (3 * s_a + s_b) / 4), rel=1e-12)
    assert seen == {Decimal("0.5000"), Decimal("0.0000")}  # both outcomes were exercised


# -- fits -----------------------------------------------------------------------------------


MEMBERS = (
    HmmConfig(n_states=2, vol_window=10, warmup=200, refit_every_bars=40),
    HmmConfig(n_states=3, vol_window=5, warmup=250, features=("log_return",), refit_every_bars=60),
)


def test_one_job_fits_every_member_and_the_result_survives_a_checkpoint():
    closes = _regime_closes(320, seed=5)
    ens = EnsembleModel("ens_v1", INSTR, EnsembleConfig(members=MEMBERS))
    for bar in _bars(closes)[:260]:
        ens.observe(bar)
    assert ens.fit_due()
    fn, args = ens.fit_job()
    res = InlineFitExecutor().submit(fn, *args).result()
    # each member's fit is the one fit_hmm gives on its own window
    f0 = features_from_closes(closes[:260], 10)[-200:]
    f1 = features_from_closes(closes[:260], 5, ("log_return",))[-250:]
    from models.hmm import fit_hmm

    assert res.members == [fit_hmm(f0, MEMBERS[0]), fit_hmm(f1, MEMBERS[1])]
    assert res.n_iter == max(m.n_iter for m in res.members) and res.converged
    assert res.log_likelihood == [math.fsum(m.log_likelihood[-1] for m in res.members)]
    # the engine's checkpoint rebuilds a pending result as cls(**asdict(result))
    assert EnsembleFitResult(**json.loads(json.dumps(dataclasses.asdict(res)))) == res
    assert EnsembleFitResult.from_dict(json.loads(json.dumps(res.to_dict()))) == res
    ens.apply_fit(res)
    assert ens.is_ready() and ens.fit_result == res
    info = ens.last_fit_info()
    assert info["window_first_ts_ns"] == min(i["window_first_ts_ns"] for i in info["members"])
    assert info["window_last_ts_ns"] == 260 * HOUR_NS and info["n_samples"] == 450


def test_a_member_that_cannot_fit_fails_the_job_and_nothing_is_installed():
    closes = _regime_closes(300, seed=5)
    ens = EnsembleModel("ens_v1", INSTR, EnsembleConfig(members=MEMBERS))
    for bar in _bars(closes)[:260]:
        ens.observe(bar)
    fn, (windows, configs) = ens.fit_job()
    bad = windows[1].copy()
    bad[:20] = np.nan  # 20 of 250 rows = 8 % > 5 %
    with pytest.raises(HmmFitError, match=r"member 1: fit_hmm: skipped: 20 of 250 rows bad"):
        fn((windows[0], bad), configs)
    good = fn(windows, configs)
    # a result of the wrong shape is refused, and nothing of it is installed
    with pytest.raises(ValueError, match="1 members, expected 2"):
        ens.apply_fit(EnsembleFitResult(good.members[:1]))
    wrong = EnsembleFitResult([good.members[0], good.members[0]])  # member 1 needs 3 states x 1 feature
    with pytest.raises(ValueError, match="expected 3 x 1"):
        ens.apply_fit(wrong)
    assert not ens.members[0].is_ready() and not ens.is_ready()  # all or none
    ens.apply_fit(good.to_dict())  # still pending: the right result goes in
    assert ens.is_ready()
    # abandon (a failed job) lets a newer window fit
    other = EnsembleModel("ens_v1", INSTR, EnsembleConfig(members=MEMBERS))
    for bar in _bars(closes)[:260]:
        other.observe(bar)
    other.fit_job()
    assert not other.fit_due()
    other.abandon_fit()
    assert other.fit_due()


def test_state_round_trip_and_refit_by_spawn():
    closes = _regime_closes(420, seed=7)
    bars = _bars(closes)
    ex = InlineFitExecutor()
    ens = EnsembleModel("ens_v1", INSTR, EnsembleConfig(members=MEMBERS, method="vote"))
    for bar in bars[:260]:
        ens.observe(bar)
    fn, args = ens.fit_job()
    # saved while pending: due again after the restart, same windows
    state = json.loads(json.dumps(ens.state_dict(), allow_nan=False))
    back = EnsembleModel("ens_v1", INSTR, EnsembleConfig(members=MEMBERS, method="vote"))
    back.load_state_dict(state)
    assert back.fit_due()
    fn2, args2 = back.fit_job()
    for w, w2 in zip(args[0], args2[0]):
        np.testing.assert_array_equal(w, w2)
    res = ex.submit(fn, *args).result()
    ens.apply_fit(res)
    back.apply_fit(res)
    spawned = None
    for i, bar in enumerate(bars[260:], 260):
        ens.observe(bar)
        back.observe(bar)
        if spawned is not None:
            spawned.observe(bar)
        assert ens.score() == back.score() and ens.target_fraction() == back.target_fraction()
        # member 0's window ended at bar 259 (row 249): due 40 rows later, bar 299
        if spawned is None:
            assert ens.refit_due() == (i >= 299), i
        if spawned is None and ens.refit_due():
            spawned = ens.spawn("ens_v2")
            assert not ens.refit_due() and spawned.fit_due()
            sfn, sargs = spawned.fit_job()
            spawned.apply_fit(ex.submit(sfn, *sargs).result())
    assert spawned is not None and spawned.is_ready()
    assert [m.model_id for m in spawned.members] == ["ens_v2#0", "ens_v2#1"]
    for m in spawned.members:
        info = m.last_fit_info()
        assert info["state_order"] == "matched" and info["previous_model_id"].startswith("ens_v1#")
        assert info["window_last_ts_ns"] == 300 * HOUR_NS  # the window ends at the spawn bar, 299
    saved = json.loads(json.dumps(ens.state_dict(), allow_nan=False))
    again = EnsembleModel("ens_v1", INSTR, EnsembleConfig(members=MEMBERS, method="vote"))
    again.load_state_dict(saved)
    assert again.state_dict() == saved and again.score() == ens.score()
    with pytest.raises(ValueError, match="another ensemble configuration"):
        EnsembleModel("ens_v1", INSTR, EnsembleConfig(members=MEMBERS, method="mean")).load_state_dict(saved)
    with pytest.raises(ValueError, match="must differ"):
        ens.spawn("ens_v1")


def test_config_validation_and_interface():
    cfg = EnsembleConfig(members=[MEMBERS[0].to_dict(), MEMBERS[1]], weights=[2, 1.5])
    assert cfg.members == MEMBERS and cfg.weights == (2.0, 1.5)
    assert EnsembleConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert EnsembleConfig(members=MEMBERS).member_weights == (1.0, 1.0)
    for kwargs, msg in [({"members": ()}, "members"), ({"weights": (1,)}, "weights"),
                        ({"weights": (1, -1)}, "weights"), ({"method": "median"}, "method"),
                        ({"threshold": 1.0}, "threshold"), ({"max_fraction": 1.5}, "max_fraction")]:
        with pytest.raises(ValueError, match=f"EnsembleConfig.{msg}"):
            EnsembleConfig(**{"members": MEMBERS, **kwargs})

    def sig(obj, name):
        return [p.name for p in inspect.signature(getattr(obj, name)).parameters.values()]

    for name in ("observe", "fit_due", "fit_job", "apply_fit", "is_ready", "target_fraction",
                 "regime", "state_dict", "load_state_dict"):
        assert sig(EnsembleModel, name) == sig(RegimeModel, name), name
    for name in ("abandon_fit", "refit_due", "spawn", "last_fit_info", "posterior", "moments"):
        assert sig(EnsembleModel, name) == sig(HmmRegimeModel, name), name
    ens = EnsembleModel("ens_v1", INSTR, cfg)
    assert ens.fit_result is None and ens.last_fit_info() == {} and ens.moments() is None
    with pytest.raises(ValueError, match="bar of"):
        ens.observe(Bar(InstrumentId("ETHUSDT", "SIM"), *([Decimal(1)] * 5), 0, 1))
