"""Runs as plain data, and the executors that carry them out.

A :class:`RunSpec` is everything a run is: the system's key and parameters, the methods,
and the :class:`~conserv_core.training.TrainConfig` values, as plain, serialisable data.
Whoever executes it rebuilds the system, the models and the data from it, so the same
spec gives bit-identical records in any process: every random draw comes from a
generator seeded from the spec's seed, never from torch's global one.

Executors share one interface, :meth:`Executor.submit` ``(spec) -> RunHandle``:

* :class:`InProcessExecutor` trains on a daemon thread of this process (notebooks, tests,
  single CLI runs: no cluster needed);
* :class:`DaskExecutor` sends the run to a Dask distributed cluster (the dashboard server
  by default, on a ``LocalCluster`` of worker processes; a real cluster by address). The
  server process then only draws: it never trains.

A :class:`RunHandle` is what the caller holds: a queue of records in the order the run
made them (``training.Progress`` thinned to about :data:`MAX_PROGRESS` per method,
``Evaluation``, ``Finished``, plus :class:`Started`, :class:`SetupDone`, :class:`Failed`,
:class:`Restarted` where its worker left and it started over elsewhere, and, last,
:class:`Ended`), the latest progress per method, :meth:`RunHandle.stop`, and
:meth:`RunHandle.pause` / :meth:`~RunHandle.step` / :meth:`~RunHandle.resume` (a paused run
waits at its next evaluation boundary and says so with a ``records.Paused`` record).

From a worker, records travel in batches through Dask's topic events
(``Worker.log_event`` → ``Client.subscribe_topic``): pushed, not polled, a few ms from
worker to client. A stop crosses the other way through a ``distributed.Event`` that the
run long-polls, so it lands within a training step. Pause, step and resume cross as the
run's :class:`training.Gate` state, plain data in a ``distributed.Variable`` that the same
watcher reads once per poll: no call per training step.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import pickle
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from conserv_core import methods, problems, records, training
from conserv_core.systems import ALL_SYSTEMS, ParameterError, System, get_system

#: at most this many progress records per method leave a run (the newest one always does)
MAX_PROGRESS = 600
#: a worker sends its records at least this often while a run goes on (seconds); an
#: evaluation or the end is sent at once
BATCH_S = 0.1
#: how long a run waits on its stop event per poll (seconds): the bound on Stop's latency
STOP_POLL_S = 0.25


# ---------------------------------------------------------------------------------------
# the run description
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run as plain data: what the dashboard, the CLI and a sweep hand to an executor.

    Attributes:
        system: a key of ``ALL_SYSTEMS``.
        system_params: the system's parameter values (tuples as lists allowed).
        methods: method keys, trained side by side on the same data.
        config: ``TrainConfig`` values (the rest take the system's recommended defaults).
        max_work: the work limit the run is checked against (:mod:`conserv_core.budget`;
            None: the default, or ``CONSERV_MAX_WORK`` where the spec is checked). It
            travels with the spec, so a worker of a room with a raised limit applies
            the server's limit, not its own default.
        view: how much the evaluations' ``view`` arrays hold, as
            :class:`~conserv_core.problems.ViewSpec` values (empty: its defaults). What
            the caller draws: it changes no measurement, and it is left out of
            :meth:`to_dict` while empty (a sweep's cell keys stay as they were).
    """

    system: str
    system_params: dict = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    max_work: float | None = None
    view: dict = field(default_factory=dict)

    @classmethod
    def of(cls, system: System, method_keys, config: training.TrainConfig,
           max_work: float | None = None, view: problems.ViewSpec | None = None) -> "RunSpec":
        """The spec of a built system, methods and config (their current values)."""
        return cls(system.key, _plain(system), tuple(method_keys), _plain(config), max_work,
                   dataclasses.asdict(view) if view is not None else {})

    def to_dict(self) -> dict:
        out = {"system": self.system, "system_params": dict(self.system_params),
               "methods": list(self.methods), "config": dict(self.config), "max_work": self.max_work}
        return {**out, "view": dict(self.view)} if self.view else out

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        unknown = set(d) - {"system", "system_params", "methods", "config", "max_work", "view"}
        if unknown:
            raise ParameterError("a run spec has system, system_params, methods, config, max_work and view; "
                                 f"got {', '.join(sorted(unknown))}")
        return cls(d["system"], dict(d.get("system_params", {})), tuple(d.get("methods", ())),
                   dict(d.get("config", {})), d.get("max_work"), dict(d.get("view", {})))

    @property
    def view_spec(self) -> problems.ViewSpec:
        """:attr:`view` as a :class:`~conserv_core.problems.ViewSpec` (checked)."""
        return problems.ViewSpec.of(self.view)

    def build(self) -> tuple[System, training.TrainConfig]:
        """The system and config this spec names, validated (``ParameterError`` names the
        bad parameter and its range), and the methods checked against the system."""
        if self.system not in ALL_SYSTEMS:
            raise ParameterError(f"system must be one of {', '.join(ALL_SYSTEMS)}; got {self.system!r}")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in self.system_params.items()}
        sysm = get_system(self.system, **params)
        cfg = training.make_config(self.system, **self.config)
        if not self.methods:
            raise ParameterError(f"methods must name at least one of {', '.join(methods.valid_methods(sysm))}")
        for k in self.methods:
            methods.check_applies(k, sysm)
        training.check_rollout(sysm, list(self.methods), cfg)
        problems.ViewSpec.of(self.view)  # a bad view is refused here, before any work, not on a worker
        return sysm, cfg

    def plan(self) -> training.Plan:
        """The spec's set-up built and checked once (:func:`training.plan_run`: methods,
        invariants, rollout options, the work budget; ``ParameterError`` names what is
        wrong), before any work starts."""
        if self.system not in ALL_SYSTEMS:
            raise ParameterError(f"system must be one of {', '.join(ALL_SYSTEMS)}; got {self.system!r}")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in self.system_params.items()}
        sysm = get_system(self.system, **params)
        cfg = training.make_config(self.system, **self.config)
        return training.plan_run(sysm, list(self.methods), cfg, self.max_work, self.view_spec)

    def validate(self) -> "RunSpec":
        """Refuse a spec that cannot run, or that needs more work than the limit, before any
        work starts (:meth:`plan`); returns the spec."""
        self.plan()
        return self

    def comparison(self, listener=None, stop_event: threading.Event | None = None,
                   gate: training.Gate | None = None, plan: training.Plan | None = None) -> training.Comparison:
        """The :class:`~conserv_core.training.Comparison` this spec describes, built here
        (data, models, truth): what every executor runs, and what the CLI runs in process.
        ``plan``: this spec's :meth:`plan` when the caller has it already (not checked again)."""
        return training.Comparison.from_plan(plan if plan is not None else self.plan(), listener=listener,
                                             stop_event=stop_event, gate=gate)

    @property
    def steps(self) -> int:
        """Training steps per method."""
        return int(self.config.get("steps") or training.make_config(self.system).steps)

    @property
    def total_steps(self) -> int:
        """Training steps over all methods (for queue estimates)."""
        return self.steps * max(1, len(self.methods))


