"""Serving a room, in a real browser: every request a page makes stays on this machine in
every serving mode, and a page whose server died says so and offers a Reload.

Skips without /usr/bin/chromium or playwright unless ``CONSERV_REQUIRE_BROWSER=1``
(tests/browsing.py; the browser is the session's, from tests/conftest.py).
"""

from __future__ import annotations

import re
import time

import pytest

from browsing import LONGEST, WIDGET_VALUE, require_browser, served_in_process
from serving_helpers import free_port, leaves_this_machine, panel_serve, python_m_app

require_browser()

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

#: page loads against two processes: Bokeh's websocket and the page's HTML land on
#: either, and a websocket on the other process was the case that reached for the CDN
LOADS_TWO_PROCS = 6
NOTICE = "Lost the connection to the server"


@pytest.fixture(scope="module")
def in_process_server():
    """One process, in this one, configured as ``python -m app`` configures it."""
    with served_in_process() as url:
        yield url


def _load_recording(browser, url: str) -> list[str]:
    """Every URL a fresh page asks for while it loads and builds its plots."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    urls: list[str] = []
    context.on("request", lambda r: urls.append(r.url))
    page = context.new_page()
    page.on("websocket", lambda ws: urls.append(ws.url))
    try:
        page.goto(url, wait_until="load", timeout=60_000)
        page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
        # the plots are built once the page is up (empty drift curves): their styles too
        page.wait_for_function(f"({LONGEST})('drift') === 0", timeout=60_000)
        page.wait_for_load_state("networkidle", timeout=30_000)
    finally:
        context.close()
    assert any("/static/" in u for u in urls), urls  # the recorder saw the page's own files
    return urls


def _outside(urls: list[str]) -> list[str]:
    return sorted({u for u in urls if leaves_this_machine(u)})


def test_one_process_page_needs_nothing_from_outside(in_process_server, browser):
    urls = _load_recording(browser, in_process_server)
    assert not _outside(urls), _outside(urls)


def test_two_processes_every_page_needs_nothing_from_outside(browser, tmp_path):
    with python_m_app(tmp_path / "server.log", "--num-procs", "2") as srv:
        outside = {i: _outside(_load_recording(browser, srv.url)) for i in range(LOADS_TWO_PROCS)}
    bad = {i: o for i, o in outside.items() if o}
    assert not bad, f"{len(bad)} of {LOADS_TWO_PROCS} loads went outside: {bad}"


def test_panel_serve_page_needs_nothing_from_outside(browser, tmp_path):
    # closed pages' sessions are destroyed within a second or two: their callbacks run too
    with panel_serve(tmp_path / "server.log", "--num-procs", "2", "--unused-session-lifetime", "500",
                     "--check-unused-sessions", "250", "--plugins", "app.panel_plugin") as srv:
        outside = {i: _outside(_load_recording(browser, srv.url)) for i in range(4)}
        time.sleep(3)  # the last closed page's session is destroyed by then
        log = srv.output()
    bad = {i: o for i, o in outside.items() if o}
    assert not bad, f"{len(bad)} of 4 loads went outside: {bad}"
    assert "on_session_destroyed callback" not in log, log  # Dashboard._destroyed failed


def test_a_killed_server_shows_a_notice_and_reload_restores_the_settings(browser, tmp_path):
    port = free_port()
    srv = python_m_app(tmp_path / "server.log", port=port).start()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(srv.url + "?seed=7&steps=20000", wait_until="load", timeout=60_000)
        page.get_by_role("button", name="Train", exact=True).click(timeout=60_000)
        page.get_by_text(re.compile(r"^Training .+ on ")).first.wait_for(timeout=60_000)  # the status line: a run is on
        assert page.get_by_text(NOTICE).count() == 0  # no notice while the server is up
        srv.kill()
        killed = time.monotonic()
        page.get_by_text(NOTICE).wait_for(state="visible", timeout=10_000)
        assert time.monotonic() - killed < 10
        page.wait_for_function("document.documentElement.dataset.connection === 'lost'", timeout=5_000)
        page.wait_for_timeout(1500)  # the toast's entrance animation, for the screenshot
        page.screenshot(path=str(tmp_path / "lost_connection.png"))
        reload = page.get_by_role("link", name="Reload")
        assert reload.evaluate("a => a.href") == page.evaluate("window.location.href")
        assert "seed=7" in page.evaluate("window.location.href")
        # the server comes back (same port); Reload opens a fresh session with the settings
        srv = python_m_app(tmp_path / "server2.log", port=port).start()
        reload.click()
        page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
        page.wait_for_function(f"({WIDGET_VALUE})('Seed') === 7", timeout=30_000)
        assert page.evaluate(WIDGET_VALUE, "Training steps") == 20000
        assert page.get_by_text(NOTICE).count() == 0
    finally:
        page.close()
        srv.kill()
