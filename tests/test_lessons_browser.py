"""Lesson links in a real browser (chromium via playwright; skips or fails exactly as
tests/test_browser.py does; the server and browser are the session's, from tests/conftest.py)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from browsing import WIDGET_VALUE
from test_browser import _open, _status_contains
from test_lessons import LESSON

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

#: whether an element whose own text (not its children's) starts with ``text`` is laid out on the page (null: none)
VISIBLE = """(text) => {
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      const own = Array.from(el.childNodes).filter((n) => n.nodeType === 3).map((n) => n.textContent).join("");
      if (own.trim().startsWith(text)) found.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  if (!found.length) return null;
  return found.some((el) => el.getClientRects().length > 0);
}"""


def test_a_lesson_hides_its_controls_shows_its_list_and_show_all_brings_them_back(server, browser):
    page, errors = _open(browser, server + "?" + LESSON)
    page.wait_for_function(f"({VISIBLE})('Friction and the HNN') === true", timeout=30_000)
    assert page.evaluate(VISIBLE, "Set damping to 0.")
    assert page.evaluate(VISIBLE, "Training steps")  # not hidden
    for label in ("Learning rate", "Seed", "Methods to compare", "Damping b (1/s)"):
        assert page.evaluate(VISIBLE, label) is False, label
    page.locator(".cl-show-all").first.click()
    page.wait_for_function(f"({VISIBLE})('Learning rate') === true", timeout=30_000)
    assert page.evaluate(VISIBLE, "Methods to compare") and page.evaluate(VISIBLE, "Damping b (1/s)")
    assert not errors, errors
    page.close()


def test_a_lesson_with_garbage_renders_as_text_and_runs_no_script(server, browser):
    title = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    query = urlencode([("lesson", title), ("try", "<img src=y onerror=alert(3)>"), ("hide", "nope," + "z" * 100_000),
                       ("steps", "50")])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors, dialogs = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))
    page.goto(server + "?" + query, wait_until="load", timeout=60_000)
    page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
    text = _status_contains(page, "hide: 100,005 characters long")
    assert text.startswith("Link settings refused"), text
    page.wait_for_function(f"({VISIBLE})({title!r}) === true", timeout=30_000)  # shown as typed
    assert page.evaluate(VISIBLE, "<img src=y onerror=alert(3)>")
    page.wait_for_function(f"({WIDGET_VALUE})('Training steps') === 50", timeout=30_000)  # the rest applies
    page.wait_for_timeout(500)
    assert not dialogs, dialogs
    assert not errors, errors
    page.close()
