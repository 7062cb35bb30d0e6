"""The Sweep view: many trainings from the current settings, the accuracy/conservation
front filling in as they finish, and the constraint ladder.

A sweep is the current methods × a λ ladder × a few seeds (everything else as set), built
by :func:`conserv_core.sweeps.grid` and run by :func:`conserv_core.sweeps.run` on the
session's own cluster when it has one (``conserv serve``: the server never trains, and a
sweep's tasks wait behind live runs), else on a thread of this process (a notebook).
Rows come back on that thread; :meth:`SweepView.drain` (a periodic callback when served
or in a notebook, called by hand in tests) moves them onto the page, redrawing at most
every :data:`REDRAW_S`. A results file (CSV or Parquet, as ``conserv sweep`` writes it) can
be opened instead.

The card's sweep is one explicit phase (:data:`app.phases.SWEEP_PHASES`, the session's
vocabulary), changed only by :meth:`SweepView._enter` with its status line; the line's
colour and ``running`` follow from the phase, and both are read-only elsewhere.

The plots are built only when the card is first opened: a page that never opens it pays
nothing for it.
"""

from __future__ import annotations

import collections
import io
import threading
import time

import holoviews as hv
import numpy as np
import panel as pn
import param

from conserv_core import budget as work_budget
from conserv_core import pareto, runs, sweeps
from conserv_core.systems import ParameterError, get_system

from app import settings, theme
from app.phases import SWEEP_ACTIVE, SWEEP_PHASES, SWEEP_TRANSITIONS
from app.session import LabSession
from app.views import page

#: cells one dashboard sweep may have (a room shares the cluster; ``conserv sweep`` has more)
MAX_CELLS = 48
#: the plots are redrawn at most this often while rows arrive (seconds)
REDRAW_S = 1.0
#: how often a served or notebook page moves arrived rows onto the page (ms)
DRAIN_MS = 500
HEIGHT = 320
#: columns a results file must have to be drawn
REQUIRED = ("method", "seed", "status", "test_mse")


def parse_lams(text: str) -> list[float]:
    """``"0.1, 1, 10"`` as floats, refused with the setting's name and what it takes."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    bounds = _lam_bounds()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = None
    if not values or any(not (bounds[0] <= v <= bounds[1]) for v in values):
        raise ParameterError(f"λ ladder must be numbers from {bounds[0]:g} to {bounds[1]:g}, separated by "
                             f"commas (e.g. 0.1, 1, 10, 100); got {settings.quote(text)}")
    return sorted(set(values))


def _lam_bounds() -> tuple[float, float]:
    from conserv_core import training

    lo, hi = training.TrainConfig.param["lam"].bounds
    return float(lo), float(hi)


def read_results(name: str, content: bytes):
    """A results file (``.csv`` or ``.parquet``) as a DataFrame; ``ParameterError`` if it
    is not one ``conserv sweep`` wrote."""
    import pandas as pd

    try:
        if name.lower().endswith(".parquet"):
            df = pd.read_parquet(io.BytesIO(content))
        else:
            df = pd.read_csv(io.BytesIO(content))
    except Exception as err:  # pandas raises many kinds for a bad file
        raise ParameterError(f"results file {settings.quote(name)} could not be read: {type(err).__name__}") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing or not any(c.startswith("drift_") for c in df.columns):
        raise ParameterError(f"results file {settings.quote(name)} is not a sweep's rows: it lacks "
                             f"{', '.join(missing) or 'drift columns'} (write one with conserv sweep)")
    return df


def quantities(df) -> list[str]:
    """The invariants a sweep's rows have drift columns for, in their order."""
    out = []
    for c in df.columns:
        if c.startswith("drift_") and c.endswith("_max") and not c.endswith("_ood_max"):
            out.append(c[len("drift_"):-len("_max")])
    return out


