"""The dashboard's views: each one a :class:`pn.viewable.Viewer` over a :class:`LabSession`.

Every view can be shown on its own in a notebook (``dash.drift_view``). Plot views build
their figures on the session's :class:`app.rundata.StreamSet`, again only when the layout
changes (another system or other methods). The curves (loss, violation, multipliers,
drift, the phase portrait, the n-body orbits) are :class:`app.live.LivePlot` figures:
drawn once per page from HoloViews elements, then fed in place by the session's channels,
so a drain sends the browser new points and changed curves, not new plots. The flow's
field and dye views are HoloViews DynamicMaps on the system view's Pipe (redrawn once per
evaluation round).
"""

from __future__ import annotations

import functools
import weakref
from typing import Callable

import holoviews as hv
import numpy as np
import panel as pn
import param

from conserv_core import integrators
from conserv_core import methods as cmethods
from conserv_core.devices import available_devices
from conserv_core.presets import PRESETS
from conserv_core.systems import ALL_SYSTEMS

from app import lesson, settings, theme
from app.live import LivePlot
from app.rundata import DRIFT_FLOOR, Channel, StreamSet, has_learned_energy, has_pair_potential
from app.session import LabSession
from app.settings import config_fields, constraint_fields, system_fields

PLOT_HEIGHT = 300
#: drawing order by method kind in the system view (later is on top)
_DRAW_ORDER = {"none": 0, "soft": 1, "mixed": 2, "hard": 3}
SMALL_HEIGHT = 230
#: the flow's square field and dye frames (px): big enough to see sources and sinks from the
#: back of a room; side by side in a wide column, one above the other in a narrow one
FLOW_SIZE = 340
TOOLS = ["hover"]


def guarded(session: LabSession, fn):
    """Wrap a callback so that any error lands in the status line instead of the log."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # no user action may take the server down
            session.report_error(err)

    return wrapper


def html(text: str = "", **kw) -> pn.pane.HTML:
    """An HTML pane that knows the dashboard's classes (each pane has its own shadow DOM)."""
    kw.setdefault("stylesheets", [theme.CSS])
    return pn.pane.HTML(text, **kw)


def tex(expr: str) -> pn.pane.LaTeX:
    """A KaTeX pane; ``<`` and ``>`` written as macros so the page's HTML parser leaves them."""
    expr = expr.replace("<", r"\lt ").replace(">", r"\gt ")
    # a formula wider than its card scrolls inside it rather than running out of it
    return pn.pane.LaTeX(f"${expr}$", renderer="katex", sizing_mode="stretch_width",
                         styles={"font-size": "14px", "overflow-x": "auto", "max-width": "100%"})


def _placeholder(text: str, height: int = PLOT_HEIGHT) -> pn.pane.HTML:
    return html(
        f'<div style="height:{height - 30}px; display:flex; align-items:center; justify-content:center; '
        f'border:1px dashed #c8ced6; border-radius:6px; color:#667; font-size:14px; padding:0 24px; '
        f'text-align:center">{text}</div>',
        sizing_mode="stretch_width", height=height)


def _log_ticks(plot, element) -> None:
    """More labelled ticks on a log axis (1, 2, 5 per decade where the span is short):
    Bokeh's default labels only powers of ten, which leaves one or two labels on an axis
    that spans a decade or two."""
    from bokeh.models import LogTicker

    for axis in plot.state.yaxis:
        if isinstance(axis.ticker, LogTicker):
            axis.ticker.mantissas = [1, 2, 5]
            axis.ticker.desired_num_ticks = 6


def _plot_opts(**kw) -> dict:
    # the toolbar on the right: above, it shares a row with the title and long titles ran into it
    base = dict(responsive=True, height=PLOT_HEIGHT, tools=TOOLS, active_tools=[], toolbar="right",
                show_grid=True, fontscale=1.0)
    base.update(kw)
    if base.get("logy"):
        base["hooks"] = [*base.get("hooks", []), _log_ticks]
    if "frame_width" in base:  # a fixed square frame (x and y in the same units)
        base.pop("height", None)
        base["responsive"] = False
    return base


def _square(size: int) -> dict:
    return dict(frame_width=size, frame_height=size)


_ELEMENTS = (hv.Curve, hv.Points, hv.Image, hv.VectorField)


def _styled(obj, framewise: bool = True, overlay: str = "Overlay", **kw):
    """Axis options on the overlay; ``framewise`` on every element type, which is where
    HoloViews reads it: the axes then follow the data as the streams update."""
    kw.pop("framewise", None)
    elem = [getattr(hv.opts, e.__name__)(framewise=framewise) for e in _ELEMENTS]
    return obj.opts(*elem, getattr(hv.opts, overlay)(**_plot_opts(**kw)))


