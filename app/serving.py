"""How the dashboard is served to a room: everything from the server itself, a visible
notice when the server goes away, and no route that imports modules named in a URL.

    pn.serve({"/": create_app}, ..., **serve_kwargs())   # python -m app / conserv serve
    panel serve app/dashboard.py --plugins app.panel_plugin   # the same under panel serve

:func:`prepare_document` runs at the start of every session (``create_app`` calls it),
so all three serving modes get the per-session part.
"""

from __future__ import annotations

import sys
import threading

import panel as pn
from bokeh.models import CustomJS
from panel.io.server import ComponentResourceHandler
from tornado.web import HTTPError

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

#: the only top-level packages whose components' files ``/components/...`` may serve
COMPONENT_PACKAGES = ("panel", "app")

#: the route Panel adds for component files (``panel.io.resources.COMPONENT_PATH``)
COMPONENT_ROUTE = r"/components/(.*)"


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
    area = pn.state.notifications
    if area is not None:
        area.position = "top-center"  # above the status line, not over a plot
    doc.js_on_event("connection_lost", CustomJS(code=OFFLINE_JS))


class RestrictedComponentHandler(ComponentResourceHandler):
    """Panel's ``/components/<module>/<class>/<attribute>/<path>`` route, minus the import:
    it serves files of components whose module is already loaded and belongs to
    :data:`COMPONENT_PACKAGES`; anything else is a 404, and no URL imports a module."""

    def parse_url_path(self, path: str) -> str:
        check_component_path(path)
        return super().parse_url_path(path)


def check_component_path(path: str) -> None:
    """Raise a 404 unless ``path`` names an already imported module of an allowed package."""
    mod = path.split("/", 1)[0]
    if mod.split(".", 1)[0] not in COMPONENT_PACKAGES or mod not in sys.modules:
        raise HTTPError(404, "Module not found")


def restrict_component_route() -> None:
    """Make Panel's own handler check the same, for ``panel serve``: it registers its
    route before any plugin's, so there our pattern cannot come first. Idempotent.
    ``app.panel_plugin`` calls it before the server starts; ``app/dashboard.py`` run by
    ``panel serve`` calls it at the first session."""
    if getattr(ComponentResourceHandler, "_conserv_restricted", False):
        return
    original = ComponentResourceHandler.parse_url_path

    def parse_url_path(self, path: str) -> str:
        check_component_path(path)
        return original(self, path)

    ComponentResourceHandler.parse_url_path = parse_url_path
    ComponentResourceHandler._conserv_restricted = True


#: the most bytes of HTTP headers the server reads from one request (Tornado's default is
#: 64 KiB). A link is one header line, and Bokeh copies the link's query into the
#: session token that the page's websocket sends back as a header: with the default, a
#: link with a 100 kB value got no page at all (the connection was dropped unanswered).
#: 8 MiB holds the longest link a browser sends (Chromium: 2 MB) twice over; the page
#: then opens and names the over-long value as refused.
MAX_HEADER_BYTES = 8 * 1024 * 1024


def serve_kwargs() -> dict:
    """The extra keyword arguments for ``pn.serve``: our component route, registered ahead
    of Panel's (Tornado takes the first pattern that matches), and room for long links
    (:data:`MAX_HEADER_BYTES`)."""
    return {"extra_patterns": [(COMPONENT_ROUTE, RestrictedComponentHandler, {})],
            "http_server_kwargs": {"max_header_size": MAX_HEADER_BYTES}}


def allow_long_links() -> None:
    """:data:`MAX_HEADER_BYTES` for servers started without :func:`serve_kwargs`
    (``panel serve ... --plugins app.panel_plugin``): Tornado's connection parameters
    default to it from now on, in this process. Idempotent."""
    from tornado.http1connection import HTTP1ConnectionParameters

    if getattr(HTTP1ConnectionParameters, "_conserv_long_links", False):
        return
    original = HTTP1ConnectionParameters.__init__

    def __init__(self, *args, max_header_size=None, **kwargs):
        original(self, *args, max_header_size=max_header_size or MAX_HEADER_BYTES, **kwargs)

    HTTP1ConnectionParameters.__init__ = __init__
    HTTP1ConnectionParameters._conserv_long_links = True


def release_memory() -> None:
    """Collect closed sessions' garbage and hand freed heap back to the OS, so a workshop
    server's memory returns to its baseline between classes. The collection holds the
    interpreter (~0.3 s with a few sessions' worth of heap); the trim runs in a thread
    (ctypes lets go of the GIL for it)."""
    import gc

    gc.collect()
    threading.Thread(target=_trim_heap, name="conserv-malloc-trim", daemon=True).start()


def _trim_heap() -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps its pages
        pass


#: seconds a closed session's memory release waits for the others closing in the same
#: burst: one collection for a room that closes at once. One per close cost the event loop
#: ~0.3 s each, and ten closing together stalled every other session for 3 s (issue 31)
RELEASE_BATCH_S = 2.0
_release_lock = threading.Lock()
_release_pending = False


def release_memory_soon() -> None:
    """:func:`release_memory` once, :data:`RELEASE_BATCH_S` after the first call of a burst,
    on the calling thread's event loop (a served session's close); at once with no loop."""
    global _release_pending
    import asyncio

    try:
        loop = asyncio.get_running_loop()  # a served session's close runs on Bokeh's loop
    except RuntimeError:
        release_memory()
        return
    with _release_lock:
        if _release_pending:
            return
        _release_pending = True
    loop.call_later(RELEASE_BATCH_S, _release_batch)


def _release_batch() -> None:
    global _release_pending
    with _release_lock:
        _release_pending = False
    release_memory()


__all__ = ["COMPONENT_PACKAGES", "MAX_HEADER_BYTES", "allow_long_links", "release_memory", "LOST_CONNECTION", "RELEASE_BATCH_S", "release_memory_soon",
           "RestrictedComponentHandler", "prepare_document", "restrict_component_route", "serve_kwargs"]
