"""The controls: every setting as a widget built from the engine's param declarations
(:func:`param_widget`), the method and invariant check boxes, and Train / Stop / Reset /
Pause / Step. Draws no plot and consumes no channel: it writes the session's settings
and watches ``running``, ``phase``, ``paused``, ``system`` and ``methods``.
"""

from __future__ import annotations

import functools
from typing import Callable

import panel as pn
import param

from conserv_core import methods as cmethods
from conserv_core.devices import available_devices
from conserv_core.presets import PRESETS
from conserv_core.systems import ALL_SYSTEMS

from app import lesson, settings, theme
from app.session import LabSession
from app.settings import config_fields, constraint_fields, system_fields
from app.views.common import guarded, html

#: slider ranges and labels for the training settings (the engine's bounds stay the hard
#: limits); a system and a constraint declare their own on their parameters (``softbounds``,
#: ``step``, ``label``), which is how a plugin's setting gets a control without a line here
SOFT: dict[tuple[str, str], dict] = {
    ("config", "steps"): dict(step=100, label="Training steps (per method)"),
    ("config", "lr"): dict(step=1e-3, label="Learning rate"),
    ("config", "width"): dict(start=8, end=256, step=8, label="Hidden units per layer"),
    ("config", "seed"): dict(label="Seed (data, weights, batches)"),
    ("config", "integrator"): dict(label="Rollout integrator"),
    ("config", "projection"): dict(label="Project onto the invariants after each step (hard at inference)"),
    ("config", "horizon"): dict(step=1.0, label="Rollout horizon (time)"),
    ("config", "ood_factor"): dict(start=1.0, end=10.0, step=0.5, label="Out-of-distribution factor"),
    ("config", "device"): dict(label="Device"),
}


def param_widget(obj: param.Parameterized, name: str, owner: str,
                 refuse: Callable[[str], None] | None = None, **extra) -> pn.widgets.Widget:
    """A widget for ``obj.name`` built from its param declaration (type, bounds, doc).

    Numbers get a slider over a teaching range that still accepts any value inside the
    declared bounds (typed into its box). Widget and parameter are linked both ways here
    (:func:`_link`), not by Panel's ``from_param``: a typed value the parameter cannot
    take (out of its bounds, an emptied box) is refused through ``refuse(text)``, naming
    the parameter and its range, and the box is set back to the value in use.
    """
    p = obj.param[name]
    kw = dict(SOFT.get((owner, name), {}))
    if "start" not in kw and getattr(p, "softbounds", None) is not None:
        kw["start"], kw["end"] = p.softbounds
    if "step" not in kw and getattr(p, "step", None) is not None:
        kw["step"] = p.step
    if "label" not in kw and getattr(p, "_label", None):  # declared, not param's name-derived one
        kw["label"] = p._label
    kw.update(extra)
    whole = "start" in kw and (kw["start"], kw["end"]) == tuple(getattr(p, "bounds", None) or (None, None))
    if isinstance(p, param.Boolean):
        cls = pn.widgets.Checkbox
    elif isinstance(p, param.Selector):
        cls = pn.widgets.Select
        kw.setdefault("options", list(p.objects))
    elif isinstance(p, param.Integer):
        cls = pn.widgets.IntSlider if whole else pn.widgets.EditableIntSlider if "start" in kw else pn.widgets.IntInput
    elif isinstance(p, param.Number):
        cls = pn.widgets.EditableFloatSlider if "start" in kw else pn.widgets.FloatInput
    else:
        raise TypeError(f"no widget for {type(p).__name__} {owner}.{name}")
    if cls in (pn.widgets.IntInput, pn.widgets.FloatInput):
        lo, hi = p.bounds if p.bounds is not None else (None, None)
        kw.setdefault("start", lo)
        kw.setdefault("end", hi)
    # an editable slider gets no fixed_start/fixed_end: with them the widget refuses an
    # out-of-range typed value itself, in a traceback, and its box keeps showing it
    if "description" in cls.param and p.doc:
        rng = f" Takes {settings.expected(p)}." if isinstance(p, param.Number) else ""
        kw.setdefault("description", p.doc + rng)
    if "label" not in kw and p.doc:
        first = p.doc.split(". ")[0].rstrip(".")
        if len(first) <= 32:  # "Spring constant k." is a better label than "K"
            kw["label"] = first
    kw.setdefault("label", p.label)
    kw.setdefault("sizing_mode", "stretch_width")
    widget = cls(value=getattr(obj, name), **kw)
    _link(widget, obj, name, refuse)
    return widget


