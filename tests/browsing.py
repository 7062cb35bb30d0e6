"""The browser side of the tests, written once: Debian's chromium and its flags, whether the
browser tests run, the dashboard served in this process, and the JavaScript that reads
(and edits) a page's Bokeh documents.

``tests/conftest.py`` makes one ``server`` and one ``browser`` of these for the whole
session; ``benchmarks/bench_dashboard.py`` reads pages with the same probes.

Without /usr/bin/chromium (or the playwright package) a browser test module skips, unless
``CONSERV_REQUIRE_BROWSER=1`` (CI sets it): then it fails. ``CONSERV_CHROMIUM`` names
another browser binary. A module opts in with ``require_browser()`` at its top.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

#: Debian's chromium; another path through CONSERV_CHROMIUM
CHROMIUM = os.environ.get("CONSERV_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUIRED = os.environ.get("CONSERV_REQUIRE_BROWSER") == "1"
VIEWPORT = {"width": 1400, "height": 1000}


def missing() -> str | None:
    """Why no browser test can run here (None: they can)."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


def require_browser() -> None:
    """Skip the calling test module without a browser, or fail it when CI requires one."""
    import pytest

    reason = missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"CONSERV_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(f"browser tests skipped: {reason}", allow_module_level=True)


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless chromium (playwright's sync API; one per process at a time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def served_in_process(**serve_options) -> Iterator[str]:
    """The dashboard served from this process (``pn.serve(..., threaded=True)``) on a free
    port of 127.0.0.1, configured as ``python -m app`` configures it; yields its URL."""
    import panel as pn

    from app.dashboard import create_app
    from app.serving import serve_kwargs
    from conserv_core.training import warm_up
    from serving_helpers import free_port, wait_until_up

    warm_up()
    port = free_port()
    srv = pn.serve({"/": create_app}, port=port, address="127.0.0.1", threaded=True, show=False,
                   websocket_origin=[f"127.0.0.1:{port}"], title="Conservation Lab",
                   **{**serve_kwargs(), **serve_options})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, 60)
        yield url
    finally:
        srv.stop()


def open_page(browser, url: str, timeout_s: float = 60):
    """A new page at ``url``, once its Train button is up; and the list its page errors go to."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load", timeout=timeout_s * 1000)
    page.get_by_role("button", name="Train", exact=True).wait_for(timeout=timeout_s * 1000)
    return page, errors


# -- probes: JavaScript evaluated in a page ------------------------------------------------------

#: the longest curve held by any ColumnDataSource with this column, in every Bokeh doc
LONGEST = """(column) => {
  let n = -1;
  for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
    for (const m of doc.all_models) {
      const d = m.data;
      if (d && d[column] !== undefined) n = Math.max(n, d[column].length);
    }
  }
  return n;
}"""

#: the value of the widget whose title starts with this text
WIDGET_VALUE = """(title) => {
  for (const doc of (window.Bokeh ? window.Bokeh.documents : []))
    for (const m of doc.all_models)
      if (typeof m.title === "string" && m.title.startsWith(title) && m.value !== undefined) return m.value;
  return null;
}"""

#: set the widget whose title starts with ``title`` as a user's edit (or a slider's release) would
SET_WIDGET = """([title, value]) => {
  for (const doc of (window.Bokeh ? window.Bokeh.documents : []))
    for (const m of doc.all_models)
      if (typeof m.title === "string" && m.title.startsWith(title) && m.value !== undefined) {
        m.value = value;
        return true;
      }
  return false;
}"""

#: the sum of every finite value of every ``drift`` column on the page: changes when any curve does
DRIFT_SUM = """() => {
  let s = 0;
  for (const doc of (window.Bokeh ? window.Bokeh.documents : []))
    for (const m of doc.all_models) {
      const d = m.data;
      if (d && d.drift !== undefined) for (const v of d.drift) if (Number.isFinite(v)) s += v;
    }
  return s;
}"""
