"""The dashboard's views: each one a :class:`pn.viewable.Viewer` over a :class:`LabSession`.

Every view can be shown on its own in a notebook (``dash.drift_view``). Plot views build
their figures on the session's :class:`app.rundata.StreamSet`, again only when the layout
changes (another system or other methods). The curves (loss, violation, multipliers,
drift, the phase portrait, the n-body orbits) are :class:`app.live.LivePlot` figures:
drawn once per page from HoloViews elements, then fed in place by the session's channels,
so a drain sends the browser new points and changed curves, not new plots. The flow's
field and dye views are HoloViews DynamicMaps on the system view's Pipe (redrawn once per
evaluation round).

One module per view family; each module's docstring says what it draws and which
:class:`app.rundata.StreamSet` channels it reads:

* :mod:`app.views.common`: what they share (:func:`guarded`, :func:`html`, :func:`tex`,
  the plot options, :class:`_PlotView`);
* :mod:`app.views.controls`: the settings and the run buttons (:class:`Controls`);
* :mod:`app.views.status`: the status line, progress and legend (:class:`StatusView`);
* :mod:`app.views.training_curves`: loss, violation, multipliers (:class:`LossView`,
  :class:`MultiplierView`);
* :mod:`app.views.drift`: the invariants' drift and the OOD slider (:class:`DriftView`);
* :mod:`app.views.system`: phase portrait, n-body orbits, flow field and dye
  (:class:`SystemView`);
* :mod:`app.views.teaching`: the equation cards (:class:`TeachingView`);
* :mod:`app.views.page`: where each view goes on the page (:func:`~app.views.page.register`).

A new plot is one new module here: a :class:`_PlotView` subclass whose ``consumes``
names the channels it reads and whose ``build(streams)`` draws them, and one
:func:`app.views.page.register` call that places it (section, order, heading). Every
module of this package is imported with it, so the dashboard builds and shows the view
as ``dash.<name>`` with no other file touched (:mod:`app.views.page`). A plot that needs
data no channel holds yet also needs the channel (:class:`app.rundata.StreamSet`) and the
records that fill it (:class:`app.rundata.LiveData`).
"""

import importlib
import pkgutil

from app.views import page
from app.views.common import PLOT_HEIGHT, SMALL_HEIGHT, TOOLS, guarded, html, tex
from app.views.controls import SOFT, Controls, param_widget
from app.views.drift import DriftView
from app.views.status import StatusView
from app.views.system import FLOW_SIZE, SystemView
from app.views.teaching import TeachingView
from app.views.training_curves import LossView, MultiplierView

__all__ = ["FLOW_SIZE", "PLOT_HEIGHT", "SMALL_HEIGHT", "SOFT", "TOOLS", "Controls", "DriftView", "LossView",
           "MultiplierView", "StatusView", "SystemView", "TeachingView", "guarded", "html", "page", "param_widget",
           "tex"]

# every module registers its views on import: a new module here is on the page
for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
