"""The drift plots: how far each true invariant (energy, momentum, dye mass, ...) wanders
along the rollouts, per method, with the truth as the floor, and the out-of-distribution
switch and slider above them. Channels: ``drift`` (one per invariant) and ``extra`` (the
series the rollout options add: ``<m>:own``, ``<m>:own_rk4``, ``<m>:raw``).
"""

from __future__ import annotations

import functools

import panel as pn

from app import ood, theme
from app.live import LivePlot
from app.rundata import DRIFT_FLOOR, StreamSet, has_learned_energy
from app.views import page
from app.views.common import _PlotView, _series_overlay, _series_styles, _styled, guarded, html

class DriftView(_PlotView):
    """Drift of every true invariant along rollouts, per method, with the truth as reference."""

    placeholder = ("Drift curves appear here once the untrained networks have been rolled out: how far "
                   "each network's energy, momentum or mass wanders from its start.")
    consumes = ("drift", "extra")

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
            start=probe.param.factor.bounds[0], end=probe.param.factor.bounds[1], step=ood.STEP, value=probe.factor,
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


page.register("drift_view", DriftView, section="drift", page_order=10,
              heading="Is the invariant kept? Drift along rollouts (log scale)")
