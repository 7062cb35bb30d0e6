"""The teaching cards: one for the system (its equations), one per ticked method in its
colour (the variant's form where it has one), one per rollout option switched on.
Consumes no channel: it watches the session's ``system`` and ``methods`` and the
settings that pick a variant, the integrator and the projection.
"""

from __future__ import annotations

import panel as pn
import param

from conserv_core import methods as cmethods
from conserv_core.systems import ALL_SYSTEMS

from app import theme
from app.session import LabSession
from app.views import page
from app.views.common import _escape, guarded, html, tex

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


page.register("teaching_view", TeachingView, section="teaching", page_order=30,
              heading="The physics and the methods")