class SweepView(pn.viewable.Viewer):
    """Start a modest sweep from the current settings (or open a results file) and watch
    the Pareto front fill in."""

    session = param.ClassSelector(class_=LabSession)
    lams = param.String(default="0.1, 1, 10, 100",
                        doc="λ values for every method that reads λ (the penalty); the others run once per seed.")
    n_seeds = param.Integer(default=3, bounds=(1, 10), doc="Seeds 0 … n−1 for every cell: the spread over seeds.")
    quantity = param.Selector(default=None, objects=[], allow_None=True, doc="The invariant whose drift is drawn.")
    ladder_seed = param.Integer(default=0, bounds=(0, None), doc="The seed the ladder's markers show.")
    phase = param.Selector(default="idle", objects=list(SWEEP_PHASES), constant=True,
                           doc="Where the card's sweep is (see SWEEP_PHASES); changed only by _enter.")
    status = param.String(default="")
    status_kind = param.Selector(default="info", objects=["info", "running", "success", "warning", "danger"])
    running = param.Boolean(default=False, constant=True,
                            doc="Whether a sweep runs (the phase is one of SWEEP_ACTIVE): follows the phase.")

    def __init__(self, **params):
        super().__init__(**params)
        self.rows = None  # DataFrame of every row so far
        self._inbox: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn_at = 0.0
        self._dirty = False
        self._periodic = None
        self._built = False
        self._total = 0
        self._card = pn.Card(pn.pane.HTML("Open to set up a sweep."), title=(
            "Sweep: many trainings, the accuracy/conservation trade-off"), collapsed=True,
            sizing_mode="stretch_width", header_background="#e9eef4")
        self._card.param.watch(self._opened, "collapsed")

    # -- layout (built on first open) ---------------------------------------------------
    def _opened(self, event) -> None:
        if not event.new and not self._built:
            self._card.objects = [self._build()]

    def _build(self) -> pn.viewable.Viewable:
        self._built = True
        s = self.session
        self._lams_w = pn.widgets.TextInput.from_param(self.param.lams, name="λ ladder", width=220)
        self._seeds_w = pn.widgets.IntSlider.from_param(self.param.n_seeds, name="Seeds", width=180)
        self._start_w = pn.widgets.Button(label="Run sweep", color="primary", width=120)
        self._stop_w = pn.widgets.Button(label="Stop sweep", width=110, disabled=True)
        self._start_w.on_click(self._guard(lambda e: self.start()))
        self._stop_w.on_click(self._guard(lambda e: self.stop()))
        self._file_w = pn.widgets.FileInput(accept=".csv,.parquet", multiple=False, width=230)
        self._file_w.param.watch(self._guard(self._file_chosen), "value")
        self._quantity_w = pn.widgets.Select.from_param(self.param.quantity, name="Drift of", width=180)
        self._download_w = pn.widgets.FileDownload(callback=self._csv, filename="sweep.csv", label="Download rows",
                                                   width=150)
        self._status_w = pn.pane.HTML(sizing_mode="stretch_width", stylesheets=[theme.CSS])
        self._pareto = pn.pane.HoloViews(None, sizing_mode="stretch_width", linked_axes=False)
        self._ladder = pn.pane.HoloViews(None, sizing_mode="stretch_width", linked_axes=False)
        self.param.watch(lambda *e: self._status_w.param.update(object=self._status_html()), ["status", "status_kind"])
        self.param.watch(self._phase_changed, "phase")
        self.param.watch(self._guard(lambda e: self.redraw()), ["quantity", "ladder_seed"])
        self._status_w.object = self._status_html()
        self._phase_changed(None)  # a sweep started before the card was opened
        intro = pn.pane.HTML(
            "<p style='margin:2px 0'>Trains the ticked methods (" + ", ".join(s.methods) + " now) at every λ of "
            "the ladder and for several seeds, with every other setting as it is. Each dot is one trained "
            "network: further left is more accurate, lower keeps the invariant better. The black line joins "
            "the runs no other run beats on both counts. Below, the <b>constraint ladder</b>: from no "
            "constraint, through the penalty at each λ, to the hard methods, one seed's numbers (dots) and "
            "the spread over every seed (bars): how far one run alone can mislead.</p>",
            sizing_mode="stretch_width", stylesheets=[theme.CSS])
        self._sync_quantity()
        return pn.Column(
            intro,
            pn.Row(self._lams_w, self._seeds_w, self._start_w, self._stop_w, sizing_mode="stretch_width"),
            pn.Row(pn.pane.HTML("<span class='cl-muted'>or open a results file:</span>", stylesheets=[theme.CSS]),
                   self._file_w, self._quantity_w, self._download_w, sizing_mode="stretch_width"),
            self._status_w, self._pareto, self._ladder, sizing_mode="stretch_width")

    def __panel__(self):
        return self._card

    def _guard(self, fn):
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ParameterError as err:
                self._notice(f"! {err}", "warning")
            except Exception as err:  # no click may take the server down
                self._notice(f"! {type(err).__name__}: {err}", "danger")
        return wrapper

    # -- the phase: one state machine -----------------------------------------------------
    def _enter(self, phase: str, text: str) -> None:
        """The one place the sweep's phase changes: ``phase`` with the status ``text``,
        whose colour follows from the phase. Raises ``ValueError`` on a transition
        :data:`SWEEP_TRANSITIONS` does not allow (a bug, not a user's doing)."""
        if phase not in SWEEP_TRANSITIONS[self.phase]:
            raise ValueError(f"a sweep cannot go from {self.phase!r} to {phase!r}")
        with param.edit_constant(self):
            self.param.update(phase=phase, running=phase in SWEEP_ACTIVE, status=text,
                              status_kind=SWEEP_PHASES[phase])

    def _notice(self, text: str, kind: str) -> None:
        """A notice that changes no phase (a refused click, a bad file)."""
        self.param.update(status=text, status_kind=kind)

    def _phase_changed(self, event) -> None:
        self._start_w.disabled = self.running
        self._stop_w.disabled = self.phase != "training"

    def _status_html(self) -> str:
        # a refusal's "! " marks it in the text (tests and logs); the colour says it on the page
        text = self.status.removeprefix("! ")
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f"<div class='cl-status {self.status_kind}' style='padding:4px 8px'>{text}</div>" if text else ""

    # -- running --------------------------------------------------------------------------
    def cells(self) -> list:
        """The cells a Run click would start: the session's methods × the λ ladder × the
        seeds, every other setting as set now. Refused (``ParameterError``) before anything
        runs: a bad λ, a method that does not apply, too many cells, too much work."""
        s = self.session
        keys = [m for m in s.methods if m in s.valid_methods()]
        if not keys:
            raise ParameterError("tick at least one method to sweep")
        # the settings that differ from the system's defaults travel as one-value axes
        # (so they are columns of the rows); seed and λ are the swept ones
        from conserv_core import training

        mine, default = settings.values(s.build_config()), settings.values(training.make_config(s.system))
        fixed = {k: [v] for k, v in mine.items()
                 if k not in ("seed", "lam", "eval_every", "threads") and v != default.get(k)}
        sysm, sys_default = settings.values(s.build_system()), settings.values(get_system(s.system))
        sys_fixed = {k: [v] for k, v in sysm.items() if v != sys_default.get(k)}
        cells = sweeps.grid(s.system, keys, seeds=list(range(self.n_seeds)),
                            config={"lam": parse_lams(self.lams), **fixed}, system_params=sys_fixed,
                            max_work=work_budget.max_work())
        runs_ = len(cells)
        if runs_ > MAX_CELLS:
            raise ParameterError(f"a dashboard sweep has at most {MAX_CELLS} runs; this one has {runs_} (fewer λ or "
                                 f"seeds, or run it with conserv sweep)")
        return cells

    def start(self) -> None:
        """Start a sweep from the current settings (a running one is stopped first; a
        refused one leaves it running)."""
        cells = self.cells()
        if self.running:
            self.stop()
        self.rows = None
        # each sweep has its own inbox and stop flag: a stopped sweep's last rows and its
        # end, arriving after a new one started, land in its own inbox, not the new one's
        self._inbox = inbox = collections.deque()
        self._stop = stop = threading.Event()
        self._total = len(cells)
        ex = self.session.executor
        client = ex.client if isinstance(ex, runs.DaskExecutor) else None
        where = "on the cluster" if client is not None else "in this process"
        self._enter("training", f"0 of {self._total} runs done {where}…")

        def work():
            try:
                sweeps.run(cells, client=client, on_row=inbox.append, stop_event=stop)
            except Exception as err:  # reported on the page, not in the server log
                inbox.append({"__error__": f"{type(err).__name__}: {err}"})
            finally:
                inbox.append({"__end__": True})

        self._thread = threading.Thread(target=work, name="conserv-sweep", daemon=True)
        self._thread.start()
        self._ensure_periodic()

    def stop(self) -> None:
        """Stop the sweep: runs not started are dropped, rows already in are kept."""
        self._stop.set()
        if self.phase == "training":
            self._enter("stopping", self._progress_text(False, stopping=True))

    def close(self) -> None:
        """The page is gone: stop the sweep and the periodic drain."""
        self._stop.set()
        self._stop_periodic()

    def _stop_periodic(self) -> None:
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None

    def _ensure_periodic(self) -> None:
        if self._periodic is None and (pn.state.curdoc is not None or self.session.autodrain):
            try:
                self._periodic = pn.state.add_periodic_callback(self._guard(self.drain), period=DRAIN_MS)
            except Exception:  # no event loop (a script): drain() by hand
                self._periodic = None

    def drain(self, force: bool = False) -> int:
        """Move the rows that arrived onto the page; returns how many."""
        import pandas as pd

        new, ended, error = [], False, None
        while self._inbox:
            item = self._inbox.popleft()
            if "__end__" in item:
                ended = True
            elif "__error__" in item:
                error = item["__error__"]
            else:
                new.append(item)
        if new:
            frame = pd.DataFrame(new)
            self.rows = frame if self.rows is None else pd.concat([self.rows, frame], ignore_index=True)
            self._dirty = True
        if error:
            self._enter("failed", f"! The sweep stopped: {error}")
        elif ended:
            done = self._count() == self._total
            self._enter("done" if done else "stopped", self._progress_text(True))
        elif new:
            self._enter(self.phase, self._progress_text(False, stopping=self.phase == "stopping"))
        if self._dirty and (force or ended or time.monotonic() - self._drawn_at >= REDRAW_S):
            self.redraw()
        if ended:
            self._stop_periodic()
        return len(new)

    def _count(self, statuses=("done", "diverged", "error")) -> int:
        """How many of the rows in have one of ``statuses`` (by default: the results;
        stopped cells are not results)."""
        return 0 if self.rows is None else int(self.rows["status"].isin(statuses).sum())

    def _progress_text(self, ended: bool, stopping: bool = False) -> str:
        n, failed = self._count(), self._count(("diverged", "error"))
        if stopping:
            return f"Stopping the sweep (running cells end within a step): {n} of {self._total} runs kept so far…"
        if not ended:
            return f"{n} of {self._total} runs done ({failed} failed), {self._total - n} to go…"
        if n < self._total:
            return f"Sweep stopped: {n} of {self._total} runs kept ({failed} failed)."
        return f"Sweep finished: {n} runs ({failed} failed)."

    # -- a results file -----------------------------------------------------------------
    def _file_chosen(self, event) -> None:
        if not event.new:
            return
        self.load(self._file_w.filename or "results.csv", event.new)

    def load(self, name: str, content: bytes) -> None:
        """Show a results file's rows (a running sweep is stopped first)."""
        df = read_results(name, content)
        self.stop()
        self._inbox = collections.deque()  # what the stopped sweep still sends goes nowhere
        self._stop_periodic()
        self.rows = df.reset_index(drop=True)
        self._enter("idle", f"Opened {settings.quote(name)}: {len(df)} runs "
                            f"({int((df['status'] != 'done').sum())} failed).")
        self.redraw()

    def _csv(self) -> io.StringIO:
        buf = io.StringIO()
        if self.rows is not None:
            self.rows.to_csv(buf, index=False)
        buf.seek(0)
        return buf

    # -- drawing --------------------------------------------------------------------------
    def _sync_quantity(self) -> None:
        qs = quantities(self.rows) if self.rows is not None else []
        if not qs:
            from conserv_core import training

            qs = list(training.default_invariants(self.session.current_system))
        self.param.quantity.objects = qs
        if self.quantity not in qs:
            self.quantity = qs[0] if qs else None

    def redraw(self) -> None:
        """Draw the front and the ladder from every row so far."""
        self._drawn_at, self._dirty = time.monotonic(), False
        if not self._built:
            return
        self._sync_quantity()
        if self.rows is None or self.quantity is None or not len(self.rows):
            self._pareto.object = None
            self._ladder.object = None
            return
        self._pareto.object = pareto_plot(self.rows, self.quantity)
        self._ladder.object = ladder_plot(self.rows, self.quantity, self.ladder_seed)


