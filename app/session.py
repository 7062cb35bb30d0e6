"""The state of one dashboard session: what to train and where its run is.

Runs. A Train click turns the settings into a :class:`conserv_core.runs.RunSpec` and hands
it to the session's executor (:func:`app.executor.executor`): under ``conserv serve`` a Dask cluster of
worker processes, so the server never trains; in a notebook or a test, a thread of this
process. Either way the records come back into the run handle's ``deque`` from another
thread, and the session's :class:`app.drain.Drainer` (:meth:`LabSession.drain`) moves them
into the plots' channels and param values on the session's own thread: under
``panel serve`` a periodic callback calls it every :data:`app.drain.DRAIN_MS`; tests and
scripts call it themselves.

The run's state is one explicit phase (:data:`app.phases.PHASES`), changed only by
:meth:`LabSession._enter`; the status line's colour follows from it, and no logic reads
the status text.

Play / pause / step: Pause asks the run to wait at its next evaluation boundary; the
session enters ``"paused"`` when the run says it waits (a ``records.Paused`` record), so
the curves shown are those of the models as they are. Step runs one more evaluation
interval, Resume runs on, Stop still ends it. Pausing changes no number of the run.

Its parts live apart: which settings show and travel in a link (:mod:`app.settings`),
where runs go (:mod:`app.executor`), the drain (:mod:`app.drain`), the phases (:mod:`app.phases`), a run's received
data and the plots' channels (:mod:`app.rundata`), the closing verdict
(:mod:`app.verdict`) and the downloads (:mod:`app.export`). Nothing here builds a
widget; the views in :mod:`app.views` watch this object.
"""

from __future__ import annotations

import io
import time
import param

from conserv_core import budget as work_budget
from conserv_core import methods as cmethods
from conserv_core import presets, problems, records, runs, training
from conserv_core.devices import available_devices
from conserv_core.systems import ALL_SYSTEMS, ParameterError, System, get_system

from app import drain, export, links, settings, theme, verdict
from app.executor import executor, server_threads
from app.lesson import Lesson
from app.ood import OODProbe
from app.phases import ACTIVE, ENDED, PHASES, TRANSITIONS
from app.rundata import LiveData, StreamSet
from app.settings import url_config_fields, url_system_fields

#: evaluations per run besides the one at step 0 (each costs a rollout of every test case)
EVALS_PER_RUN = 6


#: the system a new session opens on
DEFAULT_SYSTEM = "pendulum"

#: Train presses less than this far apart (seconds), with the settings unchanged, are one
#: press: a double click, or the burst a page sends in one websocket message once its
#: server was busy (200 clicks started 43 runs on the workers and slowed a neighbour's run
#: from 20 s to 31 s, issue 31). Long enough for a burst, short enough that a deliberate
#: second press to restart a run still does.
COALESCE_S = 0.3


