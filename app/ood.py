"""The live out-of-distribution slider: a finished run's models evaluated again further
out, with no training step (issue 29, part 3).

After a run the session holds each method's trained weights (``runs.Weights``). Moving
:attr:`OODProbe.factor` asks the session's executor to re-evaluate them at that factor
(:meth:`conserv_core.runs.Executor.reevaluate`: a thread in process, a Dask task in a
room; never the server's own thread). Moves made while a job is out are merged: only the
latest factor is sent next. The answer replaces the out-of-distribution curves the drift
view draws (:meth:`app.rundata.LiveData.set_stress`), so a student sees, per method, the
*true* invariant and a hard model's own learned one move apart as the starts leave the
training band.

A finished run's models are also evaluated **ahead**, at every value of the slider
(:data:`STEP` apart, nearest the run's own factor first): one job per factor holding
every method (one problem built, not one per method), as many factors at once as the
executor has slots, below every run and every move in the executor's queue
(``urgent=False``), and only while no run waits for a slot. By the time a student reaches
for the slider its answers are here, and a move is drawn at once from them
(``benchmarks/bench_dashboard.py`` times it). A move to a factor not yet evaluated is sent
at once, ahead of the rest.
"""

from __future__ import annotations

import math
import time

import param

from conserv_core import records

#: the slider's range: from the training band to ten times beyond it
LOW, HIGH = 1.0, 10.0
#: the slider's step: its values ×1, ×2, … ×10 are the factors evaluated ahead. Ten of
#: them on the default demo cost the workers about 6 s of CPU per finished run (a third of
#: the run's own), against 13 s for steps of 0.5
STEP = 1.0


def ahead_order(run_factor: float) -> list[float]:
    """The slider's values, nearest ``run_factor`` first (ties: the lower first)."""
    values = [LOW + k * STEP for k in range(int(round((HIGH - LOW) / STEP)) + 1)]
    return sorted(values, key=lambda f: (abs(f - run_factor), f))