def _link(widget: pn.widgets.Widget, obj: param.Parameterized, name: str,
          refuse: Callable[[str], None] | None) -> None:
    """``widget.value`` <-> ``obj.name``. A value the parameter refuses is said through
    ``refuse`` and the widget shows the value in use again: what is shown is what runs."""
    p = obj.param[name]
    echo: list[bool] = []

    def to_widget(event) -> None:
        if not _same_value(widget.value, event.new):
            echo.append(True)
            try:
                widget.value = event.new
            finally:
                echo.pop()

    def to_param(event) -> None:
        if echo:
            return
        try:
            value = settings.check_value(p, name, event.new)
            if not _same_value(value, getattr(obj, name)):
                obj.param.update(**{name: value})
        except ValueError as err:  # settings.Refused, or the object's own cross-checks
            text = str(err) if isinstance(err, settings.Refused) else \
                f"{name} “{settings.quote(event.new)}”: {str(err).splitlines()[0]}"
            if refuse is not None:
                refuse(f"{text}; still {_shown(getattr(obj, name))}.")
        current = getattr(obj, name)
        if not _same_value(widget.value, current) or type(widget.value) is not type(current):
            echo.append(True)
            try:
                widget.value = current
            finally:
                echo.pop()

    obj.param.watch(to_widget, name)
    widget.param.watch(to_param, "value")


def _same_value(a, b) -> bool:
    try:
        return bool(a == b) and (a is None) == (b is None)
    except Exception:
        return a is b


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _checkbox_colors(keys: list[str]) -> list[str]:
    """Stylesheet that colours each method's check box in the method's colour."""
    rules = [f"label:nth-of-type({i + 1}) input {{ accent-color: {theme.COLORS.get(k, '#888')}; }}"
             f" label:nth-of-type({i + 1}) {{ border-left: 4px solid {theme.COLORS.get(k, '#888')};"
             f" padding-left: 6px; margin: 2px 0; }}"
             for i, k in enumerate(keys)]
    return ["\n".join(rules)]


