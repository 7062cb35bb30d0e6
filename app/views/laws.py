"""The five laws on one screen: a table of the conservation laws the lab names (rows)
against no constraint, a soft penalty and a hard construction (columns), drawn from
:data:`conserv_core.laws.LAWS`. Each filled cell is a button: one click applies that
row's preset with the baseline beside the cell's methods, and trains. Consumes no
channel.
"""

from __future__ import annotations

import panel as pn
import param

from conserv_core import laws
from conserv_core.presets import PRESETS

from app import theme
from app.session import LabSession
from app.views import page
from app.views.common import guarded, html

#: the columns' headings
HEADINGS = {"baseline": "No constraint", "soft": "Soft: a penalty in the loss", "hard": "Hard: built in"}


class LawsView(pn.viewable.Viewer):
    """Which law, which method: one row per law, one button per comparison."""

    session = param.ClassSelector(class_=LabSession)

    def __init__(self, **params):
        super().__init__(**params)
        #: (law key, column) -> the cell's button
        self.buttons: dict[tuple[str, str], pn.widgets.Button] = {}
        cells = [html("<b>Law</b>"), *(html(f"<b>{HEADINGS[c]}</b>") for c in laws.COLUMNS)]
        for law in laws.LAWS:
            preset = PRESETS[law.preset].title if law.preset else ""
            cells.append(html(f"<b>{law.name}</b><br><span class='cl-muted'>{law.quantity}"
                              + (f"<br>preset: {preset}" if preset else "") + "</span>",
                              sizing_mode="stretch_width"))
            for column in laws.COLUMNS:
                cells.append(self._cell(law, column))
        self._grid = pn.GridBox(*cells, ncols=1 + len(laws.COLUMNS), sizing_mode="stretch_width")
        self._note = html("<span class='cl-muted'>Press a method to run it beside the baseline on the preset "
                          "that shows its law (the baseline alone in the first column); the settings change as a "
                          "link would change them.</span>",
                          sizing_mode="stretch_width")

    def _cell(self, law: laws.Law, column: str):
        ms = law.methods(column)
        if not ms:
            why = law.why_empty(column) or "No method of this kind for this law."
            return html(f"<span class='cl-muted'>— {why}</span>", sizing_mode="stretch_width")
        # the column says hard or soft: the name alone ("HNN", not "HNN (hard)")
        label = " · ".join(theme.SHORT[m].split(" (")[0] for m in ms)
        b = pn.widgets.Button(name=f"{label}  ▶", button_type="light", sizing_mode="stretch_width",
                              description=f"Run {', '.join(ms)} on '{law.preset}'")
        b.on_click(guarded(self.session, lambda e, law=law, column=column: self.run(law.key, column)))
        self.buttons[(law.key, column)] = b
        return b

    def run(self, law_key: str, column: str):
        """Apply the cell's comparison (its preset, the baseline beside its methods) and
        train it: what a click on the cell does. Returns the run, or None if refused."""
        s = self.session
        query = laws.get_law(law_key).query(column)
        if query is None:
            return None
        refused = s.apply_link(query)
        if refused:
            s.refuse_link(refused)
            return None
        return s.train()

    def __panel__(self):
        return pn.Column(self._grid, self._note, sizing_mode="stretch_width")


page.register("laws_view", LawsView, section="laws", page_order=32,
              heading="Which law, which method: every conservation law the lab shows, in one table")
