"""Trained models evaluated again without training: the out-of-distribution slider's
engine (issue 29, part 3).

A run sends each method's weights (:class:`runs.Weights`) before it ends; an executor
re-evaluates them at another ``ood_factor`` where it trains (a thread in process, a task
on Dask). Checked against the run itself: at the run's own factor the re-evaluation
gives the run's last evaluation bit for bit (so the weights and the input scales really
are the trained ones); at another factor the OOD curves move and nothing else does.
"""

from __future__ import annotations

import math

import pytest

from conserv_core import records, runs, training
from conserv_core.systems import ParameterError

SPEC = runs.RunSpec("pendulum", {}, ("baseline", "hnn", "penalty"),
                    dict(steps=120, width=24, eval_every=60, n_test=6, horizon=6.0, seed=3, device="cpu",
                         ood_factor=3.0))


def _run(ex, spec=SPEC):
    h = ex.submit(spec)
    assert h.finished.wait(300)
    weights = {r.method: (r.step, r.state) for r in h.queue if isinstance(r, runs.Weights)}
    last = {}
    for r in h.queue:
        if isinstance(r, training.Evaluation):
            last[r.method] = r
    return h, weights, last


def _answer(futures, timeout=120) -> dict:
    out = {}
    for f in futures:
        out.update(f.result(timeout=timeout))
    return out


def _numbers(ev: training.Evaluation) -> tuple:
    return (ev.step, ev.test_mse, ev.violation, ev.violation_ood,
            tuple((k, tuple(c.rel)) for k, c in sorted(ev.drift.items())),
            tuple((k, tuple(c.rel)) for k, c in sorted(ev.drift_ood.items())),
            tuple((k, tuple(c.rel)) for k, c in sorted(ev.learned_drift.items())))


@pytest.fixture(scope="module")
def done():
    return _run(runs.InProcessExecutor(threads=1))


def test_a_run_sends_every_methods_weights_before_it_ends(done):
    h, weights, _ = done
    kinds = [type(r).__name__ for r in h.queue]
    assert kinds[-1] == "Ended" and kinds[-4:-1] == ["Weights"] * 3
    assert set(weights) == set(SPEC.methods) and all(step == 120 for step, _ in weights.values())
    # plain data: through the wire's dict form and back
    w = next(r for r in h.queue if isinstance(r, runs.Weights))
    again = records.from_dict(records.to_dict(w))
    assert again.method == w.method and set(again.state) == set(w.state)


def test_at_the_runs_own_factor_it_is_the_runs_last_evaluation_bit_for_bit(done):
    _, weights, last = done
    evs = _answer(runs.InProcessExecutor().reevaluate(SPEC, weights, ood_factor=3.0))
    for m in SPEC.methods:
        assert _numbers(records.from_dict(evs[m])) == _numbers(last[m]), m
    assert records.from_dict(evs["truth"]).drift_ood["energy"].rel == last["truth"].drift_ood["energy"].rel


def test_a_new_factor_moves_the_ood_curves_only_and_the_hnn_keeps_its_own_energy(done):
    _, weights, last = done
    ex = runs.InProcessExecutor()
    far = {k: records.from_dict(v) for k, v in _answer(ex.reevaluate(SPEC, weights, ood_factor=10.0)).items()}
    for m in SPEC.methods:
        ev = far[m]
        assert ev.step == 120  # no training step
        assert ev.drift["energy"].rel == last[m].drift["energy"].rel  # in distribution: unchanged
        assert ev.test_mse == last[m].test_mse
        assert ev.drift_ood["energy"].rel != last[m].drift_ood["energy"].rel, m
    # the truth's OOD floor moved with the starts
    assert far["truth"].drift_ood["energy"].rel != last["truth"].drift_ood["energy"].rel
    # far out, the HNN still holds its own learned energy (to the integrator's error), while
    # its true energy is only as good as H_θ there
    own = far["hnn"].learned_drift["energy_ood"].largest
    true = far["hnn"].drift_ood["energy"].largest
    assert own < 1e-3 and true > 10 * own, (own, true)


@pytest.mark.slow
def test_a_kept_problem_is_reused_and_changes_no_number(done, monkeypatch):
    """The slider's jobs are one per method: the second at a factor takes the problem the
    first built (no new data, starts or truth), and answers exactly as a fresh build."""
    _, weights, _ = done
    sysm, cfg = SPEC.build()
    built = []
    real = training.problems.build
    monkeypatch.setattr(training.problems, "build", lambda *a, **k: built.append(1) or real(*a, **k))
    monkeypatch.setattr(training, "_REEVALUATED", training.collections.OrderedDict())
    first = training.reevaluate(sysm, cfg, {"hnn": weights["hnn"]}, ood_factor=5.0)
    again = training.reevaluate(sysm, cfg, {"hnn": weights["hnn"]}, ood_factor=5.0)
    other = training.reevaluate(sysm, cfg, {"penalty": weights["penalty"]}, ood_factor=5.0)
    assert len(built) == 1
    assert _numbers(first["hnn"]) == _numbers(again["hnn"])
    monkeypatch.setattr(training, "_REEVALUATED", training.collections.OrderedDict())
    fresh = training.reevaluate(sysm, cfg, {"penalty": weights["penalty"]}, ood_factor=5.0)
    assert len(built) == 2 and _numbers(fresh["penalty"]) == _numbers(other["penalty"])
    # another factor is another problem, and only the newest few are kept
    for f in (6.0, 7.0, 8.0, 9.0, 10.0):
        training.reevaluate(sysm, cfg, {"hnn": weights["hnn"]}, ood_factor=f)
    assert len(built) == 7 and len(training._REEVALUATED) == training.REEVALUATED_KEPT


def test_a_change_that_would_change_training_is_refused_before_anything_runs(done):
    _, weights, _ = done
    ex = runs.InProcessExecutor()
    with pytest.raises(ParameterError, match="ood_factor.*got lr"):
        ex.reevaluate(SPEC, weights, lr=0.1)
    with pytest.raises(ParameterError, match="ood_factor"):
        ex.reevaluate(SPEC, weights, ood_factor=-2.0)


@pytest.mark.timeout(300)
def test_on_dask_the_reevaluation_runs_on_a_worker_and_equals_the_one_in_process(cluster, done):
    _, weights, _ = done
    ex = runs.DaskExecutor.connect(cluster)
    try:
        futs = ex.reevaluate(SPEC, weights, ood_factor=7.0)
        assert len(futs) == 3  # a move: one task per method, the workers take them side by side
        remote = _answer(futs, timeout=180)
        # an evaluation ahead: one task for every method (one problem built), below the runs
        ahead = ex.reevaluate(SPEC, weights, urgent=False, ood_factor=7.0)
        assert len(ahead) == 1
        remote_ahead = _answer(ahead, timeout=180)
    finally:
        ex.close()
    local = _answer(runs.InProcessExecutor().reevaluate(SPEC, weights, ood_factor=7.0))
    for m in SPEC.methods:
        a, b = records.from_dict(remote[m]), records.from_dict(local[m])
        assert _numbers(a) == _numbers(b), m
        assert _numbers(records.from_dict(remote_ahead[m])) == _numbers(b), m
        assert math.isfinite(a.drift_ood["energy"].largest)
