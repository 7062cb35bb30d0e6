"""The out-of-distribution slider in a real browser (chromium via playwright; skips or
fails exactly as tests/test_browser.py does; the server and browser are the session's, from tests/conftest.py):
after a short run, moving the slider redraws the OOD curves of the same trained models."""

from __future__ import annotations

import time

import pytest
from browsing import DRIFT_SUM, SET_WIDGET
from test_browser import _click, _open, _status_contains

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

#: the text of the slider's note (in a shadow root)
NOTE = """() => {
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.classList && el.classList.contains("cl-ood-note"))
        return (el.shadowRoot ? el.shadowRoot.textContent : "") || el.textContent || "";
      if (el.shadowRoot) { const t = walk(el.shadowRoot); if (t) return t; }
    }
    return null;
  };
  return walk(document) || "";
}"""

SLIDER = "Move the test out"


def test_the_slider_in_a_browser(server, browser):
    page, errors = _open(browser, server + "?steps=150&width=24&horizon=6")
    _click(page, "Train")
    _status_contains(page, "Done (", timeout_s=150)
    time.sleep(1.0)  # the last redraws follow the verdict
    sums = []
    for factor in (9.0, 2.0):  # the first move also switches the plots to the OOD set
        t0 = time.monotonic()
        assert page.evaluate(SET_WIDGET, [SLIDER, factor])  # what dragging the handle sends
        page.wait_for_function(f"(({NOTE})()).includes('Same trained models') && (({NOTE})()).includes('×{factor:g}')",
                               timeout=60_000, polling=50)
        if sums:
            page.wait_for_function(f"({DRIFT_SUM})() !== {sums[-1]}", timeout=30_000, polling=50)
        redraw = time.monotonic() - t0
        time.sleep(1.0)  # settled
        sums.append(page.evaluate(DRIFT_SUM))
    assert sums[0] != sums[1]  # the OOD curves at ×9 and at ×2 differ: the models were evaluated again
    assert "Done (" in _status_contains(page, "Done (")  # no run started: the verdict stays
    assert not errors, errors
    print(f"slider move → OOD curves redrawn in {redraw:.2f} s")
    page.close()