# ------------------------------------------------------------------------------------------
# controls
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# status
# ------------------------------------------------------------------------------------------
class StatusView(pn.viewable.Viewer):
    """The status line, a progress bar with steps/s and time left, and the colour legend."""

    session = param.ClassSelector(class_=LabSession)

    def __init__(self, **params):
        super().__init__(**params)
        s = self.session
        self.line = html(sizing_mode="stretch_width", margin=(5, 10))
        self.bar = pn.indicators.Progress(value=0, max=100, bar_color="success", height=14,
                                          sizing_mode="stretch_width", margin=(4, 10))
        self.speed = html(sizing_mode="stretch_width", margin=(0, 10), styles={"font-size": "12px"})
        self.legend = html(sizing_mode="stretch_width", margin=(4, 10))
        self.look = html(sizing_mode="stretch_width", margin=(0, 10))
        s.param.watch(guarded(s, self._update), ["status", "status_kind", "progress", "speed", "running"])
        s.param.watch(guarded(s, self._update_legend), ["methods", "system", "data"])
        self._update()
        self._update_legend()

    def _update(self, *events) -> None:
        """Only the parts the changed parameters show (a drain changes the progress and
        the steps/s line several times a second; the status line seldom)."""
        s = self.session
        changed = {e.name for e in events} if events else {"status", "status_kind", "progress", "speed", "running"}
        if changed & {"status", "status_kind"}:
            self.line.object = f'<div class="cl-status {s.status_kind}">{_escape(s.status)}</div>'
        if changed & {"progress", "status_kind", "running"}:
            self.bar.param.update(
                value=s.progress, active=s.running and s.progress == 0,
                bar_color={"danger": "danger", "warning": "warning"}.get(s.status_kind, "success"))
        if "speed" in changed:
            self.speed.object = f'<span class="cl-muted">{_escape(s.speed)}</span>' if s.speed else ""

    def _update_legend(self, *events) -> None:
        s = self.session
        keys = s.data.methods if s.data is not None else s.methods
        chips = [theme.chip(k) for k in keys] + [theme.chip("truth")]
        cfg, sysm = s.config, s.current_system
        if sysm.kind == "ode":
            own = [k for k in keys if has_learned_energy(k, sysm)]
            chips += [theme.chip(k, f"{theme.SHORT.get(k, k).split(' ')[0]}: its own learned energy", line="dotted")
                      for k in own]
            if cfg.integrator in integrators.NEEDS_ENERGY:
                chips += [theme.chip(k, f"{theme.SHORT.get(k, k).split(' ')[0]}: own energy under RK4", line="dotdash")
                          for k in own]
        if cfg.projection:
            chips.append(theme.chip("truth", "thin dash-dot: the same model without projection", line="dashdot"))
        self.legend.object = '<div class="cl-legend">' + "".join(chips) + "</div>"
        self.look.object = f'<div class="cl-look"><b>What to look for.</b> {theme.look_for(s.current_system)}</div>'

    def __panel__(self):
        return pn.Column(self.line, self.bar, self.speed, self.legend, self.look, sizing_mode="stretch_width")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------
class _PlotView(pn.viewable.Viewer):
    """A view whose plots are built on the session's :class:`StreamSet`, again only when
    a run needs a different layout (other system or methods)."""

    session = param.ClassSelector(class_=LabSession)
    placeholder = ""

    def __init__(self, **params):
        super().__init__(**params)
        self._box = pn.Column(sizing_mode="stretch_width")
        self.session.param.watch(guarded(self.session, self._rebuild), "streams")
        self._rebuild()

    def _rebuild(self, *events) -> None:
        streams = self.session.streams
        self._box.objects = [self.build(streams)] if streams is not None else [_placeholder(self.placeholder)]

    def build(self, streams: StreamSet):
        raise NotImplementedError

    def __panel__(self):
        return self._box


def _pane(obj, **kw) -> pn.pane.HoloViews:
    kw.setdefault("sizing_mode", "stretch_width")
    return pn.pane.HoloViews(obj, linked_axes=False, **kw)


def _series_overlay(data: dict | None = None, *, keys: list[str], kdim: str, vdim: str) -> hv.Overlay:
    """One curve per key (empty if not reported yet: a DynamicMap's overlay keeps the same
    layers from frame to frame). Styles come from :func:`_series_styles`, set once."""
    curves = []
    for key in keys:
        d = data.get(key) if data else None
        curves.append(hv.Curve(d if d is not None and len(d[kdim]) else [], kdim, vdim, label=key))
    return hv.Overlay(curves)


def _series_styles(keys: list[str]) -> hv.Options:
    """Colour and line style of each key, by position (``"truth"`` dashed, ``"<m>:own"``
    dotted): styling once, not on every frame, keeps a redraw cheap."""
    color, dash, width = [], [], []
    for key in keys:
        base = key.split(":")[0]
        color.append(theme.COLORS.get(base, "#888"))
        kind = key.split(":")[1] if ":" in key else ""
        dash.append(_DASH.get(kind, theme.style(base).dash))
        width.append(1.5 if base == "truth" else _WIDTH.get(kind, 2.5))
    return hv.opts.Curve(color=hv.Cycle(color), line_dash=hv.Cycle(dash), line_width=hv.Cycle(width))


#: line style of a series by its suffix: ``<m>:own`` the learned energy, ``<m>:own_rk4``
#: the same under RK4 (discrete gradient on), ``<m>:raw`` the rollout without projection
_DASH = {"own": "dotted", "own_rk4": "dotdash", "raw": "dashdot"}
_WIDTH = {"own": 2, "own_rk4": 1.5, "raw": 1.2}


class LossView(_PlotView):
    """Training loss and constraint violation per method (log scale)."""

    placeholder = "Training loss and constraint violation appear here once training starts."

    def build(self, streams: StreamSet):
        keys = list(streams.methods)

        def plot(vdim: str, **opts):
            def element():
                return _styled(_series_overlay(None, keys=keys, kdim="step", vdim=vdim).opts(_series_styles(keys)),
                               logy=True, xlabel="training step", show_legend=False, height=SMALL_HEIGHT, **opts)
            return LivePlot(element, getattr(streams, vdim), keys)

        loss = plot("loss", title="Training loss", ylabel="loss (MSE + constraint)")
        viol = plot("violation", title="Conservation violation at training points", ylabel="rms dQ/dt (normalised)")
        return pn.Column(loss, viol, sizing_mode="stretch_width")


