"""Figures that take new data in place: one Bokeh figure per page, fed by a Channel.

A HoloViews ``DynamicMap`` on a ``Pipe`` rebuilds its whole element tree and re-applies
every option on each send, and then replaces each curve's data whole: on a served
dashboard that was most of the server's main thread. A :class:`LivePlot` renders its
HoloViews element once per page (so it looks exactly as before: titles, log axes,
colours, dashes), keeps that figure's ``ColumnDataSource`` per series, and from then on
only changes those: ``ColumnDataSource.stream`` for new points (only they travel to the
browser), a new ``data`` for a series that changed. The axes follow the data as
HoloViews' framewise ranges did: after each change the server sets both ranges from the
data with HoloViews' padding (a few numbers per update); an empty plot keeps the axes
HoloViews drew it with.
"""

from __future__ import annotations

import asyncio
import math
import threading
from functools import partial
from typing import Callable

import holoviews as hv
import numpy as np
import panel as pn
from bokeh.document import Document
from bokeh.io import doc as bokeh_doc
from bokeh.models import ColumnDataSource, GlyphRenderer, LogScale

from app.rundata import Channel


def _render(element):
    """``hv.render(element)`` into the current Bokeh document, or into a fresh one when the
    current one is a destroyed session's: Bokeh's ``patch_curdoc`` has no ``finally``, so a
    session callback that raised leaves its document patched in after the session is gone,
    and HoloViews' render then fails with "Patched curdoc has been previously destroyed"
    (seen when a test's session callback raised before another test built a page)."""
    try:
        # ``Document.destroy`` deletes ``_theme`` (and its roots): a destroyed document can
        # also come back as current without the error (seen in the full suite)
        usable = hasattr(bokeh_doc.curdoc(), "_theme")
    except RuntimeError:
        usable = False
    if usable:
        return hv.render(element, backend="bokeh")
    fresh = Document()  # held here: patch_curdoc keeps only a weak reference
    with bokeh_doc.patch_curdoc(fresh):
        return hv.render(element, backend="bokeh")


class LivePlot(pn.pane.Bokeh):
    """A figure drawn once from ``element()`` (an overlay with one layer per ``keys``
    entry, in order), whose layers then take ``channel``'s changes in place.

    ``padding``: (x, y) fraction of the data's span added at each end of the axes
    (HoloViews pads a curve's y range by 0.1, in log space on a log axis, and not its x
    range)."""

    def __init__(self, element: Callable[[], hv.core.Dimensioned], channel: Channel, keys: list[str],
                 padding: tuple[float, float] = (0.0, 0.1), **params):
        params.setdefault("sizing_mode", "stretch_width")
        super().__init__(object=None, **params)
        self._element = element
        self._channel = channel
        self._keys = list(keys)
        self._padding = padding
        #: per page (root ref): (doc, comm, {series: ColumnDataSource}, figure, empty ranges,
        #: the thread that serves the page: see :func:`_applies_now`)
        self._live: dict[str, tuple] = {}
        channel.subscribe(self._changed)

    # -- rendering: once per page ------------------------------------------------------------
    def _figure(self):
        fig = _render(self._element())
        glyphs = [r for r in fig.renderers if isinstance(r, GlyphRenderer)]
        if len(glyphs) != len(self._keys):
            raise RuntimeError(f"expected {len(self._keys)} layers, the figure has {len(glyphs)}")
        sources = {k: r.data_source for k, r in zip(self._keys, glyphs)}
        for k, cds in sources.items():
            cols = self._channel.data.get(k)
            if cols is not None:
                cds.data = _columns(cds, cols)
        empty = (fig.x_range.start, fig.x_range.end, fig.y_range.start, fig.y_range.end)
        self._set_ranges(fig, self._bounds(fig, empty))
        return fig, sources, empty

    def _bounds(self, fig, empty: tuple) -> tuple:
        """x0, x1, y0, y1 of every point the channel holds, padded as HoloViews pads (the
        axes HoloViews drew while there is no data)."""
        xs, ys = [], []
        for k in self._keys:
            cols = self._channel.data.get(k)
            if cols:
                x, y = list(cols.values())[:2]
                xs.append(np.asarray(x, float))
                ys.append(np.asarray(y, float))
        if not xs:
            return empty
        x, y = np.concatenate(xs), np.concatenate(ys)
        ok = np.isfinite(x) & np.isfinite(y)
        logx, logy = isinstance(fig.x_scale, LogScale), isinstance(fig.y_scale, LogScale)
        if logx:
            ok &= x > 0
        if logy:
            ok &= y > 0
        if not ok.any():
            return empty
        return (*_pad(x[ok].min(), x[ok].max(), self._padding[0], logx),
                *_pad(y[ok].min(), y[ok].max(), self._padding[1], logy))

    @staticmethod
    def _set_ranges(fig, bounds: tuple) -> None:
        x0, x1, y0, y1 = (float(b) if b is not None else math.nan for b in bounds)
        for rng, lo, hi in ((fig.x_range, x0, x1), (fig.y_range, y0, y1)):
            if not (_same(rng.start, lo) and _same(rng.end, hi)):
                rng.update(start=lo, end=hi, reset_start=lo, reset_end=hi)

    def _get_model(self, doc, root=None, parent=None, comm=None):
        if root is None:
            return self.get_root(doc, comm)
        fig, sources, empty = self._figure()
        ref = root.ref["id"]
        self._models[ref] = (fig, parent)
        self._live[ref] = (doc, comm, sources, fig, empty, _serving_thread())
        self._design.apply_bokeh_theme_to_model(fig, self.theme)
        return fig

    def _update_pane(self, *events) -> None:
        """The figure is never replaced (``object`` stays ``None``)."""

    def _cleanup(self, root=None) -> None:
        if root is not None:
            self._live.pop(root.ref["id"], None)
        super()._cleanup(root)

    def detach(self) -> None:
        """Stop following the channel (the view that built this plot was replaced)."""
        self._channel.unsubscribe(self._changed)

    # -- updates: only what changed ------------------------------------------------------------
    def _changed(self, changes: dict, append: bool) -> None:
        bounds = None  # the same for every page: computed once
        for doc, comm, sources, fig, empty, thread in list(self._live.values()):
            if bounds is None:
                bounds = self._bounds(fig, empty)
            if not _applies_now(doc, thread):  # another thread, or the page not loaded yet
                doc.add_next_tick_callback(partial(self._apply, sources, fig, bounds, changes, append))
                continue
            self._apply(sources, fig, bounds, changes, append)
            if comm is not None:  # a notebook: send the changes now
                from panel.io.notebook import push

                push(doc, comm)

    def _apply(self, sources: dict, fig, bounds: tuple, changes: dict, append: bool) -> None:
        for key, cols in changes.items():
            cds = sources.get(key)
            if cds is None:
                continue
            if append and cols is not None:
                cds.stream({c: np.asarray(v) for c, v in cols.items()})
            else:
                cds.data = _columns(cds, cols)
        self._set_ranges(fig, bounds)


