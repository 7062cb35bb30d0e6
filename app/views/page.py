"""Where each view goes on the page: the registry :class:`app.dashboard.Dashboard` builds
its main area from. Consumes no channel.

A view module registers its view once, at import, with the attribute it gets on the
dashboard (``dash.drift_view``), the section it joins, its order there and the section's
heading::

    page.register("drift_view", DriftView, section="drift", order=0, page_order=10,
                  heading="Is the invariant kept? Drift along rollouts (log scale)")

The page is a column of sections, top to bottom by ``page_order``; the views of a section
stack under its heading by ``order``. Sections that name the same ``row`` sit side by
side in it, each taking its ``flex`` share of the width (CSS ``flex``). The first view
registered in a section creates it; the others name it and may repeat its settings, not
change them.

Every module of :mod:`app.views` is imported with the package, so a new plot is one new
module there; a view registered from anywhere else (a notebook, a test) is placed the same
way. Only the sidebar (the lesson menu, the controls, the share panel) is laid out by
the dashboard itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

#: the sections' default headings' HTML; a section's heading text goes inside
HEADING = "<h3 style='margin:4px 0'>{}</h3>"


@dataclasses.dataclass(frozen=True)
class Section:
    """A heading and the views under it, in one place on the page."""

    key: str
    heading: str = ""
    #: top to bottom on the page
    page_order: float = 0.0
    #: sections with the same (non-empty) row sit side by side, in page order
    row: str = ""
    #: the section's share of its row's width, as CSS ``flex`` (``"3 1 0%"``)
    flex: str = ""


@dataclasses.dataclass(frozen=True)
class Placement:
    """One registered view: what builds it, what the dashboard calls it, where it goes."""

    #: the dashboard's attribute for it (``dash.drift_view``)
    name: str
    #: called as ``view(session=...)``: a :class:`pn.viewable.Viewer` over a LabSession
    view: Callable[..., Any]
    section: str
    #: top to bottom within its section
    order: float = 0.0


SECTIONS: dict[str, Section] = {}
VIEWS: dict[str, Placement] = {}


def register(name: str, view: Callable[..., Any], *, section: str, order: float = 0.0,
             heading: str | None = None, page_order: float | None = None, row: str | None = None,
             flex: str | None = None) -> Callable[..., Any]:
    """Place ``view`` on the page: from then on every new dashboard builds it as
    ``dash.<name>`` and shows it in ``section``. A new section goes below the others
    unless ``page_order`` says where. A name already taken is refused, and so is a setting
    that differs from the one its section already has."""
    if not name.isidentifier():
        raise ValueError(f"view name {name!r} is not an identifier (it becomes dash.{name})")
    if name in VIEWS:
        raise ValueError(f"view name {name!r} is already registered")
    given = {k: v for k, v in dict(heading=heading, page_order=page_order, row=row, flex=flex).items()
             if v is not None}
    if section in SECTIONS:
        have = SECTIONS[section]
        clash = {k: v for k, v in given.items() if getattr(have, k) != v}
        if clash:
            raise ValueError(f"section {section!r} already has "
                             + ", ".join(f"{k}={getattr(have, k)!r}" for k in clash) + f"; {name!r} asked for "
                             + ", ".join(f"{k}={v!r}" for k, v in clash.items()))
    else:
        given.setdefault("page_order", max((s.page_order for s in SECTIONS.values()), default=0.0) + 10)
        SECTIONS[section] = Section(section, **given)
    VIEWS[name] = Placement(name, view, section, order)
    return view


def unregister(name: str) -> None:
    """Take a view added by :func:`register` off the page again (and its section, when
    it was the last view there)."""
    placed = VIEWS.pop(name, None)
    if placed is not None and not any(p.section == placed.section for p in VIEWS.values()):
        SECTIONS.pop(placed.section, None)


@contextlib.contextmanager
def registered(name: str, view: Callable[..., Any], **where) -> Iterator[Callable[..., Any]]:
    """``with registered(name, view, section=...):`` the view is on every dashboard built
    inside the block only (for tests and notebooks that try a plot out)."""
    register(name, view, **where)
    try:
        yield view
    finally:
        unregister(name)


def placements() -> list[Placement]:
    """The registered views in page order: the order a dashboard builds them in."""
    return [p for row in layout() for _, views in row for p in views]


def layout() -> list[list[tuple[Section, list[Placement]]]]:
    """The page, top to bottom: rows of sections (one, or those sharing a ``row``, left to
    right), each with its views in order."""
    rows: list[list[tuple[Section, list[Placement]]]] = []
    where: dict[str, int] = {}
    for sec in sorted(SECTIONS.values(), key=lambda s: s.page_order):
        views = sorted((p for p in VIEWS.values() if p.section == sec.key), key=lambda p: p.order)
        if sec.row and sec.row in where:
            rows[where[sec.row]].append((sec, views))
            continue
        if sec.row:
            where[sec.row] = len(rows)
        rows.append([(sec, views)])
    return rows
