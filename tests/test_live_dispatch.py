"""Where a live plot's change is made (no browser): on a served page, on the serving thread
with the document current and the page loaded, else through the document's next tick.
:func:`app.live._applies_now` decides from public pieces; here it is held against Panel's
own private decision (``_unblocked`` of ``panel.io.state``, what the app used before) on a
real in-process server, and the change reaches the figure either way."""

from __future__ import annotations

import threading
import time
import urllib.request

import holoviews as hv
import numpy as np
import panel as pn
import pytest
from bokeh.events import DocumentReady
from bokeh.io.doc import patch_curdoc
from panel.io.state import state

import app
from app import live
from app.rundata import Channel
from serving_helpers import free_port, wait_until_up

app.extension()  # HoloViews' Bokeh backend, as the dashboard loads it


def _element():
    return hv.Overlay([hv.Curve([], "step", "loss", label="a")]).opts(title="loss")


def _on_server(doc, fn):
    """``fn()``'s value, computed in a next-tick callback: on the serving thread, with
    ``doc`` locked and current."""
    out, done = [], threading.Event()

    def cb():
        try:
            out.append(fn())
        finally:
            done.set()

    doc.add_next_tick_callback(cb)
    assert done.wait(30), "the server never ran the callback"
    return out[0]


@pytest.mark.slow  # a server and a page: 1-3 s as the machine is loaded
def test_a_change_is_made_where_panel_would_make_it():
    if not hasattr(state, "_unblocked"):
        pytest.skip("this Panel has no _unblocked to compare with")
    channel, built = Channel(), []

    def page():
        plot = live.LivePlot(_element, channel, ["a"])
        built.append(plot)
        return plot

    port = free_port()
    server = pn.serve({"/": page}, port=port, threaded=True, show=False, start=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, 60)
        urllib.request.urlopen(url, timeout=30).read()  # a second session: the one used below
        plot = built[-1]
        doc, _, sources, _, _, thread = list(plot._live.values())[0]
        assert doc.session_context is not None and thread is not None and thread != threading.get_ident()

        def both():
            return live._applies_now(doc, thread), state._unblocked(doc)

        # from this (training-like) thread: never now; on the serving thread before the
        # page has connected: not yet
        assert both() == (False, False)
        assert _on_server(doc, both) == (False, False)
        channel.append({"a": {"step": [1, 2], "loss": [0.5, 0.25]}})  # deferred: arrives by a tick
        _on_server(doc, lambda: None)
        assert list(sources["a"].data["loss"]) == [0.5, 0.25]
        # the page connects (what a browser's first message does): now on the serving thread
        _on_server(doc, lambda: doc.callbacks.trigger_event(DocumentReady()))
        deadline = time.monotonic() + 10
        while _on_server(doc, both) != (True, True) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _on_server(doc, both) == (True, True)
        assert both() == (False, False)  # still never from another thread,
        with patch_curdoc(doc):  # even while the serving thread has it patched in (a global)
            assert pn.state.curdoc is doc and both() == (False, False)
        # a change made on the serving thread goes in at once, within the same callback
        _on_server(doc, lambda: channel.append({"a": {"step": [3], "loss": [0.125]}}))
        assert _on_server(doc, lambda: list(sources["a"].data["loss"])) == [0.5, 0.25, 0.125]
        assert np.isfinite(plot._live[next(iter(plot._live))][3].y_range.start)
    finally:
        server.stop()


def test_an_unserved_page_takes_changes_at_once():
    channel = Channel()
    plot = live.LivePlot(_element, channel, ["a"])
    plot.get_root()
    doc, _, sources, _, _, thread = list(plot._live.values())[0]
    assert doc.session_context is None and live._applies_now(doc, thread)
    channel.append({"a": {"step": [1], "loss": [0.5]}})
    assert list(sources["a"].data["loss"]) == [0.5]