class DriftView(_PlotView):
    """Drift of every true invariant along rollouts, per method, with the truth as reference."""

    placeholder = ("Drift curves appear here once the untrained networks have been rolled out: how far "
                   "each network's energy, momentum or mass wanders from its start.")

    def __init__(self, **params):
        self.ood_toggle = pn.widgets.Switch(value=False, width=40, margin=(8, 4, 0, 10))
        super().__init__(**params)
        s = self.session
        self.ood_toggle.link(s, value="ood")
        s.param.watch(lambda e: setattr(self.ood_toggle, "value", e.new), "ood")
        self.ood_label = html(margin=(4, 0), sizing_mode="stretch_width")
        s.config.param.watch(guarded(s, self._label), "ood_factor")
        s.param.watch(guarded(s, self._label), ["system", "data"])
        # after a run: move the test set out and see the same trained models there
        probe = s.ood_probe
        self.ood_slider = pn.widgets.FloatSlider(
            label="Move the test out: starts × the training band",
            start=probe.param.factor.bounds[0], end=probe.param.factor.bounds[1], step=0.5, value=probe.factor,
            disabled=True, width=360,
            margin=(4, 10), css_classes=["cl-ood-slider"])
        self.ood_slider.param.watch(guarded(s, lambda e: setattr(probe, "factor", e.new)), "value")
        probe.param.watch(guarded(s, self._probe_changed), ["factor", "available", "busy", "note"])
        self.ood_note = html(margin=(0, 10), sizing_mode="stretch_width", css_classes=["cl-ood-note"])
        self._label()
        self._probe_changed()

    def _probe_changed(self, *events) -> None:
        probe = self.session.ood_probe
        lo, hi = probe.param.factor.bounds
        self.ood_slider.param.update(start=lo, end=hi, value=probe.factor, disabled=not probe.available)
        if not probe.available:
            text = "After a run, this slider re-evaluates the trained models further out, with no training."
        elif probe.busy:
            text = f"Evaluating the trained models at ×{probe.factor:g}…"
        else:
            text = probe.note or ("Move the slider: the out-of-distribution curves are redrawn for the same "
                                  "trained models, with no training step.")
        self.ood_note.object = f"<span class='cl-muted'>{text}</span>"
        self._label()

    def _label(self, *events) -> None:
        s = self.session
        field = s.current_system.kind == "field"
        # the factor the OOD curves shown were evaluated at: the slider's after a move
        factor = s.data.stress_factor if s.data is not None and s.data.stress_factor else s.config.ood_factor
        self.ood_label.object = (
            f"Out-of-distribution test set: the dye patch carried at later times, ending ×{factor:g} the "
            f"training window" if field
            else f"Out-of-distribution test set: initial conditions ×{factor:g} beyond the training band")
        self.ood_slider.label = ("Move the test out: later times, × the training window" if field
                                 else "Move the test out: starts × the training band")

    def build(self, streams: StreamSet):
        plots = []
        system = streams.system
        tlabel = system.time_label
        own = [m for m in streams.methods if has_learned_energy(m, system)] if system.kind == "ode" else []
        rk4 = [k for k in streams.extra.get("energy", []) if k.endswith(":own_rk4")]
        own_keys = [f"{m}:own" for m in own] + rk4
        # a learned energy's drift is a different quantity from the true energy's error when
        # energy is not conserved (damping on): then it gets a plot and an axis of its own
        apart = bool(own_keys) and "energy" in streams.invariants and not system.is_conserved("energy")

        def element(keys, title, ylabel):
            return _styled(_series_overlay(None, keys=keys, kdim="t", vdim="drift").opts(_series_styles(keys)),
                           logy=True, title=title, xlabel=tlabel, ylabel=ylabel, show_legend=False)

        for q in streams.invariants:
            title, ylabel = theme.invariant_labels(system, q)
            extra = streams.extra.get(q, [])
            keys = list(streams.methods)
            if q == "energy":
                extra = [k for k in extra if k not in rk4]
                if own_keys and not apart:  # the same quantity, true and learned energy: one axis, said so
                    keys += own_keys
                    ylabel = f"{ylabel}   (dotted: Hθ)"
            keys += extra
            keys.append("truth")  # last, so that it is drawn on top
            plots.append(LivePlot(functools.partial(element, keys, title, ylabel), streams.drift[q], keys))
        if apart:
            title, ylabel = theme.LEARNED_ENERGY
            plots.append(LivePlot(functools.partial(element, own_keys, title, ylabel), streams.drift["energy"],
                                  own_keys))
        note = html(f"<span class='cl-muted'>{self.caption(streams, bool(own_keys), apart)}</span>",
                    sizing_mode="stretch_width")
        # two a row at most: three in a row (the n-body's) were a third of the column each
        grid = (pn.GridBox(*plots, ncols=2, sizing_mode="stretch_width") if len(plots) > 2 else
                pn.Row(*plots, sizing_mode="stretch_width"))
        return pn.Column(grid, note, sizing_mode="stretch_width")

    @staticmethod
    def caption(streams: StreamSet, own: bool, apart: bool) -> str:
        """The words under the drift plots: only about the curves this system's plots hold."""
        system = streams.system
        if system.kind == "field":
            parts = ["Dye mass: the mass of the dye patch carried by each learned field, which an "
                     "incompressible field keeps at exactly 1; the dashed black line is the true flow carried "
                     "the same way, the floor any model can reach. Compressibility: the rms ∇·u of each "
                     "learned field at fixed probe points, normalised; the true flow has none."]
        else:
            parts = ["Each curve is the mean over the test initial conditions, rolled out by the learned "
                     "dynamics with the integrator chosen under <i>Rollout and test</i>; the dashed black line "
                     "is the exact dynamics with the same integrator, the floor any model can reach."]
            if own and apart:
                parts.append("Energy is not conserved here, so the true-energy plot shows each model's error "
                             "against the truth's E(t); the network's own learned energy Hθ, a different "
                             "quantity, is on the plot of its own, dotted.")
            elif own:
                parts.append("Dotted: the network's own learned energy Hθ, which a hard constraint holds "
                             "exactly in continuous time; dot-dash: the same under RK4, when the rollout uses "
                             "the discrete gradient that holds it in every step.")
        if any(k.endswith(":raw") for keys in streams.extra.values() for k in keys):
            parts.append("Thin dash-dot (projection on): the same model without the projection; the truth is "
                         "never projected, so a projected model can sit below its line.")
        parts.append(f"Values below {DRIFT_FLOOR:g} are drawn at it. Curves refresh as training goes on.")
        return " ".join(parts)

    def __panel__(self):
        return pn.Column(pn.Row(self.ood_toggle, self.ood_label, sizing_mode="stretch_width"),
                         pn.Column(self.ood_slider, self.ood_note, sizing_mode="stretch_width"), self._box,
                         sizing_mode="stretch_width")