# ------------------------------------------------------------------------------------------
# the plots (plain functions of the rows, so a notebook can draw them too)
# ------------------------------------------------------------------------------------------
def _color(method: str) -> str:
    return theme.COLORS.get(method, "#777777")


def pareto_plot(rows, quantity: str) -> hv.Layout:
    """Test error against the largest drift, log-log, in and out of distribution side by
    side: one dot per finished run, coloured by method, λ and seed on hover, and the
    non-dominated front drawn through them."""
    done = rows[rows["status"] == "done"].copy()
    lam = done["lam"] if "lam" in done.columns else np.nan
    done["λ"] = lam
    panels = []
    for ood, title in ((False, "In distribution"), (True, "Out of distribution")):
        col = pareto.drift_column(quantity, ood=ood)
        if col not in done.columns:
            continue
        layers = []
        for method, grp in done.groupby("method", sort=False):
            pts = grp[["test_mse", col, "λ", "seed"]].rename(columns={col: "drift"})
            pts = pts[(pts["test_mse"] > 0) & (pts["drift"] > 0)]
            layers.append(hv.Scatter(pts, "test_mse", ["drift", "λ", "seed"], label=theme.SHORT.get(method, method))
                          .opts(color=_color(method), size=8, alpha=0.85, line_color="white",
                                tools=["hover"]))  # on the dots: their λ and seed travel with them
        keep = pareto.front(done["test_mse"].where(done["test_mse"] > 0),
                            done[col].where(done[col] > 0))
        fr = done.iloc[keep]
        layers.append(hv.Curve((fr["test_mse"].to_numpy(), fr[col].to_numpy()), "test_mse", "drift",
                               label="front (no run beats these on both)")
                      .opts(color="black", line_dash="dashed", line_width=1.5, interpolation="steps-post"))
        panels.append(hv.Overlay(layers).opts(
            title=f"{title}: error vs largest {quantity} drift", logx=True, logy=True, responsive=True,
            height=HEIGHT, xlabel="test MSE (lower: more accurate)",
            ylabel=f"largest {quantity} drift over the horizon", legend_position="right",
            show_grid=True, tools=["hover"], toolbar="above", fontscale=0.95))
    return hv.Layout(panels).cols(2).opts(shared_axes=False)