def _plain(obj) -> dict:
    out = {}
    for k, v in obj.param.values().items():
        if k == "name":
            continue
        out[k] = list(v) if isinstance(v, (tuple, list)) else v
    return out


# ---------------------------------------------------------------------------------------
# records besides the trainer's
# ---------------------------------------------------------------------------------------
@records.kind
@dataclass
class Started:
    """The run left the queue and began on ``where`` (a worker's address, or ``"local"``)."""
    where: str


@records.kind
@dataclass
class Restarted:
    """The worker running the run left (died, or was retired) and the run starts over on
    ``where``: every record before this one belongs to the lost attempt. The run is
    rebuilt from its spec, so the records that follow equal those a lone run makes; a
    listener drops what it drew of the lost attempt (the dashboard says so)."""
    where: str


@records.kind
@dataclass
class SetupDone:
    """The comparison is built (data generated, models initialised, truth rolled out)."""
    seconds: float


@records.kind
@dataclass
class Failed:
    """The run could not be built or carried on; records already sent stay valid."""
    message: str


@records.kind
@dataclass
class Weights:
    """A method's trained weights at the end of a run, as plain numpy arrays by
    state-dict key (:func:`training.model_state`), sent just before :class:`Ended` for
    every method that made steps. Whoever started the run can then evaluate the model
    again at other test settings without a training step (:meth:`Executor.reevaluate`,
    the dashboard's out-of-distribution slider). A few hundred kB for the largest
    default model."""
    method: str
    step: int
    state: dict


@records.kind
@dataclass
class Ended:
    """The last record of every run."""