class MultiplierView(_PlotView):
    """The augmented Lagrangian's multipliers and μ over training (only when auglag runs)."""

    placeholder = "Multipliers appear here when the augmented Lagrangian method is trained."

    def _rebuild(self, *events) -> None:
        streams = self.session.streams
        self._box.visible = streams is not None and streams.has_multipliers
        self._box.objects = [self.build(streams)] if self._box.visible else []

    def build(self, streams: StreamSet):
        names = streams.multiplier_names
        # every λ in the augmented Lagrangian's own colour (another palette drew one in the
        # HNN's blue), told apart by its line; μ grey and dashed
        own, lines = theme.COLORS["auglag"], ["solid", "dotted", "dotdash", "dashdot"]
        lams = [n for n in names if n != "mu"]
        styles = hv.opts.Curve(line_width=2.5, color=hv.Cycle(["#444" if n == "mu" else own for n in names]),
                               line_dash=hv.Cycle(["dashed" if n == "mu" else lines[lams.index(n) % len(lines)]
                                                   for n in names]))

        def element():
            curves = hv.Overlay([hv.Curve([], "step", "value", label=name) for name in names])
            return _styled(curves.opts(styles), logy=True, title="Aug. Lagrangian: λ per invariant, μ dashed",
                           xlabel="training step", ylabel="value (rms λ, μ)", legend_position="right",
                           height=SMALL_HEIGHT)

        return LivePlot(element, streams.multipliers, names)


