"""The status line, the progress bar with steps/s, the colour legend and "what to look
for". Consumes no channel: it watches the session's ``status``, ``status_kind``,
``progress``, ``speed``, ``running``, ``methods``, ``system`` and ``data``.
"""

from __future__ import annotations

import panel as pn
import param

from conserv_core import integrators

from app import theme
from app.rundata import has_learned_energy
from app.session import LabSession
from app.views import page
from app.views.common import _escape, guarded, html

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


page.register("status_view", StatusView, section="top", order=1, page_order=0)