# ---------------------------------------------------------------------------------------
# executing a spec (the same code in a thread and on a worker)
# ---------------------------------------------------------------------------------------
class _Batcher:
    """The listener of a running comparison: thins progress records, batches the rest and
    hands each batch to ``send(records, latest)``."""

    def __init__(self, send: Callable[[list, dict], None], steps: int, batch_s: float = BATCH_S):
        self.send = send
        self.batch_s = batch_s
        self.every = max(1, steps // MAX_PROGRESS)
        self.pending: list = []
        self.latest: dict[str, training.Progress] = {}
        self.last = time.monotonic()

    def __call__(self, rec) -> None:
        urgent = not isinstance(rec, training.Progress)
        if isinstance(rec, training.Progress):
            self.latest[rec.method] = rec
            if rec.step % self.every == 0 or rec.step in (1, rec.total_steps):
                self.pending.append(rec)
        else:
            self.pending.append(rec)
        if urgent or time.monotonic() - self.last >= self.batch_s:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if self.pending or self.latest:
            batch, self.pending = self.pending, []
            self.send(batch, dict(self.latest))


def execute(spec: RunSpec, listener: Callable[[object], None], stop_event: threading.Event, where: str = "local",
            gate: training.Gate | None = None, restarted: bool = False) -> None:
    """Carry out ``spec``: every record goes to ``listener``, in order, :class:`Ended` last.
    ``gate`` pauses and steps it (:class:`training.Gate`); ``restarted``: the run's
    earlier worker left, so a :class:`Restarted` record goes first. Never raises: a
    failure is a :class:`Failed` record."""
    if restarted:
        listener(Restarted(where))
    listener(Started(where))
    try:
        t0 = time.perf_counter()
        comp = spec.comparison(listener, stop_event, gate)
        listener(SetupDone(time.perf_counter() - t0))
        if stop_event.is_set():
            for k in comp.trainers:
                listener(training.Finished(k, "stopped", "stopped before training", 0, 0.0))
        else:
            comp.run()
            for k, tr in comp.trainers.items():
                if tr.step_count > 0 and tr.status in ("done", "stopped"):
                    listener(Weights(k, tr.step_count, training.model_state(tr)))
    except training.Stopped:  # stopped while the data or the truth were built: not a failure
        for k in dict.fromkeys(spec.methods):
            listener(training.Finished(k, "stopped", "stopped before training", 0, 0.0))
    except Exception as err:  # reported to the session; the process goes on
        listener(Failed(f"{type(err).__name__}: {err}"))
    finally:
        listener(Ended())


# ---------------------------------------------------------------------------------------
# what a caller holds
# ---------------------------------------------------------------------------------------
class RunHandle:
    """A submitted run, seen from the side that submitted it.

    ``queue`` and ``latest`` are filled from another thread (the run's, or the Dask
    client's); read them from one consumer. ``phase`` is ``"queued"``, ``"running"`` or
    ``"ended"``.
    """

    def __init__(self, spec: RunSpec, executor: "Executor", order: int):
        self.spec = spec
        self.executor = executor
        self.order = order
        self.id = uuid.uuid4().hex[:12]
        self.queue: collections.deque = collections.deque()
        self.latest: dict[str, training.Progress] = {}
        self.finished = threading.Event()
        self.phase = "queued"
        self.where = ""
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        #: how many times the run started over because its worker left (:class:`Restarted`)
        self.restarts = 0
        self.stop_requested = False
        #: what the caller asked of pause / step / resume (the executor carries it to the run)
        self.gate = training.Gate()
        self._deliver_lock = threading.Lock()
        #: called (from any thread) when an urgent record arrives: a served session
        #: schedules a drain on its next tick
        self.wake: Callable[[], None] | None = None

    def deliver(self, batch: list, latest: dict | None = None) -> None:
        """Take a batch from the run (any thread; the run's end may also come from this
        side, so batches are taken one at a time and nothing follows :class:`Ended`)."""
        urgent = False
        with self._deliver_lock:
            if self.finished.is_set():
                return
            if any(isinstance(rec, Restarted) for rec in batch):
                self.latest = {}  # the lost attempt's steps; this batch's latest is the new one's
                self.restarts += 1
            if latest:
                self.latest.update(latest)
            for rec in batch:
                if isinstance(rec, Started):
                    self.phase, self.where, self.started_at = "running", rec.where, time.monotonic()
                self.queue.append(rec)
                if not isinstance(rec, training.Progress):
                    urgent = True
                if isinstance(rec, Ended):
                    self.phase = "ended"
                    self.finished.set()
                    break
        if self.finished.is_set() and urgent:
            self.executor._ended(self)
        if urgent and self.wake is not None:
            try:
                self.wake()
            except Exception:  # the page has gone: the periodic drain (or nobody) takes it
                self.wake = None

    def end(self, failure: str | None = None, stopped: str | None = None) -> None:
        """End the run from this side (it was cancelled, or its worker died)."""
        if self.finished.is_set():
            return
        recs: list = []
        if failure:
            recs.append(Failed(failure))
        if stopped:
            recs.extend(training.Finished(m, "stopped", stopped, 0, 0.0) for m in self.spec.methods
                        if m not in self.latest)
        self.deliver([*recs, Ended()])

    def stop(self) -> None:
        """Ask the run to end (within a training step); a queued run leaves the queue."""
        if self.finished.is_set() or self.stop_requested:
            return
        self.stop_requested = True
        self.executor._stop(self)

    def pause(self) -> None:
        """Have the run wait at its next evaluation boundary (a queued run starts paused)."""
        self._control(self.gate.pause)

    def step(self) -> None:
        """Run one more evaluation interval, then wait again."""
        self._control(self.gate.step)

    def resume(self) -> None:
        """Run on."""
        self._control(self.gate.resume)

    def _control(self, change: Callable[[], None]) -> None:
        if self.finished.is_set() or self.stop_requested:
            return
        change()
        self.executor._control(self)

    def place(self) -> tuple[int, float] | None:
        """``(runs ahead, seconds until this one starts, about)`` while queued, else None."""
        if self.phase != "queued":
            return None
        return self.executor._place(self)


def reevaluate(spec_dict: dict, weights: dict, changes: dict) -> dict:
    """Trained weights evaluated again at changed test settings (the OOD slider's job):
    ``spec_dict`` is the run's spec (:meth:`RunSpec.to_dict`), ``weights`` method ->
    ``(step, state)`` from its :class:`Weights` records, ``changes`` e.g.
    ``{"ood_factor": 8.0}``. Returns ``"truth"`` and each method's evaluation as plain
    data (:func:`records.to_dict`). The same function in a thread and on a worker: no
    training step, nothing random (the run's seed gives the data; the new starts come
    from it too)."""
    spec = RunSpec.from_dict(spec_dict)
    sysm, cfg = spec.build()
    evs = training.reevaluate(sysm, cfg, weights, view=spec.view_spec, **changes)
    return {k: records.to_dict(ev) for k, ev in evs.items()}


# ---------------------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------------------
class Executor:
    """Carries out :class:`RunSpec` objects. Subclasses say where."""

    #: how many runs train at once
    slots = 1

    def __init__(self):
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._active: dict[str, RunHandle] = {}
        #: method-steps per second seen on finished runs (a moving estimate for the queue)
        self._rate = 400.0

    def submit(self, spec: RunSpec, replaces: RunHandle | None = None,
               wake: Callable[[], None] | None = None) -> RunHandle:
        """Queue ``spec`` (refused at once if it is invalid or over the work budget).

        Args:
            replaces: the caller's previous run: stopped, and if it was still queued the
                new run takes its place in the queue.
            wake: called from another thread when an urgent record (anything but
                progress) arrives.
        """
        spec.validate()
        order = None
        if replaces is not None and replaces.phase == "queued":
            order = replaces.order
        if replaces is not None:
            replaces.stop()
        handle = RunHandle(spec, self, next(self._order) if order is None else order)
        handle.wake = wake
        with self._lock:
            self._active[handle.id] = handle
        try:
            self._launch(handle)
        except BaseException:
            with self._lock:
                self._active.pop(handle.id, None)
            raise
        return handle

    def _launch(self, handle: RunHandle) -> None:
        raise NotImplementedError

    def reevaluate(self, spec: RunSpec, weights: dict, urgent: bool = True, **changes) -> list:
        """Futures of :func:`reevaluate` (each ``.done()``, ``.result()``) whose answers
        together hold every method and the truth: finished runs' models evaluated again
        where this executor trains, never in the caller's thread (the server only draws).
        A move a student waits for is one task per method, so a cluster evaluates them
        side by side; an evaluation ahead is one task for all methods, which builds the
        problem (data, test starts, the truth's rollouts) once instead of once per method
        (the answers are the same: :func:`training.reevaluate` shares a kept problem).
        ``changes`` are checked here, before anything is sent.

        Args:
            urgent: a slider move a student waits for (ahead of every run); False: an
                evaluation ahead of the student (:mod:`app.ood`), behind every run and move.
        """
        sysm, cfg = spec.build()
        training.reevaluation_config(cfg, **changes)
        if not urgent:
            return [self._reevaluate(spec.to_dict(), dict(weights), dict(changes), urgent)]
        return [self._reevaluate(spec.to_dict(), {k: w}, dict(changes), urgent) for k, w in weights.items()]

    def _reevaluate(self, spec_dict: dict, weights: dict, changes: dict, urgent: bool):
        raise NotImplementedError

    def _stop(self, handle: RunHandle) -> None:
        raise NotImplementedError

    def _control(self, handle: RunHandle) -> None:
        """Carry ``handle.gate``'s new state to the run."""
        raise NotImplementedError

    def _ended(self, handle: RunHandle) -> None:
        with self._lock:
            self._active.pop(handle.id, None)
        if handle.started_at is not None:
            secs = time.monotonic() - handle.started_at
            steps = sum(p.step for p in handle.latest.values())
            if secs > 1.0 and steps > 100:
                self._rate = 0.7 * self._rate + 0.3 * steps / secs

    def _place(self, handle: RunHandle) -> tuple[int, float]:
        with self._lock:
            active = list(self._active.values())
        ahead = [h for h in active if h.phase == "queued" and h.order < handle.order and not h.stop_requested]
        running = [h for h in active if h.phase == "running"]
        left = sum(max(0.0, h.spec.total_steps - sum(p.step for p in h.latest.values())) for h in running)
        left += sum(h.spec.total_steps for h in ahead)
        # the first slot to free up starts the next run: the work ahead shared by the slots
        return len(ahead), left / self._rate / max(1, self.slots)

    def active(self) -> list[RunHandle]:
        """Runs submitted here that have not ended."""
        with self._lock:
            return list(self._active.values())

    def close(self) -> None:
        with self._lock:
            active = list(self._active.values())
        for h in active:
            h.stop()


class InProcessExecutor(Executor):
    """Each run on a daemon thread of this process, started at once (a notebook's or a
    test's runs; nothing queues). ``threads`` sets torch's intra-op threads, which are
    per process."""

    def __init__(self, threads: int = 1):
        super().__init__()
        self.threads = threads
        self.slots = max(1, os.cpu_count() or 1)

    def _launch(self, handle: RunHandle) -> None:
        handle.stop_event = threading.Event()
        send = lambda recs, latest: handle.deliver(recs, latest)  # noqa: E731
        batcher = _Batcher(send, handle.spec.steps, batch_s=0.0)

        def work():
            if self.threads > 0:
                import torch

                torch.set_num_threads(self.threads)
            # the handle's gate is the run's: pause, step and resume act on it directly
            execute(handle.spec, batcher, handle.stop_event, gate=handle.gate)  # Ended, last, flushes the batch

        handle.thread = threading.Thread(target=work, name=f"conserv-run-{handle.id}", daemon=True)
        handle.thread.start()

    def _stop(self, handle: RunHandle) -> None:
        handle.stop_event.set()

    def _reevaluate(self, spec_dict: dict, weights: dict, changes: dict, urgent: bool):
        # a thread for moves and one for evaluations ahead: a move never queues behind
        # the evaluations ahead (they share the cores meanwhile)
        name = "_pool" if urgent else "_pool_ahead"
        with self._lock:
            if getattr(self, name, None) is None:
                from concurrent.futures import ThreadPoolExecutor

                setattr(self, name, ThreadPoolExecutor(1, thread_name_prefix=f"conserv-reevaluate{name[5:]}"))
            pool = getattr(self, name)
        return pool.submit(reevaluate, spec_dict, weights, changes)

    def _control(self, handle: RunHandle) -> None:
        pass  # the run holds the handle's own gate


# -- Dask -------------------------------------------------------------------------------
def _topic(run_id: str) -> str:
    return f"conserv-run-{run_id}"


def run_on_worker(spec_dict: dict, run_id: str) -> str:
    """The task a Dask worker carries out: execute the spec, publishing record batches on
    the run's topic, stopping when the run's stop event is set. Returns ``"done"``, or
    ``"stopped"`` when the run was stopped before it began here (nothing is sent).

    The scheduler sends the task again when the worker running it leaves (killed, or
    retired mid-run). That second start is told apart by the run's ``-started`` event and
    begins with a :class:`Restarted` record, so the client drops the lost attempt's
    records: the run starts over, from its spec, with the same curves."""
    from distributed import Event, Variable, get_worker

    worker = get_worker()
    topic = _topic(run_id)
    stop_remote = Event(f"{topic}-stop")
    if stop_remote.is_set():
        # replaced or stopped while it was on its way here (a cancel does not reach a task
        # the scheduler already sent): no record, no set-up, the worker is free at once
        return "stopped"
    started = Event(f"{_topic(run_id)}-started")
    restarted = started.is_set()
    started.set()
    spec = RunSpec.from_dict(spec_dict)
    stop_local = threading.Event()
    done = threading.Event()
    control = Variable(f"{topic}-control")
    gate = training.Gate()
    try:  # the client set it before submitting: a run paused in the queue starts paused
        gate.mirror(control.get(timeout=10))
    except Exception:  # a client that set none: the run plays
        pass

    def watch_stop():
        while not done.is_set():
            try:
                if stop_remote.wait(timeout=STOP_POLL_S):
                    stop_local.set()
                    return
                gate.mirror(control.get(timeout=10))
            except Exception:  # the scheduler went away: the run ends with it
                stop_local.set()
                return

    watcher = threading.Thread(target=watch_stop, name=f"stop-{run_id}", daemon=True)
    watcher.start()

    def send(batch, latest):
        # plain data on the wire (records.to_dict): no engine class crosses it
        payload = ([records.to_dict(r) for r in batch], {m: records.to_dict(p) for m, p in latest.items()})
        worker.log_event(topic, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))

    batcher = _Batcher(send, spec.steps)
    try:
        # Ended, last, flushes the batch
        execute(spec, batcher, stop_local, where=worker.address, gate=gate, restarted=restarted)
    finally:
        done.set()
    return "done"