class SystemView(_PlotView):
    """What the learned dynamics do: a phase portrait (one degree of freedom), n-body
    orbits, or the flow's learned field and dye patch."""

    orbit = param.Integer(default=1, bounds=(1, 4), doc="Which test initial condition to draw (n-body).")
    field_of = param.Selector(default=None, objects=[], allow_None=True, doc="Whose velocity field to draw (flow).")
    frame = param.Number(default=1.0, bounds=(0.0, 1.0), doc="Time of the dye snapshot, as a fraction of the horizon.")

    placeholder = "The system view appears here: true and learned trajectories, fields and dye."

    def __init__(self, **params):
        self._on_frame = None
        self._built_for: StreamSet | None = None
        #: the phase portrait's channel (one degree of freedom or a plane of two)
        self._portrait_data: Channel | None = None
        self._orbit_watcher = None
        super().__init__(**params)
        self.session.param.watch(guarded(self.session, self._rebuild), ["views_ready", "data"])

    def _rebuild(self, *events) -> None:
        # a phase portrait is built with the other plots (its axes follow the data in the
        # browser). The n-body and flow views wait for a run's first rollout (equal-aspect
        # plots need data to size themselves); a later run on the same streams keeps the
        # picture until it redraws
        data, streams = self.session.data, self.session.streams
        if streams is not None and self._portrait_kind(streams):
            if self._built_for is not streams:
                self._built_for, self._on_frame = streams, None
                # hidden behind the placeholder the other systems show until their first
                # rollout: an empty view looks the same on every page
                self._portrait_view, self._portrait_wait = self.build(streams), _placeholder(self.placeholder)
                self._box.objects = [pn.Column(self._portrait_wait, self._portrait_view, sizing_mode="stretch_width")]
            if data is None and self._portrait_data is not None:  # reset, another system: empty it
                self._portrait_data.clear()
            drawn = data is not None and bool(streams.views.data)
            self._portrait_view.visible, self._portrait_wait.visible = drawn, not drawn
            return
        if data is None or streams is None:
            self._built_for, self._on_frame = None, None
            self._box.objects = [_placeholder(self.placeholder)]
        elif self._built_for is streams:
            return
        elif not streams.views.data:
            self._box.objects = [_placeholder("Rolling out the untrained networks from the test initial "
                                              "conditions…")]
        else:
            self._built_for = streams
            self._box.objects = [self.build(streams)]

    @staticmethod
    def _portrait_kind(streams: StreamSet) -> bool:
        return streams.system.view_family == "phase"

    @param.depends("frame", watch=True)
    def _frame_changed(self) -> None:
        if self._on_frame is not None:
            self._on_frame()

    #: what the system view draws for each ``System.view_family``
    FAMILIES = {"phase": "_portrait", "bodies": "_nbody", "field": "_flow"}

    def build(self, streams: StreamSet):
        family = streams.system.view_family
        if family not in self.FAMILIES:
            return _placeholder(f"No system view for the {streams.system.title} (view family {family!r}; "
                                f"known: {', '.join(self.FAMILIES)}). The drift plots above still show it.")
        return getattr(self, self.FAMILIES[family])(streams)

    # one degree of freedom: phase portrait (q, p) with the learned energy's contours;
    # more: the path in the plane of the first two coordinates (q1, q2)
    def _portrait(self, streams: StreamSet):
        dof = streams.system.dof
        cols = [0, dof] if dof == 1 else [0, 1]
        dims = ["q", "p"] if dof == 1 else ["q1", "q2"]
        # unconstrained first, hard constraints last: the lines that should hug the truth on top
        order = sorted(streams.methods, key=lambda k: _DRAW_ORDER.get(cmethods.ALL_METHODS[k].kind, 0))
        contoured = [m for m in order if has_learned_energy(m, streams.system)] if dof == 1 else []

        keys = [f"{m}:levels" for m in contoured] + order + ["truth"]

        def series(views: dict) -> dict:
            out = {f"{m}:levels": _line_columns(_energy_levels(views.get(m)), dims) for m in contoured}
            for m in order:
                z = views[m]["model"][:, :, cols] if m in views else None  # (T, 4, 2)
                out[m] = _line_columns([_clip_path(z[:, i, :]) for i in range(z.shape[1])] if z is not None else [],
                                       dims)
            ref = next((views[m] for m in order if m in views), None)
            z = ref["true"][:, :, cols] if ref is not None else None
            out["truth"] = _line_columns([z[:, i, :] for i in range(z.shape[1])] if z is not None else [], dims)
            return out

        colors = [theme.COLORS[m] for m in contoured + order] + [theme.COLORS["truth"]]
        styles = hv.opts.Curve(color=hv.Cycle(colors),
                               alpha=hv.Cycle([0.35] * len(contoured) + [0.85] * len(order) + [1.0]),
                               line_width=hv.Cycle([1.0] * len(contoured) + [1.5] * len(order) + [1.5]),
                               line_dash=hv.Cycle(["solid"] * len(contoured)
                                                  + [theme.style(m).dash for m in [*order, "truth"]]))
        xlabel, ylabel = streams.system.portrait_axes or (dims[0], dims[1])
        title = ("Phase portrait: 4 test orbits, true (dashed) and learned" if dof == 1 else
                 "First two coordinates along 4 test rollouts, true (dashed) and learned")

        def element():
            return _styled(hv.Overlay([hv.Curve([], *dims) for _ in keys]).opts(styles), title=title,
                           xlabel=xlabel, ylabel=ylabel, show_legend=False, height=PLOT_HEIGHT + 40)

        self._portrait_data = _channel_of(streams.views, series)
        overlay = LivePlot(element, self._portrait_data, keys)
        note = html("<span class='cl-muted'>A conserved energy keeps each orbit on a closed curve. "
                    "Thin lines: a network's learned energy levels — a Hamiltonian network's orbits must "
                    "follow them; a port-Hamiltonian one's may only cross them downhill.</span>" if dof == 1 else
                    "<span class='cl-muted'>Where the learned paths leave the dashed true ones, the "
                    "learned dynamics have gone their own way.</span>", sizing_mode="stretch_width")
        return pn.Column(overlay, note, sizing_mode="stretch_width")

    # n-body: orbits of one test case, true vs learned
    def _nbody(self, streams: StreamSet):
        nb = streams.system.n_bodies
        methods = list(streams.methods)

        def bodies(z, k):  # z (T, 4, 4N) -> N paths (T, 2)
            return [_clip_path(np.stack([z[:, k, 2 * i], z[:, k, 2 * i + 1]], -1)) for i in range(nb)]

        xy = ["x", "y"]
        keys = [*methods, *(f"{m}:end" for m in methods), "truth", "box"]

        def series(views: dict) -> dict:
            orbit = self.orbit
            ref = next((views[m] for m in methods if m in views), None)
            truth = bodies(ref["true"], orbit - 1) if ref is not None else []
            learned = {m: bodies(views[m]["model"], orbit - 1) if m in views else [] for m in methods}
            out = {m: _line_columns(learned[m], xy) for m in methods}
            for m in methods:
                ends = np.array([p[-1] for p in learned[m] if len(p)], float).reshape(-1, 2)
                out[f"{m}:end"] = {"x": ends[:, 0], "y": ends[:, 1]}
            out["truth"] = _line_columns(truth, xy)
            # invisible corners of a square around the true orbits: equal x and y spans
            box = np.zeros((0, 2))
            if truth:
                both = np.concatenate(truth)
                lo, hi = np.nanmin(both, 0), np.nanmax(both, 0)
                c, r = (lo + hi) / 2, 0.55 * float(np.max(hi - lo)) + 1e-6
                box = np.array([(c[0] - r, c[1] - r), (c[0] + r, c[1] + r)])
            out["box"] = {"x": box[:, 0], "y": box[:, 1]}
            return out

        colors = [theme.COLORS[m] for m in methods]
        styles = [hv.opts.Curve(color=hv.Cycle(colors + [theme.COLORS["truth"]]),
                                line_width=hv.Cycle([2.0] * len(methods) + [1.5]),
                                line_dash=hv.Cycle([theme.style(m).dash for m in [*methods, "truth"]])),
                  hv.opts.Points(color=hv.Cycle(colors + ["#000"]), size=hv.Cycle([8] * len(methods) + [1]),
                                 alpha=hv.Cycle([1.0] * len(methods) + [0.0]))]

        def element():
            layers = [hv.Curve([], *xy) for _ in methods] + [hv.Points([], xy) for _ in methods]
            layers += [hv.Curve([], *xy), hv.Points([], xy)]
            return _styled(hv.Overlay(layers).opts(*styles),
                           title=f"{nb} bodies: true dashed, learned solid",
                           xlabel="x", ylabel="y", show_legend=False, **_square(360))

        channel = _channel_of(streams.views, series)
        if self._orbit_watcher is not None:
            self.param.unwatch(self._orbit_watcher)
        self._orbit_watcher = self.param.watch(guarded(self.session, lambda e: channel.refresh()), "orbit")
        # equal padding on both axes keeps the box square
        overlay = LivePlot(element, channel, keys, padding=(0.1, 0.1), sizing_mode="fixed")
        picker = pn.widgets.IntSlider.from_param(self.param.orbit, label="Test case", width=200)
        # said under the plot, not in its title: a fixed square frame cut a longer title off
        note = html("<span class='cl-muted'>One test case: each body's true orbit dashed, the learned one "
                    "solid in its method's colour; a dot marks where each learned body ends.</span>",
                    sizing_mode="stretch_width")
        paired = [m for m in methods if has_pair_potential(m, streams.system)]
        if not paired:
            return pn.Column(picker, overlay, note, sizing_mode="stretch_width")
        return pn.Column(picker, overlay, note, self._pair_potential(streams, paired), sizing_mode="stretch_width")

    @staticmethod
    def _pair_potential(streams: StreamSet, paired: list[str]):
        """The symmetric model's learned pair term against the true softened gravity."""
        rv = ["r", "v"]
        keys = [*paired, "truth"]

        def series(views: dict) -> dict:
            out = {}
            for m in paired:
                pp = views.get(m, {}).get("pair_potential")
                out[m] = {"r": pp["r"], "v": pp["learned"]} if pp else {"r": np.zeros(0), "v": np.zeros(0)}
            ref = next((views[m]["pair_potential"] for m in paired
                        if "pair_potential" in views.get(m, {}) and views[m]["pair_potential"]["true"] is not None),
                       None)
            out["truth"] = {"r": ref["r"], "v": ref["true"]} if ref else {"r": np.zeros(0), "v": np.zeros(0)}
            return out

        styles = hv.opts.Curve(color=hv.Cycle([theme.COLORS[m] for m in paired] + [theme.COLORS["truth"]]),
                               line_width=hv.Cycle([2.5] * len(paired) + [1.5]),
                               line_dash=hv.Cycle([theme.style(m).dash for m in [*paired, "truth"]]))

        def element():
            return _styled(hv.Overlay([hv.Curve([], *rv) for _ in keys]).opts(styles),
                           title="Learned pair potential v(r) (solid) and the true −Gm²/√(r² + ε²) (dashed)",
                           xlabel="distance r between two bodies", ylabel="v(r) − v(r_max)", show_legend=False,
                           height=SMALL_HEIGHT)

        plot = LivePlot(element, _channel_of(streams.views, series), keys)
        note = html("<span class='cl-muted'>One function of distance, shared by every pair: that is what "
                    "makes momentum and angular momentum exact. It is learned from the forces only, from "
                    "half the closest pass in the training data up to the widest; where the solid line "
                    "leaves the dashed one, the learned forces are wrong. With unequal masses no single "
                    "true curve exists, and none is drawn.</span>", sizing_mode="stretch_width")
        return pn.Column(plot, note, sizing_mode="stretch_width")

    # flow: learned field over its divergence, and the dye patch
    def _flow(self, streams: StreamSet):
        methods = list(streams.methods)
        self.param.field_of.objects = methods
        if self.field_of not in methods:
            self.field_of = methods[0]

        def field(data=None, field_of=None):
            return _field_plot((data or {}).get(field_of))

        fmap = _styled(hv.DynamicMap(field, streams=[streams.views, hv.streams.Params(self, ["field_of"])]).opts(
            hv.opts.Image(cmap="RdBu_r", symmetric=True, colorbar=True, clabel="∇·u (1/s)"),
            hv.opts.VectorField(magnitude="length", pivot="tail", color="#222", line_width=1.2,
                                rescale_lengths=False)),
            title="Learned velocity u and its ∇·u",
            xlabel="x", ylabel="y", show_legend=False, **_square(FLOW_SIZE))

        def snapshot(xy, frame, every):  # (T, P, 2) -> (<= every, 2) at the chosen time, in the box
            k = int(round(frame * (xy.shape[0] - 1)))
            return np.mod(xy[k, :: max(1, xy.shape[1] // every)], 2 * np.pi)

        def dye(data=None, frame=1.0):
            views = data or {}
            ref = next((views[m] for m in methods if m in views), None)
            layers = [hv.Points(snapshot(ref["dye_true"], frame, 600) if ref is not None else [], ["x", "y"])]
            layers += [hv.Points(snapshot(views[m]["dye_model"], frame, 300) if m in views else [], ["x", "y"])
                       for m in methods]
            return hv.Overlay(layers)

        styles = hv.opts.Points(color=hv.Cycle(["#bbbbbb"] + [theme.COLORS[m] for m in methods]),
                                size=hv.Cycle([5] + [3] * len(methods)), alpha=hv.Cycle([1.0] + [0.8] * len(methods)))
        dmap = _styled(hv.DynamicMap(dye, streams=[streams.views, hv.streams.Params(self, ["frame"])]).opts(styles),
                       framewise=False, title="Dye patch (grey: truth)", xlabel="x", ylabel="y",
                       show_legend=False, xlim=(0, 2 * np.pi), ylim=(0, 2 * np.pi), **_square(FLOW_SIZE))
        who = pn.widgets.Select.from_param(self.param.field_of, label="Field of", width=200,
                                           options={theme.SHORT[m]: m for m in methods})
        when = pn.widgets.FloatSlider.from_param(self.param.frame, label="Dye time (fraction of the horizon)",
                                                 step=0.05, width=260)
        masses = html(sizing_mode="stretch_width")
        views_pipe = streams.views

        def show_mass(**_):
            views = views_pipe.data or {}
            ref = next((views[m] for m in methods if m in views), None)
            rows = [("truth", "truth", ref.get("mass_true") if ref else None)]
            rows += [(m, theme.SHORT[m], views[m].get("mass") if m in views else None) for m in methods]
            parts = []
            for key, label, arr in rows:
                if arr is None or len(arr) == 0:
                    continue
                k = int(round(self.frame * (len(arr) - 1)))
                parts.append(f"{theme.chip(key, label)} "
                             f"<b>{float(arr[k]):.4f}</b>")
            t = ref.get("t") if ref else None
            when_t = f" at t = {float(t[-1]) * self.frame:.2g}" if t is not None and len(t) else ""
            # projection on: what the Leray projection costs in velocity error
            costs = [f"{theme.chip(m, theme.SHORT.get(m, m))} {views[m]['velocity_error']:.3f} → "
                     f"<b>{views[m]['velocity_error_projected']:.3f}</b>"
                     for m in methods if m in views and "velocity_error_projected" in views[m]]
            cost = ("<div class='cl-legend'><span>Leray projection on: the dye rides the divergence-free part of "
                    "each field. Velocity error vs truth (rms, relative), network → projected:</span>"
                    + "".join(f"<span>{c}</span>" for c in costs) + "</div>") if costs else ""
            masses.object = (f"<div class='cl-legend'><span>Dye mass{when_t} (starts at 1):</span>"
                             + "".join(f"<span>{p}</span>" for p in parts) + "</div>" + cost)

        views_pipe.add_subscriber(show_mass)
        self._on_frame = show_mass
        show_mass()
        # side by side where the column is wide enough, one above the other where not
        plots = pn.FlexBox(_pane(fmap, sizing_mode="fixed"), _pane(dmap, sizing_mode="fixed"), gap="8px")
        return pn.Column(pn.Row(who, when), plots,
                         masses, sizing_mode="stretch_width")


def _field_plot(data=None):
    """Divergence heat map with the velocity arrows on top, from an Evaluation.view."""
    if not data or "u" not in data:
        return hv.Image(np.zeros((2, 2)), ["x", "y"], "div", bounds=(0, 0, 2 * np.pi, 2 * np.pi)) * \
            hv.VectorField(([np.pi], [np.pi], [0.0], [0.0]), ["x", "y"], ["angle", "length"])
    g = np.asarray(data["grid"])  # (n,)
    u = np.asarray(data["u"])  # (n, n, 2), rows = y
    d = np.asarray(data["div"])  # (n, n)
    img = hv.Image((g, g, d), ["x", "y"], "div")
    every = max(1, len(g) // 12)  # about 12 arrows a side, whatever the grid: a reader can follow them
    s = slice(None, None, every)
    X, Y = np.meshgrid(g[s], g[s], indexing="xy")
    uu, vv = u[s, s, 0], u[s, s, 1]
    speed = np.hypot(uu, vv)
    top = np.nanmax(speed) if np.isfinite(speed).any() else 0.0
    # the fastest arrow is 90 % of the arrow spacing long (in x, y units)
    length = 0.9 * (g[every] - g[0]) * speed / top if top > 0 else np.zeros_like(speed)
    vec = hv.VectorField((X.ravel(), Y.ravel(), np.arctan2(vv, uu).ravel(), length.ravel()),
                         ["x", "y"], ["angle", "length"])
    return img * vec


def _channel_of(pipe: hv.streams.Pipe, series: Callable[[dict], dict]) -> Channel:
    """A channel that follows ``pipe``: ``series(pipe.data)`` on each send (and on
    ``channel.refresh()``), and only the series whose points changed go on to the figure
    (the truth's orbits, the same every evaluation, are sent once)."""
    channel = Channel()
    channel.update(series(pipe.data or {}))
    ref = weakref.ref(channel)

    def follow(data=None, **_):
        ch = ref()
        if ch is None:  # the view was rebuilt: this channel is gone
            return
        new = series(data or {})
        changed = {k: v for k, v in new.items()
                   if k not in ch.data or any(not _same(ch.data[k].get(c), v[c]) for c in v)}
        ch.update(changed)

    pipe.add_subscriber(follow)
    channel.refresh = lambda: follow(pipe.data)  # the view's own settings changed (the n-body orbit)
    return channel


def _same(a, b) -> bool:
    return a is not None and np.shape(a) == np.shape(b) and np.array_equal(a, b, equal_nan=True)


def _line_columns(paths: list[np.ndarray], dims: list[str]) -> dict:
    """Several (T, 2) paths as the columns of one line, with NaN rows between them
    (Bokeh leaves a gap there)."""
    paths = [p for p in paths if len(p)]
    if not paths:
        return {dims[0]: np.zeros(0), dims[1]: np.zeros(0)}
    gap = np.full((1, 2), np.nan)
    xy = np.concatenate([x for p in paths for x in (p, gap)][:-1]).astype(float)
    return {dims[0]: xy[:, 0], dims[1]: xy[:, 1]}


def _line(paths: list[np.ndarray], dims: list[str]) -> hv.Curve:
    """Several (T, 2) paths drawn as one line, with NaN rows between them (Bokeh leaves a
    gap there). A Curve in data order redraws several times faster than a multi-path
    ``hv.Path``, which matters when a redraw holds the session's thread."""
    paths = [p for p in paths if len(p)]
    if not paths:
        return hv.Curve([], *dims)
    gap = np.full((1, 2), np.nan)
    return hv.Curve(np.concatenate([x for p in paths for x in (p, gap)][:-1]), *dims)


def _clip_path(xy: np.ndarray, limit: float = 1e3) -> np.ndarray:
    """A path cut where it blows up (a diverging rollout must not wreck the axes)."""
    ok = np.isfinite(xy).all(-1) & (np.abs(xy) < limit).all(-1)
    if ok.all():
        return xy
    bad = np.argmin(ok)
    return xy[: max(bad, 1)]


def _energy_levels(view, n: int = 9) -> list[np.ndarray]:
    """Level lines of a network's learned energy (``view["energy_grid"]``) as paths."""
    if not view or "energy_grid" not in view:
        return []
    g = view["energy_grid"]
    H = np.asarray(g["H"])  # (n_p, n_q): rows are p
    if not np.isfinite(H).all():
        return []
    try:
        import contourpy
    except ImportError:  # no level lines, the rest of the view is unaffected
        return []
    gen = contourpy.contour_generator(np.asarray(g["q"]), np.asarray(g["p"]), H)
    lo, hi = np.percentile(H, [2, 80])
    return [line for level in np.linspace(lo, hi, n) for line in gen.lines(level) if len(line) > 1]


# ------------------------------------------------------------------------------------------
# teaching cards
# ------------------------------------------------------------------------------------------
#: the LNN card's second line: the Lagrangian of the form in use
class TeachingView(pn.viewable.Viewer):
    """A card for the system (its equations) and one per ticked method, in its colour."""

    session = param.ClassSelector(class_=LabSession)

    def __init__(self, **params):
        super().__init__(**params)
        self._box = pn.FlexBox(sizing_mode="stretch_width", gap="12px")
        self._cache: dict[str, pn.viewable.Viewable] = {}
        self.session.param.watch(guarded(self.session, self._update), ["system", "methods"])
        variants = [m.variant_field for m in cmethods.ALL_METHODS.values() if m.variant_field]
        self.session.config.param.watch(guarded(self.session, self._update),
                                        list(dict.fromkeys([*variants, "integrator", "projection"])))
        self._update()

    def _card(self, key: str):
        m = cmethods.ALL_METHODS.get(key)
        if m is not None and m.variant_field:  # one card per variant (the LNN's forms)
            key = f"{key}:{m.variant(self.session.config)}"
        if key in self._cache:
            return self._cache[key]
        if key in cmethods.ROLLOUT_OPTIONS:
            o = cmethods.ROLLOUT_OPTIONS[key]
            card = pn.Card(tex(o.equation), html(f"<p>{o.teaching_note}</p><p class='cl-muted'>Applies to "
                                                 f"{_escape(o.applies_to)}.</p>", sizing_mode="stretch_width"),
                           title=o.title, collapsible=False, width=360,
                           header_background="#555", header_color="white")
        elif key in ALL_SYSTEMS:
            cls = ALL_SYSTEMS[key]
            eqs = [html(f"<b>{name}</b>", margin=(6, 5, 0, 5)) for name in cls.equations]
            body = []
            for label, expr in zip(eqs, cls.equations.values()):
                body += [label, tex(expr)]
            card = pn.Card(html(f"<p>{cls.teaching_note}</p>", sizing_mode="stretch_width"), *body,
                           title=f"System: {cls.title}", collapsible=False, width=430)
        else:
            key, _, form = key.partition(":")
            m = cmethods.ALL_METHODS[key]
            color = theme.COLORS[key]
            extra = []
            if form and form in m.variant_equations:
                extra = [html(f"<b>Form: {form}</b> <span class='cl-muted'>(Constraint settings)</span>",
                              margin=(6, 5, 0, 5)), tex(m.variant_equations[form])]
            card = pn.Card(tex(m.equation), *extra,
                           html(f"<p>{m.teaching_note}</p>", sizing_mode="stretch_width"),
                           title=f"{m.title}", collapsible=False, width=360,
                           header_background=color, header_color="white")
        self._cache[key] = card
        return card

    def _update(self, *events) -> None:
        s = self.session
        options = [k for k, on in (("discrete_gradient", s.config.integrator == "discrete_gradient"),
                                    ("projection", s.config.projection)) if on]
        self._box.objects = ([self._card(s.system)] + [self._card(m) for m in s.methods if m in s.valid_methods()]
                             + [self._card(k) for k in options])

    def __panel__(self):
        return self._box
