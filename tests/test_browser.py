"""The dashboard in a real browser: Debian's chromium driven by playwright.

The app is served in-process on 127.0.0.1 (``pn.serve(..., threaded=True)``) on a free
port. What reaches the page is read from BokehJS itself: the lengths of the
ColumnDataSources that hold the drift and loss curves.

Without /usr/bin/chromium (or the playwright package) these tests skip, unless
``CONSERV_REQUIRE_BROWSER=1`` (CI sets it): then they fail. ``CONSERV_CHROMIUM`` names
another browser binary.
"""

from __future__ import annotations

import os
import time
import urllib.request

import pytest
from conftest import _free_port

#: Debian's chromium; another path through CONSERV_CHROMIUM
CHROMIUM = os.environ.get("CONSERV_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUIRED = os.environ.get("CONSERV_REQUIRE_BROWSER") == "1"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


_reason = _missing()
if _reason:
    if REQUIRED:
        pytest.fail(f"CONSERV_REQUIRE_BROWSER=1 but {_reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

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

#: set the widget whose title starts with ``title`` as a user's edit would
SET_WIDGET = """([title, value]) => {
  for (const doc of (window.Bokeh ? window.Bokeh.documents : []))
    for (const m of doc.all_models)
      if (typeof m.title === "string" && m.title.startsWith(title) && m.value !== undefined) {
        m.value = value;
        return true;
      }
  return false;
}"""

#: generous budgets: the suite may share two cores with other work
FIRST_POINTS_S = 60
STOP_S = 10


@pytest.fixture(scope="module")
def server():
    import panel as pn

    from app.dashboard import create_app
    from conserv_core.training import warm_up

    warm_up()
    port = _free_port()
    # a closed tab's session is dropped a second after it disconnects (the default is 15 s)
    srv = pn.serve({"/": create_app}, port=port, address="127.0.0.1", threaded=True, show=False,
                   websocket_origin=[f"127.0.0.1:{port}"], title="Conservation Lab",
                   check_unused_sessions_milliseconds=500, unused_session_lifetime_milliseconds=1000)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:  # poll until it answers: a race gives ERR_CONNECTION_REFUSED
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            srv.stop()
            pytest.fail("the dashboard server did not answer within 60 s")
        time.sleep(0.2)
    yield url
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load", timeout=60_000)
    page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
    return page, errors


def _click(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click(timeout=30_000)


def _wait_points(page, column: str, more_than: int = 0, timeout_s: float = FIRST_POINTS_S) -> int:
    page.wait_for_function(f"({LONGEST})('{column}') > {more_than}", timeout=timeout_s * 1000, polling=100)
    return page.evaluate(LONGEST, column)


def _settled(page, column: str, timeout_s: float = 10.0) -> int:
    """The length of ``column`` once two reads half a second apart agree."""
    deadline = time.monotonic() + timeout_s
    last = page.evaluate(LONGEST, column)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = page.evaluate(LONGEST, column)
        if now == last:
            return now
        last = now
    raise AssertionError(f"{column} kept changing for {timeout_s} s")


def test_train_streams_drift_to_the_page_and_stop_ends_it(server, browser, tmp_path):
    # a run far too long to finish: Stop must end it
    page, errors = _open(browser, server + "?steps=20000&horizon=5")
    page.wait_for_function(f"({LONGEST})('drift') === 0", timeout=30_000)  # empty plots before Train
    t0 = time.monotonic()
    _click(page, "Train")
    n_drift = _wait_points(page, "drift")
    first_points = time.monotonic() - t0
    assert n_drift > 5
    n_loss = _wait_points(page, "loss", more_than=5)
    assert n_loss > 5
    page.get_by_text("steps/s").first.wait_for(timeout=30_000)  # the progress line
    t0 = time.monotonic()
    _click(page, "Stop")
    page.get_by_text("Stopped at step").first.wait_for(timeout=STOP_S * 1000)
    stopped = time.monotonic() - t0
    # the verdict comes first, the last redraw within a drain or two; then nothing grows
    loss_at_stop = _settled(page, "loss")
    time.sleep(1.5)
    assert page.evaluate(LONGEST, "loss") == loss_at_stop, "curves still growing after Stop"
    assert page.evaluate(LONGEST, "drift") >= n_drift, "Stop must keep the curves"
    assert page.get_by_role("button", name="Train", exact=True).is_visible()
    assert page.get_by_role("button", name="Stop", exact=True).is_disabled()
    page.screenshot(path=str(tmp_path / "dashboard-stopped.png"), full_page=True)
    assert (tmp_path / "dashboard-stopped.png").stat().st_size > 10_000
    assert not errors, errors
    print(f"first drift points {first_points:.2f} s after Train; stopped {stopped:.2f} s after Stop")
    page.close()


def test_url_parameters_open_that_configuration(server, browser):
    page, errors = _open(browser, server + "?system=nbody&methods=baseline,lnn&steps=123&seed=5&nbody.n_bodies=3")
    assert page.evaluate(WIDGET_VALUE, "System") == "nbody"
    assert page.evaluate(WIDGET_VALUE, "Training steps") == 123
    assert page.evaluate(WIDGET_VALUE, "Seed") == 5
    assert page.evaluate(WIDGET_VALUE, "Bodies N") == 3
    # the address bar follows every change, so copying it reproduces the run
    assert page.evaluate(SET_WIDGET, ["Seed", 9])  # what typing into the box does
    page.wait_for_function("window.location.search.includes('seed=9')", timeout=30_000)
    search = page.evaluate("window.location.search")
    assert "steps=123" in search and "system=nbody" in search and "lnn" in search
    assert not errors, errors
    page.close()


def test_two_pages_train_different_things_at_once(server, browser, tmp_path):
    a, errors_a = _open(browser, server + "?methods=baseline,hnn&steps=150&horizon=3")
    b, errors_b = _open(browser, server + "?system=spring&methods=baseline&steps=100&horizon=3")
    _click(a, "Train")
    _click(b, "Train")
    for page in (a, b):
        _wait_points(page, "drift")
    a.get_by_text("Done").first.wait_for(timeout=90_000)
    b.get_by_text("Done").first.wait_for(timeout=90_000)
    text_a = a.get_by_text("Done").first.inner_text()
    text_b = b.get_by_text("Done").first.inner_text()
    assert "HNN" in text_a and "HNN" not in text_b, (text_a, text_b)
    assert "t = 3" in text_a and "t = 3" in text_b
    assert a.evaluate(WIDGET_VALUE, "System") == "pendulum" and b.evaluate(WIDGET_VALUE, "System") == "spring"
    b.screenshot(path=str(tmp_path / "spring.png"), full_page=True)
    assert not errors_a and not errors_b, errors_a + errors_b
    a.close()
    b.close()


def test_a_closed_tab_stops_its_run(server, browser):
    from app import executor as app_executor

    ex = app_executor.executor()
    before = set(h.id for h in ex.active())
    page, errors = _open(browser, server + "?steps=100000&horizon=2&seed=77")
    _click(page, "Train")
    _wait_points(page, "loss")
    mine = [h for h in ex.active() if h.id not in before and h.spec.config["seed"] == 77]
    assert len(mine) == 1 and mine[0].phase == "running"
    page.close()  # the student closes the tab mid-run
    assert mine[0].finished.wait(30), "the run of a closed tab kept training"
    fins = [r for r in mine[0].queue if type(r).__name__ == "Finished"]
    assert fins and all(f.status == "stopped" for f in fins)
    assert not errors, errors