class LabSession(param.Parameterized):
    """What one browser tab (or notebook) trains, and what it has seen.

    Settings live in :attr:`config` (a :class:`training.TrainConfig`), in one system
    object per system (:attr:`systems`) and in the parameters below. The live part
    (``status``, ``progress``, ``data``) is written only by :meth:`drain` and the button
    handlers, on the session's thread.
    """

    system = param.Selector(default=DEFAULT_SYSTEM, objects=list(ALL_SYSTEMS), doc="The physical system.")
    methods = param.ListSelector(default=theme.default_methods(DEFAULT_SYSTEM),
                                 objects=list(cmethods.ALL_METHODS), doc="Methods to train side by side.")
    methods_text = param.String(default=",".join(theme.default_methods(DEFAULT_SYSTEM)),
                                doc="The methods as 'a,b,c' (how the URL carries them).")
    preset = param.Selector(default="", objects=["", *presets.PRESETS], doc="The last preset applied.")
    ood = param.Boolean(default=False, doc="Show drift on the out-of-distribution test set.")
    ood_probe = param.ClassSelector(class_=OODProbe, doc="The live out-of-distribution slider (after a run).")

    phase = param.Selector(default="idle", objects=list(PHASES), constant=True,
                           doc="Where the session's run is (see PHASES); changed only by _enter.")
    status = param.String(default="Pick a system and methods, then press Train.")
    status_kind = param.Selector(default="info", objects=["info", "running", "success", "warning", "danger"])
    progress = param.Integer(default=0, bounds=(0, 100))
    speed = param.String(default="")
    running = param.Boolean(default=False, constant=True,
                            doc="Whether a run exists (the phase is one of ACTIVE): follows the phase.")
    paused = param.Boolean(default=False, constant=True,
                           doc="The user asked the run to pause (Pause or Step pressed, Resume not "
                               "since); the phase says when it waits. Set only by run control.")
    data = param.ClassSelector(class_=LiveData, allow_None=True, doc="The current run's live data.")
    streams = param.ClassSelector(class_=StreamSet, allow_None=True,
                                  doc="The streams the plots are built on (kept while the layout holds).")
    views_ready = param.Event(doc="Fires when the run's first system-view arrays arrive.")
    evals_per_run = param.Integer(default=EVALS_PER_RUN, bounds=(1, 1000),
                                  doc="Drift curves refresh this many times per run (each costs a rollout).")

    def __init__(self, threads: int | None = None, executor_: runs.Executor | None = None, **params):
        # the choices follow the registries (a system or method registered after import)
        type(self).param.system.objects = list(ALL_SYSTEMS)
        type(self).param.methods.objects = list(cmethods.ALL_METHODS)
        self.systems: dict[str, System] = {k: get_system(k) for k in ALL_SYSTEMS}
        # cpu by default, not the engine's "auto": these models are small, and on an H200 the
        # pendulum demo took 17 s on cuda against 5 s on one CPU thread (cuda stays offered)
        self.config = training.make_config(DEFAULT_SYSTEM, device="cpu", **theme.demo_config(DEFAULT_SYSTEM))
        super().__init__(**params)
        self.threads = server_threads() if threads is None else threads
        #: where runs go (default: the process's :func:`executor`)
        self.executor = executor_ if executor_ is not None else executor()
        self.run: runs.RunHandle | None = None
        #: when Train was last pressed (time.monotonic), for COALESCE_S
        self._last_press_at = float("-inf")
        #: a settings change made while a run goes on (said in the status line)
        self._changed_during_run = False
        #: when the run began its current wait (perf_counter), so steps/s leaves the pause out
        self._paused_at: float | None = None
        self._paused_step = 0
        #: moves the run's records into the plots (and owns the periodic callback)
        self.drainer = drain.Drainer(self)
        self.autodrain = False
        #: build the new system's (empty) plots as soon as it is chosen (the dashboard sets it)
        self.autoprepare = False
        #: unexpected errors caught from callbacks (also shown in the status line)
        self.errors: list[str] = []
        #: the page's URL (set by the dashboard when served), for the JSON download
        self.location = None
        #: how much each run's view arrays hold (trajectories, grids): what the page draws, so
        #: the view that draws them sets it (:class:`app.views.system.SystemView`)
        self.shown = problems.ViewSpec()
        self._applying_preset = False
        #: the lesson this page shows (a link's title, things to try, hidden controls)
        self.lesson = Lesson()
        self._apply_system_defaults()
        self.param.watch(self._system_changed, "system")
        self.param.watch(self._preset_chosen, "preset")
        self.config.param.watch(self._setting_changed, url_config_fields())
        for key, sysm in self.systems.items():
            sysm.param.watch(self._setting_changed, url_system_fields(key))
        self.param.watch(self._setting_changed, "methods")
        self.param.watch(self._methods_to_text, "methods")
        self.param.watch(self._methods_from_text, "methods_text")
        self.param.watch(self._ood_changed, "ood")
        self.ood_probe = OODProbe()
        self.ood_probe.param.watch(self._ood_factor_moved, "factor")
        # a run's data replaced by none (a reset, another system): the slider has nothing to move
        self.param.watch(lambda e: self.ood_probe.attach(None) if e.new is None else None, "data")

    # -- settings ---------------------------------------------------------------------------
    @property
    def current_system(self) -> System:
        return self.systems[self.system]

    def valid_methods(self) -> list[str]:
        return cmethods.valid_methods(self.current_system)

    def _apply_system_defaults(self) -> None:
        self.config.param.update(**settings.system_defaults(self.system, self.current_system))
        # keep the ticked methods (or those a link names) if they all apply, else the defaults
        valid = self.valid_methods()
        wanted = settings.method_keys(self.methods_text)
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
        elif self.data is not None and self.phase in ENDED:
            self._enter("idle", "Settings changed: press Train to rerun with them (the curves shown are from "
                        "the last run).")

    def _methods_to_text(self, event) -> None:
        text = ",".join(event.new)
        if text != self.methods_text:
            self.methods_text = text

    def _methods_from_text(self, event) -> None:
        keys = settings.method_keys(event.new)
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

    def _ood_factor_moved(self, event) -> None:
        """The OOD slider moved after a run: re-evaluate the trained models there (on
        the executor) and show the out-of-distribution set."""
        try:
            if self.ood_probe.request(self.executor):
                self._ensure_periodic()
                if not self.ood_probe.busy:  # drawn from an answer already here: now
                    self.drainer.now()
        except (ParameterError, ValueError) as err:
            self.ood_probe.note = f"Cannot evaluate there: {err}"
            return
        if self.ood_probe.available and not self.ood:
            self.ood = True

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

    # -- a link (app.links) -------------------------------------------------------------------
    def apply_link(self, pairs: list[tuple[str, str]]) -> list[str]:
        """Apply a link's query one key at a time; one clause per refused key (see
        :func:`app.links.apply`)."""
        return links.apply(self, pairs)

    def refuse_link(self, refused: list[str]) -> None:
        """Say in the status line, in one line, which parts of a link were refused."""
        if refused:
            self._set_status(links.refusal(refused), "warning")

    def query_string(self) -> str:
        """The settings as a URL query (what the address bar holds when served)."""
        return links.query_string(self)

    def build_config(self) -> training.TrainConfig:
        """A fresh, validated copy of the settings for one run (later edits don't touch it)."""
        return settings.run_config(self.config, self.threads, self.evals_per_run)

    def build_system(self) -> System:
        """A fresh copy of the current system (the run keeps it while the user edits)."""
        return settings.run_system(self.system, self.current_system)

    # -- actions ----------------------------------------------------------------------------
    def train(self) -> runs.RunHandle | None:
        """Submit a run with the current settings. A run of this session still waiting in
        the queue is replaced and keeps its place; one already training is stopped.

        A press that would start the same run again is the same press (see
        :meth:`_coalesces`): the current run is returned and nothing reaches the cluster."""
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
            spec = runs.RunSpec.of(sysm, keys, cfg, max_work=work_budget.max_work(), view=self.shown)
            now = time.monotonic()
            since_last_press, self._last_press_at = now - self._last_press_at, now
            if self._coalesces(spec, since_last_press):
                return self.run
            # checked there in full (the work budget too) before anything is queued
            handle = self.executor.submit(spec, replaces=self.run, wake=self.drainer.waker())
        except (ParameterError, ValueError) as err:
            self._set_status(f"Cannot start: {err}", "danger")
            return None
        except Exception as err:  # the cluster is unreachable: say so, never crash the page
            self._set_status(f"Cannot reach the training cluster ({type(err).__name__}: {err}). "
                             "Ask the workshop leader to check the server.", "danger")
            return None
        self._changed_during_run = False
        self.run = handle
        self._paused_at = None
        self._ask_pause(False)
        streams = self.prepare(sysm, keys, cfg)
        streams.clear()
        data = LiveData(sysm, keys, cfg, streams)
        data.ood = self.ood
        data.spec = spec
        self.ood_probe.attach(data)
        self.data = data
        self.progress = 0
        self.speed = ""
        if handle.phase == "queued" and not self._starts_now(handle):
            self._enter("queued", self._queue_text(handle))
        else:
            self._enter("preparing", self._setup_text(data))
        self._ensure_periodic()
        return handle

    def _start_over(self, restarted: runs.Restarted) -> LiveData:
        """The run's worker left and the run starts over elsewhere (``runs.Restarted``):
        what was drawn of the lost attempt is dropped, and the status line says why the
        curves went back to the start. Returns the new attempt's data."""
        old = self.data
        old.streams.clear()
        data = LiveData(old.system, old.methods, old.config, old.streams)
        data.ood, data.spec = old.ood, old.spec
        self.ood_probe.attach(data)
        self.data = data
        self.progress = 0
        self.speed = ""
        if self.phase != "stopping":
            self._enter("preparing", f"Worker lost, rerunning: the worker training this run left, so it "
                                     f"starts over on {restarted.where} (same settings, same curves).")
        return data

    def _coalesces(self, spec: runs.RunSpec, since_last_press: float) -> bool:
        """Whether a press for ``spec`` is taken by the current run: the same settings,
        and that run still waits to start (a queued run would only be replaced by its
        twin) or the press follows the previous one within :data:`COALESCE_S` (a burst,
        which would otherwise stop a run that just began and start it over, once per
        click). Other settings replace the run as before (``replaces=``), and so does a
        press on a paused run (Train starts it over, playing)."""
        run = self.run
        if run is None or run.finished.is_set() or run.stop_requested or self.paused or run.spec != spec:
            return False
        return run.phase == "queued" or since_last_press < COALESCE_S

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

    def pause(self) -> None:
        """Have the run wait at its next evaluation boundary (a queued run starts paused)."""
        if not self._controllable() or self.paused:
            return
        self.run.pause()
        self._ask_pause(True)
        if self.phase == "training":
            self._enter("training", f"Pausing at the next evaluation (every {self.data.config.eval_every:,} "
                        "steps)…")

    def step(self) -> None:
        """From a pause: train one more evaluation interval, then wait again."""
        if not self._controllable() or self.phase != "paused":
            return
        self.run.step()
        self._unpause()
        to = min(self._paused_step + self.data.config.eval_every, self.data.config.steps)
        self._enter("training", f"Stepping: training to step {to:,}, then pausing again…")

    def resume(self) -> None:
        """Train on from a pause (or cancel a pause not yet reached)."""
        if not self._controllable() or not self.paused:
            return
        self.run.resume()
        self._ask_pause(False)
        if self.phase == "paused":
            self._unpause()
            self._enter("training", f"Resumed: training {len(self.data.methods)} method(s) on "
                        f"{self.data.system.title}…")

    def _controllable(self) -> bool:
        return self.run is not None and self.data is not None and self.running and not self.run.stop_requested

    def _unpause(self) -> None:
        """Leave a wait: the steps/s clock skips the time spent paused."""
        if self._paused_at is not None and self.data.first_step_at is not None:
            self.data.first_step_at += time.perf_counter() - self._paused_at
        self._paused_at = None

    def _reached_pause(self, run: runs.RunHandle, data: LiveData, rec: records.Paused) -> None:
        """The run waits at ``rec.step``: say so, unless a later Step or Resume already
        sent it on (a wait the run has left by now)."""
        if not self.paused or run.stop_requested or rec.grants != run.gate.state()["grants"]:
            return
        if self.phase != "training":
            return
        self._paused_step = rec.step
        self._paused_at = time.perf_counter()
        self._enter("paused", f"Paused at step {rec.step:,} of {data.config.steps:,} — Step runs one more "
                    "evaluation interval, Resume runs on, Stop ends it.")

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
            self._set_phase("idle")
        self._ask_pause(False)

    # -- the drain (app.drain) ----------------------------------------------------------------
    def drain(self, budget: float | None = None) -> int:
        """Move the worker's records into streams and status; return how many were taken
        (see :meth:`app.drain.Drainer.drain`)."""
        return self.drainer.drain(budget)

    def _ensure_periodic(self) -> None:
        self.drainer.ensure_periodic()

    def _stop_periodic(self) -> None:
        self.drainer.stop_periodic()

    def _conclude(self, run: runs.RunHandle, data: LiveData) -> None:
        self.run = None
        self._changed_during_run = False
        self._ask_pause(False)
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
            # the models as they stood at the stop are still models: the slider moves them out too
            self.ood_probe.arm(data)
            self._enter("stopped", f"Stopped at step {step:,} of {data.config.steps:,}; the curves so far are "
                        "kept. Press Train to start a new run.")
            return
        self.progress = 100
        self.ood_probe.arm(data)
        self._enter("done", self.verdict(data))

    def verdict(self, data: LiveData) -> str:
        """Each method's drift at the horizon, and how the best compares with the baseline."""
        return verdict.verdict(data)

    def _enter(self, phase: str, text: str, kind: str | None = None) -> None:
        """The one place the run's phase changes: ``phase`` with the status ``text``; the
        line's colour follows from the phase unless ``kind`` says otherwise (an idle
        session's warning). Raises ``ValueError`` on a transition :data:`TRANSITIONS`
        does not allow (a bug, not a user's doing)."""
        if phase not in TRANSITIONS[self.phase]:
            raise ValueError(f"a session cannot go from {self.phase!r} to {phase!r}")
        if phase in ACTIVE:
            text = self._with_note(text)
        self._set_phase(phase, status=text, status_kind=kind or PHASES[phase])

    def _set_phase(self, phase: str, **values) -> None:
        """Change the phase, and ``running`` with it (both are read-only elsewhere)."""
        with param.edit_constant(self):
            self.param.update(phase=phase, running=phase in ACTIVE, **values)

    def _ask_pause(self, wanted: bool) -> None:
        """Record the user's pause request (read-only elsewhere: the views only read it)."""
        if wanted != self.paused:
            with param.edit_constant(self):
                self.paused = wanted

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
        return export.results_csv(self.data)

    def results_json(self) -> io.StringIO:
        query = self.location.search if self.location is not None else "?" + self.query_string()
        return export.results_json(self.data, query)