def ladder_plot(rows, quantity: str, seed: int = 0) -> hv.Layout:
    """The constraint ladder: for each rung, the chosen seed's test error and drift (dots)
    and the spread over every seed (bars from the smallest to the largest)."""
    table = pareto.ladder(rows, quantity, seed=seed)
    if table.empty:
        return hv.Layout([])
    xs = np.arange(len(table))
    ticks = list(zip(xs.tolist(), table["rung"].tolist()))
    panels = []
    for what, label in (("test_mse", "test MSE"), ("drift", f"largest {quantity} drift")):
        lo, hi, mid = table[f"{what}_min"].to_numpy(), table[f"{what}_max"].to_numpy(), table[what].to_numpy()
        layers = []
        for method in dict.fromkeys(table["method"]):
            at = (table["method"] == method).to_numpy()
            layers.append(hv.Segments((xs[at], lo[at], xs[at], hi[at]), ["rung", label, "x1", "y1"]).opts(
                color=_color(method), line_width=6, alpha=0.35))
            layers.append(hv.Scatter((xs[at], mid[at]), "rung", label).opts(
                color=_color(method), size=10, line_color="black"))
        panels.append(hv.Overlay(layers).opts(
            title=f"Constraint ladder: {label} (seed {table['seed'].iloc[0]}; bars: all seeds)",
            logy=True, xticks=ticks, xrotation=30, responsive=True, height=HEIGHT, show_legend=False,
            xlabel="", ylabel=label, show_grid=True, tools=["hover"], toolbar="above", fontscale=0.95))
    return hv.Layout(panels).cols(2).opts(shared_axes=False)


page.register("sweep_view", SweepView, section="sweep", page_order=40)

__all__ = ["MAX_CELLS", "SweepView", "ladder_plot", "pareto_plot", "parse_lams", "quantities", "read_results"]
