"""Lessons: a title, up to five things to try and the controls a class should not touch,
all carried by the link, so a workshop leader builds one in the page and hands it out.

    ?preset=damped-pendulum&lesson=Friction+and+the+HNN&try=Tick+the+PHNN&hide=system,methods

``lesson`` is the title, ``try`` repeats once per line (at most :data:`MAX_TRIES`),
``hide`` names the controls to hide (their names are the link's own keys: ``steps``,
``lr``, ``pendulum.damping``, and the groups ``preset``, ``system``, ``methods``,
``downloads``). Nothing is kept on the server: the link survives a restart. A preset
is a lesson too: its own things to try show when it is applied (:attr:`Preset.tries`).

A bad part of a lesson (an unknown control, a title of 100 kB) is refused alone and named
in the status line like any other part of a link; the title and the lines are shown as
text, never as markup.
"""

from __future__ import annotations

import html as _html
from urllib.parse import urlencode

import param

from conserv_core.presets import PRESETS

from app import settings
from app.settings import config_fields, system_fields

#: the link's keys a lesson reads (taken out of the query before the settings read it)
KEYS = ("lesson", "try", "hide")
MAX_TRIES = 5
MAX_TITLE_CHARS = 120
MAX_TRY_CHARS = 240
#: controls hidden as a group (besides every training setting and system parameter)
GROUPS = {
    "preset": "Preset menu",
    "system": "System menu",
    "methods": "Methods to compare",
    "downloads": "Downloads",
}


def control_names(system_key: str) -> list[str]:
    """Every control a lesson of ``system_key`` may hide, by its link name (the
    dashboard's :meth:`Controls.hideable` gives their labels)."""
    return [*GROUPS, *config_fields(), *(f"{system_key}.{n}" for n in system_fields(system_key))]


def control_label(name: str) -> str:
    """A readable label for a control's link name (where its widget has none)."""
    return {**GROUPS, "invariants": "Invariants the soft constraints act on"}.get(name, name)


class Lesson(param.Parameterized):
    """The lesson a page shows (empty: no lesson). Written by a link or the share panel."""

    title = param.String(default="", doc="The lesson's title, shown above the plots.")
    tries = param.List(default=[], item_type=str, doc="Things to try, one line each.")
    hide = param.List(default=[], item_type=str, doc="Controls hidden in lesson mode (link keys).")
    show_all = param.Boolean(default=False, doc="Show the hidden controls anyway (for the curious).")

    @property
    def active(self) -> bool:
        """A lesson is set (a title, lines or hidden controls)."""
        return bool(self.title or self.tries or self.hide)

    def hidden(self) -> set[str]:
        """The controls to hide now (none once "show all controls" is on)."""
        return set() if self.show_all else set(self.hide)

    def clear(self) -> None:
        self.param.update(title="", tries=[], hide=[], show_all=False)

    # -- links ------------------------------------------------------------------------------
    def read(self, pairs: list[tuple[str, str]], system_key: str) -> tuple[list[tuple[str, str]], list[str]]:
        """Take the lesson's keys out of a link's ``pairs`` and apply them. Returns the
        other pairs (for the settings) and one plain clause per refused part. Called
        after nothing else: the system named by the link decides which controls exist,
        so :meth:`check_hide` runs again once the settings are read."""
        rest, refused = [], []
        title, tries, hide = None, [], None
        for key, text in pairs:
            if key == "lesson":
                title = text
            elif key == "try":
                tries.append(text)
            elif key == "hide":
                hide = text
            else:
                rest.append((key, text))
        if title is not None:
            if len(title) > MAX_TITLE_CHARS:
                refused.append(f"lesson: the title is {len(title):,} characters long (at most {MAX_TITLE_CHARS})")
                title = title[:MAX_TITLE_CHARS]
            title = title.strip()
        kept = []
        for line in tries:
            line = line.strip()
            if not line:
                continue
            if len(line) > MAX_TRY_CHARS:
                refused.append(f"try: a line of {len(line):,} characters (at most {MAX_TRY_CHARS})")
                continue
            kept.append(line)
        if len(kept) > MAX_TRIES:
            refused.append(f"try: {len(kept)} lines (at most {MAX_TRIES}; the first {MAX_TRIES} are shown)")
            kept = kept[:MAX_TRIES]
        names: list[str] = []
        if hide is not None:
            if len(hide) > settings.MAX_VALUE_CHARS:
                refused.append(f"hide: {len(hide):,} characters long (at most {settings.MAX_VALUE_CHARS:,})")
            else:
                names = [n.strip() for n in hide.split(",") if n.strip()]
        self.param.update(title=title or "", tries=kept, hide=names, show_all=False)
        return rest, refused

    def check_hide(self, system_key: str) -> list[str]:
        """Drop the hidden names that are no control of ``system_key``; say which."""
        valid = control_names(system_key)
        bad = [n for n in self.hide if n not in valid]
        if not bad:
            return []
        self.hide = [n for n in self.hide if n in valid]
        return [settings.refusal("hide", ",".join(bad), why="no such control; one of "
                                 + ", ".join(valid[:8]) + ", … (the link's own setting names)").args[0]]

    def query_pairs(self) -> list[tuple[str, str]]:
        """The lesson as link pairs (empty without a lesson)."""
        pairs = []
        if self.title:
            pairs.append(("lesson", self.title))
        pairs.extend(("try", t) for t in self.tries)
        if self.hide:
            pairs.append(("hide", ",".join(self.hide)))
        return pairs


def link(base: str, settings_query: str, lesson: Lesson, preset: str = "") -> str:
    """The lesson's full link: ``base`` (the page's address without its query), the
    preset, the settings in use and the lesson."""
    from urllib.parse import parse_qsl

    pairs = [("preset", preset)] if preset else []
    pairs += parse_qsl(settings_query, keep_blank_values=True)
    pairs += lesson.query_pairs()
    return base + "?" + urlencode(pairs)


def shown(lesson: Lesson, preset: str) -> tuple[str, list[str]]:
    """The title and the things to try a page shows: the lesson's, else its preset's."""
    p = PRESETS.get(preset) if preset else None
    title = lesson.title or (p.title if p is not None and (lesson.tries or p.tries) else "")
    tries = list(lesson.tries) or (list(p.tries) if p is not None else [])
    return title, tries


def render(title: str, tries: list[str], note: str = "") -> str:
    """The lesson box as HTML: every text escaped once (a ``<script>`` in a title is text)."""
    if not title and not tries:
        return ""
    esc = _html.escape
    parts = ['<div class="cl-lesson">']
    if title:
        parts.append(f'<div class="cl-lesson-title">{esc(title)}</div>')
    if tries:
        parts.append("<b>Things to try</b><ol>" + "".join(f"<li>{esc(t)}</li>" for t in tries) + "</ol>")
    if note:
        parts.append(f'<div class="cl-muted">{esc(note)}</div>')
    parts.append("</div>")
    return "".join(parts)