class OODProbe(param.Parameterized):
    """The slider's value and its one job at a time, for one session."""

    factor = param.Number(default=3.0, bounds=(LOW, HIGH), step=STEP,
                          doc="Out-of-distribution factor the finished run's models are evaluated at.")
    available = param.Boolean(default=False, doc="A finished run's weights are here to re-evaluate.")
    busy = param.Boolean(default=False, doc="A re-evaluation is out.")
    note = param.String(default="", doc="What the last re-evaluation showed, in a sentence.")

    def __init__(self, **params):
        super().__init__(**params)
        self._data = None
        self._job = None  # (factor, future, perf_counter at submit)
        self._pending: float | None = None
        #: the factors evaluated ahead now and their futures, the factors still to do, and
        #: a move that waits for one of those out: (factor, perf_counter at the move)
        self._ahead: dict[float, list] = {}
        self._todo: list[float] = []
        self._wanted: tuple[float, float] | None = None
        self._quiet = False
        #: answers already had for this run, by factor: a move back to one is drawn at once
        self._seen: dict[float, dict] = {}
        #: seconds from a move to its answer, the latest first (for the benchmark)
        self.latencies: list[float] = []

    def attach(self, data) -> None:
        """A new run's data: the slider goes back to the run's own factor, unavailable
        until the run has finished with weights."""
        self._data, self._job, self._pending = data, None, None
        self._ahead, self._todo, self._wanted = {}, [], None
        self._seen = {}
        self._quiet = True
        try:
            run_factor = float(data.config.ood_factor) if data is not None else min(self.factor, HIGH)
            self.param.factor.bounds = (LOW, max(HIGH, run_factor))
            self.param.update(factor=run_factor, available=False, busy=False, note="")
        finally:
            self._quiet = False

    def arm(self, data) -> None:
        """The run has finished: with weights of at least one method, the slider works."""
        if data is self._data and data is not None and data.weights and data.spec is not None:
            self.available = True
            self._todo = [f for f in ahead_order(float(data.config.ood_factor)) if f not in self._seen]

    @property
    def working(self) -> bool:
        """A move's job or an evaluation ahead is out, or factors wait to be evaluated
        ahead: the session keeps draining."""
        return self._job is not None or bool(self._ahead) or bool(self._todo)

    def request(self, executor, factor: float | None = None) -> bool:
        """Ask for the models at ``factor`` (default: the slider's); merged with a job
        already out, drawn at once from an earlier answer at the same factor. Returns
        whether the session must drain (a job was sent, or an earlier answer shown)."""
        if self._quiet or not self.available or self._data is None:
            return False
        factor = self.factor if factor is None else float(factor)
        if self._job is not None:
            self._pending = factor
            return False
        data = self._data
        if factor in self._seen:  # had already: no job, drawn with the next drain
            self._wanted = None
            self.busy = False
            self._show(data, factor, self._seen[factor], 0.0)
            return True
        if factor in self._todo:
            self._todo.remove(factor)  # sent now, not again ahead
        if factor in self._ahead:
            self._wanted = (factor, time.perf_counter())  # on its way: drawn when it lands
            self.busy = True
            return True
        self._wanted = None
        fut = executor.reevaluate(data.spec, dict(data.weights), ood_factor=factor)
        self._job = (factor, fut, time.perf_counter())
        self.busy = True
        return True

    def poll(self, executor) -> bool:
        """Take a finished job's answer into the run's data (its OOD curves redraw); send
        the latest pending move, then the next factor ahead. Returns whether an answer
        was drawn."""
        drawn = self._take_move(executor)
        drawn = self._take_ahead() or drawn
        self._send_ahead(executor)
        self.busy = self._job is not None or self._wanted is not None
        return drawn

    def _answers(self, factor: float, fut) -> dict | None:
        """The futures' answers (one per method, each with the truth) as evaluations, kept
        for a move back; None, with the note saying why, if a job failed."""
        try:
            out = {}
            for f in fut:
                out.update(f.result())
        except Exception as err:  # a worker died or the model blew up: say so, keep the curves
            self.note = f"Could not evaluate at ×{factor:g}: {type(err).__name__}: {err}"
            return None
        evs = {k: records.from_dict(v) for k, v in out.items()}
        self._seen[factor] = evs
        return evs

    def _take_move(self, executor) -> bool:
        if self._job is None:
            return False
        factor, fut, t0 = self._job
        if not all(f.done() for f in fut):
            return False
        self._job = None
        evs = self._answers(factor, fut)
        if evs is not None and self._data is not None:
            self._show(self._data, factor, evs, time.perf_counter() - t0)
        pending, self._pending = self._pending, None
        if pending is not None and pending != factor:
            self.request(executor, pending)
        return evs is not None

    def _take_ahead(self) -> bool:
        drawn = False
        for factor in [f for f, fut in self._ahead.items() if all(x.done() for x in fut)]:
            evs = self._answers(factor, self._ahead.pop(factor))
            if self._wanted is None or self._wanted[0] != factor:
                continue
            wanted, self._wanted = self._wanted, None
            if evs is not None and self._data is not None:
                self._show(self._data, factor, evs, time.perf_counter() - wanted[1])
                drawn = True
        return drawn

    def _send_ahead(self, executor) -> None:
        """As many factors ahead at once as the executor has slots, and none while a run
        waits for a slot (a room's runs come first; the cluster also queues these below
        every run)."""
        if self._data is None or not self.available:
            return
        if self._todo and any(h.phase == "queued" for h in executor.active()):
            return
        while self._todo and len(self._ahead) < max(1, executor.slots):
            factor = self._todo.pop(0)
            if factor in self._seen or factor in self._ahead:
                continue
            try:
                fut = executor.reevaluate(self._data.spec, dict(self._data.weights), urgent=False,
                                          ood_factor=factor)
            except Exception:  # checked like a move; a refusal here only means no answer ahead
                self._todo = []
                return
            self._ahead[factor] = fut

    def _show(self, data, factor: float, evs: dict, seconds: float) -> None:
        data.set_stress(factor, evs)
        self.latencies = [seconds, *self.latencies[:49]]
        self.note = describe(data, factor, evs)


def _fmt(x: float) -> str:
    return "NaN" if not math.isfinite(x) else ("0" if x == 0 else f"{x:.1e}")


def describe(data, factor: float, evs: dict) -> str:
    """One sentence on the models at ``factor``: per method the largest *true* drift
    of the first invariant on the OOD starts and, for a hard model, its own learned
    one (the flow: the dye's mass drift out to later times); the OOD constraint
    violation where a system has no OOD drift."""
    from app import theme

    q = data.invariants[0] if data.invariants else None
    parts = []
    for m in data.methods:
        ev = evs.get(m)
        if ev is None:
            continue
        if q is not None and q in ev.drift_ood:
            text = f"{theme.SHORT[m]} true {_fmt(ev.drift_ood[q].largest)}"
            own = ev.learned_drift.get("energy_ood")
            if own is not None and q == "energy":
                text += f", own {_fmt(own.largest)}"
        else:
            text = f"{theme.SHORT[m]} {_fmt(ev.violation_ood)}"
        parts.append(text)
    if q is not None and any(q in ev.drift_ood for ev in evs.values()):
        if getattr(data.system, "kind", "ode") == "field":  # the flow: the dye carried at later times
            what = (f"largest {q} drift of the dye patch carried out to later times "
                    f"(to ×{factor:g} the training window)")
        else:
            what = f"largest {q} drift on starts ×{factor:g} beyond the training band"
    else:
        what = f"constraint violation out to ×{factor:g} the training window"
    return f"Same trained models, {what}: " + " · ".join(parts) + "."
