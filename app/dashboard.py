"""The Conservation Lab dashboard: one object for a notebook, one page per browser tab.

    panel serve app/dashboard.py          # or: conserv serve / python -m app
    # notebook:
    import app; app.extension(inline=True); dash = app.Dashboard(); dash
    dash.drift_view                        # each view on its own

Each session gets its own :class:`~app.session.LabSession`: its own settings, worker
thread and streams, so two tabs train different things without touching each other.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import holoviews as hv
import panel as pn
import param

from app.serving import prepare_document, release_memory_soon
from app.lesson_views import LessonMenu, SharePanel  # (and, on import, the lesson view's place)
from app.session import LabSession
from app.settings import url_config_fields, url_system_fields
from app import sweep_view  # noqa: F401  (on import, the sweep view's place)
from app.views import Controls, guarded, html, page

TITLE = "Conservation Lab"

_loaded = False


def extension(inline: bool | None = None) -> None:
    """Load Panel and HoloViews for the dashboard (``inline=True`` offline in notebooks)."""
    global _loaded
    kw = {} if inline is None else {"inline": inline}
    pn.extension("katex", **kw)
    hv.extension("bokeh", logo=False, **kw)
    _loaded = True


class Dashboard(pn.viewable.Viewer):
    """Pick a system and methods, press Train, watch the baseline drift and the
    constrained models hold.

    Args:
        autodrain: drain the worker's records on a periodic callback (served pages and
            notebooks). Tests pass ``False`` and call :meth:`drain` themselves.
        threads: torch threads per training run (default: ``CONSERV_THREADS`` or 1).
        sync_url: keep every setting in the page's URL (served pages only).
        location: the URL to sync with (default: the served page's ``pn.state.location``).
    """

    session = param.ClassSelector(class_=LabSession)

    def __init__(self, autodrain: bool = True, threads: int | None = None, sync_url: bool = True,
                 location: pn.io.location.Location | None = None, **params):
        if not _loaded:
            extension()
        params.setdefault("session", LabSession(threads=threads))
        super().__init__(**params)
        self._main: list | None = None
        s = self.session
        s.autodrain = autodrain
        self.controls = Controls(session=s)
        #: every view :mod:`app.views.page` places, by name; each is also ``self.<name>``
        self.views: dict[str, pn.viewable.Viewer] = {}
        for placed in page.placements():
            if hasattr(self, placed.name) or placed.name in ("lesson_menu", "share_panel"):
                raise ValueError(f"view name {placed.name!r} is taken by the Dashboard itself")
            self.views[placed.name] = placed.view(session=s)
            setattr(self, placed.name, self.views[placed.name])
        served = pn.state.curdoc is not None and pn.state.curdoc.session_context is not None
        # a notebook has no address for the lessons' links: its menu applies the presets
        self.lesson_menu = LessonMenu(session=s, served=served or location is not None)
        self.share_panel = SharePanel(session=s, controls=self.controls)
        s.lesson.param.watch(guarded(s, lambda *e: self.controls.hide(s.lesson.hidden())), ["hide", "show_all"])
        if sync_url:
            loc = location if location is not None else (pn.state.location if served else None)
            if loc is not None:
                self._sync_url(loc)
                self.share_panel._update()  # the page's address is known now
        # empty plots, titled and labelled (and again for each system chosen): Train then
        # only fills them. Served, they are built once the page is up, so that the page is
        # usable first.
        s.autoprepare = True
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.onload(guarded(s, s.prepare))
            pn.state.on_session_destroyed(self._destroyed)
        else:
            s.prepare()

    def _close_views(self) -> None:
        for view in self.views.values():
            if callable(getattr(view, "close", None)):
                view.close()

    def _destroyed(self, session_context) -> None:
        self.session.close()
        self._close_views()
        # the page's Location lives in a WeakKeyDictionary keyed by the document; what it
        # watches must not point back at the document, or the session is never freed
        loc, watcher = self.session.location, getattr(self, "_link_watcher", None)
        if loc is not None and watcher is not None:
            loc.param.unwatch(watcher)
            self._link_watcher = None
        self._release_links()
        release_memory_soon()  # one collection for a burst of closes, not one each

    def _release_links(self) -> None:
        """Drop this page's widgets from Panel's global registry of JS links. Editable
        sliders register a link there, in a WeakKeyDictionary whose values point back at
        their keys: left alone, every closed session would stay in memory."""
        from panel.links import Callback

        layouts = [self.controls, *self.controls._system_widgets.values(), *self.main()]
        mine = {id(o) for layout in layouts for o in pn.panel(layout).select()}
        for key in [k for k in list(Callback.registry.keys()) if id(k) in mine]:
            Callback.registry.pop(key, None)

    # -- the public handles tests and notebooks use ------------------------------------------
    def drain(self, budget: float | None = None) -> int:
        """Move the worker's records into the plots now (what the periodic callback does,
        with a time ``budget`` for redrawing; ``None`` draws everything)."""
        return self.session.drain(budget)

    def train(self):
        return self.session.train()

    def stop(self) -> None:
        self.session.stop()

    def pause(self) -> None:
        self.session.pause()

    def resume(self) -> None:
        self.session.resume()

    def step(self) -> None:
        self.session.step()

    def reset(self) -> None:
        self.session.reset()

    def close(self) -> None:
        self.session.close()
        self._close_views()

    # -- URL ----------------------------------------------------------------------------------
    def _sync_url(self, loc: pn.io.location.Location) -> None:
        """Settings <-> URL query: the link reproduces the run (seed included).

        Not Panel's ``Location.sync``: that applies an object's keys all or nothing (one
        bad key threw the link's good ones away), trusts its own parsing (``true`` became
        a seed, and the page failed to render) and drops empty values silently. A link is
        read here one key at a time (:meth:`LabSession.apply_link`): each refused key is
        named in the status line with what it takes, the rest applies. The address bar
        then holds the settings in use (:meth:`_write_link`), after every change. The
        browser sends its address back once its page is up: that is the same link, read
        the same way (no change, the same notice)."""
        s = self.session
        s.location = loc
        self._location = loc
        self._reading = False
        self._written: str | None = None
        self._read_link(loc.search)
        write = lambda *events: self._write_link()  # noqa: E731
        s.param.watch(write, ["system", "methods", "preset"])
        s.lesson.param.watch(write, ["title", "tries", "hide"])
        s.config.param.watch(write, url_config_fields())
        for key, sysm in s.systems.items():
            sysm.param.watch(write, url_system_fields(key))
        self._link_watcher = loc.param.watch(lambda e: self._read_link(e.new), "search")

    def _read_link(self, search: str) -> None:
        """Apply a link's query (what the address bar holds) and name what was refused."""
        s = self.session
        if search == self._written:  # our own write coming back
            return
        refused: list[str] = []
        self._reading = True
        try:
            # the lesson's keys first (app.lesson), then the settings; which controls exist
            # to hide depends on the system the link names
            pairs, refused = s.lesson.read(parse_qsl(search[1:], keep_blank_values=True), s.system)
            refused = s.apply_link(pairs) + refused
            refused += s.lesson.check_hide(s.system)
        except Exception as err:  # a bad link must still open the page
            s.report_error(err)
        finally:
            self._reading = False
        self._write_link()
        s.refuse_link(refused)

    def _write_link(self) -> None:
        """The settings in use into the address bar (only the current system's own)."""
        if self._reading:
            return
        s = self.session
        pairs = [("preset", s.preset)] if s.preset else []
        pairs += parse_qsl(s.query_string()) + s.lesson.query_pairs()
        search = "?" + urlencode(pairs)
        if search != self._location.search:
            self._written = search
            self._location.search = search

    # -- layout -------------------------------------------------------------------------------
    def main(self) -> list:
        """The main area's rows (the template puts the controls in the sidebar)."""
        if self._main is None:
            self._main = self._build_main()
        return self._main

    def _build_main(self) -> list:
        """One row per section of :func:`app.views.page.layout` (or one row of the
        sections that share it): each a column of its heading and its views."""
        rows = []
        for sections in page.layout():
            columns = []
            for sec, placed in sections:
                heading = [html(page.HEADING.format(sec.heading))] if sec.heading else []
                styles = {"styles": {"flex": sec.flex}} if sec.flex else {}
                columns.append(pn.Column(*heading, *(self.views[p.name] for p in placed),
                                         sizing_mode="stretch_width", **styles))
            rows.append(columns[0] if len(columns) == 1 else pn.Row(*columns, sizing_mode="stretch_width"))
        return rows

    def template(self) -> pn.template.BaseTemplate:
        """The full page (served by ``panel serve`` / ``conserv serve``)."""
        # Bootstrap: every resource is served by Panel itself (no web fonts, no CDN), so a
        # workshop without internet loads as fast as one with it
        return pn.template.BootstrapTemplate(
            title=TITLE,
            sidebar=[self.lesson_menu, self.controls, self.share_panel],
            main=self.main(),
            sidebar_width=370,
            header_background="#0b3d62",
        )

    def __panel__(self):
        sidebar = pn.Column(self.lesson_menu, self.controls, self.share_panel, width=340)
        return pn.Row(sidebar, pn.Column(*self.main(), sizing_mode="stretch_width"), sizing_mode="stretch_width")


def create_app() -> pn.template.BaseTemplate:
    """One page for one session (``pn.serve(create_app)``)."""
    prepare_document()  # before any component exists: see app.serving
    return Dashboard().template()


if __name__.startswith("bokeh_app"):  # run as a script by `panel serve app/dashboard.py`
    # the installed module's classes, not this script's copies: Bokeh empties the script's
    # namespace after each run, and a copy's session-destroyed callback then fails
    # ("name 'pn' is not defined"), leaving the closed tab's run and memory behind
    from app.dashboard import create_app as _create_app
    from app.serving import restrict_component_route as _restrict

    _restrict()  # from the first session on; --plugins app.panel_plugin closes it from the start
    _create_app().servable(title=TITLE)
