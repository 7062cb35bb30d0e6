"""The trainer: every method on every system it applies to, the physics claims of the
default short runs, stopping, divergence, determinism, checkpoints."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch

from conserv_core import get_system, methods, training
from conserv_core.systems import ALL_SYSTEMS, flow

PAIRS = [(s, m) for s in ALL_SYSTEMS for m in methods.ALL_METHODS
         if methods.applies(m, get_system(s))]


def tiny(system: str, **kw) -> training.TrainConfig:
    """A config small enough for a smoke test of every pair."""
    values = dict(steps=6, width=16, eval_every=3, n_test=3, horizon=1.0, n_colloc=32, update_every=2)
    values.update(kw)
    return training.make_config(system, **values)


@pytest.mark.slow
@pytest.mark.parametrize("system,method", PAIRS)
def test_every_pair_trains_and_reports(system, method):
    sysm = get_system(system)
    records = []
    tr = training.Trainer(sysm, method, tiny(system), listener=records.append)
    tr.run()
    kinds = [type(r).__name__ for r in records]
    assert kinds[0] == "Evaluation" and kinds[-1] == "Finished", kinds
    assert records[-1].status == "done", records[-1].message
    progress = [r for r in records if isinstance(r, training.Progress)]
    assert [p.step for p in progress] == list(range(1, 7))
    assert all(math.isfinite(p.loss) and math.isfinite(p.violation) for p in progress)
    ev = tr.last_eval
    assert ev.step == 6
    assert set(ev.drift) >= ({"mass"} if sysm.kind == "field" else set(sysm.invariant_names()))
    for curve in ev.drift.values():
        assert len(curve.t) == len(curve.rel) >= 2
    if method in ("hnn", "lnn"):
        assert "energy" in ev.learned_drift
    if method == "auglag":
        assert progress[-1].multipliers["mu"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("system,method", PAIRS)
def test_deterministic_on_cpu(system, method):
    sysm = get_system(system)
    a = training.Trainer(sysm, method, tiny(system, steps=3, eval_every=100)).run()
    b = training.Trainer(sysm, method, tiny(system, steps=3, eval_every=100)).run()
    assert [p.loss for p in a.history] == [p.loss for p in b.history]


@pytest.mark.slow
@pytest.mark.parametrize("system,method", [p for p in PAIRS if p[1] in ("baseline", "auglag", "hnn", "shnn")])
def test_evaluating_more_often_changes_nothing_trained(system, method):
    """Evaluations draw nothing from the run's generators and leave the weights alone:
    evaluating at every step or only at the end trains the same network bit for bit (the
    physics claims rely on it to evaluate only at the end)."""
    sysm = get_system(system)
    every = training.Trainer(sysm, method, tiny(system, steps=4, eval_every=1)).run()
    end = training.Trainer(sysm, method, tiny(system, steps=4, eval_every=4)).run()
    assert [p.loss for p in every.history] == [p.loss for p in end.history]
    a, b = every.model.state_dict(), end.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert every.last_eval.test_mse == end.last_eval.test_mse


@pytest.mark.parametrize("form", ["generic", "mechanical"])
def test_lnn_form_and_angle_coordinates_reach_the_model(form):
    """``lnn_form`` picks the Lagrangian's form, and the system's angle coordinates reach
    the LNN (fed as cos, sin); the double pendulum recommends the mechanical form."""
    sysm = get_system("double_pendulum")
    tr = training.Trainer(sysm, "lnn", training.make_config("double_pendulum", lnn_form=form, steps=1, n_test=2,
                                                            horizon=0.1))
    assert tr.model.form == form and tr.model.angles == (0, 1)
    assert training.make_config("double_pendulum").lnn_form == "mechanical"
    assert training.make_config("pendulum").lnn_form == "generic"
    tr = training.Trainer(get_system("spring"), "lnn", training.make_config("spring", lnn_form=form, steps=1))
    assert tr.model.angles == ()


def test_method_not_applicable_is_refused_with_valid_list():
    with pytest.raises(ValueError, match="valid: .*baseline"):
        training.Trainer(get_system("pendulum"), "divfree", tiny("pendulum"))


def test_stop_from_another_thread_ends_within_one_step():
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", steps=100_000, width=16, eval_every=100_000, n_test=2, horizon=1.0)
    records = []
    tr = training.Trainer(sysm, "baseline", cfg, listener=records.append)
    th = threading.Thread(target=tr.run)
    th.start()
    while len(records) < 20:
        time.sleep(0.01)
    tr.stop()
    asked_at = max(r.step for r in records if isinstance(r, training.Progress))
    th.join(timeout=10)
    assert not th.is_alive()
    fin = records[-1]
    assert isinstance(fin, training.Finished) and fin.status == "stopped"
    assert fin.step <= asked_at + 2  # the step under way when asked, and nothing more
    assert tr.last_eval is not None  # curves from before the stop survive


#: a stop must end any long loop this soon (the event is set at STOP_AFTER)
STOP_AFTER, STOP_WITHIN = 0.3, 1.5


def _stopped_soon(build, ev: threading.Event) -> float:
    """Set ``ev`` from a timer at STOP_AFTER s and run ``build()``, which must raise
    :class:`training.Stopped`; returns the seconds it took."""
    timer = threading.Timer(STOP_AFTER, ev.set)
    t0 = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(training.Stopped):
            build()
    finally:
        timer.cancel()
    return time.perf_counter() - t0


def test_stop_during_a_long_truth_rollout_ends_construction_promptly():
    # 100 000 RK4 steps of the true pendulum: ~10 s without the stop
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", horizon=1e3, dt=0.01, n_test=2, steps=10, width=8)
    ev = threading.Event()
    took = _stopped_soon(lambda: training.Comparison(sysm, ["baseline", "hnn"], cfg, stop_event=ev,
                                                     max_work=1e12), ev)
    assert took < STOP_WITHIN


def test_stop_during_long_data_generation_ends_construction_promptly():
    # 10 000 trajectories of 10 000 reference steps each: seconds of integrators.solve
    sysm = get_system("pendulum", n_traj=10_000, t_span=100.0, n_points=2)
    cfg = training.make_config("pendulum", n_test=2, steps=10, width=8, horizon=1.0)
    ev = threading.Event()
    took = _stopped_soon(lambda: training.Trainer(sysm, "baseline", cfg, stop_event=ev, max_work=1e12), ev)
    assert took < STOP_WITHIN


def test_stop_during_a_long_flow_solve_ends_construction_promptly():
    # the 128² truth to t=20, ~3 000 solver steps (inside the first velocity lookup,
    # behind the solver cache): ~10 s without the stop
    sysm = get_system("flow", grid=128, t_end=20.0, horizon=20.0, n_samples=64)
    cfg = training.make_config("flow", steps=10, width=8, n_colloc=16)
    ev = threading.Event()
    cached = flow._solve_cached.cache_info().currsize
    took = _stopped_soon(lambda: training.Trainer(sysm, "baseline", cfg, stop_event=ev), ev)
    assert took < STOP_WITHIN
    assert flow._solve_cached.cache_info().currsize == cached  # no half-solved entry kept


def test_stop_during_an_evaluation_ends_the_run_as_stopped_keeping_records():
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", steps=50, eval_every=10, width=8, n_test=2, horizon=1.0)
    tr = training.Trainer(sysm, "baseline", cfg)
    gen = tr.iter_records()
    records = [next(gen)]  # the first evaluation, at the normal horizon
    # later evaluations roll out 30 000 steps (several seconds each without the check);
    # the truth stays short, so set-up stayed cheap
    tr.problem.eval_steps, tr.problem.eval_every_save = 30_000, 1000
    ev = tr.stop_event
    timer = threading.Timer(STOP_AFTER, ev.set)
    t0 = time.perf_counter()
    timer.start()
    records += list(gen)
    took = time.perf_counter() - t0
    timer.cancel()
    assert took < STOP_WITHIN
    fin = records[-1]
    assert isinstance(fin, training.Finished) and fin.status == "stopped", fin
    assert "during an evaluation" in fin.message and fin.step == 10
    assert [r.step for r in records if isinstance(r, training.Progress)] == list(range(1, 11))
    assert isinstance(records[0], training.Evaluation) and tr.evaluations == [records[0]]
    assert tr.model.training  # evaluation mode was undone


def test_diverging_learning_rate_stops_with_nan_message_and_keeps_results():
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", steps=400, lr=1.0, optimizer="sgd", width=16, eval_every=1,
                               n_test=2, horizon=0.5)
    records = []
    tr = training.Trainer(sysm, "baseline", cfg, listener=records.append)
    tr.run()
    fin = records[-1]
    assert fin.status == "diverged", fin
    assert "nan" in fin.message.lower() or "inf" in fin.message.lower()
    assert "learning rate" in fin.message
    # weights restored to the last finite ones, earlier evaluations intact
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())
    evals = [r for r in records if isinstance(r, training.Evaluation)]
    assert evals and tr.last_eval is evals[-1]


def test_checkpoint_round_trip(tmp_path):
    sysm = get_system("pendulum")
    tr = training.Trainer(sysm, "hnn", tiny("pendulum")).run()
    path = tmp_path / "hnn.pt"
    tr.save(path)
    back = training.load_checkpoint(path)
    z = torch.randn(5, 2, dtype=back.dtype)
    assert torch.allclose(back.model(z), tr.model(z))
    assert back.method.key == "hnn" and back.step_count == tr.step_count


def test_comparison_interleaves_methods_and_emits_truth_first():
    sysm = get_system("pendulum")
    records = []
    comp = training.Comparison(sysm, ["baseline", "hnn"], tiny("pendulum"), listener=records.append)
    comp.run()
    assert records[0].method == "truth"
    steps = [(r.method, r.step) for r in records if isinstance(r, training.Progress)]
    # round-robin: both methods reach step 1 before either reaches step 2
    first_two = [m for m, s in steps[:2]]
    assert sorted(first_two) == ["baseline", "hnn"]
    finished = [r for r in records if isinstance(r, training.Finished)]
    assert sorted(f.method for f in finished) == ["baseline", "hnn"]


def test_bad_config_refused_naming_parameter():
    with pytest.raises(ValueError, match="steps"):
        training.make_config("pendulum", steps=0)
    with pytest.raises(ValueError, match="lr"):
        training.make_config("pendulum", lr=float("nan"))
    with pytest.raises(ValueError, match="invariants"):
        training.Trainer(get_system("pendulum"), "penalty", tiny("pendulum", invariants=["momentum"]))


def test_rollout_step_too_large_for_implicit_midpoint_is_refused_naming_dt():
    # the truth's own rollout cannot converge with this step: refused at set-up, with the
    # parameter named, rather than an exception deep inside a training thread
    sysm = get_system("pendulum")
    cfg = tiny("pendulum", integrator="implicit_midpoint", dt=2.0, horizon=10.0)
    with pytest.raises(ValueError, match="dt=2 is too large for a implicit_midpoint"):
        training.Trainer(sysm, "hnn", cfg)


@pytest.mark.parametrize("integrator", ["rk4", "leapfrog", "implicit_midpoint"])
def test_rollout_integrator_choice_changes_only_the_integrator_floor(integrator):
    # the truth rolled out with each integrator: a symplectic one keeps the pendulum's
    # energy error bounded at a level set by dt, rk4's is tiny at this step
    sysm = get_system("pendulum")
    tr = training.Trainer(sysm, "baseline", tiny("pendulum", integrator=integrator, horizon=20.0, dt=0.1))
    floor = training.truth_evaluation(tr).drift["energy"].final
    assert floor < (1e-2 if integrator != "rk4" else 5e-3), floor


# ---------------------------------------------------------------------------------------
# play / pause / step
# ---------------------------------------------------------------------------------------
def _pausable(seed: int = 3) -> tuple:
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", steps=60, eval_every=20, width=16, n_test=4, horizon=2.0, seed=seed,
                               device="cpu")
    return sysm, cfg


def numbers(records) -> list[tuple]:
    """Every number a run reports that training decides (no timings), in order."""
    out = []
    for r in records:
        if isinstance(r, training.Evaluation):
            curves = {**r.drift, **{f"{k}_ood": c for k, c in r.drift_ood.items()},
                      **{f"learned_{k}": c for k, c in r.learned_drift.items()}}
            if r.trajectory_error is not None:
                curves["trajectory"] = r.trajectory_error
            out.append(("eval", r.method, r.step, r.test_mse, r.violation, r.violation_ood,
                        tuple((k, tuple(c.t), tuple(c.rel)) for k, c in sorted(curves.items()))))
        elif isinstance(r, training.Progress):
            out.append(("progress", r.method, r.step, r.loss, r.data_loss, r.constraint_loss, r.violation))
        elif isinstance(r, training.Finished):
            out.append(("finished", r.method, r.status, r.step))
    return out


def _drive(actions, seed: int = 3):
    """Run a comparison whose gate is paused from the start; at each wait, do the next of
    ``actions`` (called with the gate and the stop event). Returns the records and, for
    each wait, the Paused record and how many records came before it."""
    import queue

    sysm, cfg = _pausable(seed)
    records, waits = [], queue.Queue()

    def listen(rec):
        records.append(rec)
        if isinstance(rec, training.Paused):
            waits.put((rec, len(records) - 1))

    gate, stop = training.Gate(), threading.Event()
    gate.pause()
    comp = training.Comparison(sysm, ["baseline", "hnn"], cfg, listener=listen, stop_event=stop, gate=gate)
    run = threading.Thread(target=comp.run, daemon=True)
    run.start()
    seen = []
    for act in actions:
        seen.append(waits.get(timeout=60))
        act(gate, stop)
    run.join(120)
    assert not run.is_alive(), "the run did not end"
    assert waits.empty(), "the run waited more often than the test acted"
    return records, seen


def _step(gate, stop):
    gate.step()


def _resume(gate, stop):
    gate.resume()


@pytest.mark.slow
def test_pause_step_resume_ends_bit_identical_to_an_uninterrupted_run():
    sysm, cfg = _pausable()
    plain = []
    training.Comparison(sysm, ["baseline", "hnn"], cfg, listener=plain.append).run()
    records, waits = _drive([_step, _step, _resume])
    assert [w.step for w, _ in waits] == [0, 20, 40]
    assert [w.grants for w, _ in waits] == [0, 1, 2]
    assert [f.status for f in records if isinstance(f, training.Finished)] == ["done", "done"]
    assert numbers(records) == numbers(plain)
    # the check tells seeds apart
    other = []
    training.Comparison(sysm, ["baseline", "hnn"], _pausable(seed=4)[1], listener=other.append).run()
    assert numbers(other) != numbers(plain)


def test_a_step_runs_exactly_one_evaluation_interval():
    records, waits = _drive([_step, _resume])
    (first, i0), (second, i1) = waits
    before = records[:i0]
    # paused at once: the truth and every method's step-0 curves, no step yet
    assert [(type(r).__name__, r.method, r.step) for r in before] == [
        ("Evaluation", "truth", 0), ("Evaluation", "baseline", 0), ("Evaluation", "hnn", 0)]
    between = records[i0 + 1:i1]
    progress = [(r.method, r.step) for r in between if isinstance(r, training.Progress)]
    assert sorted(progress) == sorted((m, s) for m in ("baseline", "hnn") for s in range(1, 21))
    # it waits with the step-20 curves of both methods drawn, and nothing of step 21
    assert sorted((r.method, r.step) for r in between if isinstance(r, training.Evaluation)) == [
        ("baseline", 20), ("hnn", 20)]
    assert isinstance(between[-1], training.Evaluation)
    assert second.step == 20


def test_stop_while_paused_ends_the_run_as_stopped_keeping_its_records():
    def stop(gate, ev):
        ev.set()

    records, waits = _drive([_step, stop])
    fins = [r for r in records if isinstance(r, training.Finished)]
    assert [(f.method, f.status, f.step) for f in fins] == [("baseline", "stopped", 20), ("hnn", "stopped", 20)]
    assert "stopped at step 20" in fins[0].message
    assert sorted((r.method, r.step) for r in records if isinstance(r, training.Evaluation)
                  and r.method != "truth") == [("baseline", 0), ("baseline", 20), ("hnn", 0), ("hnn", 20)]


def test_a_gate_mirrored_by_polling_grants_each_step_once():
    here, there = training.Gate(), training.Gate()
    here.step()
    for _ in range(3):  # the same state read three times
        there.mirror(here.state())
    stop = threading.Event()
    there.hold(stop)  # the one granted interval
    waited = []
    threading.Timer(0.2, stop.set).start()
    there.hold(stop, on_wait=waited.append)  # paused again, no grant left: waits (until the stop)
    assert waited == [1]
    here.resume()
    there.mirror(here.state())
    there.hold(threading.Event())  # plays
    assert not there.paused
