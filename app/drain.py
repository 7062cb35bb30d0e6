"""The drain: a run's records, sent from another thread, moved into a session's plots
and live values on the session's own thread.

A run's worker (a Dask worker or a thread, :mod:`app.executor`) appends records to its
handle's ``deque``. :class:`Drainer` takes them off and turns them into the run's
:class:`app.rundata.LiveData` (curves, evaluations, weights) and the session's progress
bar and steps/s line; what changes the run's phase (the run set up, a pause reached,
the run ended) it hands back to the session (:class:`app.session.LabSession`), which
owns the phase.

A served session drains on a :class:`Periodic` callback every :data:`DRAIN_MS`; tests
and scripts call :meth:`Drainer.drain` themselves.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable

from conserv_core import records, runs, training

from app import theme
from app.rundata import LiveData

if TYPE_CHECKING:
    from app.session import LabSession

#: records a run sends besides the trainer's (see :mod:`conserv_core.runs`)
SetupDone, Failed, Started, Ended = runs.SetupDone, runs.Failed, runs.Started, runs.Ended
Paused = records.Paused

#: how often a served session drains the worker's records (ms)
DRAIN_MS = 200
#: seconds of plot redrawing a served drain may spend (the rest waits for the next drain)
DRAW_BUDGET_S = 0.05
#: the loss plots are redrawn at most this often while a run goes on (seconds)
LOSS_EVERY_S = 0.6
#: the progress bar and the steps/s line are updated at most this often while a run goes
#: on (seconds): each update is a message to the page
PROGRESS_EVERY_S = 0.5


class Periodic:
    """A callback every ``period_ms`` on the session's event loop, until :meth:`stop`.

    Served (the current document has a session), it is Bokeh's own periodic callback on
    that document (``Document.add_periodic_callback``), not Panel's: Panel's marks the
    whole server busy on every tick, and each mark runs the param watchers of every
    session's busy indicator (profiled: 80 % of the server's main thread with 30
    sessions, against a few percent for the drains themselves). Bokeh runs it with the
    document locked and current, as Panel would, and drops it when the session is
    destroyed. Elsewhere (a notebook) it is ``pn.state.add_periodic_callback``.
    """

    def __init__(self, callback: Callable[[], None], period_ms: int):
        self._callback, self._period = callback, period_ms
        self._doc = None
        self._handle = None
        self._wanted = False

    @property
    def active(self) -> bool:
        return self._wanted

    def start(self) -> None:
        if self._wanted:
            return
        import panel as pn

        self._wanted = True
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            self._handle = pn.state.add_periodic_callback(self._callback, period=self._period)
            return
        self._doc = doc
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # another thread: a Document is changed on its own loop only
            doc.add_next_tick_callback(self._register)
            return
        self._register()

    def _register(self) -> None:
        if self._wanted and self._handle is None and self._doc is not None:
            self._handle = self._doc.add_periodic_callback(self._callback, self._period)

    def stop(self) -> None:
        handle, doc = self._handle, self._doc
        self._wanted, self._handle, self._doc = False, None, None
        if handle is None:
            return
        try:
            if doc is not None:
                doc.remove_periodic_callback(handle)
            else:
                handle.stop()
        except Exception:  # already dropped with its document
            pass


class Drainer:
    """Moves one session's run records into its live data, status and progress."""

    def __init__(self, session: "LabSession"):
        self.session = session
        self.periodic = Periodic(self._tick, DRAIN_MS)

    # -- when to drain ------------------------------------------------------------------------
    def waker(self) -> Callable[[], None] | None:
        """For a served session: a function the worker may call (from its thread) to have
        this session drain on the server's next tick. ``add_next_tick_callback`` is the
        one Document method Bokeh allows from another thread."""
        if not self.session.autodrain:
            return None
        import panel as pn

        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            return None
        return lambda: doc.add_next_tick_callback(self._tick)

    def ensure_periodic(self) -> None:
        if self.session.autodrain:
            self.periodic.start()

    def stop_periodic(self) -> None:
        self.periodic.stop()

    def now(self) -> None:
        """A served session's drain at once, as its next tick would do it: for a change
        the user waits on whose answer is already here (a slider move to a factor
        evaluated ahead), rather than up to :data:`DRAIN_MS` later."""
        if self.session.autodrain:
            self._tick()

    def _tick(self) -> None:
        s = self.session
        try:
            self.drain(budget=DRAW_BUDGET_S)
        except Exception as err:  # never let a drain error kill the callback silently
            s.report_error(err)
        if s.run is None and (s.data is None or not s.data.dirty) and not s.ood_probe.working:
            self.stop_periodic()

    # -- the drain ----------------------------------------------------------------------------
    def drain(self, budget: float | None = None) -> int:
        """Move the worker's records into streams and status; return how many were taken.

        Called on the session's thread: by the periodic callback when served (with a time
        ``budget`` for redrawing plots), directly by tests and scripts (``budget=None``:
        everything is drawn before it returns).
        """
        s = self.session
        run, data = s.run, s.data
        if data is None:
            return 0
        taken = []
        while run is not None and run.queue:
            taken.append(run.queue.popleft())
        restarts = [i for i, rec in enumerate(taken) if isinstance(rec, runs.Restarted)]
        if restarts:  # the lost attempt's records are void: start over
            taken = taken[restarts[-1]:]
            data = s._start_over(taken[0])
        import panel as pn

        with pn.io.hold():
            if run is not None:
                self._consume(run, data, taken)
                now = time.perf_counter()
                if budget is None or run.finished.is_set() or now - data.progress_at >= PROGRESS_EVERY_S:
                    data.progress_at = now
                    self._update_progress(run, data)
                if run is s.run and run.finished.is_set() and not run.queue:
                    # the verdict first: it reaches the page with this drain, the last
                    # redraws follow in the next ones
                    s._conclude(run, data)
            s.ood_probe.poll(s.executor)  # a slider move's answer redraws the OOD curves
            finished = s.run is None
            data.flush(budget, loss_every=0.0 if finished or budget is None else LOSS_EVERY_S)
            if data.views.data and not data.views_announced:
                data.views_announced = True
                s.views_ready = True
        return len(taken)

    def _consume(self, run: runs.RunHandle, data: LiveData, taken: list) -> None:
        s = self.session
        for rec in taken:
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
                if s.phase == "queued":
                    s._enter("preparing", s._setup_text(data))
            elif isinstance(rec, SetupDone):
                data.setup_seconds = rec.seconds
                if s.phase in ("queued", "preparing"):
                    s._enter("training", f"Training {len(data.methods)} method(s) on {data.system.title}…")
            elif isinstance(rec, Failed):
                data.failed = rec.message
            elif isinstance(rec, Paused):
                s._reached_pause(run, data, rec)
            elif isinstance(rec, runs.Weights):
                data.weights[rec.method] = (rec.step, rec.state)

    def _update_progress(self, run: runs.RunHandle, data: LiveData) -> None:
        s = self.session
        if s.phase == "queued":
            if run.phase == "queued":
                s.status = s._with_note(s._queue_text(run))
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
        s.progress = int(round(100 * (total - remaining) / max(total, 1)))
        if s.phase == "paused":
            return  # the steps/s line keeps its last value; the clock restarts with the run
        if data.first_step_at is not None and done:
            wall = max(time.perf_counter() - data.first_step_at, 1e-3)
            rate = done / wall
            left = remaining / max(rate, 1e-9)
            step_now = max((latest[m].step for m in latest), default=0)
            s.speed = (f"step {step_now:,} / {steps:,} · {rate:,.0f} steps/s (all methods) "
                       f"· {left:,.0f} s left" if remaining else
                       f"{done:,} steps · {rate:,.0f} steps/s (all methods)")
        pausing = s.paused  # "Pausing at the next evaluation…" stays until the run waits
        if s.phase == "training" and not run.stop_requested and not pausing and data.first_step_at is not None:
            names = ", ".join(theme.SHORT[m] for m in data.methods if m not in data.finished)
            s._enter("training", f"Training {names} on {data.system.title}. Drift curves refresh every "
                     f"{data.config.eval_every} steps.")
