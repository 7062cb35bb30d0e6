"""The lesson's three views: the box above the plots (title, things to try, "show all
controls"), the leader's "Share as lesson" panel, and the menu of failure-mode lessons.
The lesson itself (what a link carries) is :mod:`app.lesson`."""

from __future__ import annotations

import html as _html
from urllib.parse import urlencode

import panel as pn
import param

from conserv_core.presets import FAILURE_MODES, PRESETS

from app import lesson
from app.session import LabSession
from app.settings import url_config_fields, url_system_fields
from app.views import Controls, guarded, html, page

#: the failure-mode lessons as the menu and the README name them (preset -> short line)
FAILURE_LINES = {
    "damped-pendulum": "Friction breaks the HNN",
    "chaos-double-pendulum": "Chaos: bounded energy, diverging path",
    "generic-lnn-runaway": "The generic LNN runs away",
    "integrator-vs-model": "Integrator error versus model error",
    "ood-leakage": "Hard constraints keep what they learned",
    "wrong-symmetry": "A wrong symmetry, held exactly",
}


def failure_links(base: str = "") -> list[tuple[str, str]]:
    """``(line, link)`` for every failure-mode lesson, in teaching order."""
    return [(FAILURE_LINES.get(k, PRESETS[k].title), f"{base}?{urlencode({'preset': k})}") for k in FAILURE_MODES]


class LessonView(pn.viewable.Viewer):
    """Above the plots: the lesson's (or the preset's) title and things to try, and in
    lesson mode a switch that shows the hidden controls."""

    session = param.ClassSelector(class_=LabSession)

    def __init__(self, **params):
        super().__init__(**params)
        s = self.session
        self.box = html(sizing_mode="stretch_width", margin=(4, 10))
        self.show_all = pn.widgets.Switch(value=False, width=40, margin=(6, 4, 0, 10), css_classes=["cl-show-all"])
        self.show_label = html("Show all controls <span class='cl-muted'>(this lesson hides some)</span>",
                               margin=(4, 0))
        self.show_all.link(s.lesson, value="show_all")
        s.lesson.param.watch(lambda e: setattr(self.show_all, "value", e.new), "show_all")
        s.lesson.param.watch(guarded(s, self._update), ["title", "tries", "hide"])
        s.param.watch(guarded(s, self._update), "preset")
        self._row = pn.Row(self.show_all, self.show_label, sizing_mode="stretch_width")
        self._update()

    def _update(self, *events) -> None:
        s = self.session
        title, tries = lesson.shown(s.lesson, s.preset)
        self.box.object = lesson.render(title, tries)
        self.box.visible = bool(title or tries)
        self._row.visible = bool(s.lesson.hide)

    def __panel__(self):
        return pn.Column(self.box, self._row, sizing_mode="stretch_width")


