"""``panel serve app/dashboard.py --plugins app.panel_plugin``: closes Panel's
``/components/`` import door before the server takes its first request (see
:func:`app.serving.restrict_component_route`), and lets long links through
(:func:`app.serving.allow_long_links`). Panel requires a ``ROUTES`` list; we add none."""

from app.serving import allow_long_links, restrict_component_route

restrict_component_route()
allow_long_links()

ROUTES: list = []
