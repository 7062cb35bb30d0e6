"""Figures that take new data in place: one Bokeh figure per page, fed by a Channel.

A HoloViews ``DynamicMap`` on a ``Pipe`` rebuilds its whole element tree and re-applies
every option on each send, and then replaces each curve's data whole: on a served
dashboard that was most of the server's main thread. A :class:`LivePlot` renders its
HoloViews element once per page (so it looks exactly as before: titles, log axes,
colours, dashes), keeps that figure's ``ColumnDataSource`` per series, and from then on
only changes those: ``ColumnDataSource.stream`` for new points (only they travel to the
browser), a new ``data`` for a series that changed. The axes follow the data in the
browser (``DataRange1d``), as HoloViews' framewise ranges did on the server.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import holoviews as hv
import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, DataRange1d, GlyphRenderer
from panel.io.state import state

from app.session import Channel


class LivePlot(pn.pane.Bokeh):
    """A figure drawn once from ``element()`` (an overlay with one layer per ``keys``
    entry, in order), whose layers then take ``channel``'s changes in place.

    ``x_padding``/``y_padding``: the browser-side range padding, a fraction of the span
    split over both ends (0.2 is HoloViews' default 0.1 at each end of a curve's y range;
    it pads no x range). Ranges are left to HoloViews where ``autorange`` is false
    (fixed axes such as the dye box)."""

    def __init__(self, element: Callable[[], hv.core.Dimensioned], channel: Channel, keys: list[str],
                 x_padding: float = 0.0, y_padding: float = 0.2, autorange: bool = True, **params):
        params.setdefault("sizing_mode", "stretch_width")
        super().__init__(object=None, **params)
        self._element = element
        self._channel = channel
        self._keys = list(keys)
        self._padding = (x_padding, y_padding)
        self._autorange = autorange
        #: per page (root ref): (doc, comm, {series: ColumnDataSource})
        self._live: dict[str, tuple] = {}
        channel.subscribe(self._changed)

    # -- rendering: once per page ------------------------------------------------------------
    def _figure(self):
        fig = hv.render(self._element(), backend="bokeh")
        glyphs = [r for r in fig.renderers if isinstance(r, GlyphRenderer)]
        if len(glyphs) != len(self._keys):
            raise RuntimeError(f"expected {len(self._keys)} layers, the figure has {len(glyphs)}")
        sources = {k: r.data_source for k, r in zip(self._keys, glyphs)}
        for k, cds in sources.items():
            cols = self._channel.data.get(k)
            if cols is not None:
                cds.data = _columns(cds, cols)
        if self._autorange:
            fig.x_range = DataRange1d(range_padding=self._padding[0])
            fig.y_range = DataRange1d(range_padding=self._padding[1])
        return fig, sources

    def _get_model(self, doc, root=None, parent=None, comm=None):
        if root is None:
            return self.get_root(doc, comm)
        fig, sources = self._figure()
        ref = root.ref["id"]
        self._models[ref] = (fig, parent)
        self._live[ref] = (doc, comm, sources)
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
        for doc, comm, sources in list(self._live.values()):
            if doc.session_context is not None and not state._unblocked(doc):
                doc.add_next_tick_callback(partial(_apply, sources, changes, append))  # another thread
                continue
            _apply(sources, changes, append)
            if comm is not None:  # a notebook: send the changes now
                from panel.io.notebook import push

                push(doc, comm)


def _columns(cds: ColumnDataSource, cols: dict | None) -> dict:
    """``cols`` for this source (every column it has; none of ours: empty)."""
    if cols is None:
        return {c: np.zeros(0) for c in cds.data}
    return {c: np.asarray(v) for c, v in cols.items()}


def _apply(sources: dict, changes: dict, append: bool) -> None:
    for key, cols in changes.items():
        cds = sources.get(key)
        if cds is None:
            continue
        if append and cols is not None:
            cds.stream({c: np.asarray(v) for c, v in cols.items()})
        else:
            cds.data = _columns(cds, cols)
