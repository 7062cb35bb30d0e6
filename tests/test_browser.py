"""The dashboard in a real browser: Debian's chromium driven by playwright.

The app is served in-process on 127.0.0.1 (``pn.serve(..., threaded=True)``) on a free
port. What reaches the page is read from BokehJS itself: the lengths of the
ColumnDataSources that hold the drift and loss curves.

Without /usr/bin/chromium (or the playwright package) these tests skip, unless
``CONSERV_REQUIRE_BROWSER=1`` (CI sets it): then they fail. ``CONSERV_CHROMIUM`` names
another browser binary.
"""

from __future__ import annotations

import time

import pytest
from browsing import LONGEST, SET_WIDGET, WIDGET_VALUE, open_page, require_browser

require_browser()

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

#: generous budgets: the suite may share two cores with other work
FIRST_POINTS_S = 60
STOP_S = 10


def _open(browser, url: str):
    return open_page(browser, url)


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
    # N is an editable slider (typed values up to 64): the address bar, which the app
    # writes from the settings in use, says what was applied
    page.wait_for_function("window.location.search.includes('nbody.n_bodies=3')", timeout=30_000)
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


#: links a workshop room may receive broken, and the words the notice must name
BAD_LINKS = [
    ("?seed=true", "seed “true”: takes a whole number from 0 to 2,147,483,647"),
    ("?methods=" + "x" * 100_000, "methods: 100,000 characters long"),
    ("?lr=%3Cimg%20src=x%20onerror=alert(1)%3E", "lr “<img src=x onerror=alert(1)>”: takes a number from 1e-06"),
    ("?invariants=garbage&steps=50", "invariants “garbage”: the Pendulum's invariants are energy"),
]

#: the status line's text as the reader sees it
STATUS_TEXT = """() => {
  const find = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.classList && el.classList.contains("cl-status")) return el.innerText;
      if (el.shadowRoot) { const t = find(el.shadowRoot); if (t != null) return t; }
    }
    return null;
  };
  return find(document);
}"""


def _status_contains(page, text: str, timeout_s: float = 30.0) -> str:
    page.wait_for_function(f"(({STATUS_TEXT})() || '').includes({text!r})", timeout=timeout_s * 1000, polling=100)
    return page.evaluate(STATUS_TEXT)


def test_bad_links_open_a_working_page_that_names_the_bad_part(server, browser):
    for query, named in BAD_LINKS:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors, dialogs = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(server + query, wait_until="load", timeout=60_000)
        page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
        text = _status_contains(page, named)
        assert text.startswith("Link settings refused"), text
        assert "&lt;" not in text and "&amp;" not in text, text  # escaped once: read as typed
        if "steps=50" in query:  # the rest of the link applies
            page.wait_for_function(f"({WIDGET_VALUE})('Training steps') === 50", timeout=30_000)
        assert not dialogs, dialogs  # no script ran from the link
        assert not errors, (query[:40], errors)
        if query == "?seed=true":
            # the address bar holds the settings in use, not the refused value
            page.wait_for_function("window.location.search.includes('seed=0')", timeout=30_000)
            # a value typed out of range: refused with its range, the box shows the value in use
            # (1e9 reaches the server as the integer 1000000000)
            typed_values = [("Training steps", 0, 600, "steps “0”: takes a whole number from 1"),
                            ("Learning rate", 1e9, 0.005, "”: takes a number from 1e-06 to 1,000; still 0.005"),
                            ("Seed", -1, 0, "seed “-1”: takes a whole number from 0")]
            for title, typed, shown, words in typed_values:
                assert page.evaluate(SET_WIDGET, [title, typed])
                _status_contains(page, words)
                page.wait_for_function(f"({WIDGET_VALUE})({title!r}) === {shown}", timeout=30_000)
        page.close()


def test_pause_step_and_resume_a_run(server, browser):
    import re

    # 6,000 steps (several seconds, so Pause lands mid-run): the drift curves refresh every
    # 1,000 (six evaluations per run)
    page, errors = _open(browser, server + "?methods=baseline,hnn&steps=6000&horizon=2")
    assert page.get_by_role("button", name="Pause", exact=True).is_disabled()
    _click(page, "Train")
    _click(page, "Pause")
    text = _status_contains(page, "Paused at step", timeout_s=FIRST_POINTS_S)
    at = int(re.search(r"Paused at step ([\d,]+) of 6,000", text).group(1).replace(",", ""))
    assert "Step runs one more evaluation interval, Resume runs on, Stop ends it" in text
    assert page.get_by_role("button", name="Stop", exact=True).is_enabled()
    _wait_points(page, "drift")  # the curves of the paused models are drawn
    loss = _settled(page, "loss")
    time.sleep(1.0)
    assert page.evaluate(LONGEST, "loss") == loss, "the loss grew while paused"
    _click(page, "Step")
    _status_contains(page, f"Paused at step {at + 1000:,} of 6,000")
    assert page.evaluate(LONGEST, "loss") > loss
    _click(page, "Resume")
    page.get_by_text("Done").first.wait_for(timeout=90_000)
    assert page.get_by_role("button", name="Pause", exact=True).is_disabled()
    assert page.get_by_role("button", name="Step", exact=True).is_disabled()
    assert not errors, errors
    page.close()


#: the dots on the page: rows held by every ColumnDataSource with a test_mse column
DOTS = """() => {
  let n = 0;
  for (const doc of (window.Bokeh ? window.Bokeh.documents : []))
    for (const m of doc.all_models) {
      const d = m.data;
      if (d && d["test_mse"] !== undefined && d["seed"] !== undefined) n += d["test_mse"].length;
    }
  return n;
}"""


