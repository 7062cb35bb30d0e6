"""How the dashboard is served to a room: everything from the server itself, and a
visible notice when the server goes away.

:func:`prepare_document` runs at the start of every session (``create_app`` calls it),
so every serving mode (one process, ``--num-procs N``, ``panel serve``) gets it.
"""

from __future__ import annotations

import panel as pn
from bokeh.models import CustomJS

#: what a student sees when the server is gone (Panel's notification area renders it as
#: HTML). The link is the page's own address, and that address holds every setting.
LOST_CONNECTION = (
    "<b>Lost the connection to the server.</b> Your settings are in the address bar: "
    "Reload to reconnect. "
    '<a class="conserv-reload" href="" onclick="window.location.reload(); return false;" '
    'style="color: inherit; font-weight: 700; text-decoration: underline">Reload</a>'
)

#: when the connection drops, grey out and disable the page (its buttons no longer do
#: anything) so that the notice is the one live thing on it; the header stays
OFFLINE_JS = """
document.documentElement.dataset.connection = "lost"
const content = document.getElementById("content")  // the template's sidebar and main area
if (content != null) {
  content.style.opacity = "0.4"
  content.style.pointerEvents = "none"
  content.setAttribute("aria-disabled", "true")
}
"""


def prepare_document(doc=None) -> None:
    """Per session: pin the page's stylesheets to this server and turn on the lost
    connection notice. Call before building any component.

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
    # the lost connection notice: Panel's own (its notification area shows it on BokehJS's
    # connection_lost event). Set inside a served session, these settings are that
    # session's only.
    pn.config.notifications = True
    pn.config.disconnect_notification = LOST_CONNECTION
    pn.config.reconnect = False  # a reload, not a silent retry, is what restores a session
    pn.state.notifications.position = "top-center"  # above the status line, not over a plot
    doc.js_on_event("connection_lost", CustomJS(code=OFFLINE_JS))


__all__ = ["LOST_CONNECTION", "OFFLINE_JS", "prepare_document"]