#: glibc's mallopt parameters (malloc.h), and what a worker under a Dask Nanny gets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES, _TRIM_THRESHOLD_BYTES = 16 * 2**20, 64 * 2**20


def _worker_environ() -> dict:
    """Dask's Nanny environment for the worker processes we start, less its
    ``MALLOC_TRIM_THRESHOLD_``.

    Dask sets that variable (64 KiB) to hand memory back sooner. Setting any malloc
    threshold turns off glibc's adaptive mmap threshold, so every tensor above 128 KiB
    (a 256 × 200 float batch is 200 KiB) becomes its own mmap, page faults and all:
    measured here, 1 500 steps of a 200-wide MLP took 3.9 s instead of 2.3 s, and a
    2-worker sweep gained 1.37× over serial instead of ~1.9×.
    """
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return env


def local_cluster(n_workers: int, **cluster_kw):
    """A ``distributed.LocalCluster`` of ``n_workers`` processes, one thread each, with
    glibc's adaptive malloc (see :func:`_worker_environ`). What ``conserv serve``,
    ``conserv sweep`` and the benchmarks start."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_environ()}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, **cluster_kw)


#: whether :func:`_fix_malloc` changed this process's malloc (read by the tests on workers)
MALLOC_FIXED = False


def _fix_malloc() -> bool:
    """On a worker someone else started under a Nanny (``MALLOC_TRIM_THRESHOLD_`` set, so
    glibc's adaptive mmap threshold is off), raise the mmap threshold to 16 MiB and the
    trim threshold to 64 MiB so training's tensors come from the heap again (the same
    1 500 steps: 3.9 s under the Nanny's setting, 2.4 s after this, 2.3 s untouched).
    Returns whether it did."""
    if not os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc: nothing to do
        return False
    global MALLOC_FIXED
    MALLOC_FIXED = MALLOC_FIXED or ok
    return ok


try:  # the Dask executor needs distributed; the in-process one does not
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - the [app]/[test] extras install it
    _WorkerPlugin = object


class WorkerSetup(_WorkerPlugin):
    """A Dask worker plugin: one torch intra-op thread per worker process, the user's
    plugins (:mod:`conserv_core.plugins`: their methods and systems) loaded, and torch's
    lazy imports paid before the first run arrives."""

    name = "conserv-worker-setup"

    def __init__(self, threads: int = 1, plugins: tuple[str, ...] = ()):
        self.threads = threads
        self.plugins = tuple(plugins)

    def setup(self, worker) -> None:
        import torch

        from conserv_core import plugins

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        _fix_malloc()
        # getattr: a setup pickled by an older server has no plugins
        plugins.load(getattr(self, "plugins", ()))  # raises ParameterError, which register_plugin reports
        training.warm_up()


#: the Dask priority of the OOD slider's evaluations ahead (``urgent=False``): below every
#: live run (``-order``) and every move (1), above sweeps (``sweeps.PRIORITY - k``), so a
#: room's runs go first and a sweep's hour of cells does not hold back a finished run's slider
AHEAD_PRIORITY = -500_000_000


class DaskExecutor(Executor):
    """Runs on a Dask distributed cluster, in arrival order, one task per run.

    Args:
        client: a ``distributed.Client`` (synchronous). Its workers need this package
            installed; :class:`WorkerSetup` is registered on them.
        threads: torch intra-op threads per worker.
        plugins: the plugin specs the workers load (:mod:`conserv_core.plugins`; default:
            those loaded in this process).
    """

    def __init__(self, client, threads: int = 1, plugins: list[str] | None = None):
        from conserv_core import plugins as plugins_mod

        super().__init__()
        self.client = client
        # the plugins this process loaded (or those given) go to every worker, before any run
        client.register_plugin(WorkerSetup(threads, plugins_mod.loaded() if plugins is None else plugins))
        # one run per worker thread at a time: the rest wait at the scheduler, where the
        # priorities keep arrival order (the default, 1.1, lets a worker hold a second run
        # back from a worker that frees up sooner). Said in the README for shared clusters.
        client.run_on_scheduler(_one_task_per_thread)
        self._slots = max(1, sum(client.nthreads().values()))

    @property
    def slots(self) -> int:
        """Worker threads the scheduler has now: workers join and leave a room's cluster
        mid-round, and the queue's estimate shares the work ahead among those there are.
        Read from the scheduler's identity that the client refreshes every 2 s
        (``distributed.client.scheduler-info-interval``), so asking costs no round trip
        on the server's event loop; the last count seen when the client has none."""
        info = getattr(self.client, "_scheduler_identity", None) or {}
        threads = info.get("total_threads")
        if isinstance(threads, int) and threads > 0:
            self._slots = threads
        return self._slots

    @classmethod
    def local(cls, n_workers: int | None = None, threads: int = 1, **cluster_kw) -> "DaskExecutor":
        """A ``LocalCluster`` of worker processes (one per core by default), one thread each."""
        from distributed import Client

        n = n_workers if n_workers is not None else max(1, os.cpu_count() or 1)
        cluster = local_cluster(n, **cluster_kw)
        ex = cls(Client(cluster), threads=threads)
        ex.cluster = cluster
        return ex

    @classmethod
    def connect(cls, address: str, threads: int = 1, timeout: float = 10.0,
                plugins: list[str] | None = None) -> "DaskExecutor":
        """An existing cluster's scheduler, e.g. ``tcp://10.0.0.5:8786``."""
        from distributed import Client

        return cls(Client(address, timeout=timeout), threads=threads, plugins=plugins)

    def _reevaluate(self, spec_dict: dict, weights: dict, changes: dict, urgent: bool):
        # a move: above every live run (they are submitted at -order <= 0) and every
        # sweep, so it waits only for a free worker thread, never behind queued runs; an
        # evaluation ahead: below all of them
        priority = 1 if urgent else AHEAD_PRIORITY
        return self.client.submit(reevaluate, spec_dict, weights, changes, pure=False, priority=priority, retries=0)

    @property
    def dashboard_link(self) -> str:
        try:
            return self.client.dashboard_link or ""
        except Exception:
            return ""

    def _launch(self, handle: RunHandle) -> None:
        topic = _topic(handle.id)
        # the handler stays with the client after the run is forgotten (see _forget): it
        # reaches the handle through this cell, which _forget empties
        handle._listening = [handle]

        def on_event(event, cell=handle._listening):
            if not cell:  # a late batch of a forgotten run (replaced, cancelled): nothing to do
                return
            handle = cell[0]
            _, payload = event
            batch, latest = pickle.loads(payload)
            batch = [records.from_dict(d) for d in batch]
            latest = {m: records.from_dict(d) for m, d in latest.items()}
            handle.deliver(batch, latest)
            if handle.finished.is_set():
                self._forget(handle)

        self.client.subscribe_topic(topic, on_event)
        self._control(handle)  # the run reads its gate's state from the start
        fut = _submit_queued(self.client, run_on_worker, handle.spec.to_dict(), handle.id,
                             key=f"conserv-run-{handle.id}", priority=-handle.order)
        handle.future = fut

        def on_done(f):
            if handle.finished.is_set():
                return
            if f.status == "cancelled":
                handle.end(stopped="stopped while queued")
            elif f.status == "error":
                err = f.exception()
                name = type(err).__name__
                if name == "KilledWorker" or "worker" in str(err).lower():
                    # Dask gave up after the run's workers died one after another
                    handle.end(failure="the worker processes running this run died")
                else:
                    handle.end(failure=f"{name}: {err}")
            elif f.result() == "stopped":
                handle.end(stopped="stopped while queued")
            else:
                # the task returned: its last batch left the worker before the result did,
                # on the same stream, so it is here or on its way; a safety net only
                threading.Timer(10.0, lambda: handle.end(failure="the run's last records never arrived")).start()
                return
            self._forget(handle)  # ended from this side: nothing more will be published

        fut.add_done_callback(on_done)

    def _stop(self, handle: RunHandle) -> None:
        from distributed import Event

        if handle.phase == "queued":
            handle.future.cancel()
        try:
            Event(f"{_topic(handle.id)}-stop", client=self.client).set()
        except Exception:  # the cluster has gone: nothing is running there any more
            handle.end(stopped="stopped")

    def _control(self, handle: RunHandle) -> None:
        from distributed import Variable

        try:
            Variable(f"{_topic(handle.id)}-control", client=self.client).set(handle.gate.state())
        except Exception:  # the cluster has gone: the run ends with it (its watcher stops it)
            pass

    def _forget(self, handle: RunHandle) -> None:
        """Drop a finished run's topic and events from the scheduler (they would pile up).

        The topic's handler is kept, emptied: a batch the scheduler sent before our
        unsubscription reached it still arrives after the run ended here (a replaced or
        cancelled run whose worker was still sending), and a client with no handler for
        its topic logs a traceback for each (``No event handler known for topic``; 137 of
        them when 200 Train clicks arrived at once, issue 31). ``unsubscribe_topic`` leaves
        the handler with the client, so the emptied handler (a closure and an empty list,
        not the handle and its records) is what stays per run."""
        topic = _topic(handle.id)
        listening = getattr(handle, "_listening", None)
        if listening is None or not listening:
            return  # forgotten already (a late batch, or the end seen from both sides)
        listening.clear()

        def drop():
            try:
                self.client.unsubscribe_topic(topic)
            except Exception:
                pass
            # the unsubscription reaches the scheduler first, and the run's stop watcher
            # lets go of its event
            time.sleep(2 * STOP_POLL_S)
            try:
                self.client.run_on_scheduler(_drop_topic, topic)
            except Exception:  # a scheduler that refuses run_on_scheduler keeps them
                pass

        threading.Thread(target=drop, daemon=True).start()

    def close(self) -> None:
        super().close()
        try:
            self.client.close()
        finally:
            cluster = getattr(self, "cluster", None)
            if cluster is not None:
                cluster.close()


# ---------------------------------------------------------------------------------------
# the local cluster, in a process of its own
# ---------------------------------------------------------------------------------------
def _host_cluster(conn, n_workers: int | None, threads: int) -> None:
    """Body of the cluster process: start a LocalCluster, report its addresses, and keep it
    until the server says stop or goes away (the pipe closes even on kill -9)."""
    ex = DaskExecutor.local(n_workers=n_workers, threads=threads, dashboard_address="127.0.0.1:0")
    conn.send((ex.cluster.scheduler_address, ex.dashboard_link, ex.slots))
    try:
        conn.recv()
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        ex.close()


def start_cluster_process(n_workers: int | None, threads: int, timeout: float = 120.0):
    """A local cluster in a spawned process: ``(process, scheduler address, dashboard link,
    worker slots, the pipe that keeps it)``. Its scheduler is kept apart from the server's
    event loop, and it closes when the pipe does (the server stopped, or was killed)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_host_cluster, args=(child, n_workers, threads), name="conserv-cluster")
    proc.start()
    child.close()
    if not parent.poll(timeout):
        proc.terminate()
        raise RuntimeError(f"the local Dask cluster did not start within {timeout:.0f} s")
    address, link, slots = parent.recv()
    return proc, address, link, slots, parent


def _submit_queued(client, fn, *args, key: str, priority: int):
    """``client.submit(fn, *args)``, with the task marked as one the scheduler must queue.

    Dask queues a task at the scheduler (one per worker thread, by priority) only when it
    is "root-ish": a data producer, or one of a task group larger than twice the
    cluster's threads. A room's few runs are not, so by default each would be sent at
    once to some worker's own queue, behind that worker's run, even while another worker
    is free, and out of arrival order. Marking the task a data producer is what Dask's
    own array creators do; it has no public ``submit`` argument, so this builds the task
    as ``Client.submit`` does (distributed 2026.8), and falls back to a plain submit where
    that layout differs (the README says what is lost then).
    """
    try:
        from dask._expr import LLGExpr
        from dask._task_spec import Task, parse_input
        from distributed.spans import SpanMetadata

        task = Task(key, fn, *(parse_input(a) for a in args), _data_producer=True)
        expr = LLGExpr({key: task}, _determ_token=uuid.uuid4().hex)
        futures = client._graph_to_futures(
            expr, [key], internal_priority={key: 0}, user_priority=priority, retries=0,
            span_metadata=SpanMetadata(collections=[{"type": "Future"}]))
        return futures[key]
    except (ImportError, TypeError, AttributeError):  # another distributed: Dask's heuristic decides
        return client.submit(fn, *args, key=key, pure=False, priority=priority, retries=0)


def _one_task_per_thread(dask_scheduler=None) -> None:
    dask_scheduler.WORKER_SATURATION = 1.0


def _drop_topic(topic: str, dask_scheduler=None) -> None:
    """Forget a finished run on the scheduler: its topic's event log, its two
    ``distributed.Event`` objects and its control ``distributed.Variable``. These are
    private attributes (distributed 2026.8); on another layout nothing is dropped and the
    leftovers are small."""
    broker = getattr(dask_scheduler, "_broker", None)
    if broker is not None:
        broker._topics.pop(topic, None)
    ext = dask_scheduler.extensions.get("events")
    events, waiters = getattr(ext, "_events", None), getattr(ext, "_waiter_count", {})
    if events is not None:
        for name in (f"{topic}-started", f"{topic}-stop"):
            if not waiters.get(name):
                events.pop(name, None)
    variables = dask_scheduler.extensions.get("variables")
    if variables is not None and hasattr(variables, "variables"):
        variables.variables.pop(f"{topic}-control", None)
        getattr(variables, "waiting_conditions", {}).pop(f"{topic}-control", None)


__all__ = ["DaskExecutor", "Ended", "Executor", "Failed", "InProcessExecutor", "RunHandle", "Restarted",
           "RunSpec", "SetupDone", "Started", "Weights", "WorkerSetup", "execute", "reevaluate", "run_on_worker",
           "start_cluster_process"]
