"""The run service: RunSpecs, the in-process and Dask executors, reproducibility under
concurrency, stop, queue order, lost workers.

The Dask tests run against a real scheduler and real workers, started as separate
processes (``dask scheduler`` / ``dask worker``) on 127.0.0.1 by the ``cluster`` fixture in
conftest.py, the way a room's cluster is started; one test also uses the ``LocalCluster``
that ``conserv serve`` starts by default.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
import torch

from conserv_core import models, records, runs, training
from conserv_core.systems import ParameterError, get_system

pytestmark = pytest.mark.timeout(300)


def small_spec(seed: int = 0, steps: int = 40, methods=("baseline", "hnn"), **config) -> runs.RunSpec:
    cfg = dict(steps=steps, width=16, eval_every=20, n_test=4, horizon=2.0, seed=seed, device="cpu")
    cfg.update(config)
    return runs.RunSpec("pendulum", {}, tuple(methods), cfg)


def tiny_spec(seed: int = 0, **config) -> runs.RunSpec:
    """One method, a few steps: a round's run where only where it runs matters."""
    return small_spec(seed=seed, **{"steps": 20, "methods": ("hnn",), "eval_every": 10, **config})


def evaluations(handle: runs.RunHandle) -> list[training.Evaluation]:
    """The run's evaluations; of a run that started over (``runs.Restarted``), its last attempt's."""
    recs = list(handle.queue)
    starts = [i for i, r in enumerate(recs) if isinstance(r, runs.Restarted)]
    return [r for r in recs[starts[-1] if starts else 0:] if isinstance(r, training.Evaluation)]


def fingerprint(handle: runs.RunHandle) -> list[tuple]:
    """Every number a run's evaluations report, for exact comparison."""
    out = []
    for ev in evaluations(handle):
        for q, c in sorted(ev.drift.items()):
            out.append((ev.method, ev.step, q, tuple(c.rel)))
        out.append((ev.method, ev.step, "mse", ev.test_mse))
    return out


def kinds(handle: runs.RunHandle) -> list[str]:
    return [type(r).__name__ for r in handle.queue]


# ---------------------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------------------
def test_spec_round_trips_and_rebuilds_the_same_run():
    sysm = get_system("pendulum", damping=0.1)
    cfg = training.make_config("pendulum", steps=30, seed=3)
    spec = runs.RunSpec.of(sysm, ["baseline", "hnn"], cfg)
    again = runs.RunSpec.from_dict(spec.to_dict())
    assert again == spec
    s2, c2 = again.build()
    assert s2.damping == 0.1 and c2.steps == 30 and c2.seed == 3
    assert spec.total_steps == 60


@pytest.mark.parametrize("spec,match", [
    (runs.RunSpec("pendulum", {}, ("divfree",), {}), "divfree"),
    (runs.RunSpec("pendulum", {}, (), {}), "methods must name"),
    (runs.RunSpec("nosuch", {}, ("baseline",), {}), "system must be one of"),
    (runs.RunSpec("pendulum", {"mass": -1.0}, ("baseline",), {}), "mass"),
    (runs.RunSpec("pendulum", {}, ("baseline",), {"steps": 0}), "steps"),
])
def test_bad_specs_are_refused_before_any_work(spec, match):
    ex = runs.InProcessExecutor()
    with pytest.raises(ParameterError, match=match):
        ex.submit(spec)
    assert ex.active() == []


