"""A new plot is one module: it registers its view in :mod:`app.views.page` (section,
order, heading) and the dashboard builds it, names it ``dash.<name>`` and lays it out,
with nothing in ``app/dashboard.py`` or elsewhere touched.

The plot view below is defined here and nowhere else, like the parts of
``tests/test_one_file_additions.py``. The page's shape (headings, order, widths) is held
to what it was when the dashboard placed every view by hand.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import panel as pn
import pytest

import app
from app import dashboard
from app.rundata import StreamSet
from app.views import page
from app.views.common import _PlotView, html

ROOT = Path(__file__).resolve().parents[1]

#: the page as the dashboard laid it out by hand before the registry: per row, per
#: section (heading, CSS flex), the views top to bottom
PAGE = [
    [("", "", ["lesson_view", "status_view"])],
    [("Is the invariant kept? Drift along rollouts (log scale)", "", ["drift_view"])],
    [("What the learned dynamics do", "3 1 0%", ["system_view"]),
     ("Training", "2 1 0%", ["loss_view", "multiplier_view"])],
    [("The physics and the methods", "", ["teaching_view"])],
    [("Which law, which method: every conservation law the lab shows, in one table", "", ["laws_view"])],
    [("", "", ["sweep_view"])],
]


class StepsView(_PlotView):
    """A test plot: which methods report a loss (the ``loss`` channel's keys)."""

    placeholder = "Steps appear here."
    consumes = ("loss",)

    def build(self, streams: StreamSet):
        self.built_on = streams
        return html("Methods: " + ", ".join(streams.methods), sizing_mode="stretch_width")


def shape(rows: list) -> list:
    """The dashboard's main area as :data:`PAGE` writes it, read from its panes."""
    out = []
    for row in rows:
        columns = row.objects if isinstance(row, pn.Row) else [row]
        sections = []
        for col in columns:
            objs = list(col.objects)
            heading = ""
            if objs and isinstance(objs[0], pn.pane.HTML) and str(objs[0].object).startswith("<h3"):
                heading = re.sub(r"<[^>]+>", "", objs.pop(0).object)
            sections.append((heading, col.styles.get("flex", ""), objs))
        out.append(sections)
    return out


def named(dash, rows: list) -> list:
    """:func:`shape` with each view replaced by its name on the dashboard."""
    def drawn(obj) -> tuple:  # a layout holds a view's __panel__, which may be built anew
        if isinstance(obj, pn.layout.ListLike):  # around the same panes
            return tuple(drawn(c) for c in obj.objects)
        return id(obj)

    names = {drawn(pn.panel(v)): k for k, v in dash.views.items()}
    return [[(h, f, [names.get(drawn(o), type(o).__name__) for o in objs]) for h, f, objs in row] for row in rows]


@pytest.fixture(scope="module")
def dash():
    d = app.Dashboard(autodrain=False, sync_url=False)
    yield d
    d.close()


def test_the_page_keeps_its_headings_order_and_widths(dash):
    assert named(dash, shape(dash.main())) == PAGE
    for row in dash.main():
        assert row.sizing_mode == "stretch_width"
        for col in (row.objects if isinstance(row, pn.Row) else [row]):
            assert col.sizing_mode == "stretch_width"


def test_the_views_keep_the_names_tests_and_notebooks_use(dash):
    for name in ("status_view", "drift_view", "loss_view", "multiplier_view", "system_view", "teaching_view",
                 "sweep_view", "lesson_view"):
        assert getattr(dash, name) is dash.views[name]
        assert type(dash.views[name]) is page.VIEWS[name].view


def test_a_plot_registered_from_outside_is_on_the_dashboard():
    """Registered here, between the teaching cards and the sweep: a new dashboard builds
    it on its streams, names it and shows it under its heading; gone after the block."""
    with page.registered("steps_view", StepsView, section="steps", page_order=35, heading="Steps (test)"):
        d = app.Dashboard(autodrain=False, sync_url=False)
        try:
            assert isinstance(d.steps_view, StepsView)
            assert d.steps_view.built_on is d.session.streams
            assert named(d, shape(d.main())) == PAGE[:5] + [[("Steps (test)", "", ["steps_view"])]] + PAGE[5:]
        finally:
            d.close()
    assert "steps_view" not in page.VIEWS and "steps" not in page.SECTIONS
    d = app.Dashboard(autodrain=False, sync_url=False)
    try:
        assert not hasattr(d, "steps_view")
        assert named(d, shape(d.main())) == PAGE
    finally:
        d.close()


def test_a_plot_joins_an_existing_section_in_its_order():
    with page.registered("steps_view", StepsView, section="training", order=0.5):
        d = app.Dashboard(autodrain=False, sync_url=False)
        try:
            training = named(d, shape(d.main()))[2][1]
            assert training == ("Training", "2 1 0%", ["loss_view", "steps_view", "multiplier_view"])
        finally:
            d.close()
    assert page.SECTIONS["training"].heading == "Training"


def test_a_clash_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        page.register("drift_view", StepsView, section="steps")
    with pytest.raises(ValueError, match="section 'training' already has heading='Training'"):
        page.register("steps_view", StepsView, section="training", heading="Something else")
    with pytest.raises(ValueError, match="not an identifier"):
        page.register("steps view", StepsView, section="steps")
    assert "steps_view" not in page.VIEWS and "steps" not in page.SECTIONS
    with page.registered("controls", StepsView, section="steps"):
        with pytest.raises(ValueError, match="taken by the Dashboard"):
            app.Dashboard(autodrain=False, sync_url=False)


def test_the_dashboard_names_no_view_of_the_registry():
    """Adding a plot needs no line in ``app/dashboard.py``: it names none of the
    registered views' classes."""
    source = inspect.getsource(dashboard)
    for placed in page.VIEWS.values():
        assert placed.view.__name__ not in source, placed.name


def test_every_view_in_the_package_is_placed():
    """A view class written in a module of ``app/views/`` and left unregistered would be
    drawn nowhere: each plot view (and each view over a session but the controls) is."""
    import app.views as views_pkg

    placed = {p.view for p in page.VIEWS.values()}
    for module in [m for m in vars(views_pkg).values() if inspect.ismodule(m) and m.__name__.startswith("app.views.")]:
        for obj in vars(module).values():
            if (inspect.isclass(obj) and obj.__module__ == module.__name__ and issubclass(obj, pn.viewable.Viewer)
                    and not obj.__name__.startswith("_") and obj.__name__ != "Controls"):
                assert obj in placed, f"{module.__name__}.{obj.__name__} is not registered in app.views.page"


def test_each_plot_consumes_channels_the_streams_have(dash):
    streams = dash.session.streams
    assert streams is not None
    for placed in page.VIEWS.values():
        for channel in getattr(placed.view, "consumes", ()):
            assert hasattr(streams, channel), f"{placed.name} consumes {channel!r}, which StreamSet lacks"


def test_the_architecture_pages_plot_example_is_drawn_on_a_dashboard(monkeypatch):
    """docs/ARCHITECTURE.md's "A plot: one module" block, run as written: its view is on a
    new dashboard, under its heading, drawn on the session's streams."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text[text.index("## A plot: one module"):text.index("## The examples")]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.setattr(page, "VIEWS", dict(page.VIEWS))  # the block's registration ends with the test
    monkeypatch.setattr(page, "SECTIONS", dict(page.SECTIONS))
    exec(compile(block, "ARCHITECTURE.md", "exec"), {"__name__": "my_plot"})
    d = app.Dashboard(autodrain=False, sync_url=False)
    try:
        assert type(d.loss_again_view).__name__ == "LossAgainView"
        assert named(d, shape(d.main())) == PAGE[:5] + [[("The loss, once more", "", ["loss_again_view"])]] + PAGE[5:]
        plot = d.loss_again_view._box.objects[0]
        assert type(plot).__name__ == "LivePlot" and plot._figure() is not None  # the element renders
    finally:
        d.close()
