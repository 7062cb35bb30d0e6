"""The state of one dashboard session: what to train, where its run is, and the drain.

Runs. A Train click turns the settings into a :class:`conserv_core.runs.RunSpec` and hands
it to the session's executor (:func:`executor`): under ``conserv serve`` a Dask cluster of
worker processes, so the server never trains; in a notebook or a test, a thread of this
process. Either way the records come back into the run handle's ``deque`` from another
thread, and :meth:`LabSession.drain` moves them into the plots' channels and param values
on the session's own thread: under ``panel serve`` a periodic callback calls it every
:data:`DRAIN_MS`; tests and scripts call it themselves.

The run's state is one explicit phase (:data:`PHASES`), changed only by
:meth:`LabSession._enter`; the status line's colour follows from it, and no logic reads
the status text.

Nothing here builds a widget; the views in :mod:`app.views` watch this object.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from typing import Callable

import holoviews as hv
import numpy as np
import pandas as pd
import param

from conserv_core import methods as cmethods
from conserv_core import budget as work_budget
from conserv_core import presets, runs, training
from conserv_core.devices import available_devices
from conserv_core.systems import ALL_SYSTEMS, FieldSystem, ODESystem, ParameterError, System, get_system

from app import theme

#: how often a served session drains the worker's records (ms)
DRAIN_MS = 200
#: seconds of plot redrawing a served drain may spend (the rest waits for the next drain)
DRAW_BUDGET_S = 0.05
#: the loss plots are redrawn at most this often while a run goes on (seconds)
LOSS_EVERY_S = 0.6
#: the progress bar and the steps/s line are updated at most this often while a run goes
#: on (seconds): each update is a message to the page
PROGRESS_EVERY_S = 0.5
#: drift values below this are drawn at it (a log axis has no zero)
DRIFT_FLOOR = 1e-12
#: at most this many loss points per method reach the browser (thinned where the run is)
MAX_LOSS_POINTS = runs.MAX_PROGRESS
#: evaluations per run besides the one at step 0 (each costs a rollout of every test case)
EVALS_PER_RUN = 6

#: training settings that get a widget
CONFIG_FIELDS = ["steps", "lr", "width", "seed", "lam", "mu", "mu_growth", "update_every", "lnn_form",
                 "integrator", "horizon", "ood_factor", "device", "invariants"]
#: training settings the URL carries: every one a run reads (threads is the server's, and
#: the dashboard sets eval_every from the number of refreshes it wants)
URL_CONFIG_FIELDS = [k for k in training.TrainConfig.param if k not in ("name", "threads", "eval_every")]
#: training settings a change of system leaves alone
KEEP_ON_SYSTEM_CHANGE = ("seed", "device")

#: system parameters the controls show (the rest keep their defaults); a system not
#: named here shows the numbers and choices its own class declares
SYSTEM_FIELDS: dict[str, list[str]] = {
    "pendulum": ["mass", "length", "gravity", "damping"],
    "nbody": ["n_bodies", "preset", "G", "softening"],
    "flow": ["grid", "viscosity", "initial", "field_seed"],
}


def url_system_fields(key: str) -> list[str]:
    """Every scalar parameter of system ``key``: what a link carries (tuples and lists,
    which only presets set, travel as the preset's name)."""
    return [n for n, p in ALL_SYSTEMS[key].param.objects("existing").items()
            if n != "name" and isinstance(p, (param.Number, param.Selector, param.String, param.Boolean))
            and not isinstance(p, param.ListSelector)]


def system_fields(key: str) -> list[str]:
    """The parameters of system ``key`` that get a widget (and a place in the URL)."""
    if key in SYSTEM_FIELDS:
        return SYSTEM_FIELDS[key]
    cls = ALL_SYSTEMS[key]
    inherited = set(ODESystem.param) | set(FieldSystem.param)
    return [n for n, p in cls.param.objects("existing").items()
            if n not in inherited and isinstance(p, (param.Number, param.Selector))
            and not isinstance(p, param.ListSelector)]


def server_threads() -> int:
    """torch intra-op threads per run: a server setting (``--threads``), default 1."""
    try:
        return max(0, int(os.environ.get("CONSERV_THREADS", "1")))
    except ValueError:
        return 1


def warm_up() -> None:
    """Pay torch's one-time costs before the first Train click (the first optimiser
    imports torch._dynamo: seconds on a small machine)."""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def release_memory() -> None:
    """Collect a closed session's garbage and hand freed heap back to the OS, so a
    workshop server's memory returns to its baseline between classes."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps its pages
        pass


def drift_keys(system: System) -> list[str]:
    """The drift plots a system gets, in order."""
    if system.kind == "field":
        return ["mass", "divergence"]
    return list(system.invariant_names())


def plot_drift(curve) -> dict:
    """A drift curve as plot data: zeros floored for the log axis, t = 0 dropped
    (every drift is exactly 0 there), non-finite values kept as gaps."""
    t = np.asarray(curve.t, dtype=float)[1:]
    rel = np.asarray(curve.rel, dtype=float)[1:]
    rel = np.where(np.isfinite(rel), np.maximum(rel, DRIFT_FLOOR), np.nan)
    return {"t": t, "drift": rel}


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "NaN"
    return "0 (exact)" if x == 0 else f"{x:.1e}"


def _final(curve) -> float:
    """The drift at the horizon (NaN if the rollout blew up before it)."""
    return float(curve.rel[-1]) if curve.rel else float("nan")


#: records a run sends besides the trainer's (see :mod:`conserv_core.runs`)
SetupDone, Failed, Started, Ended = runs.SetupDone, runs.Failed, runs.Started, runs.Ended

_executor: runs.Executor | None = None
_executor_pid: int | None = None


def executor() -> runs.Executor:
    """Where this process's sessions run their training: what :func:`set_executor` chose
    (``conserv serve``: a Dask cluster); else the scheduler named by ``CONSERV_SCHEDULER``
    (the server's ``--num-procs`` children connect on their first session); else a thread
    of this process (notebooks, tests)."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        address = os.environ.get("CONSERV_SCHEDULER")
        if address:
            _executor = connect_executor(address, server_threads())
        else:
            _executor = runs.InProcessExecutor(threads=server_threads())
        _executor_pid = os.getpid()
    return _executor


def set_executor(ex: runs.Executor | None) -> None:
    """Make ``ex`` the executor of every session created from now on (None: the default
    again); the one it replaces is closed."""
    global _executor, _executor_pid
    old, _executor, _executor_pid = _executor, ex, os.getpid() if ex is not None else None
    if old is not None and old is not ex and _executor_pid in (None, os.getpid()):
        old.close()


def connect_executor(address: str, threads: int = 1) -> runs.DaskExecutor:
    """A Dask executor on the scheduler at ``address`` (``OSError`` if it cannot be reached)."""
    try:
        return runs.DaskExecutor.connect(address, threads=threads)
    except Exception as err:  # distributed raises OSError or TimeoutError subclasses
        raise OSError(str(err) or type(err).__name__) from None


def watch_parent() -> None:
    """In a forked server process: exit when the parent goes (it may have been killed
    with -9, and an orphan would keep the port)."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="conserv-watch-parent", daemon=True).start()


#: the phases of a session's run, and the colour of the status line in each
PHASES = {
    "idle": "info",
    "queued": "running",
    "preparing": "running",
    "training": "running",
    "stopping": "warning",
    "done": "success",
    "stopped": "warning",
    "diverged": "danger",
    "failed": "danger",
}
#: phases in which a run exists (Train replaces it, Stop ends it)
ACTIVE = ("queued", "preparing", "training", "stopping")
_ENDED = ("done", "stopped", "diverged", "failed")
_NEW = {"idle", "queued", "preparing"}
#: which phase may follow which: a new run (or none) from anywhere; a run goes forward only
TRANSITIONS = {
    "idle": _NEW,
    "queued": {*_NEW, "training", "stopping", *_ENDED},
    "preparing": {*_NEW, "training", "stopping", *_ENDED},
    "training": {*_NEW, "training", "stopping", *_ENDED},
    "stopping": {*_NEW, "stopping", *_ENDED},
    **{p: _NEW for p in _ENDED},
}


def multiplier_names(system: System, config: training.TrainConfig) -> list[str]:
    """What the augmented Lagrangian reports: one multiplier per constrained invariant, and μ."""
    if system.kind == "field":
        inv = ["divergence"]
    else:
        inv = list(config.invariants) or [n for n in system.invariant_names() if system.is_conserved(n)] \
            or list(system.invariant_names())
    return [*inv, "mu"]


class Channel:
    """One plot's curves, and the figures that draw them.

    :attr:`data` is ``{series: {column: array}}`` (what the plot shows now). The views'
    figures subscribe; they receive only what changed: :meth:`append` sends the new
    points at the end of some series (a browser then gets just those points),
    :meth:`update` whole series that changed, :meth:`send` everything (series it no
    longer holds are cleared). No HoloViews element is rebuilt on a change.
    """

    def __init__(self):
        self.data: dict[str, dict[str, np.ndarray]] = {}
        self._subscribers: list[Callable[[dict, bool], None]] = []

    def subscribe(self, fn: Callable[[dict, bool], None]) -> None:
        """``fn(changes, append)``: ``changes`` is ``{series: columns}`` (``None``: cleared)."""
        self._subscribers.append(fn)

    def unsubscribe(self, fn) -> None:
        if fn in self._subscribers:
            self._subscribers.remove(fn)

    def _notify(self, changes: dict, append: bool) -> None:
        if changes:
            for fn in list(self._subscribers):
                fn(changes, append)

    def append(self, new: dict) -> None:
        """Add points to the end of series (a series not held yet starts with them)."""
        new = {k: {c: np.asarray(v) for c, v in cols.items()} for k, cols in new.items()
               if cols and len(next(iter(cols.values())))}
        for k, cols in new.items():
            old = self.data.get(k)
            self.data[k] = {c: np.concatenate([old[c], v]) for c, v in cols.items()} if old else dict(cols)
        self._notify(new, True)

    def update(self, series: dict) -> None:
        """Replace these series whole (the others stay as they are)."""
        self.data.update(series)
        self._notify(series, False)

    def send(self, data: dict) -> None:
        """Replace everything: series not in ``data`` are cleared."""
        gone = {k: None for k in self.data if k not in data}
        self.data = dict(data)
        self._notify({**gone, **data}, False)

    def clear(self) -> None:
        if self.data:
            self.send({})


class StreamSet:
    """The data behind the plots of one set of (system, methods).

    The views build their figures on these once; a later run that draws the same plots
    reuses them (:meth:`clear` empties them), so Train does not rebuild figures. The
    curves are :class:`Channel` objects (only changes reach the figures); the system view's
    arrays are a HoloViews ``Pipe`` (the flow's views are DynamicMaps on it).
    """

    def __init__(self, system: System, methods: list[str], config: training.TrainConfig):
        self.system = system
        self.system_key = system.key
        self.methods = list(methods)
        self.invariants = drift_keys(system)
        self.multiplier_names = multiplier_names(system, config) if "auglag" in methods else []
        #: {method: {"step", "loss"}} and {method: {"step", "violation"}}
        self.loss = Channel()
        self.violation = Channel()
        #: {multiplier: {"step", "value"}}
        self.multipliers = Channel()
        #: per invariant {series: {"t", "drift"}}; series: "truth", a method, "<method>:own"
        self.drift = {q: Channel() for q in self.invariants}
        #: {method: Evaluation.view}, the system view's arrays
        self.views = hv.streams.Pipe(data={})
        self.key = self.key_for(system, methods, config)

    @staticmethod
    def key_for(system: System, methods: list[str], config: training.TrainConfig) -> tuple:
        """What decides the plots' layout (not their data)."""
        dof = system.dof if system.kind == "ode" else 0
        names = multiplier_names(system, config) if "auglag" in methods else []
        return system.key, dof, tuple(methods), tuple(drift_keys(system)), tuple(names)

    @property
    def has_auglag(self) -> bool:
        return "auglag" in self.methods

    def clear(self) -> None:
        """Empty every curve. The system view's arrays are forgotten without a redraw: an
        equal-aspect plot cannot size itself on nothing, so it keeps its picture until the
        next run's first rollout replaces it. A plot that is already empty is not touched."""
        for channel in (self.loss, self.violation, self.multipliers, *self.drift.values()):
            channel.clear()
        self.views.update(data={})


class LiveData:
    """Everything one run has reported so far, and the channels it feeds.

    One channel per plot, and only changes go into it: new loss points, the drift curves
    of new evaluations. The drain marks plots dirty as records arrive and :meth:`flush`
    sends their changes, within a time budget when served (a drain must never hold the
    session's thread long enough to delay a click).
    """

    def __init__(self, system: System, method_keys: list[str], config: training.TrainConfig,
                 streams: StreamSet | None = None):
        self.system = system
        self.system_key = system.key
        self.methods = list(method_keys)
        self.config = config
        self.invariants = drift_keys(system)
        self.streams = streams if streams is not None else StreamSet(system, self.methods, config)
        self.loss, self.violation = self.streams.loss, self.streams.violation
        self.multipliers, self.drift, self.views = self.streams.multipliers, self.streams.drift, self.streams.views
        self.truth: training.Evaluation | None = None
        self.latest_eval: dict[str, training.Evaluation] = {}
        self.finished: dict[str, training.Finished] = {}
        self.progress: dict[str, training.Progress] = {}
        self.history: dict[str, list[training.Progress]] = {m: [] for m in self.methods}
        self.mult_rows: list[tuple[int, str, float]] = []
        self.failed: str = ""
        self.setup_seconds: float | None = None
        self.first_step_at: float | None = None
        self.ood = False
        self.dirty: set[str] = set()
        self.views_announced = False
        self._sent_at: dict[str, float] = {}
        self._round_since: float | None = None
        #: when the progress bar was last updated
        self.progress_at = -math.inf
        #: what the plots already hold: loss points per (curve, method), multiplier rows,
        #: and per drift plot which evaluation each series was drawn from
        self._n_sent: dict[tuple[str, str], int] = {}
        self._mult_sent = 0
        self._drift_drawn: dict[str, dict[str, tuple]] = {q: {} for q in self.invariants}

    @property
    def has_auglag(self) -> bool:
        return "auglag" in self.methods

    @property
    def n_points(self) -> int:
        """Loss points received so far, all methods together."""
        return sum(len(h) for h in self.history.values())

    # -- what the plots show ----------------------------------------------------------------
    def _drift_sources(self, q: str):
        """(series, what it is drawn from, its curve) for drift plot ``q``."""
        evs = {"truth": self.truth, **self.latest_eval} if self.truth is not None else dict(self.latest_eval)
        for key, ev in evs.items():
            source = ev.drift_ood if (self.ood and ev.drift_ood) else ev.drift
            if q in source:
                yield key, (id(source[q]), self.ood), source[q]
            own = "energy_ood" if self.ood else "energy"
            if q == "energy" and own in ev.learned_drift:
                yield f"{key}:own", (id(ev.learned_drift[own]), self.ood), ev.learned_drift[own]

    def drift_series(self, q: str) -> dict:
        """Every curve of drift plot ``q``."""
        return {key: plot_drift(curve) for key, _, curve in self._drift_sources(q)}

    def drift_changes(self, q: str) -> dict:
        """The curves of drift plot ``q`` that are not drawn yet (a new evaluation, the
        other test set); marks them drawn."""
        drawn = self._drift_drawn.setdefault(q, {})
        out = {}
        for key, tag, curve in self._drift_sources(q):
            if drawn.get(key) != tag:
                drawn[key] = tag
                out[key] = plot_drift(curve)
        return out

    def loss_series(self, column: str) -> dict:
        """Every loss (or violation) point received, per method."""
        return {m: self._loss_points(hist, column) for m, hist in self.history.items()}

    def loss_changes(self, column: str) -> dict:
        """The loss (or violation) points not drawn yet, per method; marks them drawn."""
        out = {}
        for m, hist in self.history.items():
            n = self._n_sent.get((column, m), 0)
            if len(hist) > n:
                out[m] = self._loss_points(hist[n:], column)
                self._n_sent[(column, m)] = len(hist)
        return out

    @staticmethod
    def _loss_points(hist: list, column: str) -> dict:
        step = np.fromiter((p.step for p in hist), float, len(hist))
        val = np.fromiter((getattr(p, column) for p in hist), float, len(hist))
        val = np.where(np.isfinite(val), np.maximum(val, 1e-30), np.nan)
        return {"step": step, column: val}

    def multiplier_changes(self) -> dict:
        """The multiplier rows not drawn yet, per multiplier; marks them drawn."""
        rows = self.mult_rows[self._mult_sent:]
        self._mult_sent = len(self.mult_rows)
        out: dict[str, dict] = {}
        for step, name, value in rows:
            d = out.setdefault(name, {"step": [], "value": []})
            d["step"].append(float(step))
            d["value"].append(float(value) if math.isfinite(value) else math.nan)
        return {k: {c: np.asarray(v, float) for c, v in d.items()} for k, d in out.items()}

    def set_ood(self, ood: bool) -> None:
        self.ood = ood
        self.mark("drift")
        self.flush()

    def plots(self) -> list[str]:
        """Every plot this run feeds, most telling first (a drain short of time does these)."""
        return [*(f"drift:{q}" for q in self.invariants), "views", "loss", "violation", "multipliers"]

    def mark(self, *groups: str) -> None:
        """Mark plots dirty: ``"drift"`` stands for every drift plot."""
        for g in groups:
            if g == "drift":
                self.dirty.update(f"drift:{q}" for q in self.invariants)
            else:
                self.dirty.add(g)

    def evaluation_arrived(self, rec: training.Evaluation, now: float) -> None:
        """Redraw drift and system views once per evaluation round (all methods at the same
        step), not once per method: a redraw holds the session's thread. The very first
        round is drawn as it comes, and a round that waits over 2 s is drawn anyway."""
        if rec.method == "truth":
            self.truth = rec
            self.mark("drift")
            return
        first_round = rec.method not in self.latest_eval
        self.latest_eval[rec.method] = rec
        pending = [m for m in self.methods if m not in self.finished
                   and (m not in self.latest_eval or self.latest_eval[m].step < rec.step)]
        if first_round or not pending:
            self.mark("drift", "views")
            self._round_since = None
        elif self._round_since is None:
            self._round_since = now

    def flush(self, budget: float | None = None, loss_every: float = 0.0) -> None:
        """Send dirty plots' changes, most telling first, until ``budget`` seconds are spent
        (the rest stays dirty for the next drain): new loss and multiplier points, drift
        curves from new evaluations. The loss and multiplier plots are updated at most
        every ``loss_every`` seconds."""
        t0 = time.perf_counter()
        if self._round_since is not None and t0 - self._round_since > 2.0:
            self.mark("drift", "views")
            self._round_since = None
        for plot in self.plots():
            if plot not in self.dirty:
                continue
            if budget is not None and time.perf_counter() - t0 > budget:
                return
            if plot in ("loss", "violation", "multipliers"):
                if t0 - self._sent_at.get(plot, -math.inf) < loss_every:
                    continue
                self._sent_at[plot] = t0
                if plot == "multipliers":
                    self.multipliers.append(self.multiplier_changes())
                else:
                    getattr(self, plot).append(self.loss_changes(plot))
            elif plot.startswith("drift:"):
                q = plot.split(":", 1)[1]
                self.drift[q].update(self.drift_changes(q))
            elif plot == "views":
                self.views.send({m: ev.view for m, ev in self.latest_eval.items()})
            self.dirty.discard(plot)

    def evaluations(self) -> dict[str, training.Evaluation]:
        """The truth's evaluation (the floor) and each method's latest one, as received."""
        return {**({"truth": self.truth} if self.truth is not None else {}), **self.latest_eval}

    # -- results for download ---------------------------------------------------------------
    def curves_frame(self) -> pd.DataFrame:
        """Every curve in long form: method, curve, quantity, x, value."""
        rows = []
        for m, hist in self.history.items():
            for p in hist:
                rows.append((m, "loss", "loss", p.step, p.loss))
                rows.append((m, "violation", "violation", p.step, p.violation))
        for step, name, value in self.mult_rows:
            rows.append(("auglag", "multiplier", name, step, value))
        evs = dict(self.latest_eval)
        if self.truth is not None:
            evs = {"truth": self.truth, **evs}
        for m, ev in evs.items():
            for kind, curves in (("drift", ev.drift), ("drift_ood", ev.drift_ood), ("learned_drift", ev.learned_drift)):
                for q, c in curves.items():
                    rows.extend((m, kind, q, t, r) for t, r in zip(c.t, c.rel))
        return pd.DataFrame(rows, columns=["method", "curve", "quantity", "x", "value"])

    def summary(self) -> dict:
        """The comparison's summary, in the shape of ``conserv compare --json``."""
        out = {
            "system": self.system_key,
            "system_params": training._plain_params(self.system),
            "config": training._plain_params(self.config),
            "truth": {k: v.to_dict() for k, v in self.truth.drift.items()} if self.truth else {},
            "methods": [],
        }
        for m in self.methods:
            ev = self.latest_eval.get(m)
            fin = self.finished.get(m)
            prog = self.progress.get(m)
            d = {
                "method": m,
                "status": fin.status if fin else "running",
                "message": fin.message if fin else "",
                "train_seconds": prog.elapsed if prog else 0.0,
                "steps": prog.step if prog else 0,
                "test_mse": ev.test_mse if ev else None,
                "drift": {k: v.to_dict() for k, v in ev.drift.items()} if ev else {},
            }
            if ev is not None:
                d["drift_ood"] = {k: v.to_dict() for k, v in ev.drift_ood.items()}
                d["learned_drift"] = {k: v.to_dict() for k, v in ev.learned_drift.items()}
                d["violation"] = ev.violation
                d["violation_ood"] = ev.violation_ood
            out["methods"].append(d)
        return out


class LabSession(param.Parameterized):
    """What one browser tab (or notebook) trains, and what it has seen.

    Settings live in :attr:`config` (a :class:`training.TrainConfig`), in one system
    object per system (:attr:`systems`) and in the parameters below. The live part
    (``status``, ``progress``, ``data``) is written only by :meth:`drain` and the button
    handlers, on the session's thread.
    """

    system = param.Selector(default="pendulum", objects=list(ALL_SYSTEMS), doc="The physical system.")
    methods = param.ListSelector(default=list(theme.DEFAULT_METHODS["pendulum"]),
                                 objects=list(cmethods.ALL_METHODS), doc="Methods to train side by side.")
    methods_text = param.String(default=",".join(theme.DEFAULT_METHODS["pendulum"]),
                                doc="The methods as 'a,b,c' (how the URL carries them).")
    preset = param.Selector(default="", objects=["", *presets.PRESETS], doc="The last preset applied.")
    ood = param.Boolean(default=False, doc="Show drift on the out-of-distribution test set.")

    phase = param.Selector(default="idle", objects=list(PHASES), doc="Where the session's run is (see PHASES).")
    status = param.String(default="Pick a system and methods, then press Train.")
    status_kind = param.Selector(default="info", objects=["info", "running", "success", "warning", "danger"])
    progress = param.Integer(default=0, bounds=(0, 100))
    speed = param.String(default="")
    running = param.Boolean(default=False)
    data = param.ClassSelector(class_=LiveData, allow_None=True, doc="The current run's live data.")
    streams = param.ClassSelector(class_=StreamSet, allow_None=True,
                                  doc="The streams the plots are built on (kept while the layout holds).")
    views_ready = param.Event(doc="Fires when the run's first system-view arrays arrive.")
    evals_per_run = param.Integer(default=EVALS_PER_RUN, bounds=(1, 1000),
                                  doc="Drift curves refresh this many times per run (each costs a rollout).")

    def __init__(self, threads: int | None = None, executor_: runs.Executor | None = None, **params):
        self.systems: dict[str, System] = {k: get_system(k) for k in ALL_SYSTEMS}
        # cpu by default, not the engine's "auto": these models are small, and on an H200 the
        # pendulum demo took 17 s on cuda against 5 s on one CPU thread (cuda stays offered)
        self.config = training.make_config("pendulum", device="cpu", **theme.DEMO_CONFIG["pendulum"])
        super().__init__(**params)
        self.threads = server_threads() if threads is None else threads
        #: where runs go (default: the process's :func:`executor`)
        self.executor = executor_ if executor_ is not None else executor()
        self.run: runs.RunHandle | None = None
        #: a settings change made while a run goes on (said in the status line)
        self._changed_during_run = False
        self._periodic = None
        self.autodrain = False
        #: build the new system's (empty) plots as soon as it is chosen (the dashboard sets it)
        self.autoprepare = False
        #: unexpected errors caught from callbacks (also shown in the status line)
        self.errors: list[str] = []
        #: the page's URL (set by the dashboard when served), for the JSON download
        self.location = None
        self._applying_preset = False
        self._apply_system_defaults()
        self.param.watch(self._system_changed, "system")
        self.param.watch(self._preset_chosen, "preset")
        self.config.param.watch(self._setting_changed, URL_CONFIG_FIELDS)
        for key, sysm in self.systems.items():
            sysm.param.watch(self._setting_changed, url_system_fields(key))
        self.param.watch(self._setting_changed, "methods")
        self.param.watch(self._methods_to_text, "methods")
        self.param.watch(self._methods_from_text, "methods_text")
        self.param.watch(self._ood_changed, "ood")

    # -- settings ---------------------------------------------------------------------------
    @property
    def current_system(self) -> System:
        return self.systems[self.system]

    def valid_methods(self) -> list[str]:
        return cmethods.valid_methods(self.current_system)

    def _apply_system_defaults(self) -> None:
        sysm = self.current_system
        base = training.make_config(self.system, **theme.DEMO_CONFIG.get(self.system, theme.DEMO_CONFIG_OTHER))
        values = {k: v for k, v in _values(base).items() if k not in (*KEEP_ON_SYSTEM_CHANGE, "threads")}
        values["horizon"] = float(sysm.horizon)
        values["invariants"] = []
        self.config.param.update(**values)
        # keep the ticked methods (or those a link names) if they all apply, else the defaults
        valid = self.valid_methods()
        wanted = [k.strip() for k in self.methods_text.split(",") if k.strip()]
        if not wanted or any(m not in valid for m in wanted):
            wanted = theme.default_methods(self.system, valid)
        if wanted != self.methods:
            self.methods = wanted

    def _system_changed(self, event) -> None:
        if not self._applying_preset:
            self.preset = ""  # the preset's settings belonged to the other system
        was_running = self.running
        self._discard_run()
        self._apply_system_defaults()
        self.data = None
        if self.autoprepare:
            self.prepare()
        title = self.current_system.title
        if was_running:
            self._enter("idle", f"Stopped the run because the system changed to {title}. Press Train to start.",
                        kind="warning")
        else:
            self._enter("idle", f"{title}: pick methods, then press Train.")

    def _setting_changed(self, *events) -> None:
        if self.running:
            if not self._changed_during_run:
                self._changed_during_run = True
                self.status = self._with_note(self.status)
        elif self.data is not None and self.phase in _ENDED:
            self._enter("idle", "Settings changed: press Train to rerun with them (the curves shown are from "
                        "the last run).")

    def _methods_to_text(self, event) -> None:
        text = ",".join(event.new)
        if text != self.methods_text:
            self.methods_text = text

    def _methods_from_text(self, event) -> None:
        keys = [k.strip() for k in event.new.split(",") if k.strip()]
        valid = self.valid_methods()
        bad = [k for k in keys if k not in valid]
        if bad:
            self._set_status(f"Unknown or inapplicable method(s) in the link: {', '.join(bad)}; "
                             f"{self.current_system.title} takes {', '.join(valid)}.", "warning")
        keys = [k for k in keys if k in valid]
        if keys and keys != self.methods:
            self.methods = keys

    def _ood_changed(self, event) -> None:
        if self.data is not None:
            self.data.set_ood(event.new)

    def apply_preset(self, name: str) -> None:
        """System, system parameters, methods and options of a named experiment (every
        other setting back to its default, the seed and device kept)."""
        p = presets.get_preset(name)
        self._applying_preset = True
        try:
            if self.system != p.system:
                self.system = p.system
            else:
                self._discard_run()
                self.data = None
            self._apply_system_defaults()
            sysm = self.systems[p.system]
            defaults = {k: v for k, v in type(sysm)().param.values().items() if k != "name"}
            sysm.param.update(**{**defaults, **p.system_params})
            # again: a system's own watchers may have reacted to the first update (the n-body
            # preset restores its softening when leaving the figure-eight)
            sysm.param.update(**p.system_params)
            if p.config:
                self.config.param.update(**p.config)
            self.methods = [m for m in p.methods if m in self.valid_methods()]
            self.preset = name
            if self.autoprepare:
                self.prepare()
        finally:
            self._applying_preset = False
        self._enter("idle", f"Preset “{p.title}”: {p.description} Press Train.")

    def _preset_chosen(self, event) -> None:
        if event.new and not self._applying_preset:
            self.apply_preset(event.new)

    def build_config(self) -> training.TrainConfig:
        """A fresh, validated copy of the settings for one run (later edits don't touch it)."""
        values = _values(self.config)
        values["threads"] = self.threads
        steps = values["steps"]
        values["eval_every"] = max(1, math.ceil(steps / self.evals_per_run))
        return training.make_config(None, **values)

    def build_system(self) -> System:
        """A fresh copy of the current system (the run keeps it while the user edits)."""
        return get_system(self.system, **_values(self.current_system))

    # -- actions ----------------------------------------------------------------------------
    def train(self) -> runs.RunHandle | None:
        """Submit a run with the current settings. A run of this session still waiting in
        the queue is replaced and keeps its place; one already training is stopped."""
        keys = [m for m in self.methods if m in self.valid_methods()]
        if not keys:
            self._set_status("Tick at least one method to train (the baseline is a good start).", "warning")
            return None
        try:
            sysm = self.build_system()
            cfg = self.build_config()
            if cfg.device not in available_devices():
                raise ParameterError(f"device {cfg.device!r} is not available here; choose one of "
                                     f"{', '.join(available_devices())}")
            spec = runs.RunSpec.of(sysm, keys, cfg, max_work=work_budget.max_work()).validate()
        except (ParameterError, ValueError) as err:
            self._set_status(f"Cannot start: {err}", "danger")
            return None
        old = self.run
        self.run = None
        self._changed_during_run = False
        handle = self.executor.submit(spec, replaces=old, wake=self._waker())
        self.run = handle
        streams = self.prepare(sysm, keys, cfg)
        streams.clear()
        data = LiveData(sysm, keys, cfg, streams)
        data.ood = self.ood
        self.data = data
        self.progress = 0
        self.speed = ""
        if handle.phase == "queued" and not self._starts_now(handle):
            self._enter("queued", self._queue_text(handle))
        else:
            self._enter("preparing", self._setup_text(data))
        self._ensure_periodic()
        return handle

    def _starts_now(self, handle: runs.RunHandle) -> bool:
        """Whether a free slot takes this run at once (no queue to show)."""
        place = handle.place()
        if place is None:
            return True
        ahead, _ = place
        running = sum(1 for h in self.executor.active() if h.phase == "running")
        return ahead == 0 and running < self.executor.slots

    def _setup_text(self, data: "LiveData") -> str:
        names = ", ".join(theme.SHORT[k] for k in data.methods)
        return f"Setting up {data.system.title}: generating training data for {names}…"

    @staticmethod
    def _queue_text(handle: runs.RunHandle) -> str:
        ahead, secs = handle.place() or (0, 0.0)
        line = "next in line" if ahead == 0 else ("1 run ahead" if ahead == 1 else f"{ahead} runs ahead")
        wait = f"about {secs:,.0f} s" if secs >= 1 else "a moment"
        return (f"Waiting for a free worker: {line}, {wait}. You can keep editing; pressing "
                "Train again replaces this run and keeps its place.")

    def prepare(self, system: System | None = None, methods: list[str] | None = None,
                config: training.TrainConfig | None = None) -> StreamSet:
        """The streams for these plots (default: the current settings): the current ones
        if they draw the same layout, else new ones (and the views rebuild on them)."""
        system = system if system is not None else self.current_system
        methods = methods if methods is not None else [m for m in self.methods if m in self.valid_methods()]
        config = config if config is not None else self.config
        if self.streams is None or self.streams.key != StreamSet.key_for(system, methods, config):
            self.streams = StreamSet(system, methods, config)
        return self.streams

    def stop(self) -> None:
        """End the run within a step; everything drawn so far stays."""
        if self.run is not None and self.running:
            self.run.stop()
            self._enter("stopping", "Stopping…")

    def reset(self) -> None:
        """Stop any run and clear every plot (the settings stay)."""
        self._discard_run()
        self.data = None
        if self.streams is not None:
            self.streams.clear()
        self.progress = 0
        self.speed = ""
        self._enter("idle", "Cleared. Press Train to start a new run.")

    def close(self) -> None:
        """End the session: stop the worker and the periodic callback."""
        self._discard_run()
        self._stop_periodic()

    def _discard_run(self) -> None:
        if self.run is not None:
            self.run.stop()
        self.run = None
        if self.phase in ACTIVE:
            self.param.update(phase="idle", running=False)

    # -- the periodic drain -----------------------------------------------------------------
    def _waker(self) -> Callable[[], None] | None:
        """For a served session: a function the worker may call (from its thread) to have
        this session drain on the server's next tick. ``add_next_tick_callback`` is the
        one Document method Bokeh allows from another thread."""
        if not self.autodrain:
            return None
        import panel as pn

        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            return None
        return lambda: doc.add_next_tick_callback(self._periodic_drain)

    def _ensure_periodic(self) -> None:
        if not self.autodrain or self._periodic is not None:
            return
        import panel as pn

        self._periodic = pn.state.add_periodic_callback(self._periodic_drain, period=DRAIN_MS)

    def _stop_periodic(self) -> None:
        if self._periodic is not None:
            try:
                self._periodic.stop()
            except Exception:  # already stopped with its document
                pass
            self._periodic = None

    def _periodic_drain(self) -> None:
        try:
            self.drain(budget=DRAW_BUDGET_S)
        except Exception as err:  # never let a drain error kill the callback silently
            self.report_error(err)
        if self.run is None and (self.data is None or not self.data.dirty):
            self._stop_periodic()

    def drain(self, budget: float | None = None) -> int:
        """Move the worker's records into streams and status; return how many were taken.

        Called on the session's thread: by a periodic callback when served (with a time
        ``budget`` for redrawing plots), directly by tests and scripts (``budget=None``:
        everything is drawn before it returns).
        """
        run, data = self.run, self.data
        if data is None:
            return 0
        records = []
        while run is not None and run.queue:
            records.append(run.queue.popleft())
        import panel as pn

        with pn.io.hold():
            if run is not None:
                self._consume(run, data, records)
                now = time.perf_counter()
                if budget is None or run.finished.is_set() or now - data.progress_at >= PROGRESS_EVERY_S:
                    data.progress_at = now
                    self._update_progress(run, data)
                if run is self.run and run.finished.is_set() and not run.queue:
                    # the verdict first: it reaches the page with this drain, the last
                    # redraws follow in the next ones
                    self._conclude(run, data)
            finished = self.run is None
            data.flush(budget, loss_every=0.0 if finished or budget is None else LOSS_EVERY_S)
            if data.views.data and not data.views_announced:
                data.views_announced = True
                self.views_ready = True
        return len(records)

    def _consume(self, run: runs.RunHandle, data: LiveData, records: list) -> None:
        for rec in records:
            if isinstance(rec, training.Progress):
                if data.first_step_at is None:
                    data.first_step_at = time.perf_counter()
                data.history[rec.method].append(rec)
                data.mark("loss", "violation")
                if rec.multipliers:
                    data.mult_rows.extend((rec.step, k, v) for k, v in rec.multipliers.items())
                    data.mark("multipliers")
            elif isinstance(rec, training.Evaluation):
                data.evaluation_arrived(rec, time.perf_counter())
            elif isinstance(rec, training.Finished):
                data.finished[rec.method] = rec
                last = run.latest.get(rec.method)
                hist = data.history[rec.method]
                if last is not None and (not hist or last.step > hist[-1].step):
                    hist.append(last)
                    data.mark("loss", "violation")
                data.mark("drift", "views")  # a finished method may close a round
            elif isinstance(rec, Started):
                if self.phase == "queued":
                    self._enter("preparing", self._setup_text(data))
            elif isinstance(rec, SetupDone):
                data.setup_seconds = rec.seconds
                if self.phase in ("queued", "preparing"):
                    self._enter("training", f"Training {len(data.methods)} method(s) on {data.system.title}…")
            elif isinstance(rec, Failed):
                data.failed = rec.message

    def _update_progress(self, run: runs.RunHandle, data: LiveData) -> None:
        if self.phase == "queued":
            if run.phase == "queued":
                self.status = self._with_note(self._queue_text(run))
            return
        latest = dict(run.latest)
        for m, p in latest.items():
            data.progress[m] = p
        steps = data.config.steps
        total = steps * len(data.methods)
        done = sum(data.finished[m].step if m in data.finished else (latest[m].step if m in latest else 0)
                   for m in data.methods)
        # a finished method counts as complete for the bar and for the time left
        remaining = sum(0 if m in data.finished else steps - (latest[m].step if m in latest else 0)
                        for m in data.methods)
        self.progress = int(round(100 * (total - remaining) / max(total, 1)))
        if data.first_step_at is not None and done:
            wall = max(time.perf_counter() - data.first_step_at, 1e-3)
            rate = done / wall
            left = remaining / max(rate, 1e-9)
            step_now = max((latest[m].step for m in latest), default=0)
            self.speed = (f"step {step_now:,} / {steps:,} · {rate:,.0f} steps/s (all methods) "
                          f"· {left:,.0f} s left" if remaining else
                          f"{done:,} steps · {rate:,.0f} steps/s (all methods)")
        if self.phase == "training" and not run.stop_requested and data.first_step_at is not None:
            names = ", ".join(theme.SHORT[m] for m in data.methods if m not in data.finished)
            self._enter("training", f"Training {names} on {data.system.title}. Drift curves refresh every "
                        f"{data.config.eval_every} steps.")

    def _conclude(self, run: runs.RunHandle, data: LiveData) -> None:
        self.run = None
        self._changed_during_run = False
        fins = data.finished
        if data.failed:
            self._enter("failed", f"The run failed: {data.failed}. Curves already shown are kept.")
            return
        diverged = [f for f in fins.values() if f.status in ("diverged", "error")]
        if diverged:
            msgs = "; ".join(f"{theme.SHORT[f.method]} diverged (NaN): {f.message}" for f in diverged)
            self._enter("diverged", msgs + ". Everything already shown is kept.")
            return
        if any(f.status == "stopped" for f in fins.values()) or len(fins) < len(data.methods):
            step = max((f.step for f in fins.values()), default=0)
            self._enter("stopped", f"Stopped at step {step:,} of {data.config.steps:,}; the curves so far are "
                        "kept. Press Train to start a new run.")
            return
        self.progress = 100
        self._enter("done", self.verdict(data))

    def verdict(self, data: LiveData) -> str:
        """Each method's drift at the horizon, and how the best compares with the baseline."""
        q = data.invariants[0]
        title = theme.INVARIANTS.get(q, (q, ""))[0].lower()
        finals = {m: _final(data.latest_eval[m].drift[q]) for m in data.methods
                  if m in data.latest_eval and q in data.latest_eval[m].drift}
        parts = [f"{theme.SHORT[m]} {_fmt(v)}" for m, v in finals.items()]
        if data.truth is not None and q in data.truth.drift:
            parts.append(f"truth {_fmt(_final(data.truth.drift[q]))}")
        secs = max((p.elapsed for p in data.progress.values()), default=0.0)
        horizon = data.truth.drift[q].t[-1] if data.truth is not None and q in data.truth.drift else None
        at = f" at t = {horizon:g}" if horizon is not None else ""
        text = f"Done ({secs:.0f} s of training per method). {title.capitalize()}{at}: " + " · ".join(parts) + "."
        base = finals.get("baseline")
        others = {m: v for m, v in finals.items() if m != "baseline" and math.isfinite(v)}
        if not data.system.is_conserved(q):
            text += (f" With these parameters {title.split()[0]} is not conserved: the right answer is the "
                     "truth's curve, and a method that holds it constant is wrong.")
        elif base is not None and math.isfinite(base) and base > 0 and others:
            best = min(others, key=others.get)
            ratio = base / others[best] if others[best] > 0 else math.inf
            if ratio == math.inf:
                text += f" {theme.SHORT[best]} keeps it exactly; the baseline does not."
            elif ratio >= 2:
                text += f" {theme.SHORT[best]} drifts {ratio:,.0f}× less than the baseline."
            else:
                text += " No method beats the baseline by much here: try more steps, or look at the system view."
        return text

    def _enter(self, phase: str, text: str, kind: str | None = None) -> None:
        """The one place the run's phase changes: ``phase`` with the status ``text``; the
        line's colour follows from the phase unless ``kind`` says otherwise (an idle
        session's warning). Raises ``ValueError`` on a transition :data:`TRANSITIONS`
        does not allow (a bug, not a user's doing)."""
        if phase not in TRANSITIONS[self.phase]:
            raise ValueError(f"a session cannot go from {self.phase!r} to {phase!r}")
        active = phase in ACTIVE
        if phase in ACTIVE:
            text = self._with_note(text)
        self.param.update(phase=phase, running=active, status=text, status_kind=kind or PHASES[phase])

    def _with_note(self, text: str) -> str:
        if self._changed_during_run and self.phase in ACTIVE:
            return text.rstrip(". ") + ". (Your change applies to the next run.)"
        return text

    def _set_status(self, text: str, kind: str) -> None:
        """A notice that changes no phase (a refused click, a bad link, an error)."""
        self.param.update(status=text, status_kind=kind)

    def report_error(self, err: Exception) -> None:
        """Show an unexpected error from a callback in the status line (never raise)."""
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        self.errors.append(f"{type(err).__name__}: {msg}")
        self._set_status(f"{type(err).__name__}: {msg}", "danger")

    # -- downloads --------------------------------------------------------------------------
    def results_csv(self) -> io.StringIO:
        buf = io.StringIO()
        if self.data is not None:
            self.data.curves_frame().to_csv(buf, index=False)
        else:
            buf.write("method,curve,quantity,x,value\n")
        buf.seek(0)
        return buf

    def results_json(self) -> io.StringIO:
        payload = self.data.summary() if self.data is not None else {}
        payload["url_query"] = self.location.search if self.location is not None else "?" + self.query_string()
        text = json.dumps(payload, indent=1, default=_json_default, allow_nan=True)
        text = text.replace("NaN", "null").replace("-Infinity", "null").replace("Infinity", "null")
        return io.StringIO(text)

    def query_string(self) -> str:
        """The settings as a URL query (what the address bar holds when served)."""
        from urllib.parse import urlencode

        q = {"system": self.system, "methods": ",".join(self.methods)}
        for k in URL_CONFIG_FIELDS:
            v = getattr(self.config, k)
            if v is not None:
                q[k] = json.dumps(v) if isinstance(v, list) else v
        for k in url_system_fields(self.system):
            q[f"{self.system}.{k}"] = getattr(self.current_system, k)
        return urlencode(q)


def _values(obj: param.Parameterized) -> dict:
    """Parameter values of ``obj`` (copies of lists), without ``name``."""
    return {k: list(v) if isinstance(v, list) else v for k, v in obj.param.values().items() if k != "name"}


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