# ---------------------------------------------------------------------------------------
# reproducible under concurrency (no global RNG)
# ---------------------------------------------------------------------------------------
def test_weights_come_from_the_run_generator_not_the_global_one():
    a = models.build("hnn", state_dim=2, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(999)  # another thread's draw would do the same to a global seed
    torch.rand(17)
    b = models.build("hnn", state_dim=2, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    # and they are torch's default initialisation, as seeding the global generator gave
    torch.manual_seed(5)
    c = models.build("hnn", state_dim=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_init_weights_refuses_layers_it_does_not_know():
    m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
    with pytest.raises(TypeError, match="nn.Linear"):
        models.init_weights(m, torch.Generator())


@pytest.mark.slow
def test_six_concurrent_runs_with_one_seed_are_bit_identical():
    ex = runs.InProcessExecutor(threads=1)
    handles = [ex.submit(small_spec(seed=11)) for _ in range(6)]
    for h in handles:
        assert h.finished.wait(120), "a run did not finish"
    prints = [fingerprint(h) for h in handles]
    assert prints[0] and all(p == prints[0] for p in prints[1:])
    other = ex.submit(small_spec(seed=12))
    assert other.finished.wait(120)
    assert fingerprint(other) != prints[0]  # the check can tell seeds apart


def test_a_run_reports_in_order_and_ends_with_ended():
    h = runs.InProcessExecutor().submit(small_spec())
    assert h.finished.wait(120)
    k = kinds(h)
    assert k[:2] == ["Started", "SetupDone"] and k[-1] == "Ended"
    assert k.count("Finished") == 2 and "Evaluation" in k and "Progress" in k
    assert set(h.latest) == {"baseline", "hnn"} and h.latest["hnn"].step == 40


def test_a_failing_run_is_a_record_not_an_exception(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no data today")

    monkeypatch.setattr(training.Comparison, "from_plan", broken)
    h = runs.InProcessExecutor().submit(small_spec())
    assert h.finished.wait(30)
    failed = [r for r in h.queue if isinstance(r, runs.Failed)]
    assert failed and "no data today" in failed[0].message and kinds(h)[-1] == "Ended"


def test_in_process_stop_is_prompt():
    h = runs.InProcessExecutor().submit(small_spec(steps=200_000, eval_every=100_000))
    while not any(isinstance(r, training.Progress) for r in list(h.queue)):
        time.sleep(0.01)
    t0 = time.perf_counter()
    h.stop()
    assert h.finished.wait(5)
    assert time.perf_counter() - t0 < 1.0
    fins = [r for r in h.queue if isinstance(r, training.Finished)]
    assert fins and all(f.status == "stopped" for f in fins)


def _truth_takes_seconds() -> runs.RunSpec:
    # the truth rollout alone is ~10 s of RK4: Stop lands in the middle of set-up
    return runs.RunSpec("pendulum", {}, ("baseline", "hnn"),
                        dict(horizon=1e3, dt=0.01, n_test=2, steps=10, width=8, device="cpu"))


def _stops_during_set_up(ex: runs.Executor) -> None:
    h = ex.submit(_truth_takes_seconds())
    deadline = time.monotonic() + 60
    while h.phase != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    t0 = time.perf_counter()
    h.stop()
    assert h.finished.wait(5), "the run did not end after Stop"
    took = time.perf_counter() - t0
    recs = list(h.queue)
    assert not any(isinstance(r, runs.Failed) for r in recs), recs
    assert not any(isinstance(r, runs.SetupDone) for r in recs), "set-up finished before the stop: test too weak"
    fins = [r for r in recs if isinstance(r, training.Finished)]
    assert [(f.method, f.status) for f in fins] == [("baseline", "stopped"), ("hnn", "stopped")]
    assert took < 1.0, f"stop during set-up took {took:.2f} s"


def test_stop_during_the_truth_rollout_ends_the_run_within_a_second():
    _stops_during_set_up(runs.InProcessExecutor())


# ---------------------------------------------------------------------------------------
# play / pause / step
# ---------------------------------------------------------------------------------------
def _nth_pause(h: runs.RunHandle, n: int) -> records.Paused:
    """The run's ``n``-th wait (1-based), once it has said so."""
    deadline = time.monotonic() + 120
    while True:
        waits = [r for r in list(h.queue) if isinstance(r, records.Paused)]
        if len(waits) >= n:
            return waits[n - 1]
        assert not h.finished.is_set(), f"the run ended without a wait {n}: {kinds(h)}"
        assert time.monotonic() < deadline, kinds(h)
        time.sleep(0.02)


def _pause_step_resume(ex: runs.Executor, spec: runs.RunSpec) -> runs.RunHandle:
    """Pause a run as it starts, step it twice, resume it; each step runs one interval."""
    h = ex.submit(spec)
    h.pause()
    first = _nth_pause(h, 1)
    for n in (2, 3):
        h.step()
        assert _nth_pause(h, n).step == first.step + (n - 1) * 20
    h.resume()
    assert h.finished.wait(120), kinds(h)
    return h


def test_a_paused_stepped_and_resumed_run_equals_an_uninterrupted_one():
    ex = runs.InProcessExecutor(threads=1)
    plain = ex.submit(small_spec(seed=6, steps=100))
    assert plain.finished.wait(120)
    h = _pause_step_resume(ex, small_spec(seed=6, steps=100))
    assert [f.status for f in h.queue if isinstance(f, training.Finished)] == ["done", "done"]
    assert fingerprint(h) == fingerprint(plain)
    # after the end, the controls do nothing (and raise nothing)
    h.pause(), h.step(), h.resume()


# ---------------------------------------------------------------------------------------
# a real Dask cluster: scheduler and workers as processes on 127.0.0.1
# ---------------------------------------------------------------------------------------
@pytest.fixture
def dask_ex(cluster):
    ex = runs.DaskExecutor.connect(cluster)
    yield ex
    ex.close()


def test_dask_runs_equal_in_process_runs_bit_for_bit(dask_ex):
    lone = runs.InProcessExecutor(threads=1).submit(small_spec(seed=4))
    assert lone.finished.wait(120)
    handles = [dask_ex.submit(small_spec(seed=4)) for _ in range(6)]
    for h in handles:
        assert h.finished.wait(180), kinds(h)
    assert {h.where for h in handles} != {"local"} and all(h.where.startswith("tcp://") for h in handles)
    assert len({h.where for h in handles}) == 2  # both workers took runs
    for h in handles:
        assert kinds(h)[-1] == "Ended" and not [r for r in h.queue if isinstance(r, runs.Failed)]
        assert fingerprint(h) == fingerprint(lone)


def test_dask_queue_is_in_arrival_order_with_places(dask_ex):
    long = [dask_ex.submit(small_spec(steps=200_000, eval_every=100_000, seed=i)) for i in range(2)]
    deadline = time.monotonic() + 60
    while not all(h.phase == "running" for h in long):
        assert time.monotonic() < deadline, [h.phase for h in long]
        time.sleep(0.05)
    queued = [dask_ex.submit(small_spec(seed=10 + i)) for i in range(3)]
    assert [h.place()[0] for h in queued] == [0, 1, 2]
    assert all(h.place()[1] > 0 for h in queued)
    # pressing Train again replaces a queued run and keeps its place
    again = dask_ex.submit(small_spec(seed=21), replaces=queued[1])
    assert again.place()[0] == 1 and queued[1].stop_requested
    assert queued[1].finished.wait(10)
    time.sleep(0.5)  # the replacement reaches the scheduler before a slot frees

    def where(dask_scheduler=None):
        return {k: (ts.state, ts.processing_on.address if ts.processing_on else None)
                for k, ts in dask_scheduler.tasks.items() if ts.state in ("queued", "processing")}

    before = dask_ex.client.run_on_scheduler(where)
    for h in long:
        h.stop()
    for h in (queued[0], again, queued[2]):
        assert h.finished.wait(180), kinds(h)
    names = {id(queued[0]): "first", id(again): "replacement", id(queued[2]): "third"}
    order = sorted((queued[0], again, queued[2]), key=lambda h: h.started_at)
    # two workers: the first two start together, the third after one of them
    assert order[-1] is queued[2], ([(names[id(h)], round(h.started_at - order[0].started_at, 3), h.where)
                                     for h in order], {names.get(id(h), "long"): before.get(f"conserv-run-{h.id}")
                                                       for h in (*long, queued[0], again, queued[2])})
    assert [r for r in queued[1].queue if isinstance(r, runs.Started)] == []  # never ran


def test_dask_stop_reaches_the_worker_within_a_second(dask_ex):
    h = dask_ex.submit(small_spec(steps=200_000, eval_every=100_000))
    deadline = time.monotonic() + 60
    while not any(isinstance(r, training.Progress) for r in list(h.queue)):
        assert time.monotonic() < deadline, kinds(h)
        time.sleep(0.02)
    t0 = time.perf_counter()
    h.stop()
    assert h.finished.wait(10)
    took = time.perf_counter() - t0
    assert took < 1.0, f"stop took {took:.2f} s"
    fins = [r for r in h.queue if isinstance(r, training.Finished)]
    assert len(fins) == 2 and all(f.status == "stopped" for f in fins)
    assert max(f.step for f in fins) > 0  # the curves so far were sent before the stop


def test_dask_stop_during_the_truth_rollout_reaches_the_worker(dask_ex):
    _stops_during_set_up(dask_ex)


def test_dask_pause_step_resume_equals_an_uninterrupted_run(dask_ex):
    plain = runs.InProcessExecutor(threads=1).submit(small_spec(seed=7, steps=100))
    assert plain.finished.wait(120)
    h = _pause_step_resume(dask_ex, small_spec(seed=7, steps=100))
    assert h.where.startswith("tcp://")
    assert [f.status for f in h.queue if isinstance(f, training.Finished)] == ["done", "done"]
    assert fingerprint(h) == fingerprint(plain)


def test_dask_run_paused_in_the_queue_starts_paused_and_stops(dask_ex):
    long = [dask_ex.submit(small_spec(steps=200_000, eval_every=100_000, seed=60 + i)) for i in range(2)]
    deadline = time.monotonic() + 60
    while not all(h.phase == "running" for h in long):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waiting = dask_ex.submit(small_spec(seed=8))
    assert waiting.phase == "queued"
    waiting.pause()
    for h in long:
        h.stop()
    assert _nth_pause(waiting, 1).step == 0  # its step-0 curves, no step made
    assert not any(isinstance(r, training.Progress) for r in waiting.queue)
    waiting.stop()
    assert waiting.finished.wait(10), kinds(waiting)
    fins = [r for r in waiting.queue if isinstance(r, training.Finished)]
    assert [(f.status, f.step) for f in fins] == [("stopped", 0), ("stopped", 0)]
    assert len(evaluations(waiting)) == 3  # the truth's and both methods' step-0 curves stay


def _paused_then_killed(ex: runs.DaskExecutor, h: runs.RunHandle) -> str:
    """Kill the worker process that holds ``h`` paused; returns its address."""
    _nth_pause(h, 1)
    where = h.where
    pid = ex.client.run(os.getpid, workers=[where])[where]
    os.kill(pid, signal.SIGKILL)
    return where


@pytest.mark.slow
def test_a_killed_workers_run_starts_over_elsewhere_with_the_same_curves(dask_ex):
    lone = runs.InProcessExecutor(threads=1).submit(tiny_spec(seed=5, steps=200, eval_every=20))
    assert lone.finished.wait(120)
    # paused at an evaluation: killed mid-run at a known point, the test's time spent waiting
    doomed = dask_ex.submit(tiny_spec(seed=5, steps=200, eval_every=20))
    doomed.pause()
    others = [dask_ex.submit(tiny_spec(seed=30 + i)) for i in range(2)]
    lost = _paused_then_killed(dask_ex, doomed)
    # the scheduler sends the run again; it starts over, still paused as its student left it
    again = _nth_pause(doomed, 2)
    assert again.step == 0 and doomed.restarts == 1
    restarted = [r for r in doomed.queue if isinstance(r, runs.Restarted)]
    assert len(restarted) == 1 and restarted[0].where == doomed.where != lost
    assert all(p.step == 0 for p in doomed.latest.values())  # the lost attempt's steps are gone
    doomed.resume()
    assert doomed.finished.wait(120), kinds(doomed)
    assert not [r for r in doomed.queue if isinstance(r, runs.Failed)], kinds(doomed)
    assert [f.status for f in doomed.queue if isinstance(f, training.Finished)] == ["done"]
    assert fingerprint(doomed) == fingerprint(lone)
    for h in others:
        assert h.finished.wait(180), kinds(h)
        assert not [r for r in h.queue if isinstance(r, runs.Failed)], kinds(h)
    dask_ex.client.wait_for_workers(2, timeout=60)  # the nanny restarted it


@pytest.mark.slow
def test_a_worker_joining_mid_round_takes_queued_runs_and_leaving_hands_them_back(dask_ex, join_worker):
    lone = runs.InProcessExecutor(threads=1).submit(tiny_spec(seed=4))
    assert lone.finished.wait(120)
    # the room's two workers held by paused runs: the round's runs wait at the scheduler
    held = [dask_ex.submit(tiny_spec(seed=70 + i, steps=2000, eval_every=20)) for i in range(2)]
    for h in held:
        h.pause()
    for h in held:
        _nth_pause(h, 1)
    # the head of the queue paused too, so the queue stands still while the estimate is read
    first = dask_ex.submit(tiny_spec(seed=4))
    first.pause()
    rest = [dask_ex.submit(tiny_spec(seed=4)) for _ in range(2)]
    assert dask_ex.slots == 2
    ahead, wait = rest[-1].place()
    assert ahead == 2 and wait > 0
    room = set(dask_ex.client.nthreads())
    join_worker()
    _nth_pause(first, 1)  # taken at once by the newcomer, the only free worker
    newcomer = set(dask_ex.client.nthreads()) - room
    assert newcomer == {first.where}, (newcomer, first.where)
    deadline = time.monotonic() + 10  # the client refreshes the scheduler's identity every 2 s
    while dask_ex.slots != 3:
        assert time.monotonic() < deadline, dask_ex.slots
        time.sleep(0.1)
    # the same work ahead, shared by three workers instead of two
    assert rest[-1].place() == (1, pytest.approx(wait * 2 / 3))
    # and it leaves again, retired with the run on it: the run goes back to the head of the
    # queue and starts over on one of the room's own workers
    dask_ex.client.retire_workers([first.where], close_workers=True)
    while dask_ex.slots != 2:
        assert time.monotonic() < deadline + 10, dask_ex.slots
        time.sleep(0.1)
    first.resume()
    for h in held:
        h.stop()
    for h in (first, *rest):
        assert h.finished.wait(120), kinds(h)
        assert fingerprint(h) == fingerprint(lone)
    assert first.restarts == 1 and first.where in room
    for h in held:
        assert h.finished.wait(30), kinds(h)


@pytest.mark.slow
def test_local_cluster_executor_runs_and_reports_its_dashboard():
    ex = runs.DaskExecutor.local(n_workers=1, dashboard_address="127.0.0.1:0")
    try:
        assert ex.slots == 1 and ex.dashboard_link.startswith("http://127.0.0.1:")
        # the workers keep glibc's adaptive malloc: Dask's Nanny default (a 64 KiB trim
        # threshold) made every training step ~1.6× slower on a worker than in this process
        assert set(ex.client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
        h = ex.submit(small_spec(steps=10, eval_every=10))
        assert h.finished.wait(120), kinds(h)
        assert kinds(h)[-1] == "Ended" and h.latest["hnn"].step == 10
        # nothing of the run is left on the scheduler once it ended
        deadline = time.monotonic() + 10
        topic = f"conserv-run-{h.id}"
        def left(dask_scheduler=None):
            events = dask_scheduler.extensions["events"]._events
            variables = dask_scheduler.extensions["variables"].variables
            return [n for n in [*dask_scheduler._broker._topics, *events, *variables] if n.startswith(topic)]

        while ex.client.run_on_scheduler(left):
            assert time.monotonic() < deadline, ex.client.run_on_scheduler(left)
            time.sleep(0.1)
    finally:
        ex.close()


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def test_dask_late_events_of_a_replaced_run_are_ignored_quietly(dask_ex):
    """A replaced run's worker sends batches until its stop lands; one the scheduler sent
    before our unsubscription reached it arrives after the run was forgotten here. Dask's
    client logged a traceback for each (``No event handler known for topic``: 137 when
    200 Train clicks arrived at once). Which batch is late is the scheduler's race, so the
    late batch is sent here as the scheduler sends one."""
    logged = _Lines()
    # the client's logger does not propagate to the root, where caplog listens
    loggers = [logging.getLogger(n) for n in ("distributed", "distributed.client")]
    for lg in loggers:
        lg.addHandler(logged)
    try:
        first = dask_ex.submit(small_spec(steps=200_000, eval_every=100_000))
        deadline = time.monotonic() + 60
        while first.phase != "running" or not first.latest:
            assert time.monotonic() < deadline, kinds(first)
            time.sleep(0.02)
        second = dask_ex.submit(small_spec(steps=10, eval_every=10, seed=1), replaces=first)
        assert first.finished.wait(10), kinds(first)
        assert second.finished.wait(120), kinds(second)
        ended = len(first.queue)
        time.sleep(0.3)  # the run is forgotten here (unsubscribed)

        # nested: the scheduler cannot import this test module; cloudpickle sends it by value
        def _send_late_event(topic: str, client_id: str, dask_scheduler=None) -> None:
            """Send ``client_id`` a batch of ``topic`` the way the scheduler's broker forwards a
            worker's event to a subscribed client (distributed 2026.x's ``{"op": "event"}``)."""
            import pickle

            batch = ([records.to_dict(runs.Ended())], {})
            msg = {"op": "event", "topic": topic, "event": (time.time(), pickle.dumps(batch))}
            dask_scheduler.send_all({client_id: [msg]}, worker_msgs={})

        dask_ex.client.run_on_scheduler(_send_late_event, runs._topic(first.id), dask_ex.client.id)
        time.sleep(0.5)
        assert len(first.queue) == ended and kinds(first)[-1] == "Ended"
        assert [f.status for f in second.queue if isinstance(f, training.Finished)] == ["done", "done"]
    finally:
        for lg in loggers:
            lg.removeHandler(logged)
    assert not [line for line in logged.lines if "conserv-run-" in line or "event handler" in line], logged.lines


def test_workers_started_by_others_get_their_malloc_thresholds_raised(dask_ex):
    # `dask worker` (a room's own cluster) starts workers under a Nanny that sets
    # MALLOC_TRIM_THRESHOLD_; WorkerSetup raises the mmap and trim thresholds there
    def read():
        from conserv_core import runs as r

        return os.environ.get("MALLOC_TRIM_THRESHOLD_"), r.MALLOC_FIXED

    seen = dask_ex.client.run(read)
    assert len(seen) == 2 and all(env and fixed for env, fixed in seen.values()), seen


def test_dask_runs_wait_at_the_scheduler_even_in_a_small_room(dask_ex):
    # two workers busy, one run waiting: with Dask's default heuristic a group this small is
    # not queued at the scheduler but sent to a busy worker, where it would wait behind that
    # worker's run even after the other worker frees up
    long = [dask_ex.submit(small_spec(steps=200_000, eval_every=100_000, seed=40 + i)) for i in range(2)]
    deadline = time.monotonic() + 60
    while not all(h.phase == "running" for h in long):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waiting = dask_ex.submit(small_spec(seed=50))
    time.sleep(0.5)

    def states(dask_scheduler=None, key=f"conserv-run-{waiting.id}"):
        ts = dask_scheduler.tasks.get(key)
        return ts.state if ts is not None else None

    assert dask_ex.client.run_on_scheduler(states) == "queued"
    long[0].stop()  # whichever worker frees first takes it
    assert waiting.finished.wait(120), kinds(waiting)
    assert waiting.where == long[0].where
    long[1].stop()
    assert long[1].finished.wait(30)


def test_records_cross_the_wire_as_plain_data_and_come_back_equal():
    """What a worker sends is plain data (records.to_dict): every record kind of a real
    run round-trips field for field, curves and view arrays included."""
    import numpy as np

    from conserv_core import records

    h = runs.InProcessExecutor(threads=1).submit(small_spec(steps=6, eval_every=3))
    assert h.finished.wait(120)
    assert {type(r).__name__ for r in h.queue} >= {"Started", "SetupDone", "Progress", "Evaluation",
                                                   "Finished", "Ended"}
    for rec in h.queue:
        d = records.to_dict(rec)
        assert not any(isinstance(v, training.metrics.Curve) for v in d.values())
        back = records.from_dict(d)
        assert type(back) is type(rec)
        for f in rec.__dataclass_fields__:
            a, b = getattr(rec, f), getattr(back, f)
            if f == "view":
                assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a
                                                     if isinstance(a[k], np.ndarray))
            else:
                assert a == b, f
