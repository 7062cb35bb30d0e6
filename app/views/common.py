"""What every view shares: the error guard on callbacks, HTML and KaTeX panes, the plot
options (sizes, log ticks, square frames) and :class:`_PlotView`, the base of the plot views.

A plot view subclasses :class:`_PlotView`, names the :class:`app.rundata.StreamSet`
channels it draws in ``consumes`` and builds its figures in ``build(streams)``; this
module consumes no channel itself.
"""

from __future__ import annotations

import functools

import holoviews as hv
import panel as pn
import param

from app import theme
from app.rundata import StreamSet
from app.session import LabSession

PLOT_HEIGHT = 300
SMALL_HEIGHT = 230
TOOLS = ["hover"]


def guarded(session: LabSession, fn):
    """Wrap a callback so that any error lands in the status line instead of the log."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # no user action may take the server down
            session.report_error(err)

    return wrapper


def html(text: str = "", **kw) -> pn.pane.HTML:
    """An HTML pane that knows the dashboard's classes (each pane has its own shadow DOM)."""
    kw.setdefault("stylesheets", [theme.CSS])
    return pn.pane.HTML(text, **kw)


def tex(expr: str) -> pn.pane.LaTeX:
    """A KaTeX pane; ``<`` and ``>`` written as macros so the page's HTML parser leaves them."""
    expr = expr.replace("<", r"\lt ").replace(">", r"\gt ")
    # a formula wider than its card scrolls inside it rather than running out of it
    return pn.pane.LaTeX(f"${expr}$", renderer="katex", sizing_mode="stretch_width",
                         styles={"font-size": "14px", "overflow-x": "auto", "max-width": "100%"})


def _placeholder(text: str, height: int = PLOT_HEIGHT) -> pn.pane.HTML:
    return html(
        f'<div style="height:{height - 30}px; display:flex; align-items:center; justify-content:center; '
        f'border:1px dashed #c8ced6; border-radius:6px; color:#667; font-size:14px; padding:0 24px; '
        f'text-align:center">{text}</div>',
        sizing_mode="stretch_width", height=height)


def _log_ticks(plot, element) -> None:
    """More labelled ticks on a log axis (1, 2, 5 per decade where the span is short):
    Bokeh's default labels only powers of ten, which leaves one or two labels on an axis
    that spans a decade or two."""
    from bokeh.models import LogTicker

    for axis in plot.state.yaxis:
        if isinstance(axis.ticker, LogTicker):
            axis.ticker.mantissas = [1, 2, 5]
            axis.ticker.desired_num_ticks = 6


def _plot_opts(**kw) -> dict:
    # the toolbar on the right: above, it shares a row with the title and long titles ran into it
    base = dict(responsive=True, height=PLOT_HEIGHT, tools=TOOLS, active_tools=[], toolbar="right",
                show_grid=True, fontscale=1.0)
    base.update(kw)
    if base.get("logy"):
        base["hooks"] = [*base.get("hooks", []), _log_ticks]
    if "frame_width" in base:  # a fixed square frame (x and y in the same units)
        base.pop("height", None)
        base["responsive"] = False
    return base


def _square(size: int) -> dict:
    return dict(frame_width=size, frame_height=size)


_ELEMENTS = (hv.Curve, hv.Points, hv.Image, hv.VectorField)


def _styled(obj, framewise: bool = True, overlay: str = "Overlay", **kw):
    """Axis options on the overlay; ``framewise`` on every element type, which is where
    HoloViews reads it: the axes then follow the data as the streams update."""
    kw.pop("framewise", None)
    elem = [getattr(hv.opts, e.__name__)(framewise=framewise) for e in _ELEMENTS]
    return obj.opts(*elem, getattr(hv.opts, overlay)(**_plot_opts(**kw)))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _PlotView(pn.viewable.Viewer):
    """A view whose plots are built on the session's :class:`StreamSet`, again only when
    a run needs a different layout (other system or methods)."""

    session = param.ClassSelector(class_=LabSession)
    placeholder = ""
    #: the :class:`StreamSet` attributes (channels) that :meth:`build` reads
    consumes: tuple[str, ...] = ()

    def __init__(self, **params):
        super().__init__(**params)
        self._box = pn.Column(sizing_mode="stretch_width")
        self.session.param.watch(guarded(self.session, self._rebuild), "streams")
        self._rebuild()

    def _rebuild(self, *events) -> None:
        streams = self.session.streams
        self._box.objects = [self.build(streams)] if streams is not None else [_placeholder(self.placeholder)]

    def build(self, streams: StreamSet):
        raise NotImplementedError

    def __panel__(self):
        return self._box


def _pane(obj, **kw) -> pn.pane.HoloViews:
    kw.setdefault("sizing_mode", "stretch_width")
    return pn.pane.HoloViews(obj, linked_axes=False, **kw)


def _series_overlay(data: dict | None = None, *, keys: list[str], kdim: str, vdim: str) -> hv.Overlay:
    """One curve per key (empty if not reported yet: a DynamicMap's overlay keeps the same
    layers from frame to frame). Styles come from :func:`_series_styles`, set once."""
    curves = []
    for key in keys:
        d = data.get(key) if data else None
        curves.append(hv.Curve(d if d is not None and len(d[kdim]) else [], kdim, vdim, label=key))
    return hv.Overlay(curves)


def _series_styles(keys: list[str]) -> hv.Options:
    """Colour and line style of each key, by position (``"truth"`` dashed, ``"<m>:own"``
    dotted): styling once, not on every frame, keeps a redraw cheap."""
    color, dash, width = [], [], []
    for key in keys:
        base = key.split(":")[0]
        color.append(theme.COLORS.get(base, "#888"))
        kind = key.split(":")[1] if ":" in key else ""
        dash.append(_DASH.get(kind, theme.style(base).dash))
        width.append(1.5 if base == "truth" else _WIDTH.get(kind, 2.5))
    return hv.opts.Curve(color=hv.Cycle(color), line_dash=hv.Cycle(dash), line_width=hv.Cycle(width))


#: line style of a series by its suffix: ``<m>:own`` the learned energy, ``<m>:own_rk4``
#: the same under RK4 (discrete gradient on), ``<m>:raw`` the rollout without projection
_DASH = {"own": "dotted", "own_rk4": "dotdash", "raw": "dashdot"}
_WIDTH = {"own": 2, "own_rk4": 1.5, "raw": 1.2}
