"""The system view, what the learned dynamics do, by the system's ``view_family``: a phase
portrait with the learned energy's level lines (``phase``), n-body orbits and the learned
pair potential (``bodies``), the flow's learned field over its divergence and the dye patch
(``field``). Channel: ``views``, the ``{method: Evaluation.view}`` arrays of each
evaluation round.
"""

from __future__ import annotations

import weakref
from typing import Callable

import holoviews as hv
import numpy as np
import panel as pn
import param

from conserv_core import methods as cmethods
from conserv_core import problems

from app import theme
from app.live import LivePlot
from app.rundata import Channel, StreamSet, has_learned_energy, has_pair_potential
from app.views import page
from app.views.common import (PLOT_HEIGHT, SMALL_HEIGHT, _pane, _placeholder, _PlotView, _square, _styled,
                              guarded, html)

#: drawing order by method kind in the system view (later is on top)
_DRAW_ORDER = {"none": 0, "soft": 1, "mixed": 2, "hard": 3}
#: the flow's square field and dye frames (px): big enough to see sources and sinks from the
#: back of a room; side by side in a wide column, one above the other in a narrow one
FLOW_SIZE = 340
#: what the system view draws, so what each run's view arrays hold: four test trajectories
#: (the phase portrait's lines, the n-body view's test cases), the learned energy's level
#: lines from a 41 x 41 grid, and the flow's field on 64 x 64 points (sources and sinks a
#: few grid cells wide are resolved, not a checkerboard)
SHOWN = problems.ViewSpec(trajectories=4, energy_grid=41, field_grid=64)


class SystemView(_PlotView):
    """What the learned dynamics do: a phase portrait (one degree of freedom), n-body
    orbits, or the flow's learned field and dye patch."""

    orbit = param.Integer(default=1, bounds=(1, SHOWN.trajectories),
                          doc="Which test initial condition to draw (n-body).")
    field_of = param.Selector(default=None, objects=[], allow_None=True, doc="Whose velocity field to draw (flow).")
    frame = param.Number(default=1.0, bounds=(0.0, 1.0), doc="Time of the dye snapshot, as a fraction of the horizon.")

    placeholder = "The system view appears here: true and learned trajectories, fields and dye."
    consumes = ("views",)

    def __init__(self, **params):
        self._on_frame = None
        self._built_for: StreamSet | None = None
        #: the phase portrait's channel (one degree of freedom or a plane of two)
        self._portrait_data: Channel | None = None
        self._orbit_watcher = None
        super().__init__(**params)
        self.session.shown = SHOWN  # the runs carry what this view draws
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
                z = views[m]["model"][:, :, cols] if m in views else None  # (T, trajectories, 2)
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


page.register("system_view", SystemView, section="dynamics", page_order=20, row="results", flex="3 1 0%",
              heading="What the learned dynamics do")