class Controls(pn.viewable.Viewer):
    """Every setting, built from the engine's param declarations, and Train / Stop / Reset,
    with Pause (Resume while paused) and Step as in TF Playground."""

    session = param.ClassSelector(class_=LabSession)

    def __init__(self, **params):
        super().__init__(**params)
        self._updating = False
        s = self.session
        g = functools.partial(guarded, s)
        self.preset = pn.widgets.Select.from_param(
            s.param.preset, label="Preset experiment",
            options={"— choose a preset —": "", **{p.title: k for k, p in PRESETS.items()}},
            sizing_mode="stretch_width", stylesheets=[theme.SELECT_CSS],
            description="Load a named experiment: system, parameters, methods and training settings.")
        self.system = pn.widgets.Select.from_param(
            s.param.system, label="System", options={cls.title: k for k, cls in ALL_SYSTEMS.items()},
            description="The physical system the networks learn.")
        refuse = g(lambda text: s._set_status(text, "warning"))
        self._system_widgets = {k: pn.Column(*[param_widget(s.systems[k], n, k, refuse) for n in system_fields(k)],
                                             sizing_mode="stretch_width")
                                for k in ALL_SYSTEMS}
        self.system_params = pn.Column(self._system_widgets[s.system], sizing_mode="stretch_width")
        self.methods = pn.widgets.CheckBoxGroup(label="Methods", inline=False, options={})
        self.methods.param.watch(g(self._methods_from_widget), "value")
        s.param.watch(g(self._methods_to_widget), "methods")
        cfg = s.config
        #: the constraint card's settings, as the registries stand when the page is built
        self.constraint_fields = constraint_fields()
        w = {n: param_widget(cfg, n, "config", refuse) for n in config_fields() if n not in ("device", "invariants")}
        w["device"] = param_widget(cfg, "device", "config", refuse, options=available_devices())
        self.config_widgets = w
        self.invariants = pn.widgets.CheckBoxGroup(label="Constrain these invariants", inline=True)
        self.invariants.param.watch(g(self._invariants_from_widget), "value")
        cfg.param.watch(g(self._invariants_to_widget), "invariants")
        # no hover tooltip on Train: after a click the pointer rests on it, and the tooltip
        # covered the Stop button and the status line until the mouse moved
        self.train_button = pn.widgets.Button(label="Train", color="primary", sizing_mode="stretch_width", stylesheets=[theme.BUTTON_CSS])
        self.stop_button = pn.widgets.Button(label="Stop", color="warning", sizing_mode="stretch_width", stylesheets=[theme.BUTTON_CSS], disabled=True,
                                             description="End the run now; the curves so far stay.")
        self.reset_button = pn.widgets.Button(label="Reset", color="light", sizing_mode="stretch_width", stylesheets=[theme.BUTTON_CSS],
                                              description="Stop and clear the plots (settings stay).")
        # no hover tooltip on Pause either: after a click the pointer rests on it, and the
        # tooltip covered the Step button beside it (the status line says what each does)
        self.pause_button = pn.widgets.Button(label="Pause", color="light", sizing_mode="stretch_width", stylesheets=[theme.BUTTON_CSS],
                                              disabled=True)
        self.step_button = pn.widgets.Button(label="Step", color="light", sizing_mode="stretch_width", stylesheets=[theme.BUTTON_CSS], disabled=True,
                                             description="While paused: train one more evaluation interval, "
                                                         "then pause again.")
        self.train_button.on_click(g(lambda e: s.train()))
        self.stop_button.on_click(g(lambda e: s.stop()))
        self.pause_button.on_click(g(lambda e: s.resume() if s.paused else s.pause()))
        self.step_button.on_click(g(lambda e: s.step()))
        self.reset_button.on_click(g(lambda e: s.reset()))
        s.param.watch(g(self._running_changed), "running")
        s.param.watch(g(self._pause_changed), ["phase", "paused", "running"])
        s.param.watch(g(self._system_changed), "system")
        self.csv = pn.widgets.FileDownload(callback=g(s.results_csv), filename="conservation-lab-curves.csv",
                                           label="Curves (CSV)", embed=False, sizing_mode="stretch_width",
                                           color="light")
        self.json = pn.widgets.FileDownload(callback=g(s.results_json), filename="conservation-lab-summary.json",
                                            label="Summary (JSON)", embed=False, sizing_mode="stretch_width",
                                            color="light")
        self._system_changed()
        self._running_changed()
        self._pause_changed()
        self._layout = self._build()

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> pn.Column:
        w = self.config_widgets
        head = html
        buttons = pn.Row(self.train_button, self.stop_button, self.reset_button, sizing_mode="stretch_width")
        playback = pn.Row(self.pause_button, self.step_button, sizing_mode="stretch_width")
        methods_head = head("<b>Methods to compare</b> <span class='cl-muted'>(colour = line colour)</span>")
        invariants_head = head("<span class='cl-muted'>Invariants the soft constraints act on</span>")
        downloads = pn.Column(head("<b>Download results</b>"), pn.Row(self.csv, self.json, sizing_mode="stretch_width"),
                              sizing_mode="stretch_width")
        self._cards = [
            pn.Card(w["steps"], w["lr"], w["width"], w["seed"], w["device"], title="Training",
                    collapsed=False, sizing_mode="stretch_width"),
            pn.Card(*[w[n] for n in self.constraint_fields], invariants_head,
                    self.invariants, title="Constraint settings", collapsed=True, sizing_mode="stretch_width"),
            pn.Card(w["integrator"], w["projection"],
                    head("<span class='cl-muted'>discrete_gradient holds a learned energy exactly in every step "
                         "(truth, HNN, port-Hamiltonian). Projection pulls every model's rollout back onto the chosen "
                         "invariants (flow: the divergence-free part of its field); it does not fix the "
                         "trajectory.</span>"),
                    w["horizon"], w["ood_factor"], title="Rollout and test",
                    collapsed=True, sizing_mode="stretch_width"),
        ]
        # what a lesson may hide, by the link's own names (app.lesson)
        self._hideable = {"preset": [self.preset], "system": [self.system], "methods": [methods_head, self.methods],
                          "downloads": [downloads], "invariants": [invariants_head, self.invariants],
                          **{n: [wid] for n, wid in w.items()}}
        for k, col in self._system_widgets.items():
            for n, wid in zip(system_fields(k), col.objects):
                self._hideable[f"{k}.{n}"] = [wid]
        return pn.Column(
            buttons,
            playback,
            self.preset,
            self.system,
            self.system_params,
            methods_head,
            self.methods,
            *self._cards,
            downloads,
            head("<span class='cl-muted'>The address bar records your settings, the seed included: "
                 "share it to reproduce this run.</span>"),
            sizing_mode="stretch_width",
        )

    def hideable(self) -> dict[str, str]:
        """The controls a lesson may hide: link name -> the label a leader reads."""
        names = {}
        for n, objs in self._hideable.items():
            label = getattr(objs[-1], "label", "") if n not in ("methods", "downloads", "invariants") else ""
            names[n] = label or lesson.control_label(n)
        return names

    def hide(self, names) -> None:
        """Hide exactly the controls ``names`` (link names; unknown ones are ignored) and
        show every other; a card whose every control is hidden goes too."""
        names = set(names)
        for n, objs in self._hideable.items():
            for o in objs:
                o.visible = n not in names
        for card in self._cards:
            card.visible = any(o.visible for o in card.objects if not isinstance(o, pn.pane.HTML))

    def __panel__(self):
        return self._layout

    # -- links ----------------------------------------------------------------------------
    def _system_changed(self, *events) -> None:
        s = self.session
        self.system_params.objects = [self._system_widgets[s.system]]
        self._methods_to_widget()
        self._invariants_to_widget()

    def _methods_from_widget(self, event) -> None:
        if self._updating:
            return
        keys = [k for k in self.session.valid_methods() if k in event.new]
        if keys != self.session.methods:
            self.session.methods = keys

    def _methods_to_widget(self, *events) -> None:
        """Options follow the system, ticks follow the session (never the other way round
        while the options are being swapped)."""
        s = self.session
        valid = s.valid_methods()
        self._updating = True
        try:
            if list(dict(self.methods.options).values()) != valid:
                self.methods.options = {cmethods.ALL_METHODS[k].title: k for k in valid}
                self.methods.stylesheets = _checkbox_colors(valid)
            self.methods.value = [k for k in valid if k in s.methods]
        finally:
            self._updating = False

    def _invariants_from_widget(self, event) -> None:
        if self._updating or self.invariants.disabled:
            return
        chosen = list(event.new)
        new = [] if set(chosen) == set(self.invariants.options) else chosen
        if new != self.session.config.invariants:
            self.session.config.invariants = new

    def _invariants_to_widget(self, *events) -> None:
        sysm = self.session.current_system
        field = sysm.kind == "field"
        names = ["divergence"] if field else list(sysm.invariant_names())
        self._updating = True
        try:
            if self.invariants.options != names:
                self.invariants.options = names
            self.invariants.disabled = field
            chosen = self.session.config.invariants or names
            self.invariants.value = [k for k in names if k in chosen]
        finally:
            self._updating = False

    def _running_changed(self, *events) -> None:
        running = self.session.running
        self.stop_button.disabled = not running
        self.train_button.label = "Restart" if running else "Train"

    def _pause_changed(self, *events) -> None:
        """Pause while a run goes on, Resume once paused (or pausing); Step only while
        the run waits, since only then is one more interval well defined."""
        s = self.session
        live = s.running and s.phase != "stopping"
        self.pause_button.param.update(label="Resume" if s.paused else "Pause", disabled=not live)
        self.step_button.disabled = not (live and s.phase == "paused")
