"""What one run has reported so far, and the channels that feed its plots.

:class:`LiveData` holds the records a session has received; :class:`StreamSet` the
plots' data (one :class:`Channel` per plot), which the views in :mod:`app.views` draw.
Only changes travel: new loss points, the drift curves of new evaluations.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import holoviews as hv
import numpy as np
import pandas as pd

from conserv_core import integrators, runs, training
from conserv_core import methods as methods_registry
from conserv_core.systems import System

from app import export

#: drift values below this are drawn at it (a log axis has no zero)
DRIFT_FLOOR = 1e-12
#: at most this many loss points per method reach the browser (thinned where the run is)
MAX_LOSS_POINTS = runs.MAX_PROGRESS


def drift_keys(system: System) -> list[str]:
    """The drift plots a system gets, in order."""
    if system.kind == "field":
        return ["mass", "divergence"]
    return list(system.invariant_names())


def extra_series(system: System, methods: list[str], config: training.TrainConfig) -> dict[str, list[str]]:
    """Per drift plot, the series beside each method's own curve that the rollout options
    add: ``"<m>:raw"``, the same model without the projection (projection on), and on the
    energy plot ``"<m>:own_rk4"``, a learned energy under RK4 (discrete gradient on)."""
    out: dict[str, list[str]] = {q: [] for q in drift_keys(system)}
    if config.projection:
        for q in out:
            if q != "divergence":
                out[q] += [f"{m}:raw" for m in methods]
    if config.integrator in integrators.NEEDS_ENERGY and "energy" in out:
        out["energy"] += [f"{m}:own_rk4" for m in methods if has_learned_energy(m, system)]
    return out


def has_learned_energy(method: str, system: System) -> bool:
    """Whether ``method``'s model on ``system`` has an energy of its own (drawn dotted)."""
    return methods_registry.get_method(method).has_learned_energy(system)


def has_pair_potential(method: str, system: System) -> bool:
    """Whether ``method``'s model on ``system`` learns one pair function of distance (the
    symmetric n-body HNN), which the n-body view draws against the true one."""
    return methods_registry.get_method(method).has_pair_potential(system)


def multiplier_methods(methods: list[str]) -> list[str]:
    """The methods of ``methods`` whose constraint learns multipliers (the augmented
    Lagrangian): the multiplier plot shows theirs."""
    return [m for m in methods if methods_registry.get_method(m).has_multipliers]


def plot_drift(curve) -> dict:
    """A drift curve as plot data: zeros floored for the log axis, t = 0 dropped
    (every drift is exactly 0 there), non-finite values kept as gaps."""
    t = np.asarray(curve.t, dtype=float)[1:]
    rel = np.asarray(curve.rel, dtype=float)[1:]
    rel = np.where(np.isfinite(rel), np.maximum(rel, DRIFT_FLOOR), np.nan)
    return {"t": t, "drift": rel}


def multiplier_names(system: System, config: training.TrainConfig) -> list[str]:
    """What the augmented Lagrangian reports: one multiplier per constrained invariant, and μ."""
    inv = ["divergence"] if system.kind == "field" else training.constrained_invariants(system, config)
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
        self.multiplier_names = multiplier_names(system, config) if multiplier_methods(methods) else []
        #: {method: {"step", "loss"}} and {method: {"step", "violation"}}
        self.loss = Channel()
        self.violation = Channel()
        #: {multiplier: {"step", "value"}}
        self.multipliers = Channel()
        #: per invariant {series: {"t", "drift"}}; series: "truth", a method, "<method>:own"
        self.drift = {q: Channel() for q in self.invariants}
        #: per drift plot, the series the rollout options add (see :func:`extra_series`)
        self.extra = extra_series(system, self.methods, config)
        #: {method: Evaluation.view}, the system view's arrays
        self.views = hv.streams.Pipe(data={})
        self.key = self.key_for(system, methods, config)

    @staticmethod
    def key_for(system: System, methods: list[str], config: training.TrainConfig) -> tuple:
        """What decides the plots' layout (not their data)."""
        dof = system.dof if system.kind == "ode" else 0
        names = multiplier_names(system, config) if multiplier_methods(methods) else []
        extra = tuple(tuple(v) for v in extra_series(system, methods, config).values())
        # a damped run's energy plot measures the error against the truth's E(t): another title
        kept = tuple(system.is_conserved(q) for q in drift_keys(system)) if system.kind == "ode" else ()
        return system.key, dof, tuple(methods), tuple(drift_keys(system)), tuple(names), extra, kept

    @property
    def has_multipliers(self) -> bool:
        return bool(multiplier_methods(self.methods))

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
        #: the spec the run was submitted with, and each method's trained weights
        #: (``runs.Weights``: (step, state)) once it finished: what the OOD slider re-evaluates
        self.spec = None
        self.weights: dict[str, tuple[int, dict]] = {}
        #: the models re-evaluated at the slider's factor (:meth:`set_stress`; None: the run's own)
        self.stressed: dict[str, training.Evaluation] | None = None
        self.stress_factor: float | None = None
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
    def has_multipliers(self) -> bool:
        return bool(multiplier_methods(self.methods))

    @property
    def n_points(self) -> int:
        """Loss points received so far, all methods together."""
        return sum(len(h) for h in self.history.values())

    # -- what the plots show ----------------------------------------------------------------
    def _drift_sources(self, q: str):
        """(series, what it is drawn from, its curve) for drift plot ``q``."""
        evs = {"truth": self.truth, **self.latest_eval} if self.truth is not None else dict(self.latest_eval)
        for key, ev in evs.items():
            if self.ood and self.stressed is not None and key in self.stressed:
                ev = self.stressed[key]  # the same model, evaluated at the slider's factor
            source = ev.drift_ood if (self.ood and ev.drift_ood) else ev.drift
            if q in source:
                yield key, (id(source[q]), self.ood), source[q]
            ood = "_ood" if (self.ood and ev.drift_ood) else ""
            for suffix, name in ((":own", f"energy{ood}"), (":own_rk4", f"energy_rk4{ood}")):
                if q == "energy" and name in ev.learned_drift:
                    yield f"{key}{suffix}", (id(ev.learned_drift[name]), self.ood), ev.learned_drift[name]
            raw = f"{q}_ood" if (self.ood and ev.drift_ood) else q
            if raw in ev.unprojected:
                yield f"{key}:raw", (id(ev.unprojected[raw]), self.ood), ev.unprojected[raw]

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

    def set_stress(self, factor: float, evals: dict[str, training.Evaluation]) -> None:
        """Show the out-of-distribution curves of ``evals`` (the run's models and the
        truth re-evaluated at ``factor``, :mod:`app.ood`) in place of the run's own."""
        self.stress_factor, self.stressed = factor, evals
        self.mark("drift")

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
        """Every curve in long form (:func:`app.export.curves_frame`)."""
        return export.curves_frame(self)

    def summary(self) -> dict:
        """The comparison's summary, in the shape of ``conserv compare --json``."""
        return export.summary(self)
