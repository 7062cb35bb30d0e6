"""The training curves: loss and constraint violation per method (:class:`LossView`,
channels ``loss`` and ``violation``), and the augmented Lagrangian's multipliers and μ
(:class:`MultiplierView`, channel ``multipliers``), all against the training step.
"""

from __future__ import annotations

import holoviews as hv
import panel as pn

from app import theme
from app.live import LivePlot
from app.rundata import StreamSet
from app.views import page
from app.views.common import SMALL_HEIGHT, _PlotView, _series_overlay, _series_styles, _styled

class LossView(_PlotView):
    """Training loss and constraint violation per method (log scale)."""

    placeholder = "Training loss and constraint violation appear here once training starts."
    consumes = ("loss", "violation")

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


class MultiplierView(_PlotView):
    """The augmented Lagrangian's multipliers and μ over training (only when auglag runs)."""

    placeholder = "Multipliers appear here when the augmented Lagrangian method is trained."
    consumes = ("multipliers",)

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


page.register("loss_view", LossView, section="training", order=0, page_order=21, row="results",
              flex="2 1 0%", heading="Training")
page.register("multiplier_view", MultiplierView, section="training", order=1)