def test_the_sweep_card_runs_a_sweep_and_draws_the_front(server, browser, tmp_path):
    # two methods × a two-rung ladder × one seed: three runs (only the penalty reads λ)
    page, errors = _open(browser, server + "?methods=baseline,penalty&steps=40&horizon=2")
    assert page.evaluate(DOTS) == 0
    page.get_by_text("Sweep: many trainings").first.click()  # the card opens, built on first open
    page.get_by_role("button", name="Run sweep", exact=True).wait_for(timeout=30_000)
    assert page.evaluate(SET_WIDGET, ["λ ladder", "1, 10"])
    assert page.evaluate(SET_WIDGET, ["Seeds", 1])
    time.sleep(0.5)  # let both edits reach the server before the click
    _click(page, "Run sweep")
    page.get_by_text("Sweep finished: 3 runs (0 failed)").first.wait_for(timeout=120_000)
    # one dot per run in each of the two panels (in and out of distribution), seed and λ
    # in each dot's data (the hover); an earlier redraw's sources may linger in the doc
    page.wait_for_function(f"({DOTS})() >= 6", timeout=30_000, polling=200)
    assert page.get_by_role("button", name="Run sweep", exact=True).is_enabled()
    # a bad ladder is refused on the card, with the range, before anything runs
    assert page.evaluate(SET_WIDGET, ["λ ladder", "1, -3"])
    time.sleep(0.5)
    _click(page, "Run sweep")
    page.get_by_text("λ ladder must be numbers from 0").first.wait_for(timeout=30_000)
    assert page.evaluate(DOTS) >= 6, "a refused sweep must keep the rows on the page"
    page.screenshot(path=str(tmp_path / "sweep.png"), full_page=True)
    assert not errors, errors
    page.close()


#: every Bokeh figure on the page: its rendered width, its title, and whether the title's
#: text (measured in the title's own font) fits between the frame's left edge, where a
#: left-aligned title starts, and the canvas's right edge, where it is cut off
FIGURES = """() => {
  const ctx = document.createElement("canvas").getContext("2d");
  const out = [], seen = new Set();
  const walk = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    if (v.model && v.model.type === "Figure" && v.frame !== undefined && v.el.isConnected) {
      const t = v.model.title, text = t && t.text ? t.text : "";
      ctx.font = t ? `${t.text_font_style} ${t.text_font_size} ${t.text_font}` : "12pt helvetica";
      const width = v.el.getBoundingClientRect().width;
      out.push({title: text, width, text_width: ctx.measureText(text).width,
                room: (v.canvas_view ? v.canvas_view.bbox.width : width) - v.frame.bbox.left});
    }
    for (const c of (v.child_views || [])) walk(c);
  };
  for (const v of Object.values(window.Bokeh ? window.Bokeh.index : {})) walk(v);
  const main = document.querySelector("#main");
  return {main: main ? main.getBoundingClientRect().width : document.body.clientWidth, figures: out};
}"""

#: formulas (KaTeX) wider than the pane that holds them: (start of the formula, its px, the pane's px)
OVERFULL_FORMULAS = """() => {
  const out = [];
  const find = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.classList && el.classList.contains("katex") && el.parentElement) {
        let box = el.parentElement;
        while (box.parentElement && box.tagName !== "DIV") box = box.parentElement;
        const w = el.getBoundingClientRect().width, room = box.getBoundingClientRect().width;
        if (w > room + 1) out.push([el.textContent.slice(0, 30), Math.round(w), Math.round(room)]);
      }
      if (el.shadowRoot) find(el.shadowRoot);
    }
  };
  find(document);
  return out;
}"""

#: per system, a short run and the figures it must show once done (drift, system view, loss)
LAYOUTS = [("pendulum", "methods=baseline,hnn,auglag", 5), ("nbody", "methods=baseline,hnn", 6),
           ("flow", "methods=baseline,divfree", 6)]


@pytest.mark.parametrize("system,methods,figures", LAYOUTS, ids=[s for s, _, _ in LAYOUTS])
def test_plots_read_on_a_projector(server, browser, tmp_path, system, methods, figures):
    """No plot narrower than a third of the main column (the flow's field and dye were
    200 px in a half-empty column) and no title cut off (the n-body orbit title was)."""
    page, errors = _open(browser, server + f"?system={system}&{methods}&steps=60&horizon=2")
    _click(page, "Train")
    page.get_by_text("Done").first.wait_for(timeout=120_000)
    page.wait_for_function(f"({FIGURES})().figures.filter(f => f.width > 0).length >= {figures}",
                           timeout=60_000, polling=200)
    time.sleep(1.0)  # the last layout pass after the system view is built
    seen = page.evaluate(FIGURES)
    page.screenshot(path=str(tmp_path / f"{system}.png"), full_page=True)
    narrow = [(f["title"], round(f["width"])) for f in seen["figures"] if f["width"] < seen["main"] / 3]
    assert not narrow, f"plots narrower than a third of the {seen['main']:.0f} px main column: {narrow}"
    clipped = [(f["title"], round(f["text_width"]), round(f["room"])) for f in seen["figures"]
               if f["text_width"] > f["room"]]
    assert not clipped, f"titles wider than the room their plot gives them (text px, room px): {clipped}"
    # every method's card too (the enstrophy pair and the port-Hamiltonian formula ran out)
    page.goto(server + f"?system={system}&methods=baseline,hnn,lnn,phnn,shnn,divfree,penalty,auglag",
              wait_until="load", timeout=60_000)
    page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
    page.wait_for_function("() => document.fonts.status === 'loaded'", timeout=30_000)
    time.sleep(1.0)
    overfull = page.evaluate(OVERFULL_FORMULAS)
    assert not overfull, f"formulas wider than their card (text, px, room px): {overfull}"
    assert not errors, errors
    page.close()