class SharePanel(pn.viewable.Viewer):
    """The leader's panel: tick the controls to hide, write a title and up to five
    things to try, copy the link. The link holds the settings in use too (the preset,
    the system, the methods, every training setting)."""

    session = param.ClassSelector(class_=LabSession)
    controls = param.ClassSelector(class_=Controls)

    def __init__(self, **params):
        super().__init__(**params)
        s = self.session
        self.title = pn.widgets.TextInput(label="Lesson title", max_length=lesson.MAX_TITLE_CHARS,
                                          placeholder="e.g. Friction and the HNN", sizing_mode="stretch_width")
        self.tries = pn.widgets.TextAreaInput(
            label=f"Things to try (one per line, at most {lesson.MAX_TRIES})", rows=5,
            max_length=lesson.MAX_TRIES * (lesson.MAX_TRY_CHARS + 1), sizing_mode="stretch_width",
            placeholder="Press Train and watch the energy drift.\nSet damping to 0.3 and train again.")
        self.hide = pn.widgets.MultiChoice(label="Controls to hide", options={}, sizing_mode="stretch_width",
                                           placeholder="none")
        self.link = pn.widgets.TextInput(label="Lesson link (copy it)", disabled=True, sizing_mode="stretch_width")
        self.open = html(sizing_mode="stretch_width")
        self.note = html(sizing_mode="stretch_width")
        update = guarded(s, self._update)
        for w in (self.title, self.tries, self.hide):
            w.param.watch(update, "value")
        s.param.watch(guarded(s, self._options), "system")
        s.param.watch(update, ["system", "methods", "preset"])
        s.config.param.watch(update, url_config_fields())
        for key, sysm in s.systems.items():
            sysm.param.watch(update, url_system_fields(key))
        self._options()
        self._update()

    def _options(self, *events) -> None:
        names = self.controls.hideable()
        key = self.session.system
        mine = {label: n for n, label in names.items() if "." not in n or n.startswith(key + ".")}
        self.hide.options = mine
        self.hide.value = [v for v in self.hide.value if v in mine.values()]

    def draft(self) -> lesson.Lesson:
        """The lesson the panel describes now (long lines cut, at most five kept)."""
        tries = [t.strip()[: lesson.MAX_TRY_CHARS] for t in self.tries.value.splitlines() if t.strip()]
        return lesson.Lesson(title=self.title.value.strip()[: lesson.MAX_TITLE_CHARS],
                             tries=tries[: lesson.MAX_TRIES], hide=list(self.hide.value))

    def _update(self, *events) -> None:
        s = self.session
        loc = s.location
        base = loc.href.split("?")[0] if loc is not None and getattr(loc, "href", "") else ""
        draft = self.draft()
        url = lesson.link(base, s.query_string(), draft, s.preset)
        self.link.value = url
        extra = len([t for t in self.tries.value.splitlines() if t.strip()]) - lesson.MAX_TRIES
        self.note.object = (f"<span class='cl-muted'>Only the first {lesson.MAX_TRIES} lines are kept "
                            f"({extra} more written).</span>" if extra > 0 else
                            "<span class='cl-muted'>The whole lesson is in the link: nothing is stored on the "
                            "server, and the link survives a restart.</span>")
        if base:
            self.open.object = (f'<a href="{_html.escape(url, quote=True)}" target="_blank" rel="noopener">'
                                "Open the lesson in a new tab</a>")
        else:
            self.open.object = ("<span class='cl-muted'>Add this query to the dashboard's address "
                                "(a notebook has no address of its own).</span>")

    def __panel__(self):
        return pn.Card(self.title, self.tries, self.hide, self.link, self.open, self.note,
                       title="Share as lesson", collapsed=True, sizing_mode="stretch_width")


class LessonMenu(pn.viewable.Viewer):
    """The failure-mode lessons: links on a served page (each opens the dashboard on that
    lesson), buttons that apply the preset in a notebook (which has no address to link)."""

    session = param.ClassSelector(class_=LabSession)
    served = param.Boolean(default=True)

    def __panel__(self):
        head = html("<div class='cl-muted'>Each opens a preset with its things to try.</div>",
                    sizing_mode="stretch_width")
        if self.served:
            items = "".join(f'<li><a href="{_html.escape(link, quote=True)}">{_html.escape(line)}</a></li>'
                            for line, link in failure_links())
            body = [head, html(f"<ol style='margin:4px 0 0 0;padding-left:20px'>{items}</ol>",
                               sizing_mode="stretch_width")]
        else:
            s = self.session
            body = [head]
            for k in FAILURE_MODES:
                b = pn.widgets.Button(label=FAILURE_LINES.get(k, PRESETS[k].title), button_type="light",
                                      sizing_mode="stretch_width")
                b.on_click(guarded(s, lambda e, k=k: s.apply_preset(k)))
                body.append(b)
        return pn.Card(*body, title="Lessons: how constraints fail", collapsed=True, sizing_mode="stretch_width")


page.register("lesson_view", LessonView, section="top", order=0, page_order=0)
