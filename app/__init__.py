"""Conservation Lab's dashboard: a Panel app on the ``conserv_core`` engine.

    conserv serve                 # or: python -m app, panel serve app/dashboard.py

In a notebook::

    import app
    app.extension(inline=True)    # offline notebooks need the JavaScript inline
    dash = app.Dashboard()
    dash                          # the whole dashboard; or dash.controls, dash.drift_view, ...

The engine never imports this package; the dashboard learns about training only through
the trainer's records.
"""

from conserv_core import plugins as _plugins

# your own methods and systems, named in $CONSERV_PLUGINS (conserv serve --plugin sets it):
# loaded before any session is built, so the menus offer them
_plugins.load_all()

from app.dashboard import Dashboard, create_app, extension  # noqa: E402
from app.session import LabSession  # noqa: E402
from app.theme import COLORS  # noqa: E402

__all__ = ["COLORS", "Dashboard", "LabSession", "create_app", "extension"]
