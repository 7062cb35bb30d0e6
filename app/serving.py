"""How the dashboard is served to a room: everything from the server itself.

:func:`prepare_document` runs at the start of every session (``create_app`` calls it),
so every serving mode (one process, ``--num-procs N``, ``panel serve``) gets it.
"""

from __future__ import annotations

import panel as pn


def prepare_document(doc=None) -> None:
    """Per session: pin the page's stylesheets to this server. Call before building any
    component.

    Why the pin: Panel points each component's stylesheets at the public CDN and
    rewrites them to the server's ``static/`` only for a document whose HTML page it
    rendered (``server_html_page_for_session`` sets ``dist_url``). With ``--num-procs N``
    the page's HTML comes from one process and its websocket often lands on another,
    which builds a fresh document for the same session id without rendering a page: all
    its stylesheets then came from ``cdn.holoviz.org``, and failed offline.
    """
    from bokeh.settings import settings
    from panel.io.resources import LOCAL_DIST

    doc = doc if doc is not None else pn.state.curdoc
    if doc is None or doc.session_context is None:  # a notebook: nothing is served
        return
    if settings.resources(default="server") == "server":  # what Bokeh's server renders with
        rel = pn.state.rel_path
        doc._template_variables.setdefault("dist_url", f"{rel}/{LOCAL_DIST}" if rel else LOCAL_DIST)


__all__ = ["prepare_document"]
