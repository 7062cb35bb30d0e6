"""``panel serve app/dashboard.py --plugins app.panel_plugin``: closes Panel's
``/components/`` import door before the server takes its first request (see
:func:`app.serving.restrict_component_route`). Panel requires a ``ROUTES`` list; we add none."""

from app.serving import restrict_component_route

restrict_component_route()

ROUTES: list = []