def _serving_thread() -> int | None:
    """The thread building a page's model, if it runs an event loop: on a server that is
    the thread of the loop serving the document (Bokeh builds and changes a session's
    document only there). ``None`` elsewhere (a notebook, a test, a pool thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return threading.get_ident()


def _applies_now(doc: Document, thread: int | None) -> bool:
    """Whether a change to ``doc`` may be made here and now, else it goes through
    ``doc.add_next_tick_callback`` (which runs it on the serving thread with the document
    locked).

    The same decision as Panel's private ``_unblocked(doc)`` of its ``state`` (panel 1.9.4), from
    public pieces and our own bookkeeping:

    1. an unserved document (a notebook's, a test's; no ``session_context``) has no server
       thread to defer to: now (and a notebook's comm then pushes the change);
    2. ``pn.state.curdoc is doc``: the document being processed is this one. On the
       serving thread Bokeh runs a session's callbacks with its document locked and patched
       in as the current document, and Panel sets it for its own callbacks;
    3. on the thread that serves it (recorded when the page's model was built, see
       :func:`_serving_thread`; Panel records the thread that built the document).
       Needed because Bokeh's patched current document is global, not per thread: a
       training thread can see it while the serving thread holds the lock;
    4. the session is not yet attached (the page being built: its state goes out whole),
       or ``pn.state.loaded``: the page has connected and loaded. Before that, an event
       sent on the document would find no open websocket; Panel sets loaded just after
       connected, so a change in between waits a tick, which is always safe.
    """
    ctx = doc.session_context
    if ctx is None:
        return True
    return (pn.state.curdoc is doc and thread is not None and threading.get_ident() == thread
            and (ctx.session is None or pn.state.loaded))


def _same(a, b) -> bool:
    return a == b or (a is not None and math.isnan(a) and math.isnan(b))


def _pad(lo: float, hi: float, pad: float, log: bool) -> tuple[float, float]:
    """HoloViews' ``range_pad``: ``pad`` of the span at each end (in log space on a log
    axis); a single value gets a span around it."""
    if log:
        lo, hi = np.log10(lo), np.log10(hi)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    lo, hi = lo - pad * span, hi + pad * span
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


def _columns(cds: ColumnDataSource, cols: dict | None) -> dict:
    """``cols`` for this source (every column it has; none of ours: empty)."""
    if cols is None:
        return {c: np.zeros(0) for c in cds.data}
    return {c: np.asarray(v) for c, v in cols.items()}
